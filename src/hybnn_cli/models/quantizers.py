"""Binarizers with straight-through estimators (STE).

- `sign_ste(x)`: forward sign(x) with sign(0) = +1 (not `torch.sign`, which maps 0 to 0);
  backward the straight-through estimator with gradient cancellation (Hubara et al. 2016,
  "Binarized Neural Networks", eq. 4): d sign(x)/dx := 1 if |x| <= 1 else 0.
- `bernoulli_ste(logits)`: forward a sample b ~ Bernoulli(sigmoid(logits)) as ±1; backward the
  straight-through gradient of its mean, d b/d logits := d (2·sigmoid(logits) − 1)/d logits
  (Bengio et al. 2013, "Estimating or propagating gradients through stochastic neurons").
- `threshold_bits(logits)`: the deterministic inference code, logit >= 0 → +1 else −1.
"""

from __future__ import annotations

import torch

from hybnn_cli.models import fused


def sign(x: torch.Tensor) -> torch.Tensor:
    """The project's sign: +1 where x >= 0 (including −0.0), −1 elsewhere; same dtype as x.

    For floats torch.sign (−1, ±0, +1) shifted by ½ and signed again: an order of magnitude
    faster on the CPU than a comparison and `where`, which write a bool tensor first (a quarter
    of a BNN training step went there)."""
    if x.is_floating_point():
        return torch.sign(x).add_(0.5).sign_()
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


class _SignSTE(torch.autograd.Function):
    """Big float32 CPU tensors take the one-pass kernels of `models.fused` (the same bits)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return fused.sign(x) if fused.applies(x) else sign(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        if fused.applies(grad_out, x) and not torch.is_grad_enabled():  # (not double backward)
            return fused.ste_grad(grad_out, x)
        return grad_out * x.abs().le_(1)  # in place: 1.0 or 0.0, no bool tensor


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """sign(x) forward; gradient 1_{|x| <= 1} · upstream gradient backward."""
    return _SignSTE.apply(x)


class _BernoulliSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, uniform):
        p = torch.sigmoid(logits)
        ctx.save_for_backward(p)
        return torch.where(uniform < p, torch.ones_like(p), -torch.ones_like(p))

    @staticmethod
    def backward(ctx, grad_out):
        (p,) = ctx.saved_tensors
        return grad_out * 2 * p * (1 - p), None


def bernoulli_ste(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A ±1 sample of Bernoulli(sigmoid(logits)) (exactly ±1), with the straight-through
    gradient of its mean: d/d logits (2·sigmoid(logits) − 1) = 2·p·(1 − p)."""
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    return _BernoulliSTE.apply(logits, uniform)


def threshold_bits(logits: torch.Tensor) -> torch.Tensor:
    """The inference code: +1 where logit >= 0, −1 elsewhere."""
    return sign(logits)
