"""The reproduction report: the markdown tables and PNG figures drawn from `reproduction.json`
(and, for the federated curves, from the federated benchmark files `federated*.json` beside it,
format `study.fed_records`), without retraining anything.

One figure per claim:
- `reproduction-fig4-accuracy.png`: accuracy per epoch, per task, HyBNN and the binary CNNs
  (the paper's Figure 4); `reproduction-fig5-loss.png`: the same for the loss (Figure 5);
- `reproduction-fig6-accuracy.png`: final test accuracy per task and model (Figure 6);
- `reproduction-fig7-federated.png`: federated accuracy per round (Figure 7), when a federated
  results file exists;
- `reproduction-cost.png`: training wall time and time to reach 99% of the final accuracy;
- `reproduction-fashion.png`: the Fashion-MNIST transfer study.
"""

from __future__ import annotations

import json
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path
from hybnn_cli.study.docgen import table

MODEL_COLORS = {"hybnn": "tab:blue", "sign": "tab:red", "threshold": "tab:green",
                "none": "tab:orange"}
MODEL_LABELS = {"hybnn": "HyBNN (BNN on codes)", "sign": "binary CNN, sign input",
                "threshold": "binary CNN, threshold input", "none": "binary CNN, real input"}


# ── reading ───────────────────────────────────────────────────────────────────────────────────
def load_results(path) -> dict:
    from hybnn_cli.study.reproduce import RESULTS_FORMAT  # the study's, which wrote the file

    path = Path(path)
    if not path.is_file():
        raise HybnnError(f"{path}: no such results file; run `hybnn reproduce` first")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HybnnError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise HybnnError(f"{path}: not a reproduction results file (format "
                         f"{results.get('format') if isinstance(results, dict) else None!r}, "
                         f"expected {RESULTS_FORMAT!r})")
    return results


def find_federated(results_dir: Path) -> list[tuple[str, list[dict]]]:
    """(panel title, curves) for each federated benchmark file (`federated*.json`, the format of
    `study.fed_records`) in the folder: one panel per variant, one curve per task and seed."""
    from hybnn_cli.study.fed_records import FORMAT, curves_by_variant, read_federated

    found = []
    for p in sorted(Path(results_dir).glob("federated*.json")):
        try:
            if json.loads(p.read_text()).get("format") != FORMAT:
                continue
        except (ValueError, UnicodeDecodeError, OSError, AttributeError):
            continue
        panels = curves_by_variant(read_federated(p))
        found += [(f"{p.stem}: {v}", c) for v, c in panels.items()]
    return found


# ── tables ────────────────────────────────────────────────────────────────────────────────────
def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _acc(run: dict | None):
    """A model's test accuracy (the mean over seeds); None for a stage not done (see
    `reproduce --cached-only`)."""
    return run["test_acc"] if run else None


def _pct_sd(entry: dict | None) -> str:
    """Mean ± standard deviation of a model's test accuracy over its seeds, in %."""
    if not entry:
        return "–"
    return f"{100 * entry['test_acc']:.2f} ± {100 * entry['test_acc_std']:.2f}%"


def _nan(x) -> float:
    return float("nan") if x is None else x


def _s(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def accuracy_table(results: dict) -> str:
    bins = results["config"]["binarizations"]
    header = ["Task", "Classes", "Test images (class shares)", "HyBNN"] + [
        f"CNN `{b}`" for b in bins]
    rows = []
    for t in results["tasks"]:
        shares = " / ".join(f"{100 * s:.1f}%" for s in t["test_class_shares"] or [])
        rows.append([t["task"], " vs ".join(map(str, t["classes"])), f"{t['n_test']} ({shares})",
                     _pct_sd(t["hybnn"])] + [_pct_sd(t["baselines"].get(b)) for b in bins])
    return table(header, rows)


def tuning_table(results: dict) -> str:
    """Each model's candidate settings with the first seed's validation accuracy; the chosen
    one in bold."""
    rows = []
    entries = [(t["task"], "HyBNN", t["hybnn"]) for t in results["tasks"]]
    entries += [(t["task"], f"CNN `{b}`", e) for t in results["tasks"]
                for b, e in t["baselines"].items()]
    if results.get("ten_class"):
        entries.append(("all", "HyBNN 10 classes", results["ten_class"]))
    for task, model, e in entries:
        if not e:
            continue
        cells = []
        for c in e["tuning"]:
            setting = ", ".join(f"{k} {v:g}" for k, v in c.items() if k != "val_acc")
            cell = f"{setting}: {_pct(c['val_acc'])}"
            chosen = all(c.get(k) == v for k, v in e["chosen"].items())
            cells.append(f"**{cell}**" if chosen else cell)
        rows.append([task, model, "; ".join(cells)])
    return table(["Task", "Model", "Validation accuracy per candidate (first seed; chosen in "
                  "bold)"], rows)


def sign_table(results: dict) -> str:
    """The sign baseline's collapse: what it predicts against what the test pair holds."""
    rows = []
    for t in results["tasks"]:
        b = t["baselines"].get("sign")
        if b is None:
            continue
        pred = b["predicted_class_counts"]
        counts = b["test_class_counts"]
        only = [i for i, c in enumerate(pred) if c]
        constant = len(only) == 1
        share = counts[only[0]] / sum(counts) if constant else None
        distinct = t.get("distinct_test_inputs") or {}
        rows.append([t["task"], distinct.get("sign", "–"),
                     ", ".join(f"{c}: {n}" for c, n in zip(t["classes"], counts, strict=True)),
                     ", ".join(f"{c}: {n}" for c, n in zip(t["classes"], pred, strict=True)),
                     f"{t['classes'][only[0]]} (always)" if constant else "both",
                     _pct(share), _pct(b["test_acc"])])
    return table(["Task", "Different test inputs after sign", "Test images per class",
                  "Predictions per class", "Predicted class", "Its share of the test pair",
                  "Accuracy (sign)"], rows)


def cpu_to_99(run: dict) -> float | None:
    """CPU seconds until the epoch reaching 99% of the final accuracy, estimated as the run's
    CPU time times the share of its training wall time spent up to that epoch."""
    cpu, wall = run.get("cpu_seconds"), run.get("train_epoch_seconds")
    if cpu is None or not wall:
        return None
    return cpu * run["time_to_99"]["seconds"] / wall


def _cost_runs(t: dict) -> list[tuple[str, dict]]:
    return [("hybnn", t["hybnn"])] + list(t["baselines"].items())


def cost_table(results: dict) -> str:
    rows = []
    for t in results["tasks"]:
        for name, r in _cost_runs(t):
            if r is None:
                continue
            label = "HyBNN: BNN on codes" if name == "hybnn" else f"binary CNN `{name}`"
            rows.append([t["task"], label, len(r["history"]), _s(r.get("cpu_seconds")),
                         _s(r["train_seconds"]), r["time_to_99"]["epoch"],
                         _s(r["time_to_99"]["seconds"]), _s(cpu_to_99(r)),
                         _pct(r["runs"][0]["test_acc"])])
    return table(["Task", "Model", "Epochs", "CPU s", "Wall s",
                  "Epoch reaching 99% of final val. acc.", "Training wall s to it",
                  "CPU s to it (est.)", "Test accuracy"], rows)


def sizes_table(results: dict) -> str:
    names = {"hybnn_task_bnn": "HyBNN task BNN (200→128→2)",
             "hybnn_ten_class_bnn": "HyBNN 10-class BNN (200→128→10)",
             "vae_encoder": "VAE encoder (float, frozen, shared by all tasks)",
             "binary_cnn": "binary CNN baseline (→2)"}
    rows = []
    for key, s in results["model_sizes"].items():
        tot = s["total"]
        rows.append([names.get(key, key), f"{tot['binary_params']:,}", f"{tot['float_params']:,}",
                     f"{tot['float_buffers']:,}", f"{tot['bits']:,}", _kib(tot["bytes"])])
    return table(["Model", "Binary parameters (1 bit)", "Float parameters (32 bit)",
                  "Float BN statistics (32 bit)", "Bits", "Size"], rows)


def layers_table(summary: dict) -> str:
    rows = [[r["name"], r["type"], f"{r['binary_params']:,}", f"{r['float_params']:,}",
             f"{r['float_buffers']:,}", _kib(r["bytes"])]
            for r in summary["layers"] + [summary["total"]]]
    return table(["Layer", "Type", "Binary params", "Float params", "Float BN statistics",
                  "Size"], rows)


def _kib(nbytes: float) -> str:
    return f"{nbytes / 1024:.2f} KiB"


def fashion_table(results: dict) -> str:
    rows = []
    for p in results["fashion"]["pairs"]:
        rows.append([" vs ".join(p["class_names"]), " vs ".join(map(str, p["classes"])),
                     _pct(_acc(p["mnist_vae"])), _pct(_acc(p["fashion_vae"])),
                     _pct(_acc(p["threshold"]))])
    return table(["Pair", "Classes", "BNN on codes, MNIST-pretrained VAE",
                  "BNN on codes, Fashion-pretrained VAE", "binary CNN `threshold` on images"],
                 rows)


def markdown(results: dict, figures: dict[str, Path] | None = None) -> str:
    cfg = results["config"]
    seeds = ", ".join(map(str, cfg["seeds"]))
    out = ["# HyBNN reproduction\n",
           f"Command: `{results.get('command') or 'hybnn reproduce'}`  ",
           f"Created {results['date']} by hybnn {results['hybnn_version']} at commit "
           f"{str(results['commit'])[:12]}{' (uncommitted changes)' if results['dirty'] else ''}"
           f", seeds {seeds}; this run took {results['study_seconds'] / 60:.1f} min (stages "
           f"reused from the cache are not counted here; each one's time, measured when it ran, "
           f"is in the tables).  ",
           f"Settings: VAE {cfg['vae_epochs']} epochs, task BNN {cfg['bnn_epochs']} epochs, "
           f"binary CNN {cfg['baseline_epochs']} epochs"
           + (f", first {cfg['limit']} images of each split only" if cfg.get("limit") else "")
           + f"; {100 * cfg['val_fraction']:.0f}% of each class of the training split held out "
           f"for validation.\n",
           "## Test accuracy on the MNIST digit pairs\n",
           f"Mean ± standard deviation over seeds {seeds} (seed s: VAE s, models trained with "
           f"seed s), each model at the setting chosen on validation (below).\n",
           accuracy_table(results), "", "## Settings chosen on validation\n",
           tuning_table(results), ""]
    if any("sign" in t["baselines"] for t in results["tasks"]):
        out += ["## Why the `sign` baseline scores at chance\n", sign_table(results), ""]
    ten = results.get("ten_class")
    if ten:
        out += ["## 10 classes on the same codes\n",
                table(["Model", "Epochs", "Test accuracy", "CPU s (first seed)", "Wall s"],
                      [[f"BNN 200→{ten['chosen']['hidden']}→10 on MNIST codes, lr "
                        f"{ten['chosen']['lr']:g}", len(ten["history"]), _pct_sd(ten),
                        _s(ten.get("cpu_seconds")), _s(ten["train_seconds"])]]), ""]
    vae, codes = results["vaes"][0], results["codes"][0]
    out += ["## Training cost\n"]
    if vae and codes:
        out += [f"One-time cost of HyBNN, shared by every task: VAE pretraining "
                f"{vae['train_seconds']:.0f} s wall ({vae['epochs']} epochs), code extraction "
                f"{codes['seconds']:.0f} s wall ({codes['n_train'] + codes['n_test']} images); "
                f"first seed. Per-model costs below are the first seed's runs.\n"]
    out += [cost_table(results), "", "## Model sizes\n", sizes_table(results), "",
            "Task BNN, per layer:\n", layers_table(results["model_sizes"]["hybnn_task_bnn"]), "",
            "Binary CNN, per layer:\n", layers_table(results["model_sizes"]["binary_cnn"]), ""]
    if results.get("fashion"):
        fv = results["fashion"]["vae"]
        out += ["## Does the encoder transfer? Fashion-MNIST pairs\n"]
        if vae and fv:
            out += [f"VAEs: MNIST {vae['epochs']} epochs (test reconstruction "
                    f"{vae['final']['test_recon']:.1f} nats on MNIST); Fashion-MNIST "
                    f"{fv['epochs']} epochs (test reconstruction {fv['final']['test_recon']:.1f} "
                    f"nats on Fashion-MNIST). Task BNNs {cfg['bnn_epochs']} epochs, binary CNN "
                    f"{cfg['baseline_epochs']} epochs.\n"]
        out += [fashion_table(results), ""]
    if results.get("missing"):
        out += ["## Stages not done when these results were gathered\n"]
        out += [f"- {m}" for m in results["missing"]] + [""]
    if figures:
        out += ["## Figures\n"] + [f"![{name}]({p.name})" for name, p in figures.items()] + [""]
    return "\n".join(out)


# ── figures ───────────────────────────────────────────────────────────────────────────────────
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _curves(results: dict, path: Path, metric: str, ylabel: str, title: str) -> Path:
    plt = _plt()
    from matplotlib import ticker

    tasks = results["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.6), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, t in zip(axes[0], tasks, strict=True):
        runs = [("hybnn", t["hybnn"])] + list(t["baselines"].items())
        for name, r in runs:
            if r is None:
                continue
            ep = [m["epoch"] for m in r["history"]]
            marker = "." if len(ep) <= 20 else None
            ax.plot(ep, [m[f"val_{metric}"] for m in r["history"]], color=MODEL_COLORS[name],
                    marker=marker, label=f"{MODEL_LABELS[name]}, validation")
            ax.plot(ep, [m[f"train_{metric}"] for m in r["history"]], color=MODEL_COLORS[name],
                    linestyle="--", linewidth=0.9, marker=marker,
                    label=f"{MODEL_LABELS[name]}, train")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%d"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(f"{t['task']}: {' vs '.join(map(str, t['classes']))}")
        ax.set_xlabel("epoch (log scale)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    if metric == "loss":
        axes[0][0].set_yscale("log")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float]], colors: dict,
                  labels: dict) -> None:
    n = len(series)
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [100 * v for v in values], width, color=colors[name],
                      label=labels[name])
        ax.bar_label(bars, labels=[f"{100 * v:.1f}" if v == v else "not run" for v in values],
                     fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(groups)), groups)


def fig_accuracy_bars(results: dict, path: Path) -> Path:
    plt = _plt()
    tasks = results["tasks"]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    series = {"hybnn": [_nan(_acc(t["hybnn"])) for t in tasks]}
    for b in results["config"]["binarizations"]:
        series[b] = [_nan(_acc(t["baselines"].get(b))) for t in tasks]
    groups = [f"{t['task']}\n{' vs '.join(map(str, t['classes']))}" for t in tasks]
    _grouped_bars(ax, groups, series, MODEL_COLORS, MODEL_LABELS)
    for g, t in enumerate(tasks):
        if t["test_class_shares"]:
            ax.hlines(100 * max(t["test_class_shares"]), g - 0.45, g + 0.45, colors="black",
                      linestyles=":", label="larger class's share of the test pair"
                      if g == 0 else None)
    ax.set_ylim(0, 112)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy per task (mean over seeds): HyBNN against the binary CNNs")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    return _save(fig, path)


def fig_cost(results: dict, path: Path) -> Path:
    plt = _plt()
    from matplotlib import ticker

    tasks = results["tasks"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    names = ["hybnn"] + list(results["config"]["binarizations"])
    groups = [t["task"] for t in tasks]
    for ax, what, ylabel in [(axes[0], "all", "CPU seconds (log scale)"),
                             (axes[1], "t99", "CPU seconds (log scale)")]:
        n = len(names)
        width = 0.8 / n
        lowest = float("inf")
        for i, name in enumerate(names):
            runs = [t["hybnn"] if name == "hybnn" else t["baselines"].get(name) for t in tasks]
            vals = [v if r and (v := r.get("cpu_seconds") if what == "all" else cpu_to_99(r))
                    else float("nan") for r in runs]
            xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, vals, width, color=MODEL_COLORS[name], label=MODEL_LABELS[name])
            lowest = min([lowest, *(v for v in vals if v == v)])
        ax.set_xticks(range(len(groups)), groups)
        ax.set_yscale("log")
        if lowest < float("inf"):
            ax.set_ylim(bottom=lowest / 2)
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(f"Whole training run: BNN {results['config']['bnn_epochs']} epochs on "
                      f"codes, CNN {results['config']['baseline_epochs']} epochs on images",
                      fontsize=9)
    axes[1].set_title("Until the epoch reaching 99% of the final validation accuracy (est.)",
                      fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(f"Training cost in CPU time, {results['config']['threads']} torch thread(s) "
                 f"(excluding the one-time VAE pretraining and code extraction)")
    return _save(fig, path)


def fig_fashion(results: dict, path: Path) -> Path:
    plt = _plt()
    pairs = results["fashion"]["pairs"]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    series = {k: [_nan(_acc(p[k])) for p in pairs] for k in ("mnist_vae", "fashion_vae",
                                                                  "threshold")}
    colors = {"mnist_vae": "tab:blue", "fashion_vae": "tab:purple", "threshold": "tab:green"}
    labels = {"mnist_vae": "BNN on codes, VAE pretrained on MNIST",
              "fashion_vae": "BNN on codes, VAE pretrained on Fashion-MNIST",
              "threshold": "binary CNN on images, threshold input"}
    groups = [" vs\n".join(p["class_names"]) for p in pairs]
    _grouped_bars(ax, groups, series, colors, labels)
    ax.set_ylim(0, 112)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Encoder transfer: Fashion-MNIST pairs")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    return _save(fig, path)


def fig_federated(found: list[tuple[str, list[dict]]], path: Path) -> Path:
    """One panel per federated results file, one curve per run (task) in it."""
    plt = _plt()
    cols = min(3, len(found))
    rows = (len(found) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False,
                             sharey=True)
    for ax, (fname, curves) in zip(axes.flat, found, strict=False):
        for c in curves:
            label = c["label"].removeprefix(Path(fname).stem).strip() or c["label"]
            ax.plot(c["rounds"], [100 * a for a in c["acc"]], marker="." if len(curves) < 6
                    else None, linewidth=0.9, label=label)
        ax.set_title(Path(fname).stem, fontsize=10)
        ax.set_xlabel("federated round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=3)
    for ax in axes[:, 0]:
        ax.set_ylabel("global model test accuracy (%)")
    for ax in list(axes.flat)[len(found):]:
        ax.axis("off")
    fig.suptitle("Federated training (FedHyBNN, Figure 7): accuracy per round")
    fig.tight_layout()
    return _save(fig, path)


def write_report(results: dict, out_dir: Path) -> dict[str, Path]:
    """Draw every figure the results allow and the markdown table; returns name → path."""
    out_dir = Path(out_dir)
    figs: dict[str, Path] = {}
    if results["tasks"]:
        figs["Figure 4: accuracy per epoch"] = _curves(
            results, out_dir / "reproduction-fig4-accuracy.png", "acc", "accuracy",
            "Accuracy per epoch (first seed): HyBNN (BNN on codes) against the binary CNN")
        figs["Figure 5: loss per epoch"] = _curves(
            results, out_dir / "reproduction-fig5-loss.png", "loss", "cross-entropy loss",
            "Loss per epoch (first seed): HyBNN (BNN on codes) against the binary CNN")
        figs["Figure 6: test accuracy per task"] = fig_accuracy_bars(
            results, out_dir / "reproduction-fig6-accuracy.png")
        figs["Training cost"] = fig_cost(results, out_dir / "reproduction-cost.png")
    found = find_federated(out_dir)
    if found:
        figs["Figure 7: federated accuracy per round"] = fig_federated(
            found, out_dir / "reproduction-fig7-federated.png")
    if results.get("fashion"):
        figs["Fashion-MNIST transfer"] = fig_fashion(results, out_dir / "reproduction-fashion.png")
    md = out_dir / "reproduction.md"
    with atomic_path(md) as tmp:
        tmp.write_text(markdown(results, figs))
    return {**figs, "table": md}
