"""The federated benchmark (`benchmarks/federated.py`): FedHyBNN against centralized training, on
the codes and settings of the reproduction study; it runs, records and renders its own blocks.

For each seed s of the study and each task, `hybnn fed --json` on the codes of VAE s, with seed s
and the learning rate the study chose for that task's BNN on validation, in the variants
`VARIANTS` (IID, Dirichlet label skew, sign-bit uplink). Centralized numbers are the study's own
HyBNN runs (same codes, seeds and learning rate). The file (`fed_records.FORMAT`) is written after
every run; a rerun skips the runs made by the same code with the same command. The blocks
`federated-table` and `federated-band` of the docs render it.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.docgen import mean_sd, renderer, source, table
from hybnn_cli.study.fed_records import FORMAT, VERSION, read_federated
from hybnn_cli.study.fed_runner import FEDAVG, hybnn, run_env
from hybnn_cli.study.provenance import (
    end_run,
    read_result,
    run_record,
    same_code,
    start_run,
    write_result,
)

VARIANTS = {
    "iid": [],
    "dirichlet": ["--partition", "dirichlet", "--alpha", "0.5"],
    "bits": ["--uplink", "bits"],
}


# ── the study ─────────────────────────────────────────────────────────────────────────────────
def run_fed_benchmark(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run the federated benchmark with the options of `benchmarks/federated.py` (`args`),
    recorded as the command `argv`; returns the file's body."""
    this_run = start_run(args.out, argv)
    variants = args.variants.split(",")
    for variant in variants:
        if variant not in VARIANTS:
            raise HybnnError(f"unknown variant {variant!r}: use {', '.join(VARIANTS)}")
    study = read_result(args.study, "hybnn-reproduction")
    codes, lrs, central = study_inputs(study, args.work)
    args.models.mkdir(parents=True, exist_ok=True)
    env = run_env(1)
    old = read_federated(args.out) if args.out.is_file() else {}
    body = {"clients": args.clients, "rounds": args.rounds, "study": str(args.study),
            "study_commit": study["commit"], "seeds": study["config"]["seeds"],
            "lr_per_task": lrs, "centralized_test_acc": central, "runs": old.get("runs", {})}
    runs = body["runs"]

    def save() -> None:
        write_result(args.out, FORMAT, VERSION, body, argv=argv, run=end_run(this_run))

    for variant in variants:
        for task in args.tasks.split(","):
            for seed, codes_path in codes.items():
                key = f"{variant}/task{task}/seed{seed}"
                cmd = command(variant, codes_path, task, seed, lrs[task], args,
                              args.models / f"fed-{variant}-task{task}-seed{seed}.pt")
                old_row = runs.get(key, {})
                if (same_code(old_row.get("run"), this_run)
                        and old_row.get("command") == "hybnn " + shlex.join(cmd)):
                    continue  # made by this code, with this command
                row_run = run_record()
                res, secs = hybnn(cmd, env)
                runs[key] = {**summarize_federated(res), "command": "hybnn " + shlex.join(cmd),
                             "seconds": round(secs, 1), "run": end_run(row_run)}
                save()
                print(f"{key}: {100 * runs[key]['test_acc']:.2f}% "
                      f"({runs[key]['seconds']:.0f} s)", flush=True)
    save()
    return body


def command(variant: str, codes: Path, task: str, seed: int, lr: float,
            args: argparse.Namespace, out: Path) -> list[str]:
    return ["fed", *FEDAVG, "--codes", str(codes), "--task", task, "--clients", str(args.clients),
            "--rounds", str(args.rounds), "--seed", str(seed), "--lr", repr(lr),
            *VARIANTS[variant], "--out", str(out), "--json"]


def summarize_federated(res: dict) -> dict:
    """What the file keeps of one `hybnn fed --json` (`res`)."""
    rounds = res["rounds"]
    return {"test_acc": res["final_test_acc"], "best_test_acc": res["best_test_acc"],
            "initial_test_acc": res["initial_test_acc"],
            "accuracy_curve": res["accuracy_curve"], "bytes": res["bytes"],
            "valid_updates": [r["valid_updates"] for r in rounds],
            "encoder_sha256": res["encoder_sha256"], "config": res["config"]}


def study_inputs(study: dict, work: Path) -> tuple[dict, dict, dict]:
    """Per seed the codes file; per task the chosen lr and the centralized test accuracies."""
    seeds = study["config"]["seeds"]
    codes = {s: work / c["path"] for s, c in zip(seeds, study["codes"], strict=True)}
    lrs, central = {}, {}
    for row in study["tasks"]:
        h, task = row["hybnn"], row["task"].removeprefix("task")
        lrs[task] = h["chosen"]["lr"]
        central[task] = {str(r["seed"]): r["test_acc"] for r in h["runs"]}
    return codes, lrs, central


# ── its blocks ────────────────────────────────────────────────────────────────────────────────
FED = "federated.json"  # format `fed_records.FORMAT`


@renderer("federated-table")
def federated_table(results_dir: Path) -> str:
    r = read_federated(Path(results_dir) / FED)
    runs, seeds = r["runs"], r["seeds"]
    tasks = sorted({k.split("/")[1].removeprefix("task") for k in runs})
    variants = [v for v in ("iid", "dirichlet", "bits") if any(k.startswith(v + "/") for k in runs)]

    def accs(variant, task):
        return [runs[k]["test_acc"] for s in seeds
                if (k := f"{variant}/task{task}/seed{s}") in runs]

    def up_kb(variant, task):
        vals = [runs[k]["bytes"]["uplink_per_round"] for s in seeds
                if (k := f"{variant}/task{task}/seed{s}") in runs]
        return f"{statistics.fmean(vals) / 1e3:,.1f}" if vals else "–"

    rows = []
    for t in tasks:
        central = list(r["centralized_test_acc"][t].values())
        rows.append([t, r["lr_per_task"][t], mean_sd(central)]
                    + [mean_sd(accs(v, t)) for v in variants]
                    + [up_kb(v, t) for v in variants if v in ("iid", "bits")])
    names = {"iid": f"federated IID, round {r['rounds']}", "dirichlet": "Dirichlet α = 0.5",
             "bits": "`--uplink bits`"}
    header = (["task", "lr (chosen on validation)", "centralized `train-bnn`"]
              + [names[v] for v in variants]
              + [f"uplink kB/round ({'float' if v == 'iid' else 'bits'})"
                 for v in variants if v in ("iid", "bits")])
    return (f"{r['clients']} clients, {r['rounds']} rounds × 5 local epochs; test accuracy in %, "
            f"mean ± standard deviation over seeds {', '.join(map(str, seeds))}:\n\n"
            + table(header, rows) + "\n\n" + source(FED, r))


@renderer("federated-band")
def federated_band(results_dir: Path) -> str:
    """How close the IID curves stay to centralized, round by round."""
    r = read_federated(Path(results_dir) / FED)
    rows = []
    for key, run in sorted(r["runs"].items()):
        variant, task, seed = key.split("/")
        if variant != "iid":
            continue
        t, s = task.removeprefix("task"), seed.removeprefix("seed")
        central = r["centralized_test_acc"][t][s]
        gaps = [a - central for a in run["accuracy_curve"]]
        first = next((i + 1 for i, g in enumerate(gaps) if all(x >= -0.005 for x in gaps[i:])),
                     None)
        curve = run["accuracy_curve"]
        steps = [abs(b - a) for a, b in zip(curve, curve[1:], strict=False)]
        rows.append([t, s, f"{100 * gaps[-1]:+.2f}", f"{100 * min(gaps):+.2f}",
                     first if first else "never",
                     f"{100 * max(steps):.2f}" if steps else "–"])
    return (table(["task", "seed", "final − centralized (points)", "worst round − centralized",
                   "first round after which it stays within −0.5 points",
                   "largest change between rounds"], rows) + "\n\n" + source(FED, r))
