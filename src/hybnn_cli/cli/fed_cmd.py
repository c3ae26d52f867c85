"""Federated training of the task BNN on Flower (`hybnn fed`); its settings and their defaults
are `fed.config.FedConfig`'s."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from hybnn_cli.cli import latest
from hybnn_cli.cli.app import JsonOut, app, check_out, handle_errors, print_json
from hybnn_cli.cli.config_options import config_options
from hybnn_cli.cli.progress import make_progress
from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.config import HELP, FedConfig
from hybnn_cli.threads import HELP as THREADS_HELP
from hybnn_cli.threads import resolve as resolve_threads

# the command's own options (the run's settings come from FedConfig: `config_options`)
Codes = typer.Option(None, "--codes", help=latest.HELP["codes"] + " The clients split its train "
                     "set; the server tests on its test set.")
Out = typer.Option(None, "--out", help="Checkpoint of the final global BNN (default "
                   "runs/fed-<task>.pt).")
Engine = typer.Option("inprocess", "--engine", help="inprocess (one process, no SuperLink), "
                      "simulation (Flower's Simulation Engine on Ray, as `flwr run .`) or "
                      "deployment (a SuperLink and one SuperNode per client on loopback, with TLS "
                      "and SuperNode authentication).")
Deployment = typer.Option(False, "--deployment", help="Alias of --engine deployment.")
RunDir = typer.Option(None, "--run-dir", help="With the simulation or deployment engine: folder "
                      "for logs and outputs, and the deployment's certificates and keys "
                      "(default: a new folder under runs/).")
FedThreads = typer.Option(None, "--threads", min=1, help=THREADS_HELP + " On the simulation "
                          "engine, Ray runs one client per thread at a time; on the deployment "
                          "engine they are shared out among the clients' processes (at least 1 "
                          "each).")


@app.command("fed")
@handle_errors
@config_options(FedConfig, HELP, first=("codes",))
def fed_cmd(settings: dict, codes: Path = Codes, out: Path = Out, engine: str = Engine,
            deployment: bool = Deployment, run_dir: Path = RunDir, threads: int = FedThreads,
            json_out: bool = JsonOut):
    """Train the task BNN by federated learning on Flower.

    By default the clients train with SGD and the server steps with FedAdam, the optimizers the
    fedtune study chose on validation; with --secagg or DP the server averages (FedAvg) and the
    clients use Adam. It shows the global model's validation accuracy after every round (what
    settings are chosen on) and its test accuracy at the end. Other engines: --engine
    simulation or deployment.

    Example: hybnn fed --codes runs/codes.h5 --task 3 --clients 1000 --fraction 0.1
    --rounds 100
    """
    import logging

    from hybnn_cli.fed.launch import process_threads, run_federation

    logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower's INFO off, warnings kept
    codes = latest.resolve("codes", codes)
    if not codes.is_file():
        raise HybnnError(f"{codes}: no such codes file")
    out = out or Path(f"runs/fed-{task_name(codes, settings['task'])}.pt")
    check_out(out)
    engine = engine_of(engine, deployment, settings["secagg"])
    cfg = FedConfig(**settings, codes=str(codes), out=str(out))
    total = resolve_threads(threads)
    cfg = replace(cfg, threads=process_threads(total, engine, cfg.clients))
    with make_progress(disable=json_out) as progress:
        on_round = round_printer(progress, cfg, json_out)
        result = run_federation(cfg, engine, run_dir, on_round, cpus=total)
    if json_out:
        print_json(result)
    else:
        print_summary(result, cfg)


def task_name(codes, task: str) -> str:
    """The name of --task: a number, all or class indices name themselves; class names are
    looked up in the codes file."""
    from hybnn_cli.data.tasks import parse_task

    try:
        return parse_task(task).name
    except HybnnError:
        from hybnn_cli.train.task_samples import codes_task  # imports torch: not at start-up

        return codes_task(codes, task).name


def engine_of(engine: str, deployment: bool, secagg: bool) -> str:
    """--engine, with the --deployment alias; SecAgg+ runs where Flower's legacy API does."""
    if deployment and engine not in ("inprocess", "deployment"):
        raise HybnnError(f"--deployment is --engine deployment; it contradicts --engine {engine}")
    engine = "deployment" if deployment else engine
    if secagg and engine == "deployment":
        raise HybnnError("--secagg runs on the inprocess and simulation engines")
    return engine


def round_printer(progress, cfg: FedConfig, json_out: bool):
    """The on_round callback: the bar's status and, without --json, one line per round."""
    bar = progress.add_task(f"fed {task_name(cfg.codes, cfg.task)}", total=cfg.rounds,
                            status="starting")

    def on_round(row: dict) -> None:
        if row["round"] == 0:
            return
        status = (f"val {row['val_acc']:.2%}  valid {row.get('valid_updates', 0)}/"
                  f"{len(row.get('clients', []))}")
        progress.update(bar, completed=row["round"], status=status)
        if not json_out:
            progress.console.print(
                f"round {row['round']:3d}  val {row['val_acc']:.2%}  "
                f"up {row.get('bytes_sent', 0) / 1e3:,.1f} kB  "
                f"down {row.get('bytes_recv', 0) / 1e3:,.1f} kB  {status.split('  ')[1]}"
                + ("  (kept previous model)" if row.get("kept_previous") else ""),
                highlight=False)

    return on_round


def print_summary(result: dict, cfg: FedConfig) -> None:
    b = result["bytes"]
    accuracy = (f"test accuracy {result['final_test_acc']:.2%}" if "final_test_acc" in result
                else f"validation accuracy {result['final_val_acc']:.2%} (test sealed)")
    typer.echo(f"{task_name(cfg.codes, cfg.task)} federated ({cfg.clients} clients, "
               f"{cfg.partition}, uplink {cfg.uplink}): {accuracy} after {cfg.rounds} rounds  "
               f"→ {cfg.out}")
    typer.echo(f"bytes per round: up {b['uplink_per_round'] / 1e3:,.1f} kB, down "
               f"{b['downlink_per_round'] / 1e3:,.1f} kB (all clients); run total "
               f"{(b['uplink_total'] + b['downlink_total']) / 1e6:,.2f} MB")
