"""FedHyBNN at scale: many clients, a fraction sampled per round, against centralized training.

On one codes file (real MNIST codes), for each task, number of clients N, partition and uplink,
it runs `hybnn fed --clients N --fraction F --json` through the CLI (so every number comes from a
command anyone can rerun) once per seed (`--seeds`) and records the global test accuracy after
every round, the rounds needed to come within 1 point of centralized `train-bnn` on the same codes
(same learning rate, `rounds × local-epochs` epochs, the same seeds; the reference is its mean
over them), the bytes per round and in total, and the wall seconds per round (mean and std over
the rounds); each grid row holds its per-seed runs and the mean ± std over the seeds
(`fed.results.over_seeds`).
The learning rate per task (and, for the 10-class problem `all`, the hidden width) is the one the
reproduction study chose on validation (`benchmarks/results/reproduction.json`); the federated
optimisation settings of the grid (`--fed-options`, e.g. a server optimizer) are the ones
`benchmarks/fedtune.py` chose on validation; no setting is chosen here.

Then, on one configuration (`--engine-config`), the seconds per round of each engine
(`--engines`), and with and without SecAgg+ (`--secagg-config`: accuracy, bytes and seconds per
round; float and bits uplink): timings, one run each with the first of the seeds.

Then the memory of one in-process run (server and the sampled clients in one process) for
`--memory-clients` N with the same number of clients sampled per round (`--memory-sampled`):
the peak resident set size of the `hybnn fed` process, which stays flat in N when nothing is kept
per client beyond a round.

Writes `benchmarks/results/fedscale.json` (format `fed.results.SCALE_FORMAT`, version 2) after
every run, each run with the record of its own (`results.run_record`); a rerun keeps the runs
already there made by the same code with the same command, so an interrupted study resumes (a
file of version 1, one seed, is started over); a grid row re-run with other `--fed-options`
replaces the row, which moves to the section "earlier" with its options; and the figure
`benchmarks/results/fedscale.png` (accuracy per round, mean over seeds, one panel per task and
partition). The file is made by one command: no part of it is run apart and merged in.

Usage: python benchmarks/fedscale.py --codes runs/codes.h5 [--tasks 3,5] [--clients 10,100,1000]
       [--partitions iid,dirichlet] [--uplinks float,bits] [--fraction 0.1] [--rounds 100]
       [--engines inprocess,simulation] [--threads 1] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hybnn_cli.study.fed_records import (
    SCALE_FORMAT,
    SCALE_VERSION,
    curve_over_seeds,
    over_seeds,
    read_scale,
    rounds_to_within_over_seeds,
)
from hybnn_cli.study.provenance import (
    end_run,
    read_result,
    run_record,
    same_code,
    start_run,
    write_result,
)


def hybnn(cmd: list[str], env: dict, peak: dict | None = None) -> tuple[dict, float]:
    """Run `hybnn cmd` (ends in --json); its JSON output and wall seconds. `peak`, if given,
    receives the process's peak resident set size in bytes (`peak_rss`)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "hybnn"), *cmd], stdout=out,
                                stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): hybnn {shlex.join(cmd)}\n{stderr[-2000:]}")
    if peak is not None:
        peak["peak_rss"] = usage.ru_maxrss * 1024  # Linux reports kilobytes
    return json.loads(stdout), time.perf_counter() - t0


def run_env(threads: int) -> dict:
    """The environment of the `hybnn fed` runs: Flower quiet and offline, `threads` OMP threads."""
    return {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
            "OMP_NUM_THREADS": str(threads)}


def study_choices(path: Path) -> tuple[dict, str]:
    """(task ("1".."5", "all") → the settings the reproduction study chose on validation (lr, and
    hidden for the 10-class problem), the study's commit)."""
    study = read_result(path, "hybnn-reproduction")
    chosen = {row["task"].removeprefix("task"): row["hybnn"]["chosen"] for row in study["tasks"]}
    chosen["all"] = study["ten_class"]["chosen"]
    return chosen, study["commit"]


def fed_cmd(args, task: str, lr: float, clients: int, partition: str, uplink: str,
            rounds: int, seed: int, engine: str = "inprocess", secagg: bool = False,
            fraction: float | None = None, extra: str = "") -> list[str]:
    fraction = args.fraction if fraction is None else fraction
    return ["fed", "--codes", str(args.codes), "--task", task, "--hidden", str(args.hidden[task]),
            "--clients", str(clients),
            "--fraction", repr(fraction), "--rounds", str(rounds),
            "--local-epochs", str(args.local_epochs), "--lr", repr(lr),
            "--partition", partition, "--alpha", repr(args.alpha), "--uplink", uplink,
            "--engine", engine, *(["--secagg"] if secagg else []), "--seed", str(seed),
            "--threads", str(args.threads), "--out", str(args.models / "last.pt"),
            *shlex.split(extra), "--json"]


def summarize(res: dict, seconds: float) -> dict:
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
            "seconds_per_round_std": statistics.stdev(per_round) if len(per_round) > 1 else 0.0,
            "wall_seconds": round(seconds, 1), "mode": res["mode"],
            "encoder_sha256": res["encoder_sha256"], "config": res["config"]}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(k.split("/")[0], k.split("/")[2]) for k in data["runs"]})
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (task, partition) in zip(axes[0], panels, strict=True):
        central = data["centralized"][task]["test_acc"]["mean"]
        ax.axhline(100 * central, color="k", lw=0.8, label="centralized")
        ax.axhline(100 * (central - 0.01), color="k", lw=0.8, ls=":", label="centralized − 1")
        for key, row in sorted(data["runs"].items()):
            t, n, part, uplink = key.split("/")
            if (t, part) != (task, partition):
                continue
            curve = [100 * a for a in curve_over_seeds(row)[0]]
            ax.plot(range(1, len(curve) + 1), curve, lw=1,
                    ls="-" if uplink == "float" else "--", label=f"{n} {uplink}")
        ax.set_title(f"{task}, {partition}, {data['fraction']:.0%} sampled, mean over seeds "
                     f"{', '.join(map(str, data['seeds']))}", fontsize=8)
        ax.set_xlabel("round")
        ax.set_ylim(max(50, 100 * central - 15), 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    save_accuracy_figure(fig, axes[0][0], path)


def save_accuracy_figure(fig, first_ax, path: Path) -> None:
    """The accuracy-per-round figures' common end: y label, layout, PNG at `path`, closed."""
    import matplotlib.pyplot as plt

    first_ax.set_ylabel("global test accuracy (%)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kept_runs(body: dict, key: str, fed_options: str) -> dict:
    """The per-seed runs of grid row `key` that a rerun may keep. A row run with other
    --fed-options keeps none: it moves to "earlier" (key + " " + its options), so a re-run with
    new settings keeps the old numbers."""
    prev = body["runs"].get(key)
    if prev is None:
        return {}
    if prev.get("fed_options", "") != fed_options:
        body["earlier"][f"{key} {prev.get('fed_options', '')}".strip()] = body["runs"].pop(key)
        return {}
    return prev["per_seed"]


def grid_row(per_seed: dict, central: float, fed_options: str) -> dict:
    """A grid row over its seeds: `over_seeds`, the runs, the options, and the rounds each seed
    took to come within 1 point of the centralized mean `central`."""
    curves = [per_seed[s]["accuracy_curve"] for s in sorted(per_seed, key=int)]
    return {**over_seeds(per_seed), "per_seed": per_seed, "fed_options": fed_options,
            "rounds_to_within_1pt": rounds_to_within_over_seeds(curves, central, 0.01)}


def central_entry(epochs: int, per_seed: dict) -> dict:
    """The centralized reference of a task: its runs and their test accuracy, mean ± std."""
    from hybnn_cli.study.continual_runs import mean_std

    seeds = sorted(per_seed, key=int)
    return {"epochs": epochs, "seeds": [int(s) for s in seeds],
            "test_acc": mean_std([per_seed[s]["test_acc"] for s in seeds]), "per_seed": per_seed}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--tasks", default="3,5")
    p.add_argument("--clients", default="10,100,1000")
    p.add_argument("--partitions", default="iid,dirichlet")
    p.add_argument("--uplinks", default="float,bits")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--local-epochs", type=int, default=5)
    p.add_argument("--seeds", default="0,1,2",
                   help="each grid row and centralized reference runs once per seed; the "
                        "engine, SecAgg+ and memory runs once, with the first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fed-options", default="",
                   help="extra hybnn fed options for the grid's runs (chosen by fedtune.py)")
    p.add_argument("--fed-options-from", type=Path,
                   help="take --fed-options from the setting a fedtune.py file chose")
    p.add_argument("--engines", default="inprocess,simulation")
    p.add_argument("--engine-config", default="3/100/iid/float/5",
                   help="task/clients/partition/uplink/rounds timed on every engine")
    p.add_argument("--secagg-config", default="3/100/iid/20",
                   help="task/clients/partition/rounds run with and without SecAgg+ "
                        "(both uplinks)")
    p.add_argument("--memory-clients", default="100,1000,10000")
    p.add_argument("--memory-sampled", type=int, default=10)
    p.add_argument("--memory-rounds", type=int, default=2)
    p.add_argument("--skip-grid", action="store_true", help="only the engine and SecAgg+ runs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fedscale.json"))
    p.add_argument("--figure", type=Path, default=Path("benchmarks/results/fedscale.png"))
    p.add_argument("--models", type=Path, default=Path("runs/bench-fedscale"))
    args = p.parse_args(argv)
    argv_rec = ["python", "benchmarks/fedscale.py", *(argv or sys.argv[1:])]
    this_run = start_run(args.out, argv_rec)
    args.models.mkdir(parents=True, exist_ok=True)
    if args.fed_options_from:
        args.fed_options = read_result(args.fed_options_from, "hybnn-fedtune")["chosen"]["options"]
    seeds = [int(x) for x in args.seeds.split(",")]
    env = run_env(args.threads)
    chosen, study_commit = study_choices(args.study)
    lrs = {task: c["lr"] for task, c in chosen.items()}
    args.hidden = {task: int(c.get("hidden", 128)) for task, c in chosen.items()}
    old = read_scale(args.out) if args.out.is_file() else {}
    if old and old["format_version"] != SCALE_VERSION:
        print(f"{args.out} is of version {old['format_version']} (one seed): started over",
              flush=True)
        old = {}
    body = {"codes": str(args.codes), "fraction": args.fraction, "alpha": args.alpha,
            "rounds": args.rounds, "local_epochs": args.local_epochs, "seeds": seeds,
            "timing_seed": seeds[0], "threads": args.threads, "lr_per_task": lrs,
            "hidden_per_task": args.hidden, "study_commit": study_commit,
            "fed_options": args.fed_options,
            "centralized": old.get("centralized", {}), "runs": old.get("runs", {}),
            "engines": old.get("engines", {}), "secagg": old.get("secagg", {}),
            "memory": old.get("memory", {}), "earlier": old.get("earlier", {})}

    def save() -> None:
        write_result(args.out, SCALE_FORMAT, SCALE_VERSION, body, argv=argv_rec,
                     run=end_run(this_run))
        plot(body, args.figure)

    def run(cmd: list[str], kept: dict | None, peak: dict | None = None) -> tuple[dict, bool]:
        """`hybnn cmd`'s JSON output, summarized, with its command and run record; or `kept`,
        the run already in the file, when it was made by this code with this command. And
        whether it ran."""
        command = "hybnn " + shlex.join(cmd)
        if kept and same_code(kept.get("run"), this_run) and kept.get("command") == command:
            return kept, False
        record = run_record()
        res, secs = hybnn(cmd, env, peak)
        summary = res if cmd[0] == "train-bnn" else summarize(res, secs)
        return {**summary, **(peak or {}), "command": command, "wall_seconds": round(secs, 1),
                "run": end_run(record)}, True

    tasks = args.tasks.split(",")
    epochs = args.rounds * args.local_epochs
    for task in tasks:  # the centralized reference on the same codes, per seed
        kept = body["centralized"].get(f"task{task}", {}).get("per_seed", {})
        per_seed = {}
        for seed in seeds:
            cmd = ["train-bnn", "--codes", str(args.codes), "--task", task,
                   "--hidden", str(args.hidden[task]), "--epochs", str(epochs),
                   "--lr", repr(lrs[task]), "--seed", str(seed), "--threads", str(args.threads),
                   "--out", str(args.models / f"central-task{task}-seed{seed}.pt"), "--json"]
            res, ran = run(cmd, kept.get(str(seed)))
            per_seed[str(seed)] = {k: res[k] for k in ("test_acc", "command", "wall_seconds",
                                                       "run")}
            body["centralized"][f"task{task}"] = central_entry(epochs, per_seed)
            if ran:
                save()
                print(f"centralized task{task} seed {seed}: {100 * res['test_acc']:.2f}% "
                      f"({res['wall_seconds']:.0f} s)", flush=True)

    grid = [] if args.skip_grid else [
        (t, int(n), part, up) for t in tasks for part in args.partitions.split(",")
        for up in args.uplinks.split(",") for n in args.clients.split(",")]
    for task, n, part, uplink in grid:
        key = f"task{task}/{n}/{part}/{uplink}"
        central = body["centralized"][f"task{task}"]["test_acc"]["mean"]
        kept = kept_runs(body, key, args.fed_options)
        per_seed = {}
        for seed in seeds:
            cmd = fed_cmd(args, task, lrs[task], n, part, uplink, args.rounds, seed,
                          extra=args.fed_options)
            per_seed[str(seed)], ran = run(cmd, kept.get(str(seed)))
            body["runs"][key] = grid_row(per_seed, central, args.fed_options)
            if ran:
                save()
                r = per_seed[str(seed)]
                print(f"{key} seed {seed}: {100 * r['test_acc']:.2f}%, "
                      f"{r['seconds_per_round']:.2f} s/round ({r['wall_seconds']:.0f} s)",
                      flush=True)
        acc, within = body["runs"][key]["test_acc"], body["runs"][key]["rounds_to_within_1pt"]
        print(f"{key}: {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}% over seeds "
              f"{args.seeds}, within 1 point in {within['reached']} of them", flush=True)

    seed = seeds[0]  # timings: one run each
    task, n, part, uplink, rounds = args.engine_config.split("/")
    for engine in args.engines.split(","):
        key = f"{engine}/task{task}/{n}/{part}/{uplink}/{rounds}"
        cmd = fed_cmd(args, task, lrs[task], int(n), part, uplink, int(rounds), seed,
                      engine=engine)
        body["engines"][key], ran = run(cmd, body["engines"].get(key))
        if ran:
            save()
            print(f"{key}: {body['engines'][key]['seconds_per_round']:.2f} s/round, "
                  f"{body['engines'][key]['wall_seconds']:.0f} s in all", flush=True)

    task, n, part, rounds = args.secagg_config.split("/")
    for uplink in args.uplinks.split(","):
        for secagg in (False, True):
            key = f"task{task}/{n}/{part}/{uplink}/{rounds}/" + ("secagg" if secagg else "plain")
            cmd = fed_cmd(args, task, lrs[task], int(n), part, uplink, int(rounds), seed,
                          secagg=secagg)
            body["secagg"][key], ran = run(cmd, body["secagg"].get(key))
            if ran:
                save()
                r = body["secagg"][key]
                print(f"{key}: {100 * r['test_acc']:.2f}%, "
                      f"{r['uplink_per_round'] / 1e3:,.1f} kB up/round, "
                      f"{r['seconds_per_round']:.2f} s/round", flush=True)

    task = tasks[0]
    for n in (int(c) for c in args.memory_clients.split(",") if c):
        key = f"task{task}/{n}/iid/float/{args.memory_sampled}/{args.memory_rounds}"
        cmd = fed_cmd(args, task, lrs[task], n, "iid", "float", args.memory_rounds, seed,
                      fraction=args.memory_sampled / n)
        body["memory"][key], ran = run(cmd, body["memory"].get(key), peak={})
        if ran:
            save()
            print(f"memory {key}: peak RSS {body['memory'][key]['peak_rss'] / 2**20:,.0f} MiB "
                  f"({body['memory'][key]['wall_seconds']:.0f} s)", flush=True)
    save()


if __name__ == "__main__":
    main()
