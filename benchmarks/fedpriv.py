"""FedHyBNN with differential privacy and with Byzantine clients, on real MNIST codes.

Two studies (`--study dp` or `byzantine`, one result file each) on one configuration (task,
clients, fraction sampled per round, rounds, local epochs, seed), each run through the CLI
(`hybnn fed ... --json`) on the in-process engine (the same ServerApp and ClientApp as the other
engines, and the fastest):
- DP: the global test accuracy against the noise multiplier σ (`--dp-noise`) at one clipping norm
  (`--dp-clip`), next to the same run without DP ("plain");
- Byzantine: a share of the clients (`--byzantine`) sends sign-flipped, amplified updates; plain
  FedAvg against Flower's Krum, FedMedian and FedTrimmedAvg (`--aggregate`).
The learning rate is the one the reproduction study chose on validation for the task
(`benchmarks/results/reproduction.json`); no setting is chosen here on test accuracy. The
clipping norm is fixed in advance (`--dp-clip`, default 5 in DP coordinates, docs/federated.md).

Writes `benchmarks/results/fed<study>.json` (format `fed.results.PRIV_FORMAT`) after every run,
each run with the record of its own (`results.run_record`: commit, machine, start and end); a
rerun with the same settings skips the runs already there made by the same code with the same
command; and `fed<study>.png` (accuracy per round) beside it.

Usage: python benchmarks/fedpriv.py --study dp|byzantine --codes runs/fedpriv/codes.h5
       [--clients 100] [--fraction 0.1] [--rounds 15] [--local-epochs 2] [--noises 0,0.5,1,2]
       [--dp-clip 5] [--byzantine 0.1] [--rules fedavg,krum,median,trimmed-mean]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hybnn_cli.fed.results import PRIV_FORMAT, PRIV_VERSION, read_priv
from hybnn_cli.results import end_run, read_result, run_record, same_code, start_run, write_result


def hybnn(cmd: list[str], env: dict) -> tuple[dict, float]:
    """Run `hybnn cmd` (ends in --json); its JSON output and wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "hybnn"), *cmd],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): hybnn {shlex.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout), time.perf_counter() - t0


def summarize(res: dict, seconds: float) -> dict:
    """A run's row from `hybnn fed --json` (the fields `benchmarks/fedscale.py` keeps)."""
    rounds = res["rounds"]
    per_round = [r["seconds"] - p["seconds"] for p, r in zip([{"seconds": 0.0}] + rounds[:-1],
                                                            rounds, strict=True)]
    sampled = [len(r.get("clients", [])) for r in rounds]
    return {"test_acc": res["final_test_acc"], "best_test_acc": res["best_test_acc"],
            "initial_test_acc": res["initial_test_acc"], "accuracy_curve": res["accuracy_curve"],
            "final_val_acc": res.get("final_val_acc"), "val_curve": res.get("val_curve"),
            "uplink_per_round": res["bytes"]["uplink_per_round"],
            "downlink_per_round": res["bytes"]["downlink_per_round"],
            "uplink_total": res["bytes"]["uplink_total"],
            "downlink_total": res["bytes"]["downlink_total"],
            "sampled_per_round": sampled[-1] if sampled else 0,
            "valid_updates": [r.get("valid_updates", 0) for r in rounds],
            "seconds_per_round": sum(per_round) / max(len(per_round), 1),
            "wall_seconds": round(seconds, 1), "mode": res["mode"],
            "encoder_sha256": res["encoder_sha256"], "config": res["config"]}


def plot(body: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    plain = body["runs"].get("plain")
    title = (f"DP, clip {body['dp_clip']:g}" if body["study"] == "dp"
             else f"{body['byzantine_share']:.0%} sign-flipping clients")
    prefix = body["study"] + "/"
    if plain:
        curve = [100 * a for a in plain["accuracy_curve"]]
        ax.plot(range(1, len(curve) + 1), curve, color="k", lw=1, label="no DP, no attack")
    for key, run in sorted(body["runs"].items()):
        if not key.startswith(prefix):
            continue
        curve = [100 * a for a in run["accuracy_curve"]]
        label = f"σ = {key.removeprefix(prefix)}" if prefix == "dp/" else key.removeprefix(prefix)
        ax.plot(range(1, len(curve) + 1), curve, lw=1, label=label)
    ax.set_title(f"task {body['task']}, {body['clients']} clients, {title}", fontsize=9)
    ax.set_xlabel("round")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_ylabel("global test accuracy (%)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", choices=("dp", "byzantine"), required=True)
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--reproduction", type=Path,
                   default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--task", default="3")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--noises", default="0,0.5,1,2")
    p.add_argument("--dp-clip", type=float, default=5.0)
    p.add_argument("--byzantine", type=float, default=0.1)
    p.add_argument("--rules", default="fedavg,krum,median,trimmed-mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="default: "
                   "benchmarks/results/fed<study>.json, and the figure beside it (.png)")
    p.add_argument("--models", type=Path, default=Path("runs/bench-fedpriv"))
    args = p.parse_args(argv)
    args.out = args.out or Path(f"benchmarks/results/fed{args.study}.json")
    argv_rec = ["python", "benchmarks/fedpriv.py", *(argv or sys.argv[1:])]
    this_run = start_run(args.out, argv_rec)
    args.figure = args.out.with_suffix(".png")
    args.models = args.models / args.study
    args.models.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "OMP_NUM_THREADS": str(args.threads)}
    study = read_result(args.reproduction, "hybnn-reproduction")
    lr = next(row["hybnn"]["chosen"]["lr"] for row in study["tasks"]
              if row["task"] == f"task{args.task}")
    settings = {"study": args.study, "codes": str(args.codes), "task": args.task,
                "clients": args.clients,
                "fraction": args.fraction, "rounds": args.rounds,
                "local_epochs": args.local_epochs, "lr": lr, "seed": args.seed,
                "threads": args.threads, "engine": "inprocess", "dp_clip": args.dp_clip,
                "byzantine_share": args.byzantine}
    old = read_priv(args.out) if args.out.is_file() else {}
    if old and any(old.get(k) != v for k, v in settings.items()):
        old = {}  # other settings: start over
    body = {**settings, "study_commit": study["commit"], "runs": old.get("runs", {})}

    runs = [("plain", [])]
    if args.study == "dp":
        runs += [(f"dp/{s}", ["--dp-noise", s, "--dp-clip", repr(args.dp_clip)])
                 for s in args.noises.split(",")]
    else:
        runs += [(f"byzantine/{rule}", ["--aggregate", rule, "--byzantine",
                                         repr(args.byzantine)])
                 for rule in args.rules.split(",")]
    for key, extra in runs:
        cmd = ["fed", "--codes", str(args.codes), "--task", args.task,
               "--clients", str(args.clients), "--fraction", repr(args.fraction),
               "--rounds", str(args.rounds), "--local-epochs", str(args.local_epochs),
               "--lr", repr(lr), "--seed", str(args.seed), "--threads", str(args.threads),
               "--engine", "inprocess", *extra, "--out", str(args.models / "last.pt"), "--json"]
        old_row = body["runs"].get(key, {})
        if (same_code(old_row.get("run"), this_run)
                and old_row.get("command") == "hybnn " + shlex.join(cmd)):
            continue  # made by this code, with this command
        row_run = run_record()
        res, secs = hybnn(cmd, env)
        body["runs"][key] = {**summarize(res, secs), "command": "hybnn " + shlex.join(cmd),
                             "run": end_run(row_run)}
        write_result(args.out, PRIV_FORMAT, PRIV_VERSION, body, argv=argv_rec,
                     run=end_run(this_run))
        plot(body, args.figure)
        print(f"{key}: {100 * res['final_test_acc']:.2f}% after {args.rounds} rounds "
              f"({secs:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
