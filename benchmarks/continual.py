"""Continual learning on codes: Split-MNIST, 4 strategies × 2 scenarios × 3 seeds, per encoder,
under a plan committed before it runs (`benchmarks/plans/continual.json`).

Every run is `hybnn continual ... --json` (so every number comes from a command anyone can rerun),
with `--resume` so an interrupted study continues where it stopped, two runs at a time with one
thread each (a 2-core machine).

1. Tuning, sealed: every candidate of the plan (settings against the pull toward the newest
   classes: logit adjustment, fine-tuning, weight aligning, nearest-mean read-out, weight
   averaging, distillation, replay ratio, learning rate, bit flips, width) runs on the plan's
   tuning encoder with `HYBNN_SEAL_TEST=1`, so it cannot read the test split; its record holds
   validation only (checked). The plan's rule and tie-break choose per group (`sealed.choose`).
2. The study: for each encoder (`--codes name=path`), none / replay / generative / joint in the
   class and task scenarios, the plan's seeds, with the chosen settings. Only these runs read the
   test split, once each, in folders of their own (no tuning checkpoint is reused).
Writes `benchmarks/results/continual.json` (provenance header, the plan's SHA-256; each run with
the commit, machine load and times it ran at) after every run, and the figure
`benchmarks/results/continual.png`. A rerun adds only what is missing, and refuses a result file
made under another version of the plan. The study is `hybnn_cli.study.continual_study`.

Usage: python benchmarks/continual.py --codes mnist=runs/enc/codes-mnist.h5
       --codes fashion=runs/enc/codes-fashion-on-mnist.h5
       [--plan benchmarks/plans/continual.json] [--work runs/continual-study] [--jobs 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import load_plan
from hybnn_cli.study.continual_study import FORMAT, run_continual_study

__all__ = ["FORMAT", "main"]  # FORMAT: the result file's, which its readers check


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", action="append", required=True,
                   help="name=path of a codes file of MNIST (repeat per encoder); the plan's "
                   "tuning_encoder names the one settings are tuned on")
    p.add_argument("--plan", type=Path, default=Path("benchmarks/plans/continual.json"))
    p.add_argument("--draft", action="store_true", help="allow an uncommitted plan (smoke "
                   "tests; the file records that it is a draft)")
    p.add_argument("--work", type=Path, default=Path("runs/continual-study"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/continual.json"))
    p.add_argument("--figure", type=Path, default=Path("benchmarks/results/continual.png"))
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--note", action="append", default=[],
                   help="name=text: a note on an encoder, kept with its results")
    args = p.parse_args(argv)
    run_continual_study(load_plan(args.plan, draft=args.draft),
                        dict(c.split("=", 1) for c in args.codes), args.work, args.out,
                        args.figure, ["python", "benchmarks/continual.py",
                                      *(argv if argv is not None else sys.argv[1:])],
                        jobs=args.jobs, notes=args.note)


if __name__ == "__main__":
    try:
        main()
    except HybnnError as e:
        sys.exit(str(e))
