"""FedHyBNN against centralized training, on the codes and settings of the reproduction study.

For each seed s of the study (`benchmarks/results/reproduction.json`) and each task, it runs
`hybnn fed` through the CLI with `--json` (so every number comes from a command anyone can rerun)
on the codes of VAE s, with seed s and the learning rate the study chose for that task's BNN on
validation (no setting is chosen here). Variants:
- `iid`: 3 clients, 20 rounds × 5 local epochs, IID partition;
- `dirichlet`: the same with `--partition dirichlet --alpha 0.5` (label skew);
- `bits`: the same with `--uplink bits` (clients send sign bits, not float weights).
Centralized numbers are the study's own HyBNN runs (same codes, seeds, learning rate and 100
epochs), so the two are compared on equal terms.

Writes `benchmarks/results/federated.json` (provenance header: commit, command, machine, date)
after every run; each run holds the record of its own (`results.run_record`: commit, machine,
start and end). A rerun skips the runs already there that were made by the same code with the
same command, and makes the others again, so an interrupted benchmark resumes.

Usage: python benchmarks/federated.py [--study benchmarks/results/reproduction.json]
       [--work runs/reproduce] [--variants iid,dirichlet,bits] [--tasks 1,2,3,4,5]
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

from hybnn_cli.study.fed_records import FORMAT, VERSION, read_federated
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


def command(variant: str, codes: Path, task: str, seed: int, lr: float, args,
            out: Path) -> list[str]:
    return ["fed", "--codes", str(codes), "--task", task, "--clients", str(args.clients),
            "--rounds", str(args.rounds), "--seed", str(seed), "--lr", repr(lr),
            *VARIANTS[variant], "--out", str(out), "--json"]


def summarize(res: dict) -> dict:
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--work", type=Path, default=Path("runs/reproduce"),
                   help="the study's work folder (holds its codes files)")
    p.add_argument("--tasks", default="1,2,3,4,5")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/federated.json"))
    p.add_argument("--models", type=Path, default=Path("runs/bench-fed"))
    args = p.parse_args(argv)
    argv_rec = ["python", "benchmarks/federated.py", *(argv or sys.argv[1:])]
    this_run = start_run(args.out, argv_rec)
    study = read_result(args.study, "hybnn-reproduction")
    codes, lrs, central = study_inputs(study, args.work)
    tasks = args.tasks.split(",")
    args.models.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "OMP_NUM_THREADS": "1"}
    hybnn = str(Path(sys.executable).parent / "hybnn")
    old = read_federated(args.out) if args.out.is_file() else {}
    runs = old.get("runs", {})
    settings = {"clients": args.clients, "rounds": args.rounds, "study": str(args.study),
                "study_commit": study["commit"], "seeds": study["config"]["seeds"],
                "lr_per_task": lrs, "centralized_test_acc": central}

    def save() -> None:
        write_result(args.out, FORMAT, VERSION, {**settings, "runs": runs}, argv=argv_rec,
                     run=end_run(this_run))

    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            sys.exit(f"unknown variant {variant!r}: use {', '.join(VARIANTS)}")
        for task in tasks:
            for seed, codes_path in codes.items():
                key = f"{variant}/task{task}/seed{seed}"
                cmd = command(variant, codes_path, task, seed, lrs[task], args,
                              args.models / f"fed-{variant}-task{task}-seed{seed}.pt")
                old_row = runs.get(key, {})
                if (same_code(old_row.get("run"), this_run)
                        and old_row.get("command") == "hybnn " + shlex.join(cmd)):
                    continue  # made by this code, with this command
                row_run = run_record()
                t0 = time.perf_counter()
                proc = subprocess.run([hybnn, *cmd], capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    sys.exit(f"failed ({proc.returncode}): hybnn {shlex.join(cmd)}\n"
                             f"{proc.stderr[-2000:]}")
                res = summarize(json.loads(proc.stdout))
                res.update(command="hybnn " + shlex.join(cmd),
                           seconds=round(time.perf_counter() - t0, 1), run=end_run(row_run))
                runs[key] = res
                save()
                print(f"{key}: {100 * res['test_acc']:.2f}% ({res['seconds']:.0f} s)",
                      flush=True)
    save()


if __name__ == "__main__":
    main()
