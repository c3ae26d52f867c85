"""Training the task BNN on codes: a pure loop (no printing, no files), shared by `train-bnn`,
the federated clients and the reproduction study.

Binarized weights use the straight-through estimator with gradient cancellation (see
`quantizers`); latent weights are clipped to [−1, 1] after every Adam step (BinaryConnect).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hybnn_cli.models.bnn import TaskBNN
from hybnn_cli.models.layers import clip_latent_weights
from hybnn_cli.train.configs import BNNConfig, lr_at


def train_epoch(model: TaskBNN, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, batch_size: int, generator: torch.Generator) -> dict:
    """One pass over (x, y) in a random order; returns mean loss and accuracy (training mode).
    Batches move to the model's device. A batch of one sample (a federated client holding a single
    code, or the tail of an epoch) trains with batch norm on its running statistics: batch
    statistics of one sample do not exist."""
    model.train()
    dev = next(model.parameters()).device
    n = len(x)
    perm = torch.randperm(n, generator=generator)
    loss_sum = 0.0
    correct = 0
    for i in range(0, n, batch_size):
        idx = perm[i:i + batch_size]
        xb, yb = x[idx].to(dev), y[idx].to(dev)
        if len(idx) == 1:
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.eval()
            scores = model(xb)
            model.train()
        else:
            scores = model(xb)
        loss = F.cross_entropy(scores, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clip_latent_weights(model)
        loss_sum += loss.item() * len(idx)
        correct += (scores.argmax(1) == yb).sum().item()
    return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1)}


@torch.no_grad()
def evaluate(model: TaskBNN, x: torch.Tensor, y: torch.Tensor, batch_size: int = 8192) -> dict:
    """Loss and accuracy in eval mode (running BatchNorm statistics)."""
    model.eval()
    dev = next(model.parameters()).device
    loss_sum = 0.0
    correct = 0
    for i in range(0, len(x), batch_size):
        scores = model(x[i:i + batch_size].to(dev))
        yb = y[i:i + batch_size].to(dev)
        loss_sum += F.cross_entropy(scores, yb, reduction="sum").item()
        correct += (scores.argmax(1) == yb).sum().item()
    return {"loss": loss_sum / max(len(x), 1), "acc": correct / max(len(x), 1)}


def train_bnn(model: TaskBNN, cfg: BNNConfig, x_train: torch.Tensor, y_train: torch.Tensor,
              x_val: torch.Tensor, y_val: torch.Tensor, optimizer: torch.optim.Optimizer,
              start_epoch: int = 0,
              on_epoch: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Train epochs start_epoch..cfg.epochs−1; one metrics dict per epoch, with the loss and
    accuracy on (x_val, y_val) when it is not empty. Never give it the test split: settings are
    chosen on these numbers.

    The order of epoch e depends only on (seed, e), so a resumed run repeats an unbroken one.
    """
    history = []
    for epoch in range(start_epoch, cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        t0 = time.perf_counter()
        tr = train_epoch(model, optimizer, x_train, y_train, cfg.batch_size, gen)
        seconds = time.perf_counter() - t0
        metrics = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_acc": tr["acc"],
                   "epoch_seconds": seconds}
        if len(x_val):
            va = evaluate(model, x_val, y_val)
            metrics.update(val_loss=va["loss"], val_acc=va["acc"])
        history.append(metrics)
        if on_epoch:
            on_epoch(epoch, metrics)
    return history
