"""The server side of a federated run: initial model, the validating strategy, the global
model's accuracy after every round, and the run's outputs.

After every round the server evaluates the global model on the validation split (`splits.py`:
held out of the clients' training split; what settings are chosen on, and what the progress
shows) and on the test split (read for the reported numbers only; not at all in a sealed run,
a study's candidate: `sealed`).

Outputs: the final global BNN as a normal `hybnn-bnn` checkpoint (so `hybnn evaluate` and export
work on it) with the run's config, seed and the encoder's SHA-256; and, when `out_dir` is set,
`rounds.jsonl` (one line per round, written as the run goes: the deployment runner shows progress
from it) and `result.json` (the summary that `hybnn fed --json` prints).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from hybnn_cli.codes.store import data_record
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.dp import ClientSideDP, dp_scales
from hybnn_cli.fed.local_training import evaluate_model, initial_model, model_shape, task_data
from hybnn_cli.fed.partition import partition_indices
from hybnn_cli.fed.payload import UpdateSpec, arrays_to_state, state_to_arrays
from hybnn_cli.fed.server_opt import ServerOptimizer
from hybnn_cli.fed.strategy import RobustFedAvg, sample_size
from hybnn_cli.fileio import atomic_path
from hybnn_cli.models import checkpoint as ck

RoundFn = Callable[[dict], None]


def run_server(grid: Grid, cfg: FedConfig, on_round: RoundFn | None = None) -> dict:
    """Run cfg.rounds rounds of validated FedAvg on `grid`; return the run's summary."""
    data = task_data(cfg.codes, cfg.task)
    task = data["task"]
    # the clients split the train set this way: refuse an impossible split before round 1
    parts = partition_indices(data["train"][1].numpy(), cfg.partition, cfg.clients, cfg.alpha,
                              cfg.seed)
    largest = max(len(p) for p in parts)
    del parts
    sha = data["attrs"]["encoder_sha256"]
    shape = model_shape(data["n_bits"], cfg, task.n_classes)
    model = initial_model(shape, cfg.seed)
    spec = UpdateSpec.for_model(model, cfg.uplink)
    strategy, base = build_strategy(cfg, spec, largest)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "rounds.jsonl").write_text("")
    history: list[dict] = []
    t0 = time.perf_counter()
    evaluate_fn = round_evaluator(model, data, cfg, base, history, t0, out_dir, on_round)
    result = strategy.start(grid, state_to_arrays(model.state_dict()), num_rounds=cfg.rounds,
                            timeout=cfg.round_timeout,
                            train_config=ConfigRecord({"encoder-sha256": sha}),
                            evaluate_fn=evaluate_fn)
    del result  # `model` holds the last global model: evaluate_fn loaded it after each round
    summary = run_summary(task, cfg, data, history, time.perf_counter() - t0)
    if cfg.out:
        ck.save_checkpoint(cfg.out, ck.BNN_FORMAT, model, {**cfg.to_dict(), "mode": "federated"},
                           cfg.seed, shape=shape.to_dict(),
                           task=task.record(), data=data_record(data["attrs"]),
                           encoder_sha256=sha, codes=str(cfg.codes),
                           metrics={k: v for k, v in summary.items() if k != "config"})
    if out_dir:
        with atomic_path(out_dir / "result.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    return summary


def build_strategy(cfg: FedConfig, spec: UpdateSpec, largest: int):
    """(the strategy the server runs, the validating strategy under it that keeps the rounds'
    statistics): SecAgg+ FedAvg or the robust FedAvg (with its server optimizer), wrapped in
    client-side DP when `cfg.dp`. `largest`: the most samples a client holds."""
    if cfg.secagg:
        from hybnn_cli.fed.secagg import SecAggFedAvg

        strategy = base = SecAggFedAvg(spec, expected_nodes=cfg.clients,
                                       min_valid=cfg.min_valid, fraction=cfg.fraction,
                                       seed=cfg.seed, max_weight=largest)
    else:
        strategy = base = RobustFedAvg(spec, expected_nodes=cfg.clients, min_valid=cfg.min_valid,
                                       fraction=cfg.fraction, seed=cfg.seed,
                                       aggregate=cfg.aggregate, byzantine=cfg.byzantine,
                                       max_update_norm=cfg.dp_clip if cfg.dp else None,
                                       norm_scales=dp_scales(spec.shapes) if cfg.dp else None,
                                       server_opt=ServerOptimizer(
                                           cfg.server_opt, cfg.server_lr, cfg.server_momentum,
                                           spec.binary_keys, cfg.server_schedule, cfg.rounds)
                                       if cfg.server_step else None)
    if cfg.dp:
        strategy = ClientSideDP(base, cfg.dp_noise, cfg.dp_clip,
                                sample_size(cfg.clients, cfg.fraction, cfg.min_valid), spec,
                                cfg.seed)
    return strategy, base


def round_evaluator(model, data: dict, cfg: FedConfig, base, history: list[dict], t0: float,
                    out_dir: Path | None, on_round: RoundFn | None):
    """The server's `evaluate_fn`: loads the global model into `model`, evaluates it on the
    validation split (and on test unless sealed), adds the round's client statistics from
    `base`, appends the row to `history` (and to `out_dir`/rounds.jsonl) and calls `on_round`."""
    x_test, y_test = data.get("test", (None, None))  # none in a sealed run (`sealed`)
    x_val, y_val = data["val"]

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays_to_state(arrays))
        val = evaluate_model(model, x_val, y_val, cfg.threads)
        row = {"round": server_round, "val_acc": val["acc"], "val_loss": val["loss"]}
        metrics = {"val-acc": val["acc"], "val-loss": val["loss"]}
        if x_test is not None:
            res = evaluate_model(model, x_test, y_test, cfg.threads)
            row.update(test_acc=res["acc"], test_loss=res["loss"])
            metrics.update({"test-acc": res["acc"], "test-loss": res["loss"]})
        row["seconds"] = time.perf_counter() - t0
        stats = base.rounds.get(server_round)
        if stats is not None:
            clients = sorted(stats["clients"].values(),
                             key=lambda c: (c.get("partition_id", 1 << 30), c["node_id"]))
            # (Flower's DP wrapper skips a round with an error reply before our strategy sees it)
            row.update(valid_updates=stats["valid"],
                       kept_previous=stats["kept_previous"] or not stats["valid"],
                       bytes_sent=sum(c["sent_bytes"] for c in clients),
                       bytes_recv=sum(c["recv_bytes"] for c in clients), clients=clients)
            base.rounds.pop(server_round)  # kept in `history` from now on
        history.append(row)
        if out_dir:
            with open(out_dir / "rounds.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        if on_round:
            on_round(row)
        return MetricRecord(metrics)

    return evaluate_fn


def run_summary(task, cfg: FedConfig, data: dict, history: list[dict], seconds: float) -> dict:
    """What `hybnn fed --json` prints of a run: its settings, the validation (and, unless sealed,
    test) accuracy per round, final and best, the bytes and the rounds' rows."""
    rounds = [r for r in history if r["round"] > 0]
    summary = {
        "task": task.name, "classes": list(task.classes), "config": cfg.to_dict(),
        "seed": cfg.seed, "encoder_sha256": data["attrs"]["encoder_sha256"],
        "n_val": len(data["val"][1]),
        "final_val_acc": rounds[-1]["val_acc"] if rounds else None,
        "best_val_acc": max((r["val_acc"] for r in rounds), default=None),
        "val_curve": [r["val_acc"] for r in rounds],
        "bytes": byte_totals(rounds), "rounds": rounds,
        "train_seconds": seconds, "out": cfg.out or None,
    }
    x_test, y_test = data.get("test", (None, None))  # none in a sealed run (`sealed`)
    if x_test is not None:
        summary.update(n_test=len(y_test),
                       initial_test_acc=history[0]["test_acc"] if history else None,
                       final_test_acc=rounds[-1]["test_acc"] if rounds else None,
                       best_test_acc=max((r["test_acc"] for r in rounds), default=None),
                       accuracy_curve=[r["test_acc"] for r in rounds])
    return summary


def byte_totals(rounds: list[dict]) -> dict:
    """Payload bytes per client (by partition id, else node id) summed over the run."""
    per_client: dict[str, dict] = {}
    for r in rounds:
        for c in r.get("clients", []):
            key = str(c.get("partition_id", f"node-{c['node_id']}"))
            d = per_client.setdefault(key, {"sent": 0, "recv": 0})
            d["sent"] += c["sent_bytes"]
            d["recv"] += c["recv_bytes"]
    n = max(len(rounds), 1)
    sent = sum(r.get("bytes_sent", 0) for r in rounds)
    recv = sum(r.get("bytes_recv", 0) for r in rounds)
    return {"uplink_total": sent, "downlink_total": recv, "uplink_per_round": sent / n,
            "downlink_per_round": recv / n, "per_client": per_client}
