"""FedHyBNN with differential privacy and with Byzantine clients, on real MNIST codes.

Two studies (`--study dp` or `byzantine`, one result file each) on one configuration (task,
clients, fraction sampled per round, rounds, local epochs), each setting run once per seed
(`--seeds`) through the CLI (`hybnn fed ... --json`) on the in-process engine (the same ServerApp
and ClientApp as the other engines, and the fastest):
- DP: the global test accuracy against the noise multiplier σ (`--dp-noise`) at one clipping norm
  (`--dp-clip`), next to the same run without DP ("plain");
- Byzantine: a share of the clients (`--byzantine`) sends sign-flipped, amplified updates; plain
  FedAvg against Flower's Krum, FedMedian and FedTrimmedAvg (`--aggregate`).
The learning rate is the one the reproduction study chose on validation for the task
(`benchmarks/results/reproduction.json`); no setting is chosen here on test accuracy. The
clipping norm is fixed in advance (`--dp-clip`, default 5 in DP coordinates, docs/federated.md).

Writes `benchmarks/results/fed<study>.json` (format `fed.results.PRIV_FORMAT`) after every run:
per setting, its runs (one per seed, each with the record of its own run, `results.run_record`:
commit, machine, start and end) and the mean ± std over the seeds (`fed.results.over_seeds`); a
rerun with the same settings skips the runs already there made by the same code with the same
command; and `fed<study>.png` (accuracy per round, mean over seeds ± std) beside it.

Usage: python benchmarks/fedpriv.py --study dp|byzantine --codes runs/fedpriv/codes.h5
       [--clients 100] [--fraction 0.1] [--rounds 15] [--local-epochs 2] [--noises 0,0.5,1,2]
       [--dp-clip 5] [--byzantine 0.1] [--rules fedavg,krum,median,trimmed-mean] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fedscale import hybnn, summarize  # noqa: E402

from hybnn_cli.study.fed_records import (
    PRIV_FORMAT,
    PRIV_VERSION,
    curve_over_seeds,
    over_seeds,
    read_priv,
)
from hybnn_cli.study.provenance import (
    end_run,
    read_result,
    run_record,
    same_code,
    start_run,
    write_result,
)


def plot(body: dict, path: Path) -> None:
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
    ax.set_ylabel("global test accuracy (%), mean ± std")
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
    p.add_argument("--seeds", default="0,1,2", help="each setting runs once per seed")
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
    seeds = [int(x) for x in args.seeds.split(",")]
    settings = {"study": args.study, "codes": str(args.codes), "task": args.task,
                "clients": args.clients,
                "fraction": args.fraction, "rounds": args.rounds,
                "local_epochs": args.local_epochs, "lr": lr,
                "threads": args.threads, "engine": "inprocess", "dp_clip": args.dp_clip,
                "byzantine_share": args.byzantine}
    old = read_priv(args.out) if args.out.is_file() else {}
    if old and (old["format_version"] != PRIV_VERSION
                or any(old.get(k) != v for k, v in settings.items())):
        old = {}  # an older format or other settings: start over
    body = {**settings, "seeds": seeds, "study_commit": study["commit"],
            "runs": old.get("runs", {})}

    runs = [("plain", [])]
    if args.study == "dp":
        runs += [(f"dp/{s}", ["--dp-noise", s, "--dp-clip", repr(args.dp_clip)])
                 for s in args.noises.split(",")]
    else:
        runs += [(f"byzantine/{rule}", ["--aggregate", rule, "--byzantine",
                                         repr(args.byzantine)])
                 for rule in args.rules.split(",")]
    changed = False
    for key, extra in runs:
        kept = body["runs"].get(key, {}).get("per_seed", {})
        per_seed = {}
        for seed in seeds:
            cmd = ["fed", "--codes", str(args.codes), "--task", args.task,
                   "--clients", str(args.clients), "--fraction", repr(args.fraction),
                   "--rounds", str(args.rounds), "--local-epochs", str(args.local_epochs),
                   "--lr", repr(lr), "--seed", str(seed), "--threads", str(args.threads),
                   "--engine", "inprocess", *extra, "--out", str(args.models / "last.pt"),
                   "--json"]
            command = "hybnn " + shlex.join(cmd)
            old_run = kept.get(str(seed), {})
            if same_code(old_run.get("run"), this_run) and old_run.get("command") == command:
                per_seed[str(seed)] = old_run  # made by this code, with this command
                continue
            row_run = run_record()
            res, secs = hybnn(cmd, env)
            per_seed[str(seed)] = {**summarize(res, secs), "command": command,
                                   "run": end_run(row_run)}
            body["runs"][key] = {**over_seeds(per_seed), "per_seed": per_seed}
            write_result(args.out, PRIV_FORMAT, PRIV_VERSION, body, argv=argv_rec,
                         run=end_run(this_run))
            plot(body, args.figure)
            print(f"{key} seed {seed}: {100 * res['final_test_acc']:.2f}% after {args.rounds} "
                  f"rounds ({secs:.0f} s)", flush=True)
        changed |= per_seed != kept
        body["runs"][key] = {**over_seeds(per_seed), "per_seed": per_seed}
        acc = body["runs"][key]["test_acc"]
        print(f"{key}: {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}% over seeds "
              f"{args.seeds}", flush=True)
    if changed:  # a seed dropped from a row is gone from the file too
        write_result(args.out, PRIV_FORMAT, PRIV_VERSION, body, argv=argv_rec,
                     run=end_run(this_run))
        plot(body, args.figure)


if __name__ == "__main__":
    main()
