"""Pretraining at server scale, measured on this machine.

`scaling`: VAE pretraining on full MNIST with one process (2 and 1 torch threads) and with two
processes under torchrun (gloo, 1 thread each): seconds per epoch and the final loss, read from
each run's own JSON. Then the sizes that decide scaling to N machines: the encoder+decoder
gradient all-reduced at every step (bytes), its all-reduce time between 2 gloo processes on
loopback (median), and a plain model of the epoch time on N machines built from the measured
per-step compute and those bytes at a stated network bandwidth (computed where it is shown,
`docgen.ddp_scaling`). Writes `benchmarks/results/ddp-scaling.json`.

`union`: an encoder pretrained on mnist+fashion-mnist (120,000 images) against one pretrained on
MNIST alone, same settings: the validation and test accuracy of task BNNs 1–5 trained on each
encoder's MNIST codes, the whole pipeline (VAE and BNNs) once per seed (`--seeds`), mean ± std
over the seeds with the per-seed values kept. Writes `benchmarks/results/union-encoder.json`
(version 2) after each encoder and seed; a rerun with the same settings keeps the seeds already
there made by the same code, so an interrupted run resumes.

Each file's header is the provenance of its run (`results.run_record`, taken when it starts); each
row (a pretraining run, an encoder's seed) holds the record of the run that made it.

Usage: python benchmarks/server_scale.py scaling [--epochs 2] [--work runs/server-scale]
       python benchmarks/server_scale.py union [--vae-epochs 3] [--bnn-epochs 30] [--threads 2]
                                               [--seeds 0,1,2]
Smaller data (tests): --dataset (scaling) or --datasets/--codes-dataset (union), --data-dir,
--limit (the first N images of each split).
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
SCALING_VERSION = 1
UNION_VERSION = 2  # 2: several seeds (1: one, "seed" and each encoder's numbers at its top level)


def _pretrain_run(label: str, launcher: list[str], threads: int, args, out: Path) -> dict:
    from hybnn_cli.study.provenance import end_run, run_record

    cmd = [*launcher, "pretrain-vae", "--epochs", str(args.epochs), "--seed", "0", "--threads",
           str(threads), "--device", "cpu", "--json", "--out", str(out),
           *_data_options(args, args.dataset)]
    run = run_record()
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
            "wall_seconds": wall, "load_average": [load0, os.getloadavg()[0]],
            "run": end_run(run)}


def _data_options(args, dataset: str) -> list[str]:
    """The options that pick the pretraining images (only those not at their defaults)."""
    return [*(["--dataset", dataset] if dataset != "mnist" else []),
            *(["--train-limit", str(args.limit)] if args.limit else []),
            *(["--data-dir", str(args.data_dir)] if args.data_dir else [])]


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
    from hybnn_cli.models.vae import BinaryVAE

    work = args.work
    one = [sys.executable, "-m", "hybnn_cli"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "hybnn_cli"]
    from hybnn_cli.data.pretrain_sets import load_pretrain_images

    runs = [_pretrain_run("1 process × 2 threads", one, 2, args, work / "p1t2.pt"),
            _pretrain_run("1 process × 1 thread", one, 1, args, work / "p1t1.pt"),
            _pretrain_run("2 processes × 1 thread (torchrun, gloo)", two, 1, args,
                          work / "p2t1.pt")]
    model = BinaryVAE(200)
    numel = sum(p.numel() for p in model.parameters())
    grad_bytes = 4 * numel
    ar = allreduce_seconds(numel, args.reps)
    n_train = len(load_pretrain_images(args.dataset, "train", args.data_dir))
    steps = -(-min(n_train, args.limit or n_train) // 128)
    return {"epochs": args.epochs, "dataset": args.dataset, "batch_size": 128, "runs": runs,
            "parameters": numel, "gradient_bytes_per_step": grad_bytes,
            "steps_per_epoch": steps,
            "allreduce_loopback_2proc_seconds": {"median": statistics.median(ar),
                                                 "min": min(ar), "reps": len(ar)}}


def union(args, save) -> dict:
    """Each encoder in turn, each seed in turn (`save(body)` after each); a seed of an encoder
    already in `args.out`, made by this code with these settings, is kept."""
    from hybnn_cli.study.provenance import read_result, same_code
    from hybnn_cli.threads import using

    seeds = [int(x) for x in args.seeds.split(",")]
    body = {"vae_epochs": args.vae_epochs, "bnn_epochs": args.bnn_epochs, "seeds": seeds,
            "codes_dataset": args.codes_dataset, "threads": args.threads, "limit": args.limit,
            "encoders": []}
    old = read_result(args.out, UNION_FORMAT) if args.out.is_file() else {}
    same_settings = (old.get("format_version") == UNION_VERSION
                     and all(old.get(k) == v for k, v in body.items()
                             if k not in ("encoders", "seeds")))
    kept = {e["pretrain_dataset"]: {s: r for s, r in e["per_seed"].items()
                                    if same_code(r.get("run"), args.run)}
            for e in old.get("encoders", []) if same_settings}
    with using(args.threads):
        for dataset in args.datasets.split(","):
            per_seed: dict[str, dict] = {}
            body["encoders"].append({})
            for seed in seeds:
                per_seed[str(seed)] = (kept.get(dataset, {}).get(str(seed))
                                       or _union_one(args, dataset, seed))
                body["encoders"][-1] = _union_encoder(dataset, per_seed)
                save(body)
    return body


def _union_encoder(dataset: str, per_seed: dict[str, dict]) -> dict:
    """An encoder's row: each task's validation and test accuracy, mean ± std over the seeds
    (`continual.study.mean_std`), and the seeds' runs."""
    from hybnn_cli.study.continual_runs import mean_std

    runs = [per_seed[s] for s in sorted(per_seed, key=int)]
    tasks = {t: {split: mean_std([r["tasks"][t][split] for r in runs])
                 for split in ("val_acc", "test_acc")} for t in runs[0]["tasks"]}
    return {"pretrain_dataset": dataset, "n_pretrain_images": runs[0]["n_pretrain_images"],
            "seeds": sorted(int(s) for s in per_seed), "tasks": tasks,
            "vae_seconds": mean_std([r["vae_seconds"] for r in runs]), "per_seed": per_seed}


def _union_one(args, dataset: str, seed: int) -> dict:
    """Pretrain on `dataset`, encode the codes data set, train BNNs for tasks 1–5, all with
    `seed`."""
    from hybnn_cli.data.pretrain_sets import load_pretrain_images
    from hybnn_cli.data.tasks import parse_task
    from hybnn_cli.study.provenance import end_run, run_record
    from hybnn_cli.train import stages
    from hybnn_cli.train.configs import BNNConfig, VAEConfig

    run = run_record()
    folder = args.work / dataset / f"seed{seed}"
    t0 = time.perf_counter()
    vae = stages.pretrain_vae(VAEConfig(dataset=dataset, epochs=args.vae_epochs, seed=seed,
                                        threads=args.threads, train_limit=args.limit),
                              folder / "vae.pt", args.data_dir)
    vae_s = time.perf_counter() - t0
    stages.extract_codes(folder / "vae.pt", folder / "codes.h5", args.codes_dataset,
                         args.data_dir, limit=args.limit)
    tasks = {}
    for t in ("1", "2", "3", "4", "5"):
        task = parse_task(t, None)
        m = stages.train_task_bnn(folder / "codes.h5", task,
                                  BNNConfig(task=task.name, epochs=args.bnn_epochs, seed=seed,
                                            threads=args.threads), folder / f"bnn-{t}.pt")
        tasks[task.name] = {"val_acc": m["val_acc"], "test_acc": m["test_acc"]}
        print(dataset, f"seed {seed}", task.name, tasks[task.name], flush=True)
    n_images = len(load_pretrain_images(dataset, "train", args.data_dir))
    return {"seed": seed, "n_pretrain_images": min(n_images, args.limit or n_images),
            "vae_seconds": vae_s, "vae_train_loss": vae["train_loss"], "tasks": tasks,
            "run": end_run(run)}


def main(argv=None) -> None:
    from hybnn_cli.study.provenance import end_run, start_run, write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("scaling", "union"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--vae-epochs", type=int, default=3)
    p.add_argument("--bnn-epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2, help="union: torch threads")
    p.add_argument("--seeds", default="0,1,2", help="union: each encoder and its BNNs per seed")
    p.add_argument("--work", type=Path, default=Path("runs/server-scale"))
    p.add_argument("--out", type=Path)
    p.add_argument("--dataset", default="mnist", help="scaling: the pretraining images")
    p.add_argument("--datasets", default="mnist,mnist+fashion-mnist",
                   help="union: the pretraining sets compared")
    p.add_argument("--codes-dataset", default="mnist", help="union: the tasks' data set")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--limit", type=int, default=None, help="the first N images of each split")
    p.add_argument("--reps", type=int, default=30, help="scaling: all-reduces timed")
    args = p.parse_args(argv)
    fmt, version = ((SCALING_FORMAT, SCALING_VERSION) if args.what == "scaling"
                    else (UNION_FORMAT, UNION_VERSION))
    args.out = args.out or RESULTS / ("ddp-scaling.json" if args.what == "scaling"
                                      else "union-encoder.json")
    argv_rec = ["python", "benchmarks/server_scale.py",
                *(argv if argv is not None else sys.argv[1:])]
    args.run = start_run(args.out, argv_rec)

    def save(body: dict) -> None:
        write_result(args.out, fmt, version, body, argv=argv_rec, run=end_run(args.run))

    save(scaling(args) if args.what == "scaling" else union(args, save))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
