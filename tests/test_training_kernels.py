"""The compiled paths of training give torch's results bit for bit: the XNOR-popcount forward of a
`BinaryLinear` on ±1 inputs (`layers`), and the one-pass sign and straight-through gradient
(`fused`). Each is compared with the torch path it replaces, forced by raising its size limit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hybnn_cli.models.fused as fused
import hybnn_cli.models.layers as layers
from hybnn_cli.models.bnn import BNNShape, TaskBNN
from hybnn_cli.models.quantizers import sign, sign_ste

OFF = 1 << 62  # a size limit no tensor reaches: the torch path


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def special(n: int, seed: int) -> torch.Tensor:
    """Random floats with the values where sign and the STE mask turn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 2
    x[:9] = torch.tensor([-0.0, 0.0, float("nan"), 1.0, -1.0, 1.0000001, -1.0000001,
                          float("inf"), float("-inf")])
    return x[torch.randperm(n, generator=g)]


@pytest.mark.parametrize("n", [1 << 14, 100_003])
def test_fused_sign_and_ste_gradient_equal_torch_bit_for_bit(n, monkeypatch):
    x = special(n, 0)
    upstream = special(n, 1)  # −0.0, NaN and infinities upstream too
    assert fused.applies(x)
    assert torch.equal(bits(fused.sign(x)), bits(sign(x)))
    assert torch.equal(bits(fused.ste_grad(upstream, x)), bits(upstream * x.abs().le_(1)))
    # and through autograd, both paths
    grads = []
    for limit in (1 << 14, OFF):
        monkeypatch.setattr(fused, "MIN_ELEMENTS", limit)
        xx = x.clone().requires_grad_()
        y = sign_ste(xx)
        y.backward(upstream)
        grads.append((bits(y.detach()), bits(xx.grad)))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_fused_paths_take_only_big_contiguous_float32_cpu_tensors():
    big = torch.zeros(1 << 14)
    assert fused.applies(big)
    assert not fused.applies(torch.zeros(100))
    assert not fused.applies(big.double())
    assert not fused.applies(torch.zeros(2, 1 << 14).t())


def pm1(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=g).float() * 2 - 1


@pytest.mark.parametrize("n_bits,n_out,batch", [(200, 2048, 64), (65, 300, 1000),
                                                (130, 129, 1100), (1, 4096, 4100)])
def test_xnor_forward_equals_float_linear_on_odd_bit_lengths(n_bits, n_out, batch, monkeypatch):
    monkeypatch.setattr(layers, "XNOR_MIN_MACS", 1)
    layer = layers.BinaryLinear(n_bits, n_out)
    x = pm1((batch, n_bits), 0)
    assert layers.xnor_applies(x, n_out)
    expected = F.linear(x, sign(layer.weight.detach()))
    assert torch.equal(bits(layer(x).detach()), bits(expected))


def test_xnor_forward_is_refused_where_the_result_could_differ(monkeypatch):
    monkeypatch.setattr(layers, "XNOR_MIN_MACS", 1)
    x = pm1((8, 200), 0)
    assert layers.xnor_applies(x, 16)
    y = x.clone()
    y[3, 7] = 0.5  # not ±1
    assert not layers.xnor_applies(y, 16)
    assert not layers.xnor_applies(x.clone().requires_grad_(), 16)  # needs its input gradient
    assert not layers.xnor_applies(x.double(), 16)
    monkeypatch.setattr(layers, "XNOR_MIN_MACS", 1 << 24)
    assert not layers.xnor_applies(x, 16)  # small: F.linear
    layer = layers.BinaryLinear(200, 16)
    assert torch.equal(layer(y), F.linear(y, sign(layer.weight.detach())))


def train(steps: int, hidden: int, xnor: bool, one_pass: bool, monkeypatch) -> dict:
    monkeypatch.setattr(layers, "XNOR_MIN_MACS", 1 if xnor else OFF)
    monkeypatch.setattr(fused, "MIN_ELEMENTS", 1 if one_pass else OFF)
    torch.manual_seed(0)
    model = TaskBNN(BNNShape(200, hidden, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for s in range(steps):
        x, y = pm1((96, 200), s), torch.randint(0, 10, (96,), generator=torch.Generator()
                                                 .manual_seed(s))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        layers.clip_latent_weights(model)
    model.eval()
    with torch.no_grad():
        scores = model(pm1((500, 200), 99))
    return {**model.state_dict(), "scores": scores}


@pytest.mark.parametrize("hidden", [64, 300])
def test_training_on_the_compiled_paths_ends_with_the_same_model_bit_for_bit(hidden,
                                                                             monkeypatch):
    ref = train(12, hidden, False, False, monkeypatch)
    fast = train(12, hidden, True, True, monkeypatch)
    assert ref.keys() == fast.keys()
    for k in ref:
        assert torch.equal(ref[k], fast[k]), k
    # the runs took different paths: the compiled ones were in use
    monkeypatch.setattr(layers, "XNOR_MIN_MACS", 1)
    assert layers.xnor_applies(pm1((96, 200), 0), hidden)


def test_all_pm1_finds_any_other_value():
    x = pm1((7, 33), 0)
    assert fused.all_pm1(x)
    for other in (0.0, -0.0, 0.999, float("nan"), float("inf"), 2.0):
        y = x.clone()
        y[6, 32] = other  # the last element
        assert not fused.all_pm1(y), other
    assert not fused.all_pm1(x.t().contiguous().t() * 3)


def test_double_backward_through_sign_ste_stays_on_the_torch_path():
    x = special(1 << 14, 3).clamp(-3, 3).requires_grad_()
    w = torch.ones(1 << 14, requires_grad=True)
    (g,) = torch.autograd.grad((sign_ste(x) * w).sum(), x, create_graph=True)
    assert g.requires_grad  # the gradient is itself differentiable (in w)
    (gw,) = torch.autograd.grad(g.sum(), w)
    assert torch.equal(gw, (x.detach().abs() <= 1).float())
