"""Federated training of the task BNN on Flower."""

from __future__ import annotations

from pathlib import Path

import typer

from hybnn_cli.cli import latest
from hybnn_cli.cli.app import (
    JsonOut,
    Seed,
    app,
    check_out,
    handle_errors,
    print_json,
)
from hybnn_cli.cli.progress import make_progress
from hybnn_cli.data.tasks import parse_task
from hybnn_cli.errors import HybnnError
from hybnn_cli.threads import HELP as THREADS_HELP
from hybnn_cli.threads import resolve as resolve_threads


@app.command("fed")
@handle_errors
def fed_cmd(
    codes: Path = typer.Option(None, "--codes", help=latest.HELP["codes"] + " The clients "
                               "split its train set; the server tests on its test set."),
    task: str = typer.Option("3", "--task", help="1..5 (digit pairs 0/1 … 8/9) or all."),
    clients: int = typer.Option(3, "--clients", min=1, help="Number of clients (partitions; "
                                "up to the train set's size: a client may hold one sample)."),
    fraction: float = typer.Option(1.0, "--fraction", help="Share of the clients sampled each "
                                   "round (seeded by --seed and the round), in (0, 1]."),
    rounds: int = typer.Option(20, "--rounds", min=1, help="Federated rounds."),
    local_epochs: int = typer.Option(5, "--local-epochs", min=1, help="Local epochs per round."),
    batch_size: int = typer.Option(128, "--batch-size", min=2, help="Client batch size: a "
                                   "client holding n codes makes ceil(n / B) steps per local "
                                   "epoch."),
    lr: float = typer.Option(1e-2, "--lr", help="The clients' learning rate, as train-bnn's: "
                             "cosine over all rounds × local epochs."),
    client_opt: str = typer.Option("adam", "--client-opt", help="The clients' optimizer, fresh "
                                   "each round: adam (as train-bnn) or sgd (steps proportional "
                                   "to the gradient; its --lr is about 100x Adam's, e.g. 10; "
                                   "pair it with --server-opt adam)."),
    server_opt: str = typer.Option("sgd", "--server-opt", help="The server's step along the "
                                   "round's aggregate: sgd (FedAvg; with --server-momentum, "
                                   "FedAvgM), adam (FedAdam) or yogi (FedYogi). Only trained "
                                   "parameters step; batch-norm statistics take the aggregate."),
    server_lr: float = typer.Option(1.0, "--server-lr", help="Server learning rate (sgd 1 with "
                                    "no momentum: plain FedAvg; adam and yogi: about 0.01-0.1)."),
    server_momentum: float = typer.Option(0.0, "--server-momentum", help="Server momentum in "
                                          "[0, 1) (adam and yogi: beta1)."),
    server_schedule: str = typer.Option("constant", "--server-schedule", help="The server "
                                        "learning rate over the rounds: constant (Flower's) or "
                                        "cosine (decays to 0 by the last round, as the "
                                        "clients' does)."),
    hidden: int = typer.Option(128, "--hidden", min=1, help="Hidden neurons."),
    partition: str = typer.Option("iid", "--partition", help="iid or dirichlet (label skew)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Dirichlet concentration (smaller = more "
                                "skew)."),
    uplink: str = typer.Option("float", "--uplink", help="float (latent weights) or bits (packed "
                               "sign bits; batch-norm stays float)."),
    min_valid: int = typer.Option(1, "--min-valid", min=1, help="Fewer valid updates in a round "
                                  "keep the previous global model."),
    round_timeout: float = typer.Option(600.0, "--round-timeout", min=1.0, help="Seconds the "
                                        "server waits for a round's replies (a client that "
                                        "vanished is left out after it)."),
    seed: int = Seed,
    out: Path = typer.Option(None, "--out", help="Checkpoint of the final global BNN (default "
                             "runs/fed-<task>.pt)."),
    secagg: bool = typer.Option(False, "--secagg", help="Flower's SecAgg+ secure aggregation: "
                                "the server learns only the sum of the clients' updates "
                                "(in-process and simulation engines)."),
    dp_noise: float = typer.Option(0.0, "--dp-noise", help="Differential privacy (Flower's "
                                   "client-side fixed clipping): noise multiplier σ >= 0; the "
                                   "server adds Gaussian noise of std σ·C/m to the mean of the "
                                   "m sampled updates. Needs --dp-clip."),
    dp_clip: float = typer.Option(None, "--dp-clip", help="DP clipping norm C > 0: each client "
                                  "scales its update (new state − received state, BatchNorm "
                                  "statistics included, these in DP coordinates: "
                                  "docs/federated.md) to L2 norm <= C with Flower's "
                                  "fixedclipping_mod; the server rejects a longer one. Float "
                                  "uplink only (bits send signs, not a clippable update); not "
                                  "with --secagg (refused) nor a robust --aggregate."),
    aggregate: str = typer.Option("fedavg", "--aggregate", help="fedavg (weighted mean), krum, "
                                  "median or trimmed-mean (Flower's Krum, FedMedian, "
                                  "FedTrimmedAvg with beta 0.2), applied to the updates that "
                                  "passed validation. Not with --secagg."),
    byzantine: float = typer.Option(0.0, "--byzantine", help="SIMULATION of attackers, for "
                                    "studies: this share of the clients (seeded) send their "
                                    "update sign-flipped and amplified (global − 10·update). "
                                    "Krum assumes that share of each round is malicious."),
    engine: str = typer.Option("inprocess", "--engine", help="inprocess (one process, no "
                               "SuperLink), simulation (Flower's Simulation Engine on Ray, as "
                               "`flwr run .`) or deployment (a SuperLink and one SuperNode per "
                               "client on loopback, with TLS and SuperNode authentication)."),
    deployment: bool = typer.Option(False, "--deployment", help="Alias of --engine deployment."),
    run_dir: Path = typer.Option(None, "--run-dir", help="With the simulation or deployment "
                                 "engine: folder for logs and outputs, and the deployment's "
                                 "certificates and keys (default: a new folder under runs/)."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP + " On the "
                                "simulation engine, Ray runs one client per thread at a time; "
                                "on the deployment engine they are shared out among the "
                                "clients' processes (at least 1 each)."),
    json_out: bool = JsonOut,
):
    """Train the task BNN by federated averaging on Flower: the global model's validation
    accuracy after every round (what settings are chosen on), its test accuracy at the end.

    Example: hybnn fed --codes runs/codes.h5 --task 3 --clients 3 --rounds 20

    Example: hybnn fed --engine simulation --clients 1000 --fraction 0.1 --rounds 100

    Example: hybnn fed --clients 1000 --fraction 0.1 --server-momentum 0.9

    Example: hybnn fed --clients 1000 --fraction 0.1 --client-opt sgd --lr 10 --server-opt adam
    --server-lr 0.3 --server-momentum 0.9 --server-schedule cosine

    Example: hybnn fed --clients 100 --fraction 0.1 --dp-noise 1.0 --dp-clip 10

    Example: hybnn fed --clients 100 --aggregate median --byzantine 0.1
    """
    import logging

    from hybnn_cli.fed.config import FedConfig
    from hybnn_cli.fed.launch import ENGINES, process_threads, run_federation

    logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower's INFO off, warnings kept
    t = parse_task(task)
    out = out or Path(f"runs/fed-{t.name}.pt")
    check_out(out)
    codes = latest.resolve("codes", codes)
    if not codes.is_file():
        raise HybnnError(f"{codes}: no such codes file")
    if deployment and engine not in ("inprocess", "deployment"):
        raise HybnnError(f"--deployment is --engine deployment; it contradicts --engine {engine}")
    engine = "deployment" if deployment else engine
    if engine not in ENGINES:
        raise HybnnError(f"unknown engine '{engine}': use {', '.join(ENGINES)}")
    if secagg and engine == "deployment":
        raise HybnnError("--secagg runs on the inprocess and simulation engines")
    if dp_clip is not None and not dp_clip > 0:
        raise HybnnError(f"--dp-clip must be > 0, got {dp_clip}")
    total_threads = resolve_threads(threads)
    cfg = FedConfig(codes=str(codes), task=task, clients=clients, fraction=fraction,
                    rounds=rounds,
                    local_epochs=local_epochs, batch_size=batch_size, lr=lr,
                    client_opt=client_opt,
                    server_opt=server_opt, server_lr=server_lr,
                    server_momentum=server_momentum, server_schedule=server_schedule,
                    hidden=hidden,
                    partition=partition, alpha=alpha, uplink=uplink, seed=seed,
                    min_valid=min_valid, round_timeout=round_timeout, out=str(out),
                    secagg=secagg, dp_noise=dp_noise, dp_clip=dp_clip or 0.0,
                    aggregate=aggregate, byzantine=byzantine,
                    threads=process_threads(total_threads, engine, clients))
    with make_progress(disable=json_out) as progress:
        bar = progress.add_task(f"fed {t.name}", total=rounds, status="starting")

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

        result = run_federation(cfg, engine, run_dir, on_round, cpus=total_threads)
    if json_out:
        print_json(result)
    else:
        b = result["bytes"]
        typer.echo(f"{t.name} federated ({clients} clients, {partition}, uplink {uplink}): "
                   + (f"test accuracy {result['final_test_acc']:.2%}" if "final_test_acc" in
                      result else f"validation accuracy {result['final_val_acc']:.2%} (test "
                      "sealed)") + f" after {rounds} rounds  "
                   f"→ {out}")
        typer.echo(f"bytes per round: up {b['uplink_per_round'] / 1e3:,.1f} kB, down "
                   f"{b['downlink_per_round'] / 1e3:,.1f} kB (all clients); run total "
                   f"{(b['uplink_total'] + b['downlink_total']) / 1e6:,.2f} MB")
