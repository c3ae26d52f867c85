"""The task BNN of HyBNN: BinaryLinear(n_bits → hidden) → BatchNorm → sign → BinaryLinear(hidden →
n_classes) → BatchNorm. Its input is the encoder's code as ±1 floats; no input binarization.

In eval mode every hidden activation is sign(BN(x · sign(W1)ᵀ)), so BN + sign fold into one integer
threshold per neuron on the popcount (see `hybnn_cli.deploy.export_head`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from hybnn_kernels.layout import CODE_BITS
from torch import nn

from hybnn_cli.models.layers import BinaryLinear
from hybnn_cli.models.quantizers import sign_ste


@dataclass(frozen=True)
class BNNShape:
    n_bits: int = CODE_BITS
    hidden: int = 128
    n_classes: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


class TaskBNN(nn.Module):
    def __init__(self, shape: BNNShape = BNNShape()):
        super().__init__()
        self.shape = shape
        self.fc1 = BinaryLinear(shape.n_bits, shape.hidden)
        self.bn1 = nn.BatchNorm1d(shape.hidden)
        self.fc2 = BinaryLinear(shape.hidden, shape.n_classes)
        self.bn2 = nn.BatchNorm1d(shape.n_classes)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The ±1 hidden activations for ±1 inputs x (B, n_bits)."""
        return sign_ste(self.bn1(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, n_classes) for ±1 inputs x (B, n_bits)."""
        return self.bn2(self.fc2(self.hidden(x)))
