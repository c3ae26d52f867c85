"""The privacy and robustness study (`benchmarks/fedpriv.py`): FedHyBNN with differential
privacy and with Byzantine clients, on one configuration, each setting once per seed through
`hybnn fed ... --json` on the in-process engine; it runs, records and renders its own blocks.

- DP (`dp`): the global test accuracy against the noise multiplier σ at one clipping norm, next
  to the same run without DP ("plain");
- Byzantine (`byzantine`): a share of the clients sends sign-flipped, amplified updates; plain
  FedAvg against Flower's Krum, FedMedian and FedTrimmedAvg.
The learning rate is the one the reproduction study chose on validation for the task. The file
(`fed_records.PRIV_FORMAT`, one per study) is written after every run, each setting with its runs
and the mean ± std over the seeds (`fed_records.over_seeds`); a rerun with the same settings
keeps the runs made by the same code with the same command. The blocks `fedpriv-dp` and
`fedpriv-byzantine` of the docs render the files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hybnn_cli.study.docgen import (
    acc_cell,
    partial_seeds,
    renderer,
    seconds_cell,
    seeds_text,
    source,
    table,
)
from hybnn_cli.study.fed_records import (
    PRIV_FORMAT,
    PRIV_VERSION,
    curve_over_seeds,
    over_seeds,
    read_priv,
)
from hybnn_cli.study.fed_runner import FEDAVG, Runs, run_env, save_accuracy_figure
from hybnn_cli.study.provenance import end_run, read_result, start_run, write_result


# ── the study ─────────────────────────────────────────────────────────────────────────────────
def run_priv_study(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run the DP or the Byzantine study (`args.study`) with the options of
    `benchmarks/fedpriv.py` (`args`; `out` and `figure` set), recorded as the command `argv`;
    returns the file's body."""
    this_run = start_run(args.out, argv)
    models = args.models / args.study
    models.mkdir(parents=True, exist_ok=True)
    runs = Runs(run_env(args.threads), this_run)
    body = priv_body(args)
    changed = False

    def save() -> None:
        write_result(args.out, PRIV_FORMAT, PRIV_VERSION, body, argv=argv, run=end_run(this_run))
        plot(body, args.figure)

    for key, extra in priv_settings(args):
        kept = body["runs"].get(key, {}).get("per_seed", {})
        per_seed = {}
        for seed in body["seeds"]:
            cmd = ["fed", *FEDAVG, "--codes", str(args.codes), "--task", args.task,
                   "--clients", str(args.clients), "--fraction", repr(args.fraction),
                   "--rounds", str(args.rounds), "--local-epochs", str(args.local_epochs),
                   "--lr", repr(body["lr"]), "--seed", str(seed), "--threads", str(args.threads),
                   "--engine", "inprocess", *extra, "--out", str(models / "last.pt"), "--json"]
            per_seed[str(seed)], ran = runs.run(cmd, kept.get(str(seed)))
            if not ran:
                continue  # made by this code, with this command
            body["runs"][key] = {**over_seeds(per_seed), "per_seed": per_seed}
            save()
            r = per_seed[str(seed)]
            print(f"{key} seed {seed}: {100 * r['test_acc']:.2f}% after {args.rounds} "
                  f"rounds ({r['wall_seconds']:.0f} s)", flush=True)
        changed |= per_seed != kept
        body["runs"][key] = {**over_seeds(per_seed), "per_seed": per_seed}
        acc = body["runs"][key]["test_acc"]
        print(f"{key}: {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}% over seeds "
              f"{args.seeds}", flush=True)
    if changed:  # a seed dropped from a row is gone from the file too
        save()
    return body


def priv_body(args: argparse.Namespace) -> dict:
    """The file's body before the runs: the settings, the learning rate the reproduction study
    chose, and the runs of the file at `args.out` when it holds these settings (else none)."""
    study = read_result(args.reproduction, "hybnn-reproduction")
    lr = next(row["hybnn"]["chosen"]["lr"] for row in study["tasks"]
              if row["task"] == f"task{args.task}")
    settings = {"study": args.study, "codes": str(args.codes), "task": args.task,
                "clients": args.clients, "fraction": args.fraction, "rounds": args.rounds,
                "local_epochs": args.local_epochs, "lr": lr, "threads": args.threads,
                "engine": "inprocess", "dp_clip": args.dp_clip,
                "byzantine_share": args.byzantine}
    old = read_priv(args.out) if args.out.is_file() else {}
    if old and (old["format_version"] != PRIV_VERSION
                or any(old.get(k) != v for k, v in settings.items())):
        old = {}  # an older format or other settings: start over
    return {**settings, "seeds": [int(x) for x in args.seeds.split(",")],
            "study_commit": study["commit"], "runs": old.get("runs", {})}


def priv_settings(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The study's settings: (key in "runs", extra `hybnn fed` options), "plain" first."""
    if args.study == "dp":
        return [("plain", [])] + [(f"dp/{s}", ["--dp-noise", s, "--dp-clip", repr(args.dp_clip)])
                                  for s in args.noises.split(",")]
    return [("plain", [])] + [(f"byzantine/{rule}",
                               ["--aggregate", rule, "--byzantine", repr(args.byzantine)])
                              for rule in args.rules.split(",")]


def plot(body: dict, path: Path) -> None:
    """Accuracy per round of every setting, mean over seeds ± std, at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    title = (f"DP, clip {body['dp_clip']:g}" if body["study"] == "dp"
             else f"{body['byzantine_share']:.0%} sign-flipping clients")
    prefix = body["study"] + "/"

    def draw(row: dict, **style) -> None:  # the mean curve over the row's seeds, ± std
        m, s = ([100 * a for a in c] for c in curve_over_seeds(row))
        x = range(1, len(m) + 1)
        line, = ax.plot(x, m, lw=1, **style)
        ax.fill_between(x, [a - b for a, b in zip(m, s, strict=True)],
                        [a + b for a, b in zip(m, s, strict=True)], alpha=0.15,
                        color=line.get_color())

    if "plain" in body["runs"]:
        draw(body["runs"]["plain"], color="k", label="no DP, no attack")
    for key, row in sorted(body["runs"].items()):
        if not key.startswith(prefix):
            continue
        label = f"σ = {key.removeprefix(prefix)}" if prefix == "dp/" else key.removeprefix(prefix)
        draw(row, label=label)
    seeds = ", ".join(map(str, body["seeds"]))
    ax.set_title(f"task {body['task']}, {body['clients']} clients, {title} (seeds {seeds})",
                 fontsize=9)
    ax.set_xlabel("round")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_accuracy_figure(fig, ax, path, "global test accuracy (%), mean ± std")


# ── its blocks ────────────────────────────────────────────────────────────────────────────────
def _priv_setting(r: dict) -> str:
    sampled = max(1, round(r["fraction"] * r["clients"]))
    return (f"task {r['task']}, {r['clients']} clients, {r['fraction']:.0%} sampled per round "
            f"({sampled}), {r['rounds']} rounds × {r['local_epochs']} local epochs, learning "
            f"rate {r['lr']:g} (chosen on validation by the reproduction study), "
            f"{seeds_text(r)}, {r['engine']} engine")


def _priv_row(run: dict, r: dict) -> list[str]:
    """A setting's final and best-round accuracy and seconds per round: one run's (version 1)
    or mean ± std over its seeds (version 2)."""
    return [acc_cell(run["test_acc"]) + partial_seeds(run, r), acc_cell(run["best_test_acc"]),
            seconds_cell(run["seconds_per_round"])]


@renderer("fedpriv-dp")
def fedpriv_dp(results_dir: Path) -> str:
    name = "feddp.json"
    r = read_priv(Path(results_dir) / name)
    sampled = max(1, round(r["fraction"] * r["clients"]))
    rows = []
    if "plain" in r["runs"]:
        rows.append(["no DP", "–", "–", *_priv_row(r["runs"]["plain"], r)])
    for key, run in sorted(((k, v) for k, v in r["runs"].items() if k.startswith("dp/")),
                           key=lambda kv: float(kv[0].removeprefix("dp/"))):
        sigma = float(key.removeprefix("dp/"))
        rows.append([f"{sigma:g}", f"{r['dp_clip']:g}", f"{sigma * r['dp_clip'] / sampled:.3g}",
                     *_priv_row(run, r)])
    return (_priv_setting(r) + "; DP with client-side fixed clipping at norm "
            f"{r['dp_clip']:g} (DP coordinates):\n\n"
            + table(["noise multiplier σ", "clip C", "noise std σ·C/m", "final (%)",
                     "best round (%)", "s/round"], rows) + "\n\n" + source(name, r))


@renderer("fedpriv-byzantine")
def fedpriv_byzantine(results_dir: Path) -> str:
    name = "fedbyzantine.json"
    r = read_priv(Path(results_dir) / name)
    rows = []
    if "plain" in r["runs"]:
        rows.append(["fedavg, no attackers", *_priv_row(r["runs"]["plain"], r)])
    for key, run in sorted((k, v) for k, v in r["runs"].items() if k.startswith("byzantine/")):
        rows.append([f"{key.removeprefix('byzantine/')}, {r['byzantine_share']:.0%} attackers",
                     *_priv_row(run, r)])
    return (_priv_setting(r) + f"; {r['byzantine_share']:.0%} of the clients send "
            "sign-flipped, amplified updates (global − 10·update):\n\n"
            + table(["aggregation", "final (%)", "best round (%)", "s/round"], rows)
            + "\n\n" + source(name, r))
