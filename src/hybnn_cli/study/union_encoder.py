"""An encoder pretrained on a union of data sets against one pretrained on MNIST alone, same
settings: the validation and test accuracy of task BNNs 1–5 trained on each encoder's MNIST codes,
the whole pipeline (VAE and BNNs) once per seed, mean ± std over the seeds with the per-seed values
kept; its result file and its generated block.

`run_union` writes `benchmarks/results/union-encoder.json` (version 2) after each encoder and
seed; a rerun with the same settings keeps the seeds already there made by the same code, so an
interrupted run resumes. The header is the provenance of the run (`provenance.run_record`, taken
when it starts); each encoder's seed holds the record of the run that made it.
`benchmarks/server_scale.py union` runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hybnn_cli.study.docgen import acc_cell, partial_seeds, renderer, seeds_text, source, table
from hybnn_cli.study.provenance import (
    end_run,
    read_result,
    run_record,
    same_code,
    start_run,
    write_result,
)

FORMAT = "hybnn-union-encoder"
VERSION = 2  # 2: several seeds (1: one, "seed" and each encoder's numbers at its top level)
TASKS = ("1", "2", "3", "4", "5")


@dataclass
class UnionSettings:
    """What the study compares and how: the pretraining sets, the codes' data set, the seeds."""

    work: Path
    vae_epochs: int = 3
    bnn_epochs: int = 30
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    datasets: list[str] = field(default_factory=lambda: ["mnist", "mnist+fashion-mnist"])
    codes_dataset: str = "mnist"
    threads: int = 2
    limit: int | None = None  # the first N images of each split
    data_dir: Path | None = None

    def record(self) -> dict:
        """The settings the result file keeps (a seed made under other ones is not reused)."""
        return {"vae_epochs": self.vae_epochs, "bnn_epochs": self.bnn_epochs,
                "seeds": self.seeds, "codes_dataset": self.codes_dataset,
                "threads": self.threads, "limit": self.limit}


def union(s: UnionSettings, out: Path, run: dict, save: Callable[[dict], None]) -> dict:
    """Each encoder in turn, each seed in turn (`save(body)` after each); a seed of an encoder
    already in `out`, made by this code (the code of `run`) with these settings, is kept."""
    from hybnn_cli.threads import using

    body = {**s.record(), "encoders": []}
    old = read_result(out, FORMAT) if Path(out).is_file() else {}
    same_settings = (old.get("format_version") == VERSION
                     and all(old.get(k) == v for k, v in body.items()
                             if k not in ("encoders", "seeds")))
    kept = {e["pretrain_dataset"]: {seed: r for seed, r in e["per_seed"].items()
                                    if same_code(r.get("run"), run)}
            for e in old.get("encoders", []) if same_settings}
    with using(s.threads):
        for dataset in s.datasets:
            per_seed: dict[str, dict] = {}
            body["encoders"].append({})
            for seed in s.seeds:
                per_seed[str(seed)] = (kept.get(dataset, {}).get(str(seed))
                                       or union_one(s, dataset, seed))
                body["encoders"][-1] = encoder_row(dataset, per_seed)
                save(body)
    return body


def encoder_row(dataset: str, per_seed: dict[str, dict]) -> dict:
    """An encoder's row: each task's validation and test accuracy, mean ± std over the seeds
    (`continual_runs.mean_std`), and the seeds' runs."""
    from hybnn_cli.study.continual_runs import mean_std  # imports torch: only here

    runs = [per_seed[s] for s in sorted(per_seed, key=int)]
    tasks = {t: {split: mean_std([r["tasks"][t][split] for r in runs])
                 for split in ("val_acc", "test_acc")} for t in runs[0]["tasks"]}
    return {"pretrain_dataset": dataset, "n_pretrain_images": runs[0]["n_pretrain_images"],
            "seeds": sorted(int(s) for s in per_seed), "tasks": tasks,
            "vae_seconds": mean_std([r["vae_seconds"] for r in runs]), "per_seed": per_seed}


def union_one(s: UnionSettings, dataset: str, seed: int) -> dict:
    """Pretrain on `dataset`, encode the codes data set, train BNNs for tasks 1–5, all with
    `seed`."""
    from hybnn_cli.data.pretrain_sets import load_pretrain_images
    from hybnn_cli.data.tasks import parse_task
    from hybnn_cli.train import stages
    from hybnn_cli.train.configs import BNNConfig, VAEConfig

    run = run_record()
    folder = Path(s.work) / dataset / f"seed{seed}"
    t0 = time.perf_counter()
    vae = stages.pretrain_vae(VAEConfig(dataset=dataset, epochs=s.vae_epochs, seed=seed,
                                        threads=s.threads, train_limit=s.limit),
                              folder / "vae.pt", s.data_dir)
    vae_s = time.perf_counter() - t0
    stages.extract_codes(folder / "vae.pt", folder / "codes.h5", s.codes_dataset, s.data_dir,
                         limit=s.limit)
    tasks = {}
    for t in TASKS:
        task = parse_task(t, None)
        m = stages.train_task_bnn(folder / "codes.h5", task,
                                  BNNConfig(task=task.name, epochs=s.bnn_epochs, seed=seed,
                                            threads=s.threads), folder / f"bnn-{t}.pt")
        tasks[task.name] = {"val_acc": m["val_acc"], "test_acc": m["test_acc"]}
        print(dataset, f"seed {seed}", task.name, tasks[task.name], flush=True)
    n_images = len(load_pretrain_images(dataset, "train", s.data_dir))
    return {"seed": seed, "n_pretrain_images": min(n_images, s.limit or n_images),
            "vae_seconds": vae_s, "vae_train_loss": vae["train_loss"], "tasks": tasks,
            "run": end_run(run)}


def run_union(out: Path, argv: list[str], settings: UnionSettings) -> dict:
    """`union`, its file `out` (made by the command `argv`) written after each encoder's seed."""
    run = start_run(out, argv)

    def save(body: dict) -> None:
        write_result(out, FORMAT, VERSION, body, argv=argv, run=end_run(run))

    body = union(settings, out, run, save)
    save(body)
    return body


# ── the generated block ───────────────────────────────────────────────────────────────────────
UNION = "union-encoder.json"


@renderer("union-encoder")
def union_encoder(results_dir: Path) -> str:
    """Task BNNs on two encoders' codes: one seed's accuracies (version 1) or each the mean ±
    std over the seeds, each seed pretraining its own encoder (version 2)."""
    r = read_result(Path(results_dir) / UNION, FORMAT)
    encs = r["encoders"]
    tasks = list(encs[0]["tasks"])
    rows = [[t, *(f"{acc_cell(e['tasks'][t]['val_acc'])} / {acc_cell(e['tasks'][t]['test_acc'])}"
                  for e in encs)] for t in tasks]
    head = [f"encoder pretrained on {e['pretrain_dataset']} ({e['n_pretrain_images']:,} "
            f"images){partial_seeds(e, r)}: val / test %" for e in encs]
    seeds = (f"seed {r['seed']}, BNNs {r['bnn_epochs']} epochs; one seed, so differences of a "
             f"few tenths are within noise" if "seeds" not in r else
             f"BNNs {r['bnn_epochs']} epochs; {seeds_text(r)}, each seed pretraining its own "
             f"encoder and training its own BNNs")
    return (f"Task BNNs on MNIST codes from two encoders, each pretrained for "
            f"{r['vae_epochs']} epoch(s) over its own set (so the union's encoder took twice the "
            f"steps), {seeds}.\n\n"
            + table(["task", *head], rows) + "\n\n" + source(UNION, r))
