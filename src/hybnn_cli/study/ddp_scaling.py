"""Pretraining at server scale, measured on this machine; its result file and its generated block.

`measure`: VAE pretraining with one process (2 and 1 torch threads) and with two processes under
torchrun (gloo, 1 thread each): seconds per epoch and the final loss, read from each run's own
JSON. Then the sizes that decide scaling to N machines: the encoder+decoder gradient all-reduced
at every step (bytes) and its all-reduce time between 2 gloo processes on loopback (median). The
block adds a plain model of the epoch time on N machines (`scaling_model`), built from the
measured per-step compute and those bytes at a stated network bandwidth. `run_scaling` writes
`benchmarks/results/ddp-scaling.json`, whose header is the provenance of its run and whose rows
(the pretraining runs) each hold the record of the run that made them; `benchmarks/server_scale.py
scaling` runs it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.docgen import renderer, source, table
from hybnn_cli.study.provenance import end_run, read_result, run_record, start_run, write_result
from hybnn_cli.threads import child_env
from hybnn_cli.train.configs import VAEConfig

FORMAT = "hybnn-ddp-scaling"
VERSION = 2  # 2: each configuration repeated (`repeats`), rows keep their "repeat"
BATCH_SIZE = VAEConfig.batch_size  # `hybnn pretrain-vae`'s, which the runs keep


def data_options(dataset: str, limit: int | None, data_dir: Path | None) -> list[str]:
    """The options that pick the pretraining images (only those not at their defaults)."""
    return [*(["--dataset", dataset] if dataset != "mnist" else []),
            *(["--train-limit", str(limit)] if limit else []),
            *(["--data-dir", str(data_dir)] if data_dir else [])]


def pretrain_run(label: str, launcher: list[str], threads: int, epochs: int, data: list[str],
                 out: Path) -> dict:
    """One `pretrain-vae` run of `epochs` (seed 0, on the images `data` picks) started by
    `launcher` with `threads` threads per process: its epoch times, losses, load and record."""
    cmd = [*launcher, "pretrain-vae", "--epochs", str(epochs), "--seed", "0", "--threads",
           str(threads), "--device", "cpu", "--json", "--out", str(out), *data]
    run = run_record()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=child_env(1))
    wall = time.perf_counter() - t0
    if r.returncode:
        raise HybnnError(f"{label} failed:\n{r.stderr}")
    res = json.loads(r.stdout)
    hist = res["history"]
    return {"label": label, "command": " ".join(cmd[cmd.index("pretrain-vae") - 1:]),
            "processes": hist[-1].get("processes", 1), "threads_per_process": threads,
            "epoch_seconds": [h["epoch_seconds"] for h in hist],
            "train_loss": [h["train_loss"] for h in hist], "test_recon": hist[-1]["test_recon"],
            "wall_seconds": wall, "load_average": [load0, os.getloadavg()[0]],
            "run": end_run(run)}


def _allreduce_worker(rank: int, store_file: str, numel: int, reps: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    # the two processes meet through a file, not a port picked beforehand (which another
    # process could take before rank 0 listens on it)
    dist.init_process_group("gloo", store=dist.FileStore(store_file, 2), rank=rank,
                            world_size=2)
    t = torch.ones(numel)
    times = []
    for i in range(reps + 5):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    dist.barrier()  # neither leaves while the other may still read from their connection
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def allreduce_seconds(numel: int, reps: int = 30) -> list[float]:
    """Seconds of each of `reps` all-reduces of `numel` float32 values between 2 gloo processes
    on loopback (after 5 untimed)."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "t.json"
        try:
            mp.spawn(_allreduce_worker, args=(str(Path(d) / "store"), numel, reps, str(out)),
                     nprocs=2, join=True)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
            # a worker that raised: its traceback is in the message
            raise HybnnError(f"the all-reduce timing failed:\n{e}") from None
        return json.loads(out.read_text())


def measure(work: Path, epochs: int = 2, dataset: str = "mnist", data_dir: Path | None = None,
            limit: int | None = None, reps: int = 30, repeats: int = 5) -> dict:
    """The three pretraining runs, each `repeats` times, in turn (one of each, then again, so
    that a change of load falls on all three alike; checkpoints in `work`), the gradient's size
    and its all-reduce time: the result file's body."""
    from hybnn_cli.data.pretrain_sets import load_pretrain_images
    from hybnn_cli.models.vae import BinaryVAE

    work = Path(work)
    one = [sys.executable, "-m", "hybnn_cli"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "hybnn_cli"]
    data = data_options(dataset, limit, data_dir)
    if repeats < 1:
        raise HybnnError(f"--repeats must be at least 1, got {repeats}")
    configs = (("1 process × 2 threads", one, 2, "p1t2.pt"),
               ("1 process × 1 thread", one, 1, "p1t1.pt"),
               ("2 processes × 1 thread (torchrun, gloo)", two, 1, "p2t1.pt"))
    runs = [{**pretrain_run(label, launcher, threads, epochs, data, work / name), "repeat": i}
            for i in range(repeats) for label, launcher, threads, name in configs]
    model = BinaryVAE(200)
    numel = sum(p.numel() for p in model.parameters())
    ar = allreduce_seconds(numel, reps)
    n_train = len(load_pretrain_images(dataset, "train", data_dir))
    steps = -(-min(n_train, limit or n_train) // BATCH_SIZE)
    return {"epochs": epochs, "dataset": dataset, "batch_size": BATCH_SIZE, "repeats": repeats,
            "runs": runs,
            "parameters": numel, "gradient_bytes_per_step": 4 * numel,
            "steps_per_epoch": steps,
            "allreduce_loopback_2proc_seconds": {"median": statistics.median(ar),
                                                 "min": min(ar), "reps": len(ar)}}


def run_scaling(out: Path, argv: list[str], work: Path, **settings) -> dict:
    """`measure(work, **settings)`, written to `out` as made by the command `argv`."""
    run = start_run(out, argv)
    return write_result(out, FORMAT, VERSION, measure(work, **settings), argv=argv,
                        run=end_run(run))


# ── the generated block ───────────────────────────────────────────────────────────────────────
SCALING = "ddp-scaling.json"
BANDWIDTHS_GBIT = (1, 10)
MACHINES = (1, 2, 4, 8, 16)


def scaling_model(r: dict) -> tuple[float, str, list[list]]:
    """Epoch time on N machines: steps · (compute per step / N + ring all-reduce of the gradient
    at a bandwidth), with the compute per step of the fastest one-process run measured."""
    ones = [x for x in r["runs"] if x["processes"] == 1]
    best = min(ones, key=lambda x: min(x["epoch_seconds"]))
    compute = min(best["epoch_seconds"]) / r["steps_per_epoch"]
    rows = []
    for n in MACHINES:
        cells = []
        for gbit in BANDWIDTHS_GBIT:
            comm = 2 * (n - 1) / n * r["gradient_bytes_per_step"] / (gbit * 1e9 / 8)
            epoch = r["steps_per_epoch"] * (compute / n + comm)
            cells.append(f"{epoch:.1f} s ({r['steps_per_epoch'] * compute / epoch:.1f}×)")
        rows.append([n, *cells])
    return compute, best["label"], rows


def _by_label(runs: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for x in runs:
        grouped.setdefault(x["label"], []).append(x)
    return grouped


def _scaling_row(label: str, runs: list[dict]) -> list[str]:
    """One configuration's repeats: median (min–max) seconds per epoch, the last repeat's losses
    (the same seed and data each time), the lowest and highest load average seen."""
    secs = [s for x in runs for s in x["epoch_seconds"]]
    spread = f" ({min(secs):.1f}–{max(secs):.1f})" if len(secs) > 1 else ""
    loads = [a for x in runs for a in x["load_average"]]
    last = runs[-1]
    return [label, f"{statistics.median(secs):.1f}{spread}", f"{last['train_loss'][-1]:.2f}",
            f"{last['test_recon']:.2f}", f"{min(loads):.1f} – {max(loads):.1f}"]


@renderer("ddp-scaling")
def ddp_scaling(results_dir: Path) -> str:
    r = read_result(Path(results_dir) / SCALING, FORMAT)
    rows = [_scaling_row(label, runs) for label, runs in _by_label(r["runs"]).items()]
    ar = r["allreduce_loopback_2proc_seconds"]
    compute, base, model_rows = scaling_model(r)
    cores = r["machine"]["cores"]
    loaded = max(max(x["load_average"]) for x in r["runs"]) > cores
    load_text = ("The load exceeded the cores during some runs: there the times measure the "
                 "contention more than the code (a process with more threads than it gets cores "
                 "waits for them), and the model below, built on inflated step times, makes the "
                 "all-reduce look cheaper than it is." if loaded else
                 "The load stayed within the cores during every run.")
    return (f"VAE pretraining on full MNIST ({r['epochs']} epoch(s), global batch "
            f"{r['batch_size']}, seed 0) on this machine ({cores} cores), each run repeated "
            f"{r.get('repeats', 1)} time(s) in turn; seconds per epoch: median (min–max) over the "
            f"runs; the load average over the runs' starts and ends. {load_text} On two cores, "
            f"two 1-thread processes do the arithmetic of one 2-thread process plus an all-reduce "
            f"per step, so little gain is to be expected from them; the times say nothing of a "
            f"dedicated server.\n\n"
            + table(["run", "seconds per epoch", "final training loss", "test recon (nats)",
                     "load average"], rows)
            + f"\n\nEach step all-reduces the encoder + decoder gradient: {r['parameters']:,} "
              f"float32 values, {r['gradient_bytes_per_step'] / 1e6:.2f} MB, "
              f"{r['steps_per_epoch']} times an epoch; between 2 gloo processes on loopback that "
              f"took {1e3 * ar['median']:.2f} ms (median of {ar['reps']}).\n\n"
              f"A model, not a measurement, for N machines: epoch(N) = steps · (compute per step "
              f"/ N + 2 (N − 1) / N · gradient bytes / bandwidth), with the compute of "
              f"{1e3 * compute:.0f} ms per step of the fastest one-process run above ({base}); "
              f"it ignores latency, the overlap DDP makes between backward and all-reduce, and "
              f"the lower efficiency of smaller per-process batches.\n\n"
            + table(["machines", *(f"epoch at {g} Gbit/s (speed-up)" for g in BANDWIDTHS_GBIT)],
                    model_rows)
            + "\n\n" + source(SCALING, r))
