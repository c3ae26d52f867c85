"""Binarizers and their straight-through gradients against the formulas; VAE loss terms."""

from __future__ import annotations

import math

import torch

from hybnn_cli.models.layers import BinaryLinear, clip_latent_weights
from hybnn_cli.models.quantizers import bernoulli_ste, sign, sign_ste, threshold_bits
from hybnn_cli.models.vae import BinaryVAE, bernoulli_kl, vae_loss


def test_sign_maps_zero_and_negative_zero_to_plus_one():
    x = torch.tensor([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0])
    assert sign(x).tolist() == [-1, -1, 1, 1, 1, 1]
    assert torch.sign(torch.tensor(0.0)).item() == 0  # why the project has its own sign


def test_sign_ste_gradient_is_cancelled_outside_unit_interval():
    torch.manual_seed(0)
    x = (torch.randn(1000) * 2).requires_grad_()
    x.data[:4] = torch.tensor([1.0, -1.0, 1.0001, -1.0001])
    upstream = torch.randn(1000)
    y = sign_ste(x)
    y.backward(upstream)
    expected = upstream * (x.detach().abs() <= 1).float()
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)
    assert x.grad[0] == upstream[0] and x.grad[2] == 0
    assert set(y.detach().unique().tolist()) <= {-1.0, 1.0}


def test_bernoulli_ste_samples_plus_minus_one_with_mean_gradient():
    torch.manual_seed(0)
    logits = torch.linspace(-4, 4, 101).repeat(400, 1).requires_grad_()
    z = bernoulli_ste(logits, torch.Generator().manual_seed(1))
    assert set(z.detach().unique().tolist()) == {-1.0, 1.0}
    # the empirical mean follows 2·sigmoid − 1
    mean = z.detach().mean(0)
    torch.testing.assert_close(mean, 2 * torch.sigmoid(logits[0].detach()) - 1, atol=0.1,
                               rtol=0)
    z.sum().backward()
    p = torch.sigmoid(logits.detach())
    torch.testing.assert_close(logits.grad, 2 * p * (1 - p))


def test_threshold_bits_is_logit_at_least_zero():
    assert threshold_bits(torch.tensor([-0.1, 0.0, 0.1])).tolist() == [-1, 1, 1]


def test_binary_linear_uses_sign_of_weights_and_clip_keeps_range():
    layer = BinaryLinear(5, 3)
    layer.weight.data = torch.tensor([[0.5, -0.2, 0.0, 2.0, -3.0]] * 3)
    x = torch.ones(1, 5)
    assert layer(x).tolist() == [[1.0, 1.0, 1.0]]  # +1 −1 +1 +1 −1
    clip_latent_weights(layer)
    assert layer.weight.abs().max().item() == 1.0


def test_bernoulli_kl_matches_closed_form():
    logits = torch.tensor([[0.0, 2.0, -3.0]])
    q = torch.sigmoid(logits)
    closed = (q * torch.log(2 * q) + (1 - q) * torch.log(2 * (1 - q))).sum(1)
    torch.testing.assert_close(bernoulli_kl(logits), closed)
    assert bernoulli_kl(torch.zeros(1, 200)).item() == 0.0


def test_vae_shapes_and_loss_is_finite():
    torch.manual_seed(0)
    model = BinaryVAE(200)
    x = torch.rand(4, 1, 28, 28)
    recon, logits = model(x)
    assert recon.shape == (4, 1, 28, 28) and logits.shape == (4, 200)
    loss, rec, kl = vae_loss(x, recon, logits)
    assert math.isfinite(loss.item()) and rec.item() > 0 and kl.item() >= 0
    model.eval()
    code = model.encoder.encode(x)
    assert set(code.unique().tolist()) <= {-1.0, 1.0}
