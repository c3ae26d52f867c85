"""Several seeds of one (scenario, strategy): run them with checkpoints, aggregate their metrics
(mean ± std over seeds, per-seed values kept), draw the accuracy-on-seen-classes curves."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hybnn_cli.continual.sequence import ContinualConfig, SequenceData, run_sequence
from hybnn_cli.fileio import atomic_path, provenance

RESULT_FORMAT = "hybnn-continual"
RESULT_VERSION = 1
METRICS = ("final_seen_acc", "average_acc", "forgetting", "backward_transfer")


def run_name(cfg: ContinualConfig) -> str:
    return f"{cfg.scenario}-{cfg.strategy}"


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def aggregate(runs: list[dict]) -> dict:
    """Mean ± std over seeds of every final metric, on validation and test (validation alone in
    a sealed run), and of the curve."""
    out = {"memory_bytes": max(r["memory_bytes"] for r in runs),
           "train_seconds": mean_std([r["train_seconds"] for r in runs])}
    for split in [s for s in ("val", "test") if s in runs[0]]:
        out[split] = {m: mean_std([r[split][m] for r in runs]) for m in METRICS}
        curves = list(zip(*[r[split]["seen_acc_curve"] for r in runs], strict=True))
        out[split]["seen_acc_curve"] = [mean_std(list(c)) for c in curves]
    return out


def run_seeds(cfg: ContinualConfig, data: SequenceData, seeds: list[int], out: Path,
              resume: bool = False, on_task: Callable | None = None,
              on_epoch: Callable | None = None) -> dict:
    """Run every seed (checkpoint `<out>/<scenario>-<strategy>-seed<s>.pt` after each task),
    then write and return `<out>/<scenario>-<strategy>.json`."""
    out = Path(out)
    runs = []
    for seed in seeds:
        c = replace(cfg, seed=seed)
        seq = run_sequence(c, data, out / f"{run_name(c)}-seed{seed}.pt", resume=resume,
                           on_task=(lambda t, h, s=seed: on_task(s, t, h)) if on_task else None,
                           on_epoch=(lambda t, e, m, s=seed: on_epoch(s, t, e, m))
                           if on_epoch else None)
        runs.append({"seed": seed, **seq.summary(), "history": seq.history})
    config = {**cfg.to_dict(), "seeds": seeds}
    config.pop("seed")
    result = {**provenance(RESULT_FORMAT, RESULT_VERSION, config, seeds),
              "encoder_sha256": data.encoder_sha256, "tasks": [list(t) for t in data.tasks],
              "n_train": len(data.train.labels), "n_val": len(data.val.labels),
              **({"n_test": len(data.test.labels)} if data.test is not None else {}),
              **aggregate(runs), "runs": runs}
    path = out / f"{run_name(cfg)}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(path)
    return result


def plot_curves(curves: dict[str, list[dict]], path: Path, title: str,
                panels: list[str] | None = None) -> Path:
    """Accuracy on all seen classes after each task, one line per name (± std band); `curves`
    maps "panel/line" (or "line") to a list of {"mean", "std"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = panels or sorted({k.split("/")[0] for k in curves if "/" in k}) or [""]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False,
                             sharey=True)
    for ax, panel in zip(axes[0], panels, strict=True):
        for key, curve in curves.items():
            if panel and not key.startswith(panel + "/"):
                continue
            x = range(1, len(curve) + 1)
            m = [100 * p["mean"] for p in curve]
            s = [100 * p["std"] for p in curve]
            ax.plot(x, m, marker="o", label=key.split("/")[-1])
            ax.fill_between(x, [a - b for a, b in zip(m, s, strict=True)],
                            [a + b for a, b in zip(m, s, strict=True)], alpha=0.2)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("tasks learned")
        ax.set_xticks(list(range(1, 1 + max(len(c) for c in curves.values()))))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy on seen classes (%)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
