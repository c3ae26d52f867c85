"""Generated text in the README and the docs: every number they quote comes from a result file.

A block of Markdown between `<!-- generated: NAME -->` and `<!-- /generated -->` is the output of
the renderer NAME (registered with `renderer`, here or in a study's module imported at the end)
on the result files in `benchmarks/results/`; each block ends with the file(s) it came from and
their commit. `hybnn report --docs` rewrites the blocks in place;
`tests/test_docs_sync.py` fails when a block differs from what its files give now. Prose outside
the blocks states no measured number.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path
from hybnn_cli.study.provenance import read_result

RESULTS_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
DOCS = ("README.md", "docs/architecture.md", "docs/cli.md", "docs/continual.md", "docs/deploy.md",
        "docs/federated.md", "docs/formats.md", "docs/pretraining.md", "docs/reproduction.md",
        "docs/results.md", "benchmarks/README.md")
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)",
                   re.S)

Renderer = Callable[[Path], str]
RENDERERS: dict[str, Renderer] = {}


def renderer(name: str):
    def register(fn: Renderer) -> Renderer:
        RENDERERS[name] = fn
        return fn
    return register


def render_text(text: str, results_dir: Path = RESULTS_DIR) -> str:
    """`text` with every generated block rendered anew."""
    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in RENDERERS:
            raise HybnnError(f"unknown generated block '{name}' (known: "
                             f"{', '.join(sorted(RENDERERS))})")
        return m[1] + RENDERERS[name](Path(results_dir)).rstrip("\n") + "\n" + m[4]
    return BLOCK.sub(sub, text)


def block_names(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def update_docs(root: Path, results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Rewrite the generated blocks of the docs under `root`; returns the files that changed."""
    changed = []
    for rel in DOCS:
        path = Path(root) / rel
        if not path.is_file():
            continue
        old = path.read_text()
        new = render_text(old, results_dir)
        if new != old:
            with atomic_path(path) as tmp:
                tmp.write_text(new)
            changed.append(path)
    return changed


# ── helpers ───────────────────────────────────────────────────────────────────────────────────
def _load(results_dir: Path, name: str, fmt: str) -> dict:
    return read_result(Path(results_dir) / name, fmt)


def source(name: str, rec: dict) -> str:
    dirty = ", uncommitted changes" if rec.get("dirty") else ""
    return (f"*From `benchmarks/results/{name}`: "
            f"`{rec['command']}`, commit `{str(rec['commit'])[:12]}`{dirty}, "
            f"{rec['date'][:10]}, {rec['machine']['cpu']}.*")


def pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}"


def acc_cell(x: float | dict | None) -> str:
    """An accuracy in percent: one run's (a number, from a one-seed file) or the mean ± std over
    seeds ({"mean", "std"}, `continual.study.mean_std`)."""
    return _ms(x) if isinstance(x, dict) else pct(x)


def mean_of(x: float | dict) -> float:
    """A number, or the mean of a mean ± std."""
    return x["mean"] if isinstance(x, dict) else x


def seconds_cell(x: float | dict, std: float | None = None) -> str:
    """Seconds: a number (with its `std` when known) or a mean ± std."""
    if isinstance(x, dict):
        x, std = x["mean"], x["std"]
    return f"{x:.2f}" if std is None else f"{x:.2f} ± {std:.2f}"


def seeds_text(r: dict) -> str:
    """The seeds a file's accuracies come from: "seed 0" (a one-seed file) or "seeds 0, 1, 2
    (mean ± std over them)"."""
    if "seeds" not in r:
        return f"seed {r['seed']}"
    return f"seeds {', '.join(map(str, r['seeds']))} (mean ± std over them)"


def partial_seeds(row: dict, r: dict) -> str:
    """The note after a row over other seeds than its file's (a run not finished yet), such as
    " (seeds 0, 1)"; else ""."""
    if "seeds" not in row or row["seeds"] == r.get("seeds", row["seeds"]):
        return ""
    return f" (seeds {', '.join(map(str, row['seeds']))})"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)




def _ms(m: dict) -> str:
    """A mean ± std over seeds, in percent."""
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def _plan_line(r: dict) -> str:
    plan = r["plan"]
    where = ("a draft plan, not committed" if plan["draft"]
             else f"`{plan['path']}`, committed in `{plan['committed_in'][:12]}`")
    return f"Plan: {where}; rule: {plan['rule']}; tie-break: {'; '.join(plan['tie_break'])}."


# ── the runtime ───────────────────────────────────────────────────────────────────────────────
BENCH = "bench.json"


@renderer("bench-table")
def bench_table(results_dir: Path) -> str:
    """Every case of `hybnn bench`: the XNOR kernel's rate and its ratios. A run with int8
    contenders (bench format 3) leads with the ratio against the fastest dense contender of any
    precision, the float32 and int8 ratios beside it; an earlier run renders as it always did."""
    r = _load(results_dir, BENCH, "hybnn-bench")
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
    r = _load(results_dir, BENCH, "hybnn-bench")
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


GEMM_EFFICIENCY = "gemm-efficiency.json"


@renderer("gemm-efficiency")
def gemm_efficiency(results_dir: Path) -> str:
    """Each GEMM's rate over the XNOR peak measured just before each of its timing blocks
    (`benchmarks/gemm_efficiency.py`): median and quartiles, the public call and the kernel it
    calls alone."""
    r = _load(results_dir, GEMM_EFFICIENCY, "hybnn-gemm-efficiency")

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


E2E = "e2e.json"


@renderer("e2e")
def e2e(results_dir: Path) -> str:
    """The deploy bundle against the torch pipeline: agreement, speed, start-up, size."""
    r = _load(results_dir, E2E, "hybnn-e2e")
    ag, sp = r["agreement"], r["speed"]
    rows = []
    for name, f in ag["float"]["heads"].items():
        q = ag["int8"]["heads"][name]
        rows.append([name, f["n_task"], f"{f['labels_differing']} / "
                     f"{f['labels_differing_on_task_images']}", pct(f["accuracy_torch"]),
                     pct(f["accuracy_bundle"]), f"{q['labels_differing']} / "
                     f"{q['labels_differing_on_task_images']}", pct(q["accuracy_bundle"]),
                     f"{q['accuracy_diff_points']:+.2f}"])
    agree = table(["head", "task images", "float: labels ≠ torch's (all / task images)",
                   "torch accuracy %", "float accuracy %",
                   "int8: labels ≠ torch's (all / task images)", "int8 accuracy %",
                   "int8 − torch (points)"], rows)
    b, one = sp["batch_4096"], sp["batch_1"]

    def split(c):
        s = c["time_share"]
        return " / ".join(f"{100 * v:.0f}%" for v in s.values())

    def iqr(c, n):
        return "–".join(f"{1e6 * t / n:.0f}" for t in c["iqr_seconds"])

    best = "torch_best" in b and "torch_best" in one  # runs before it timed eager torch only

    def label(k):
        if k != "torch_best":
            return k
        return (f"torch_best ({b['torch_best_choice']['chosen']} at 4096, "
                f"{one['torch_best_choice']['chosen']} at 1)")

    perf = table(["pipeline", "batch 4096: µs per image (quartiles)", "images/s",
                  "batch 1: µs, median (quartiles)",
                  "time split at 4096 (encoder / threshold+pack / head)", "time split at 1"],
                 [[label(k), f"{b[k]['us_per_image']:.1f} ({iqr(b[k], 4096)})",
                   f"{b[k]['images_per_second']:,.0f}",
                   f"{one[k]['us_per_image']:.1f} ({iqr(one[k], 1)})", split(b[k]),
                   split(one[k])]
                  for k in ("torch", *(["torch_best"] if best else []), "bundle_float",
                            "bundle_int8")])
    flags = set(r["machine"].get("cpu_flags", []))
    if not flags & {"avx512_vnni", "avx_vnni"}:
        perf += ("\n\nThis CPU has neither AVX-512 VNNI nor AVX-VNNI (the machine record's "
                 "`cpu_flags`), the int8 dot-product instructions ONNX Runtime's quantized "
                 "convolutions are built for; without them its int8 kernels run on AVX2 "
                 "multiply-adds, and the int8 speed-up above is what remains.")
    text = (f"On the {ag['float']['heads']['all']['n']:,} MNIST test images the float bundle's "
            f"codes differ from the torch encoder's in {ag['float']['flipped_bits']} of "
            f"{ag['float']['bits']:,} bits, the int8 encoder's in {ag['int8']['flipped_bits']:,} "
            f"({ag['int8']['flipped_fraction']:.2%}). Each head's labels are compared with the "
            f"torch pipeline's on all images and on the images of its classes, where its "
            f"accuracy is measured:\n\n{agree}\n\n"
            f"Speed, head `{r['head_timed']}`, {r['threads']} threads, one process, same images "
            f"(load average {r['load_average_before'][0]:.1f} before, "
            f"{r['load_average_after'][0]:.1f} after, on a shared machine): the float bundle is "
            f"{b['speedup_float_vs_torch']:.1f}× torch at batch 4096 and "
            f"{one['speedup_float_vs_torch']:.1f}× at batch 1; int8 is "
            f"{b['speedup_int8_vs_float']:.2f}× the float bundle at batch 4096."
            + (_torch_best_text(b, one) if best else "") + f"\n\n{perf}")
    pr = r.get("processes")
    if pr:
        c, m, mem = pr["cold_start"], pr["installed_mb"], pr["predict_peak_memory"]
        imports = ", ".join(f"`{k}` {v:.2f} s" for k, v in pr["import_seconds"].items()
                            if k != "python")
        numba = {True: " (numba started)", False: " (numba not started: the numpy head)"}.get(
            c["bundle"].get("numba_imported"), "")
        text += (f"\n\nCold start (new process: import, load, classify one image; median of 3): "
                 f"bundle {c['bundle']['seconds']:.2f} s{numba}, torch "
                 f"{c['torch']['seconds']:.2f} s (import alone: {imports}; the interpreter "
                 f"alone {pr['import_seconds']['python']:.2f} s). Installed (site-packages): "
                 f"{m['runtime_only']:,.0f} MB for the runtime alone, {m['with_torch']:,.0f} MB "
                 f"with torch. Peak memory of `hybnn predict --model BUNDLE`: "
                 f"{mem['test']['peak_rss_mb']:.0f} MB on {mem['test']['images']:,} images, "
                 f"{mem['train']['peak_rss_mb']:.0f} MB on {mem['train']['images']:,}.")
    return text + "\n\n" + source(E2E, r)


def _torch_best_text(b: dict, one: dict) -> str:
    """Torch at its best (`benchmarks/e2e.py`): what was chosen at each batch, the code bits that
    differ from eager's, and the float bundle against it."""
    def flips(c):
        f = c["torch_best_choice"]["codes_vs_eager"]
        return f"{f['flipped_bits']:,} of {f['bits']:,} code bits on {f['images']:,} images"

    return (f" Torch at its best (`torch_best`: batch norm folded into the convolutions, then the "
            f"fastest of that module eager, `torch.jit.freeze` + `optimize_for_inference` and "
            f"`torch.compile`, chosen in the run at each batch: "
            f"`{b['torch_best_choice']['chosen']}` at batch 4096, "
            f"`{one['torch_best_choice']['chosen']}` at batch 1) differs from eager torch in "
            f"{flips(b)} at batch 4096 and {flips(one)} at batch 1; the float bundle is "
            f"{b['speedup_float_vs_torch_best']:.1f}× it at batch 4096 and "
            f"{one['speedup_float_vs_torch_best']:.1f}× at batch 1.")


INT8 = "int8.json"


@renderer("int8")
def int8_variants(results_dir: Path) -> str:
    """The float encoder against the int8 quantizations ONNX Runtime offers, on this CPU."""
    r = _load(results_dir, INT8, "hybnn-int8")
    def kept(v):
        return ", ".join(v) if isinstance(v, list) else v

    rows = [[name, v["format"], v["activations"], kept(v["float_nodes"]),
             f"{v['us_per_image_4096']:.1f}", f"{v['speedup_4096']:.2f}×",
             f"{v['us_batch_1']:.1f}", f"{v['speedup_1']:.2f}×",
             f"{v['flipped_bit_fraction']:.2%}"]
            for name, v in r["variants"].items()]
    flags = ", ".join(r["machine"].get("cpu_flags", [])) or "none recorded"
    return (f"Encoder alone on ONNX Runtime, {r['threads']} threads, {r['test_images']:,} MNIST "
            f"test images (CPU flags: {flags}; load average "
            f"{r['machine']['load_average'][0]:.1f}):\n\n"
            + table(["encoder", "format", "activations", "kept in float32",
                     "µs/image at 4096", "× float32", "µs at batch 1", "× float32",
                     "code bits ≠ float32's"], rows)
            + "\n\n" + source(INT8, r))



# ── the studies' blocks: importing a study's module registers its renderers (at the end: they
# import this module) ──────────────────────────────────────────────────────────────────────────
from hybnn_cli.study import (  # noqa: E402, I001
    continual_study, ddp_scaling, exactness, fed_benchmark, fed_priv, fed_scale, fed_tune,  # noqa: F401
    headline, reproduction_docs, union_encoder,  # noqa: F401
)
