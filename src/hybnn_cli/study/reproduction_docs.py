"""The reproduction study's generated blocks in the README and docs: its settings, the accuracy
table, the settings tried on validation, every seed's numbers, the `sign` baseline's collapse, the
model sizes and the Fashion-MNIST transfer, all from `benchmarks/results/reproduction.json` (the
file `hybnn reproduce` writes; `reproduction_report` draws the same file's own report).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from hybnn_cli.study.docgen import pct, renderer, source, table
from hybnn_cli.study.provenance import read_result

STUDY = "reproduction.json"


def _study(results_dir: Path) -> dict:
    return read_result(Path(results_dir) / STUDY, "hybnn-reproduction")


def entry_cell(e: dict | None) -> str:
    """A model's test accuracy over its seeds, as the study summarized it."""
    return "–" if not e else f"{100 * e['test_acc']:.2f} ± {100 * e['test_acc_std']:.2f}"


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
