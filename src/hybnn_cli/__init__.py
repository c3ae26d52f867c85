"""hybnn: hybrid binary neural networks from the command line."""

__version__ = "0.1.0"
