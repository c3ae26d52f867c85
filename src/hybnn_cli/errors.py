"""The project's own exception: anything the user can fix. The CLI prints it as one red line."""


class HybnnError(Exception):
    """An error caused by the user's input (files, options, data); shown without a traceback."""
