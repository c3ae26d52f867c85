"""A FedAvg that checks every client update before averaging it, and counts bytes.

Flower 1.42's stock `FedAvg` averages a NaN update silently and fails on a wrong shape or a missing
key. `RobustFedAvg` keeps FedAvg's round structure but:

- samples, each round, a `fraction` of the connected nodes (at least `min_valid`, at most all),
  drawn by a generator seeded with (seed, round) so that a run is reproducible; in the first
  round it waits up to `wait_nodes` seconds for `expected_nodes`, or until no new node has
  joined for `settle` seconds (a simulation federation may hold fewer nodes than the run's
  `clients`); later rounds go on with whoever is connected;
- checks each reply (`check_reply`): an `arrays` ArrayRecord with exactly the expected keys, each
  a numpy array of the expected dtype and shape, all values finite, binary latent weights within
  [−1, 1], BatchNorm running variances ≥ 0, and a `metrics` record with a positive
  `num-examples`. A bad reply, an error reply and a missing reply are left out and logged with
  the node id, the client's partition id when known, and the reason;
- with DP on (`max_update_norm` = the clipping norm), also rejects an update whose L2 distance
  from the global state it was sent, in DP coordinates (`norm_scales`), exceeds that norm (the
  client's `fixedclipping_mod` clips it);
- combines the valid updates by the run's rule (`robust.combine`: FedAvg's mean weighted by
  `num-examples`, or Flower's Krum, FedMedian or FedTrimmedAvg; a bits uplink is decoded to ±1
  first), then, with a server optimizer (`server_opt.ServerOptimizer`: FedAvgM, FedAdam,
  FedYogi), steps from the global model the clients received along that combination;
- with fewer than `min_valid` valid updates returns no arrays, so `Strategy.start` keeps the
  previous global model;
- records, per round and per sampled node, the payload bytes received (downlink) and sent
  (uplink) and the verdict, in `self.rounds`.

Nothing is kept per client beyond the round's sampled nodes (the node → partition map learned
from replies is cut to them every round), so the server's memory does not grow with the number
of clients in the federation, only with the number sampled per round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from hybnn_cli.fed.payload import UpdateSpec, decode_update, payload_bytes, state_to_arrays
from hybnn_cli.fed.robust import combine
from hybnn_cli.fed.server_opt import ServerOptimizer


def check_arrays(arrays, spec: UpdateSpec, decoded: dict | None = None) -> str | None:
    """Why an update's arrays are unusable, or None if they are fine. `decoded`, if given,
    receives each checked array as numpy (so that the server parses each array once)."""
    if not isinstance(arrays, ArrayRecord):
        return "no 'arrays' ArrayRecord in the reply"
    missing = sorted(set(spec.wire) - set(arrays))
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    extra = sorted(set(arrays) - set(spec.wire))
    if extra:
        return f"unexpected key(s) {', '.join(extra)}"
    for key, (dtype, shape) in spec.wire.items():
        a = arrays[key]
        if a.dtype != dtype or tuple(a.shape) != shape:
            return (f"{key}: {a.dtype} {tuple(a.shape)} where {dtype} {shape} was expected")
        try:
            x = a.numpy()
        except Exception as e:  # a malformed array: any decoding error rejects it
            return f"{key}: cannot decode ({type(e).__name__}: {e})"
        if str(x.dtype) != dtype or x.shape != shape:
            return f"{key}: data is {x.dtype} {x.shape} but the header says {dtype} {shape}"
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            return f"{key}: {int((~np.isfinite(x)).sum())} non-finite value(s)"
        if x.dtype.kind == "f" and key in spec.binary_keys and np.abs(x).max() > 1.0:
            return f"{key}: latent weights outside [-1, 1] (max |w| = {np.abs(x).max():.3g})"
        if key.endswith("running_var") and (x < 0).any():
            return f"{key}: negative running variance"
        if decoded is not None:
            decoded[key] = x
    return None


def check_reply(content: RecordDict, spec: UpdateSpec,
                decoded: dict | None = None) -> tuple[str | None, float]:
    """(reason to reject or None, number of examples) for one reply's content; `decoded` as in
    `check_arrays`."""
    metrics = content.get("metrics")
    if not isinstance(metrics, MetricRecord) or "num-examples" not in metrics:
        return "no 'metrics' record with num-examples", 0.0
    n = metrics["num-examples"]
    if not isinstance(n, int | float) or not math.isfinite(n) or n <= 0:
        return f"num-examples must be a positive number, got {n!r}", 0.0
    return check_arrays(content.get("arrays"), spec, decoded), float(n)


def update_norm(update: dict[str, np.ndarray], global_: dict[str, np.ndarray],
                scales: dict[str, float] | None = None) -> float:
    """L2 norm of update − global over every array, each divided by its scale (default 1), as
    Flower's DP clipping computes it (`dp.dp_scales`)."""
    scales = scales or {}
    return float(np.sqrt(sum(float(np.square((update[k] - global_[k]) / scales.get(k, 1.0)).sum())
                             for k in update)))


def sample_size(n: int, fraction: float, min_nodes: int) -> int:
    """How many of n nodes a round samples: ceil(fraction · n), at least min_nodes, at most n."""
    return min(n, max(math.ceil(fraction * n - 1e-9), min_nodes))


def sample_nodes(nodes: list[int], fraction: float, min_nodes: int, seed: int,
                 server_round: int) -> list[int]:
    """A round's nodes out of `nodes` (sorted ids): `sample_size` of them, drawn without
    replacement by a generator seeded with (seed, round); sorted."""
    k = sample_size(len(nodes), fraction, min_nodes)
    if k >= len(nodes):
        return list(nodes)
    rng = np.random.default_rng([seed, server_round])
    return sorted(nodes[i] for i in rng.choice(len(nodes), size=k, replace=False))


class RobustFedAvg(FedAvg):
    def __init__(self, spec: UpdateSpec, expected_nodes: int, min_valid: int = 1,
                 fraction: float = 1.0, seed: int = 0, wait_nodes: float = 120.0,
                 settle: float = 10.0, aggregate: str = "fedavg", byzantine: float = 0.0,
                 max_update_norm: float | None = None,
                 norm_scales: dict[str, float] | None = None,
                 server_opt: ServerOptimizer | None = None):
        super().__init__(fraction_train=1.0, min_train_nodes=1, min_available_nodes=1)
        self.fraction_evaluate, self.min_evaluate_nodes = 0.0, 0  # the server evaluates
        self.spec = spec
        self.expected_nodes = expected_nodes
        self.min_valid = min_valid
        self.fraction = fraction
        self.seed = seed
        self.wait_nodes = wait_nodes
        self.settle = settle
        self.aggregate = aggregate
        self.byzantine = byzantine
        self.max_update_norm = max_update_norm
        self.norm_scales = norm_scales
        self.server_opt = server_opt
        self._global: dict[str, np.ndarray] = {}
        self.rounds: dict[int, dict] = {}
        self.partition_of: dict[int, int] = {}  # node id → partition id (from its metrics)
        self._sent: list[Message] = []

    def summary(self) -> None:
        log(INFO, "\t├──> RobustFedAvg: uplink %s, %d expected nodes, at least %d valid "
            "updates per round, aggregation %s", self.spec.uplink, self.expected_nodes,
            self.min_valid, self.aggregate)
        super().summary()

    def _who(self, node_id: int) -> str:
        p = self.partition_of.get(node_id)
        return f"node {node_id}" + (f" (partition {p})" if p is not None else "")

    def wait_for_nodes(self, grid: Grid, server_round: int) -> list[int]:
        """The connected node ids, sorted; in round 1 after waiting for the expected ones."""
        now = time.monotonic()
        deadline = now + (self.wait_nodes if server_round == 1 else 0.0)
        last_change, seen = now, -1
        while True:
            nodes = sorted(grid.get_node_ids())
            now = time.monotonic()
            if len(nodes) != seen:
                last_change, seen = now, len(nodes)
            if (len(nodes) >= self.expected_nodes or now >= deadline
                    or (nodes and now - last_change >= self.settle)):
                break
            log(INFO, "Waiting for nodes: %d of %d connected", len(nodes), self.expected_nodes)
            time.sleep(1.0)
        if server_round == 1 and len(nodes) != self.expected_nodes:
            log(WARNING, "%d node(s) connected where the run expects %d; going on with them",
                len(nodes), self.expected_nodes)
        return nodes

    def sample(self, server_round: int, nodes: list[int]) -> list[int]:
        return sample_nodes(nodes, self.fraction, self.min_valid, self.seed, server_round)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        nodes = self.sample(server_round, self.wait_for_nodes(grid, server_round))
        self.partition_of = {n: p for n, p in self.partition_of.items() if n in set(nodes)}
        stats = self.rounds.setdefault(server_round, {"clients": {}, "valid": 0,
                                                      "kept_previous": False})
        if len(nodes) < self.min_valid:
            log(WARNING, "round %d: only %d node(s) connected, %d needed; keeping the model",
                server_round, len(nodes), self.min_valid)
            return []
        config["server-round"] = server_round
        if self.max_update_norm is not None or self.server_opt is not None:
            self._global = {k: a.numpy().astype(np.float64) for k, a in arrays.items()}
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        down = payload_bytes(record)
        for node in nodes:
            stats["clients"][node] = {"node_id": node, "recv_bytes": down, "sent_bytes": 0,
                                      "status": "no reply"}
            if node in self.partition_of:
                stats["clients"][node]["partition_id"] = self.partition_of[node]
        # the grid stamps message ids on these objects when it sends them; aggregate_train maps
        # replies back to nodes by them (an error made by the SuperLink for an unreachable node
        # comes from the SuperLink's id, not the node's)
        self._sent = [Message(content=record, message_type=MessageType.TRAIN, dst_node_id=node)
                      for node in nodes]
        return self._sent

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        stats = self.rounds.setdefault(server_round, {"clients": {}, "valid": 0,
                                                      "kept_previous": False})
        valid: list[tuple] = []
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in self._sent}
        for msg in replies:
            node = node_of.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            entry = stats["clients"].setdefault(node, {"node_id": node, "recv_bytes": 0,
                                                       "sent_bytes": 0})
            if msg.has_error():
                reason = f"client failed: {msg.error.reason}"
            else:
                entry["sent_bytes"] = payload_bytes(msg.content)
                metrics = msg.content.get("metrics")
                if isinstance(metrics, MetricRecord) and isinstance(metrics.get("partition-id"),
                                                                    int):
                    self.partition_of[node] = metrics["partition-id"]
                wire: dict[str, np.ndarray] = {}
                reason, n = check_reply(msg.content, self.spec, wire)
            update = None
            if reason is None:
                update = decode_update(wire, self.spec)
                if self.max_update_norm is not None:
                    norm = update_norm(update, self._global, self.norm_scales)
                    if norm > self.max_update_norm * (1 + 1e-4) + 1e-6:
                        reason = (f"update norm {norm:.4g} above the DP clipping norm "
                                  f"{self.max_update_norm:g}")
            if node in self.partition_of:
                entry["partition_id"] = self.partition_of[node]
            if reason is not None:
                entry["status"] = f"rejected: {reason}"
                log(WARNING, "round %d: left out the update of %s: %s", server_round,
                    self._who(node), reason)
                continue
            entry["status"] = "accepted"
            order = (self.partition_of.get(node, 1 << 30), node)
            valid.append((order, update, n, msg.content["metrics"]))
        for node, entry in stats["clients"].items():
            if entry.get("status") == "no reply":
                log(WARNING, "round %d: no reply from %s", server_round, self._who(node))
        stats["valid"] = len(valid)
        if len(valid) < self.min_valid:
            stats["kept_previous"] = True
            log(WARNING, "round %d: %d valid update(s), %d needed: keeping the previous global "
                "model", server_round, len(valid), self.min_valid)
            return None, None
        # replies arrive in any order; sum in partition order so a run is reproducible
        valid = [v[1:] for v in sorted(valid, key=lambda v: v[0])]
        total = sum(n for _, n, _ in valid)
        combined = combine(self.aggregate, [(u, n) for u, n, _ in valid], self.byzantine,
                           server_round)
        if self.server_opt is not None:
            combined = self.server_opt.step(self._global, combined, server_round)
        avg = {}
        for key, (dtype, _) in self.spec.wire.items():
            mean = combined[key]
            if self.spec.uplink == "bits" and key in self.spec.binary_keys:
                dtype = "float32"
            avg[key] = (np.rint(mean) if np.dtype(dtype).kind in "iu" else mean).astype(dtype)
        metrics = MetricRecord({"num-examples": int(total), "clients": len(valid)})
        for name in ("train-loss", "train-acc"):  # reported by the clients, only for the log
            if all(isinstance(m.get(name), float) and math.isfinite(m[name]) for _, _, m in valid):
                metrics[name] = float(sum(m[name] * n for _, n, m in valid) / total)
        return state_to_arrays(avg), metrics
