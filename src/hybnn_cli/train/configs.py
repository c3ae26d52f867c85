"""The settings of pretraining and task training, as dataclasses saved in every checkpoint, and
the learning-rate schedule they name. Torch-free, so that reading a setting never loads torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hybnn_kernels.layout import CODE_BITS


@dataclass
class VAEConfig:
    dataset: str = "mnist"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    latent_bits: int = CODE_BITS
    kl_weight: float = 1.0
    seed: int = 0
    threads: int | None = None  # the threads it ran with, recorded (set by `threads.using`)
    train_limit: int | None = None  # use only the first N training images (tests, quick runs)
    device: str = "cpu"  # the device that trained it (`device.resolve_device`)
    data: str | None = None  # --data PATH: images from files (`data.files`) instead of `dataset`
    test_fraction: float | None = None  # --test-fraction of an unsplit image folder
    image_size: int | None = None  # square size the VAE takes (None: 28, or the data's own)
    channels: int | None = None  # 1 or 3 (None: 1, or the data's own); set by the run
    resize: str | None = None  # how images were brought to image_size (`labelled.RESIZE`)

    def to_dict(self) -> dict:
        """The settings; those that are None left out (so the records of runs on named
        datasets at 1 × 28 × 28 keep the settings they were made with)."""
        d = asdict(self)
        for key in ("data", "test_fraction", "image_size", "channels", "resize"):
            if d[key] is None:
                del d[key]
        return d


@dataclass
class BNNConfig:
    task: str = "3"
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-2
    schedule: str = "cosine"  # learning rate over epochs: cosine (to 0) or constant
    hidden: int = 128
    seed: int = 0
    threads: int | None = None  # the threads it ran with, recorded (set by `threads.using`)
    val_fraction: float = 0.1  # share of the training split held out for validation (`splits`)
    device: str = "cpu"  # the device that trained it (`device.resolve_device`)

    def to_dict(self) -> dict:
        return asdict(self)


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """The cosine schedule: `base` at epoch 0, falling to 0 at `epochs`."""
    return base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def lr_at(cfg: BNNConfig, epoch: int) -> float:
    if cfg.schedule == "constant":
        return cfg.lr
    return cosine_lr(cfg.lr, epoch, cfg.epochs)
