"""The project's own exceptions.

- `HybnnError`: anything the user can fix. The CLI prints it as one red line, exit 1.
- `Terminated`: SIGTERM turned into an exception (the CLI entry point installs the handler), so
  that `finally` blocks and context managers (temporary files, child processes) unwind exactly as
  for Ctrl-C. It subclasses KeyboardInterrupt: code that cleans up on Ctrl-C cleans up on SIGTERM.
"""


class HybnnError(Exception):
    """An error caused by the user's input (files, options, data); shown without a traceback."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (the CLI exits 143 after unwinding)."""
