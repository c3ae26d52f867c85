"""What a local Flower deployment stands on: Flower's executables beside this Python, free
loopback ports, the Flower app folder naming hybnn's apps, and FLWR_HOME pointing `flwr` at the
local SuperLink."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.config import FedConfig

CONNECTION = "hybnn-local"
# what every Flower process hybnn starts is told: no telemetry, no update check, and no runtime
# installation of the app's dependencies (the environment running hybnn has them)
FLOWER_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}


def flower_env(base: dict | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with `FLOWER_ENV` set."""
    return {**(os.environ if base is None else base), **FLOWER_ENV}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HybnnError(f"{proc.args[0]} exited with code {proc.returncode} at start-up")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise HybnnError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def flower_bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


# ── the Flower app folder and FLWR_HOME ──────────────────────────────────────────────────────
def write_app(folder: Path) -> Path:
    """A minimal Flower app folder: pyproject.toml naming hybnn's server and client apps, with
    FedConfig's defaults as `[tool.flwr.app.config]` (the code comes from the installed hybnn)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ['[project]', 'name = "hybnn-fed"', 'version = "1.0.0"',
             'description = "hybnn federated task BNN"', 'license = "MIT"', '',
             '[tool.flwr.app]', 'publisher = "hybnn"', '',
             '[tool.flwr.app.components]', 'serverapp = "hybnn_cli.fed.server_app:app"',
             'clientapp = "hybnn_cli.fed.client_app:app"', '', '[tool.flwr.app.config]']
    lines += [f"{k} = {toml_value(v)}" for k, v in FedConfig().to_run_config().items()]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return folder


def write_flwr_home(home: Path, port: int, ca: Path | None) -> None:
    """FLWR_HOME/config.toml with the connection to 127.0.0.1:port (TLS with CA `ca`, or
    insecure when ca is None)."""
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{ca}"' if ca else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\n{security}\n')


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def json_out(res: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        return {}
