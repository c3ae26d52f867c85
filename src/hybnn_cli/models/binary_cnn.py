"""The paper's comparison model: a binary CNN trained end to end on images.

It is the encoder and the task BNN combined, all binary: three stride-2 3×3 binary convolutions
(1→32→64→128 channels, 28→14→7→4) each followed by BatchNorm and sign, then binary fully connected
layers 2048→200 and 200→128 (BatchNorm and sign after each) and 128→n_classes with a final
BatchNorm. Weights are binarized with `sign_ste` (BinaryConnect latent weights, clipped to [−1, 1]
by the training loop); activations with the same sign and straight-through estimator.

The input binarization (`binarize`), applied to pixels in [0, 1]:
- `sign`: the paper's, the project's sign(x) with sign(0) = +1. Every pixel in [0, 1] is ≥ 0, so
  every image becomes the same all-ones image and the network can only output one class.
- `threshold`: pixel ≥ 0.5 → +1, else −1.
- `none`: the pixels enter the first binary convolution as real values (binary weights, real
  inputs: BinaryNet's first layer).

The model takes image tensors (B, 1, 28, 28) in [0, 1] and returns class scores, so the task
BNN's loop (`train.bnn_loop.train_bnn`, `train_epoch`, `evaluate`) trains it unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from hybnn_kernels.layout import CODE_BITS
from torch import nn

from hybnn_cli.errors import HybnnError
from hybnn_cli.models.layers import BinaryConv2d, BinaryLinear
from hybnn_cli.models.quantizers import sign, sign_ste

BINARIZE = ("sign", "threshold", "none")


@dataclass
class BaselineConfig:
    """Training settings; `train.bnn_loop.train_bnn` reads epochs, batch_size, lr, schedule and seed
    from it exactly as from a `BNNConfig`."""

    task: str = "3"
    binarize: str = "sign"
    dataset: str = "mnist"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "cosine"
    seed: int = 0
    threads: int | None = None  # the threads it ran with, recorded (set by `threads.using`)
    train_limit: int | None = None  # use only the first N images of each split (quick runs)
    val_fraction: float = 0.1  # share of the training split held out for validation (`splits`)
    device: str = "cpu"  # the device that trained it (`device.resolve_device`)

    def to_dict(self) -> dict:
        return asdict(self)


def check_binarize(mode: str) -> str:
    if mode not in BINARIZE:
        raise HybnnError(f"unknown input binarization '{mode}': use {', '.join(BINARIZE)}")
    return mode


def binarize_input(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Pixels in [0, 1] → the first layer's input (see the module docstring)."""
    if mode == "sign":
        return sign(x)
    if mode == "threshold":
        return sign(x - 0.5)
    if mode == "none":
        return x
    raise HybnnError(f"unknown binarization '{mode}': use {', '.join(BINARIZE)}")


class _SignAct(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_ste(x)


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [BinaryConv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), _SignAct()]


def _fc_block(fin: int, fout: int) -> list[nn.Module]:
    return [BinaryLinear(fin, fout), nn.BatchNorm1d(fout), _SignAct()]


class BinaryCNN(nn.Module):
    def __init__(self, n_classes: int = 2, binarize: str = "sign", code_bits: int = CODE_BITS,
                 hidden: int = 128):
        super().__init__()
        self.binarize = check_binarize(binarize)
        self.n_classes = n_classes
        self.features = nn.Sequential(*_conv_block(1, 32), *_conv_block(32, 64),
                                      *_conv_block(64, 128), nn.Flatten())
        self.classifier = nn.Sequential(*_fc_block(128 * 4 * 4, code_bits),
                                        *_fc_block(code_bits, hidden),
                                        BinaryLinear(hidden, n_classes), nn.BatchNorm1d(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, n_classes) for images x (B, 1, 28, 28) in [0, 1]."""
        return self.classifier(self.features(binarize_input(x, self.binarize)))

    def shape(self) -> dict:
        return {"n_classes": self.n_classes, "binarize": self.binarize}


@torch.no_grad()
def distinct_inputs(x: torch.Tensor, mode: str) -> int:
    """How many different first-layer inputs the images x (N, 1, 28, 28) in [0, 1] give."""
    return int(torch.unique(binarize_input(x, mode).flatten(1), dim=0).shape[0])


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Predicted class indices (eval mode)."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(dev)).argmax(1).cpu()
                      for i in range(0, len(x), batch_size)])
