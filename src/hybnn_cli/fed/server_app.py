"""The Flower ServerApp: reads the run settings and runs `server.run_server` on the grid.

In-process runs pass a per-round callback as the grid's `on_round` attribute; on the Deployment
Engine progress goes to `<out-dir>/rounds.jsonl` instead.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.server import run_server

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = FedConfig.from_run_config(context.run_config)
    run_server(grid, cfg, on_round=getattr(grid, "on_round", None))
