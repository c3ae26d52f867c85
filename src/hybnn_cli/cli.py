"""The `hybnn` command line: parses options, calls the compute and I/O modules, and turns the
project's own errors into one red line on stderr with exit code 1."""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console

from hybnn_cli.errors import HybnnError

app = typer.Typer(
    name="hybnn",
    help="Hybrid binary neural networks: a frozen binary-latent VAE encoder feeds 200-bit codes "
    "to small task BNNs that run with XNOR and popcount.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def handle_errors(fn):
    """Print HybnnError (and a few user-caused OS errors) as one line, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HybnnError as e:
            err_console.print(f"[bold red]Error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]Interrupted.[/]")
            raise typer.Exit(130) from None

    return wrapper


def main() -> None:
    app(prog_name="hybnn")


if __name__ == "__main__":
    main()
    sys.exit(0)
