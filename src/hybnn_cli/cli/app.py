"""What every command shares: the Typer app, the options common to several commands, how errors
and signals end a command (one line, exit 1 / 130 / 143), and small printing helpers.

Signals: `main` turns SIGTERM into `errors.Terminated` (a KeyboardInterrupt), so SIGINT and
SIGTERM both unwind every `finally` (temporary files, child processes) and end with one line and
exit code 130 (SIGINT) or 143 (SIGTERM)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import signal
import sys
from pathlib import Path

import typer
from hybnn_kernels.layout import CODE_BITS
from rich.console import Console
from rich.markup import escape

from hybnn_cli import __version__
from hybnn_cli.cli.progress import make_progress
from hybnn_cli.device import DEVICE_HELP
from hybnn_cli.errors import HybnnError, Terminated
from hybnn_cli.threads import HELP as THREADS_HELP

# Commands that need torch import it (and `stages`, the training configs) inside the command, so
# that `hybnn predict --model BUNDLE` runs where torch is not installed (tests/test_bundle.py).

app = typer.Typer(
    name="hybnn",
    help=f"Hybrid binary neural networks: a frozen binary-latent VAE encoder feeds {CODE_BITS}-bit "
    "codes to small task BNNs that run with XNOR and popcount.\n\nExample: hybnn pretrain-vae && "
    "hybnn extract --out runs/codes.h5 && hybnn train-bnn --task 3",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hybnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Hybrid binary neural networks from the command line.

    Example: hybnn pretrain-vae && hybnn extract --out runs/codes.h5 && hybnn train-bnn --task 3
    """


def unwrap(doc: str) -> str:
    """A docstring with the lines of each paragraph joined: the terminal wraps it, at any width."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def unwrap_help(typer_app: typer.Typer) -> None:
    """Give every registered command its unwrapped docstring as help, and its first paragraph
    (one short sentence) as the summary `hybnn --help` lists."""
    for info in typer_app.registered_commands:
        if info.help is None and info.callback.__doc__:
            info.help = unwrap(info.callback.__doc__)
            info.short_help = info.short_help or info.help.split("\n\n")[0]


# Packages of the `train` extra (pyproject.toml): a command that needs one where only the runtime
# is installed ends with one line saying how to install it.
TRAIN_EXTRA = ("torch", "flwr", "matplotlib", "threadpoolctl", "onnx")
# ... and of the `fast` extra: the compiled kernels (`predict` on a bundle runs without them)
FAST_EXTRA = ("numba", "llvmlite")


def handle_errors(fn):
    """Print HybnnError as one line, exit 1; SIGTERM (Terminated) and Ctrl-C as one line, exit 143
    and 130, after the command's `finally` blocks have run."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HybnnError as e:
            err_console.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False,
                              soft_wrap=True)  # escaped: a message may quote "[...]" input
            raise typer.Exit(1) from None
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] in FAST_EXTRA:
                err_console.print(f"[bold red]Error:[/] this command needs the compiled kernels "
                                  f"({e.name}), which the base install leaves out: pip install "
                                  f"'hybnn\\[fast]'", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
            if (e.name or "").split(".")[0] not in TRAIN_EXTRA:
                raise
            err_console.print(f"[bold red]Error:[/] this command needs {e.name}, which the "
                              f"runtime-only install leaves out: pip install 'hybnn\\[train]' "
                              f"torch==2.13.0", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Terminated:
            err_console.print("[bold red]Terminated[/] (SIGTERM).")
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]Interrupted[/] (SIGINT).")
            raise typer.Exit(130) from None

    return wrapper



# ── shared options ────────────────────────────────────────────────────────────────────────────
DataDir = typer.Option(None, "--data-dir", help="Folder holding the IDX files (else $HYBNN_DATA, "
                       "then the user cache folder).")
Seed = typer.Option(0, "--seed", help="Random seed (saved with the artifact).")
Threads = typer.Option(None, "--threads", min=1, help=THREADS_HELP)
JsonOut = typer.Option(False, "--json", help="Print only JSON on stdout.")
Device = typer.Option("auto", "--device", help=DEVICE_HELP)
ValFraction = typer.Option(0.1, "--val-fraction", min=0.0, max=0.9,
                           help="Share of each class of the training split held out for "
                           "validation (the same images in every run; 0: none). Choose settings "
                           "on the validation accuracy, never on the test accuracy.")


def print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@contextlib.contextmanager
def epoch_bar(title: str, epochs: int, json_out: bool):
    """A progress bar over epochs; yields the on_epoch callback that shows train/val accuracy."""
    with make_progress(disable=json_out) as progress:
        bar = progress.add_task(title, total=epochs, status="")

        def on_epoch(epoch, m):
            progress.update(bar, completed=epoch + 1, status=epoch_status(m))

        yield on_epoch


def val_text(result: dict) -> str:
    val = result.get("val_acc")
    return f"validation accuracy {val:.2%}, " if val is not None else ""


def epoch_status(m: dict) -> str:
    """One epoch's accuracies for a progress bar: training, and validation when there is one."""
    val = f"  val {m['val_acc']:.2%}" if "val_acc" in m else ""
    return f"train {m['train_acc']:.2%}{val}"


def check_out(out: Path) -> None:
    if out.exists() and out.is_dir():
        raise HybnnError(f"{out} is a folder; give a file name for --out")


def _on_sigterm(signum, frame) -> None:
    """Raise Terminated in the main thread, once: a second SIGTERM during the unwinding is
    ignored, so cleanup is not cut short (SIGKILL still ends the process)."""
    signal.signal(signal.SIGTERM, lambda *_: None)
    raise Terminated()


def _on_unraisable(args) -> None:
    """A Ctrl-C or SIGTERM that landed inside a callback from C (numba's compiler, ctypes) is
    only printed there as "Exception ignored" and would be lost: deliver the signal again, a
    moment later (from the hook itself it would be swallowed too), so the main thread unwinds
    as usual."""
    import threading

    if isinstance(args.exc_value, KeyboardInterrupt):
        sig = signal.SIGTERM if isinstance(args.exc_value, Terminated) else signal.SIGINT
        if sig == signal.SIGTERM:
            signal.signal(signal.SIGTERM, _on_sigterm)
        threading.Timer(0.05, signal.raise_signal, (sig,)).start()
    else:
        sys.__unraisablehook__(args)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.unraisablehook = _on_unraisable
    app(prog_name="hybnn")


