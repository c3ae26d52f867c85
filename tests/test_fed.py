"""Federated training, in-process: accuracy rises, faults are rejected, bytes are counted, the
partitions and the wire format are right, and `hybnn fed` behaves as a CLI command."""

from __future__ import annotations

import json
import logging
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord
from flwr.clientapp import ClientApp
from typer.testing import CliRunner

from hybnn_cli.cli import app as cli_app
from hybnn_cli.errors import HybnnError
from hybnn_cli.fed import client_app
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.inprocess import run_inprocess
from hybnn_cli.fed.local_training import initial_model, model_shape
from hybnn_cli.fed.partition import dirichlet_partition, iid_partition
from hybnn_cli.fed.payload import UpdateSpec, decode_update, encode_update
from hybnn_cli.fed.strategy import check_arrays
from hybnn_cli.models import checkpoint as ck
from tests.fed_codes import FAKE_SHA, small

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("flower_env")


# ── training in-process ──────────────────────────────────────────────────────────────────────
def test_accuracy_rises_and_bytes_are_counted(codes, tmp_path):
    out = tmp_path / "fed.pt"
    seen = []
    res = run_inprocess(small(codes, out=str(out)), on_round=seen.append)
    assert [r["round"] for r in seen] == [0, 1, 2, 3]
    assert res["initial_test_acc"] < 0.75
    assert res["final_test_acc"] >= 0.9
    assert res["final_test_acc"] > res["initial_test_acc"] + 0.2
    assert len(res["accuracy_curve"]) == 3
    n_weights = 128 * 200 + 2 * 128
    for r in res["rounds"]:
        assert r["valid_updates"] == 3 and not r["kept_previous"]
        assert [c["partition_id"] for c in r["clients"]] == [0, 1, 2]
        for c in r["clients"]:
            assert c["status"] == "accepted"
            assert 4 * n_weights < c["sent_bytes"] < 4 * n_weights * 1.1
            assert 4 * n_weights < c["recv_bytes"] < 4 * n_weights * 1.1
    b = res["bytes"]
    assert b["uplink_total"] == sum(c["sent_bytes"] for r in res["rounds"] for c in r["clients"])
    assert set(b["per_client"]) == {"0", "1", "2"}
    # the global model is a normal BNN checkpoint with its provenance
    model, ckpt = ck.load_bnn(out)
    assert ckpt["encoder_sha256"] == FAKE_SHA and ckpt["seed"] == 0
    assert ckpt["config"]["mode"] == "federated" and ckpt["config"]["rounds"] == 3


def test_same_seed_same_run(codes):
    a = run_inprocess(small(codes, rounds=2))
    b = run_inprocess(small(codes, rounds=2))
    assert a["accuracy_curve"] == b["accuracy_curve"]


def test_bits_uplink_learns_and_sends_less(codes):
    res = run_inprocess(small(codes, uplink="bits"))
    assert res["final_test_acc"] >= 0.85
    for c in res["rounds"][-1]["clients"]:
        assert c["status"] == "accepted"
        # 128×4 + 2×2 uint64 words of signs, ~2 kB of float batch norm, headers
        assert 4096 + 32 + 4 * 4 * 130 < c["sent_bytes"] < c["recv_bytes"] / 7


# ── faults ───────────────────────────────────────────────────────────────────────────────────
def faulty_client(kind: str) -> ClientApp:
    """The real ClientApp with its reply corrupted (or not sent) in one way."""
    app = ClientApp()

    @app.train()
    def train(msg, context):
        if kind == "crash":
            raise RuntimeError("client blew up")
        reply = client_app.train(msg, context)
        arrays = reply.content["arrays"]
        if kind == "nan":
            w = arrays["fc1.weight"].numpy().copy()
            w[3, 5] = np.nan
            arrays["fc1.weight"] = Array(w)
        elif kind == "shape":
            arrays["fc1.weight"] = Array(np.zeros((128, 199), np.float32))
        elif kind == "broadcast":  # a shape numpy would broadcast silently
            arrays["bn1.weight"] = Array(np.ones((1,), np.float32))
        elif kind == "missing":
            del arrays["bn1.running_var"]
        elif kind == "dtype":
            arrays["fc2.weight"] = Array(arrays["fc2.weight"].numpy().astype(np.float64))
        elif kind == "count":
            reply.content["metrics"]["num-examples"] = 0
        elif kind == "odd-metrics":  # lists where numbers belong: harmless, must not crash
            reply.content["metrics"]["partition-id"] = [1, 2]
            reply.content["metrics"]["train-loss"] = [0.5, 0.25]
        elif kind == "vanish":
            return None
        return reply

    return app


@pytest.mark.parametrize("kind, reason", [
    ("nan", "non-finite"), ("shape", "(128, 199)"), ("broadcast", "bn1.weight"),
    ("missing", "missing key(s) bn1.running_var"), ("dtype", "float64"),
    ("crash", "client blew up"), ("vanish", "no reply"),
    ("count", "num-examples must be a positive number, got 0"),
])
def test_bad_update_is_left_out_and_run_finishes(codes, kind, reason, caplog):
    apps = [client_app.app, client_app.app, faulty_client(kind)]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        res = run_inprocess(small(codes, rounds=2), client_apps=apps)
    for r in res["rounds"]:
        assert r["valid_updates"] == 2 and not r["kept_previous"]
        bad = [c for c in r["clients"] if c["status"] != "accepted"]
        assert len(bad) == 1 and reason in bad[0]["status"]
    assert res["final_test_acc"] >= 0.85
    assert any(reason in rec.getMessage() and "round 2" in rec.getMessage()
               for rec in caplog.records)
    assert any("node 1002" in rec.getMessage() for rec in caplog.records)


def test_odd_metrics_do_not_break_aggregation(codes):
    apps = [client_app.app, client_app.app, faulty_client("odd-metrics")]
    res = run_inprocess(small(codes, rounds=1), client_apps=apps)
    assert res["rounds"][0]["valid_updates"] == 3


def test_too_few_valid_updates_keep_the_previous_model(codes, tmp_path):
    apps = [faulty_client("nan"), client_app.app, faulty_client("missing")]
    res = run_inprocess(small(codes, rounds=2, min_valid=2, out=str(tmp_path / "m.pt")),
                        client_apps=apps)
    assert all(r["kept_previous"] and r["valid_updates"] == 1 for r in res["rounds"])
    assert res["accuracy_curve"] == [res["initial_test_acc"]] * 2
    model, _ = ck.load_bnn(tmp_path / "m.pt")
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values())


# ── partitions ───────────────────────────────────────────────────────────────────────────────
def test_iid_partition_is_a_split():
    parts = iid_partition(1001, 3, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1001))
    assert [len(p) for p in parts] == [334, 334, 333]
    assert all((a == b).all() for a, b in zip(parts, iid_partition(1001, 3, seed=1),
                                              strict=True))


def test_dirichlet_partition_is_a_skewed_split():
    labels = np.repeat([0, 1], 3000)
    parts = dirichlet_partition(labels, 3, alpha=0.1, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(6000))
    shares = [labels[p].mean() for p in parts]  # share of class 1 per client
    assert max(shares) - min(shares) > 0.3
    again = dirichlet_partition(labels, 3, alpha=0.1, seed=0)
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))
    iid_like = dirichlet_partition(labels, 3, alpha=1000.0, seed=0)
    assert max(abs(labels[p].mean() - 0.5) for p in iid_like) < 0.05


def test_partition_refuses_too_many_clients():
    with pytest.raises(HybnnError, match="cannot be split"):
        iid_partition(2, 3, seed=0)


# ── wire format and validation ───────────────────────────────────────────────────────────────
def test_bits_uplink_carries_the_signs():
    model = initial_model(model_shape(200, FedConfig()), seed=3)
    with torch.no_grad():
        model.fc1.weight[0, :4] = torch.tensor([0.0, -0.0, -1e-6, 1e-6])
    spec = UpdateSpec.for_model(model, "bits")
    arrays = encode_update(model, "bits")
    assert check_arrays(arrays, spec) is None
    assert arrays["fc1.weight"].dtype == "uint64" and arrays["fc1.weight"].shape == (128, 4)
    dec = decode_update(arrays, spec)
    w = model.fc1.weight.detach().numpy()
    assert (dec["fc1.weight"] == np.where(w < 0, -1.0, 1.0)).all()  # sign(0) = sign(-0) = +1
    assert (dec["bn1.running_var"] == model.bn1.running_var.numpy()).all()


def test_check_arrays_reasons():
    model = initial_model(model_shape(200, FedConfig()), seed=0)
    spec = UpdateSpec.for_model(model, "float")
    good = encode_update(model, "float")
    assert check_arrays(good, spec) is None
    big = ArrayRecord(dict(good))
    big["fc2.weight"] = Array(np.full((2, 128), 3.0, np.float32))
    assert "outside [-1, 1]" in check_arrays(big, spec)
    extra = ArrayRecord(dict(good))
    extra["evil"] = Array(np.zeros(1, np.float32))
    assert "unexpected key(s) evil" in check_arrays(extra, spec)
    neg = ArrayRecord(dict(good))
    neg["bn2.running_var"] = Array(-np.ones(2, np.float32))
    assert "negative running variance" in check_arrays(neg, spec)
    assert "no 'arrays'" in check_arrays(None, spec)


# ── the Flower app's configuration ───────────────────────────────────────────────────────────
def test_pyproject_run_config_matches_fedconfig():
    flwr = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert flwr["config"] == FedConfig().to_run_config()
    assert flwr["components"] == {"serverapp": "hybnn_cli.fed.server_app:app",
                                  "clientapp": "hybnn_cli.fed.client_app:app"}
    cfg = FedConfig.from_run_config({**flwr["config"], "rounds": 7, "uplink": "bits"})
    assert cfg.rounds == 7 and cfg.uplink == "bits" and isinstance(cfg.lr, float)


# ── the command ──────────────────────────────────────────────────────────────────────────────
runner = CliRunner()


def test_cli_fed_json_and_checkpoint(codes, tmp_path):
    out = tmp_path / "g.pt"
    res = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--task", "3", "--rounds", "2",
                                  "--local-epochs", "1", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["mode"] == "in-process" and len(data["accuracy_curve"]) == 2
    assert data["bytes"]["uplink_total"] > 0
    ev = runner.invoke(cli_app, ["evaluate", str(out), "--codes", str(codes), "--json"])
    assert ev.exit_code == 0, ev.output
    assert math.isclose(json.loads(ev.stdout)["acc"], data["final_test_acc"])


def test_cli_fed_text_output(codes, tmp_path):
    res = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--rounds", "1",
                                  "--local-epochs", "1", "--out", str(tmp_path / "t.pt")])
    assert res.exit_code == 0, res.output
    assert "round   1  val" in res.output
    assert "task3 federated (3 clients, iid, uplink float): test accuracy" in res.output


@pytest.mark.parametrize("args, message", [
    (["--partition", "zipf"], "unknown partition 'zipf': use iid or dirichlet"),
    (["--uplink", "morse"], "unknown uplink 'morse': use float or bits"),
    (["--task", "9"], "unknown task '9'"),
    (["--clients", "5000"], "cannot be split among 5000 clients"),
    (["--engine", "ray"], "unknown engine 'ray': use inprocess, simulation, deployment"),
    (["--engine", "simulation", "--deployment"],
     "--deployment is --engine deployment; it contradicts --engine simulation"),
    (["--deployment", "--secagg"], "--secagg runs on the inprocess and simulation engines"),
    (["--fraction", "0"], "fraction of clients per round must be in (0, 1], got 0.0"),
])
def test_cli_fed_errors(codes, tmp_path, args, message):
    res = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--rounds", "1",
                                  "--out", str(tmp_path / "x.pt"), *args])
    assert res.exit_code == 1
    assert message in res.output
    assert "Traceback" not in res.output


def test_cli_fed_missing_codes(tmp_path):
    res = runner.invoke(cli_app, ["fed", "--codes", str(tmp_path / "nope.h5")])
    assert res.exit_code == 1
    assert "nope.h5: no such codes file" in res.output
