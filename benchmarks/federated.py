"""Federated vs centralized training of the task BNN on MNIST codes (issue 5).

For each task it runs, through the `hybnn` CLI with `--json` (so every number comes from a
command that anyone can rerun):
- centralized: `hybnn train-bnn --task T` (100 epochs, the paper's setting);
- federated IID: `hybnn fed --task T --clients 3 --rounds 20`;
- federated Dirichlet label skew: the same with `--partition dirichlet --alpha 0.5`;
- federated with a bits uplink: the same with `--uplink bits`.

Writes `benchmarks/results/federated-<variant>.json` after every run (a rerun skips the runs
already there, so an interrupted benchmark resumes) and the table `federated.md`.

Usage: python benchmarks/federated.py --codes runs/full/codes.h5 [--tasks 1,2,3,4,5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "centralized": None,
    "iid": [],
    "dirichlet": ["--partition", "dirichlet", "--alpha", "0.5"],
    "bits": ["--uplink", "bits"],
}


def command(variant: str, codes: Path, task: str, models: Path, args) -> list[str]:
    hybnn = str(Path(sys.executable).parent / "hybnn")
    if variant == "centralized":
        return [hybnn, "train-bnn", "--codes", str(codes), "--task", task, "--threads", "1",
                "--seed", str(args.seed), "--out", str(models / f"central-task{task}.pt"),
                "--json"]
    return [hybnn, "fed", "--codes", str(codes), "--task", task, "--clients", str(args.clients),
            "--rounds", str(args.rounds), "--seed", str(args.seed), *VARIANTS[variant],
            "--out", str(models / f"fed-{variant}-task{task}.pt"), "--json"]


def summarize(variant: str, res: dict) -> dict:
    if variant == "centralized":
        return {"test_acc": res["test_acc"], "epochs": len(res["history"]),
                "accuracy_curve": [h["test_acc"] for h in res["history"]],
                "encoder_sha256": None}
    rounds = res["rounds"]
    return {"test_acc": res["final_test_acc"], "best_test_acc": res["best_test_acc"],
            "initial_test_acc": res["initial_test_acc"],
            "accuracy_curve": res["accuracy_curve"], "bytes": res["bytes"],
            "valid_updates": [r["valid_updates"] for r in rounds],
            "encoder_sha256": res["encoder_sha256"], "config": res["config"]}


def machine() -> dict:
    import numpy
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "flwr": _version("flwr"), "hybnn": _version("hybnn"),
            "torch_threads_per_process": 1}


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def table(results: Path, tasks: list[str]) -> str:
    data = {v: load(results / f"federated-{v}.json").get("runs", {}) for v in VARIANTS}

    def acc(v, t):
        r = data[v].get(f"task{t}")
        return f"{100 * r['test_acc']:.2f}" if r else "–"

    def kb(v, t, key):
        r = data[v].get(f"task{t}")
        return f"{r['bytes'][key] / 1e3:,.1f}" if r else "–"

    def gap(t):
        c, f = data["centralized"].get(f"task{t}"), data["iid"].get(f"task{t}")
        return f"{100 * (f['test_acc'] - c['test_acc']):+.2f}" if c and f else "–"

    lines = [
        "| task | centralized (100 epochs) | IID round 20 | IID − central | Dirichlet α=0.5 "
        "| bits uplink | up kB/round float | up kB/round bits | down kB/round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tasks:
        lines.append(f"| {t} | {acc('centralized', t)} | {acc('iid', t)} | {gap(t)} | "
                     f"{acc('dirichlet', t)} | {acc('bits', t)} | "
                     f"{kb('iid', t, 'uplink_per_round')} | {kb('bits', t, 'uplink_per_round')} |"
                     f" {kb('iid', t, 'downlink_per_round')} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--tasks", default="1,2,3,4,5")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--models", type=Path, default=Path("runs/bench-fed"))
    args = p.parse_args(argv)
    tasks = args.tasks.split(",")
    args.results.mkdir(parents=True, exist_ok=True)
    args.models.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "OMP_NUM_THREADS": "1"}
    for variant in args.variants.split(","):
        path = args.results / f"federated-{variant}.json"
        data = load(path) or {"variant": variant, "codes": str(args.codes),
                              "machine": machine(), "runs": {}}
        for task in tasks:
            if f"task{task}" in data["runs"]:
                continue
            cmd = command(variant, args.codes, task, args.models, args)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.exit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr[-2000:]}")
            res = summarize(variant, json.loads(proc.stdout))
            res.update(command=shlex.join(["hybnn", *cmd[1:]]),
                       seconds=round(time.perf_counter() - t0, 1))
            data["runs"][f"task{task}"] = res
            save(path, data)
            print(f"{variant} task{task}: {100 * res['test_acc']:.2f}% "
                  f"({res['seconds']:.0f} s)", flush=True)
    md = args.results / "federated.md"
    md.write_text("# Federated vs centralized task BNN (full MNIST codes, "
                  f"{args.clients} clients, {args.rounds} rounds)\n\n"
                  f"Made by `python benchmarks/federated.py --codes {args.codes}`; every cell "
                  "comes from the command recorded beside it in `federated-<variant>.json`. "
                  "Accuracies in % on the MNIST test set; bytes are Flower message payloads "
                  "summed over the clients.\n\n" + table(args.results, tasks) + "\n")
    print(md.read_text())


if __name__ == "__main__":
    main()
