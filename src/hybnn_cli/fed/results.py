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


def read_federated(path: Path) -> dict:
    """A federated benchmark file, checked for format and version."""
    data = read_result(path, FORMAT)
    if data.get("format_version") != VERSION:
        raise HybnnError(f"{path}: federated benchmark version {data.get('format_version')}, "
                         f"this hybnn reads version {VERSION}")
    return data


def curves_by_variant(data: dict) -> dict[str, list[dict]]:
    """{variant: [{"label": "task<t> seed<s>", "rounds": [1..R], "acc": [...]}, ...]}."""
    panels: dict[str, list[dict]] = {}
    for key, run in sorted(data["runs"].items()):
        variant, task, seed = key.split("/")
        curve = run["accuracy_curve"]
        panels.setdefault(variant, []).append(
            {"label": f"{task} {seed}", "rounds": list(range(1, len(curve) + 1)), "acc": curve})
    return panels
