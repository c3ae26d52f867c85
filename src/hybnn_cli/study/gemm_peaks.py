"""The GEMM efficiency study (`benchmarks/gemm_efficiency.py`): each square XNOR GEMM against the
XNOR peak measured right before it, in many short pairs; recorded in
`benchmarks/results/gemm-efficiency.json` and rendered as the block `gemm-efficiency`.

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
against the float64 product of the ±1 matrices once per size (`measure`). `run` writes the result
with the provenance header of the run (taken when it starts), which each size's row also holds.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

from hybnn_cli.study.docgen import renderer, source, table
from hybnn_cli.study.provenance import end_run, read_result, start_run, write_result

FORMAT = "hybnn-gemm-efficiency"
GEMM_EFFICIENCY = "gemm-efficiency.json"
BLOCK_SECONDS = 0.02
SIZES = (256, 512, 1024, 2048, 4096)


def kernel():
    """The compiled kernel `xnor_gemm` calls (`hybnn_kernels.xnor._run`), timed alone."""
    from hybnn_kernels.xnor import _run

    return _run


def measure(size: int, pairs: int, threads: int, rng) -> dict:
    """One size: both contenders checked against the float64 product (exits on a difference),
    then timed in `pairs` pairs of a short XNOR peak measurement and a block of calls; the
    quartiles of the blocks' rates over the peak just before them."""
    from hybnn_kernels.bits import pack_bits
    from hybnn_kernels.checks import aligned_empty
    from hybnn_kernels.parallel import threads_for
    from hybnn_kernels.roofline import xnor_peak
    from hybnn_kernels.xnor import prepack, xnor_gemm

    alone = kernel()
    bits_a = rng.integers(0, 2, size=(size, size), dtype=np.int8)
    bits_w = rng.integers(0, 2, size=(size, size), dtype=np.int8)
    a, pw = pack_bits(bits_a), prepack(pack_bits(bits_w), size)
    out = aligned_empty((size, size), np.int32)
    ops = 2.0 * size ** 3
    n_chunks = threads_for(ops, threads)  # the path xnor_gemm takes at this size
    contenders = {
        "xnor_gemm": lambda: xnor_gemm(a, pw, size, out=out, threads=threads),
        "kernel_alone": lambda: alone(a, pw.panels, size, size, out, n_chunks),
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


def run(sizes: list[int], pairs: int, threads: int, seed: int, out, argv: list[str]) -> dict:
    """Measure every size (`measure`) and write the result to `out` with the provenance of this
    run (taken as it starts, `argv` the command recorded); returns the result."""
    from hybnn_kernels import tile

    run_rec = start_run(out, argv)
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        rows.append({**measure(size, pairs, threads, rng), "run": end_run(run_rec)})
        r = rows[-1]
        print(f"gemm {size}: xnor_gemm {r['xnor_gemm']['fraction_of_peak']['median']:.0%}, "
              f"kernel alone {r['kernel_alone']['fraction_of_peak']['median']:.0%} of the "
              "peak just before", file=sys.stderr)
    return write_result(out, FORMAT, 1,
                        {"config": {"sizes": sizes, "pairs": pairs, "threads": threads,
                                    "seed": seed, "block_seconds": BLOCK_SECONDS},
                         "kernel": {"variant": tile.VARIANT, "tile_rows": tile.MR,
                                    "panel_rows": tile.NR},
                         "results": rows}, argv=argv, run=end_run(run_rec))


@renderer("gemm-efficiency")
def gemm_efficiency(results_dir: Path) -> str:
    """Each GEMM's rate over the XNOR peak measured just before each of its timing blocks
    (`benchmarks/gemm_efficiency.py`): median and quartiles, the public call and the kernel it
    calls alone."""
    r = read_result(Path(results_dir) / GEMM_EFFICIENCY, FORMAT)

    def cell(x: dict) -> str:
        f = x["fraction_of_peak"]
        return f"{100 * f['median']:.0f}% ({100 * f['q1']:.0f}–{100 * f['q3']:.0f}%)"

    rows = [[f"`gemm {x['size']}`", cell(x["xnor_gemm"]), cell(x["kernel_alone"]),
             f"{x['peak_ops_per_second']['min'] / 1e9:,.0f}–"
             f"{x['peak_ops_per_second']['max'] / 1e9:,.0f} Gop/s"] for x in r["results"]]
    c = r["config"]
    return (f"Kernel variant `{r['kernel']['variant']}`, {c['threads']} threads, {c['pairs']} "
            f"pairs per contender and size (a peak measurement, then about "
            f"{1000 * c['block_seconds']:.0f} ms of calls); median (quartiles) of the blocks' "
            "rates over the peak just before them:\n\n"
            + table(["case", "`xnor_gemm` (prepacked weights, output given)",
                     "the kernel it calls, alone", "XNOR peaks measured"], rows)
            + "\n\n" + source(GEMM_EFFICIENCY, r))
