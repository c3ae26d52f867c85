"""One federated run on the engine asked for: in one process (`inprocess`) or on Flower's
Deployment Engine over loopback (`deployment`); the same ServerApp and ClientApp on both. A run in
which the server accepted no client update in any round is an error: its model is the initial one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.config import FedConfig

ENGINES = ("inprocess", "deployment")


def process_threads(total: int, engine: str, clients: int) -> int:
    """Threads each process of a run computes with, out of `total`: all of them in one process;
    on the Deployment Engine, where every client trains in its own process at the same time, an
    equal share (at least 1)."""
    return total if engine == "inprocess" else max(1, total // clients)


def run_federation(cfg: FedConfig, engine: str = "inprocess", run_dir: Path | None = None,
                   on_round: Callable[[dict], None] | None = None) -> dict:
    """Run FedHyBNN; returns the server's result with "mode" (the engine). `run_dir`: the
    deployment's folder for certificates, keys, logs and outputs (default: a new one in runs/)."""
    if engine == "inprocess":
        from hybnn_cli.fed.inprocess import run_inprocess

        result = run_inprocess(cfg, on_round)
        result["mode"] = "in-process"
    elif engine == "deployment":
        from hybnn_cli.fed.deployment import run_deployment

        run_dir = run_dir or Path("runs") / time.strftime("fed-%Y%m%d-%H%M%S")
        result = run_deployment(cfg, run_dir, on_round)
        result["mode"] = "deployment"
    else:
        raise HybnnError(f"unknown engine '{engine}': use {' or '.join(ENGINES)}")
    if not any(r.get("valid_updates") for r in result["rounds"]):
        raise HybnnError("no client update was accepted in any round; the saved model is the "
                         "initial one (see the warnings above)")
    return result
