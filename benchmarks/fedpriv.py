"""FedHyBNN with differential privacy and with Byzantine clients, on real MNIST codes.

Two studies (`--study dp` or `byzantine`, one result file each) on one configuration (task,
clients, fraction sampled per round, rounds, local epochs), each setting run once per seed
(`--seeds`) through the CLI (`hybnn fed ... --json`) on the in-process engine (the same ServerApp
and ClientApp as the other engines, and the fastest):
- DP: the global test accuracy against the noise multiplier σ (`--dp-noise`) at one clipping norm
  (`--dp-clip`), next to the same run without DP ("plain");
- Byzantine: a share of the clients (`--byzantine`) sends sign-flipped, amplified updates; plain
  FedAvg against Flower's Krum, FedMedian and FedTrimmedAvg (`--aggregate`).
The learning rate is the one the reproduction study chose on validation for the task
(`benchmarks/results/reproduction.json`); no setting is chosen here on test accuracy. The
clipping norm is fixed in advance (`--dp-clip`, default 5 in DP coordinates, docs/federated.md).

Writes `benchmarks/results/fed<study>.json` (format `fed_records.PRIV_FORMAT`) after every run:
per setting, its runs (one per seed, each with the record of its own run, `provenance.run_record`:
commit, machine, start and end) and the mean ± std over the seeds (`fed_records.over_seeds`); a
rerun with the same settings skips the runs already there made by the same code with the same
command; and `fed<study>.png` (accuracy per round, mean over seeds ± std) beside it.

The study and the docs blocks that render its files live in `hybnn_cli.study.fed_priv`.

Usage: python benchmarks/fedpriv.py --study dp|byzantine --codes runs/fedpriv/codes.h5
       [--clients 100] [--fraction 0.1] [--rounds 15] [--local-epochs 2] [--noises 0,0.5,1,2]
       [--dp-clip 5] [--byzantine 0.1] [--rules fedavg,krum,median,trimmed-mean] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.fed_priv import run_priv_study


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", choices=("dp", "byzantine"), required=True)
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--reproduction", type=Path,
                   default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--task", default="3")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--noises", default="0,0.5,1,2")
    p.add_argument("--dp-clip", type=float, default=5.0)
    p.add_argument("--byzantine", type=float, default=0.1)
    p.add_argument("--rules", default="fedavg,krum,median,trimmed-mean")
    p.add_argument("--seeds", default="0,1,2", help="each setting runs once per seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="default: "
                   "benchmarks/results/fed<study>.json, and the figure beside it (.png)")
    p.add_argument("--models", type=Path, default=Path("runs/bench-fedpriv"))
    args = p.parse_args(argv)
    args.out = args.out or Path(f"benchmarks/results/fed{args.study}.json")
    args.figure = args.out.with_suffix(".png")
    try:
        run_priv_study(args, ["python", "benchmarks/fedpriv.py", *(argv or sys.argv[1:])])
    except HybnnError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
