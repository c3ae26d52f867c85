"""Pretraining the binary-latent VAE: a pure training loop (no printing, no files), reading its
images one batch at a time."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from hybnn_cli import distributed
from hybnn_cli.data.tensors import images_to_tensor
from hybnn_cli.distributed import SINGLE, Group
from hybnn_cli.models.vae import BinaryVAE, vae_loss
from hybnn_cli.train.configs import VAEConfig


@torch.no_grad()
def evaluate_vae(model: BinaryVAE, images, rows: np.ndarray | None = None,
                 batch_size: int = 1000) -> dict:
    """Mean reconstruction and KL (nats per image) with the deterministic code, over the uint8
    `images` (an array, or images read on demand) at `rows` (default: all); each batch is read
    and moved to the model's device in turn."""
    model.eval()
    device = next(model.parameters()).device
    rows = np.arange(len(images)) if rows is None else rows
    rec_sum = kl_sum = 0.0
    for i in range(0, len(rows), batch_size):
        xb = images_to_tensor(images[rows[i:i + batch_size]]).to(device)
        recon, logits = model(xb)
        _, rec, kl = vae_loss(xb, recon, logits)
        rec_sum += rec.item() * len(xb)
        kl_sum += kl.item() * len(xb)
    return {"test_recon": rec_sum / max(len(rows), 1), "test_kl": kl_sum / max(len(rows), 1)}


def train_vae(
    model: BinaryVAE,
    cfg: VAEConfig,
    train_images: np.ndarray,
    test_images: np.ndarray,
    optimizer: torch.optim.Optimizer,
    start_epoch: int = 0,
    on_step: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    group: Group = SINGLE,
) -> list[dict]:
    """Train for epochs start_epoch..cfg.epochs−1 on cfg.device; return one metrics dict per
    epoch. `model` (and the optimizer's parameters) must already be on cfg.device.

    on_step(epoch, step, n_steps, running_loss) and on_epoch(epoch, metrics) report progress.
    The shuffling of epoch e depends only on (seed, e), so a resumed run matches an unbroken one.
    Under torchrun (`group`), each process trains on its share of every global batch of
    cfg.batch_size images; the metrics are means over all processes (see `distributed`).
    The images (uint8 arrays, or `data.image_store.ImageRows` read on demand) are read and made
    tensors one batch at a time, so memory stays flat in the number of images.
    """
    device = torch.device(cfg.device)
    model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, group)
    test_rows = np.arange(group.rank, len(test_images), group.world_size)
    n = len(train_images)
    batch = distributed.local_batch_size(cfg.batch_size, group)
    history = []
    for epoch in range(start_epoch, cfg.epochs):
        order, gen = distributed.epoch_order(n, cfg.seed * 100_003, epoch, group, device)
        n_steps = (len(order) + batch - 1) // batch
        net.train()
        t0 = time.perf_counter()
        running = None
        total = rec_total = kl_total = 0.0
        for step in range(n_steps):
            rows = order[step * batch:(step + 1) * batch].numpy()
            xb = images_to_tensor(train_images[rows]).to(device)
            recon, logits = net(xb, generator=gen)
            loss, rec, kl = vae_loss(xb, recon, logits, cfg.kl_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lv = loss.item()
            running = lv if running is None else 0.98 * running + 0.02 * lv
            total += lv * len(xb)
            rec_total += rec.item() * len(xb)
            kl_total += kl.item() * len(xb)
            if on_step:
                on_step(epoch, step + 1, n_steps, running)
        seconds = time.perf_counter() - t0
        distributed.sync_buffers(model, group)
        m = len(order)
        metrics = {"epoch": epoch + 1,
                   **distributed.weighted_mean({"train_loss": total / m, "train_recon":
                                                rec_total / m, "train_kl": kl_total / m}, m,
                                               group),
                   "epoch_seconds": seconds,
                   **distributed.weighted_mean(evaluate_vae(model, test_images, test_rows),
                                               len(test_rows), group)}
        if group.parallel:
            metrics["processes"] = group.world_size
        history.append(metrics)
        if on_epoch:
            on_epoch(epoch, metrics)
    return history
