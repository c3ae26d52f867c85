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
    lr = ["--lr", str(args.lr)] if args.lr is not None else []
    if variant == "centralized":
        return [hybnn, "train-bnn", "--codes", str(codes), "--task", task, "--threads", "1",
                "--seed", str(args.seed), *lr,
                "--out", str(models / f"central{args.tag}-task{task}.pt"), "--json"]
    return [hybnn, "fed", "--codes", str(codes), "--task", task, "--clients", str(args.clients),
            "--rounds", str(args.rounds), "--seed", str(args.seed), *lr, *VARIANTS[variant],
            "--out", str(models / f"fed{args.tag}-{variant}-task{task}.pt"), "--json"]


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


def table(results: Path, tasks: list[str], tag: str = "") -> str:
    data = {v: load(results / f"federated{tag}-{v}.json").get("runs", {}) for v in VARIANTS}

    def acc(v, t):
        r = data[v].get(f"task{t}")
        return f"{100 * r['test_acc']:.2f}" if r else "–"

    def kb(v, t, key):
        r = data[v].get(f"task{t}")
        return f"{r['bytes'][key] / 1e3:,.1f}" if r else "–"

    def gap(t):
        c, f = data["centralized"].get(f"task{t}"), data["iid"].get(f"task{t}")
        return f"{100 * (f['test_acc'] - c['test_acc']):+.2f}" if c and f else "–"

    def reach(t):  # first IID round whose accuracy is within 0.5 points of centralized
        c, f = data["centralized"].get(f"task{t}"), data["iid"].get(f"task{t}")
        if not (c and f):
            return "–"
        hits = [i + 1 for i, a in enumerate(f["accuracy_curve"]) if a >= c["test_acc"] - 0.005]
        return str(hits[0]) if hits else "never"

    lines = [
        "| task | centralized (100 epochs) | IID round 20 | IID − central "
        "| first IID round within 0.5 of central | Dirichlet α=0.5 | bits uplink "
        "| up kB/round float | up kB/round bits | down kB/round |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tasks:
        lines.append(f"| {t} | {acc('centralized', t)} | {acc('iid', t)} | {gap(t)} | {reach(t)} | "
                     f"{acc('dirichlet', t)} | {acc('bits', t)} | "
                     f"{kb('iid', t, 'uplink_per_round')} | {kb('bits', t, 'uplink_per_round')} |"
                     f" {kb('iid', t, 'downlink_per_round')} |")
    return "\n".join(lines)


def encoder_line(results: Path, tag: str = "") -> str:
    runs = load(results / f"federated{tag}-iid.json").get("runs", {})
    sha = next((r["encoder_sha256"] for r in runs.values() if r.get("encoder_sha256")), None)
    return f"Codes from the encoder with SHA-256 `{sha}`.\n\n" if sha else ""


def dirichlet_splits(codes: Path, tasks: list[str], clients: int, alpha: float,
                     seed: int) -> str:
    """The label skew the Dirichlet runs trained on: per client, its samples and its share of
    the task's first class (recomputed with the same deterministic split the clients use)."""
    from hybnn_cli.codes import read_codes
    from hybnn_cli.fed.partition import dirichlet_partition
    from hybnn_cli.tasks import parse_task

    labels = read_codes(codes, "train").labels
    rows = []
    for t in tasks:
        task = parse_task(t)
        _, y = task.select(labels)
        parts = dirichlet_partition(y, clients, alpha, seed)
        cells = ", ".join(f"{len(p)} ({100 * (y[p] == 0).mean():.0f}% digit {task.classes[0]})"
                          for p in parts)
        rows.append(f"- task {t}: {cells}")
    return "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--tasks", default="1,2,3,4,5")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate passed to both commands (default: theirs)")
    p.add_argument("--tag", default="", help="suffix of the result files, e.g. -lr1e-3")
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--models", type=Path, default=Path("runs/bench-fed"))
    args = p.parse_args(argv)
    tasks = args.tasks.split(",")
    args.results.mkdir(parents=True, exist_ok=True)
    args.models.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "OMP_NUM_THREADS": "1"}
    for variant in args.variants.split(","):
        path = args.results / f"federated{args.tag}-{variant}.json"
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
    md = args.results / f"federated{args.tag}.md"
    md.write_text("# Federated vs centralized task BNN (full MNIST codes, "
                  f"{args.clients} clients, {args.rounds} rounds)\n\n"
                  f"Made by `python {shlex.join(['benchmarks/federated.py', *sys.argv[1:]])}`; "
                  f"every cell comes from the command recorded beside it in "
                  f"`federated{args.tag}-<variant>.json`. "
                  "Accuracies in % on the MNIST test set; bytes are Flower message payloads "
                  "summed over the clients (3 clients: about 111 kB each way per client and "
                  "round with float weights).\n\n" + encoder_line(args.results, args.tag)
                  + table(args.results, tasks, args.tag) + "\n\n"
                  "Dirichlet α=0.5 split of each task's training set (samples per client, "
                  "share of the first digit):\n\n"
                  + dirichlet_splits(args.codes, tasks, args.clients, 0.5, args.seed) + "\n")
    print(md.read_text())


if __name__ == "__main__":
    main()
