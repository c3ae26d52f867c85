"""The federated benchmark's result file (`fed_benchmark` writes it; the report and the
generated docs read it): one defined, versioned format.

Body (after the provenance header of `hybnn_cli.study.provenance`): "clients", "rounds", "seeds",
"study", "study_commit", "lr_per_task" {task: lr}, "centralized_test_acc" {task: {seed: acc}},
and "runs" {"<variant>/task<t>/seed<s>": run}, where a run holds "test_acc", "best_test_acc",
"initial_test_acc", "accuracy_curve" (the global model's test accuracy after rounds 1..R),
"bytes", "valid_updates" (per round), "encoder_sha256", "config" and "seconds".
"""

from __future__ import annotations

import statistics
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.provenance import read_result

FORMAT = "hybnn-federated-benchmark"
VERSION = 2


def _read_versioned(path: Path, fmt: str, version: int | tuple[int, ...], what: str) -> dict:
    data = read_result(path, fmt)
    versions = (version,) if isinstance(version, int) else version
    if data.get("format_version") not in versions:
        raise HybnnError(f"{path}: {what} version {data.get('format_version')}, this hybnn reads "
                         f"version {' or '.join(map(str, versions))}")
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


# ── rows over several seeds (the scale study and the privacy and robustness study) ──────────
def over_seeds(per_seed: dict[str, dict]) -> dict:
    """A row's numbers over its seeds, from its runs (`per_seed` {"<seed>": run}, each run what
    `fed_runner.summarize` keeps of one `hybnn fed --json`): "seeds" (the seeds, in order),
    mean ± std over them ({"mean", "std", "values"}, `continual_runs.mean_std`) of "test_acc",
    "best_test_acc", "final_val_acc" (None when a run has no validation split) and
    "seconds_per_round" (each run's mean over its rounds); the mean of the bytes
    ("uplink_per_round", "downlink_per_round", "uplink_total", "downlink_total"); and
    "sampled_per_round" (its mean if the seeds differ)."""
    from hybnn_cli.study.continual_runs import mean_std  # imports torch: only where rows are made

    seeds = sorted(per_seed, key=int)
    runs = [per_seed[s] for s in seeds]
    row = {"seeds": [int(s) for s in seeds]}
    for field in ("test_acc", "best_test_acc", "seconds_per_round"):
        row[field] = mean_std([r[field] for r in runs])
    vals = [r.get("final_val_acc") for r in runs]
    row["final_val_acc"] = None if None in vals else mean_std(vals)
    for field in ("uplink_per_round", "downlink_per_round", "uplink_total", "downlink_total"):
        row[field] = sum(r[field] for r in runs) / len(runs)
    sampled = {r["sampled_per_round"] for r in runs}  # the same in every seed, as a rule
    row["sampled_per_round"] = (sampled.pop() if len(sampled) == 1
                                else sum(r["sampled_per_round"] for r in runs) / len(runs))
    return row


def curve_over_seeds(row: dict) -> tuple[list[float], list[float]]:
    """The mean and the std over a row's seeds of the accuracy after each round (for figures)."""
    curves = list(zip(*[r["accuracy_curve"] for r in row["per_seed"].values()], strict=True))
    return ([statistics.fmean(c) for c in curves],
            [statistics.stdev(c) if len(c) > 1 else 0.0 for c in curves])


# ── the scale study (`fed_scale`, `benchmarks/fedscale.py`) ───────────────────────────────────────
SCALE_FORMAT = "hybnn-fedscale"
SCALE_VERSION = 2
SCALE_READS = (1, 2)
"""Version 2 (several seeds). Body: "codes", "fraction", "alpha", "rounds", "local_epochs",
"seeds" (the grid's and the centralized reference's), "timing_seed" (the one seed of the engine,
SecAgg+ and memory runs), "threads", "lr_per_task" {task: lr}, "hidden_per_task" {task: width},
"study_commit", "fed_options", and
- "centralized" {"task<t>": {"epochs", "per_seed" {"<seed>": {"test_acc", "command",
  "wall_seconds", "run"}}, "seeds", "test_acc" (mean ± std over seeds)}};
- "runs" {"task<t>/<clients>/<partition>/<uplink>": a row over seeds (`over_seeds`: "seeds",
  "per_seed" {"<seed>": run}, "test_acc", "best_test_acc", "final_val_acc",
  "seconds_per_round" as {"mean", "std", "values"}, the bytes' means) + "fed_options" +
  "rounds_to_within_1pt" (`rounds_to_within_over_seeds`, against the centralized mean)};
- "earlier": grid rows a re-run with other --fed-options replaced, under key + " " + options;
- "engines" {"<engine>/task<t>/<clients>/<partition>/<uplink>/<rounds>": run},
  "secagg" {"task<t>/<clients>/<partition>/<uplink>/<rounds>/<secagg|plain>": run} and
  "memory" {"task<t>/<clients>/iid/float/<sampled per round>/<rounds>": run + "peak_rss"}:
  one run each, seed "timing_seed".
A run holds "accuracy_curve", "test_acc", "best_test_acc", "final_val_acc", "val_curve",
"uplink_per_round"/"downlink_per_round"/"uplink_total"/"downlink_total" (payload bytes, all
sampled clients), "sampled_per_round", "seconds_per_round" and "seconds_per_round_std" (mean and
std over its rounds), "wall_seconds", "mode", "config", "command" and "run"
(`provenance.run_record`).

Version 1 (one seed, still read by the docs): "seed" instead of "seeds" and "timing_seed", no
"fed_options"; each accuracy a number: a grid row is one run + "rounds_to_within_1pt" (a round or
None), the centralized reference {"test_acc", "epochs", "command"}; runs without
"seconds_per_round_std" or "run"; "memory" and "hidden_per_task" (then 128) may be absent."""


def read_scale(path: Path) -> dict:
    """A scale-study file, checked for format and version (1 or 2)."""
    return _read_versioned(path, SCALE_FORMAT, SCALE_READS, "scale study")


def rounds_to_within(curve: list[float], reference: float, gap: float) -> int | None:
    """The first round (1-based) whose accuracy is at least reference − gap, or None."""
    return next((i + 1 for i, a in enumerate(curve) if a >= reference - gap), None)


def rounds_to_within_over_seeds(curves: list[list[float]], reference: float,
                                gap: float) -> dict:
    """`rounds_to_within` of each seed's curve: "values" (None where a seed never came within),
    "reached" (how many did) and the mean ± std over those that did ("mean" and "std" None when
    none did)."""
    from hybnn_cli.study.continual_runs import mean_std

    values = [rounds_to_within(c, reference, gap) for c in curves]
    hit = [v for v in values if v is not None]
    return {**(mean_std(hit) if hit else {"mean": None, "std": None}), "values": values,
            "reached": len(hit)}


# ── the privacy and robustness study (`fed_priv`, `benchmarks/fedpriv.py`) ────────────────────────
PRIV_FORMAT = "hybnn-fedpriv"
PRIV_VERSION = 2
PRIV_READS = (1, 2)
"""Version 2 (several seeds). Body: "study" (dp or byzantine), "codes", "task", "clients",
"fraction", "rounds", "local_epochs", "lr", "seeds", "threads", "engine", "dp_clip",
"byzantine_share", "study_commit", and "runs" {"plain" | "dp/<noise>" | "byzantine/<rule>": a
row over seeds (`over_seeds`: "seeds", "per_seed" {"<seed>": run}, "test_acc",
"best_test_acc", "final_val_acc", "seconds_per_round" as {"mean", "std", "values"}, ...)}, each
run holding what `fed_priv` records of one (`fed_runner.summarize`: "accuracy_curve",
"test_acc", bytes, "seconds_per_round", "wall_seconds", "config", ...), its "command" and "run"
(`provenance.run_record`). "plain": no DP, no attackers, FedAvg (the reference of both studies);
"dp/<σ>": DP with noise multiplier σ and clip "dp_clip"; "byzantine/<rule>": a
"byzantine_share" of sign-flipping clients, aggregated by <rule>.

Version 1 (one seed, still read by the docs): "seed" instead of "seeds", and each of "runs" is
one run (+ "command", "run")."""


def read_priv(path: Path) -> dict:
    """A privacy and robustness study file, checked for format and version."""
    return _read_versioned(path, PRIV_FORMAT, PRIV_READS, "privacy and robustness study")
