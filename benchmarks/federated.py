"""FedHyBNN against centralized training, on the codes and settings of the reproduction study.

For each seed s of the study (`benchmarks/results/reproduction.json`) and each task, it runs
`hybnn fed` through the CLI with `--json` (so every number comes from a command anyone can rerun)
on the codes of VAE s, with seed s and the learning rate the study chose for that task's BNN on
validation (no setting is chosen here). Variants:
- `iid`: 3 clients, 20 rounds × 5 local epochs, IID partition;
- `dirichlet`: the same with `--partition dirichlet --alpha 0.5` (label skew);
- `bits`: the same with `--uplink bits` (clients send sign bits, not float weights).
Centralized numbers are the study's own HyBNN runs (same codes, seeds, learning rate and 100
epochs), so the two are compared on equal terms.

Writes `benchmarks/results/federated.json` (provenance header: commit, command, machine, date)
after every run; each run holds the record of its own (`provenance.run_record`: commit, machine,
start and end). A rerun skips the runs already there that were made by the same code with the
same command, and makes the others again, so an interrupted benchmark resumes.

The benchmark and the docs blocks that render its file live in
`hybnn_cli.study.fed_benchmark`.

Usage: python benchmarks/federated.py [--study benchmarks/results/reproduction.json]
       [--work runs/reproduce] [--variants iid,dirichlet,bits] [--tasks 1,2,3,4,5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.fed_benchmark import VARIANTS, run_fed_benchmark


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--work", type=Path, default=Path("runs/reproduce"),
                   help="the study's work folder (holds its codes files)")
    p.add_argument("--tasks", default="1,2,3,4,5")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/federated.json"))
    p.add_argument("--models", type=Path, default=Path("runs/bench-fed"))
    args = p.parse_args(argv)
    try:
        run_fed_benchmark(args, ["python", "benchmarks/federated.py", *(argv or sys.argv[1:])])
    except HybnnError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
