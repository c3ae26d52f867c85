"""Differential privacy with Flower's own parts: central DP with client-side fixed clipping.

The server wraps its strategy in `DifferentialPrivacyClientSideFixedClipping` (flwr 1.42, Message
API); each client runs Flower's `fixedclipping_mod`, which scales the client's update (its state
minus the global state it received) down to L2 norm ≤ C before it leaves; the server adds
Gaussian noise of standard deviation σ · C / m (m: clients sampled per round) to the aggregate.
Why client-side rather than `DifferentialPrivacyServerSideFixedClipping`: the server-side wrapper
clips the raw replies *before* the inner strategy sees them, so it would compute on updates not yet
validated (a wrong shape breaks it, a packed bits array is clipped as if it were floats); with
client-side clipping the validating `RobustFedAvg` checks every clipped update as usual (and,
with DP on, that its norm is within C) and the wrapper only adds noise to the validated mean.

What this module adds around Flower's parts, and why:
- `dp_clip_if_asked` (client mod): runs `fixedclipping_mod` on DP train messages only. BatchNorm's
  integer counters (`num_batches_tracked`, read by nothing: the momentum is fixed) are held at
  their received value and travel as floats through the mod, whose in-place scaling cannot write
  into an integer array; they are cast back after it.
- `ClientSideDP` (server wrapper): seeds numpy's global generator, from which Flower draws the
  noise, with (seed, round) so that a run is reproducible, and after the noise puts the global
  state back into its domain (latent weights into [−1, 1], running variances ≥ 0, counters ≥ 0):
  post-processing, which costs no privacy.

Limits (said in `hybnn fed --help` and docs/federated.md): the norm covers the whole update,
BatchNorm running statistics included (they are computed from the data, so they must be covered);
Flower's wrapper skips a round's aggregation if any sampled client replied with an error, and
calibrates the noise to m sampled clients even when validation leaves some updates out. No
privacy accounting (ε) is reported.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from hybnn_cli.fed.payload import UpdateSpec


def _is_int(a: Array) -> bool:
    return np.dtype(a.dtype).kind in "iu"


def dp_clip_if_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's `fixedclipping_mod` for train messages that carry a clipping norm."""
    config = msg.content.config_records.get("config")
    if config is None or KEY_CLIPPING_NORM not in config or "arrays" not in msg.content:
        return call_next(msg, context)
    received = msg.content["arrays"]
    counters = {k: a.numpy().astype(np.float64) for k, a in received.items() if _is_int(a)}

    def floats(arrays: ArrayRecord) -> ArrayRecord:
        return ArrayRecord({k: Array(counters[k]) if k in counters else a
                            for k, a in arrays.items()})

    def app(m: Message, ctx: Context) -> Message:
        m.content["arrays"] = received  # the app sees what the server sent
        reply = call_next(m, ctx)
        if not reply.has_error() and isinstance(reply.content.get("arrays"), ArrayRecord):
            reply.content["arrays"] = floats(reply.content["arrays"])
        return reply

    msg.content["arrays"] = floats(received)  # what the mod clips against
    out = fixedclipping_mod(msg, context, app)
    if not out.has_error() and isinstance(out.content.get("arrays"), ArrayRecord):
        out.content["arrays"] = ArrayRecord({
            k: Array(np.asarray(np.rint(a.numpy()), dtype=received[k].dtype)) if k in counters
            else a
            for k, a in out.content["arrays"].items()})
    return out


class ClientSideDP(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed-clipping DP wrapper, seeded, with the noisy state put back in
    its domain."""

    def __init__(self, strategy: Strategy, noise_multiplier: float, clipping_norm: float,
                 num_sampled_clients: int, spec: UpdateSpec, seed: int):
        super().__init__(strategy, noise_multiplier, clipping_norm, num_sampled_clients)
        self.spec = spec
        self.seed = seed

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        np.random.seed([self.seed, server_round])
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        return ArrayRecord({k: Array(np.array(into_domain(k, a.numpy(), self.spec), order="C"))
                            for k, a in arrays.items()}), metrics


def into_domain(key: str, x: np.ndarray, spec: UpdateSpec) -> np.ndarray:
    if key in spec.binary_keys:
        return np.clip(x, -1.0, 1.0)
    if key.endswith("running_var") or x.dtype.kind in "iu":
        return np.maximum(x, 0)
    return x
