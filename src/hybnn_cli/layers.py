"""Binary layers: latent float weights, binarized with sign in the forward pass.

Weights use `sign_ste` (sign(0) = +1, straight-through gradient); keep the latent weights in
[−1, 1] with `clip_latent_weights` after every optimizer step, as BinaryConnect does.
Inputs are binarized by the caller (the layers binarize only their weights), so the same layer
serves ±1 codes, sign activations and a real-valued first layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybnn_cli.quantizers import sign_ste


class BinaryLinear(nn.Linear):
    """y = x · sign(W)ᵀ, no bias (a following BatchNorm supplies the offset)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, sign_ste(self.weight))


class BinaryConv2d(nn.Conv2d):
    """2-D convolution with sign(W) weights, no bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=False)
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, sign_ste(self.weight), None)


def clip_latent_weights(model: nn.Module) -> None:
    """Clip the latent weights of every binary layer to [−1, 1] (in place, no gradient)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BinaryLinear | BinaryConv2d):
                m.weight.clamp_(-1.0, 1.0)
