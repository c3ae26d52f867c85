"""The README's headline table: one row per main result, each read from its result file.

The block `<!-- generated: headline -->` of README.md. Every row says what was measured, the figure
with its spread (mean ± std over seeds, or quartiles and the ratio from minima for timings), the
result file and the commit that made it, and links to the page that holds the full tables. The
rows read the same files as those pages' blocks; the links are relative to the repository's root,
where README.md lives.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hybnn_cli.study.docgen import renderer, table
from hybnn_cli.study.provenance import read_result

Row = tuple[str, str, str]  # what was measured, the figure with its spread, the result file


def _pm(m: float, s: float) -> str:
    """A mean ± std of fractions, in percent."""
    return f"{100 * m:.2f} ± {100 * s:.2f}"


def _seeds(seeds) -> str:
    return "seeds " + ", ".join(map(str, sorted(seeds, key=int)))


def file_cell(name: str, rec: dict) -> str:
    """The result file, linked, with the commit that made it."""
    dirty = ", uncommitted changes" if rec.get("dirty") else ""
    return (f"[`{name}`](benchmarks/results/{name}), commit `{str(rec['commit'])[:12]}`{dirty}")


def reproduction_row(results_dir: Path) -> Row:
    name = "reproduction.json"
    r = read_result(results_dir / name, "hybnn-reproduction")

    def span(entries: list[dict]) -> str:
        lo = min(entries, key=lambda e: e["test_acc"])
        hi = max(entries, key=lambda e: e["test_acc"])
        return (f"{_pm(lo['test_acc'], lo['test_acc_std'])} to "
                f"{_pm(hi['test_acc'], hi['test_acc_std'])}")

    parts = [f"HyBNN {span([t['hybnn'] for t in r['tasks']])}"]
    for b, label in (("sign", "binary CNN, `sign` input (the paper's)"),
                     ("threshold", "the same CNN, `threshold` input")):
        entries = [t["baselines"][b] for t in r["tasks"] if t["baselines"].get(b)]
        if entries:
            parts.append(f"{label} {span(entries)}")
    ten = r.get("ten_class")
    if ten:
        parts.append(f"HyBNN on ten classes {_pm(ten['test_acc'], ten['test_acc_std'])}")
    what = (f"Test accuracy (%) on the five MNIST digit pairs, the lowest task's to the "
            f"highest's, mean ± std over {_seeds(r['config']['seeds'])}: the task BNN on codes "
            f"against the paper's binary CNN on pixels")
    return what, "; ".join(parts), file_cell(name, r)


def federated_row(results_dir: Path) -> Row:
    name = "fedtune.json"
    r = read_result(results_dir / name, "hybnn-fedtune")
    rounds = r["screen_key"].split("/")[-1].removesuffix("rounds")
    parts, clients, seeds = [], "?", []
    for key, row in r.get("rows", {}).items():
        task, n, part, _uplink = key.split("/")
        if part != "iid" or "test_acc" not in row:
            continue
        clients, seeds = n, row["seeds"]
        central = r["centralized"][task]["test_acc"]
        met = {True: "met", False: "not met", None: "none"}[row["target_met"]]
        parts.append(f"task {task.removeprefix('task')}: "
                     f"{_pm(row['test_acc']['mean'], row['test_acc']['std'])} against "
                     f"{_pm(central['mean'], central['std'])} centralized "
                     f"(the plan's target: {met})")
    what = (f"FedHyBNN on Flower, {int(clients):,} IID clients with {r['fraction']:.0%} sampled "
            f"per round, {rounds} rounds, at the setting chosen on validation: test accuracy (%) "
            f"after the last round against centralized `train-bnn` on the same codes, mean ± std "
            f"over {_seeds(seeds)}")
    return what, "; ".join(parts) or "not run yet", file_cell(name, r)


def continual_row(results_dir: Path) -> Row:
    name = "continual.json"
    r = read_result(results_dir / name, "hybnn-continual-benchmark")
    parts = []
    for enc in r["encoders"]:
        cells = []
        for strategy, label in (("replay", "replay"), ("none", "fine-tuning alone")):
            run = r["runs"].get(f"{enc}/class/{strategy}")
            if run:
                m = run["test"]["final_seen_acc"]
                cells.append(f"{label} {_pm(m['mean'], m['std'])}")
        if cells:
            parts.append(f"`{enc}` encoder: " + ", ".join(cells))
    what = (f"Split-MNIST learned one digit pair after another on codes, class scenario: test "
            f"accuracy (%) on all ten digits after the fifth task, mean ± std over "
            f"{_seeds(r['seeds'])} (the `fashion` encoder never saw a digit)")
    return what, "; ".join(parts), file_cell(name, r)


def forgetproof_row(results_dir: Path) -> Row:
    """Per encoder, each learner that cannot forget at its chosen K against joint
    (`study.forgetproof_study`)."""
    from hybnn_cli.study.forgetproof_study import headline_row

    return headline_row(results_dir)


def bits_row(results_dir: Path) -> Row:
    """Per dataset, the BNN's accuracy on all classes at every number of latent bits
    (`study.bits_study`)."""
    from hybnn_cli.study.bits_study import headline_row

    return headline_row(results_dir)


def e2e_row(results_dir: Path) -> Row:
    name = "e2e.json"
    r = read_result(results_dir / name, "hybnn-e2e")
    sp = r["speed"]
    ref = "torch_best" if "torch_best" in sp["batch_4096"] else "torch"
    ref_text = "torch at its best" if ref == "torch_best" else "torch"

    def at(batch: str, n: int) -> str:
        b = sp[batch]

        def cell(k: str) -> str:
            q1, q3 = (1e6 * t / n for t in b[k]["iqr_seconds"])
            return f"{b[k]['us_per_image']:.1f} ({q1:.1f}–{q3:.1f})"
        ratio = b["speedup_float_vs_torch_best" if ref == "torch_best"
                  else "speedup_float_vs_torch"]
        return (f"batch {n}: {cell('bundle_float')} against {cell(ref)}, "
                f"{ratio:.1f}×")

    heads = r["agreement"]["float"]["heads"]
    head = heads[r["head_timed"]]
    what = (f"Image in, class out without torch: the float deploy bundle (ONNX Runtime encoder, "
            f"XNOR head `{r['head_timed']}`) against {ref_text}, {r['threads']} threads; µs per "
            f"image, median (quartiles)")
    figure = (f"{at('batch_4096', 4096)}; {at('batch_1', 1)}; labels ≠ torch's: "
              f"{head['labels_differing']} of {head['n']:,}")
    return what, figure, file_cell(name, r)


def kernels_row(results_dir: Path) -> Row:
    name = "bench.json"
    r = read_result(results_dir / name, "hybnn-bench")
    gemm = [c for c in r["cases"] if c["name"].startswith("gemm ")]
    parts = []

    def ratio(c: dict, key: str) -> str:
        x, m = c.get(f"speedup_vs_{key}"), c.get(f"speedup_vs_{key}_from_minima")
        if x is None:
            return "not measured"
        return f"{x:.1f}×" + (f" ({m:.1f}×)" if m is not None else "")

    if gemm:
        key = "best_dense" if "speedup_vs_best_dense" in gemm[0] else "best_float"
        lo = min(gemm, key=lambda c: c[f"speedup_vs_{key}"])
        hi = max(gemm, key=lambda c: c[f"speedup_vs_{key}"])
        sizes = sorted(c["m"] for c in gemm)
        text = (f"square GEMMs {sizes[0]}³ to {sizes[-1]}³: from {ratio(lo, key)} (`{lo['name']}`) "
                f"to {ratio(hi, key)} (`{hi['name']}`)")
        if key == "best_dense":
            f32 = sorted(c["speedup_vs_best_float"] for c in gemm)
            text += f", {f32[0]:.1f}× to {f32[-1]:.1f}× the best float32"
        parts.append(text)
    for c in r["cases"]:
        if c["name"].startswith("head "):
            key = "best_dense" if "speedup_vs_best_dense" in c else "best_float"
            parts.append(f"`{c['name']}`: {ratio(c, key)}")
    checks = "all passed" if r["checks_passed"] else "SOME FAILED"
    what = (f"The XNOR-popcount kernels against the fastest dense contender, float32 or int8, "
            f"timed in the same process on {r['setup']['threads']} threads, every answer checked "
            f"({checks}): its median time over the kernel's (from minimum times in brackets)")
    return what, "; ".join(parts), file_cell(name, r)


# (name of the result, its page, the row) in the order of the table
ROWS: list[tuple[str, str, Callable[[Path], Row]]] = [
    ("The paper's comparison", "docs/reproduction.md", reproduction_row),
    ("Latent bits", "docs/reproduction.md", bits_row),
    ("Federated", "docs/federated.md", federated_row),
    ("Continual", "docs/continual.md", continual_row),
    ("Learners that cannot forget", "docs/continual.md",
     forgetproof_row),
    ("End to end", "docs/deploy.md", e2e_row),
    ("Kernels", "benchmarks/README.md", kernels_row),
]


@renderer("headline")
def headline(results_dir: Path) -> str:
    rows = [[f"[{title}]({page})", *row(Path(results_dir))] for title, page, row in ROWS]
    return table(["result", "what was measured", "figure (spread)", "file, commit"], rows)
