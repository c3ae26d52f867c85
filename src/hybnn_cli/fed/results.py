"""The federated benchmark's result file (`benchmarks/federated.py` writes it; the report and the
generated docs read it): one defined, versioned format.

Body (after the provenance header of `hybnn_cli.results`): "clients", "rounds", "seeds",
"study", "study_commit", "lr_per_task" {task: lr}, "centralized_test_acc" {task: {seed: acc}},
and "runs" {"<variant>/task<t>/seed<s>": run}, where a run holds "test_acc", "best_test_acc",
"initial_test_acc", "accuracy_curve" (the global model's test accuracy after rounds 1..R),
"bytes", "valid_updates" (per round), "encoder_sha256", "config" and "seconds".
"""

from __future__ import annotations

from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.results import read_result

FORMAT = "hybnn-federated-benchmark"
VERSION = 2


def _read_versioned(path: Path, fmt: str, version: int, what: str) -> dict:
    data = read_result(path, fmt)
    if data.get("format_version") != version:
        raise HybnnError(f"{path}: {what} version {data.get('format_version')}, this hybnn reads "
                         f"version {version}")
    return data


def read_federated(path: Path) -> dict:
    """A federated benchmark file, checked for format and version."""
    return _read_versioned(path, FORMAT, VERSION, "federated benchmark")


def curves_by_variant(data: dict) -> dict[str, list[dict]]:
    """{variant: [{"label": "task<t> seed<s>", "rounds": [1..R], "acc": [...]}, ...]}."""
    panels: dict[str, list[dict]] = {}
    for key, run in sorted(data["runs"].items()):
        variant, task, seed = key.split("/")
        curve = run["accuracy_curve"]
        panels.setdefault(variant, []).append(
            {"label": f"{task} {seed}", "rounds": list(range(1, len(curve) + 1)), "acc": curve})
    return panels


# ── the scale study (`benchmarks/fedscale.py`) ────────────────────────────────────────────────
SCALE_FORMAT = "hybnn-fedscale"
SCALE_VERSION = 1
"""Body: "codes", "fraction", "alpha", "rounds", "local_epochs", "seed", "threads",
"lr_per_task" {task: lr}, "hidden_per_task" {task: width} (absent from older files: 128),
"study_commit", "centralized" {"task<t>": {"test_acc", "epochs",
"command"}}, and maps of runs, each run holding "accuracy_curve", "test_acc",
"uplink_per_round"/"downlink_per_round"/"uplink_total"/"downlink_total" (payload bytes, all
sampled clients), "sampled_per_round", "seconds_per_round", "wall_seconds", "mode", "config" and
"command" (and four maps; "memory" may be absent from older files):
- "runs" {"task<t>/<clients>/<partition>/<uplink>": run + "rounds_to_within_1pt"};
- "engines" {"<engine>/task<t>/<clients>/<partition>/<uplink>/<rounds>": run};
- "secagg" {"task<t>/<clients>/<partition>/<uplink>/<rounds>/<secagg|plain>": run};
- "memory" {"task<t>/<clients>/iid/float/<sampled per round>/<rounds>": run + "peak_rss" (bytes,
  the in-process `hybnn fed` process)}."""


def read_scale(path: Path) -> dict:
    """A scale-study file, checked for format and version."""
    return _read_versioned(path, SCALE_FORMAT, SCALE_VERSION, "scale study")


def rounds_to_within(curve: list[float], reference: float, gap: float) -> int | None:
    """The first round (1-based) whose accuracy is at least reference − gap, or None."""
    return next((i + 1 for i, a in enumerate(curve) if a >= reference - gap), None)


# ── the privacy and robustness study (`benchmarks/fedpriv.py`) ────────────────────────────────
PRIV_FORMAT = "hybnn-fedpriv"
PRIV_VERSION = 1
"""Body: "study" (dp or byzantine), "codes", "task", "clients", "fraction", "rounds",
"local_epochs", "lr", "seed", "threads", "engine", "dp_clip", "byzantine_share",
"study_commit", and "runs"
{"plain" | "dp/<noise>" | "byzantine/<rule>": run}, each run holding what `benchmarks/fedscale.py`
records of one (`summarize`: "accuracy_curve", "test_acc", bytes, "seconds_per_round",
"wall_seconds", "config", ...) and "command". "plain": no DP, no attackers, FedAvg (the reference
of both studies); "dp/<σ>": DP with noise multiplier σ and clip "dp_clip"; "byzantine/<rule>":
a "byzantine_share" of sign-flipping clients, aggregated by <rule>."""


def read_priv(path: Path) -> dict:
    """A privacy and robustness study file, checked for format and version."""
    return _read_versioned(path, PRIV_FORMAT, PRIV_VERSION, "privacy and robustness study")
