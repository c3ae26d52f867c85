"""Pretraining at server scale, measured on this machine.

`scaling`: VAE pretraining on full MNIST with one process (2 and 1 torch threads) and with two
processes under torchrun (gloo, 1 thread each): seconds per epoch and the final loss, read from
each run's own JSON. Then the sizes that decide scaling to N machines: the encoder+decoder
gradient all-reduced at every step (bytes), its all-reduce time between 2 gloo processes on
loopback (median), and a plain model of the epoch time on N machines built from the measured
per-step compute and those bytes at a stated network bandwidth (computed where it is shown,
`docgen.ddp_scaling`). Writes `benchmarks/results/ddp-scaling.json`.

`union`: an encoder pretrained on mnist+fashion-mnist (120,000 images) against one pretrained on
MNIST alone, same settings and seed: the validation and test accuracy of task BNNs 1–5 trained on
each encoder's MNIST codes. Writes `benchmarks/results/union-encoder.json`.

Usage: python benchmarks/server_scale.py scaling [--epochs 2] [--work runs/server-scale]
       python benchmarks/server_scale.py union [--vae-epochs 3] [--bnn-epochs 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SCALING_FORMAT, UNION_FORMAT = "hybnn-ddp-scaling", "hybnn-union-encoder"


def _pretrain_run(label: str, launcher: list[str], threads: int, epochs: int, out: Path) -> dict:
    cmd = [*launcher, "pretrain-vae", "--epochs", str(epochs), "--seed", "0", "--threads",
           str(threads), "--device", "cpu", "--json", "--out", str(out)]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ,
                                                                  "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"{label} failed:\n{r.stderr}")
    res = json.loads(r.stdout)
    hist = res["history"]
    return {"label": label, "command": " ".join(cmd[cmd.index("pretrain-vae") - 1:]),
            "processes": hist[-1].get("processes", 1), "threads_per_process": threads,
            "epoch_seconds": [h["epoch_seconds"] for h in hist],
            "train_loss": [h["train_loss"] for h in hist], "test_recon": hist[-1]["test_recon"],
            "wall_seconds": wall, "load_average": [load0, os.getloadavg()[0]]}


def _allreduce_worker(rank: int, port: int, numel: int, reps: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    t = torch.ones(numel)
    times = []
    for i in range(reps + 5):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def allreduce_seconds(numel: int, reps: int = 30) -> list[float]:
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "t.json"
        mp.spawn(_allreduce_worker, args=(port, numel, reps, str(out)), nprocs=2, join=True)
        return json.loads(out.read_text())


def scaling(args) -> dict:
    from hybnn_cli.vae import BinaryVAE

    work = args.work
    one = [sys.executable, "-m", "hybnn_cli"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "hybnn_cli"]
    runs = [_pretrain_run("1 process × 2 threads", one, 2, args.epochs, work / "p1t2.pt"),
            _pretrain_run("1 process × 1 thread", one, 1, args.epochs, work / "p1t1.pt"),
            _pretrain_run("2 processes × 1 thread (torchrun, gloo)", two, 1, args.epochs,
                          work / "p2t1.pt")]
    model = BinaryVAE(200)
    numel = sum(p.numel() for p in model.parameters())
    grad_bytes = 4 * numel
    ar = allreduce_seconds(numel)
    steps = -(-60_000 // 128)
    return {"epochs": args.epochs, "dataset": "mnist", "batch_size": 128, "runs": runs,
            "parameters": numel, "gradient_bytes_per_step": grad_bytes,
            "steps_per_epoch": steps,
            "allreduce_loopback_2proc_seconds": {"median": statistics.median(ar),
                                                 "min": min(ar), "reps": len(ar)}}


def union(args) -> dict:
    from hybnn_cli.threads import using

    with using(args.threads):
        encoders = [_union_one(args, d) for d in ("mnist", "mnist+fashion-mnist")]
    return {"vae_epochs": args.vae_epochs, "bnn_epochs": args.bnn_epochs, "seed": 0,
            "codes_dataset": "mnist", "threads": args.threads, "encoders": encoders}


def _union_one(args, dataset: str) -> dict:
    """Pretrain on `dataset`, encode MNIST, train BNNs for tasks 1–5 (seed 0)."""
    from hybnn_cli import stages
    from hybnn_cli.pretrain_data import load_pretrain_images
    from hybnn_cli.tasks import parse_task
    from hybnn_cli.train_bnn import BNNConfig
    from hybnn_cli.train_vae import VAEConfig

    folder = args.work / dataset
    t0 = time.perf_counter()
    vae = stages.pretrain_vae(VAEConfig(dataset=dataset, epochs=args.vae_epochs, seed=0,
                                        threads=args.threads), folder / "vae.pt")
    vae_s = time.perf_counter() - t0
    stages.extract_codes(folder / "vae.pt", folder / "codes.h5", "mnist")
    tasks = {}
    for t in ("1", "2", "3", "4", "5"):
        task = parse_task(t, None)
        m = stages.train_task_bnn(folder / "codes.h5", task,
                                  BNNConfig(task=task.name, epochs=args.bnn_epochs, seed=0,
                                            threads=args.threads), folder / f"bnn-{t}.pt")
        tasks[task.name] = {"val_acc": m["val_acc"], "test_acc": m["test_acc"]}
        print(dataset, task.name, tasks[task.name], flush=True)
    return {"pretrain_dataset": dataset,
            "n_pretrain_images": len(load_pretrain_images(dataset, "train")),
            "vae_seconds": vae_s, "vae_train_loss": vae["train_loss"], "tasks": tasks}


def main(argv=None) -> None:
    from hybnn_cli.results import write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("scaling", "union"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--vae-epochs", type=int, default=3)
    p.add_argument("--bnn-epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2, help="union: torch threads")
    p.add_argument("--work", type=Path, default=Path("runs/server-scale"))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.what == "scaling":
        body, fmt = scaling(args), SCALING_FORMAT
        out = args.out or RESULTS / "ddp-scaling.json"
    else:
        body, fmt = union(args), UNION_FORMAT
        out = args.out or RESULTS / "union-encoder.json"
    write_result(out, fmt, 1, body, argv=["python", "benchmarks/server_scale.py",
                                          *(argv if argv is not None else sys.argv[1:])])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
