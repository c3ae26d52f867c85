"""Data-parallel training under `torchrun`: PyTorch's own engine (torch.distributed and
DistributedDataParallel), no scheduler of ours.

`torchrun --nproc-per-node N -m hybnn_cli pretrain-vae …` starts N processes; each one finds the
variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and
`process_group` joins them: backend `gloo` on the CPU, `nccl` on CUDA (one GPU per process,
cuda:<LOCAL_RANK>). Without torchrun (or with a single process) `process_group` yields the
one-process `SINGLE` group and nothing is different from a plain run.

The rules every data-parallel run keeps, each written once, here:
- **Global batch.** `--batch-size` is the global batch: each of the N processes takes
  batch_size / N images per step (N must divide it), DDP averages the N gradients, so one step
  sees the same images and, up to batch norm, the same gradient as one process with that batch.
- **Order.** A `DistributedSampler` seeded with the run's seed and set to the epoch: the epoch's
  permutation is the one a single process would use (seed · 100003 + epoch), process r takes
  every N-th image of it from r on (the last few repeated if N does not divide the set).
- **Batch norm** is per process: each normalizes by the statistics of its own batch_size / N
  images. torch's SyncBatchNorm refuses CPU tensors, and on a GPU it would add one all-reduce
  per BN layer per step; with 64 images per process the per-process statistics are close to the
  global ones (the tests check one epoch's loss against one process's). DDP copies rank 0's
  running statistics to every process before each step and `sync_buffers` once more at the end
  of each epoch, so every process then holds the same weights and statistics.
- **Who writes.** Only rank 0 writes checkpoints and PNGs and shows progress; the others train.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from hybnn_cli.device import resolve_device
from hybnn_cli.errors import HybnnError


@dataclass(frozen=True)
class Group:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: a single process, no torch.distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


SINGLE = Group()


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when torchrun started this process with more than one
    process in the job, else None."""
    if "LOCAL_RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ["LOCAL_RANK"])
    except (KeyError, ValueError):
        raise HybnnError("torchrun variables RANK, WORLD_SIZE and LOCAL_RANK must be "
                         "integers") from None
    return (rank, world, local) if world > 1 else None


@contextlib.contextmanager
def process_group(device_spec: str = "auto", timeout_s: float = 1800) -> Iterator[Group]:
    """Join the torchrun job (if any) on the device `device_spec` resolves to for this process;
    leave it on exit. Without torchrun: the single process on that device."""
    env = torchrun_env()
    if env is None:
        yield Group(device=resolve_device(device_spec))
        return
    rank, world, local = env
    device = resolve_device(device_spec, local_rank=local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=_dt.timedelta(seconds=timeout_s),
                            device_id=device if device.type == "cuda" else None)
    try:
        yield Group(rank, world, local, device, backend)
        dist.barrier()  # nobody leaves before rank 0 has written its files
    finally:
        dist.destroy_process_group()


def local_batch_size(batch_size: int, group: Group) -> int:
    """Each process's share of the global batch."""
    if batch_size % group.world_size:
        raise HybnnError(f"--batch-size {batch_size} is the global batch, split equally among "
                         f"{group.world_size} processes: give a multiple of {group.world_size}")
    per = batch_size // group.world_size
    if per < 2:
        raise HybnnError(f"--batch-size {batch_size} leaves {per} image per process; batch norm "
                         f"needs at least 2: give at least {2 * group.world_size}")
    return per


def epoch_order(n: int, base_seed: int, epoch: int, group: Group,
                device: torch.device) -> tuple[torch.Tensor, torch.Generator]:
    """The indices this process trains on in `epoch`, in order, and the generator for the
    latent's Bernoulli samples. One process: one generator seeded base_seed + epoch draws the
    permutation and then the samples (as hybnn always has). N processes: a DistributedSampler
    with the same seed and permutation, and a sample generator per process."""
    seed = base_seed + epoch
    if not group.parallel:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=gen)
    else:
        sampler = DistributedSampler(range(n), num_replicas=group.world_size, rank=group.rank,
                                     shuffle=True, seed=base_seed, drop_last=False)
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.long)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + group.rank + 1)
    if device.type != "cpu":
        gen = torch.Generator(device).manual_seed(int(gen.initial_seed()))
    return order, gen


def wrap(model: torch.nn.Module, group: Group) -> torch.nn.Module:
    """The module to train: the model itself, or DistributedDataParallel around it (which
    broadcasts rank 0's weights now and averages gradients in every backward)."""
    if not group.parallel:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [group.device.index] if group.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def weighted_mean(values: dict[str, float], weight: int, group: Group) -> dict[str, float]:
    """Means over all processes of per-process means `values`, each weighing `weight` items."""
    if not group.parallel:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys] + [float(weight)], dtype=torch.float64,
                     device=_comm_device(group))
    dist.all_reduce(t)
    t = t.cpu()
    return {k: float(t[i] / t[-1]) for i, k in enumerate(keys)}


def sync_buffers(model: torch.nn.Module, group: Group) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every process."""
    if group.parallel:
        for b in model.buffers():
            dist.broadcast(b.data, src=0)


def _comm_device(group: Group) -> torch.device:
    return group.device if group.backend == "nccl" else torch.device("cpu")


def barrier(group: Group) -> None:
    if group.parallel:
        dist.barrier()
