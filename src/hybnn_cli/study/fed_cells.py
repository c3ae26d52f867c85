"""The cells of the scale study's tables (`fed_scale` renders them): a run's server and client
steps in words, kilobytes, the rounds a grid row took to come within 1 point of centralized, and
a check over seeds. Pure formatting, and no import of `docgen`, so that `docgen` itself may use
them (its `fedscale_earlier` does) without an import cycle."""

from __future__ import annotations

from hybnn_cli.fed.server_opt import is_identity

SCALE = "fedscale.json"  # the scale study's file (`fed_scale`; format `fed_records.SCALE_FORMAT`)


def kb(x: float) -> str:
    return f"{x / 1e3:,.1f}"


def server_step(config: dict) -> str:
    """A run's server optimizer in words (runs from before the options: plain FedAvg, constant
    η)."""
    opt, lr = config.get("server_opt", "sgd"), config.get("server_lr", 1.0)
    momentum = config.get("server_momentum", 0.0)
    schedule = config.get("server_schedule", "constant")
    if is_identity(opt, lr, momentum, schedule):
        return "FedAvg"
    eta = f"η {lr:g}" + (" cosine" if schedule == "cosine" else "")
    if opt == "sgd":
        return f"FedAvgM ({eta}, β {momentum:g})"
    return f"Fed{opt.capitalize()} ({eta}, β1 {momentum:g})"


def client_step(config: dict, lr: float) -> str:
    """A run's client optimizer, learning rate and batch (runs from before the option: Adam)."""
    opt = {"adam": "Adam", "sgd": "SGD"}[config.get("client_opt", "adam")]
    return f"{opt} {config.get('lr', lr):g}, {config.get('batch_size', 128)}"


def first_run(row: dict) -> dict:
    """A grid row's run (version 1) or its first seed's (version 2): what all its seeds share."""
    return row["per_seed"][min(row["per_seed"], key=int)] if "per_seed" in row else row


def within_cell(row: dict) -> str:
    """The rounds a grid row took to come within 1 point of centralized: one run's (a round or
    None) or the mean ± std over the seeds that came within, with how many did when not all."""
    within, rounds = row["rounds_to_within_1pt"], len(first_run(row)["accuracy_curve"])
    if not isinstance(within, dict):
        return within if within else f"not in {rounds}"
    n = len(within["values"])
    if not within["reached"]:
        return f"not in {rounds}" + (f" (any of {n} seeds)" if n > 1 else "")
    cell = f"{within['mean']:.1f} ± {within['std']:.1f}"
    return cell if within["reached"] == n else f"{cell} ({within['reached']} of {n} seeds)"


def seed_count(hits: list[bool]) -> str:
    """Whether a check held: for one run "**yes**" or "no"; over seeds, in how many."""
    if all(hits):
        return "**yes**" if len(hits) == 1 else f"**yes** ({len(hits)} of {len(hits)} seeds)"
    return "no" if not any(hits) else f"{sum(hits)} of {len(hits)} seeds"
