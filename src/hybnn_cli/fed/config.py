"""The settings of a federated run: one dataclass, mirrored by `[tool.flwr.app.config]`.

Flower passes run settings as a flat `run_config` of TOML scalars with dashed keys; `FedConfig`
converts to and from it so that `hybnn fed`, `flwr run` and the tests all describe a run the same
way. The defaults here equal the ones in pyproject.toml (a test checks it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.server_opt import SERVER_OPTS, SERVER_SCHEDULES, is_identity
from hybnn_cli.train.configs import BNNConfig

PARTITIONS = ("iid", "dirichlet")
UPLINKS = ("float", "bits")
CLIENT_OPTS = ("adam", "sgd")
AGGREGATES = ("fedavg", "krum", "median", "trimmed-mean")


@dataclass
class FedConfig:
    codes: str = "runs/codes.h5"  # codes file: the server's test split, the clients' train split
    task: str = "3"
    clients: int = 3  # number of partitions (one per client)
    fraction: float = 1.0  # share of the connected clients sampled each round
    rounds: int = 20
    local_epochs: int = 5
    batch_size: int = 128
    lr: float = BNNConfig.lr  # the clients' learning rate; train-bnn's default and cosine schedule
    client_opt: str = "adam"  # the clients' optimizer, fresh each round: adam or sgd
    server_opt: str = "sgd"  # the server's step on the aggregate: sgd (FedAvg/FedAvgM), adam, yogi
    server_lr: float = 1.0  # its learning rate (sgd 1 with no momentum: plain FedAvg)
    server_momentum: float = 0.0  # its momentum (adam and yogi: beta1)
    server_schedule: str = "constant"  # its learning rate over the rounds: constant or cosine
    hidden: int = 128
    partition: str = "iid"
    alpha: float = 0.5  # Dirichlet concentration (partition = dirichlet)
    uplink: str = "float"
    seed: int = 0
    min_valid: int = 1  # fewer valid updates in a round → keep the previous global model
    secagg: bool = False  # Flower's SecAgg+: the server sees only the sum of the updates
    dp_noise: float = 0.0  # DP noise multiplier (σ; with dp_clip > 0)
    dp_clip: float = 0.0  # DP clipping norm of each client's update (0: no DP)
    aggregate: str = "fedavg"  # fedavg, krum, median or trimmed-mean (Flower's robust rules)
    byzantine: float = 0.0  # share of clients simulated as sign-flipping attackers
    round_timeout: float = 600.0  # seconds the server waits for a round's replies
    threads: int = 0  # CPU threads of each process (torch and kernels); 0: every core
    out: str = ""  # checkpoint of the final global BNN ("" = none)
    out_dir: str = ""  # where the server writes rounds.jsonl and result.json ("" = none)

    def __post_init__(self) -> None:
        if self.partition not in PARTITIONS:
            raise HybnnError(f"unknown partition '{self.partition}': use iid or dirichlet")
        if self.uplink not in UPLINKS:
            raise HybnnError(f"unknown uplink '{self.uplink}': use float or bits")
        if self.client_opt not in CLIENT_OPTS:
            raise HybnnError(f"unknown client optimizer '{self.client_opt}': use adam or sgd")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise HybnnError(f"the clients' learning rate must be > 0, got {self.lr}")
        if self.clients < 1 or self.rounds < 1 or self.local_epochs < 1:
            raise HybnnError("clients, rounds and local epochs must be at least 1")
        if not 0 < self.fraction <= 1:
            raise HybnnError(f"the fraction of clients per round must be in (0, 1], got "
                             f"{self.fraction}")
        if self.secagg and max(math.ceil(self.fraction * self.clients - 1e-9),
                               self.min_valid) < 2:
            raise HybnnError("SecAgg+ needs at least 2 clients in every round")
        self._check_server_opt()
        if self.partition == "dirichlet" and not self.alpha > 0:
            raise HybnnError(f"the Dirichlet alpha must be > 0, got {self.alpha}")
        self._check_privacy_and_robustness()

    @property
    def server_step(self) -> bool:
        """Whether the server steps along the aggregate (anything but plain FedAvg's server)."""
        return not is_identity(self.server_opt, self.server_lr, self.server_momentum,
                               self.server_schedule)

    def _check_server_opt(self) -> None:
        if self.server_opt not in SERVER_OPTS:
            raise HybnnError(f"unknown server optimizer '{self.server_opt}': use "
                             f"{', '.join(SERVER_OPTS)}")
        if self.server_schedule not in SERVER_SCHEDULES:
            raise HybnnError(f"unknown server schedule '{self.server_schedule}': use "
                             f"{' or '.join(SERVER_SCHEDULES)}")
        if not (math.isfinite(self.server_lr) and self.server_lr > 0):
            raise HybnnError(f"the server learning rate must be > 0, got {self.server_lr}")
        if not 0 <= self.server_momentum < 1:
            raise HybnnError(f"the server momentum must be in [0, 1), got "
                             f"{self.server_momentum}")
        if self.server_step and (self.secagg or self.dp_clip > 0):
            raise HybnnError("a server optimizer (--server-opt, --server-lr, --server-momentum, "
                             "--server-schedule) "
                             "works on the plain aggregate: not with --secagg nor DP")

    @property
    def dp(self) -> bool:
        return self.dp_clip > 0

    def _check_privacy_and_robustness(self) -> None:
        """DP, robust aggregation and simulated attackers: ranges, and the combinations that
        would run something other than what was asked (docs/federated.md explains each)."""
        if not (math.isfinite(self.dp_noise) and self.dp_noise >= 0):
            raise HybnnError(f"the DP noise multiplier must be >= 0, got {self.dp_noise}")
        if not (math.isfinite(self.dp_clip) and self.dp_clip >= 0):
            raise HybnnError(f"the DP clipping norm must be > 0, got {self.dp_clip}")
        if self.dp_noise > 0 and not self.dp:
            raise HybnnError("DP noise needs a clipping norm: give --dp-clip C > 0 too")
        if self.aggregate not in AGGREGATES:
            raise HybnnError(f"unknown aggregate '{self.aggregate}': use "
                             f"{', '.join(AGGREGATES)}")
        if not 0 <= self.byzantine < 1:
            raise HybnnError(f"the share of Byzantine clients must be in [0, 1), got "
                             f"{self.byzantine}")
        if self.dp and self.uplink == "bits":
            raise HybnnError("DP clips the float update; the bits uplink sends signs: use "
                             "--uplink float with --dp-clip")
        if self.dp and self.secagg:
            raise HybnnError("DP and --secagg together are not supported (Flower's DP "
                             "wrappers work on the Message API, SecAgg+ on the legacy one)")
        if self.dp and self.aggregate != "fedavg":
            raise HybnnError("DP noise is calibrated to the mean of the updates: use "
                             "--aggregate fedavg with --dp-clip")
        if self.secagg and (self.aggregate != "fedavg" or self.byzantine > 0):
            raise HybnnError("--secagg shows the server only the sum of the updates: robust "
                             "aggregation and simulated attackers need --aggregate fedavg and "
                             "no --byzantine")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_run_config(self) -> dict:
        """Dashed keys, as in `[tool.flwr.app.config]`."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @classmethod
    def from_run_config(cls, run_config) -> FedConfig:
        kw = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key in run_config:
                value, kind = run_config[key], type(getattr(cls(), f.name))
                if kind is bool and isinstance(value, str):  # "true"/"false" from a string
                    value = value.strip().lower() in ("true", "1", "yes")
                kw[f.name] = kind(value)
        return cls(**kw)
