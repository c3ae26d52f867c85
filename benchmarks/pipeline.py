"""Run the paper's pipeline at its default settings on full MNIST and record the accuracies.

    python benchmarks/pipeline.py [--work runs/full] [--seed 0] [--threads 1]

Runs `hybnn pretrain-vae` (20 epochs), `hybnn extract`, then `hybnn train-bnn` (100 epochs) for
tasks 1–5 and the 10-class problem (hidden 128, the paper's width, 512 and 2048), each as its own
command with --json, skipping a stage whose output already exists. Writes
benchmarks/results/pipeline.json with every command, config, accuracy and timing.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def hybnn(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "hybnn_cli", *args, "--json"]
    print("$ hybnn " + shlex.join(args), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    result = json.loads(out)
    result["wall_seconds"] = time.perf_counter() - t0
    result["command"] = "hybnn " + shlex.join(args)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "pipeline.json"))
    a = ap.parse_args()
    work = Path(a.work)
    common = ["--seed", str(a.seed), "--threads", str(a.threads)]
    record: dict = {"python": platform.python_version(), "machine": platform.processor() or
                    platform.machine(), "stages": {}}
    vae, codes = work / "vae.pt", work / "codes.h5"
    if not vae.exists():
        record["stages"]["pretrain-vae"] = hybnn(["pretrain-vae", "--out", str(vae), *common])
    else:  # made earlier: record what the checkpoint says made it
        import torch

        ckpt = torch.load(vae, weights_only=True)
        record["stages"]["pretrain-vae"] = {
            "reused": str(vae), "config": ckpt["config"], "seed": ckpt["seed"],
            "encoder_sha256": ckpt["encoder_sha256"], "history": ckpt["metrics"]["history"]}
    if not codes.exists():
        record["stages"]["extract"] = hybnn(["extract", "--vae", str(vae), "--out", str(codes)])
    else:
        record["stages"]["extract"] = {"reused": str(codes)}
    runs = [(str(t), 128) for t in range(1, 6)] + [("all", 128), ("all", 512), ("all", 2048)]
    record["bnn"] = []
    for task, hidden in runs:
        r = hybnn(["train-bnn", "--codes", str(codes), "--task", task, "--hidden", str(hidden),
                   "--out", str(work / f"bnn-{task}-h{hidden}.pt"), *common])
        r.pop("history", None)
        r["hidden"] = hidden
        record["bnn"].append(r)
        print(f"{r['task']} hidden {hidden}: test accuracy {r['test_acc']:.2%}", file=sys.stderr)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
