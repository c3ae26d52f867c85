"""`flwr run .` from the project root, as a Flower user runs it: Flower starts its local SuperLink
in simulation mode (Ray), builds the app from pyproject.toml and runs it with `--run-config`
overrides and a `--federation-config`. Slow (Ray starts in about half a minute): one test, one
round. It gets its own FLWR_HOME and local SuperLink ports, and stops that SuperLink at the end
(Flower leaves it running in the background)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybnn_cli.fed.flower_setup import free_port
from tests.fed_codes import make_codes

ROOT = Path(__file__).resolve().parents[1]


def superlinks_on(port: int) -> list[int]:
    """Process ids of flower-superlink processes listening on `port` (the one this test had
    Flower start)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"flower-superlink") for a in args) and str(port).encode() in args:
            pids.append(int(proc.name))
    return pids


def stop_group(pid: int) -> None:
    try:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(os.getpgid(pid), signal.SIGKILL)


@pytest.mark.slow
def test_flwr_run_dot_with_overrides(tmp_path):
    codes = make_codes(tmp_path / "codes.h5")
    out_dir = tmp_path / "out"
    http_port, control_port = free_port(), free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
           "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_worker_niceness": "0"}
    flwr = str(Path(bin_dir) / "flwr")
    overrides = (f'codes="{codes}" out-dir="{out_dir}" rounds=1 local-epochs=1 '
                 'uplink="bits" threads=1')
    try:
        res = subprocess.run([flwr, "run", ".", "--run-config", overrides,
                              "--federation-config", "num-supernodes=3", "--format", "json"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
        assert res.returncode == 0, res.stdout + res.stderr
        run_id = json.loads(res.stdout)["run-id"]
        deadline = time.monotonic() + 110
        status = {}
        while time.monotonic() < deadline:
            ls = subprocess.run([flwr, "ls", "--run-id", run_id, "--format", "json"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=30)
            status = json.loads(ls.stdout)["runs"][0]
            if status["status"].startswith("finished"):
                break
            time.sleep(2)
        assert status["status"] == "finished:completed", status
        result = json.loads((out_dir / "result.json").read_text())
    finally:
        for pid in superlinks_on(http_port):
            stop_group(pid)
    assert result["config"]["uplink"] == "bits" and result["config"]["rounds"] == 1
    (r,) = result["rounds"]
    assert r["valid_updates"] == 3
    assert sorted(c["partition_id"] for c in r["clients"]) == [0, 1, 2]
    assert result["final_test_acc"] > result["initial_test_acc"]
    assert superlinks_on(http_port) == []
