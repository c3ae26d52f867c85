"""Federated training on Flower's Deployment Engine: a SuperLink and SuperNodes as separate
processes on loopback ports, with TLS and SuperNode authentication. Slow (each round starts fresh
ClientApp processes), so one test covers the whole path: TLS, authentication, an unregistered
node refused, a node killed mid-run, a failed run detected, agreement with the in-process run."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.clientapp import ClientApp

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed import client_app
from hybnn_cli.fed.certs import make_node_key
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.deployment import Federation
from hybnn_cli.fed.inprocess import run_inprocess
from hybnn_cli.fed.processes import Processes, SignalGuard
from hybnn_cli.models import checkpoint as ck
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


def http_status(port: int, ca: Path | None = None) -> int | None:
    """The HTTP status the SuperLink's port answers to `GET /` in plain text, or over TLS with
    `ca`; None when it answers nothing (the connection is dropped)."""
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                        context=ssl.create_default_context(cafile=str(ca)))
            if ca else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    except (http.client.HTTPException, ConnectionError):
        return None
    finally:
        conn.close()


@pytest.mark.slow
def test_loopback_deployment_with_tls_and_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "unused-flwr-home"))
    codes = make_codes(tmp_path / "codes.h5")
    cfg = FedConfig(codes=str(codes), task="3", clients=2, rounds=2, local_epochs=1,
                    batch_size=64, lr=0.03, client_opt="adam", server_opt="sgd",
                    out=str(tmp_path / "fed.pt"))
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
        plain, tls = http_status(fed.port), http_status(fed.port, fed.tls["ca"])
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
    # the SuperLink speaks TLS only: a plain-text client gets no answer at all
    assert tls is not None and plain is None
    assert Path(fed.run_dir / "out" / "rounds.jsonl").read_text().count("\n") == 3


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HYBNN_LONG_TESTS") != "1",
                    reason="about 2 minutes (waits out a round timeout); HYBNN_LONG_TESTS=1")
def test_killed_supernode_does_not_stop_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "unused-flwr-home"))
    codes = make_codes(tmp_path / "codes.h5")
    cfg = FedConfig(codes=str(codes), task="3", clients=3, rounds=3, local_epochs=1,
                    batch_size=64, lr=0.03, client_opt="adam", server_opt="sgd",
                    round_timeout=60.0)
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


# ── every process ends with hybnn ─────────────────────────────────────────────────────────────
def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: [0] state, [1] ppid, [19] start time."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def marked_processes(mark: str) -> dict[int, str]:
    """Live processes whose environment or command line mentions `mark`, and their descendants
    (a SuperExec's environment cannot be read: Flower makes it non-dumpable); pid → identity
    (start time and command line), so that a reused pid is never taken for one of ours."""
    info, children, marked = {}, {}, []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            pid, fields = int(d.name), _stat(int(d.name))
            cmdline = (d / "cmdline").read_bytes()
            try:
                environ = (d / "environ").read_bytes()
            except OSError:
                environ = b""
        except (OSError, ValueError):
            continue
        if fields[0] in ("Z", "X") or pid == os.getpid() or not cmdline:
            continue  # gone, or exiting (its command line already empty): identity unknowable
        info[pid] = fields[19] + " " + cmdline.replace(b"\0", b" ").decode(errors="replace")
        children.setdefault(int(fields[1]), []).append(pid)
        if mark.encode() in cmdline or mark.encode() in environ:
            marked.append(pid)
    found, todo = {}, marked
    while todo:
        pid = todo.pop()
        if pid not in found:
            found[pid] = info[pid]
            todo += children.get(pid, [])
    return found


def still_alive(procs: dict[int, str]) -> dict[int, str]:
    alive = {}
    for pid, ident in procs.items():
        try:
            fields = _stat(pid)
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and ident.startswith(fields[19] + " "):
            alive[pid] = ident
    return alive


def kill_everything(mark: str, known: dict[int, str]) -> None:
    """Cleanup whatever the test finds, so a failure never leaves a process behind."""
    for pid in {**still_alive(known), **marked_processes(mark)}:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def program(ident: str) -> str:
    """'flower-superlink', 'flwr-clientapp', 'hybnn_cli.fed.processes', 'sleep', … of a process."""
    words = ident.split()[1:]
    for w in words:
        if Path(w).name.startswith(("flower-", "flwr-")):
            return Path(w).name
    if "-m" in words:
        return words[words.index("-m") + 1]
    return Path(words[0]).name if words else "?"  # an empty command line: exiting


def wait_for_programs(mark: str, want: list[str], timeout: float = 30) -> dict[int, str]:
    """The marked processes once their programs are `want` (in any order), looked at until the
    deadline: a process just forked shows its parent's program until it execs (bash, then setsid,
    then sleep), so no single look, nor a count of processes, says a tree has started."""
    deadline = time.monotonic() + timeout
    while True:
        known = marked_processes(mark)
        programs = sorted(program(i) for i in known.values())
        if programs == sorted(want):
            return known
        assert time.monotonic() < deadline, (
            f"after {timeout:.0f} s the programs are {programs}, not {sorted(want)}")
        time.sleep(0.05)


def test_signal_guard_holds_a_signal_until_the_hold_ends():
    before = signal.getsignal(signal.SIGINT)  # default, or ignored in a background job
    guard = SignalGuard()
    guard.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            with guard.hold():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # handlers run between bytecodes: this one holds it
                os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not replace it
                time.sleep(0.05)
                held = guard.pending
        assert held == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)  # after the first, signals are ignored
        time.sleep(0.05)
    finally:
        guard.uninstall()
    assert signal.getsignal(signal.SIGINT) == before


def test_stop_reaches_processes_that_left_the_group(tmp_path):
    mark = str(tmp_path)
    procs = Processes({**os.environ, "HYBNN_TEST_MARK": mark}, tmp_path)
    known: dict[int, str] = {}
    try:
        procs.start("sleeper", ["bash", "-c", "setsid sleep 300 & sleep 300"])
        # bash, sleep, the setsid'd sleep, and the watchdog
        known = wait_for_programs(mark, ["bash", "hybnn_cli.fed.processes", "sleep", "sleep"])
        procs.stop(grace=5)
        assert still_alive(known) == {}  # stop() returns when they are all gone
        assert marked_processes(mark) == {}
    finally:
        kill_everything(mark, known)


WATCHED = """
import sys, time
from pathlib import Path
from hybnn_cli.fed.processes import Processes
procs = Processes(dict(__import__("os").environ), Path(sys.argv[1]))
procs.start("tree", ["bash", "-c", "setsid sleep 300 & sleep 300"])
while len(procs.sessions) < 2:  # wait until the watchdog knows the setsid'd sleep too
    procs.track()
    time.sleep(0.05)
print("ready", flush=True)
time.sleep(300)
"""


def test_watchdog_ends_the_processes_of_a_killed_parent(tmp_path):
    mark = str(tmp_path)
    parent = subprocess.Popen([sys.executable, "-c", WATCHED, str(tmp_path)],
                              env={**os.environ, "HYBNN_TEST_MARK": mark}, text=True,
                              stdout=subprocess.PIPE, start_new_session=True)
    known: dict[int, str] = {}
    try:
        assert parent.stdout.readline() == "ready\n"
        # the parent, its watchdog, bash, sleep, and the sleep in a session of its own
        known = wait_for_programs(mark, [Path(sys.executable).name, "hybnn_cli.fed.processes",
                                         "bash", "sleep", "sleep"])
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while still_alive(known) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert still_alive(known) == {}
    finally:
        parent.kill()
        parent.wait()
        kill_everything(mark, known)


@pytest.mark.slow
@pytest.mark.parametrize("sig, moment", [
    pytest.param(signal.SIGINT, "mid-round", id="SIGINT-mid-round"),  # round 1 done, ClientApps
    pytest.param(signal.SIGTERM, "start-up", id="SIGTERM-start-up"),  # a SuperNode started
    pytest.param(signal.SIGKILL, "server-up", id="SIGKILL-server-up"),  # the ServerApp runs
])
def test_a_signal_ends_the_whole_federation(tmp_path, sig, moment):
    """`hybnn fed --deployment` and every process it started, Flower's included, end on SIGINT
    and SIGTERM (exit 130/143, one line on stderr) and SIGKILL, and no temporary file is left."""
    codes = make_codes(tmp_path / "codes.h5", n_train=1200, n_test=200)
    run_dir, mark = tmp_path / "run", str(tmp_path)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_HOME": str(tmp_path / "flwr-home"), "HYBNN_TEST_MARK": mark}
    cli = subprocess.Popen([sys.executable, "-m", "hybnn_cli", "fed", "--deployment",
                            "--codes", str(codes), "--clients", "2", "--rounds", "50",
                            "--local-epochs", "1", "--batch-size", "64", "--run-dir",
                            str(run_dir), "--out", str(tmp_path / "x.pt")],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    known: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 300  # minutes only on a machine loaded many times over
        while True:
            assert cli.poll() is None, cli.communicate()
            assert time.monotonic() < deadline, f"{moment} never came: {known}"
            known.update(marked_processes(mark))
            programs = {program(i) for i in still_alive(known).values()}
            if moment == "start-up" and "flower-supernode" in programs:
                break
            if moment == "server-up" and "flwr-serverapp" in programs:
                break
            rounds = run_dir / "out" / "rounds.jsonl"
            if (moment == "mid-round" and rounds.is_file() and '"round": 1,' in rounds.read_text()
                    and "flwr-clientapp" in programs):
                break
            time.sleep(0.2)
        known.update(marked_processes(mark))
        sent = time.monotonic()
        cli.send_signal(sig)
        while ((still_alive(known).keys() | marked_processes(mark).keys()) - {cli.pid}
               and time.monotonic() < sent + 30):
            known.update(marked_processes(mark))
            time.sleep(0.1)
        ended = time.monotonic() - sent
        _, err = cli.communicate(timeout=120)  # exiting the interpreter is slow on a busy machine
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        kill_everything(mark, known)
    seen = {program(i) for i in known.values()}
    if moment != "start-up":  # the listing saw Flower's grandchildren, which had to end too
        assert {"flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                "hybnn_cli.fed.processes"} <= seen
        assert moment != "mid-round" or "flwr-clientapp" in seen
    else:
        assert {"flower-superlink", "flower-supernode"} <= seen
    assert ended < 15, f"processes left {ended:.1f} s after the signal"
    assert still_alive(known) == {} and marked_processes(mark) == {}
    if sig == signal.SIGKILL:
        assert cli.returncode == -signal.SIGKILL
    else:
        assert cli.returncode == 128 + sig
        # the rounds finished before the signal are reported as usual; then one line, no trace
        lines = err.strip().splitlines()
        assert lines[-1] == {signal.SIGINT: "Interrupted (SIGINT).",
                             signal.SIGTERM: "Terminated (SIGTERM)."}[sig], err
        assert all(line.startswith("round ") for line in lines[:-1]), err
    assert list(tmp_path.rglob("*.tmp")) == []
