"""Byzantine robustness: Flower's robust aggregation rules behind the validation of every update,
and the sign-flipping attackers that the studies simulate.

`combine` turns the round's validated, decoded updates into the next global state by the rule the
run asks for:
- `fedavg`: the mean weighted by `num-examples` (summed in partition order: reproducible);
- `krum`, `median`, `trimmed-mean`: Flower's `Krum`, `FedMedian` and `FedTrimmedAvg` (Message
  API, flwr 1.42), whose `aggregate_train` gets the decoded float updates as replies. Krum keeps
  the one update closest to its n − f − 2 nearest neighbours, with f = ⌈byzantine · n⌉ (the
  attackers a run simulates; 0 without them); the trimmed mean drops the `TRIM_BETA` share of
  the values at each end, per coordinate; median and trimmed mean ignore the example counts.

A simulated attacker (`--byzantine F`: the partitions `attacker_partitions` draws, seeded) trains
as the others and then sends its update reversed and amplified: global − `FLIP_SCALE` · (local −
global), kept inside what the validation accepts (latent weights in [−1, 1], running variances
≥ 0), so that it reaches the aggregation rule; on a bits uplink its signs are those of that state.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg, Krum

TRIM_BETA = 0.2  # share cut at each end by the trimmed mean (Flower's default)
FLIP_SCALE = 10.0  # how far an attacker pushes against its own update


def attacker_partitions(clients: int, share: float, seed: int) -> frozenset[int]:
    """The partition ids of the round(share · clients) simulated attackers, drawn with `seed`."""
    k = round(share * clients)
    if k == 0:
        return frozenset()
    rng = np.random.default_rng([seed, 0xB12])
    return frozenset(int(i) for i in rng.choice(clients, size=k, replace=False))


def sign_flip(local: dict, global_: dict, binary_keys) -> dict[str, torch.Tensor]:
    """An attacker's state: global − FLIP_SCALE · (local − global), latent weights clipped to
    [−1, 1], running variances ≥ 0, integer counters as trained."""
    out = {}
    for k, v in local.items():
        if not v.is_floating_point():
            out[k] = v.clone()
            continue
        g = global_[k].to(v.dtype)
        x = g - FLIP_SCALE * (v - g)
        if k in binary_keys:
            x = x.clamp(-1.0, 1.0)
        elif k.endswith("running_var"):
            x = x.clamp(min=0.0)
        out[k] = x
    return out


def krum_f(n: int, byzantine: float) -> int:
    return math.ceil(byzantine * n - 1e-9)


def combine(rule: str, updates: list[tuple[dict, float]], byzantine: float = 0.0,
            server_round: int = 0) -> dict[str, np.ndarray]:
    """The aggregate (float64 arrays) of `updates`, (decoded update, num-examples) pairs in
    partition order, by `rule`."""
    keys = list(updates[0][0])
    if rule == "fedavg":
        total = sum(n for _, n in updates)
        return {k: np.asarray(sum(u[k] * (n / total) for u, n in updates)) for k in keys}
    if rule == "krum":
        strategy = Krum(num_malicious_nodes=krum_f(len(updates), byzantine))
    elif rule == "median":
        strategy = FedMedian()
    elif rule == "trimmed-mean":
        strategy = FedTrimmedAvg(beta=TRIM_BETA)
    else:
        raise ValueError(f"unknown aggregation rule {rule!r}")
    replies = [Message(RecordDict({"arrays": ArrayRecord({k: Array(np.array(u[k], order="C"))
                                                          for k in keys}),
                                   "metrics": MetricRecord({"num-examples": n})}),
                       dst_node_id=0, message_type=MessageType.TRAIN) for u, n in updates]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return {k: np.asarray(arrays[k].numpy(), dtype=np.float64) for k in keys}
