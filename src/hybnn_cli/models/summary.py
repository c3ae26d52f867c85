"""Model size as data, in the manner of larq's model summary: per layer, how many parameters are
binary (1 bit each: the sign of a binary layer's latent weight) and how many are 32-bit floats,
and what they take in bits and bytes.

Counted per leaf module: a `BinaryLinear`/`BinaryConv2d` weight is binary; every other parameter
(full-precision weights and biases, BatchNorm scale and shift) is a trainable float; BatchNorm's
running mean and variance are non-trainable floats, counted apart (larq counts them too).
The README's size table renders it (`docgen`).
"""

from __future__ import annotations

from torch import nn

from hybnn_cli.models.layers import BinaryConv2d, BinaryLinear

FLOAT_BITS = 32


def model_summary(model: nn.Module) -> dict:
    """{"layers": [...], "total": {...}} with binary_params, float_params, float_buffers, bits
    and bytes per leaf module that holds any parameter."""
    layers = []
    for name, m in model.named_modules():
        if any(True for _ in m.children()):
            continue
        params = dict(m.named_parameters(recurse=False))
        if not params:
            continue
        binary = 0
        if isinstance(m, BinaryLinear | BinaryConv2d):
            binary = params.pop("weight").numel()
        floats = sum(p.numel() for p in params.values())
        buffers = sum(b.numel() for b in m.buffers(recurse=False) if b.is_floating_point())
        layers.append(_row(name, type(m).__name__, binary, floats, buffers))
    total = _row("total", "", *(sum(r[k] for r in layers) for k in
                                  ("binary_params", "float_params", "float_buffers")))
    return {"layers": layers, "total": total}


def _row(name: str, kind: str, binary: int, floats: int, buffers: int) -> dict:
    bits = binary + FLOAT_BITS * (floats + buffers)
    return {"name": name, "type": kind, "binary_params": binary, "float_params": floats,
            "float_buffers": buffers, "bits": bits, "bytes": bits / 8}
