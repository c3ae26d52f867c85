"""The reproduction study's first-seed models and codes under stable names, for the benchmarks that
start from them (the codes of `benchmarks/fedpriv.py`; a bundle of them for anyone who wants one).

From the study's results (`benchmarks/results/reproduction.json`) and its work folder, where
each artifact's name holds the digest of its stage's key (which changes with the code version),
it copies into `--out`:
- `vae.pt`: the MNIST VAE of the study's first seed, and `codes-mnist.h5`, its codes;
- `bnn-<task>.pt`: for each task of the accuracy table (task1..task5, and `all` for the 10-class
  BNN when the study has it), the BNN of that seed at the setting chosen on validation;
- `artifacts.json`: where each file came from (the study, its commit, the seed).
Then `hybnn export <out>/bnn-*.pt --vae <out>/vae.pt --int8 --out <out>/bundle` makes the bundle.
The work is `hybnn_cli.study.reproduction_work.copy_first_seed`.

Usage: python benchmarks/study_artifacts.py [--study benchmarks/results/reproduction.json]
           [--work runs/study] [--out runs/study-seed0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.reproduction_work import copy_first_seed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--work", type=Path, default=Path("runs/reproduce"),
                   help="the study's work folder")
    p.add_argument("--out", type=Path, default=Path("runs/study-seed0"))
    args = p.parse_args(argv)
    copy_first_seed(args.study, args.work, args.out)


if __name__ == "__main__":
    try:
        main()
    except HybnnError as e:
        sys.exit(str(e))
