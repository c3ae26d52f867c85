"""Differential privacy (Flower's client-side fixed clipping) and Byzantine robustness (Flower's
Krum, FedMedian, FedTrimmedAvg behind the update checks), in-process and at the unit level."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from typer.testing import CliRunner

from hybnn_cli.cli import app as cli_app
from hybnn_cli.errors import HybnnError
from hybnn_cli.fed import client_app
from hybnn_cli.fed.dp import dp_clip_if_asked
from hybnn_cli.fed.inprocess import run_inprocess
from hybnn_cli.fed.robust import FLIP_SCALE, attacker_partitions, combine, sign_flip
from hybnn_cli.fed.strategy import update_norm
from hybnn_cli.models import checkpoint as ck
from tests.fed_codes import small

pytestmark = pytest.mark.usefixtures("flower_env")


# ── differential privacy ─────────────────────────────────────────────────────────────────────
def test_dp_run_end_to_end_is_recorded_and_reproducible(codes, tmp_path):
    out = tmp_path / "dp.pt"
    cfg = small(codes, rounds=1, dp_noise=0.5, dp_clip=20.0, out=str(out))
    res = run_inprocess(cfg)
    again = run_inprocess(cfg)
    assert res["accuracy_curve"] == again["accuracy_curve"]  # noise seeded by (seed, round)
    for r in res["rounds"]:
        assert r["valid_updates"] == 3 and not r["kept_previous"]
    assert res["config"]["dp_noise"] == 0.5 and res["config"]["dp_clip"] == 20.0
    _, ckpt = ck.load_bnn(out)
    assert ckpt["config"]["dp_noise"] == 0.5 and ckpt["config"]["dp_clip"] == 20.0
    quiet = run_inprocess(small(codes, rounds=1, dp_noise=0.0, dp_clip=20.0))
    assert res["rounds"][0]["test_loss"] != quiet["rounds"][0]["test_loss"]  # noise was added


def test_dp_without_noise_and_a_large_clip_is_the_plain_run(codes):
    """Clipping at 1e9 scales nothing and σ = 0 adds zeros, so every round is the same float
    computation as without DP: same test loss, bit for bit."""
    plain = run_inprocess(small(codes, rounds=2))
    dp = run_inprocess(small(codes, rounds=2, dp_noise=0.0, dp_clip=1e9))
    assert [r["test_loss"] for r in dp["rounds"]] == [r["test_loss"] for r in plain["rounds"]]
    assert dp["accuracy_curve"] == plain["accuracy_curve"]


def _train_message(received: ArrayRecord, clip: float) -> Message:
    return Message(RecordDict({"arrays": received,
                               "config": ConfigRecord({KEY_CLIPPING_NORM: clip,
                                                       "server-round": 1})}),
                   dst_node_id=1, message_type=MessageType.TRAIN)


@pytest.mark.parametrize("scale, clipped", [(10.0, True), (0.01, False)])
def test_fixedclipping_bounds_the_update_norm(scale, clipped):
    rng = np.random.default_rng(0)
    received = {"w": rng.standard_normal((8, 5)).astype(np.float32),
                "b": rng.standard_normal(5).astype(np.float32), "n": np.array(7, np.int64)}
    step = {"w": rng.standard_normal((8, 5)).astype(np.float32) * scale,
            "b": rng.standard_normal(5).astype(np.float32) * scale}
    sent = {"w": received["w"] + step["w"], "b": received["b"] + step["b"],
            "n": np.array(12, np.int64)}
    norm = float(np.sqrt(sum(np.square(s.astype(np.float64)).sum() for s in step.values())))
    clip = 1.0
    assert (norm > clip) == clipped

    def app(msg: Message, ctx: Context) -> Message:
        assert msg.content["arrays"]["n"].numpy() == 7  # the app sees what the server sent
        return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in sent.items()})}),
                       reply_to=msg)

    rec = ArrayRecord({k: Array(v) for k, v in received.items()})
    out = dp_clip_if_asked(_train_message(rec, clip), None, app).content["arrays"]
    got = {k: a.numpy() for k, a in out.items()}
    assert got["n"].dtype == np.int64 and got["n"].shape == () and got["n"] == 7  # held
    delta = {k: got[k].astype(np.float64) - received[k] for k in ("w", "b")}
    new_norm = update_norm({k: got[k].astype(np.float64) for k in got},
                           {k: received[k].astype(np.float64) for k in received})
    if clipped:
        assert new_norm == pytest.approx(clip, rel=1e-5)
        for k in ("w", "b"):  # scaled, same direction
            np.testing.assert_allclose(delta[k], step[k] * clip / norm, rtol=1e-4, atol=1e-6)
    else:
        assert new_norm == pytest.approx(norm, rel=1e-5)
        for k in ("w", "b"):
            np.testing.assert_array_equal(got[k], sent[k])


def test_dp_server_rejects_an_unclipped_update(codes):
    unclipped = ClientApp()  # the same training, without the clipping mod
    unclipped.train()(client_app.train)
    res = run_inprocess(small(codes, rounds=1, dp_noise=0.0, dp_clip=5.0),
                        client_apps=[client_app.app, client_app.app, unclipped])
    r = res["rounds"][0]
    assert r["valid_updates"] == 2
    bad = [c for c in r["clients"] if c["status"] != "accepted"]
    assert len(bad) == 1 and "above the DP clipping norm 5" in bad[0]["status"]


@pytest.mark.parametrize("kw, message", [
    (dict(dp_noise=-0.1, dp_clip=1.0), "noise multiplier must be >= 0"),
    (dict(dp_clip=-1.0), "clipping norm must be >= 0"),
    (dict(dp_noise=1.0), "needs a clipping norm"),
    (dict(dp_clip=1.0, uplink="bits"), "use --uplink float"),
    (dict(dp_clip=1.0, secagg=True), "DP and --secagg together are not supported"),
    (dict(dp_clip=1.0, aggregate="median"), "use --aggregate fedavg"),
    (dict(secagg=True, aggregate="krum"), "robust aggregation and simulated attackers"),
    (dict(secagg=True, byzantine=0.1), "robust aggregation and simulated attackers"),
    (dict(aggregate="mean"), "unknown aggregate 'mean'"),
    (dict(byzantine=1.0), "Byzantine clients must be in [0, 1)"),
])
def test_privacy_and_robustness_settings_are_checked(codes, kw, message):
    with pytest.raises(HybnnError, match=message.replace("[", r"\[").replace(")", r"\)")):
        small(codes, **kw)


runner = CliRunner()


@pytest.mark.parametrize("args, message", [
    (["--dp-clip", "-1"], "the DP clipping norm must be >= 0 (0: no DP), got -1.0"),
    (["--dp-noise", "-1", "--dp-clip", "1"], "the DP noise multiplier must be >= 0, got -1.0"),
    (["--dp-clip", "1", "--secagg"], "DP and --secagg together are not supported"),
])
def test_cli_dp_errors_are_one_line(codes, tmp_path, args, message):
    res = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--rounds", "1",
                                  "--out", str(tmp_path / "x.pt"), *args])
    assert res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_dp_run_json(codes, tmp_path):
    res = runner.invoke(cli_app, ["fed", "--codes", str(codes), "--rounds", "1",
                                  "--local-epochs", "1", "--dp-noise", "0.1", "--dp-clip", "50",
                                  "--out", str(tmp_path / "d.pt"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["config"]["dp_noise"] == 0.1 and data["config"]["dp_clip"] == 50.0


# ── Byzantine robustness ─────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("rule", ["krum", "median", "trimmed-mean"])
def test_each_robust_rule_runs_and_learns(codes, rule):
    res = run_inprocess(small(codes, rounds=1, aggregate=rule))
    assert all(r["valid_updates"] == 3 for r in res["rounds"])
    assert res["final_test_acc"] >= 0.9
    assert res["config"]["aggregate"] == rule


def test_a_robust_rule_beats_fedavg_under_a_sign_flipping_attacker(codes):
    """One of three clients flips its update: FedAvg's model is ruined, the median's is not."""
    assert len(attacker_partitions(3, 0.34, 0)) == 1
    fedavg = run_inprocess(small(codes, byzantine=0.34))
    median = run_inprocess(small(codes, byzantine=0.34, aggregate="median"))
    assert fedavg["final_test_acc"] < 0.6
    assert median["final_test_acc"] >= 0.95


def test_aggregation_rules_with_attackers_on_the_function():
    """8 honest updates around h, 2 attackers far away: median and trimmed mean stay near the
    honest mean, Krum picks an honest update, FedAvg is dragged off."""
    rng = np.random.default_rng(1)
    h = rng.standard_normal(50)
    honest = [({"x": h + 0.05 * rng.standard_normal(50)}, 10.0) for _ in range(8)]
    evil = [({"x": h - 20.0}, 10.0) for _ in range(2)]
    updates = honest[:4] + evil[:1] + honest[4:] + evil[1:]
    honest_mean = np.mean([u["x"] for u, _ in honest], axis=0)

    def dist(rule):
        return float(np.linalg.norm(combine(rule, updates, byzantine=0.2)["x"] - honest_mean))

    assert dist("fedavg") == pytest.approx(0.2 * 20 * np.sqrt(50), rel=0.01)  # 4 per coordinate
    assert dist("median") < 0.3
    assert dist("trimmed-mean") < 0.3
    assert dist("krum") < 0.6
    krum = combine("krum", updates, byzantine=0.2)["x"]
    assert any(np.array_equal(krum, u["x"]) for u, _ in honest)
    plain = combine("fedavg", honest, 0.0)["x"]
    np.testing.assert_allclose(plain, honest_mean)


def test_sign_flip_reverses_and_amplifies_within_the_checked_ranges():
    g = {"fc.weight": torch.tensor([0.0, 0.5, -0.95]), "bn.running_var": torch.tensor([1.0, 2.0]),
         "bn.bias": torch.tensor([0.1]), "bn.num_batches_tracked": torch.tensor(3)}
    local = {"fc.weight": torch.tensor([0.01, 0.4, -0.9]),
             "bn.running_var": torch.tensor([1.5, 1.9]), "bn.bias": torch.tensor([0.2]),
             "bn.num_batches_tracked": torch.tensor(8)}
    out = sign_flip(local, g, ("fc.weight",))
    torch.testing.assert_close(out["fc.weight"], torch.tensor([-0.1, 1.0, -1.0]))
    torch.testing.assert_close(out["bn.running_var"], torch.tensor([0.0, 3.0]))
    torch.testing.assert_close(out["bn.bias"], torch.tensor([0.1 - FLIP_SCALE * 0.1]))
    assert out["bn.num_batches_tracked"].item() == 8


def test_attacker_partitions_are_seeded():
    a = attacker_partitions(100, 0.1, 0)
    assert len(a) == 10 and a == attacker_partitions(100, 0.1, 0)
    assert a != attacker_partitions(100, 0.1, 1)
    assert attacker_partitions(100, 0.0, 0) == frozenset()
