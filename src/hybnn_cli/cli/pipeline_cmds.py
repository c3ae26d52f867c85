"""The pipeline's commands: pretrain the VAE, extract codes (and merge shards), train and
evaluate a task BNN."""

from __future__ import annotations

from pathlib import Path

import typer

from hybnn_cli.cli import latest
from hybnn_cli.cli.app import (
    DataDir,
    Device,
    JsonOut,
    Seed,
    Threads,
    ValFraction,
    app,
    check_out,
    epoch_bar,
    handle_errors,
    print_json,
    val_text,
)
from hybnn_cli.cli.progress import make_progress
from hybnn_cli.data.datasets import get_spec
from hybnn_cli.data.tasks import parse_task
from hybnn_cli.device import resolve_device
from hybnn_cli.errors import HybnnError
from hybnn_cli.threads import using as using_threads
from hybnn_cli.train.configs import BNNConfig, VAEConfig

DataPath = typer.Option(None, "--data", help="Images from files instead of --dataset: a "
                        "folder PATH/train/<class>/*.png|jpg and PATH/test/<class>/…, a folder "
                        "of class subfolders (split by --test-fraction), an .npz with x_train, "
                        "y_train, x_test, y_test, or a folder of IDX pairs. See "
                        "docs/pretraining.md (Your own images).")
TestFraction = typer.Option(None, "--test-fraction", help="With --data: the share of each class "
                            "put in the test split of a folder that has no train/ and test/ "
                            "(seeded, recorded; default 0.2). Give the same value to "
                            "pretrain-vae and extract.")


@app.command("pretrain-vae")
@handle_errors
def pretrain_vae_cmd(
    dataset: str = typer.Option(None, "--dataset", help="mnist (default), fashion-mnist, "
                                "mnist+fashion-mnist (both training sets, 120,000 images), or "
                                "any IDX set under the data folder, alone or joined with +."),
    data: Path = DataPath,
    test_fraction: float = TestFraction,
    epochs: int = typer.Option(VAEConfig.epochs, "--epochs", min=1,
                               help="Epochs (the paper: 20)."),
    batch_size: int = typer.Option(VAEConfig.batch_size, "--batch-size", min=2,
                                   help="Images per step in all; "
                                   "under torchrun each of N processes takes batch-size / N."),
    lr: float = typer.Option(VAEConfig.lr, "--lr", help="Adam learning rate."),
    latent_bits: int = typer.Option(VAEConfig.latent_bits, "--latent-bits", min=1,
                                    help="Bits in the code."),
    image_size: int = typer.Option(None, "--image-size", help="Square size, 8 to 64 pixels, "
                                   "the VAE takes; images of another square size are resized "
                                   "(bilinear, recorded). Default: the images' own size."),
    kl_weight: float = typer.Option(VAEConfig.kl_weight, "--kl-weight",
                                     help="Weight of the KL term."),
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

    Data-parallel on N processes (one machine or several) when started with torchrun, e.g.
    torchrun --standalone --nproc-per-node 2 -m hybnn_cli pretrain-vae --threads 1. Each process
    trains on batch-size / N images of every step (gloo on the CPU, nccl on CUDA) and keeps its
    own batch norm statistics (torch's SyncBatchNorm does not run on the CPU); rank 0 alone
    writes the checkpoint and PNG and shows progress.

    Example: hybnn pretrain-vae --epochs 20 --out runs/vae.pt

    Your own images: hybnn pretrain-vae --data photos/ --out runs/vae.pt (one or three
    channels; other sizes with --image-size 32).
    """
    from hybnn_cli.data.pretrain_sets import check_pretrain_dataset
    from hybnn_cli.distributed import process_group

    check_out(out)
    dataset = _data_choice(dataset, data, test_fraction)
    if data is None:
        check_pretrain_dataset(dataset, data_dir)
    with process_group(device) as group, using_threads(threads) as n:
        cfg = VAEConfig(dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                        latent_bits=latent_bits, kl_weight=kl_weight, seed=seed, threads=n,
                        train_limit=train_limit, device=str(group.device),
                        data=None if data is None else str(data), test_fraction=test_fraction,
                        image_size=image_size)
        result = _pretrain(cfg, out, data_dir, resume, group, json_out or not group.is_main)
    if not group.is_main:
        return
    latest.remember("vae", out)
    if json_out:
        print_json({"out": str(out), **result})
    else:
        typer.echo(f"Saved {out} and {out.with_suffix('.png')}")


def _data_choice(dataset: str | None, data: Path | None, test_fraction: float | None) -> str:
    """The --dataset name (default mnist), or with --data the name its files will be known by;
    one line when both are given or --test-fraction comes without --data."""
    if data is not None and dataset is not None:
        raise HybnnError("give either --dataset NAME or --data PATH, not both")
    if data is None and test_fraction is not None:
        raise HybnnError("--test-fraction splits the images of --data PATH; a named dataset has "
                         "its own test split")
    if data is None:
        return dataset or "mnist"
    return f"files:{Path(data).resolve().name}"


def _pretrain(cfg, out: Path, data_dir, resume, group, quiet: bool) -> dict:
    """stages.pretrain_vae with a progress bar and one line per epoch (unless quiet)."""
    from hybnn_cli.train import stages

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

        on_file = _file_bar(progress) if cfg.data else None
        return stages.pretrain_vae(cfg, out, data_dir, resume, on_step, on_epoch, group, on_file)


def _file_bar(progress):
    """A bar for the image files of --data: `on_file(n, stage)` counts the files hashed, then
    those decoded (none when the cache of decoded images has them; see `data.image_store`)."""
    bar = progress.add_task("hash images", total=None, status="")
    seen = {"stage": "hash"}

    def on_file(n: int, stage: str) -> None:
        if stage != seen["stage"]:
            seen["stage"] = stage
            progress.reset(bar, total=None, description=f"{stage} images")
        progress.advance(bar, n)

    return on_file


@app.command("extract")
@handle_errors
def extract_cmd(
    out: Path = typer.Option(latest.DEFAULTS["codes"], "--out", help="Codes file to write "
                             "(HDF5); later commands find it without --codes."),
    vae: Path = typer.Option(None, "--vae", help=latest.HELP["vae"]),
    dataset: str = typer.Option(None, "--dataset", help="Dataset to encode (mnist, the "
                                "default, or fashion-mnist); may differ from the pretraining "
                                "set."),
    data: Path = DataPath,
    test_fraction: float = TestFraction,
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
    """Encode a dataset's splits into packed binary codes.

    The train and test splits go to one codes file. To encode in slices, give each process
    --shard K/N and join the files with hybnn merge-codes, or start it with torchrun. No --seed:
    encoding is deterministic; the codes file records the VAE's seed.

    Example: hybnn extract --vae runs/vae.pt --out runs/codes.h5

    Your own images: hybnn extract --vae runs/vae.pt --data photos/ --out runs/codes.h5
    """
    from hybnn_cli.codes.shards import parse_shard
    from hybnn_cli.data.labelled import open_labelled
    from hybnn_cli.distributed import process_group
    from hybnn_cli.train import stages
    from hybnn_cli.train.stages import extract_parallel

    check_out(out)
    dataset = _data_choice(dataset, data, test_fraction)
    if data is None:
        get_spec(dataset)
    part = parse_shard(shard) if shard else None
    with process_group(device) as group, using_threads(threads), \
            make_progress(disable=json_out or not group.is_main) as progress:
        if group.parallel and part:
            raise HybnnError("--shard: under torchrun each process takes its own shard; "
                             "leave --shard out")
        vae = latest.resolve("vae", vae)
        if data is not None:
            dataset = open_labelled(data=data, test_fraction=test_fraction,
                                    on_file=_file_bar(progress))
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
        print_json(result)
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
    """Join the shards of one extraction into one codes file.

    The result equals a single extract. It refuses shards from different encoders, overlapping
    or repeated shards and missing ones, and copies the codes in chunks (memory stays flat in
    the data set's size). No --seed: merging is deterministic; the codes file records the VAE's
    seed.

    Example: hybnn merge-codes runs/s0.h5 runs/s1.h5 --out runs/codes.h5
    """
    from hybnn_cli.codes.shards import merge_codes

    check_out(out)
    with make_progress(disable=json_out) as progress:
        bar = progress.add_task("merge-codes", total=None, status="")
        result = merge_codes(shards, out, on_rows=lambda n: progress.advance(bar, n))
    if json_out:
        print_json(result)
    else:
        typer.echo(f"Wrote {out}: {result['n_train']} train and {result['n_test']} test codes "
                   f"from {result['shards']} shards (encoder {result['encoder_sha256'][:12]}…)")


@app.command("train-bnn")
@handle_errors
def train_bnn_cmd(
    codes: Path = typer.Option(None, "--codes", help=latest.HELP["codes"]),
    task: str = typer.Option(None, "--task", help="1..5 (digit pairs 0/1 … 8/9) or all "
                             "(every class of the codes: 10 for MNIST). Default 3."),
    digits: str = typer.Option(None, "--digits", help="Any classes by index instead of --task, "
                               "e.g. 3,8."),
    classes: str = typer.Option(None, "--classes", help="Any two or more classes by the names "
                                "the codes file records (or by index), e.g. cat,dog."),
    epochs: int = typer.Option(BNNConfig.epochs, "--epochs", min=1,
                               help="Epochs (the paper: 100)."),
    batch_size: int = typer.Option(BNNConfig.batch_size, "--batch-size", min=2),
    lr: float = typer.Option(BNNConfig.lr, "--lr", help="Adam learning rate (latent weights "
                             "live in [−1, 1]). The README lists what validation chose per task "
                             "(`hybnn reproduce`); compare settings with --val-fraction, "
                             "never on test accuracy."),
    schedule: str = typer.Option(BNNConfig.schedule, "--schedule",
                                 help="cosine or constant."),
    hidden: int = typer.Option(BNNConfig.hidden, "--hidden", min=1,
                               help="Hidden neurons (the paper: 128)."),
    val_fraction: float = ValFraction,
    seed: int = Seed,
    threads: int = Threads,
    out: Path = typer.Option(None, "--out", help="Checkpoint to write "
                             "(default runs/bnn-<task>.pt)."),
    resume: Path = typer.Option(None, "--resume", help="Continue from this BNN checkpoint."),
    device: str = Device,
    json_out: bool = JsonOut,
):
    """Train the task BNN on codes.

    It trains on the training split minus a validation slice (--val-fraction), shows the
    validation accuracy after every epoch, and reads the test split once, at the end.

    Example: hybnn train-bnn --codes runs/codes.h5 --task 3

    Classes by name (codes of your own images): hybnn train-bnn --classes cat,dog
    """
    from hybnn_cli.codes.store import class_names, read_attrs

    if schedule not in ("cosine", "constant"):
        raise HybnnError(f"unknown --schedule '{schedule}': use cosine or constant")
    dev = resolve_device(device)
    codes = latest.resolve("codes", codes)
    t = parse_task(task, digits, classes, class_names(read_attrs(codes)))
    out = out or Path(f"runs/bnn-{t.name}.pt")
    check_out(out)
    from hybnn_cli.train import stages

    with using_threads(threads) as n, epoch_bar(f"train-bnn {t.name}", epochs,
                                                  json_out) as on_epoch:
        cfg = BNNConfig(task=t.name, epochs=epochs, batch_size=batch_size, lr=lr,
                        schedule=schedule, hidden=hidden, seed=seed, threads=n,
                        val_fraction=val_fraction, device=str(dev))
        result = stages.train_task_bnn(codes, t, cfg, out, resume, on_epoch)
    if json_out:
        print_json({"out": str(out), **result})
    else:
        typer.echo(f"{t.name} ({t.shown()}): {val_text(result)}test accuracy "
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
    """Accuracy of a BNN checkpoint on a codes file.

    The codes must come from the encoder the BNN was trained on. No --seed: evaluation is
    deterministic.

    Example: hybnn evaluate runs/bnn-task3.pt --codes runs/codes.h5
    """
    from hybnn_cli.train import stages

    codes = latest.resolve("codes", codes)
    with using_threads(threads):
        result = stages.evaluate_task_bnn(model, codes, split)
    if json_out:
        print_json(result)
    else:
        typer.echo(f"{result['task']} {split}: accuracy {result['acc']:.2%} "
                   f"on {result['n']} codes")
