"""Learners that cannot forget on Split-MNIST codes (`hybnn continual --strategy mixture |
prototype`), K chosen on validation, against replay, generative replay and joint, under a plan
committed before it runs (`benchmarks/plans/forgetproof.json`).

Every run is `hybnn continual ... --json` (every number comes from a command anyone can rerun),
with `--resume` so an interrupted study continues where it stopped, `--jobs` runs at a time with
one thread each.

1. Candidates, sealed: per encoder and strategy, every K of the plan on the tuning seed with
   `HYBNN_SEAL_TEST=1` (it cannot read the test split; its record holds validation only, checked);
   the plan's rule and tie-break choose K.
2. The study at the chosen K: both scenarios over the plan's seeds, and the plan's shuffled task
   order (order-invariance). Only these runs read the test split.
3. The anchors (none, replay, generative replay, joint) read from `--anchors` (the continual
   study's result file), checked to be of the same encoders.
Writes `benchmarks/results/forgetproof.json` (provenance header with the load at the start, the
plan's record; each run with the commit, machine load and times it ran at) after every run. A
rerun adds only what is missing, and refuses a result file made under another version of the plan.
The study is `hybnn_cli.study.forgetproof_study`.

Usage: python benchmarks/forgetproof.py --codes mnist=runs/enc/codes-mnist.h5
       --codes fashion=runs/enc/codes-fashion-on-mnist.h5 --jobs 1
       [--plan benchmarks/plans/forgetproof.json] [--work runs/forgetproof-study]
       [--anchors benchmarks/results/continual.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import load_plan
from hybnn_cli.study.forgetproof_study import FORMAT, run_forgetproof_study

__all__ = ["FORMAT", "main"]  # FORMAT: the result file's, which its readers check


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", action="append", required=True,
                   help="name=path of a codes file of MNIST, one per encoder the plan names")
    p.add_argument("--plan", type=Path, default=Path("benchmarks/plans/forgetproof.json"))
    p.add_argument("--draft", action="store_true", help="allow an uncommitted plan (smoke "
                   "tests; the file records that it is a draft)")
    p.add_argument("--work", type=Path, default=Path("runs/forgetproof-study"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/forgetproof.json"))
    p.add_argument("--anchors", type=Path, default=Path("benchmarks/results/continual.json"),
                   help="the continual study's result file (none, replay, generative, joint)")
    p.add_argument("--no-anchors", action="store_true", help="leave the anchors out (smoke "
                   "tests on codes the continual study never saw)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    args = p.parse_args(argv)
    bad = [c for c in args.codes if "=" not in c]
    if bad:
        raise HybnnError(f"--codes takes name=path, got {bad[0]!r}")
    run_forgetproof_study(load_plan(args.plan, draft=args.draft),
                          dict(c.split("=", 1) for c in args.codes), args.work, args.out,
                          ["python", "benchmarks/forgetproof.py",
                           *(argv if argv is not None else sys.argv[1:])],
                          jobs=args.jobs, anchors=None if args.no_anchors else args.anchors)


if __name__ == "__main__":
    try:
        main()
    except HybnnError as e:
        sys.exit(str(e))
