"""The encoder in float32 against int8 quantizations of it, on ONNX Runtime, on this CPU.

The study is `hybnn_cli.study.int8_encoders`: the bundle's float encoder quantized in the formats
ONNX Runtime offers, calibrated as `hybnn export --int8` is, each timed against the float encoder
at batch 4096 and at batch 1, with the fraction of code bits that differ from the float
encoder's on the MNIST test images. Nothing is chosen here; the bundle keeps what `--int8`
writes. This script parses the options and runs it.

Writes `benchmarks/results/int8.json` (format "hybnn-int8") with the provenance of this run
(taken when it starts), which every variant's row also holds.

Usage: python benchmarks/int8.py --bundle runs/e2e/bundle [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.study import int8_encoders

EXAMPLE = "Example: python benchmarks/int8.py --bundle runs/e2e/bundle --threads 2"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EXAMPLE)
    p.add_argument("--bundle", type=Path, default=Path("runs/e2e/bundle"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="few repeats (a smoke run)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/int8.json"))
    a = p.parse_args(argv)
    argv_rec = ["python", "benchmarks/int8.py", *(argv or sys.argv[1:])]
    int8_encoders.run(a.bundle, a.out, argv_rec, threads=a.threads, calibration=a.calibration,
                      seed=a.seed, rounds=a.rounds, quick=a.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
