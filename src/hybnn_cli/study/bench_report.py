"""The generated text of `hybnn bench`'s result (`benchmarks/results/bench.json`): every case's
rate and ratios (`bench-table`) and the kernel targets on the run's own figures (`bench-targets`).
`hybnn bench` runs and records the benchmark (`bench.runner`, a layer below); this module renders
it, registered with the docs' block engine (`docgen`).
"""

from __future__ import annotations

from pathlib import Path

from hybnn_cli.study.docgen import renderer, source, table
from hybnn_cli.study.provenance import read_result

BENCH = "bench.json"


@renderer("bench-table")
def bench_table(results_dir: Path) -> str:
    """Every case of `hybnn bench`: the XNOR kernel's rate and its ratios. A run with int8
    contenders (bench format 3) leads with the ratio against the fastest dense contender of any
    precision, the float32 and int8 ratios beside it; an earlier run renders as it always did."""
    r = read_result(Path(results_dir) / BENCH, "hybnn-bench")
    setup = r["setup"]
    int8 = any("speedup_vs_best_dense" in c for c in r["cases"])
    rows = []
    for c in r["cases"]:
        x = c["xnor"]
        head = "us_per_sample" in x
        fastest = c.get("fastest", {})
        rows.append([f"`{c['name']}`",
                     f"{x['us_per_sample']:.3f} µs/sample" if head
                     else f"{x['ops_per_second'] / 1e9:,.0f} Gop/s",
                     *([_ratio_cell(c, "best_dense", fastest.get("dense")),
                        _ratio_cell(c, "best_float", fastest.get("float32"))] if int8 else []),
                     f"{c['speedup_vs_numpy']:.1f}×", f"{c['speedup_vs_torch']:.1f}×",
                     *([_ratio_cell(c, "best_int8", fastest.get("int8"))] if int8 else []),
                     f"{c['speedup_vs_best_hidden_matmul']:.2f}×"
                     if "speedup_vs_best_hidden_matmul" in c else "",
                     *_peak_cells(c),
                     "passed" if c["check"]["passed"] else "FAILED"])
    load = r["load_average"]
    blas = " ".join(str(b.get(k)) for b in setup["numpy_blas"][:1]
                    for k in ("internal_api", "architecture"))
    what = ("each ratio is a contender's median time over the XNOR kernel's; the first is "
            "against the fastest dense contender of any precision (float32: numpy, torch, at "
            "batch 1 the compiled float head; int8: `torch._int_mm`, ONNX Runtime's "
            "`MatMulInteger`), named in brackets" if int8 else
            "each ratio is a float32 contender's median time over the XNOR kernel's")
    return (f"Kernel variant `{setup['kernel']['variant']}` on `{setup['llvm_cpu_name']}`, "
            f"{setup['threads']} threads; {what}, timed in the same process (numpy's BLAS: "
            f"{blas or '?'}); "
            f"load average {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end; "
            f"every case's outputs checked against the {'other' if int8 else 'float'} contenders "
            f"before timing ({'all passed' if r['checks_passed'] else 'SOME FAILED'}).\n\n"
            + _roofline_text(r)
            + table(["case", "XNOR",
                     *(["× fastest dense", "× best float32"] if int8 else []),
                     "× numpy float32", "× torch float32", *(["× best int8"] if int8 else []),
                     "× float 200→128 matmul alone", "XNOR of its peak",
                     "best float32 of FMA peak", "check"], rows)
            + "".join(f"\n\n`{c['name']}`: the XNOR column is the one-code head "
                      f"(`{c['xnor']['api']}`); through `{c['xnor_run']['api']}` the same head "
                      f"took {c['xnor_run']['us_per_sample']:.3f} µs/sample"
                      + (f"; the float32 head compiled (`{c['numba_f32']['api']}`) took "
                         f"{c['numba_f32']['us_per_sample']:.3f} µs/sample" if "numba_f32" in c
                         else "") + "."
                      for c in r["cases"] if "xnor_run" in c)
            + "\n\n" + source(BENCH, r))


def _ratio_cell(case: dict, key: str, name: str | None) -> str:
    """speedup_vs_<key> with the contender behind it, or "not measured" (a run without it)."""
    x = case.get(f"speedup_vs_{key}")
    if x is None:
        return "not measured"
    return f"{x:.1f}×" + (f" ({name.replace('_', ' ')})" if name else "")


@renderer("bench-targets")
def bench_targets(results_dir: Path) -> str:
    """The kernel targets (issue 12), case by case, on the run's own figures: the 4096³ GEMM at
    90% of the XNOR peak measured next to it, 256³ and 512³ at 8× the best float32 contender
    (with the ratio of the peaks, the most any kernel could gain here, and the fraction of its
    peak the XNOR kernel would need for 8× over the float contender as fast as it ran), the head
    at batch 1 in at most 1 µs per sample."""
    r = read_result(Path(results_dir) / BENCH, "hybnn-bench")
    cases = {c["name"]: c for c in r["cases"]}
    rows = []
    big = cases.get("gemm 4096")
    if big and big.get("fraction_of_peak"):
        f = big["fraction_of_peak"]["xnor"]
        rows.append(["`gemm 4096`: the XNOR kernel at ≥ 90% of its peak", f"{100 * f:.0f}%",
                     "**met**" if f >= 0.9 else "not met"])
    for size in (256, 512):
        c = cases.get(f"gemm {size}")
        if c:
            x = c["speedup_vs_best_float"]
            text = f"{x:.1f}×"
            if "roofline" in c:
                roof = c["roofline"]
                best = max(c[k]["ops_per_second"] for k in ("numpy_f32", "torch_f32"))
                need = 8 * best / roof["xnor"]["ops_per_second"]
                text += (f" (peaks' ratio here {roof['ratio_bound']:.1f}×; 8× would need the "
                         f"XNOR kernel at {100 * need:.0f}% of its peak, it ran at "
                         f"{100 * c['fraction_of_peak']['xnor']:.0f}%)")
            rows.append([f"`gemm {size}`: ≥ 8× the best float32", text,
                         "**met**" if x >= 8 else "not met"])
    one = cases.get("head 200-128-2 b=1")
    if one:
        us = one["xnor"]["us_per_sample"]
        rows.append(["`head 200-128-2 b=1`: ≤ 1 µs per sample", f"{us:.3f} µs",
                     "**met**" if us <= 1 else "not met"])
    return table(["target", "this run", ""], rows) + "\n\n" + source(BENCH, r)


def _peak_cells(case: dict) -> list[str]:
    """The XNOR kernel's rate over the XNOR peak and the best float32 contender's over the FMA
    peak ("–" for a run made before the benchmark measured its roofline)."""
    f = case.get("fraction_of_peak")
    if not f:
        return ["–", "–"]
    return [f"{100 * f['xnor']:.0f}%", f"{100 * max(f['numpy_f32'], f['torch_f32']):.0f}%"]


def _roofline_text(r: dict) -> str:
    roof = r.get("roofline")
    if not roof:
        return ("This run predates the benchmark's roofline: no peaks were measured with it.\n\n")
    return (f"Peaks measured in the same run (`hybnn_kernels.roofline`, highest of the run): "
            f"float32 FMA {roof['fma_f32']['ops_per_second'] / 1e9:,.0f} GFLOP/s, the XNOR "
            f"tile's arithmetic {roof['xnor']['ops_per_second'] / 1e9:,.0f} Gop/s; so the XNOR "
            f"kernel can be at most {roof['ratio_bound']:.1f}× a float32 GEMM running at its peak "
            f"here; each case's fractions of peak use the highest of the peaks measured at the "
            f"start of each of its timing rounds, the moments it ran.\n\n")
