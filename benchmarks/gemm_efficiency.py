"""Each square XNOR GEMM against the XNOR peak measured right before it, in many short pairs: the
public call and the compiled kernel it calls, each block's rate over the peak just before it
(the study is `hybnn_cli.study.gemm_peaks`; this script parses the options and runs it).

Writes JSON with the provenance header of this run (taken when it starts), which each size's row
also holds.

Usage: python benchmarks/gemm_efficiency.py [--sizes 256 512 1024 2048 4096] [--pairs 30]
           [--threads 2] [--seed 0] [--out benchmarks/results/gemm-efficiency.json]
"""

from __future__ import annotations

import argparse
import sys

from hybnn_cli.study import gemm_peaks

EXAMPLE = "Example: python benchmarks/gemm_efficiency.py --sizes 256 512 --pairs 30"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EXAMPLE)
    p.add_argument("--sizes", type=int, nargs="+", default=list(gemm_peaks.SIZES))
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/gemm-efficiency.json")
    args = p.parse_args(argv)
    if any(s < 64 or s % 64 for s in args.sizes) or args.pairs < 1:
        p.error("sizes must be multiples of 64, pairs at least 1")
    argv_rec = ["python", "benchmarks/gemm_efficiency.py", *(argv or sys.argv[1:])]
    gemm_peaks.run(args.sizes, args.pairs, args.threads, args.seed, args.out, argv_rec)


if __name__ == "__main__":
    main()
