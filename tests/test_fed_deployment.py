"""Federated training on Flower's Deployment Engine: a SuperLink and SuperNodes as separate
processes on loopback ports, with TLS and SuperNode authentication. Slow (each round starts fresh
ClientApp processes), so one test covers the whole path: TLS, authentication, an unregistered
node refused, a node killed mid-run, a failed run detected, agreement with the in-process run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.clientapp import ClientApp

from hybnn_cli import checkpoint as ck
from hybnn_cli.errors import HybnnError
from hybnn_cli.fed import client_app
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.deployment import Federation, Processes, make_node_key
from hybnn_cli.fed.inprocess import run_inprocess
from tests.fed_codes import make_codes


def vanishes_from_round(n: int) -> ClientApp:
    """The real ClientApp, except that it sends no reply from round n on (in-process twin of a
    SuperNode killed before that round)."""
    app = ClientApp()

    @app.train()
    def train(msg, context):
        if int(msg.content["config"]["server-round"]) >= n:
            return None
        return client_app.train(msg, context)

    return app


@pytest.mark.slow
def test_loopback_deployment_with_tls_and_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "unused-flwr-home"))
    codes = make_codes(tmp_path / "codes.h5")
    cfg = FedConfig(codes=str(codes), task="3", clients=2, rounds=2, local_epochs=1,
                    batch_size=64, lr=0.03, out=str(tmp_path / "fed.pt"))
    with Federation(tmp_path / "run", n_nodes=2) as fed:
        fed.start_superlink()
        fed.start_nodes()
        key, _pub = make_node_key(fed.run_dir / "keys", "intruder")  # never registered
        intruder = fed.start_supernode(99, key, "partition-id=0 num-partitions=2")
        result = fed.run(cfg)
        try:
            intruder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        online = fed.supernodes_online()
        # a run that fails on the server (its codes file is gone) must raise, not pass
        bad = FedConfig(**{**cfg.to_dict(), "codes": str(tmp_path / "gone.h5"), "out": ""})
        with pytest.raises(HybnnError, match="finished:failed"):
            fed.run(bad, timeout=120)
        procs = list(fed.procs.procs)
    # the run went through TLS with the two registered nodes only
    assert result["flower_run"]["status"] == "finished:completed"
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    for r in result["rounds"]:
        assert r["valid_updates"] == 2 and len(r["clients"]) == 2
    assert result["final_test_acc"] >= 0.9
    assert len(online) == 2
    # the same apps give the same run in one process
    twin = run_inprocess(FedConfig(**{**cfg.to_dict(), "out": ""}))
    assert twin["accuracy_curve"] == result["accuracy_curve"]
    assert twin["bytes"]["uplink_total"] == result["bytes"]["uplink_total"]
    # the unregistered node was refused and gave up
    assert intruder.returncode not in (None, 0)
    log = (fed.run_dir / "logs" / "supernode-99.log").read_text()
    assert "Failed to activate SuperNode" in log
    # the global model was saved; every process we started is gone
    model, ckpt = ck.load_bnn(tmp_path / "fed.pt")
    assert ckpt["config"]["mode"] == "federated"
    time.sleep(0.5)
    assert all(p.poll() is not None for p in procs)
    assert (fed.run_dir / "tls" / "ca.crt").is_file()
    assert Path(fed.run_dir / "out" / "rounds.jsonl").read_text().count("\n") == 3


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HYBNN_LONG_TESTS") != "1",
                    reason="about 2 minutes (waits out a round timeout); HYBNN_LONG_TESTS=1")
def test_killed_supernode_does_not_stop_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "unused-flwr-home"))
    codes = make_codes(tmp_path / "codes.h5")
    cfg = FedConfig(codes=str(codes), task="3", clients=3, rounds=3, local_epochs=1,
                    batch_size=64, lr=0.03, round_timeout=60.0)
    with Federation(tmp_path / "run", n_nodes=3) as fed:
        fed.start_superlink()
        fed.start_nodes()

        def kill_node_2(row):  # SIGKILL: the node cannot even say goodbye
            if row["round"] == 1:
                os.killpg(fed.supernodes[2].pid, signal.SIGKILL)

        result = fed.run(cfg, on_round=kill_node_2)
    assert result["flower_run"]["status"] == "finished:completed"
    r1, r2, r3 = result["rounds"]
    assert r1["valid_updates"] == 3
    for r in (r2, r3):
        assert r["valid_updates"] == 2 and not r["kept_previous"]
        # node 2 is not answered for, answered for by the SuperLink ("Node Unavailable"), or
        # no longer sampled once the SuperLink has marked it offline
        lost = [c for c in r["clients"] if c.get("partition_id") == 2]
        assert all(c["status"] != "accepted" for c in lost)
    twin = run_inprocess(cfg, client_apps=[client_app.app, client_app.app, vanishes_from_round(2)])
    assert twin["accuracy_curve"] == result["accuracy_curve"]


def processes_with(text: str) -> list[int]:
    """Live processes whose environment or command line mentions `text`."""
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if (text.encode() in (d / "environ").read_bytes()
                    or text.encode() in (d / "cmdline").read_bytes()):
                if "Z" not in (d / "stat").read_text().rsplit(")", 1)[1].split()[0]:
                    found.append(int(d.name))
        except OSError:
            continue
    return [p for p in found if p != os.getpid()]


def test_stop_reaches_processes_that_left_the_group(tmp_path):
    procs = Processes({**os.environ, "HYBNN_TEST_MARK": str(tmp_path)}, tmp_path)
    procs.start("sleeper", ["bash", "-c", "setsid sleep 300 & sleep 300"])
    deadline = time.monotonic() + 10
    while len(processes_with(str(tmp_path))) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    # bash, sleep, the setsid'd sleep, and the watchdog
    assert len(processes_with(str(tmp_path))) == 4
    procs.stop(grace=5)
    deadline = time.monotonic() + 5  # the init process reaps orphans in its own time
    while processes_with(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(str(tmp_path)) == []


@pytest.mark.slow
def test_ctrl_c_stops_every_process(tmp_path):
    codes = make_codes(tmp_path / "codes.h5")
    run_dir = tmp_path / "run"
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_HOME": str(tmp_path / "flwr-home")}
    cli = subprocess.Popen([sys.executable, "-m", "hybnn_cli", "fed", "--deployment",
                            "--codes", str(codes), "--clients", "2", "--rounds", "50",
                            "--run-dir", str(run_dir), "--out", str(tmp_path / "x.pt")],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (run_dir / "out" / "rounds.jsonl").is_file():  # the run has started
            assert cli.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert len(processes_with(str(run_dir))) >= 4  # SuperLink, 2 SuperNodes, SuperExecs
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130
    assert b"Interrupted." in err
    time.sleep(0.5)
    assert processes_with(str(run_dir)) == []
