"""Continual learning on codes (Split-MNIST, `hybnn continual`)."""

from __future__ import annotations

from pathlib import Path

import typer

from hybnn_cli.cli.app import (
    JsonOut,
    Threads,
    ValFraction,
    app,
    handle_errors,
    print_json,
)
from hybnn_cli.cli.progress import make_progress
from hybnn_cli.errors import HybnnError
from hybnn_cli.options import parse_seeds
from hybnn_cli.threads import resolve as resolve_threads
from hybnn_cli.threads import using as using_threads


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
    balanced_batches: bool = typer.Option(False, "--balanced-batches", help="Replay as many "
                                          "codes per old class as new codes per new class in "
                                          "each batch (replay ratio = old / new classes)."),
    loss: str = typer.Option("plain", "--loss", help="ace (new codes compete only within their "
                             "task, replayed codes across all seen classes), la (logit "
                             "adjustment by each class's share of the batches) or plain."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", min=0, help="Balanced "
                                        "fine-tuning on the memory at the end of each task."),
    finetune_lr: float = typer.Option(1e-3, "--finetune-lr"),
    finetune_head: bool = typer.Option(False, "--finetune-head", help="Fine-tune only the "
                                       "output layer's per-class scale and offset (a bias "
                                       "correction of the scores)."),
    flip: float = typer.Option(0.0, "--flip", min=0.0, max=0.5, help="Probability of "
                               "flipping each bit of a replayed code (augmentation)."),
    distill: float = typer.Option(0.0, "--distill", min=0.0, help="Weight of distillation "
                                  "toward the previous task's model on the old classes' scores."),
    align: bool = typer.Option(False, "--align", help="Weight aligning (WA) after each task: "
                               "scale the new classes' scores to the old classes' mean "
                               "output weight norm (class scenario)."),
    readout: str = typer.Option("scores", "--readout", help="scores, or nme: nearest mean of "
                                "the memory's codes on the hidden layer (iCaRL; replay only)."),
    ema: float = typer.Option(0.0, "--ema", min=0.0, help="Decay per step of an exponential "
                              "moving average of the weights, taken at the end of each task "
                              "(0: none; e.g. 0.999)."),
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
    from hybnn_cli.continual import sequence as crun
    from hybnn_cli.study import continual_runs as study

    cfg = crun.ContinualConfig(
        scenario=scenario, strategy=strategy, memory=memory, memory_policy=memory_policy,
        components=components, epochs_per_task=epochs_per_task, batch_size=batch_size,
        replay_ratio=replay_ratio, balanced_batches=balanced_batches, loss=loss,
        finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, finetune_head=finetune_head,
        flip=flip, distill=distill, align=align, readout=readout, ema=ema, lr=lr, hidden=hidden,
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
                shown = h.get("test", h["val"])  # validation alone in a sealed run
                accs = " ".join(f"{a:.2%}" for a in shown["per_task"])
                progress.console.print(f"seed {s} after task {t + 1}: seen classes "
                                       f"{shown['seen']:.2%} (val {h['val']['seen']:.2%}); "
                                       f"per task {accs}", highlight=False)

        result = study.run_seeds(cfg, data, seed_list, out, resume, on_task, on_epoch)
    if json_out:
        print_json(result)
        return
    va = result["val"]
    te = result.get("test", va)  # validation alone in a sealed run

    def ms(m):
        return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}%"

    split = "test" if "test" in result else "validation (test sealed)"
    typer.echo(f"{study.run_name(cfg)} over seeds {seeds}, {split}: accuracy on all seen classes "
               f"{ms(te['final_seen_acc'])} (val {ms(va['final_seen_acc'])}); average accuracy "
               f"{ms(te['average_acc'])}; forgetting {ms(te['forgetting'])}; backward transfer "
               f"{ms(te['backward_transfer'])}; memory {result['memory_bytes']:,} bytes; "
               f"training {result['train_seconds']['mean']:.1f} s per seed  → {result['path']}")
