"""One federated run on the engine asked for: in one process (`inprocess`), on Flower's
Simulation Engine (`simulation`, Ray: what `flwr run .` uses) or on Flower's Deployment Engine
over loopback (`deployment`); the same ServerApp and ClientApp on all three. A run in which the
server accepted no client update in any round is an error: its model is the initial one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.config import FedConfig

ENGINES = ("inprocess", "simulation", "deployment")


def process_threads(total: int, engine: str, clients: int) -> int:
    """Threads each process of a run computes with, out of `total`: all of them in one process;
    on the Simulation Engine, where Ray runs one client per CPU at a time, one; on the
    Deployment Engine, where every client trains in its own process at the same time, an equal
    share (at least 1)."""
    if engine == "inprocess":
        return total
    return 1 if engine == "simulation" else max(1, total // clients)


def run_federation(cfg: FedConfig, engine: str = "inprocess", run_dir: Path | None = None,
                   on_round: Callable[[dict], None] | None = None, cpus: int = 1) -> dict:
    """Run FedHyBNN; returns the server's result with "mode" (the engine). `run_dir`: the
    simulation's or deployment's folder for logs and outputs (and the deployment's certificates
    and keys; default: a new one in runs/). `cpus`: what the Simulation Engine may use."""
    if engine not in ENGINES:
        raise HybnnError(f"unknown engine '{engine}': use {', '.join(ENGINES)}")
    if engine == "inprocess":
        from hybnn_cli.fed.inprocess import run_inprocess

        result = run_inprocess(cfg, on_round)
        result["mode"] = "in-process"
    elif engine == "simulation":
        from hybnn_cli.fed.simulation import run_simulation

        run_dir = run_dir or Path("runs") / time.strftime("fed-sim-%Y%m%d-%H%M%S")
        result = run_simulation(cfg, run_dir, cpus, on_round)
        result["mode"] = "simulation"
    else:
        from hybnn_cli.fed.deployment import run_deployment

        run_dir = run_dir or Path("runs") / time.strftime("fed-%Y%m%d-%H%M%S")
        result = run_deployment(cfg, run_dir, on_round)
        result["mode"] = "deployment"
    if not any(r.get("valid_updates") for r in result["rounds"]):
        raise HybnnError("no client update was accepted in any round; the saved model is the "
                         "initial one (see the warnings above)")
    return result
