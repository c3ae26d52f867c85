"""Federated settings chosen on validation, then the target rows over several seeds, under a plan
committed before it runs (`benchmarks/plans/fedtune.json`).

1. The screen, sealed: for one task at one scale (the plan's: task 5, 1,000 IID clients, 10%
   sampled per round, float uplink, 100 rounds), `hybnn fed --json` once per candidate (extra
   `hybnn fed` options: client optimizer and learning rate, server optimizer) with
   `HYBNN_SEAL_TEST=1`, so the runs cannot read the test split; each keeps every round's
   validation accuracy, which the server computes on the split held out of the clients' data
   (`splits.py`). The plan's rule and tie-break choose (`sealed.choose`).
2. The target rows: each of the plan's rows (task/clients/partition/uplink) at the chosen setting,
   once per seed of the plan, and centralized `train-bnn` on the same codes per task and seed.
   These are the only runs that read test: the final global model's test accuracy, mean ± std
   over the seeds, beside its validation accuracy, its gap to centralized and the plan's target.
The client learning rate of a task, where the options do not set one, is the one the
reproduction study chose on validation (`benchmarks/results/reproduction.json`).

Writes `benchmarks/results/fedtune.json` (format "hybnn-fedtune", version 2, with the plan's
SHA-256; each run with the commit, machine load and times it ran at) after every run; a rerun
adds only what is missing and refuses a file made under another version of the plan.

Usage: python benchmarks/fedtune.py --codes runs/enc/codes-mnist.h5
       [--plan benchmarks/plans/fedtune.json] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fedscale import hybnn, run_env, study_choices  # noqa: E402

from hybnn_cli.sealed import (  # noqa: E402
    assert_no_test,
    check_same_plan,
    choose,
    load_plan,
    sealed_env,
)
from hybnn_cli.study.continual_runs import mean_std  # noqa: E402
from hybnn_cli.study.provenance import git_state, now_utc, read_result, write_result  # noqa: E402

FORMAT, VERSION = "hybnn-fedtune", 2




def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--plan", type=Path, default=Path("benchmarks/plans/fedtune.json"))
    p.add_argument("--draft", action="store_true", help="allow an uncommitted plan (smoke "
                   "tests; the file records that it is a draft)")
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--jobs", type=int, default=2, help="runs at once")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fedtune.json"))
    p.add_argument("--models", type=Path, default=Path("runs/bench-fedtune"))
    args = p.parse_args(argv)
    plan = load_plan(args.plan, draft=args.draft)
    pb, sc = plan.body, plan.body["screen"]
    args.models.mkdir(parents=True, exist_ok=True)
    env = run_env(int(sc["threads"]))
    chosen_lr, study_commit = study_choices(args.study)
    old = read_result(args.out, FORMAT) if args.out.is_file() else {}
    if old.get("format_version") != VERSION:
        old = {}
    check_same_plan(old, plan, str(args.out))
    screen_key = (f"task{sc['task']}/{sc['clients']}/{sc['partition']}/{sc['uplink']}/"
                  f"{sc['rounds']}rounds")
    body = {"plan": plan.record(), "plan_target": pb.get("target"),
            "candidates": pb["candidates"], "codes": str(args.codes), "fraction": sc["fraction"],
            "study_commit": study_commit, "screen_key": screen_key,
            "screen": old.get("screen", {}), "chosen": old.get("chosen"),
            "rows": old.get("rows", {})}
    argv_rec = ["python", "benchmarks/fedtune.py", *(argv if argv is not None else sys.argv[1:])]
    lock = threading.Lock()

    def save() -> None:
        write_result(args.out, FORMAT, VERSION, body, argv=argv_rec)

    def fed(task: str, clients: int, partition: str, uplink: str, seed: int, options: str,
            name: str) -> list[str]:
        extra = shlex.split(options)
        hidden = int(chosen_lr[task].get("hidden", 128))
        return ["fed", "--codes", str(args.codes), "--task", task, "--hidden", str(hidden),
                "--clients", str(clients), "--fraction", repr(sc["fraction"]),
                "--rounds", str(sc["rounds"]), "--local-epochs", str(sc["local_epochs"]),
                "--lr", repr(chosen_lr[task]["lr"]), "--partition", partition,
                "--alpha", repr(pb["alpha"]), "--uplink", uplink, "--seed", str(seed),
                "--threads", str(sc["threads"]), "--out", str(args.models / f"{name}.pt"),
                *extra, "--json"]

    def run(key: str, cmd: list[str], store: dict, sealed: bool) -> dict | None:
        if store.get(key, {}).get("command") == "hybnn " + shlex.join(cmd):
            return None  # done by an earlier, interrupted run of this plan
        made = {**git_state(), "started": now_utc(),
                "load_average_start": [round(x, 2) for x in os.getloadavg()]}
        res, secs = hybnn(cmd, sealed_env(env) if sealed else env)
        made.update(ended=now_utc(), wall_seconds=round(secs, 1))
        if cmd[0] == "train-bnn":  # the centralized reference
            row = {"test_acc": res["test_acc"], "command": "hybnn " + shlex.join(cmd),
                   "made": made}
            with lock:
                store[key] = row
                save()
            print(f"centralized {cmd[cmd.index('--task') + 1]} seed {key}: test "
                  f"{100 * row['test_acc']:.2f}% ({secs:.0f} s)", flush=True)
            return row
        row = {"final_val_acc": res["final_val_acc"], "best_val_acc": res["best_val_acc"],
               "val_curve": res["val_curve"], "n_val": res["n_val"],
               "command": "hybnn " + shlex.join(cmd), "made": made}
        if sealed:
            assert_no_test(res, key)  # the command could not have read test
        else:
            row.update(test_acc=res["final_test_acc"], best_test_acc=res["best_test_acc"],
                       accuracy_curve=res["accuracy_curve"], n_test=res["n_test"],
                       uplink_per_round=res["bytes"]["uplink_per_round"])
        with lock:
            store[key] = row
            save()
        shown = f"test {100 * row['test_acc']:.2f}%, " if not sealed else ""
        print(f"{key}: {shown}val {100 * row['final_val_acc']:.2f}% "
              f"({made['wall_seconds']:.0f} s)", flush=True)
        return row

    # 1. the screen, sealed
    jobs = [(f"{name}/seed{seed}",
             fed(sc["task"], sc["clients"], sc["partition"], sc["uplink"], seed, opts,
                 f"screen-{name}-seed{seed}"))
            for name, opts in pb["candidates"].items() for seed in pb["screen_seeds"]]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for f in [pool.submit(run, k, c, body["screen"], True) for k, c in jobs]:
            f.result()
    order = list(pb["candidates"])
    records = {n: {"runs": [body["screen"][f"{n}/seed{s}"] for s in pb["screen_seeds"]]}
               for n in order}
    pick = choose(records, order,
                  lambda r: (statistics.fmean(x["final_val_acc"] for x in r["runs"]),
                             statistics.fmean(x["best_val_acc"] for x in r["runs"])))
    body["chosen"] = {"name": pick["name"], "options": pb["candidates"][pick["name"]],
                      "final_val_acc": pick["score"][0], "best_val_acc": pick["score"][1],
                      "tied": pick["tied"], "rule": pb["rule"], "tie_break": pb["tie_break"]}
    save()

    # 2. the target rows at the chosen setting, and centralized train-bnn on the same codes:
    # the only runs that read test
    options = body["chosen"]["options"]
    body.setdefault("centralized", {})
    jobs = []
    for task in sorted({k.split("/")[0] for k in pb["rows"]}):
        t = task.removeprefix("task")
        central = body["centralized"].setdefault(task, {"epochs": pb["centralized"]["epochs"],
                                                        "seeds": {}})
        for seed in pb["seeds"]:
            jobs.append((str(seed), [
                "train-bnn", "--codes", str(args.codes), "--task", t,
                "--hidden", str(int(chosen_lr[t].get("hidden", 128))),
                "--epochs", str(pb["centralized"]["epochs"]), "--lr", repr(chosen_lr[t]["lr"]),
                "--seed", str(seed), "--threads", str(sc["threads"]),
                "--out", str(args.models / f"central-{task}-seed{seed}.pt"), "--json"],
                central["seeds"]))
    for row_key in pb["rows"]:
        task, clients, partition, uplink = row_key.split("/")
        task = task.removeprefix("task")
        row = body["rows"].setdefault(row_key, {"options": options, "seeds": {}})
        for seed in pb["seeds"]:
            jobs.append((str(seed), fed(task, int(clients), partition, uplink, seed, options,
                                        f"{row_key.replace('/', '-')}-seed{seed}"),
                         row["seeds"]))
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for f in [pool.submit(run, k, c, store, False) for k, c, store in jobs]:
            f.result()
    for central in body["centralized"].values():
        central["test_acc"] = mean_std([central["seeds"][str(s)]["test_acc"]
                                        for s in pb["seeds"]])
    for key, row in body["rows"].items():
        runs = [row["seeds"][str(s)] for s in pb["seeds"]]
        row["test_acc"] = mean_std([r["test_acc"] for r in runs])
        row["final_val_acc"] = mean_std([r["final_val_acc"] for r in runs])
        central = body["centralized"][key.split("/")[0]]["test_acc"]["mean"]
        row["gap_to_centralized"] = central - row["test_acc"]["mean"]
        # the plan's target: IID rows within 1 point of centralized (mean over the seeds)
        row["target_met"] = (row["gap_to_centralized"] <= 0.01
                             if key.split("/")[2] == "iid" else None)
    save()
    print(f"chosen {body['chosen']['name']}; rows: " + "; ".join(
        f"{k} {100 * r['test_acc']['mean']:.2f} ± {100 * r['test_acc']['std']:.2f}%"
        for k, r in body["rows"].items()), flush=True)


if __name__ == "__main__":
    main()
