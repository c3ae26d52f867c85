"""The ML side of a federated run (Flower's `task.py`): a client's share of the data, local
training, and the global model's evaluation. Training reuses `hybnn_cli.train.bnn_loop` as it is.

Local training: each round a client starts from the global model, makes `local_epochs` passes over
its data with a fresh optimizer, and clips latent weights after every step (as `train-bnn` does).
The learning rate follows the same cosine schedule as `train-bnn`, laid over the run's
rounds × local_epochs epochs, so a run of R rounds sees the schedule of an R·E-epoch training.

The optimizer (`client_opt`) is Adam by default, as `train-bnn`'s; `sgd` is plain SGD, the
clients' optimizer of FedAvg and of Reddi et al. 2021's FedAdam. A fresh Adam's first step is
lr · sign(g) whatever |g| (m̂ / √v̂ = g / |g|), so with a client holding a dozen codes every
client moves every weight by about lr each step, a client that fits its codes (g ≈ 0) as far as
one that does not: the mean of those steps is a vote of signs, not the gradient of the sum of the
clients' losses, and it stalls where the votes balance (docs/federated.md, "Why a thousand
clients plateau"). SGD's step is proportional to the gradient, so the mean of the clients'
steps follows the gradient of the summed loss; the scale it lacks per coordinate is the server
optimizer's job (`--server-opt adam`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from hybnn_cli.data.tasks import parse_task
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.partition import partition_indices
from hybnn_cli.models.bnn import BNNShape, TaskBNN
from hybnn_cli.threads import using as using_threads
from hybnn_cli.train.bnn_loop import evaluate, train_epoch
from hybnn_cli.train.configs import BNNConfig, lr_at
from hybnn_cli.train.task_samples import codes_task, load_task_codes


def bnn_config(cfg: FedConfig) -> BNNConfig:
    """The centralized config whose schedule a federated run follows (epochs = rounds × E)."""
    return BNNConfig(task=cfg.task, epochs=cfg.rounds * cfg.local_epochs,
                     batch_size=cfg.batch_size, lr=cfg.lr, schedule="cosine", hidden=cfg.hidden,
                     seed=cfg.seed, threads=cfg.threads)


@functools.lru_cache(maxsize=4)
def _task_data(codes: str, task: str, mtime: float) -> dict:
    task_ = codes_task(Path(codes), task)
    return {**load_task_codes(Path(codes), task_), "task": task_}


def task_data(codes: str, task: str) -> dict:
    """Both splits of the task (cached per file version: clients are called every round)."""
    return _task_data(str(codes), str(task), Path(codes).stat().st_mtime)


def client_data(cfg: FedConfig, partition_id: int, num_partitions: int,
                codes: str | None = None) -> dict:
    """This client's share of the training split: x (±1 floats), y, n_bits, encoder SHA-256."""
    data = task_data(codes or cfg.codes, cfg.task)
    x, y = data["train"]
    parts = partition_indices(y.numpy(), cfg.partition, num_partitions, cfg.alpha, cfg.seed)
    idx = torch.from_numpy(parts[partition_id])
    return {"x": x[idx], "y": y[idx], "n_bits": data["n_bits"],
            "n_classes": data["task"].n_classes,
            "encoder_sha256": data["attrs"]["encoder_sha256"]}


def model_shape(n_bits: int, cfg: FedConfig, n_classes: int | None = None) -> BNNShape:
    """The BNN of the run: `n_classes` outputs (the task's classes in the codes file; default:
    the task's over MNIST's ten classes)."""
    return BNNShape(n_bits=n_bits, hidden=cfg.hidden,
                    n_classes=n_classes or parse_task(cfg.task).n_classes)


def initial_model(shape: BNNShape, seed: int) -> TaskBNN:
    torch.manual_seed(seed)
    return TaskBNN(shape)


@functools.lru_cache(maxsize=4)
def scratch_model(shape: BNNShape) -> TaskBNN:
    """A model of this shape for a client to load the received global state into: built once
    per process (a client app is called every round, and on the in-process and simulation
    engines many clients share a process), neither seeded nor initialized with care, since
    `load_state_dict` (strict) overwrites every parameter and buffer."""
    return TaskBNN(shape)


def local_train(model: TaskBNN, x: torch.Tensor, y: torch.Tensor, cfg: FedConfig,
                server_round: int, partition_id: int) -> dict:
    """`local_epochs` passes of `train_epoch` on this client's data with a fresh optimizer
    (`cfg.client_opt`); metrics of the last pass."""
    schedule = bnn_config(cfg)
    optimizer = (torch.optim.SGD if cfg.client_opt == "sgd" else torch.optim.Adam)(
        model.parameters(), lr=cfg.lr)
    metrics = {"loss": float("nan"), "acc": float("nan")}
    with using_threads(cfg.threads):
        for e in range(cfg.local_epochs):
            epoch = (server_round - 1) * cfg.local_epochs + e
            for group in optimizer.param_groups:
                group["lr"] = lr_at(schedule, min(epoch, schedule.epochs - 1))
            gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + partition_id) * 100_003
                                                + epoch)
            metrics = train_epoch(model, optimizer, x, y, cfg.batch_size, gen)
    return metrics


def evaluate_model(model: TaskBNN, x: torch.Tensor, y: torch.Tensor,
                   threads: int = 0) -> dict:
    with using_threads(threads):
        return evaluate(model, x, y)
