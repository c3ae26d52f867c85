"""Pretraining at server scale, measured on this machine.

`scaling`: VAE pretraining on full MNIST with one process (2 and 1 torch threads) and with two
processes under torchrun (gloo, 1 thread each): seconds per epoch and the final loss, read from
each run's own JSON. Then the sizes that decide scaling to N machines: the encoder+decoder
gradient all-reduced at every step (bytes), its all-reduce time between 2 gloo processes on
loopback (median), and a plain model of the epoch time on N machines built from the measured
per-step compute and those bytes at a stated network bandwidth (computed where it is shown,
`ddp_scaling.scaling_model`). Writes `benchmarks/results/ddp-scaling.json`.

`union`: an encoder pretrained on mnist+fashion-mnist (120,000 images) against one pretrained on
MNIST alone, same settings: the validation and test accuracy of task BNNs 1–5 trained on each
encoder's MNIST codes, the whole pipeline (VAE and BNNs) once per seed (`--seeds`), mean ± std
over the seeds with the per-seed values kept. Writes `benchmarks/results/union-encoder.json`
(version 2) after each encoder and seed; a rerun with the same settings keeps the seeds already
there made by the same code, so an interrupted run resumes.

Each file's header is the provenance of its run (`results.run_record`, taken when it starts); each
row (a pretraining run, an encoder's seed) holds the record of the run that made it. The studies
are `hybnn_cli.study.ddp_scaling` and `hybnn_cli.study.union_encoder`.

Usage: python benchmarks/server_scale.py scaling [--epochs 2] [--work runs/server-scale]
       python benchmarks/server_scale.py union [--vae-epochs 3] [--bnn-epochs 30] [--threads 2]
                                               [--seeds 0,1,2]
Smaller data (tests): --dataset (scaling) or --datasets/--codes-dataset (union), --data-dir,
--limit (the first N images of each split).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.ddp_scaling import run_scaling
from hybnn_cli.study.provenance import RESULTS_DIR
from hybnn_cli.study.union_encoder import UnionSettings, run_union


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("scaling", "union"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--vae-epochs", type=int, default=3)
    p.add_argument("--bnn-epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2, help="union: torch threads")
    p.add_argument("--seeds", default="0,1,2", help="union: each encoder and its BNNs per seed")
    p.add_argument("--work", type=Path, default=Path("runs/server-scale"))
    p.add_argument("--out", type=Path)
    p.add_argument("--dataset", default="mnist", help="scaling: the pretraining images")
    p.add_argument("--datasets", default="mnist,mnist+fashion-mnist",
                   help="union: the pretraining sets compared")
    p.add_argument("--codes-dataset", default="mnist", help="union: the tasks' data set")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--limit", type=int, default=None, help="the first N images of each split")
    p.add_argument("--reps", type=int, default=30, help="scaling: all-reduces timed")
    p.add_argument("--repeats", type=int, default=5,
                   help="scaling: runs of each configuration, in turn")
    args = p.parse_args(argv)
    argv_rec = ["python", "benchmarks/server_scale.py",
                *(argv if argv is not None else sys.argv[1:])]
    if args.what == "scaling":
        out = args.out or RESULTS_DIR / "ddp-scaling.json"
        run_scaling(out, argv_rec, args.work, epochs=args.epochs, dataset=args.dataset,
                    data_dir=args.data_dir, limit=args.limit, reps=args.reps,
                    repeats=args.repeats)
    else:
        out = args.out or RESULTS_DIR / "union-encoder.json"
        run_union(out, argv_rec, UnionSettings(
            work=args.work, vae_epochs=args.vae_epochs, bnn_epochs=args.bnn_epochs,
            seeds=[int(x) for x in args.seeds.split(",")], datasets=args.datasets.split(","),
            codes_dataset=args.codes_dataset, threads=args.threads, limit=args.limit,
            data_dir=args.data_dir))
    print(f"wrote {out}")


if __name__ == "__main__":
    try:
        main()
    except HybnnError as e:
        sys.exit(str(e))
