"""The `hybnn` command line: parses options, calls the compute and I/O modules, and turns the
project's own errors into one red line on stderr with exit code 1.

Signals: `main` turns SIGTERM into `errors.Terminated` (a KeyboardInterrupt), so SIGINT and
SIGTERM both unwind every `finally` (temporary files, child processes) and end with one line and
exit code 130 (SIGINT) or 143 (SIGTERM)."""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console

from hybnn_cli import __version__, latest
from hybnn_cli.data import get_spec
from hybnn_cli.device import DEVICE_HELP, resolve_device
from hybnn_cli.errors import HybnnError, Terminated
from hybnn_cli.options import parse_list, parse_seeds
from hybnn_cli.progress import make_progress
from hybnn_cli.tasks import parse_pair_tasks, parse_task
from hybnn_cli.threads import HELP as THREADS_HELP
from hybnn_cli.threads import resolve as resolve_threads
from hybnn_cli.threads import using as using_threads

# Commands that need torch import it (and `stages`, the training configs) inside the command, so
# that `hybnn predict --model BUNDLE` runs where torch is not installed (tests/test_bundle.py).

app = typer.Typer(
    name="hybnn",
    help="Hybrid binary neural networks: a frozen binary-latent VAE encoder feeds 200-bit codes "
    "to small task BNNs that run with XNOR and popcount.",
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
    """Hybrid binary neural networks: a frozen binary-latent VAE encoder feeds 200-bit codes to
    small task BNNs that run with XNOR and popcount.

    Example: hybnn pretrain-vae && hybnn extract --out runs/codes.h5 && hybnn train-bnn --task 3
    """


# Packages of the `train` extra (pyproject.toml): a command that needs one where only the runtime
# is installed ends with one line saying how to install it.
TRAIN_EXTRA = ("torch", "flwr", "matplotlib", "threadpoolctl", "onnx")


def handle_errors(fn):
    """Print HybnnError as one line, exit 1; SIGTERM (Terminated) and Ctrl-C as one line, exit 143
    and 130, after the command's `finally` blocks have run."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HybnnError as e:
            err_console.print(f"[bold red]Error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except ModuleNotFoundError as e:
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


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@contextlib.contextmanager
def _epoch_bar(title: str, epochs: int, json_out: bool):
    """A progress bar over epochs; yields the on_epoch callback that shows train/val accuracy."""
    with make_progress(disable=json_out) as progress:
        bar = progress.add_task(title, total=epochs, status="")

        def on_epoch(epoch, m):
            progress.update(bar, completed=epoch + 1, status=epoch_status(m))

        yield on_epoch


def _val_text(result: dict) -> str:
    val = result.get("val_acc")
    return f"validation accuracy {val:.2%}, " if val is not None else ""


def epoch_status(m: dict) -> str:
    """One epoch's accuracies for a progress bar: training, and validation when there is one."""
    val = f"  val {m['val_acc']:.2%}" if "val_acc" in m else ""
    return f"train {m['train_acc']:.2%}{val}"


def _check_out(out: Path) -> None:
    if out.exists() and out.is_dir():
        raise HybnnError(f"{out} is a folder; give a file name for --out")


# ── the pipeline ──────────────────────────────────────────────────────────────────────────────
@app.command("pretrain-vae")
@handle_errors
def pretrain_vae_cmd(
    dataset: str = typer.Option("mnist", "--dataset", help="mnist, fashion-mnist, "
                                "mnist+fashion-mnist (both training sets, 120,000 images), or "
                                "any IDX set under the data folder, alone or joined with +."),
    epochs: int = typer.Option(20, "--epochs", min=1, help="Epochs (the paper: 20)."),
    batch_size: int = typer.Option(128, "--batch-size", min=2, help="Images per step in all; "
                                   "under torchrun each of N processes takes batch-size / N."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    latent_bits: int = typer.Option(200, "--latent-bits", min=1, help="Bits in the code."),
    kl_weight: float = typer.Option(1.0, "--kl-weight", help="Weight of the KL term."),
    train_limit: int = typer.Option(None, "--train-limit", min=2,
                                    help="Use only the first N training images (quick runs)."),
    seed: int = Seed,
    threads: int = Threads,
    out: Path = typer.Option(Path("runs/vae.pt"), "--out", help="Checkpoint to write; a PNG of "
                             "reconstructions is written beside it."),
    resume: Path = typer.Option(None, "--resume", help="Continue from this checkpoint."),
    device: str = Device,
    data_dir: Path = DataDir,
    json_out: bool = JsonOut,
):
    """Pretrain the binary-latent VAE and save its checkpoint.

    Data-parallel on N processes (one machine or several): start it with torchrun, e.g.
    torchrun --standalone --nproc-per-node 2 -m hybnn_cli pretrain-vae --threads 1. Each process
    trains on batch-size / N images of every step (gloo on the CPU, nccl on CUDA) and keeps its
    own batch norm statistics (torch's SyncBatchNorm does not run on the CPU); rank 0 alone
    writes the checkpoint and PNG and shows progress.

    Example: hybnn pretrain-vae --epochs 20 --out runs/vae.pt
    """
    from hybnn_cli.distributed import process_group
    from hybnn_cli.pretrain_data import check_pretrain_dataset

    _check_out(out)
    from hybnn_cli.train_vae import VAEConfig

    check_pretrain_dataset(dataset, data_dir)
    with process_group(device) as group, using_threads(threads) as n:
        cfg = VAEConfig(dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                        latent_bits=latent_bits, kl_weight=kl_weight, seed=seed, threads=n,
                        train_limit=train_limit, device=str(group.device))
        result = _pretrain(cfg, out, data_dir, resume, group, json_out or not group.is_main)
    if not group.is_main:
        return
    latest.remember("vae", out)
    if json_out:
        _print_json({"out": str(out), **result})
    else:
        typer.echo(f"Saved {out} and {out.with_suffix('.png')}")


def _pretrain(cfg, out: Path, data_dir, resume, group, quiet: bool) -> dict:
    """stages.pretrain_vae with a progress bar and one line per epoch (unless quiet)."""
    from hybnn_cli import stages

    epochs = cfg.epochs
    with make_progress(disable=quiet) as progress:
        bar = progress.add_task("pretrain-vae", total=None, status="")

        def on_step(epoch, step, n_steps, loss):
            progress.update(bar, total=n_steps, completed=step,
                            description=f"epoch {epoch + 1}/{epochs}", status=f"loss {loss:.2f}")

        def on_epoch(epoch, m):
            if not quiet:
                progress.console.print(
                    f"epoch {m['epoch']:3d}  loss {m['train_loss']:.2f}  test recon "
                    f"{m['test_recon']:.2f}  test KL {m['test_kl']:.2f}  "
                    f"({m['epoch_seconds']:.1f} s)", highlight=False)

        return stages.pretrain_vae(cfg, out, data_dir, resume, on_step, on_epoch, group)


@app.command("extract")
@handle_errors
def extract_cmd(
    out: Path = typer.Option(latest.DEFAULTS["codes"], "--out", help="Codes file to write "
                             "(HDF5); later commands find it without --codes."),
    vae: Path = typer.Option(None, "--vae", help=latest.HELP["vae"]),
    dataset: str = typer.Option("mnist", "--dataset", help="Dataset to encode (mnist or "
                                "fashion-mnist); may differ from the pretraining set."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1),
    limit: int = typer.Option(None, "--limit", min=1, help="Encode only the first N images of "
                              "each split."),
    shard: str = typer.Option(None, "--shard", help="K/N: encode only the K-th (from 0) of N "
                              "contiguous slices of each split; join them with merge-codes. "
                              "Under torchrun each process takes its own shard and rank 0 "
                              "merges them into --out."),
    threads: int = Threads,
    device: str = Device,
    data_dir: Path = DataDir,
    json_out: bool = JsonOut,
):
    """Encode a dataset's train and test splits into packed binary codes.

    No --seed: encoding is deterministic; the codes file records the VAE's seed.

    Example: hybnn extract --vae runs/vae.pt --out runs/codes.h5
    (in slices: hybnn extract --shard 0/2 --out s0.h5, … then hybnn merge-codes s0.h5 s1.h5
    --out runs/codes.h5; or torchrun --standalone --nproc-per-node 2 -m hybnn_cli extract)
    """
    from hybnn_cli import stages
    from hybnn_cli.distributed import process_group
    from hybnn_cli.shards import extract_parallel, parse_shard

    _check_out(out)
    get_spec(dataset)
    part = parse_shard(shard) if shard else None
    with process_group(device) as group, using_threads(threads), \
            make_progress(disable=json_out or not group.is_main) as progress:
        if group.parallel and part:
            raise HybnnError("--shard: under torchrun each process takes its own shard; "
                             "leave --shard out")
        vae = latest.resolve("vae", vae)
        bar = progress.add_task("extract", total=None, status="")
        step = lambda n: progress.advance(bar, n)  # noqa: E731
        if group.parallel:
            result = extract_parallel(group, vae, out, dataset, data_dir, batch_size, limit, step)
        else:
            result = stages.extract_codes(vae, out, dataset, data_dir, batch_size, limit, step,
                                          str(group.device), part)
    if not group.is_main:
        return
    if part is None:  # a shard is not a codes file for the later stages
        latest.remember("codes", out)
    if json_out:
        _print_json(result)
    else:
        typer.echo(f"Wrote {out}: {result['n_train']} train and {result['n_test']} test codes of "
                   f"{result['n_bits']} bits (encoder {result['encoder_sha256'][:12]}…)")


@app.command("merge-codes")
@handle_errors
def merge_codes_cmd(
    shards: list[Path] = typer.Argument(..., help="The shard files (extract --shard K/N), in "
                                        "any order."),
    out: Path = typer.Option(..., "--out", help="Codes file to write (HDF5)."),
    json_out: bool = JsonOut,
):
    """Join the shards of one extraction into one codes file, equal to a single extract.

    It refuses shards from different encoders, overlapping or repeated shards and missing ones,
    and copies the codes in chunks (memory stays flat in the data set's size).

    No --seed: merging is deterministic; the codes file records the VAE's seed.

    Example: hybnn merge-codes runs/s0.h5 runs/s1.h5 --out runs/codes.h5
    """
    from hybnn_cli.shards import merge_codes

    _check_out(out)
    with make_progress(disable=json_out) as progress:
        bar = progress.add_task("merge-codes", total=None, status="")
        result = merge_codes(shards, out, on_rows=lambda n: progress.advance(bar, n))
    if json_out:
        _print_json(result)
    else:
        typer.echo(f"Wrote {out}: {result['n_train']} train and {result['n_test']} test codes "
                   f"from {result['shards']} shards (encoder {result['encoder_sha256'][:12]}…)")


@app.command("train-bnn")
@handle_errors
def train_bnn_cmd(
    codes: Path = typer.Option(None, "--codes", help=latest.HELP["codes"]),
    task: str = typer.Option(None, "--task", help="1..5 (digit pairs 0/1 … 8/9) or all "
                             "(10 classes). Default 3."),
    digits: str = typer.Option(None, "--digits", help="Any classes instead of --task, e.g. 3,8."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="Epochs (the paper: 100)."),
    batch_size: int = typer.Option(128, "--batch-size", min=2),
    lr: float = typer.Option(1e-2, "--lr", help="Adam learning rate (latent weights live in "
                             "[−1, 1]). The README lists what validation chose per task "
                             "(`hybnn reproduce`); compare settings with --val-fraction, "
                             "never on test accuracy."),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine or constant."),
    hidden: int = typer.Option(128, "--hidden", min=1, help="Hidden neurons (the paper: 128)."),
    val_fraction: float = ValFraction,
    seed: int = Seed,
    threads: int = Threads,
    out: Path = typer.Option(None, "--out", help="Checkpoint to write "
                             "(default runs/bnn-<task>.pt)."),
    resume: Path = typer.Option(None, "--resume", help="Continue from this BNN checkpoint."),
    device: str = Device,
    json_out: bool = JsonOut,
):
    """Train the task BNN on codes and report its validation and test accuracy.

    It trains on the training split minus a validation slice (--val-fraction), shows the
    validation accuracy after every epoch, and reads the test split once, at the end.

    Example: hybnn train-bnn --codes runs/codes.h5 --task 3
    """
    if schedule not in ("cosine", "constant"):
        raise HybnnError(f"unknown --schedule '{schedule}': use cosine or constant")
    dev = resolve_device(device)
    t = parse_task(task, digits)
    out = out or Path(f"runs/bnn-{t.name}.pt")
    _check_out(out)
    from hybnn_cli import stages
    from hybnn_cli.train_bnn import BNNConfig

    codes = latest.resolve("codes", codes)
    with using_threads(threads) as n, _epoch_bar(f"train-bnn {t.name}", epochs,
                                                  json_out) as on_epoch:
        cfg = BNNConfig(task=t.name, epochs=epochs, batch_size=batch_size, lr=lr,
                        schedule=schedule, hidden=hidden, seed=seed, threads=n,
                        val_fraction=val_fraction, device=str(dev))
        result = stages.train_task_bnn(codes, t, cfg, out, resume, on_epoch)
    if json_out:
        _print_json({"out": str(out), **result})
    else:
        what = " vs ".join(map(str, t.classes)) if t.n_classes <= 3 else f"{t.n_classes} classes"
        typer.echo(f"{t.name} ({what}): {_val_text(result)}test accuracy "
                   f"{result['test_acc']:.2%}  → {out}")


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    model: Path = typer.Argument(..., help="BNN checkpoint (.pt)."),
    codes: Path = typer.Option(None, "--codes", help=latest.HELP["codes"]),
    split: str = typer.Option("test", "--split", help="test, or val / train: the validation "
                              "slice of the training split and the rest of it."),
    threads: int = Threads,
    json_out: bool = JsonOut,
):
    """Accuracy of a trained BNN checkpoint on a codes file (made by the same encoder).

    No --seed: evaluation is deterministic.

    Example: hybnn evaluate runs/bnn-task3.pt --codes runs/codes.h5
    """
    from hybnn_cli import stages

    codes = latest.resolve("codes", codes)
    with using_threads(threads):
        result = stages.evaluate_task_bnn(model, codes, split)
    if json_out:
        _print_json(result)
    else:
        typer.echo(f"{result['task']} {split}: accuracy {result['acc']:.2%} "
                   f"on {result['n']} codes")


# ── deployment: export, predict, bench ────────────────────────────────────────────────────────
@app.command("export")
@handle_errors
def export_cmd(
    models: list[Path] = typer.Argument(..., help="BNN checkpoint(s) (.pt) from train-bnn; "
                                        "several (one per task) with --vae."),
    out: Path = typer.Option(..., "--out", help="Deploy file to write (HDF5), or with --vae the "
                             "deploy bundle (a folder)."),
    vae: Path = typer.Option(None, "--vae", help="VAE checkpoint: write a deploy bundle (encoder "
                             "as ONNX + the heads) that classifies images without torch."),
    int8: bool = typer.Option(False, "--int8", help="With --vae: add an int8 encoder (ONNX "
                              "Runtime static quantization, QDQ, per-channel)."),
    calibration: int = typer.Option(2000, "--calibration", min=1, help="With --vae: training "
                                    "images to check the ONNX encoder on (and calibrate --int8)."),
    seed: int = typer.Option(0, "--seed", help="With --vae: picks the calibration images "
                             "(saved in the bundle)."),
    data_dir: Path = DataDir,
    check: Path = typer.Option(None, "--check", help="Codes file: after writing, compare the "
                               "deploy file's predictions with the torch model's on its test "
                               "split (every code) and fail on any mismatch."),
    threads: int = Threads,
    json_out: bool = JsonOut,
):
    """Export a trained BNN to a deploy file that runs without torch (XNOR-popcount kernels),
    or, with --vae, a deploy bundle: encoder (ONNX) + task heads, image in, class out.

    Batch norm + sign become one integer threshold per hidden neuron; the output layer's scores
    are tabulated by torch itself, so predictions equal the torch model's bit for bit. In a
    bundle the encoder's batch norms are folded into its convolutions; the export reports how
    many code bits differ from the torch encoder's on the calibration images.

    --seed only picks the calibration images of a bundle; a deploy file records the BNN's seed.

    Example: hybnn export runs/bnn-task3.pt --out runs/bnn-task3.h5 --check runs/codes.h5

    Bundle: hybnn export runs/bnn-task1.pt runs/bnn-task3.pt --vae runs/vae.pt --out runs/bundle
    """
    if vae is not None:
        return _export_bundle(models, vae, out, int8, calibration, seed, data_dir, check,
                              threads, json_out)
    if int8:
        raise HybnnError("--int8 quantizes a bundle's encoder: give --vae VAE.pt")
    if len(models) != 1:
        raise HybnnError(f"{len(models)} checkpoints: a deploy file holds one BNN; give --vae "
                         f"VAE.pt to write a bundle with several heads")
    model = models[0]
    from hybnn_cli.checkpoint import load_bnn
    from hybnn_cli.codes import read_attrs
    from hybnn_cli.export import check_deploy, write_deploy

    _check_out(out)
    if check is not None:
        read_attrs(check)  # a missing or foreign codes file is refused before anything is written
    torch_model, ckpt = load_bnn(model)
    with using_threads(threads):
        result = write_deploy(out, torch_model, ckpt)
        if check is not None:
            with make_progress(transient=True, disable=json_out) as progress:
                progress.add_task(f"checking {out} against torch on {check}", total=None,
                                  status="")
                result["check"] = check_deploy(out, torch_model, check)
    if json_out:
        _print_json(result)
    else:
        typer.echo(f"Wrote {out}: {result['n_bits']} → {result['hidden']} → {result['n_classes']}, "
                   f"{result['weight_bytes']} bytes of packed weights (float32: "
                   f"{result['float32_weight_bytes']}), {result['flipped_neurons']} neurons with "
                   f"flipped weights")
        if "check" in result:
            typer.echo(f"Checked against torch on {result['check']['n']} codes of {check}: "
                       f"0 mismatches")


def _export_bundle(models, vae, out, int8, calibration, seed, data_dir, check, threads,
                   json_out):
    from hybnn_cli.bundle_export import write_bundle

    if check is not None:
        raise HybnnError("--check compares a deploy file with codes; a bundle is checked "
                         "against the torch encoder at export")
    if out.exists() and not out.is_dir():
        raise HybnnError(f"{out} is a file; a bundle is a folder: give a new name for --out")
    with using_threads(threads) as n, make_progress(transient=True, disable=json_out) as progress:
        progress.add_task(f"exporting {len(models)} head(s) + encoder", total=None, status="")
        m = write_bundle(out, vae, models, int8, calibration, seed, data_dir, n)
    if json_out:
        _print_json({"out": str(out), **m})
        return
    c = m["encoder"]["check"]
    typer.echo(f"Wrote {out}: encoder.onnx (opset {m['encoder']['opset']}) + heads "
               f"{', '.join(m['heads'])}; on {c['images']} training images the ONNX codes "
               f"differ from torch's in {c['flipped_bits']} of {c['bits']} bits")
    if int8:
        q = m["encoder_int8"]["check"]
        typer.echo(f"int8 encoder: {q['flipped_bits']} of {q['bits']} bits differ from the "
                   f"float torch encoder's")


@app.command("predict")
@handle_errors
def predict_cmd(
    images: list[Path] = typer.Argument(None, help="Image files (IDX, PNG or NPY) to classify "
                                        "with a bundle, or with --encoder."),
    model: Path = typer.Option(..., "--model", help="Deploy file, or deploy bundle (folder), "
                               "from hybnn export."),
    codes: Path = typer.Option(None, "--codes", help="Codes file: predict a whole split."),
    encoder: Path = typer.Option(None, "--encoder", help="VAE checkpoint to encode IMAGES with."),
    split: str = typer.Option("test", "--split", help="train or test (with --codes)."),
    threads: int = Threads,
    head: list[str] = typer.Option(None, "--head", help="With a bundle: the task head(s) to run "
                                   "(default: every head in the bundle)."),
    int8: bool = typer.Option(False, "--int8", help="With a bundle: run its int8 encoder."),
    labels: Path = typer.Option(None, "--labels", help="With a bundle: IDX labels of the images, "
                                "to report each head's accuracy on its classes."),
    batch_size: int = typer.Option(4096, "--batch-size", min=1, help="With a bundle: images per "
                                   "batch (memory stays flat in the number of images)."),
    json_out: bool = JsonOut,
):
    """Classify with an exported BNN on the XNOR-popcount kernels (torch-free BNN), or images
    with a deploy bundle: encoder in ONNX Runtime, heads on the kernels, no torch imported.

    No --seed: prediction is deterministic.

    Example: hybnn predict --model runs/bundle t10k-images-idx3-ubyte.gz --json

    Codes: hybnn predict --model runs/bnn-task3.h5 --codes runs/codes.h5 --json

    Images through torch: hybnn predict --model runs/bnn-task3.h5 --encoder runs/vae.pt digit.png
    """
    if model.is_dir():
        if codes is not None or encoder is not None:
            raise HybnnError("a bundle holds its encoder: give image files, not --codes or "
                             "--encoder")
        return _predict_bundle(model, images or [], threads, head, int8, labels, batch_size,
                               json_out)
    if head or int8 or labels is not None:
        raise HybnnError("--head, --int8 and --labels go with a deploy bundle (a folder) as "
                         "--model")
    from hybnn_cli import predict as pr

    if (codes is None) == (encoder is None):
        raise HybnnError("give either --codes CODES.h5, or --encoder VAE.pt with image files")
    if codes is not None:
        if images:
            raise HybnnError("image files go with --encoder, not with --codes")
        if split not in ("train", "test"):
            raise HybnnError(f"unknown --split '{split}': use train or test")
        with using_threads(threads):
            result = pr.predict_codes(model, codes, split)
        if json_out:
            _print_json(result)
            return
        line = (f"{result['task']} on {codes} /{split}: {result['n']} codes in "
                f"{result['seconds'] * 1e3:.1f} ms")
        if "accuracy" in result:
            line += f"; accuracy {result['accuracy']:.2%} on the task's {result['n_task']} codes"
        typer.echo(line)
        return
    if not images:
        raise HybnnError("--encoder needs image files (IDX, PNG or NPY)")
    with using_threads(threads):
        result = pr.predict_images(model, encoder, images)
    if json_out:
        _print_json(result)
    else:
        for i, label in enumerate(result["labels"]):
            typer.echo(f"{i}\t{label}")


def _predict_bundle(bundle, images, threads, heads, int8, labels, batch_size, json_out):
    from hybnn_cli.predict_bundle import predict_bundle

    if not images:
        raise HybnnError("no images given: name IDX, PNG or NPY files to classify")
    with using_threads(threads) as n, make_progress(disable=json_out) as progress:
        bar = progress.add_task("classify", total=None, status="")
        result = predict_bundle(bundle, images, n, int8, heads, batch_size, labels,
                                on_start=lambda n: progress.update(bar, total=n),
                                on_batch=lambda n: progress.advance(bar, n))
    if json_out:
        _print_json(result)
        return
    names = list(result["heads"])
    for name in names:
        r = result["heads"][name]
        if "accuracy" in r and r["accuracy"] is not None:
            typer.echo(f"# {name}: accuracy {r['accuracy']:.2%} on the {r['n_task']} images of "
                       f"classes {', '.join(map(str, r['classes']))}")
    typer.echo("#\t" + "\t".join(names))
    for i in range(result["n"]):
        typer.echo(f"{i}\t" + "\t".join(str(result["heads"][h]["labels"][i]) for h in names))


@app.command("bench")
@handle_errors
def bench_cmd(
    quick: bool = typer.Option(False, "--quick", help="Short run: GEMMs up to 512, fewer "
                               "repeats."),
    threads: int = Threads,
    out: Path = typer.Option(None, "--out", help="Write the full results as JSON here."),
    plot_path: Path = typer.Option(None, "--plot", help="Write a PNG of speedup against GEMM "
                                   "size here."),
    json_out: bool = JsonOut,
):
    """Benchmark the XNOR-popcount kernels against numpy and torch float32, checking every answer.

    The BNN head runs against a float32 head built from the same network (weights pre-signed,
    batch norm folded) and against the float hidden-layer matmul alone; every contender's output
    is checked against a reference in the same run, and a mismatch fails the benchmark. Runs in a
    child process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, so numpy uses its best
    kernel; records the machine and which BLAS kernel ran.

    No --seed: the inputs come from fixed seeds; only the timings vary between runs.

    Example: hybnn bench --out benchmarks/results/bench.json --plot benchmarks/results/speedup.png
    """
    from hybnn_cli import bench, results

    threads = resolve_threads(threads)
    for p in (out, plot_path):
        if p is not None:
            _check_out(p)
    body = bench.run_in_clean_env(quick, threads,
                                  log=None if json_out else sys.stderr)
    if out is not None:
        result = results.write_result(out, bench.BENCH_FORMAT, bench.BENCH_VERSION, body)
    else:
        result = {**results.result_header(bench.BENCH_FORMAT, bench.BENCH_VERSION), **body}
    if plot_path is not None:
        bench.plot(result, plot_path)
    if json_out:
        _print_json(result)
        return
    _print_bench_table(result)


def _print_bench_table(result: dict) -> None:
    from rich.table import Table

    m, s = result["machine"], result["setup"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']}"
                     for b in s["numpy_blas"])
    table = Table(title=f"{m['cpu']} ({s['llvm_cpu_name']}), {s['threads']} threads; kernel "
                  f"{s['kernel']['variant']}; numpy BLAS {blas}; torch {m['packages']['torch']}; "
                  f"every output checked")
    for col in ("case", "XNOR", "numpy f32", "torch f32", "×numpy", "×torch",
                "×float 200→128 matmul alone", "XNOR of its peak", "best f32 of FMA peak",
                "weights (less)"):
        table.add_column(col, justify="left" if col == "case" else "right")

    def rate(e):
        if "us_per_sample" in e:
            return f"{e['us_per_sample']:.3g} µs/smp"
        return f"{e['ops_per_second'] / 1e9:,.0f} Gop/s"

    for c in result["cases"]:
        wb = c["weight_bytes"]
        alone = c.get("speedup_vs_best_hidden_matmul")
        frac = c["fraction_of_peak"]
        table.add_row(c["name"], rate(c["xnor"]), rate(c["numpy_f32"]), rate(c["torch_f32"]),
                      f"{c['speedup_vs_numpy']:.1f}", f"{c['speedup_vs_torch']:.1f}",
                      "" if alone is None else f"{alone:.1f}", f"{frac['xnor']:.0%}",
                      f"{max(frac['numpy_f32'], frac['torch_f32']):.0%}",
                      f"{wb['binary']:,} B ({wb['ratio']:.0f}×)")
    console = Console() if sys.stdout.isatty() else Console(width=170)
    console.print(table)
    roof = result["roofline"]
    console.print(f"Roofline, measured in this run: float32 FMA peak "
                  f"{roof['fma_f32']['ops_per_second'] / 1e9:,.0f} GFLOP/s, XNOR tile peak "
                  f"{roof['xnor']['ops_per_second'] / 1e9:,.0f} Gop/s: the XNOR kernel can be at "
                  f"most {roof['ratio_bound']:.1f}× a float32 GEMM at its peak here.",
                  highlight=False)
# ── federated training (Flower) ───────────────────────────────────────────────────────────────
@app.command("fed")
@handle_errors
def fed_cmd(
    codes: Path = typer.Option(None, "--codes", help=latest.HELP["codes"] + " The clients "
                               "split its train set; the server tests on its test set."),
    task: str = typer.Option("3", "--task", help="1..5 (digit pairs 0/1 … 8/9) or all."),
    clients: int = typer.Option(3, "--clients", min=1, help="Number of clients (partitions; "
                                "up to the train set's size: a client may hold one sample)."),
    fraction: float = typer.Option(1.0, "--fraction", help="Share of the clients sampled each "
                                   "round (seeded by --seed and the round), in (0, 1]."),
    rounds: int = typer.Option(20, "--rounds", min=1, help="Federated rounds."),
    local_epochs: int = typer.Option(5, "--local-epochs", min=1, help="Local epochs per round."),
    batch_size: int = typer.Option(128, "--batch-size", min=2),
    lr: float = typer.Option(1e-2, "--lr", help="Adam learning rate, as train-bnn's (cosine "
                             "over all rounds × local epochs)."),
    hidden: int = typer.Option(128, "--hidden", min=1, help="Hidden neurons."),
    partition: str = typer.Option("iid", "--partition", help="iid or dirichlet (label skew)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Dirichlet concentration (smaller = more "
                                "skew)."),
    uplink: str = typer.Option("float", "--uplink", help="float (latent weights) or bits (packed "
                               "sign bits; batch-norm stays float)."),
    min_valid: int = typer.Option(1, "--min-valid", min=1, help="Fewer valid updates in a round "
                                  "keep the previous global model."),
    round_timeout: float = typer.Option(600.0, "--round-timeout", min=1.0, help="Seconds the "
                                        "server waits for a round's replies (a client that "
                                        "vanished is left out after it)."),
    seed: int = Seed,
    out: Path = typer.Option(None, "--out", help="Checkpoint of the final global BNN (default "
                             "runs/fed-<task>.pt)."),
    secagg: bool = typer.Option(False, "--secagg", help="Flower's SecAgg+ secure aggregation: "
                                "the server learns only the sum of the clients' updates "
                                "(in-process and simulation engines)."),
    engine: str = typer.Option("inprocess", "--engine", help="inprocess (one process, no "
                               "SuperLink), simulation (Flower's Simulation Engine on Ray, as "
                               "`flwr run .`) or deployment (a SuperLink and one SuperNode per "
                               "client on loopback, with TLS and SuperNode authentication)."),
    deployment: bool = typer.Option(False, "--deployment", help="Alias of --engine deployment."),
    run_dir: Path = typer.Option(None, "--run-dir", help="With the simulation or deployment "
                                 "engine: folder for logs and outputs, and the deployment's "
                                 "certificates and keys (default: a new folder under runs/)."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP + " On the "
                                "simulation engine, Ray runs one client per thread at a time; "
                                "on the deployment engine they are shared out among the "
                                "clients' processes (at least 1 each)."),
    json_out: bool = JsonOut,
):
    """Train the task BNN by federated averaging on Flower and report the global test accuracy
    after every round.

    Example: hybnn fed --codes runs/codes.h5 --task 3 --clients 3 --rounds 20

    Example: hybnn fed --engine simulation --clients 1000 --fraction 0.1 --rounds 100
    """
    import logging

    from hybnn_cli.fed.config import FedConfig
    from hybnn_cli.fed.run import ENGINES, process_threads, run_federation

    logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower's INFO off, warnings kept
    t = parse_task(task)
    out = out or Path(f"runs/fed-{t.name}.pt")
    _check_out(out)
    codes = latest.resolve("codes", codes)
    if not codes.is_file():
        raise HybnnError(f"{codes}: no such codes file")
    if deployment and engine not in ("inprocess", "deployment"):
        raise HybnnError(f"--deployment is --engine deployment; it contradicts --engine {engine}")
    engine = "deployment" if deployment else engine
    if engine not in ENGINES:
        raise HybnnError(f"unknown engine '{engine}': use {', '.join(ENGINES)}")
    if secagg and engine == "deployment":
        raise HybnnError("--secagg runs on the inprocess and simulation engines")
    total_threads = resolve_threads(threads)
    cfg = FedConfig(codes=str(codes), task=task, clients=clients, fraction=fraction,
                    rounds=rounds,
                    local_epochs=local_epochs, batch_size=batch_size, lr=lr, hidden=hidden,
                    partition=partition, alpha=alpha, uplink=uplink, seed=seed,
                    min_valid=min_valid, round_timeout=round_timeout, out=str(out),
                    secagg=secagg, threads=process_threads(total_threads, engine, clients))
    with make_progress(disable=json_out) as progress:
        bar = progress.add_task(f"fed {t.name}", total=rounds, status="starting")

        def on_round(row: dict) -> None:
            if row["round"] == 0:
                return
            status = (f"test {row['test_acc']:.2%}  valid {row.get('valid_updates', 0)}/"
                      f"{len(row.get('clients', []))}")
            progress.update(bar, completed=row["round"], status=status)
            if not json_out:
                progress.console.print(
                    f"round {row['round']:3d}  test {row['test_acc']:.2%}  "
                    f"up {row.get('bytes_sent', 0) / 1e3:,.1f} kB  "
                    f"down {row.get('bytes_recv', 0) / 1e3:,.1f} kB  {status.split('  ')[1]}"
                    + ("  (kept previous model)" if row.get("kept_previous") else ""),
                    highlight=False)

        result = run_federation(cfg, engine, run_dir, on_round, cpus=total_threads)
    if json_out:
        _print_json(result)
    else:
        b = result["bytes"]
        typer.echo(f"{t.name} federated ({clients} clients, {partition}, uplink {uplink}): "
                   f"test accuracy {result['final_test_acc']:.2%} after {rounds} rounds  "
                   f"→ {out}")
        typer.echo(f"bytes per round: up {b['uplink_per_round'] / 1e3:,.1f} kB, down "
                   f"{b['downlink_per_round'] / 1e3:,.1f} kB (all clients); run total "
                   f"{(b['uplink_total'] + b['downlink_total']) / 1e6:,.2f} MB")


# ── continual learning ─────────────────────────────────────────────────────────────────────────
@app.command("continual")
@handle_errors
def continual_cmd(
    codes: Path = typer.Option(Path("runs/codes.h5"), "--codes", help="Codes file (with labels)."),
    scenario: str = typer.Option("class", "--scenario", help="class (one output layer for all "
                                 "classes seen; the task is not told at test time) or task (the "
                                 "task is known; outputs masked to its two classes)."),
    strategy: str = typer.Option("replay", "--strategy", help="none (fine-tuning), replay (a "
                                 "memory of codes), generative (per-class Bernoulli mixtures, "
                                 "no stored codes) or joint (all tasks so far; upper bound)."),
    memory: int = typer.Option(2000, "--memory", min=1, help="Codes kept by replay (25 bytes "
                               "each for 200 bits, plus a label byte)."),
    memory_policy: str = typer.Option("balanced", "--memory-policy",
                                      help="balanced (each class an equal share) or reservoir."),
    components: int = typer.Option(50, "--components", min=1,
                                   help="Mixture components per class (generative)."),
    epochs_per_task: int = typer.Option(20, "--epochs-per-task", min=1),
    batch_size: int = typer.Option(128, "--batch-size", min=2, help="New codes per batch."),
    replay_ratio: float = typer.Option(1.0, "--replay-ratio", min=0.0,
                                       help="Replayed codes per new code in each batch."),
    loss: str = typer.Option("plain", "--loss", help="ace (new codes compete only within their "
                             "task, replayed codes across all seen classes) or plain."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", min=0, help="Balanced "
                                        "fine-tuning on the memory at the end of each task."),
    finetune_lr: float = typer.Option(1e-3, "--finetune-lr"),
    flip: float = typer.Option(0.0, "--flip", min=0.0, max=0.5, help="Probability of "
                               "flipping each bit of a replayed code (augmentation)."),
    distill: float = typer.Option(0.0, "--distill", min=0.0, help="Weight of distillation "
                                  "toward the previous task's model on the old classes' scores."),
    lr: float = typer.Option(1e-2, "--lr", help="Adam learning rate (cosine over each task)."),
    hidden: int = typer.Option(512, "--hidden", min=1, help="Hidden width of the BNN."),
    seeds: str = typer.Option("0", "--seeds", help="Seeds, e.g. 0,1,2 (one run each; saved "
                              "with the results)."),
    threads: int = Threads,
    val_fraction: float = ValFraction,
    out: Path = typer.Option(Path("runs/continual"), "--out", help="Folder for the checkpoints "
                             "(one per seed, after each task) and <scenario>-<strategy>.json."),
    resume: bool = typer.Option(False, "--resume", help="Continue each seed from its checkpoint "
                                "in --out (same settings required)."),
    json_out: bool = JsonOut,
):
    """Learn the five digit pairs one after another (Split-MNIST on codes) and report accuracy
    on every task seen, average accuracy, forgetting, backward transfer, memory and time.

    Example: hybnn continual --codes runs/codes.h5 --scenario class --strategy replay
    --memory 2000 --seeds 0,1,2 --out runs/continual
    """
    from hybnn_cli.continual import run as crun
    from hybnn_cli.continual import study

    cfg = crun.ContinualConfig(
        scenario=scenario, strategy=strategy, memory=memory, memory_policy=memory_policy,
        components=components, epochs_per_task=epochs_per_task, batch_size=batch_size,
        replay_ratio=replay_ratio, loss=loss, finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr, flip=flip, distill=distill, lr=lr, hidden=hidden,
        threads=resolve_threads(threads),
        val_fraction=val_fraction)
    cfg.check()
    seed_list = parse_seeds(seeds)
    if out.exists() and not out.is_dir():
        raise HybnnError(f"{out} is a file; --out takes a folder")
    data = crun.load_data(codes, val_fraction)
    cfg.check(data.n_classes)
    n_tasks = len(data.tasks)
    with using_threads(cfg.threads), make_progress(disable=json_out) as progress:
        bar = progress.add_task(f"continual {study.run_name(cfg)}",
                                total=len(seed_list) * n_tasks * epochs_per_task, status="")

        def on_epoch(s, t, e, m):
            done = seed_list.index(s) * n_tasks * epochs_per_task + t * epochs_per_task + e + 1
            progress.update(bar, completed=done, status=f"seed {s} task {t + 1}")

        def on_task(s, t, h):
            if not json_out:
                accs = " ".join(f"{a:.2%}" for a in h["test"]["per_task"])
                progress.console.print(f"seed {s} after task {t + 1}: seen classes "
                                       f"{h['test']['seen']:.2%} (val {h['val']['seen']:.2%}); "
                                       f"per task {accs}", highlight=False)

        result = study.run_seeds(cfg, data, seed_list, out, resume, on_task, on_epoch)
    if json_out:
        _print_json(result)
        return
    te, va = result["test"], result["val"]

    def ms(m):
        return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}%"

    typer.echo(f"{study.run_name(cfg)} over seeds {seeds}: accuracy on all seen classes "
               f"{ms(te['final_seen_acc'])} (val {ms(va['final_seen_acc'])}); average accuracy "
               f"{ms(te['average_acc'])}; forgetting {ms(te['forgetting'])}; backward transfer "
               f"{ms(te['backward_transfer'])}; memory {result['memory_bytes']:,} bytes; "
               f"training {result['train_seconds']['mean']:.1f} s per seed  → {result['path']}")


# ── the paper's comparison: baseline, reproduction, report ───────────────────────────────────
@app.command("baseline")
@handle_errors
def baseline_cmd(
    task: str = typer.Option(None, "--task", help="1..5 (digit pairs 0/1 … 8/9) or all "
                             "(10 classes). Default 3."),
    digits: str = typer.Option(None, "--digits", help="Any classes instead of --task, e.g. 3,8."),
    binarize: str = typer.Option("sign", "--binarize", help="Input binarization: sign (the "
                                 "paper's; every pixel in [0, 1] becomes +1), threshold (pixel "
                                 ">= 0.5 → +1) or none (real-valued first layer)."),
    dataset: str = typer.Option("mnist", "--dataset", help="mnist or fashion-mnist."),
    epochs: int = typer.Option(15, "--epochs", min=1, help="Epochs (the paper: 15)."),
    batch_size: int = typer.Option(128, "--batch-size", min=2),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine or constant."),
    train_limit: int = typer.Option(None, "--train-limit", min=2, help="Use only the first N "
                                    "images of each split (quick runs)."),
    val_fraction: float = ValFraction,
    seed: int = Seed,
    threads: int = Threads,
    out: Path = typer.Option(None, "--out", help="Checkpoint to write "
                             "(default runs/cnn-<task>-<binarize>.pt)."),
    resume: Path = typer.Option(None, "--resume", help="Continue from this baseline checkpoint."),
    device: str = Device,
    data_dir: Path = DataDir,
    json_out: bool = JsonOut,
):
    """Train the paper's baseline, a binary CNN on images, and report its test accuracy.

    Example: hybnn baseline --task 3 --binarize sign --epochs 15
    """
    from hybnn_cli import stages
    from hybnn_cli.baseline import BaselineConfig, check_binarize

    check_binarize(binarize)
    dev = resolve_device(device)
    if schedule not in ("cosine", "constant"):
        raise HybnnError(f"unknown --schedule '{schedule}': use cosine or constant")
    get_spec(dataset)
    t = parse_task(task, digits)
    out = out or Path(f"runs/cnn-{t.name}-{binarize}.pt")
    _check_out(out)
    with using_threads(threads) as n, _epoch_bar(f"baseline {t.name} ({binarize})", epochs,
                                                  json_out) as on_epoch:
        cfg = BaselineConfig(task=t.name, binarize=binarize, dataset=dataset, epochs=epochs,
                             batch_size=batch_size, lr=lr, schedule=schedule, seed=seed,
                             threads=n, train_limit=train_limit, val_fraction=val_fraction,
                             device=str(dev))
        result = stages.train_baseline(t, cfg, out, data_dir, resume, on_epoch)
    if json_out:
        _print_json({"out": str(out), **result})
    else:
        for m in result["history"][-5:]:
            typer.echo(f"epoch {m['epoch']:3d}  {epoch_status(m)}")
        pred = ", ".join(f"{c}: {n}" for c, n in zip(t.classes, result["predicted_class_counts"],
                                                        strict=True))
        typer.echo(f"{t.name} ({binarize} input): {_val_text(result)}test accuracy "
                   f"{result['test_acc']:.2%}; "
                   f"predicted per class: {pred}  → {out}")


@app.command("reproduce")
@handle_errors
def reproduce_cmd(
    work: Path = typer.Option(None, "--work", help="Folder for the stages' artifacts "
                              "(default runs/reproduce, or runs/reproduce-quick with --quick)."),
    results_dir: Path = typer.Option(None, "--results-dir", help="Where reproduction.json, "
                                     "reproduction.md and the PNGs go (default "
                                     "benchmarks/results, or <work>/results with --quick)."),
    quick: bool = typer.Option(False, "--quick", help="A small configuration for tests and "
                               "demos: 1000 images per split, 1–2 epochs."),
    vae_epochs: int = typer.Option(None, "--vae-epochs", min=1, help="VAE epochs (paper: 20)."),
    fashion_vae_epochs: int = typer.Option(None, "--fashion-vae-epochs", min=1,
                                           help="Epochs of the Fashion-MNIST VAE of the "
                                           "transfer study (default: --vae-epochs)."),
    bnn_epochs: int = typer.Option(None, "--bnn-epochs", min=1, help="BNN epochs (paper: 100)."),
    baseline_epochs: int = typer.Option(None, "--baseline-epochs", min=1,
                                        help="Binary CNN epochs (paper: 15)."),
    tasks: str = typer.Option("1,2,3,4,5", "--tasks", help="Digit-pair tasks to run."),
    binarize: str = typer.Option("sign,threshold,none", "--binarize",
                                 help="Baseline input binarizations to run."),
    ten_class: bool = typer.Option(True, "--ten-class/--no-ten-class",
                                   help="Also train the 10-class BNN on the codes."),
    fashion: bool = typer.Option(True, "--fashion/--no-fashion",
                                 help="Also run the Fashion-MNIST transfer study."),
    limit: int = typer.Option(None, "--limit", min=10, help="Use only the first N images of "
                              "each split."),
    cached_only: bool = typer.Option(False, "--cached-only", help="Train nothing: gather the "
                                     "stages already done (e.g. by other processes) and list "
                                     "the missing ones."),
    seeds: str = typer.Option(None, "--seeds", help="Seeds, comma-separated (default 0,1,2; "
                              "--quick: 0,1). Seed s pretrains VAE s and trains every model "
                              "with seed s; settings are chosen on the first seed's validation "
                              "accuracy."),
    threads: int = Threads,
    data_dir: Path = DataDir,
    json_out: bool = JsonOut,
):
    """Run the paper's comparison and the Fashion-MNIST transfer study; write the results JSON,
    a markdown table and PNG figures. Stages already done (same config and seed) are reused, so
    an interrupted run continues where it stopped.

    Each model's learning rate (and the 10-class BNN's hidden width) is chosen from a short list
    on the validation accuracy of the first seed; the chosen setting is trained with every seed,
    and the test split is read only for those runs: tables give mean ± standard deviation.

    Example: hybnn reproduce --quick
    """
    from hybnn_cli import reproduce
    from hybnn_cli.baseline import check_binarize
    from hybnn_cli.report import write_report

    task_list = parse_pair_tasks(tasks)
    bins = parse_list(binarize, "--binarize")
    for b in bins:
        check_binarize(b)
    overrides = {k: v for k, v in {"vae_epochs": vae_epochs,
                                   "fashion_vae_epochs": fashion_vae_epochs,
                                   "bnn_epochs": bnn_epochs,
                                   "baseline_epochs": baseline_epochs, "limit": limit,
                                   "seeds": parse_seeds(seeds) if seeds else None}.items()
                 if v is not None}
    make = reproduce.StudyConfig.quick if quick else reproduce.StudyConfig
    cfg = make(**overrides, tasks=task_list, binarizations=bins, ten_class=ten_class,
               fashion=fashion, threads=resolve_threads(threads))
    work = work or Path("runs/reproduce-quick" if quick else "runs/reproduce")
    results_dir = results_dir or (work / "results" if quick else Path("benchmarks/results"))
    argv = sys.argv[1:] if Path(sys.argv[0]).name == "hybnn" else ["reproduce"]
    command = " ".join(["hybnn", *argv])
    with using_threads(cfg.threads), make_progress(disable=json_out) as progress:
        reporter = _StudyProgress(progress, json_out)
        results = reproduce.run_study(cfg, work, data_dir, reporter, command=command,
                                      cached_only=cached_only)
    results_path = results_dir / "reproduction.json"
    reproduce.write_results(results, results_path)
    written = write_report(results, results_dir)
    files = [str(results_path)] + [str(p) for p in written.values()]
    if json_out:
        _print_json({"results": str(results_path), "files": files})
    else:
        def acc(r):
            return (f"{100 * r['test_acc']:.2f} ± {100 * r['test_acc_std']:.2f}%" if r
                    else "not done")

        for row in results["tasks"]:
            accs = "  ".join(f"{b} {acc(r)}" for b, r in row["baselines"].items())
            typer.echo(f"{row['task']}: HyBNN {acc(row['hybnn'])}  CNN {accs}")
        if results["missing"]:
            typer.echo(f"{len(results['missing'])} stages not done yet: "
                       + "; ".join(results["missing"]))
        typer.echo(f"Wrote {len(files)} files to {results_dir}")


class _StudyProgress:
    """The study's progress as a rich bar per stage and one line per finished stage."""

    def __init__(self, progress, quiet: bool):
        self.progress = progress
        self.quiet = quiet
        self.bar = None

    def stage(self, description: str, total: int | None) -> None:
        self._drop()
        self.bar = self.progress.add_task(description, total=total, status="")

    def step(self, completed: int, status: str = "") -> None:
        if self.bar is not None:
            self.progress.update(self.bar, completed=completed, status=status)

    def done(self, description: str, result: str, cached: bool) -> None:
        self._drop()
        if not self.quiet:
            self.progress.console.print(f"{'reused' if cached else 'done  '}  {description}: "
                                        f"{result}", highlight=False)

    def _drop(self) -> None:
        if self.bar is not None:
            self.progress.remove_task(self.bar)
            self.bar = None


@app.command("report")
@handle_errors
def report_cmd(
    results: Path = typer.Option(Path("benchmarks/results/reproduction.json"), "--results",
                                 help="Results JSON written by `hybnn reproduce`."),
    out: Path = typer.Option(None, "--out", help="Folder for the table and figures (default: "
                             "the results file's folder)."),
    docs: bool = typer.Option(False, "--docs", help="Also rewrite the generated blocks of "
                              "README.md and the docs from the result files in the results "
                              "file's folder (run from the project's root)."),
    json_out: bool = JsonOut,
):
    """Redraw the reproduction's table and figures from its JSON, without retraining; with
    --docs, regenerate every result quoted in README.md and docs/ from benchmarks/results/.

    No --seed: it only redraws what the JSON holds.

    Example: hybnn report --results benchmarks/results/reproduction.json --docs
    """
    from hybnn_cli.report import load_results, write_report

    data = load_results(results)
    written = write_report(data, out or results.parent)
    if docs:
        from hybnn_cli import docgen

        for i, p in enumerate(docgen.update_docs(Path.cwd(), results.parent)):
            written[f"regenerated {i + 1}"] = p
    if json_out:
        _print_json({name: str(p) for name, p in written.items()})
    else:
        for name, p in written.items():
            typer.echo(f"{name}: {p}")


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


if __name__ == "__main__":
    main()
    sys.exit(0)
