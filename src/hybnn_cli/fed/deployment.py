"""Running a federated run on Flower's Deployment Engine on this machine (loopback).

What `hybnn fed --deployment` does, step by step (docs/federated.md shows the same by hand for
real machines):

1. TLS: a self-signed CA and a SuperLink certificate for 127.0.0.1 / localhost
   (`certs.make_tls`).
2. SuperNode authentication: one ECDSA P-384 key pair per client, OpenSSH format
   (`certs.make_node_key`).
3. A SuperLink with TLS, `--enable-supernode-auth` and no runtime dependency installation.
4. Each client's public key registered with `flwr supernode register`.
5. One SuperNode per client, each with its private key and `partition-id`/`num-partitions`.
6. `flwr run` of a generated Flower app folder with the run's settings as `--run-config`;
   progress is read from the server app's `rounds.jsonl`, and the run's status from `flwr ls`
   (`flwr run` itself can exit 0 for a failed run): anything but `finished:completed` is an error.

Every process, with the processes Flower starts in turn (SuperExecs, ServerApp, ClientApps), is
ended on success, error, SIGINT and SIGTERM alike, and by a watchdog process if hybnn itself is
killed (`processes.py`). All files (certificates, keys, FLWR_HOME, logs, app folder, outputs)
live in one run folder; temporary files of the server's outputs are removed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.certs import make_node_key, make_tls
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.flower_setup import (
    CONNECTION,
    flower_bin,
    flower_env,
    free_port,
    json_out,
    toml_value,
    wait_port,
    write_app,
    write_flwr_home,
)
from hybnn_cli.fed.processes import Processes
from hybnn_cli.threads import child_env


# ── a whole run ──────────────────────────────────────────────────────────────────────────────
class Federation:
    """A SuperLink with TLS and SuperNode authentication, plus SuperNodes, on loopback.

    Use as a context manager: inside, SIGINT and SIGTERM raise KeyboardInterrupt and
    errors.Terminated; on exit every process is stopped, whatever the exit.
    """

    def __init__(self, run_dir: Path, n_nodes: int, start_timeout: float = 60.0,
                 tls: bool = True):
        self.run_dir = Path(run_dir).resolve()
        self.n_nodes = n_nodes
        self.start_timeout = start_timeout
        self.port = free_port()
        self.tls = make_tls(self.run_dir / "tls") if tls else None
        bin_dir = str(Path(sys.executable).parent)  # Flower finds flower-superexec on PATH
        self.env = {**flower_env(child_env(1)), "FLWR_HOME": str(self.run_dir / "flwr-home"),
                    "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                    "PYTHONUNBUFFERED": "1"}
        write_flwr_home(self.run_dir / "flwr-home", self.port, self.tls and self.tls["ca"])
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.procs = Processes(self.env, self.run_dir / "logs")
        self.supernodes: dict[int, subprocess.Popen] = {}
        self.temp_files: list[tuple[Path, str]] = []  # (folder, glob) of atomic_path temp files

    def __enter__(self) -> Federation:
        self.procs.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.procs.__exit__(*exc)
        finally:
            for folder, pattern in self.temp_files:  # a server app killed while writing
                for tmp in folder.glob(pattern):
                    tmp.unlink(missing_ok=True)

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return self.procs.run([flower_bin("flwr"), *args], timeout=timeout)

    def run_status(self, run_id: int) -> dict:
        """The run's row from `flwr ls --run-id N --format json` ({} if it cannot be read)."""
        res = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            runs = json.loads(res.stdout).get("runs", [])
        except json.JSONDecodeError:
            return {}
        return runs[0] if runs else {}

    def start_superlink(self) -> None:
        proc = self.procs.start("superlink", [
            flower_bin("flower-superlink"), "--ssl-ca-certfile", str(self.tls["ca"]),
            "--ssl-certfile", str(self.tls["cert"]), "--ssl-keyfile", str(self.tls["key"]),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(self.port)])
        wait_port(self.port, self.start_timeout, proc)

    def register(self, pub: Path) -> None:
        res = self.flwr("supernode", "register", str(pub), CONNECTION)
        if res.returncode != 0:
            raise HybnnError(f"flwr supernode register {pub.name} failed: "
                             f"{_last_line(res.stdout + res.stderr)}")

    def start_supernode(self, i: int, private_key: Path, node_config: str) -> subprocess.Popen:
        proc = self.procs.start(f"supernode-{i}", [
            flower_bin("flower-supernode"), "--superlink", f"127.0.0.1:{self.port}",
            "--root-certificates", str(self.tls["ca"]),
            "--auth-supernode-private-key", str(private_key),
            "--port", str(free_port()), "--node-config", node_config])
        self.supernodes[i] = proc
        return proc

    def start_nodes(self) -> None:
        """Keys, registration and one SuperNode per partition."""
        for i in range(self.n_nodes):
            priv, pub = make_node_key(self.run_dir / "keys", f"node-{i}")
            self.register(pub)
            self.start_supernode(i, priv, f"partition-id={i} num-partitions={self.n_nodes}")

    def supernodes_online(self) -> list[dict]:
        """The SuperLink's registered SuperNodes that are online (`flwr supernode list`)."""
        nodes = json_out(self.flwr("supernode", "list", CONNECTION, "--format", "json"))
        return [n for n in nodes.get("nodes", []) if n.get("status") == "online"]

    def run(self, cfg: FedConfig, on_round: Callable[[dict], None] | None = None,
            timeout: float = 3600.0, flwr_args: tuple[str, ...] = ()) -> dict:
        """`flwr run` the app with cfg (and `flwr_args`, e.g. a federation config); follow its
        progress; check its final status."""
        out_dir = self.run_dir / "out"
        cfg = FedConfig(**{**cfg.to_dict(), "out_dir": str(out_dir),
                           "codes": str(Path(cfg.codes).resolve()),
                           "out": str(Path(cfg.out).resolve()) if cfg.out else ""})
        app = write_app(self.run_dir / "hybnn-fed")
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in cfg.to_run_config().items())
        self.temp_files.append((out_dir, ".result.json.*.tmp"))
        if cfg.out:
            self.temp_files.append((Path(cfg.out).parent, f".{Path(cfg.out).name}.*.tmp"))
        res = self.flwr("run", str(app), CONNECTION, "--run-config", overrides, *flwr_args,
                        "--format", "json")
        run_id = json_out(res).get("run-id")
        if res.returncode != 0 or run_id is None:
            raise HybnnError(f"flwr run failed: {_last_line(res.stdout + res.stderr)}")
        run_id = int(run_id)
        seen = 0
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            seen = _follow(out_dir / "rounds.jsonl", seen, on_round)
            status = self.run_status(run_id)
            self.procs.track()
            if str(status.get("status", "")).startswith("finished"):
                break
            for i, proc in self.supernodes.items():
                if proc.poll() is not None and not getattr(proc, "_reported", False):
                    proc._reported = True
                    sys.stderr.write(f"SuperNode {i} exited with code {proc.returncode}\n")
            time.sleep(1.0)
        else:
            raise HybnnError(f"run {run_id} did not finish within {timeout:.0f} s "
                             f"(logs in {self.run_dir / 'logs'})")
        _follow(out_dir / "rounds.jsonl", seen, on_round)
        if status.get("status") != "finished:completed":
            raise HybnnError(f"run {run_id} ended as {status.get('status')!r}"
                             f"{': ' + str(status['details']) if status.get('details') else ''}"
                             f" (logs in {self.run_dir / 'logs'})")
        result_path = out_dir / "result.json"
        if not result_path.is_file():
            raise HybnnError(f"run {run_id} completed but wrote no {result_path}")
        result = json.loads(result_path.read_text())
        result["run_id"] = run_id
        result["flower_run"] = {k: status.get(k) for k in
                                ("status", "network-traffic", "elapsed")
                                if k in status}
        return result


def _follow(path: Path, seen: int, on_round) -> int:
    """Call on_round for the complete lines of `path` past the first `seen`."""
    if not path.is_file():
        return seen
    text = path.read_text()
    lines = text.splitlines()
    complete = lines if text.endswith("\n") else lines[:-1]
    for line in complete[seen:]:
        if on_round:
            on_round(json.loads(line))
    return max(seen, len(complete))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def run_deployment(cfg: FedConfig, run_dir: Path,
                   on_round: Callable[[dict], None] | None = None) -> dict:
    """The whole loopback deployment: SuperLink, registered SuperNodes, one run; all stopped at
    the end."""
    with Federation(run_dir, cfg.clients) as fed:
        fed.start_superlink()
        fed.start_nodes()
        result = fed.run(cfg, on_round)
    result["config"] = cfg.to_dict()
    result["run_dir"] = str(Path(run_dir).resolve())
    return result
