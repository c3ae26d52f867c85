"""The paper's comparison: the binary CNN baseline, the reproduction study and its report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

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
    epoch_status,
    handle_errors,
    print_json,
    val_text,
)
from hybnn_cli.cli.progress import make_progress
from hybnn_cli.data.datasets import get_spec
from hybnn_cli.data.tasks import parse_pair_tasks, parse_task
from hybnn_cli.device import resolve_device
from hybnn_cli.errors import HybnnError
from hybnn_cli.options import parse_list, parse_seeds
from hybnn_cli.threads import resolve as resolve_threads
from hybnn_cli.threads import using as using_threads


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
    """Train the paper's baseline, a binary CNN on images.

    It shows the training and validation accuracy after every epoch, then the test accuracy and
    how many images were predicted as each class (a model that predicts one class for all is
    the paper's failure).

    Example: hybnn baseline --task 3 --binarize sign --epochs 15
    """
    from hybnn_cli.models.binary_cnn import BaselineConfig, check_binarize
    from hybnn_cli.train import stages

    check_binarize(binarize)
    dev = resolve_device(device)
    if schedule not in ("cosine", "constant"):
        raise HybnnError(f"unknown --schedule '{schedule}': use cosine or constant")
    get_spec(dataset)
    t = parse_task(task, digits)
    out = out or Path(f"runs/cnn-{t.name}-{binarize}.pt")
    check_out(out)
    with using_threads(threads) as n, epoch_bar(f"baseline {t.name} ({binarize})", epochs,
                                                  json_out) as on_epoch:
        cfg = BaselineConfig(task=t.name, binarize=binarize, dataset=dataset, epochs=epochs,
                             batch_size=batch_size, lr=lr, schedule=schedule, seed=seed,
                             threads=n, train_limit=train_limit, val_fraction=val_fraction,
                             device=str(dev))
        result = stages.train_baseline(t, cfg, out, data_dir, resume, on_epoch)
    if json_out:
        print_json({"out": str(out), **result})
    else:
        for m in result["history"][-5:]:
            typer.echo(f"epoch {m['epoch']:3d}  {epoch_status(m)}")
        pred = ", ".join(f"{c}: {n}" for c, n in zip(t.classes, result["predicted_class_counts"],
                                                        strict=True))
        typer.echo(f"{t.name} ({binarize} input): {val_text(result)}test accuracy "
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
    """Run the paper's comparison and the Fashion-MNIST study.

    It writes the results JSON, a markdown table and PNG figures. Stages already done (same
    config and seed) are reused, so an interrupted run continues where it stopped. Each model's
    learning rate (and the 10-class BNN's hidden width) is chosen from a short list on the
    validation accuracy of the first seed; the chosen setting is trained with every seed, and
    the test split is read only for those runs: tables give mean ± standard deviation.

    Example: hybnn reproduce --quick
    """
    from hybnn_cli.study import reproduce
    from hybnn_cli.study.provenance import check_rerunnable
    from hybnn_cli.study.reproduction_report import write_report

    cfg = _study_config(quick, tasks, binarize, threads, vae_epochs=vae_epochs,
                        fashion_vae_epochs=fashion_vae_epochs, bnn_epochs=bnn_epochs,
                        baseline_epochs=baseline_epochs, limit=limit, ten_class=ten_class,
                        fashion=fashion, seeds=parse_seeds(seeds) if seeds else None)
    work = work or Path("runs/reproduce-quick" if quick else "runs/reproduce")
    results_dir = results_dir or (work / "results" if quick else Path("benchmarks/results"))
    prog = Path(sys.argv[0])  # `hybnn …` or `python -m hybnn_cli …`, not a host like pytest
    ours = prog.name == "hybnn" or prog.parts[-2:] == ("hybnn_cli", "__main__.py")
    argv = sys.argv[1:] if ours else ["reproduce"]
    command = shlex.join(["hybnn", *argv])
    results_path = results_dir / "reproduction.json"
    check_rerunnable(results_path, command)  # before hours of work, not after
    with using_threads(cfg.threads), make_progress(disable=json_out) as progress:
        results = reproduce.run_study(cfg, work, data_dir, _StudyProgress(progress, json_out),
                                      command=command, cached_only=cached_only)
    reproduce.write_results(results, results_path)
    files = [str(results_path)] + [str(p) for p in write_report(results, results_dir).values()]
    if json_out:
        print_json({"results": str(results_path), "files": files})
    else:
        _print_reproduction(results, files, results_dir)


def _study_config(quick: bool, tasks: str, binarize: str, threads: int | None, ten_class: bool,
                  fashion: bool, **overrides):
    """The study's settings: the full or --quick configuration with the options given."""
    from hybnn_cli.models.binary_cnn import check_binarize
    from hybnn_cli.study.reproduce import StudyConfig

    bins = parse_list(binarize, "--binarize")
    for b in bins:
        check_binarize(b)
    make = StudyConfig.quick if quick else StudyConfig
    return make(**{k: v for k, v in overrides.items() if v is not None},
                tasks=parse_pair_tasks(tasks), binarizations=bins, ten_class=ten_class,
                fashion=fashion, threads=resolve_threads(threads))


def _print_reproduction(results: dict, files: list[str], results_dir: Path) -> None:
    def acc(r):
        return f"{100 * r['test_acc']:.2f} ± {100 * r['test_acc_std']:.2f}%" if r else "not done"

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
    """Redraw the reproduction's table and figures from its JSON.

    Nothing is retrained. With --docs it also regenerates every result quoted in README.md and
    docs/ from benchmarks/results/. No --seed: it only redraws what the JSON holds.

    Example: hybnn report --results benchmarks/results/reproduction.json --docs
    """
    from hybnn_cli.study.reproduction_report import load_results, write_report

    data = load_results(results)
    written = write_report(data, out or results.parent)
    if docs:
        from hybnn_cli.study import docgen

        for i, p in enumerate(docgen.update_docs(Path.cwd(), results.parent)):
            written[f"regenerated {i + 1}"] = p
    if json_out:
        print_json({name: str(p) for name, p in written.items()})
    else:
        for name, p in written.items():
            typer.echo(f"{name}: {p}")
