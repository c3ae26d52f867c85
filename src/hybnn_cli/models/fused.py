"""One-pass CPU kernels for the binarizer of training, in Numba: the project's sign and the
straight-through gradient of `quantizers.sign_ste`, each element read once and written once, and
the test that a tensor is all ±1 (`all_pm1`, for the XNOR forward of `layers.BinaryLinear`).

Torch spends three passes on each (sign, shift, sign again; abs, compare, multiply) with a
temporary between them, about a fifth of a task-BNN training step at width 2048. These give the
same float32 results bit for bit: sign(x) is ±1 (NaN gives +1, as torch's passes do) and the
gradient is the upstream gradient times 1.0 or 0.0, the same product torch forms. `applies(t)`
says which tensors they take (float32, CPU, contiguous, big enough); anything else stays on the
torch path.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

MIN_ELEMENTS = 1 << 14  # below this torch's passes cost less than a call into Numba


def applies(*ts: torch.Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()
               for t in ts) and ts[0].numel() >= MIN_ELEMENTS


@njit(cache=True)
def _sign_into(x, out):
    one = np.float32(1.0)
    for i in range(x.size):
        out[i] = -one if x[i] < 0 else one


@njit(cache=True)
def _ste_grad_into(g, x, out):
    one, zero = np.float32(1.0), np.float32(0.0)
    for i in range(x.size):
        out[i] = g[i] * (one if abs(x[i]) <= one else zero)


@njit(cache=True)
def _all_pm1(x):
    one = np.float32(1.0)
    for i in range(x.size):
        if x[i] != one and x[i] != -one:
            return False
    return True


def all_pm1(x: torch.Tensor) -> bool:
    """Whether every element of a float32 CPU tensor is +1 or −1 (one pass, stops at the first
    other value)."""
    return bool(_all_pm1(x.detach().reshape(-1).numpy()))


def sign(x: torch.Tensor) -> torch.Tensor:
    """The project's sign of a float32 CPU tensor (see `applies`): −1 where x < 0, else +1 (−0.0
    and NaN included)."""
    out = torch.empty_like(x)
    _sign_into(x.detach().numpy().reshape(-1), out.numpy().reshape(-1))
    return out


def ste_grad(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad_out · 1_{|x| <= 1} for float32 CPU tensors of one shape (see `applies`)."""
    out = torch.empty_like(x)
    _ste_grad_into(grad_out.numpy().reshape(-1), x.detach().numpy().reshape(-1),
                   out.numpy().reshape(-1))
    return out
