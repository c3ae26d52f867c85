"""Choosing the federated optimisation settings on the validation split.

For one task at one scale (default: task 5, 1,000 IID clients, 10% sampled per round, float
uplink), it runs `hybnn fed --json` once per candidate (extra `hybnn fed` options: client
learning rate, batch size, local epochs, server optimizer) for `--rounds` rounds (a screen:
fewer rounds than the study, the schedule laid over them), and records every round's
validation accuracy, which the server computes on the split held out of the clients' data
(`splits.py`). The candidate with the best final validation accuracy is "chosen"; test accuracy
is not read here (the runs' test curves are left out of the file on purpose).

Writes `benchmarks/results/fedtune.json` (format "hybnn-fedtune") after every run; a rerun skips
the candidates already there (an interrupted screen resumes; a second screen at another round
count goes in the same file under its own key); screens run apart (at the same time, into copies
of this file given as --out) are taken in with `--merge`.

Usage: python benchmarks/fedtune.py --codes runs/codes.h5 [--task 5] [--clients 1000]
       [--rounds 30] [--jobs 2] [--candidate NAME='--server-momentum 0.9' ...]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fedscale import hybnn, run_env, study_choices  # noqa: E402

from hybnn_cli.results import git_state, read_result, write_result  # noqa: E402

FORMAT, VERSION = "hybnn-fedtune", 1
CANDIDATES = {  # name → extra `hybnn fed` options (on top of the study's lr per task)
    "fedavg": "",
    "fedavgm-0.9": "--server-momentum 0.9",
    "fedadam-0.01": "--server-opt adam --server-lr 0.01 --server-momentum 0.9",
    "fedadam-0.03": "--server-opt adam --server-lr 0.03 --server-momentum 0.9",
    "fedyogi-0.03": "--server-opt yogi --server-lr 0.03 --server-momentum 0.9",
    "client-lr-x3": "--lr-scale 3",
    "batch-4": "--batch-size 4",
    "local-epochs-15": "--local-epochs 15",
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--task", default="5")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--partition", default="iid")
    p.add_argument("--uplink", default="float")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--candidates", default=",".join(CANDIDATES),
                   help="names from CANDIDATES, comma-separated")
    p.add_argument("--candidate", action="append", default=[],
                   help="NAME=OPTIONS: another candidate (options as for hybnn fed)")
    p.add_argument("--merge", type=Path, action="append", default=[],
                   help="another file of this screen, a part run apart from a copy of this "
                        "file: the runs it added are taken in")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fedtune.json"))
    p.add_argument("--models", type=Path, default=Path("runs/bench-fedtune"))
    args = p.parse_args(argv)
    args.models.mkdir(parents=True, exist_ok=True)
    env = run_env(args.threads)
    chosen, study_commit = study_choices(args.study)
    lr, hidden = chosen[args.task]["lr"], int(chosen[args.task].get("hidden", 128))
    cands = {n: CANDIDATES[n] for n in args.candidates.split(",") if n}
    cands.update(dict(c.split("=", 1) for c in args.candidate))
    old = read_result(args.out, FORMAT) if args.out.is_file() else {}
    screens = old.get("screens", {})
    for part in args.merge:
        for k, other in read_result(part, FORMAT)["screens"].items():
            mine = screens.setdefault(k, {"lr": other["lr"], "hidden": other["hidden"],
                                          "runs": {}})
            mine["runs"].update({n: r for n, r in other["runs"].items()
                                 if n not in mine["runs"]})
    key = (f"task{args.task}/{args.clients}/{args.partition}/{args.uplink}/"
           f"{args.rounds}rounds/seed{args.seed}")
    screen = screens.setdefault(key, {"lr": lr, "hidden": hidden, "runs": {}})
    body = {"codes": str(args.codes), "fraction": args.fraction, "study_commit": study_commit,
            "screens": screens}
    argv_rec = ["python", "benchmarks/fedtune.py", *(argv or sys.argv[1:])]
    # each run keeps the commit it was made at: the file's header names only its last write, and
    # screens merged in from other files were made at other commits
    made_at = git_state()
    lock = threading.Lock()

    def save() -> None:
        for one in screens.values():  # merged ones too
            runs = one["runs"]
            if runs:
                best = max(runs, key=lambda n: (runs[n]["final_val_acc"],
                                                runs[n]["best_val_acc"]))
                one["chosen"] = {"name": best, "options": runs[best]["options"],
                                 "final_val_acc": runs[best]["final_val_acc"]}
        write_result(args.out, FORMAT, VERSION, body, argv=argv_rec)

    def run(name: str, options: str) -> None:
        extra = shlex.split(options)
        run_lr = lr
        if "--lr-scale" in extra:  # a multiple of the study's lr for this task
            i = extra.index("--lr-scale")
            run_lr = lr * float(extra[i + 1])
            extra = extra[:i] + extra[i + 2:]
        cmd = ["fed", "--codes", str(args.codes), "--task", args.task, "--hidden", str(hidden),
               "--clients", str(args.clients), "--fraction", repr(args.fraction),
               "--rounds", str(args.rounds), "--lr", repr(run_lr),
               "--partition", args.partition, "--uplink", args.uplink,
               "--seed", str(args.seed), "--threads", str(args.threads),
               "--out", str(args.models / f"{name}.pt"), *extra, "--json"]
        res, secs = hybnn(cmd, env)
        row = {"options": options, "final_val_acc": res["final_val_acc"],
               "best_val_acc": res["best_val_acc"], "val_curve": res["val_curve"],
               "n_val": res["n_val"], "wall_seconds": round(secs, 1),
               "command": "hybnn " + shlex.join(cmd), **made_at}
        with lock:
            screen["runs"][name] = row
            save()
            print(f"{key} {name}: val {100 * row['final_val_acc']:.2f}% "
                  f"(best {100 * row['best_val_acc']:.2f}%, {secs:.0f} s)", flush=True)

    todo = [(n, o) for n, o in cands.items() if n not in screen["runs"]]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for f in [pool.submit(run, n, o) for n, o in todo]:
            f.result()
    with lock:
        save()
    print(f"{key}: chosen {screen.get('chosen')}", flush=True)


if __name__ == "__main__":
    main()
