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
- DP coordinates (`dp_scales`): clipping and noise act on the state with each BatchNorm running
  mean divided by √fan-in and each running variance by the fan-in (a popcount of fan-in ±1
  products has about that spread and that variance), everything else as it is. In raw units the
  running variances (hundreds) make up nearly all of an update's norm (in a pilot run on task 3,
  hundreds of times the part of the 25,600 latent weights), so any clip that bounds them leaves
  the weights no room, and noise sized for them swamps the weights. A fixed rescaling of the
  clipped vector keeps the guarantee: the mod clips, the server checks the norm and adds the
  noise in these coordinates, and scales back after (post-processing).
- `dp_clip_if_asked` (client mod): runs `fixedclipping_mod` on DP train messages only, in DP
  coordinates. BatchNorm's integer counters (`num_batches_tracked`, read by nothing: the momentum
  is fixed) are held at their received value and travel as floats through the mod, whose
  in-place scaling cannot write into an integer array; they are cast back after it.
- `ClientSideDP` (server wrapper): adds Flower's noise in DP coordinates, seeds numpy's global
  generator (from which Flower draws it) with (seed, round) so that a run is reproducible, and
  after the noise puts the global state back into its domain (latent weights into [−1, 1],
  running variances ≥ 0, counters ≥ 0): post-processing, which costs no privacy.

Limits (said in `hybnn fed --help` and docs/federated.md): the norm covers the whole update,
BatchNorm running statistics included (they are computed from the data, so they must be covered);
Flower's wrapper skips a round's aggregation if any sampled client replied with an error, and
calibrates the noise to m sampled clients even when validation leaves some updates out. No
privacy accounting (ε) is reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from hybnn_cli.fed.payload import UpdateSpec, bn_fan_in


def dp_scales(shapes: dict) -> dict[str, float]:
    """Per state key (key → shape), what its values are divided by in DP coordinates: √fan-in
    for a BatchNorm running mean, the fan-in for a running variance, 1 for everything else."""
    return {k: {"running_mean": math.sqrt(f), "running_var": f}.get(k.rpartition(".")[2], 1.0)
            for k, f in bn_fan_in(shapes).items()}


def to_dp(arrays: ArrayRecord, scales: dict[str, float]) -> ArrayRecord:
    """Arrays in DP coordinates; integer arrays and scaled ones become float64."""
    return ArrayRecord({k: Array(np.asarray(np.asarray(a.numpy(), np.float64) / scales[k]))
                        if scales[k] != 1.0 or _is_int(a) else a for k, a in arrays.items()})


def from_dp(arrays: ArrayRecord, scales: dict[str, float], like: ArrayRecord) -> ArrayRecord:
    """Back from DP coordinates to the dtypes of `like` (integers rounded)."""
    out = {}
    for k, a in arrays.items():
        x = a.numpy() * scales[k] if scales[k] != 1.0 else a.numpy()
        if _is_int(like[k]):
            x = np.rint(x)
        out[k] = Array(np.asarray(x, dtype=like[k].dtype))
    return ArrayRecord(out)


def _is_int(a: Array) -> bool:
    return np.dtype(a.dtype).kind in "iu"


def dp_clip_if_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's `fixedclipping_mod` for train messages that carry a clipping norm, in DP
    coordinates; integer counters held at their received value."""
    config = msg.content.config_records.get("config")
    if config is None or KEY_CLIPPING_NORM not in config or "arrays" not in msg.content:
        return call_next(msg, context)
    received = msg.content["arrays"]
    scales = dp_scales({k: tuple(a.shape) for k, a in received.items()})
    received_dp = to_dp(received, scales)

    def app(m: Message, ctx: Context) -> Message:
        m.content["arrays"] = received  # the app sees what the server sent
        reply = call_next(m, ctx)
        if not reply.has_error() and isinstance(reply.content.get("arrays"), ArrayRecord):
            sent = to_dp(reply.content["arrays"], scales)
            reply.content["arrays"] = ArrayRecord({
                k: received_dp[k] if _is_int(received[k]) else a for k, a in sent.items()})
        return reply

    msg.content["arrays"] = received_dp  # what the mod clips against
    out = fixedclipping_mod(msg, context, app)
    if not out.has_error() and isinstance(out.content.get("arrays"), ArrayRecord):
        out.content["arrays"] = from_dp(out.content["arrays"], scales, received)
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
        np.random.seed([self.seed, server_round])  # Flower's noise comes from numpy's global one
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        return ArrayRecord({k: Array(np.array(into_domain(k, a.numpy(), self.spec), order="C"))
                            for k, a in arrays.items()}), metrics


    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        scales = dp_scales(self.spec.shapes)
        noisy = super()._add_noise_to_aggregated_arrays(to_dp(aggregated_arrays, scales))
        return from_dp(noisy, scales, aggregated_arrays)


def into_domain(key: str, x: np.ndarray, spec: UpdateSpec) -> np.ndarray:
    if key in spec.binary_keys:
        return np.clip(x, -1.0, 1.0)
    if key.endswith("running_var") or x.dtype.kind in "iu":
        return np.maximum(x, 0)
    return x
