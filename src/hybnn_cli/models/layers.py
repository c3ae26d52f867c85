"""Binary layers: latent float weights, binarized with sign in the forward pass.

Weights use `sign_ste` (sign(0) = +1, straight-through gradient); keep the latent weights in
[−1, 1] with `clip_latent_weights` after every optimizer step, as BinaryConnect does.
Inputs are binarized by the caller (the layers binarize only their weights), so the same layer
serves ±1 codes, sign activations and a real-valued first layer.

A `BinaryLinear` whose input is a ±1 matrix that needs no gradient (the task BNN's codes) runs
its forward product on the XNOR-popcount kernel (`hybnn_kernels.xnor_gemm`): a ±1 dot product
of fewer than 2^24 terms is an integer that float32 holds exactly whatever the order of the
sum, so the result is bit for bit the float product's, at a fraction of its cost. The weight
gradient is the same float product as torch's (grad_outputᵀ · input). Any other input, or a
small one, takes `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybnn_cli.models import fused
from hybnn_cli.models.quantizers import sign_ste

XNOR_MIN_MACS = 1 << 24  # below this many multiply-adds F.linear is as fast (packing, dispatch)


class _XnorLinear(torch.autograd.Function):
    """x · wbᵀ for ±1 x (no gradient) and ±1 wb, forward on packed bits."""

    @staticmethod
    def forward(ctx, x, wb):
        from hybnn_kernels import pack_signs, xnor_gemm

        ctx.save_for_backward(x)
        n_bits = x.shape[1]
        # on Numba's current threads, which `threads.using` sets with torch's in every command
        dots = xnor_gemm(pack_signs(x.numpy()), pack_signs(wb.detach().numpy()), n_bits)
        return torch.from_numpy(dots).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return None, grad_out.t().mm(x)  # as F.linear's backward computes it


def xnor_applies(x: torch.Tensor, n_out: int) -> bool:
    """Whether x · sign(W)ᵀ can run on the XNOR kernel with the same result: a float32 CPU matrix
    of ±1 that needs no gradient, big enough to gain, with fewer than 2^24 terms per dot."""
    return (x.dim() == 2 and x.dtype == torch.float32 and x.device.type == "cpu"
            and not x.requires_grad and 0 < x.shape[1] < 1 << 24
            and x.shape[0] * x.shape[1] * n_out >= XNOR_MIN_MACS
            and fused.all_pm1(x))


class BinaryLinear(nn.Linear):
    """y = x · sign(W)ᵀ, no bias (a following BatchNorm supplies the offset)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wb = sign_ste(self.weight)
        if xnor_applies(x, self.out_features):
            return _XnorLinear.apply(x.contiguous(), wb)
        return F.linear(x, wb)


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
