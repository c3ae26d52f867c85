"""Secure aggregation with Flower's SecAgg+ (`SecAggPlusWorkflow` on the server, `secaggplus_mod`
on the client): the server learns only the weighted sum of the sampled clients' updates.

Flower 1.42 runs SecAgg+ only as a workflow of the legacy path (`DefaultWorkflow` with a legacy
`Strategy` and `LegacyContext`); its Message-API strategies (`FedAvg.start`) cannot be combined
with it. So with `secagg` on, the server runs that workflow with `SecAggFedAvg`, a legacy strategy
that samples clients as `RobustFedAvg` does (same seeded draw), receives in `aggregate_fit` only
the aggregate that the workflow unmasked, and evaluates the global model on the server. Clients
reply in the legacy `fitres` layout, which `secaggplus_mod` masks before it leaves the client.

What changes with it:
- Each client scales its update by its number of examples / `max_weight` (the largest partition),
  quantizes it stochastically to integers over [−clipping_range, clipping_range] and adds masks;
  the server unmasks the sum and divides by the total weight: the weighted FedAvg mean, up to
  quantization error. Values are clipped to ±`CLIPPING_RANGE` before quantizing; BatchNorm
  running statistics, which grow with the fan-in (a variance reaches thousands), travel divided
  by their bound (`stat_scales`: mean / fan-in, variance / fan-in²) and are scaled back by the
  server. The quantization range is as fine as the 2^32 modulus allows for the round's number of
  clients (2^(31 − ⌈log2 k⌉)).
- The bits uplink: a client sends its signs as ±1 and the server recovers the mean of the
  signs, as without SecAgg+; but the masked vectors are integers modulo 2^32 sent as int64, so
  the bytes on the wire are those of 64-bit numbers, not of packed bits (measured: see
  benchmarks/README.md).
- The per-update checks of `RobustFedAvg` (shapes, finite values, weight ranges) cannot run on
  masked vectors: the server checks the aggregate only, and keeps the previous model if the
  aggregate is unusable. Integer buffers (BatchNorm's `num_batches_tracked`) are not averaged:
  the server keeps its own.
- Stochastic rounding and the key pairs use fresh randomness: runs with the same seed differ
  in the last digits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from flwr.supercore import log

from hybnn_cli.fed.payload import UpdateSpec, bn_fan_in, payload_bytes, state_to_arrays
from hybnn_cli.fed.strategy import sample_nodes

CLIPPING_RANGE = 64.0  # latent weights are in [-1, 1]; batch-norm affine values stay well inside


def quantization_range(k: int) -> int:
    """The finest quantization whose sum over k clients stays below the 2^32 modulus."""
    return 1 << (31 - math.ceil(math.log2(max(k, 2))))


def stat_scales(spec: UpdateSpec) -> dict[str, float]:
    """Per key, what a value is divided by on the way into SecAgg+: the fan-in of the binary
    layer before a BatchNorm for its running mean (|mean| ≤ fan-in), its square for the running
    variance; 1 for everything else (`payload.bn_fan_in`)."""
    fan_in = bn_fan_in(spec.shapes)
    return {key: {"running_mean": f, "running_var": f ** 2}.get(key.rpartition(".")[2], 1.0)
            for key, f in fan_in.items()}


def secagg_shares(k: int) -> tuple[int | float, int | float]:
    """(num_shares, reconstruction_threshold) for k sampled clients: each client's secrets are
    shared with about log2(k) neighbours (SecAgg+), more than half needed to rebuild them; all
    of them when k < 3."""
    if k < 3:
        return 1.0, 1.0
    shares = max(3, math.ceil(math.log2(k)))
    shares = min(k, shares + 1 - shares % 2)  # odd, as SecAgg+ wants
    return shares, shares // 2 + 1


# ── server ───────────────────────────────────────────────────────────────────────────────────
class CountingGrid(Grid):
    """A grid that passes every call to `inner` and counts, per node, the payload bytes sent to
    it (`recv_bytes`, downlink) and received from it (`sent_bytes`, uplink)."""

    def __init__(self, inner: Grid):
        self.inner = inner
        self.nodes: dict[int, dict] = {}

    def reset(self) -> dict[int, dict]:
        nodes, self.nodes = self.nodes, {}
        return nodes

    def _entry(self, node: int) -> dict:
        return self.nodes.setdefault(node, {"node_id": node, "recv_bytes": 0, "sent_bytes": 0})

    def _count_out(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        for m in messages:
            self._entry(m.metadata.dst_node_id)["recv_bytes"] += payload_bytes(m.content)
        return messages

    def _count_in(self, replies: Iterable[Message]) -> list[Message]:
        replies = list(replies)
        for m in replies:
            if not m.has_error():
                self._entry(m.metadata.src_node_id)["sent_bytes"] += payload_bytes(m.content)
        return replies

    def set_run(self, run_id: int) -> None:
        self.inner.set_run(run_id)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(self._count_out(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._count_in(self.inner.pull_messages(message_ids))

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self._count_in(self.inner.send_and_receive(self._count_out(messages),
                                                          timeout=timeout))


class SecAggFedAvg(Strategy):
    """FedAvg behind SecAgg+: samples like `RobustFedAvg`, sees only the unmasked aggregate.

    `start` has the signature of the Message-API `Strategy.start` and fills `self.rounds` with the
    same per-round records (bytes per node, number of updates in the aggregate)."""

    def __init__(self, spec: UpdateSpec, expected_nodes: int, min_valid: int = 1,
                 fraction: float = 1.0, seed: int = 0, max_weight: float = 1.0):
        self.spec = spec
        self.expected_nodes = expected_nodes
        self.min_valid = min_valid
        self.fraction = fraction
        self.seed = seed
        self.max_weight = max_weight
        self.rounds: dict[int, dict] = {}
        self.seen_by_aggregate: list[list[np.ndarray]] = []  # what aggregate_fit got (tests)
        self._keys = list(spec.shapes)
        self._scales = stat_scales(spec)
        self._global: list[np.ndarray] = []
        self._config: dict = {}
        self._evaluate_fn: Callable | None = None
        self._grid: CountingGrid | None = None
        self._workflow: SecAggPlusWorkflow | None = None
        self._timeout: float | None = None

    # the Message-API entry point
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int,
              timeout: float, train_config: ConfigRecord,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord]) -> None:
        self._global = [np.array(initial_arrays[k].numpy()) for k in self._keys]
        self._config = dict(train_config)
        self._evaluate_fn = evaluate_fn
        self._timeout = timeout
        self._grid = CountingGrid(grid)
        context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=RecordDict(),
                                        run_config={}),
                                config=ServerConfig(num_rounds=num_rounds, round_timeout=timeout),
                                strategy=self)
        DefaultWorkflow(fit_workflow=self._secagg_workflow)(self._grid, context)

    def _secagg_workflow(self, grid: Grid, context: LegacyContext) -> None:
        """SecAggPlusWorkflow for this round: shares and quantization for the number of nodes
        sampled."""
        k = len(sample_nodes(sorted(grid.get_node_ids()), self.fraction, self.min_valid,
                             self.seed, 1))
        shares, threshold = secagg_shares(k)
        SecAggPlusWorkflow(shares, threshold, max_weight=self.max_weight,
                           clipping_range=CLIPPING_RANGE, quantization_range=quantization_range(k),
                           timeout=self._timeout)(grid, context)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters:
        return ndarrays_to_parameters(self._global)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        self._grid.reset()
        clients = {proxy.node_id: proxy for proxy in client_manager.all().values()}
        nodes = sample_nodes(sorted(clients), self.fraction, self.min_valid, self.seed,
                             server_round)
        config = {**self._config, "server-round": server_round}
        return [(clients[n], FitIns(parameters, config)) for n in nodes]

    def aggregate_fit(self, server_round: int, results, failures):
        stats = self.rounds.setdefault(server_round, {"clients": {}, "valid": 0,
                                                      "kept_previous": False})
        if not results:
            return None, {}
        # SecAgg+ put the same unmasked weighted mean into every result
        agg = [a * self._scales[k] for k, a in
               zip(self._keys, parameters_to_ndarrays(results[0][1].parameters), strict=False)]
        self.seen_by_aggregate.append([np.array(a) for a in agg])
        reason = self._check(agg)
        if reason is not None or len(results) < self.min_valid:
            log(30, "round %d: keeping the previous global model: %s", server_round,
                reason or f"{len(results)} update(s) in the aggregate, {self.min_valid} needed")
            return None, {}
        stats["valid"] = len(results)
        new = []
        for key, a, old in zip(self._keys, agg, self._global, strict=True):
            if old.dtype.kind in "iu":
                new.append(old)  # counters are not averaged
            elif key in self.spec.binary_keys:
                new.append(np.clip(a, -1.0, 1.0).astype(old.dtype))
            else:
                new.append(a.astype(old.dtype))
        if any(k.endswith("running_var") for k in self._keys):
            new = [np.maximum(a, 0) if k.endswith("running_var") else a
                   for k, a in zip(self._keys, new, strict=True)]
        self._global = new
        return ndarrays_to_parameters(new), {}

    def _check(self, agg: list[np.ndarray]) -> str | None:
        if len(agg) != len(self._keys):
            return f"{len(agg)} arrays in the aggregate, {len(self._keys)} expected"
        for key, a in zip(self._keys, agg, strict=True):
            if tuple(a.shape) != self.spec.shapes[key]:
                return f"{key}: shape {tuple(a.shape)}, {self.spec.shapes[key]} expected"
            if not np.isfinite(a).all():
                return f"{key}: non-finite values in the aggregate"
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters):
        arrays = parameters_to_ndarrays(parameters)
        if server_round > 0:
            stats = self.rounds.setdefault(server_round, {"clients": {}, "valid": 0,
                                                          "kept_previous": False})
            stats["kept_previous"] = stats["valid"] == 0
            for node, entry in self._grid.reset().items():
                entry["status"] = "aggregated" if stats["valid"] else "not aggregated"
                stats["clients"][node] = entry
        record = state_to_arrays(dict(zip(self._keys, arrays, strict=True)))
        metrics = self._evaluate_fn(server_round, record)
        return float(metrics["test-loss"]), dict(metrics)


# ── client ───────────────────────────────────────────────────────────────────────────────────
def secagg_if_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's `secaggplus_mod` for the messages of a SecAgg+ round; others pass through."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def is_legacy_fit(content: RecordDict) -> bool:
    return "fitins.parameters" in content.array_records


def legacy_fit_in(content: RecordDict) -> tuple[list[np.ndarray], dict]:
    """(global model arrays in state-dict order, train config) of a legacy FitIns."""
    fitins = compat.recorddict_to_fitins(content, keep_input=True)
    return parameters_to_ndarrays(fitins.parameters), dict(fitins.config)


def legacy_fit_reply(arrays: list[np.ndarray], num_examples: int, metrics: dict) -> RecordDict:
    """A legacy FitRes, as `secaggplus_mod` expects it."""
    return compat.fitres_to_recorddict(
        FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), num_examples, metrics),
        keep_input=True)
