"""The server's optimizer (FedAvgM, FedAdam, FedYogi on the trained parameters), its settings,
and the validation accuracy the server reports every round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp.strategy import FedAdam, FedAvgM, FedYogi
from flwr.supercore.task_identity import TaskIdentity
from typer.testing import CliRunner

from hybnn_cli.cli import app as cli_app
from hybnn_cli.data.tasks import parse_task
from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.inprocess import run_inprocess
from hybnn_cli.fed.server_opt import BETA2, TAU, ServerOptimizer, is_identity
from hybnn_cli.models import checkpoint as ck
from hybnn_cli.train.bnn_loop import evaluate
from hybnn_cli.train.task_samples import load_task_codes
from tests.fed_codes import small

pytestmark = pytest.mark.usefixtures("flower_env")
runner = CliRunner()

FLOWER = {
    "sgd": lambda lr, b1: FedAvgM(server_learning_rate=lr, server_momentum=b1),
    "adam": lambda lr, b1: FedAdam(eta=lr, beta_1=b1, beta_2=BETA2, tau=TAU),
    "yogi": lambda lr, b1: FedYogi(eta=lr, beta_1=b1, beta_2=BETA2, tau=TAU),
}


@pytest.mark.parametrize("opt, lr", [("sgd", 1.0), ("adam", 0.05), ("yogi", 0.05)])
def test_the_step_is_flowers_on_trained_parameters(opt, lr):
    """Three rounds of our step against Flower's FedAvgM / FedAdam / FedYogi fed the same
    aggregate (one reply of the aggregate: FedAvg's mean of it is itself)."""
    TaskIdentity.task_id, TaskIdentity.run_id = 1, 1  # what a ServerApp has when it makes
    TaskIdentity.node_id = SUPERLINK_NODE_ID  # messages (as `inprocess.run_inprocess` sets)
    rng = np.random.default_rng(0)
    keys = ["fc1.weight", "bn1.weight", "bn1.bias"]
    x = {k: rng.uniform(-0.5, 0.5, (6, 3)) for k in keys}
    ours, theirs = ServerOptimizer(opt, lr, 0.9), FLOWER[opt](lr, 0.9)
    for server_round in range(3):
        agg = {k: x[k] + rng.normal(0.0, 0.05, x[k].shape) for k in keys}
        if opt == "sgd":  # FedAvgM keeps the model it stepped; FedOpt reads it every round
            theirs.current_arrays = theirs.current_arrays or ArrayRecord(
                {k: Array(x[k].copy()) for k in keys})
        else:
            theirs.current_arrays = {k: x[k].copy() for k in keys}
        reply = Message(RecordDict({"arrays": ArrayRecord({k: Array(agg[k]) for k in keys}),
                                    "metrics": MetricRecord({"num-examples": 1})}),
                        dst_node_id=0, message_type=MessageType.TRAIN)
        arrays, _ = theirs.aggregate_train(server_round, [reply])
        new = ours.step(x, agg)
        for k in keys:
            np.testing.assert_allclose(new[k], arrays[k].numpy(), rtol=1e-9, atol=1e-12)
            if server_round or opt != "sgd":  # momentum (from round 2) / adaptivity
                assert not np.allclose(new[k], agg[k])  # moved it off the aggregate
        x = new


def test_fedavgm_by_hand_statistics_untouched_and_latent_weights_clipped():
    opt = ServerOptimizer("sgd", 2.0, 0.5, binary_keys=("fc1.weight",))
    g = {"fc1.weight": np.array([0.0, 0.9]), "bn1.weight": np.array([1.0]),
         "bn1.running_var": np.array([4.0]), "bn1.num_batches_tracked": np.array(7)}
    agg = {"fc1.weight": np.array([0.1, 1.0]), "bn1.weight": np.array([1.5]),
           "bn1.running_var": np.array([3.0]), "bn1.num_batches_tracked": np.array(9)}
    new = opt.step(g, agg)
    np.testing.assert_allclose(new["fc1.weight"], [0.2, 1.0])  # 0.9 + 2·0.1 = 1.1, clipped
    np.testing.assert_allclose(new["bn1.weight"], [2.0])
    assert new["bn1.running_var"] is agg["bn1.running_var"]
    assert new["bn1.num_batches_tracked"] is agg["bn1.num_batches_tracked"]
    # second round: m = 0.5 · m + Δ
    new2 = opt.step(new, {**agg, "fc1.weight": np.array([0.2, 1.0]),
                          "bn1.weight": np.array([2.1])})
    np.testing.assert_allclose(new2["bn1.weight"], [2.0 + 2.0 * (0.5 * 0.5 + 0.1)])
    np.testing.assert_allclose(new2["fc1.weight"], [0.2 + 2.0 * 0.5 * 0.1, 1.0])


def test_plain_sgd_is_the_aggregate_and_is_not_run():
    opt = ServerOptimizer("sgd", 1.0, 0.0)
    g, agg = {"w": np.array([0.3, -0.2])}, {"w": np.array([0.1, 0.4])}
    np.testing.assert_allclose(opt.step(g, agg)["w"], agg["w"], rtol=0, atol=1e-15)
    # (x + (a − x) may differ from a in the last bit: the default server takes no step at all)
    assert is_identity("sgd", 1.0, 0.0) and not is_identity("sgd", 1.0, 0.5)
    assert not is_identity("adam", 1.0, 0.0)


def test_server_momentum_run_learns_differs_and_is_recorded(codes, tmp_path):
    run_inprocess(small(codes, out=str(tmp_path / "p.pt")))
    out = tmp_path / "m.pt"
    cfg = small(codes, server_momentum=0.9, out=str(out))
    assert cfg.server_step and not small(codes).server_step
    moved = run_inprocess(cfg)
    assert moved["final_test_acc"] >= 0.9
    plain_model, _ = ck.load_bnn(tmp_path / "p.pt")
    model, ckpt = ck.load_bnn(out)
    w, w_plain = model.state_dict()["fc1.weight"], plain_model.state_dict()["fc1.weight"]
    assert (w - w_plain).abs().max() > 0.01
    again = small(codes, server_momentum=0.9, out=str(tmp_path / "m2.pt"))
    run_inprocess(again)  # reproducible
    assert ck.load_bnn(tmp_path / "m2.pt")[0].state_dict()["fc1.weight"].equal(w)
    assert ckpt["config"]["server_momentum"] == 0.9 and ckpt["config"]["server_opt"] == "sgd"


def test_the_server_reports_validation_accuracy_every_round(codes, tmp_path):
    out = tmp_path / "v.pt"
    res = run_inprocess(small(codes, out=str(out)))
    data = load_task_codes(Path(codes), parse_task("3"))
    assert res["n_val"] == len(data["val"][1]) > 0
    assert [r["round"] for r in res["rounds"]] == [1, 2, 3]
    assert res["val_curve"] == [r["val_acc"] for r in res["rounds"]]
    assert res["final_val_acc"] == res["val_curve"][-1]
    model, _ = ck.load_bnn(out)
    assert evaluate(model, *data["val"])["acc"] == pytest.approx(res["final_val_acc"])
    assert evaluate(model, *data["test"])["acc"] == pytest.approx(res["final_test_acc"])


@pytest.mark.parametrize("kw, message", [
    ({"server_opt": "lamb"}, "unknown server optimizer 'lamb': use sgd, adam, yogi"),
    ({"server_lr": 0.0}, "the server learning rate must be > 0, got 0.0"),
    ({"server_momentum": 1.0}, "the server momentum must be in [0, 1), got 1.0"),
    ({"server_momentum": 0.9, "secagg": True}, "not with --secagg nor DP"),
    ({"server_opt": "adam", "server_lr": 0.1, "dp_clip": 1.0}, "not with --secagg nor DP"),
])
def test_server_opt_settings_are_checked(codes, kw, message):
    with pytest.raises(HybnnError, match=None) as e:
        small(codes, **kw)
    assert message in str(e.value)


def test_cli_server_opt(codes, tmp_path):
    res = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--rounds", "1",
                                  "--local-epochs", "1", "--server-opt", "adam",
                                  "--server-lr", "0.05", "--server-momentum", "0.9",
                                  "--out", str(tmp_path / "a.pt")])
    assert res.exit_code == 0, res.output
    assert "round   1  val" in res.output
    bad = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--rounds", "1",
                                  "--server-momentum", "-0.1", "--out", str(tmp_path / "b.pt")])
    assert bad.exit_code == 1
    assert "the server momentum must be in [0, 1), got -0.1" in bad.output
    assert "Traceback" not in bad.output


def test_cosine_server_schedule_decays_the_step_over_the_rounds():
    """Round r of R steps by η·(1 + cos(π(r − 1)/R))/2: η in round 1, η/2 halfway, then less."""
    rounds, lr = 4, 0.5
    opt = ServerOptimizer("sgd", lr, 0.0, schedule="cosine", rounds=rounds)
    x, delta = {"fc1.weight": np.zeros(3)}, np.array([0.2, -0.4, 0.1])
    steps = []
    for server_round in range(1, rounds + 1):
        new = opt.step(x, {"fc1.weight": x["fc1.weight"] + delta}, server_round)
        steps.append(new["fc1.weight"] / delta)
    want = [lr * (1 + np.cos(np.pi * (r - 1) / rounds)) / 2 for r in range(1, rounds + 1)]
    np.testing.assert_allclose(np.array(steps), np.array(want)[:, None].repeat(3, 1))
    assert want[0] == lr and want[2] == pytest.approx(lr / 2) and want[3] < lr / 2
    constant = ServerOptimizer("sgd", lr, 0.0, rounds=rounds)
    last = constant.step(x, {"fc1.weight": x["fc1.weight"] + delta}, rounds)["fc1.weight"]
    np.testing.assert_allclose(last, lr * delta)


def test_cosine_schedule_makes_a_server_step_and_is_checked(codes):
    assert is_identity("sgd", 1.0, 0.0) and not is_identity("sgd", 1.0, 0.0, "cosine")
    assert small(codes, server_schedule="cosine").server_step
    with pytest.raises(HybnnError) as e:
        small(codes, server_schedule="step")
    assert str(e.value) == "unknown server schedule 'step': use constant or cosine"
