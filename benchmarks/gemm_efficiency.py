"""Each square XNOR GEMM against the XNOR peak measured right before it, in many short pairs.

`hybnn bench` sets a case against the highest of the peaks measured at the start of its three
rounds, which errs toward understating: on a machine whose speed swings by tens of percent within
seconds, the highest of three short peak measurements often catches a faster moment than the
case ran in. Here each timing block (about 20 ms of calls) follows a short peak measurement
(`roofline.xnor_peak`, 3 launches of 5 ms), and each size reports the median and quartiles of the
blocks' rates over the peak just before them: the drift between two moments a few milliseconds
apart mostly cancels. Two contenders per size, in the same pairs: the public call
(`xnor_gemm` with prepacked weights and an output array, as `hybnn bench` times it) and the
compiled kernel it calls at that size (serial below `parallel.SERIAL_OPS`, parallel above)
called alone, whose difference is `xnor_gemm`'s own per-call work. Every output is checked
against the float64 product of the ±1 matrices once per size. Writes JSON with the provenance
header of this run (`results.run_record`, taken when it starts), which each size's row also holds.

Usage: python benchmarks/gemm_efficiency.py [--sizes 256 512 1024 2048 4096] [--pairs 30]
           [--threads 2] [--seed 0] [--out benchmarks/results/gemm-efficiency.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from hybnn_kernels import tile
from hybnn_kernels.bits import pack_bits
from hybnn_kernels.parallel import threads_for
from hybnn_kernels.roofline import xnor_peak
from hybnn_kernels.xnor import _run, prepack, xnor_gemm

from hybnn_cli.study.provenance import end_run, start_run, write_result

FORMAT = "hybnn-gemm-efficiency"
BLOCK_SECONDS = 0.02


def measure(size: int, pairs: int, threads: int, rng) -> dict:
    bits_a = rng.integers(0, 2, size=(size, size), dtype=np.int8)
    bits_w = rng.integers(0, 2, size=(size, size), dtype=np.int8)
    a, pw = pack_bits(bits_a), prepack(pack_bits(bits_w), size)
    out = np.empty((size, size), np.int32)
    ops = 2.0 * size ** 3
    n_chunks = threads_for(ops, threads)  # the path xnor_gemm takes at this size
    contenders = {
        "xnor_gemm": lambda: xnor_gemm(a, pw, size, out=out, threads=threads),
        "kernel_alone": lambda: _run(a, pw.panels, size, size, out, n_chunks),
    }
    want = (2.0 * bits_a - 1) @ (2.0 * bits_w - 1).T
    for name, fn in contenders.items():
        out[:] = 0
        fn()
        if not np.array_equal(out, want):
            raise SystemExit(f"gemm {size}: {name} differs from the float64 product")
    calls = max(3, int(BLOCK_SECONDS * 1e12 / ops))  # ~20 ms at 1 Top/s
    fractions = {name: [] for name in contenders}
    peaks = []
    for _ in range(pairs):
        for name, fn in contenders.items():
            peak = xnor_peak(threads, seconds=0.005, repeats=3)["ops_per_second"]
            peaks.append(peak)
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            fractions[name].append(ops / statistics.median(times) / peak)
    result = {"size": size, "ops": ops, "calls_per_block": calls, "n_chunks": n_chunks,
              "peak_ops_per_second": {"min": min(peaks), "median": statistics.median(peaks),
                                      "max": max(peaks)}}
    for name, fs in fractions.items():
        q1, med, q3 = np.percentile(fs, [25, 50, 75])
        result[name] = {"fraction_of_peak": {"median": float(med), "q1": float(q1),
                                             "q3": float(q3)}, "blocks": len(fs)}
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/gemm-efficiency.json")
    args = p.parse_args(argv)
    if any(s < 64 or s % 64 for s in args.sizes) or args.pairs < 1:
        p.error("sizes must be multiples of 64, pairs at least 1")
    argv_rec = ["python", "benchmarks/gemm_efficiency.py", *(argv or sys.argv[1:])]
    run = start_run(args.out, argv_rec)
    rng = np.random.default_rng(args.seed)
    rows = []
    for size in args.sizes:
        rows.append({**measure(size, args.pairs, args.threads, rng), "run": end_run(run)})
        r = rows[-1]
        print(f"gemm {size}: xnor_gemm {r['xnor_gemm']['fraction_of_peak']['median']:.0%}, "
              f"kernel alone {r['kernel_alone']['fraction_of_peak']['median']:.0%} of the "
              "peak just before", file=sys.stderr)
    write_result(args.out, FORMAT, 1,
                 {"config": {"sizes": args.sizes, "pairs": args.pairs, "threads": args.threads,
                             "seed": args.seed, "block_seconds": BLOCK_SECONDS},
                  "kernel": {"variant": tile.VARIANT, "tile_rows": tile.MR, "panel_rows": tile.NR},
                  "results": rows}, argv=argv_rec, run=end_run(run))


if __name__ == "__main__":
    main()
