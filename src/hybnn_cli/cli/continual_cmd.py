"""Continual learning on codes (Split-MNIST, `hybnn continual`); its settings and their defaults
are `continual.settings.ContinualConfig`'s."""

from __future__ import annotations

from pathlib import Path

import typer

from hybnn_cli.cli.app import JsonOut, Threads, app, handle_errors, print_json
from hybnn_cli.cli.config_options import config_options
from hybnn_cli.cli.progress import make_progress
from hybnn_cli.continual.settings import CLASS_MODELS, HELP, ContinualConfig
from hybnn_cli.errors import HybnnError
from hybnn_cli.options import parse_seeds
from hybnn_cli.threads import resolve as resolve_threads
from hybnn_cli.threads import using as using_threads

# the command's own options (the run's settings come from ContinualConfig: `config_options`)
Codes = typer.Option(Path("runs/codes.h5"), "--codes", help="Codes file (with labels).")
Seeds = typer.Option("0", "--seeds", help="Seeds, e.g. 0,1,2 (one run each; saved with the "
                     "results).")
Out = typer.Option(Path("runs/continual"), "--out", help="Folder for the checkpoints (one per "
                   "seed, after each task) and <scenario>-<strategy>.json.")
Resume = typer.Option(False, "--resume", help="Continue each seed from its checkpoint in --out "
                      "(same settings required).")


@app.command("continual")
@handle_errors
@config_options(ContinualConfig, HELP, first=("codes",))
def continual_cmd(settings: dict, codes: Path = Codes, seeds: str = Seeds, threads: int = Threads,
                  out: Path = Out, resume: bool = Resume, json_out: bool = JsonOut):
    """Learn tasks one after another: Split-MNIST or any classes.

    It reports the accuracy on every task seen, average accuracy, forgetting, backward
    transfer, memory and time. Options left out take the values the continual study chose on
    validation for the scenario and strategy (see --loss, --flip, --balanced-batches and
    --hidden).

    Example: hybnn continual --codes runs/codes.h5 --scenario class --strategy replay
    --seeds 0,1,2

    Any codes file, tasks by class name: hybnn continual --codes runs/codes.h5
    --tasks "cat,dog;ant,bee"

    Learners that cannot forget (one model per class, fitted on its own codes):
    hybnn continual --codes runs/codes.h5 --strategy prototype --components 10
    """
    from hybnn_cli.continual import sequence
    from hybnn_cli.study import continual_runs as study

    cfg = ContinualConfig(**settings, threads=resolve_threads(threads))
    seed_list = parse_seeds(seeds)
    if out.exists() and not out.is_dir():
        raise HybnnError(f"{out} is a file; --out takes a folder")
    data = sequence.load_data(codes, cfg.val_fraction, cfg.tasks)
    cfg.check(data.n_classes)
    with using_threads(cfg.threads), make_progress(disable=json_out) as progress:
        on_task, on_epoch = task_printer(progress, cfg, seed_list, len(data.tasks), json_out)
        result = study.run_seeds(cfg, data, seed_list, out, resume, on_task, on_epoch)
    if json_out:
        print_json(result)
    else:
        print_summary(result, study.run_name(cfg), seeds)


def task_printer(progress, cfg: ContinualConfig, seed_list: list[int], n_tasks: int,
                 json_out: bool):
    """The on_task and on_epoch callbacks: the bar, and without --json one line per task."""
    from hybnn_cli.study.continual_runs import run_name

    epochs = 1 if cfg.strategy in CLASS_MODELS else cfg.epochs_per_task  # a fit is one step
    per_seed = n_tasks * epochs
    bar = progress.add_task(f"continual {run_name(cfg)}", total=len(seed_list) * per_seed,
                            status="")

    def on_epoch(s, t, e, m):
        done = seed_list.index(s) * per_seed + t * epochs + e + 1
        progress.update(bar, completed=done, status=f"seed {s} task {t + 1}")

    def on_task(s, t, h):
        if not json_out:
            shown = h.get("test", h["val"])  # validation alone in a sealed run
            accs = " ".join(f"{a:.2%}" for a in shown["per_task"])
            progress.console.print(f"seed {s} after task {t + 1}: seen classes "
                                   f"{shown['seen']:.2%} (val {h['val']['seen']:.2%}); "
                                   f"per task {accs}", highlight=False)

    return on_task, on_epoch


def print_summary(result: dict, name: str, seeds: str) -> None:
    va = result["val"]
    te = result.get("test", va)  # validation alone in a sealed run

    def ms(m):
        return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}%"

    split = "test" if "test" in result else "validation (test sealed)"
    typer.echo(f"{name} over seeds {seeds}, {split}: accuracy on all seen classes "
               f"{ms(te['final_seen_acc'])} (val {ms(va['final_seen_acc'])}); average accuracy "
               f"{ms(te['average_acc'])}; forgetting {ms(te['forgetting'])}; backward transfer "
               f"{ms(te['backward_transfer'])}; memory {result['memory_bytes']:,} bytes; "
               f"training {result['train_seconds']['mean']:.1f} s per seed  → {result['path']}")
