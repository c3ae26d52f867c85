"""The clients' optimizer (`--client-opt adam|sgd`): the step each one takes, and its setting."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from hybnn_cli.cli import app as cli_app
from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.local_training import initial_model, local_train
from hybnn_cli.models import checkpoint as ck
from hybnn_cli.models.bnn import BNNShape

runner = CliRunner()


def one_step_setup():
    """A model and 12 samples (one batch: one step per local epoch, as a client of a
    thousand-client run on MNIST makes)."""
    model = initial_model(BNNShape(n_bits=20, hidden=8, n_classes=2), seed=0)
    gen = torch.Generator().manual_seed(1)
    x = torch.where(torch.rand(12, 20, generator=gen) < 0.5, -1.0, 1.0)
    y = torch.arange(12) % 2
    return model, x, y


def gradients(model, x, y) -> dict[str, torch.Tensor]:
    m = copy.deepcopy(model)
    m.train()
    F.cross_entropy(m(x), y).backward()
    return {n: p.grad.clone() for n, p in m.named_parameters()}


def step(opt: str, lr: float):
    model, x, y = one_step_setup()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = gradients(model, x, y)
    cfg = FedConfig(client_opt=opt, lr=lr, rounds=1, local_epochs=1, batch_size=128, threads=1)
    local_train(model, x, y, cfg, server_round=1, partition_id=0)
    return before, grads, dict(model.named_parameters())


def test_sgd_client_steps_along_the_gradient():
    """Round 1, epoch 0 of the cosine: lr itself; latent weights clipped to [−1, 1]."""
    before, grads, after = step("sgd", 0.5)
    for name, g in grads.items():
        want = before[name] - 0.5 * g
        if name.startswith("fc"):  # latent weights of the binary layers
            want = want.clamp(-1.0, 1.0)
        torch.testing.assert_close(after[name].detach(), want, rtol=1e-5, atol=1e-6)


def test_fresh_adam_client_step_is_lr_times_the_sign_of_the_gradient():
    """Why `sgd` exists: a fresh Adam's first step has size lr for every weight whose gradient is
    not 0, however small that gradient (docs/federated.md)."""
    before, grads, after = step("adam", 0.01)
    for name, g in grads.items():
        moved = after[name].detach() - before[name]
        big = g.abs() > 1e-6  # Adam's eps (1e-8) does not count against these
        assert big.any()
        if name.startswith("fc"):  # clipping at ±1 may cut the step short
            big &= (before[name] - 0.01 * g.sign()).abs() <= 1.0
        torch.testing.assert_close(moved[big], -0.01 * g[big].sign(), rtol=1e-3, atol=1e-6)
    sizes = torch.cat([g.abs().flatten() for g in grads.values()])
    assert sizes.max() / sizes[sizes > 1e-6].min() > 100  # the gradients' sizes differ widely


@pytest.mark.parametrize("kw, message", [
    ({"client_opt": "lamb"}, "unknown client optimizer 'lamb': use adam or sgd"),
    ({"lr": 0.0}, "the clients' learning rate must be > 0, got 0.0"),
    ({"lr": float("nan")}, "the clients' learning rate must be > 0, got nan"),
])
def test_client_opt_settings_are_checked(kw, message):
    with pytest.raises(HybnnError) as e:
        FedConfig(**kw)
    assert str(e.value) == message


def test_client_opt_goes_through_flowers_run_config():
    cfg = FedConfig.from_run_config({"client-opt": "sgd", "lr": 10.0})
    assert (cfg.client_opt, cfg.lr) == ("sgd", 10.0)
    assert FedConfig.from_run_config({"server-opt": "sgd"}).client_opt == "adam"


@pytest.mark.usefixtures("flower_env")
def test_cli_client_opt_sgd_learns_and_is_saved(codes, tmp_path):
    out = tmp_path / "s.pt"
    res = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--rounds", "3",
                                  "--local-epochs", "1", "--client-opt", "sgd", "--lr", "10",
                                  "--server-opt", "adam", "--server-lr", "0.05",
                                  "--server-momentum", "0.9", "--threads", "1",
                                  "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["final_test_acc"] > result["initial_test_acc"] + 0.2, result["accuracy_curve"]
    _, ckpt = ck.load_bnn(out)
    assert ckpt["config"]["client_opt"] == "sgd" and ckpt["config"]["lr"] == 10.0
    adam = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--rounds", "3",
                                   "--local-epochs", "1", "--threads", "1",
                                   "--out", str(tmp_path / "a.pt")])
    assert adam.exit_code == 0, adam.output
    w = ck.load_bnn(out)[0].state_dict()["fc1.weight"]
    assert not w.equal(ck.load_bnn(tmp_path / "a.pt")[0].state_dict()["fc1.weight"])


def test_cli_unknown_client_opt(codes, tmp_path):
    res = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--client-opt", "rmsprop",
                                  "--out", str(tmp_path / "x.pt")])
    assert res.exit_code == 1
    assert res.output.strip().endswith("unknown client optimizer 'rmsprop': use adam or sgd")
