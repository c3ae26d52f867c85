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
    seeds ({"mean", "std"}, `study.continual_runs.mean_std`)."""
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



# ── the studies' blocks: importing a study's module registers its renderers (at the end: they
# import this module) ──────────────────────────────────────────────────────────────────────────
from hybnn_cli.study import (  # noqa: E402, I001
    bench_report, bits_study, continual_study, ddp_scaling, e2e_study, exactness, fed_benchmark,  # noqa: F401
    fed_priv, fed_scale, fed_tune, forgetproof_study, gemm_peaks, headline,  # noqa: F401
    int8_encoders, reproduction_docs, union_encoder, e2e_c_head, folder_throughput,  # noqa: F401
)
