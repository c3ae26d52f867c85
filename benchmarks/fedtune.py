"""Federated settings chosen on validation, then the target rows over several seeds, under a plan
committed before it runs (`benchmarks/plans/fedtune.json`).

1. The screen, sealed: for one task at one scale (the plan's: task 5, 1,000 IID clients, 10%
   sampled per round, float uplink, 100 rounds), `hybnn fed --json` once per candidate (extra
   `hybnn fed` options: client optimizer and learning rate, server optimizer) with
   `HYBNN_SEAL_TEST=1`, so the runs cannot read the test split; each keeps every round's
   validation accuracy, which the server computes on the split held out of the clients' data
   (`splits.py`). The plan's rule and tie-break choose (`sealed.choose`).
2. The target rows: each of the plan's rows (task/clients/partition/uplink) at the chosen setting,
   once per seed of the plan, and centralized `train-bnn` on the same codes per task and seed.
   These are the only runs that read test: the final global model's test accuracy, mean ± std
   over the seeds, beside its validation accuracy, its gap to centralized and the plan's target.
The client learning rate of a task, where the options do not set one, is the one the
reproduction study chose on validation (`benchmarks/results/reproduction.json`).

Writes `benchmarks/results/fedtune.json` (format "hybnn-fedtune", version 2, with the plan's
SHA-256; each run with the commit, machine load and times it ran at) after every run; a rerun
adds only what is missing and refuses a file made under another version of the plan.

The study and the docs blocks that render its file live in `hybnn_cli.study.fed_tune`.

Usage: python benchmarks/fedtune.py --codes runs/enc/codes-mnist.h5
       [--plan benchmarks/plans/fedtune.json] [--jobs 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.fed_tune import FORMAT, VERSION, run_tune_study

__all__ = ["FORMAT", "VERSION", "main"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--plan", type=Path, default=Path("benchmarks/plans/fedtune.json"))
    p.add_argument("--draft", action="store_true", help="allow an uncommitted plan (smoke "
                   "tests; the file records that it is a draft)")
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--jobs", type=int, default=2, help="runs at once")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fedtune.json"))
    p.add_argument("--models", type=Path, default=Path("runs/bench-fedtune"))
    args = p.parse_args(argv)
    argv_rec = ["python", "benchmarks/fedtune.py", *(argv if argv is not None else sys.argv[1:])]
    try:
        run_tune_study(args, argv_rec)
    except HybnnError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
