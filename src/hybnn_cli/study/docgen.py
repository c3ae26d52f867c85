"""Generated text in the README and the docs: every number they quote comes from a result file.

A block of Markdown between `<!-- generated: NAME -->` and `<!-- /generated -->` is the output of
the renderer NAME (registered below) on the result files in `benchmarks/results/`; each block ends
with the file(s) it came from and their commit. `hybnn report --docs` rewrites the blocks in place;
`tests/test_docs_sync.py` fails when a block differs from what its files give now. Prose outside
the blocks states no measured number.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from pathlib import Path

from hybnn_cli.continual import HEADLINE
from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path
from hybnn_cli.study.fed_cells import SCALE, client_step, server_step  # fedscale_earlier's,
from hybnn_cli.study.fed_cells import first_run as _first_run  # going with it (the federated
from hybnn_cli.study.fed_cells import within_cell as _within_cell  # blocks render in fed_*.py)
from hybnn_cli.study.fed_records import read_scale  # fedscale_earlier's
from hybnn_cli.study.provenance import read_result

RESULTS_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
DOCS = ("README.md", "docs/reproduction.md", "docs/federated.md", "benchmarks/README.md")
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


def entry_cell(e: dict | None) -> str:
    """A model's test accuracy over its seeds, as the study summarized it."""
    return "–" if not e else f"{100 * e['test_acc']:.2f} ± {100 * e['test_acc_std']:.2f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ── the reproduction study ────────────────────────────────────────────────────────────────────
STUDY = "reproduction.json"


def _study(results_dir: Path) -> dict:
    return _load(results_dir, STUDY, "hybnn-reproduction")


@renderer("study-settings")
def study_settings(results_dir: Path) -> str:
    r = _study(results_dir)
    c = r["config"]
    vae_s = [x for v in r["vaes"] if v for x in v["epoch_seconds"]]
    recon = [v["final"]["test_recon"] for v in r["vaes"] if v]
    kl = [v["final"]["test_kl"] for v in r["vaes"] if v and "test_kl" in v["final"]]
    lrs = ", ".join(f"{x:g}" for x in c["bnn_lrs"])
    cnn_lrs = ", ".join(f"{x:g}" for x in c["baseline_lrs"])
    lines = [
        f"Seeds {', '.join(map(str, c['seeds']))}: seed s pretrains VAE s ({c['vae_epochs']} "
        f"epochs, Adam 1e-3, batch 128) and trains every model with seed s. "
        f"{100 * c['val_fraction']:.0f}% of each digit of the MNIST training split is held out "
        f"for validation (the same images for every model). Each model's learning rate is "
        f"chosen per task on the first seed's validation accuracy: task BNN (Adam, "
        f"{c['bnn_epochs']} epochs, cosine schedule, batch 128) from {{{lrs}}}, binary CNN (Adam, "
        f"{c['baseline_epochs']} epochs, cosine schedule, batch 128) from {{{cnn_lrs}}}; the "
        f"10-class BNN also chooses its hidden width from "
        f"{{{', '.join(map(str, c['ten_class_hidden']))}}}. Epoch counts were fixed, not tuned. "
        f"The test split is read only by the runs at the chosen settings.",
    ]
    if recon:
        lines.append(f"\nVAEs: final test reconstruction {statistics.fmean(recon):.1f} nats per "
                     f"image" + (f", KL {statistics.fmean(kl):.1f} nats" if kl else "")
                     + f" (mean over seeds); epoch time median {statistics.median(vae_s):.1f} s, "
                     f"range {min(vae_s):.1f}–{max(vae_s):.1f} s ({c['threads']} torch "
                     f"thread(s), machine shared with other jobs).")
    return "\n".join(lines) + "\n\n" + source(STUDY, r)


@renderer("accuracy-table")
def accuracy_table(results_dir: Path) -> str:
    r = _study(results_dir)
    bins = r["config"]["binarizations"]
    names = {"sign": "binary CNN, `sign` input (the paper's)",
             "threshold": "CNN, `threshold` input", "none": "CNN, real-valued first layer"}
    rows = []
    for t in r["tasks"]:
        rows.append([t["task"], " vs ".join(map(str, t["classes"])), t["n_test"],
                     entry_cell(t["hybnn"])] + [entry_cell(t["baselines"].get(b)) for b in bins])
    out = table(["task", "digits", "test images", "HyBNN (BNN on codes)"]
                + [names.get(b, b) for b in bins], rows)
    ten = r.get("ten_class")
    if ten:
        out += (f"\n\n10 classes on the same codes (`--task all`, {ten['n_test']:,} test images): "
                f"**{entry_cell(ten)}%** with hidden width {ten['chosen']['hidden']} and lr "
                f"{ten['chosen']['lr']:g} (chosen on validation; per seed: "
                + ", ".join(f"{pct(x['test_acc'])}" for x in ten["runs"]) + ").")
    return (f"Test accuracy in %, mean ± standard deviation over seeds "
            f"{', '.join(map(str, r['config']['seeds']))}:\n\n" + out + "\n\n" + source(STUDY, r))


@renderer("tuning-table")
def tuning_table(results_dir: Path) -> str:
    from hybnn_cli.study.reproduction_report import tuning_table as tt

    r = _study(results_dir)
    return tt(r) + "\n\n" + source(STUDY, r)


@renderer("per-seed-table")
def per_seed_table(results_dir: Path) -> str:
    r = _study(results_dir)
    seeds = r["config"]["seeds"]
    rows = []
    entries = [(t["task"], "HyBNN", t["hybnn"]) for t in r["tasks"]]
    if r.get("ten_class"):
        entries.append(("all", "HyBNN", r["ten_class"]))
    entries += [(t["task"], f"CNN `{b}`", e) for t in r["tasks"]
                for b, e in t["baselines"].items()]
    for task, model, e in entries:
        if not e:
            continue
        by_seed = {x["seed"]: x for x in e["runs"]}
        rows.append([task, model, ", ".join(f"{k} {v:g}" for k, v in e["chosen"].items())]
                    + [f"{pct(by_seed[s]['val_acc'])} / {pct(by_seed[s]['test_acc'])}"
                       if s in by_seed else "–" for s in seeds])
    return (table(["task", "model", "setting"] + [f"seed {s}: val / test %" for s in seeds], rows)
            + "\n\n" + source(STUDY, r))


@renderer("sign-collapse")
def sign_collapse(results_dir: Path) -> str:
    r = _study(results_dir)
    rows = []
    for t in r["tasks"]:
        b = t["baselines"].get("sign")
        if not b:
            continue
        counts = t["test_class_counts"]
        preds = [x for x in b["predicted_class_counts"]]
        only = [i for i, n in enumerate(preds) if n]
        rows.append([t["task"], (t.get("distinct_test_inputs") or {}).get("sign", "–"),
                     ", ".join(f"{c}: {n:,}" for c, n in zip(t["classes"], counts, strict=True)),
                     f"always {t['classes'][only[0]]}" if len(only) == 1 else "both",
                     pct(counts[only[0]] / sum(counts)) if len(only) == 1 else "–",
                     pct(b["runs"][0]["test_acc"])])
    return (table(["task", "different test inputs after sign", "test images per digit",
                   "first seed's CNN predicts", "that digit's share %", "its accuracy %"], rows)
            + "\n\n" + source(STUDY, r))


@renderer("sizes")
def sizes(results_dir: Path) -> str:
    r = _study(results_dir)
    s = r["model_sizes"]

    def kib(key):
        return f"{s[key]['total']['bytes'] / 1024:.2f} KiB"
    return (f"Sizes: task BNN {kib('hybnn_task_bnn')} "
            f"({s['hybnn_task_bnn']['total']['binary_params']:,} binary weights), binary CNN "
            f"{kib('binary_cnn')}, the shared float encoder {kib('vae_encoder')}.\n\n"
            + source(STUDY, r))


@renderer("fashion-table")
def fashion_table(results_dir: Path) -> str:
    r = _study(results_dir)
    f = r.get("fashion")
    if not f:
        return ("The transfer study was not part of this run (`--no-fashion`).\n\n"
                + source(STUDY, r))
    rows = [[" vs ".join(p["class_names"]), entry_cell(p["mnist_vae"]),
             entry_cell(p["fashion_vae"]), entry_cell(p["threshold"])] for p in f["pairs"]]
    return (table(["pair", "MNIST VAE codes", "Fashion VAE codes", "binary CNN `threshold`"], rows)
            + "\n\n" + source(STUDY, r))


@renderer("fedscale-earlier")
def fedscale_earlier(results_dir: Path) -> str:
    """The grid rows a re-run with other settings replaced (`fedscale.py` keeps them under
    "earlier"), with the settings they were run with."""
    r = read_scale(Path(results_dir) / SCALE)
    rows = []
    for key, run in sorted(r.get("earlier", {}).items()):
        task, n, part, uplink = key.split(" ", 1)[0].split("/")
        cfg, t = _first_run(run).get("config", {}), task.removeprefix("task")
        rows.append([t, n, part, uplink, server_step(cfg), client_step(cfg, r["lr_per_task"][t]),
                     acc_cell(r["centralized"][task]["test_acc"]),
                     acc_cell(run["test_acc"]) + partial_seeds(run, r),
                     acc_cell(run.get("final_val_acc")), _within_cell(run)])
    if not rows:
        return "(none)\n\n" + source(SCALE, r)
    return table(["task", "clients", "partition", "uplink", "server step",
                  "client optimizer, lr, batch", "centralized (%)", "final (%)",
                  "final validation (%)", "rounds to within 1 point of centralized"],
                 rows) + "\n\n" + source(SCALE, r)


def _ms(m: dict) -> str:
    """A mean ± std over seeds, in percent."""
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def _plan_line(r: dict) -> str:
    plan = r["plan"]
    where = ("a draft plan, not committed" if plan["draft"]
             else f"`{plan['path']}`, committed in `{plan['committed_in'][:12]}`")
    return f"Plan: {where}; rule: {plan['rule']}; tie-break: {'; '.join(plan['tie_break'])}."


# ── the runtime ───────────────────────────────────────────────────────────────────────────────
EXACT = "exactness.json"


@renderer("exactness")
def exactness(results_dir: Path) -> str:
    r = _load(results_dir, EXACT, "hybnn-exactness")
    rows = r["results"]
    tasks = sorted({x["task"] for x in rows})
    mism = sum(x["mismatches"] for x in rows)
    identical = sum(x["scores_bit_identical"] for x in rows)
    codes = sum(x["n_codes"] for x in rows)
    agree = sum(x["accuracy_kernel"] == x["accuracy_torch"] for x in rows)
    return (f"Exactness: {len(rows)} exported BNNs (tasks {', '.join(tasks)}; every seed of the "
            f"accuracy table) against their torch models on all test codes of their encoder "
            f"({codes:,} predictions): {mism} mismatched predictions, class scores bit-identical "
            f"for {identical} of {len(rows)} models, kernel accuracy equal to torch's for "
            f"{agree} of {len(rows)}.\n\n" + source(EXACT, r))


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


# ── continual learning ───────────────────────────────────────────────────────────────────────
CONTINUAL = "continual.json"
_STRATEGY_TEXT = {"none": "none (fine-tuning)", "replay": "replay, 2,000 codes",
                  "generative": "generative (Bernoulli mixtures)", "joint": "joint (upper bound)"}


def _cont_cell(run: dict | None, metric: str) -> str:
    if not run:
        return "not run"
    m = run["test"][metric]
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def _kb(n: int) -> str:
    return f"{n / 1e3:,.1f} kB"


def _study_time(name: str, enc: dict) -> str:
    text = (f"{name}: {enc['study_wall_seconds'] / 60:.1f} min with {enc.get('jobs', 2)} runs "
            f"at a time")
    if "study_cpu_seconds" in enc:
        text += (f" (load average {enc['load_average_start'][0]:.1f} at the start, "
                 f"{enc['load_average_end'][0]:.1f} at the end; the runs' CPU time "
                 f"{enc['study_cpu_seconds'] / 60:.1f} min)")
    if "rerun" in enc:  # runs redone with new settings; the others reused from the study above
        r = enc["rerun"]
        text += (f", then {', '.join(k.split('/', 1)[1] for k in r['runs'])} rerun at the "
                 f"settings chosen since: {r['study_wall_seconds'] / 60:.1f} min with "
                 f"{r['jobs']} runs at a time (load average {r['load_average_start'][0]:.1f} "
                 f"at the start, {r['load_average_end'][0]:.1f} at the end; the runs' CPU time "
                 f"{r['study_cpu_seconds'] / 60:.1f} min)")
    return text


@renderer("continual-table")
def continual_table(results_dir: Path) -> str:
    r = _load(results_dir, CONTINUAL, "hybnn-continual-benchmark")
    encs = list(r["encoders"])
    runs = r["runs"]
    seeds = ", ".join(map(str, r["seeds"]))
    head = ["scenario", "method", "source", "memory"] + [f"{e} encoder (%)" for e in encs]
    rows = []
    for scenario in ("class", "task"):
        metric = "final_seen_acc" if scenario == "class" else "average_acc"
        for strategy in ("none", "replay", "generative", "joint"):
            any_run = next((runs[k] for e in encs if (k := f"{e}/{scenario}/{strategy}")
                            in runs), None)
            mem = _kb(any_run["memory_bytes"]) if any_run else "–"
            if strategy == "joint" and any_run:
                mem = f"all codes ({mem})"
            rows.append([scenario, _STRATEGY_TEXT[strategy], "measured", mem]
                        + [_cont_cell(runs.get(f"{e}/{scenario}/{strategy}"), metric)
                           for e in encs])
        for name, a in r["anchors"][scenario].items():
            if not isinstance(a, dict):  # format 1 recorded the figure alone, unchecked
                a = {"accuracy": a, "checked": False}
            mem = "1.5 MB (= 62,720 codes)" if "iCaRL" in name else "–"
            rows.append([scenario, name, "quoted" if a["checked"] else "quoted, unverified",
                         mem, f"{a['accuracy']:.2f} (pixels)"] + [""] * (len(encs) - 1))
    chosen = r.get("chosen", {})
    picks = "; ".join(f"{s.replace('task/', '')}{' (task scenario)' if '/' in s else ''}: "
                      f"`{' '.join(c['options']) or 'defaults'}`"
                      for s, c in chosen.items() if isinstance(c, dict))
    wall = "; ".join(_study_time(e, r["encoders"][e]) for e in encs
                     if "study_wall_seconds" in r["encoders"][e])
    notes = "".join(f" The `{e}` encoder: {r['encoders'][e]['note']}."
                    for e in encs if r["encoders"][e].get("note"))
    plan = (f" {_plan_line(r)} Every tuning candidate ran sealed (it could not read the "
            f"test split); only the runs below read it." if "plan" in r else
            " (Chosen before the sealed protocol: the candidates' runs read test too.)")
    return (f"Test accuracy after the fifth task, mean ± standard deviation over seeds {seeds}, "
            f"{r['epochs_per_task']} epochs per task: class scenario on all ten digits, task "
            f"scenario averaged over the five tasks. Quoted rows: {r['anchor_source']}; "
            f"\"unverified\" marks a quoted figure not checked against the paper's table here. "
            f"Settings chosen on validation ({picks}).{plan}{notes} Study time per encoder "
            f"(4 strategies × 2 scenarios × {len(r['seeds'])} seeds, one thread per run): "
            f"{wall or 'not recorded'}.\n\n"
            + table(head, rows) + "\n\n" + source(CONTINUAL, r))


@renderer("continual-anchors")
def continual_anchors(results_dir: Path) -> str:
    """Each measured row against the quoted anchors of its scenario: which it is above, below,
    or within one standard deviation of (the table's means)."""
    r = _load(results_dir, CONTINUAL, "hybnn-continual-benchmark")
    rows = []
    for key, run in r["runs"].items():
        enc, scenario, strategy = key.split("/")
        m = run["test"][HEADLINE[scenario]]
        where: dict[str, list[str]] = {"above": [], "within one std of": [], "below": []}
        for name, a in r["anchors"][scenario].items():
            diff = 100 * m["mean"] - (a["accuracy"] if isinstance(a, dict) else a)
            word = ("within one std of" if abs(diff) <= 100 * m["std"]
                    else "above" if diff > 0 else "below")
            where[word].append(f"{name.split(' (')[0]} ({diff:+.2f})")
        rows.append([enc, scenario, _STRATEGY_TEXT[strategy],
                     *(", ".join(v) or "–" for v in where.values())])
    order = ["none", "replay", "generative", "joint"]
    rows.sort(key=lambda x: (x[0], x[1], [_STRATEGY_TEXT[k] for k in order].index(x[2])))
    return ("Each measured row's mean against the quoted figures of its scenario, the "
            "difference in points in brackets (the quoted rows train an MLP on pixels: anchors, "
            "not a like-for-like comparison):\n\n"
            + table(["encoder", "scenario", "method", "above", "within one std of", "below"],
                    rows)
            + "\n\n" + source(CONTINUAL, r))


@renderer("continual-metrics")
def continual_metrics(results_dir: Path) -> str:
    r = _load(results_dir, CONTINUAL, "hybnn-continual-benchmark")
    rows = []
    for key, run in r["runs"].items():
        enc, scenario, strategy = key.split("/")
        rows.append([enc, scenario, strategy, _cont_cell(run, "final_seen_acc"),
                     _cont_cell(run, "average_acc"), _cont_cell(run, "forgetting"),
                     _cont_cell(run, "backward_transfer"), _kb(run["memory_bytes"]),
                     f"{run['train_seconds']['mean']:.0f}"])
    rows.sort(key=lambda x: (x[0], x[1], ["none", "replay", "generative", "joint"].index(x[2])))
    return (table(["encoder", "scenario", "strategy", "seen classes (%)", "average accuracy (%)",
                   "forgetting (points)", "backward transfer (points)", "memory",
                   "training s per seed"], rows) + "\n\n" + source(CONTINUAL, r))


@renderer("continual-tuning")
def continual_tuning(results_dir: Path) -> str:
    """The settings tried against the bias toward new classes, on validation only."""
    r = _load(results_dir, CONTINUAL, "hybnn-continual-benchmark")
    chosen = {s: c["name"] for s, c in r.get("chosen", {}).items() if isinstance(c, dict)}
    rows = []
    for key, run in sorted(r["tuning"].items()):
        group, name = key.rsplit("/", 1)  # group: a strategy (class) or "task/<strategy>"
        scenario = run["config"]["scenario"]
        m = re.search(r"--epochs-per-task \d+ (.*?) --seeds", run["command"])
        opts = m[1] if m else "–"
        val = run["val"][HEADLINE[scenario]]
        rows.append([scenario, run["config"]["strategy"], name, f"`{opts}`",
                     ", ".join(map(str, run["config"].get("seeds", [0]))),
                     f"{100 * val['mean']:.2f}"
                     + (f" ({', '.join(f'{100 * v:.2f}' for v in val['values'])})"
                        if len(val["values"]) > 1 else ""),
                     "chosen" if chosen.get(group) == name else ""])
    rows.sort(key=lambda x: (x[0], x[1], x[2]))
    return (f"`{next(iter(r['encoders']))}` encoder; validation accuracy after the fifth task "
            f"(class scenario: on all ten digits; task scenario: averaged over the five tasks), "
            f"mean over the seeds listed (each seed's in brackets); the test split plays no part "
            f"(rule: {r.get('chosen', {}).get('rule', 'not chosen yet')}):\n\n"
            + table(["scenario", "strategy", "candidate", "options", "seeds", "validation (%)",
                     ""], rows)
            + "\n\n" + source(CONTINUAL, r))


# ── pretraining at server scale ───────────────────────────────────────────────────────────────
SCALING = "ddp-scaling.json"


BANDWIDTHS_GBIT = (1, 10)
MACHINES = (1, 2, 4, 8, 16)


def scaling_model(r: dict) -> tuple[float, str, list[list]]:
    """Epoch time on N machines: steps · (compute per step / N + ring all-reduce of the gradient
    at a bandwidth), with the compute per step of the fastest one-process run measured."""
    ones = [x for x in r["runs"] if x["processes"] == 1]
    best = min(ones, key=lambda x: min(x["epoch_seconds"]))
    compute = min(best["epoch_seconds"]) / r["steps_per_epoch"]
    rows = []
    for n in MACHINES:
        cells = []
        for gbit in BANDWIDTHS_GBIT:
            comm = 2 * (n - 1) / n * r["gradient_bytes_per_step"] / (gbit * 1e9 / 8)
            epoch = r["steps_per_epoch"] * (compute / n + comm)
            cells.append(f"{epoch:.1f} s ({r['steps_per_epoch'] * compute / epoch:.1f}×)")
        rows.append([n, *cells])
    return compute, best["label"], rows


@renderer("ddp-scaling")
def ddp_scaling(results_dir: Path) -> str:
    r = _load(results_dir, SCALING, "hybnn-ddp-scaling")
    rows = [[x["label"], " / ".join(f"{s:.1f}" for s in x["epoch_seconds"]),
             f"{x['train_loss'][-1]:.2f}", f"{x['test_recon']:.2f}",
             f"{x['load_average'][0]:.1f} → {x['load_average'][1]:.1f}"] for x in r["runs"]]
    ar = r["allreduce_loopback_2proc_seconds"]
    compute, base, model_rows = scaling_model(r)
    return (f"VAE pretraining on full MNIST ({r['epochs']} epoch(s), global batch "
            f"{r['batch_size']}, seed 0) on this machine: {r['machine']['cores']} cores shared "
            f"with other users' jobs. The load average at the start and end of each run is "
            f"listed: where it exceeds the cores, the times measure the contention more than the "
            f"code (a process with more threads than it gets cores waits for them), and they "
            f"say nothing of a dedicated server. On an idle machine of two cores, two 1-thread "
            f"processes do the arithmetic of one 2-thread process plus an all-reduce per step, "
            f"so little gain is to be expected from them; the model below, built on these "
            f"inflated step times, makes the all-reduce look cheaper than on an idle machine."
            f"\n\n"
            + table(["run", "seconds per epoch", "final training loss", "test recon (nats)",
                     "load average"], rows)
            + f"\n\nEach step all-reduces the encoder + decoder gradient: {r['parameters']:,} "
              f"float32 values, {r['gradient_bytes_per_step'] / 1e6:.2f} MB, "
              f"{r['steps_per_epoch']} times an epoch; between 2 gloo processes on loopback that "
              f"took {1e3 * ar['median']:.2f} ms (median of {ar['reps']}).\n\n"
              f"A model, not a measurement, for N machines: epoch(N) = steps · (compute per step "
              f"/ N + 2 (N − 1) / N · gradient bytes / bandwidth), with the compute of "
              f"{1e3 * compute:.0f} ms per step of the fastest one-process run above ({base}); "
              f"it ignores latency, the overlap DDP makes between backward and all-reduce, and "
              f"the lower efficiency of smaller per-process batches.\n\n"
            + table(["machines", *(f"epoch at {g} Gbit/s (speed-up)" for g in BANDWIDTHS_GBIT)],
                    model_rows)
            + "\n\n" + source(SCALING, r))


UNION = "union-encoder.json"


@renderer("union-encoder")
def union_encoder(results_dir: Path) -> str:
    """Task BNNs on two encoders' codes: one seed's accuracies (version 1) or each the mean ±
    std over the seeds, each seed pretraining its own encoder (version 2)."""
    r = _load(results_dir, UNION, "hybnn-union-encoder")
    encs = r["encoders"]
    tasks = list(encs[0]["tasks"])
    rows = [[t, *(f"{acc_cell(e['tasks'][t]['val_acc'])} / {acc_cell(e['tasks'][t]['test_acc'])}"
                  for e in encs)] for t in tasks]
    head = [f"encoder pretrained on {e['pretrain_dataset']} ({e['n_pretrain_images']:,} "
            f"images){partial_seeds(e, r)}: val / test %" for e in encs]
    seeds = (f"seed {r['seed']}, BNNs {r['bnn_epochs']} epochs; one seed, so differences of a "
             f"few tenths are within noise" if "seeds" not in r else
             f"BNNs {r['bnn_epochs']} epochs; {seeds_text(r)}, each seed pretraining its own "
             f"encoder and training its own BNNs")
    return (f"Task BNNs on MNIST codes from two encoders, each pretrained for "
            f"{r['vae_epochs']} epoch(s) over its own set (so the union's encoder took twice the "
            f"steps), {seeds}.\n\n"
            + table(["task", *head], rows) + "\n\n" + source(UNION, r))


# ── the studies that render their own blocks: importing one registers its renderers ───────────
# (last: they import the engine above)
from hybnn_cli.study import fed_benchmark, fed_priv, fed_scale, fed_tune  # noqa: E402, F401
