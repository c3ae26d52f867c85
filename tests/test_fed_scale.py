"""Federated learning at scale and in private: clients sampled per round, partitions for thousands
of clients (a client may hold one sample), SecAgg+ on and off, the engine switch of `hybnn fed`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Message
from flwr.clientapp import ClientApp
from typer.testing import CliRunner

from hybnn_cli.cli import app as cli_app
from hybnn_cli.errors import HybnnError
from hybnn_cli.fed import client_app
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.inprocess import InProcessGrid, run_inprocess
from hybnn_cli.fed.partition import dirichlet_partition, iid_partition, partition_indices
from hybnn_cli.fed.secagg import SecAggFedAvg, secagg_shares, stat_scales
from hybnn_cli.fed.strategy import sample_nodes
from tests.fed_codes import small

pytestmark = pytest.mark.usefixtures("flower_env")


# ── sampling ─────────────────────────────────────────────────────────────────────────────────
def test_sample_nodes_size_seed_and_bounds():
    nodes = list(range(100, 200))
    a = sample_nodes(nodes, 0.1, 1, seed=3, server_round=1)
    assert len(a) == 10 and a == sorted(a) and set(a) <= set(nodes)
    assert a == sample_nodes(nodes, 0.1, 1, seed=3, server_round=1)
    assert a != sample_nodes(nodes, 0.1, 1, seed=3, server_round=2)
    assert a != sample_nodes(nodes, 0.1, 1, seed=4, server_round=1)
    assert len(sample_nodes(nodes, 0.001, 1, 0, 1)) == 1  # ceil(0.1) = 1
    assert len(sample_nodes(nodes, 0.001, 7, 0, 1)) == 7  # at least min_valid
    assert len(sample_nodes(nodes, 0.25, 1, 0, 1)) == 25
    assert sample_nodes(nodes, 1.0, 1, 0, 1) == nodes
    assert sample_nodes([5, 6], 0.5, 3, 0, 1) == [5, 6]  # never more than there are


def test_rounds_train_only_the_sampled_clients(codes):
    res = run_inprocess(small(codes, clients=12, fraction=0.25, rounds=3))
    picked = []
    for r in res["rounds"]:
        ids = [c["partition_id"] for c in r["clients"]]
        assert len(ids) == 3 and r["valid_updates"] == 3
        assert all(c["status"] == "accepted" for c in r["clients"])
        picked.append(ids)
    assert len({tuple(p) for p in picked}) > 1  # a new draw every round
    again = run_inprocess(small(codes, clients=12, fraction=0.25, rounds=3))
    assert [[c["partition_id"] for c in r["clients"]] for r in again["rounds"]] == picked
    assert again["accuracy_curve"] == res["accuracy_curve"]
    assert res["final_test_acc"] >= 0.85


def test_fraction_must_be_a_share():
    with pytest.raises(HybnnError, match=r"fraction of clients per round must be in \(0, 1\]"):
        FedConfig(fraction=0.0)
    with pytest.raises(HybnnError, match="fraction"):
        FedConfig(fraction=1.5)


# ── partitions for many clients ──────────────────────────────────────────────────────────────
def test_iid_partition_for_ten_thousand_clients():
    parts = iid_partition(12000, 10000, seed=0)
    sizes = [len(p) for p in parts]
    assert min(sizes) == 1 and max(sizes) == 2 and sum(sizes) == 12000
    assert len(np.unique(np.concatenate(parts))) == 12000


@pytest.mark.parametrize("n_parts, least", [(1000, 6), (5000, 1), (6000, 1)])
def test_dirichlet_partition_tiny_parts(n_parts, least):
    labels = np.repeat([0, 1], 3000)
    parts = dirichlet_partition(labels, n_parts, alpha=0.5, seed=0)
    assert len(parts) == n_parts
    assert sorted(np.concatenate(parts).tolist()) == list(range(6000))  # a split
    assert min(len(p) for p in parts) == least  # min(10, n // k), no fewer
    again = dirichlet_partition(labels, n_parts, alpha=0.5, seed=0)
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))
    if least > 1:  # still label-skewed, far more than an IID split of the same sizes
        def skew(ps):
            return np.mean([abs(labels[p].mean() - 0.5) for p in ps])

        assert skew(parts) > skew(iid_partition(6000, n_parts, seed=0)) + 0.1


def test_partition_is_cached_and_refuses_more_clients_than_samples():
    labels = np.repeat([0, 1], 50)
    assert partition_indices(labels, "iid", 10, 0.5, 0) is partition_indices(labels.copy(), "iid",
                                                                            10, 0.5, 0)
    with pytest.raises(HybnnError, match="100 training samples cannot be split among 101"):
        partition_indices(labels, "dirichlet", 101, 0.5, 0)


def test_thousands_of_tiny_clients_train(codes):
    # 600 train samples of the task among 300 clients: two samples each; 10 clients a round
    res = run_inprocess(small(codes, clients=300, fraction=10 / 300, rounds=3,
                              partition="dirichlet", batch_size=2))
    for r in res["rounds"]:
        assert len(r["clients"]) == 10 and r["valid_updates"] == 10
    assert all(0.0 <= a <= 1.0 for a in res["accuracy_curve"])


def test_clients_holding_one_code_each_still_learn(codes):
    # as many clients as training samples: each holds one code, which trains with batch norm on
    # its running statistics (one sample has no batch statistics)
    from hybnn_cli.fed.local_training import task_data

    n = len(task_data(str(codes), "3")["train"][1])
    res = run_inprocess(small(codes, clients=n, fraction=20 / n, rounds=2, partition="iid"))
    assert all(r["valid_updates"] == 20 for r in res["rounds"])
    assert res["accuracy_curve"][-1] != res["initial_test_acc"]


def test_one_sample_batch_trains_weights_but_not_batch_norm_statistics():
    import torch

    from hybnn_cli.models.bnn import BNNShape, TaskBNN
    from hybnn_cli.train.bnn_loop import train_epoch

    torch.manual_seed(0)
    model = TaskBNN(BNNShape(16, 8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x, y = torch.where(torch.rand(1, 16) < 0.5, -1.0, 1.0), torch.tensor([1])
    train_epoch(model, opt, x, y, batch_size=4, generator=torch.Generator().manual_seed(0))
    after = model.state_dict()
    assert not torch.equal(before["fc1.weight"], after["fc1.weight"])
    for name in ("bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"):
        assert torch.equal(before[name], after[name]), name
    assert model.training and model.bn1.training  # back in training mode


# ── SecAgg+ ──────────────────────────────────────────────────────────────────────────────────
def test_secagg_shares():
    assert secagg_shares(2) == (1.0, 1.0)
    assert secagg_shares(3) == (3, 2)
    assert secagg_shares(10) == (5, 3)
    assert secagg_shares(100) == (7, 4)


class RecordingGrid(InProcessGrid):
    """Keeps every reply the server side receives."""

    received: list[Message] = []

    def pull_messages(self, message_ids):
        replies = list(super().pull_messages(message_ids))
        RecordingGrid.received.extend(replies)
        return replies


def recording_client(updates: list) -> ClientApp:
    """The real ClientApp with mods, recording the update it computes before masking."""
    app = ClientApp(mods=client_app.app._mods)

    @app.train()
    def train(msg, context):
        reply = client_app.train(msg, context)
        arrays = reply.content.array_records.get("fitres.parameters")
        if arrays is not None:
            updates.append((int(reply.content["fitres.num_examples"]["num_examples"]),
                            [a.numpy().copy() for a in arrays.values()]))
        return reply

    return app


@pytest.mark.parametrize("uplink", ["float", "bits"])
def test_secagg_server_sees_only_the_aggregate(codes, monkeypatch, uplink):
    updates: list = []
    seen: list[SecAggFedAvg] = []
    original = SecAggFedAvg.__init__

    def keep(self, *a, **kw):
        original(self, *a, **kw)
        seen.append(self)

    monkeypatch.setattr(SecAggFedAvg, "__init__", keep)
    monkeypatch.setattr("hybnn_cli.fed.inprocess.InProcessGrid", RecordingGrid)
    RecordingGrid.received = []
    res = run_inprocess(small(codes, rounds=1, secagg=True, uplink=uplink),
                        client_apps=[recording_client(updates) for _ in range(3)])
    assert len(updates) == 3 and res["rounds"][0]["valid_updates"] == 3
    # no reply that reached the server holds a client's update, in any form
    own = [u for _, arrays in updates for u in arrays if u.size > 1]
    for msg in RecordingGrid.received:
        for rec in msg.content.array_records.values():
            for a in rec.values():
                x = a.numpy()
                assert not any(x.shape == u.shape and np.allclose(x, u, atol=1e-3) for u in own)
    # what the strategy's aggregate_fit received is the weighted mean of the updates
    (agg,) = seen[0].seen_by_aggregate
    total = sum(n for n, _ in updates)
    scales = list(stat_scales(seen[0].spec).values())  # running statistics travel scaled
    for i, a in enumerate(agg):
        if updates[0][1][i].dtype.kind != "f":
            continue
        mean = sum(n * arrays[i].astype(np.float64) for n, arrays in updates) / total
        assert np.abs(a / scales[i] - mean).max() < 1e-5, i  # SecAgg+'s quantization error
    assert res["rounds"][0]["clients"][0]["status"] == "aggregated"


def test_secagg_learns_like_plain_fedavg(codes):
    plain = run_inprocess(small(codes, rounds=3, uplink="bits"))
    secure = run_inprocess(small(codes, rounds=3, uplink="bits", secagg=True))
    assert secure["final_test_acc"] >= 0.85
    assert abs(secure["final_test_acc"] - plain["final_test_acc"]) < 0.03
    up_plain = plain["rounds"][-1]["bytes_sent"]
    up_secure = secure["rounds"][-1]["bytes_sent"]
    assert up_secure > up_plain  # masked integers cost more than packed bits


def test_secagg_needs_two_clients_a_round():
    with pytest.raises(HybnnError, match="SecAgg\\+ needs at least 2 clients"):
        FedConfig(secagg=True, clients=10, fraction=0.1)


# ── the command ──────────────────────────────────────────────────────────────────────────────
runner = CliRunner()


def test_cli_fraction_and_secagg(codes, tmp_path):
    res = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--clients", "8",
                                  "--fraction", "0.5", "--rounds", "2", "--local-epochs", "1",
                                  "--secagg", "--out", str(tmp_path / "g.pt"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["config"]["fraction"] == 0.5 and data["config"]["secagg"] is True
    assert [len(r["clients"]) for r in data["rounds"]] == [4, 4]
