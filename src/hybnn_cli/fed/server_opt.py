"""The server's optimizer: a step on the round's aggregate (FedAvgM, FedAdam, FedYogi).

The round's aggregate (FedAvg's weighted mean, or a robust rule's combination of the validated
updates) minus the global model the clients started from is a pseudo-gradient Δ. The server
moves the global model x by it (Hsu et al. 2019 for momentum; Reddi et al. 2021, "Adaptive
Federated Optimization", for Adam and Yogi), with η = `server_lr`, β1 = `server_momentum`:

- `sgd`:  m ← β1·m + Δ;  x ← x + η·m  (FedAvgM; η = 1, β1 = 0 is plain FedAvg, the default
  under SecAgg+ and DP, and then no step is taken at all: the aggregate is the new model);
- `adam`: m ← β1·m + (1 − β1)·Δ;  v ← β2·v + (1 − β2)·Δ²;  x ← x + η̂·m / (√v + τ);
- `yogi`: v ← v − (1 − β2)·Δ²·sign(v − Δ²), otherwise as adam but with η̂ = η;

with β2 = 0.99, τ = 1e-3, and for adam η̂ = η·√(1 − β2^t) / (1 − β1^t) at the server's t-th
step: exactly as Flower's `FedAvgM`, `FedAdam` and `FedYogi` (flwr 1.42) compute them (a test
checks it).

`schedule` = `cosine` lets η decay over the run's R rounds as the clients' learning rate does
(`train.configs.lr_at`): η_r = η·(1 + cos(π·(r − 1)/R))/2 in round r. An adaptive step moves every
coordinate by about η whatever the size of its pseudo-gradient (m/√v is about ±1 where Δ is
steady, about ±0.2 where it is noise), so with a constant η the model keeps moving by that much
and never settles; the clients' own cosine does not reach the server's step, since √v scales
with Δ. `constant` (the default for sgd) is Flower's.

Why not Flower's `FedAvgM`, `FedAdam`, `FedYogi` themselves: they step every array of the model
the same way, and their state lives in the strategy object they are. Here only the trained
parameters take the step (the latent weights, then clipped back to [−1, 1] as the clients clip
them, and BatchNorm's scale and shift); BatchNorm's running statistics are not trained by
gradients and take the aggregate as it is (an adaptive step would move each by about ±η
whatever its scale, and could make a variance negative), and the integer batch counter too.
And the strategy that samples, validates and combines the updates is `strategy.RobustFedAvg`;
the step comes after its combination, whatever the rule. The state (m, v) is one model's size:
the server's memory stays flat in the number of clients.
"""

from __future__ import annotations

import numpy as np

from hybnn_cli.train.configs import BNNConfig, lr_at

SERVER_OPTS = ("sgd", "adam", "yogi")
SERVER_SCHEDULES = ("constant", "cosine")
BETA2 = 0.99
TAU = 1e-3
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def is_identity(opt: str, lr: float, momentum: float, schedule: str = "constant") -> bool:
    """True for plain FedAvg's server (sgd, η = 1 constant, no momentum): the aggregate is the
    model."""
    return opt == "sgd" and lr == 1.0 and momentum == 0.0 and schedule == "constant"


def server_lr_at(lr: float, schedule: str, server_round: int, rounds: int) -> float:
    """η in round `server_round` (1-based) of `rounds`: the clients' schedule, over rounds."""
    return lr_at(BNNConfig(lr=lr, schedule=schedule, epochs=rounds), server_round - 1)


def stepped(key: str) -> bool:
    """Whether a state key takes the server step (trained parameters; not BatchNorm's
    running statistics nor its counter)."""
    return not key.endswith(STATISTICS)


class ServerOptimizer:
    def __init__(self, opt: str, lr: float, momentum: float, binary_keys=(),
                 schedule: str = "constant", rounds: int = 1):
        if opt not in SERVER_OPTS or schedule not in SERVER_SCHEDULES:
            raise ValueError(f"unknown server optimizer {opt!r} or schedule {schedule!r}")
        self.opt, self.lr, self.momentum = opt, lr, momentum
        self.schedule, self.rounds = schedule, rounds
        self.binary_keys = frozenset(binary_keys)
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, global_: dict[str, np.ndarray], aggregate: dict[str, np.ndarray],
             server_round: int = 1) -> dict[str, np.ndarray]:
        """The next global state (float64 where stepped) from the state the clients received
        and the round's aggregate; the running statistics and counters are the aggregate's."""
        self.t += 1
        eta = server_lr_at(self.lr, self.schedule, server_round, self.rounds)
        b1 = self.momentum
        out = dict(aggregate)
        for k, agg in aggregate.items():
            if not stepped(k):
                continue
            x = np.asarray(global_[k], dtype=np.float64)
            delta = np.asarray(agg, dtype=np.float64) - x
            if self.opt == "sgd":
                m = b1 * self.m[k] + delta if k in self.m else delta
                new = x + eta * m
            else:
                m = b1 * self.m.get(k, 0.0) + (1 - b1) * delta
                d2 = delta * delta
                v = self.v.get(k, np.zeros_like(x))
                v = (BETA2 * v + (1 - BETA2) * d2 if self.opt == "adam"
                     else v - (1 - BETA2) * d2 * np.sign(v - d2))
                self.v[k] = v
                step = (eta * np.sqrt(1 - BETA2 ** self.t) / (1 - b1 ** self.t)
                        if self.opt == "adam" else eta)
                new = x + step * m / (np.sqrt(v) + TAU)
            self.m[k] = m
            out[k] = np.clip(new, -1.0, 1.0) if k in self.binary_keys else new
        return out
