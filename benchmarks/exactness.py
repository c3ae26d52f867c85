"""Export the very BNNs the README's accuracy table reports and compare each deploy file's
predictions with the torch model's on every code of its codes file's test split.

It reads the reproduction study's results (`benchmarks/results/reproduction.json`): for every
task (the five pairs and the 10-class problem) and every seed, the checkpoint at the chosen
setting and the codes of that seed's encoder, both in the study's work folder. Writes
`benchmarks/results/exactness.json` with the provenance header of this run; each row holds the
record of the run that made it (`results.run_record`). The work is `hybnn_cli.study.exactness`.

Usage: python benchmarks/exactness.py [--study benchmarks/results/reproduction.json]
           [--work runs/reproduce] [--out benchmarks/results/exactness.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.exactness import check_study


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--work", type=Path, default=Path("runs/reproduce"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/exactness.json"))
    args = p.parse_args(argv)
    check_study(args.study, args.work, args.out,
                ["python", "benchmarks/exactness.py", *(argv or sys.argv[1:])])


if __name__ == "__main__":
    try:
        main()
    except HybnnError as e:
        sys.exit(str(e))
