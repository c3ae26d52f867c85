"""The settings of a federated run: one dataclass, mirrored by `[tool.flwr.app.config]`.

Flower passes run settings as a flat `run_config` of TOML scalars with dashed keys; `FedConfig`
converts to and from it so that `hybnn fed`, `flwr run` and the tests all describe a run the same
way. This module is the one source of a run's settings: the defaults here are those of `hybnn
fed` (its options are made from the fields and `HELP`), of `[tool.flwr.app.config]` in
pyproject.toml and of the Flower app folder `flower_setup.write_app` writes (tests check all
three). The optimizers' defaults are the ones the fedtune study chose on validation.
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


# The optimizers the fedtune study chose on validation (benchmarks/results/fedtune.json, "chosen";
# tests/test_defaults.py keeps the two equal): SGD on the clients, FedAdam with a cosine schedule
# on the server. An optimizer setting left at None takes its default from these tables, so that
# naming one optimizer brings its own learning rate, and a run whose server may not step (SecAgg+,
# DP) is plain FedAvg with Adam clients.
CHOSEN_SERVER_OPT = "adam"
SERVER_DEFAULTS = {  # server_opt → (server_lr, server_momentum, server_schedule)
    "sgd": (1.0, 0.0, "constant"),  # plain FedAvg (with --server-momentum: FedAvgM)
    "adam": (0.1, 0.9, "cosine"),  # the study's choice
    "yogi": (0.1, 0.9, "cosine"),  # as adam (not studied)
}
CLIENT_OPT_DEFAULTS = {"sgd": "adam", "adam": "sgd", "yogi": "sgd"}  # server_opt → client_opt
CLIENT_LR_DEFAULTS = {"adam": BNNConfig.lr, "sgd": 3.0}  # client_opt → lr


@dataclass
class FedConfig:
    codes: str = "runs/codes.h5"  # codes file: the server's test split, the clients' train split
    task: str = "3"
    clients: int = 3  # number of partitions (one per client)
    fraction: float = 1.0  # share of the connected clients sampled each round
    rounds: int = 20
    local_epochs: int = 5
    batch_size: int = 128
    lr: float | None = None  # the clients' learning rate (cosine schedule)
    client_opt: str | None = None  # the clients' optimizer, fresh each round: adam or sgd
    server_opt: str | None = None  # the server's step on the aggregate: sgd (FedAvg), adam, yogi
    server_lr: float | None = None  # its learning rate (sgd 1 with no momentum: plain FedAvg)
    server_momentum: float | None = None  # its momentum (adam and yogi: beta1)
    server_schedule: str | None = None  # its learning rate over the rounds: constant or cosine
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
        self._fill_optimizers()
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
        if self.batch_size < 2 or self.hidden < 1 or self.min_valid < 1:
            raise HybnnError(f"--batch-size must be at least 2, --hidden and --min-valid at "
                             f"least 1; got {self.batch_size}, {self.hidden}, {self.min_valid}")
        if not self.round_timeout >= 1:
            raise HybnnError(f"--round-timeout must be at least 1 second, got "
                             f"{self.round_timeout}")
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

    def _fill_optimizers(self) -> None:
        """The optimizer settings left at None, from the tables above."""
        if self.server_opt is None:
            plain = self.secagg or (self.dp_clip or 0) > 0
            self.server_opt = "sgd" if plain else CHOSEN_SERVER_OPT
        lr, momentum, schedule = SERVER_DEFAULTS.get(self.server_opt, SERVER_DEFAULTS["sgd"])
        self.server_lr = lr if self.server_lr is None else float(self.server_lr)
        self.server_momentum = (momentum if self.server_momentum is None
                                else float(self.server_momentum))
        self.server_schedule = self.server_schedule or schedule
        if self.client_opt is None:
            self.client_opt = CLIENT_OPT_DEFAULTS.get(self.server_opt, "adam")
        if self.lr is None:
            self.lr = CLIENT_LR_DEFAULTS.get(self.client_opt, BNNConfig.lr)
        self.lr = float(self.lr)

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
            raise HybnnError(f"the DP clipping norm must be >= 0 (0: no DP), got {self.dp_clip}")
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


# The help of `hybnn fed`'s option for each setting (`cli.config_options` makes the options from
# the fields named here, with the fields' defaults).
HELP = {
    "task": "1..5 (digit pairs 0/1 … 8/9), all (every class of the codes file), or classes "
            "by name or index, e.g. cat,dog.",
    "clients": "Number of clients (partitions; up to the train set's size: a client may hold one "
               "sample).",
    "fraction": "Share of the clients sampled each round (seeded by --seed and the round), in "
                "(0, 1].",
    "rounds": "Federated rounds.",
    "local_epochs": "Local epochs per round.",
    "batch_size": "Client batch size: a client holding n codes makes ceil(n / B) steps per local "
                  "epoch.",
    "lr": "The clients' learning rate, cosine over all rounds × local epochs (default: 3 for "
          "sgd, train-bnn's 0.01 for adam).",
    "client_opt": "The clients' optimizer, fresh each round: sgd (steps proportional to the "
                  "gradient) or adam (as train-bnn) (default: sgd under an adam or yogi server, "
                  "adam under sgd).",
    "server_opt": "The server's step along the round's aggregate: adam (FedAdam), yogi (FedYogi) "
                  "or sgd (FedAvg; with --server-momentum, FedAvgM). Only trained parameters "
                  "step; batch-norm statistics take the aggregate (default: adam, the fedtune "
                  "study's choice; sgd with --secagg or DP, which need the plain aggregate).",
    "server_lr": "Server learning rate (default: 0.1 for adam and yogi; 1 for sgd, which with no "
                 "momentum is plain FedAvg).",
    "server_momentum": "Server momentum in [0, 1), for adam and yogi their beta1 (default: 0.9 "
                       "for adam and yogi, 0 for sgd).",
    "server_schedule": "The server learning rate over the rounds: cosine (decays to 0 by the "
                       "last round, as the clients' does) or constant, Flower's (default: cosine "
                       "for adam and yogi, constant for sgd).",
    "hidden": "Hidden neurons.",
    "partition": "iid or dirichlet (label skew).",
    "alpha": "Dirichlet concentration (smaller = more skew).",
    "uplink": "float (latent weights) or bits (packed sign bits; batch-norm stays float).",
    "seed": "Random seed (saved with the artifact).",
    "min_valid": "Fewer valid updates in a round keep the previous global model.",
    "round_timeout": "Seconds the server waits for a round's replies (a client that vanished is "
                     "left out after it).",
    "secagg": "Flower's SecAgg+ secure aggregation: the server learns only the sum of the "
              "clients' updates (in-process and simulation engines).",
    "dp_noise": "Differential privacy (Flower's client-side fixed clipping): noise multiplier "
                "σ >= 0; the server adds Gaussian noise of std σ·C/m to the mean of the m sampled "
                "updates. Needs --dp-clip.",
    "dp_clip": "DP clipping norm C (0: no DP): each client scales its update (new state − "
               "received state, BatchNorm statistics included, these in DP coordinates: "
               "docs/federated.md) to L2 norm <= C with Flower's fixedclipping_mod; the server "
               "rejects a longer one. Float uplink only (bits send signs, not a clippable "
               "update); not with --secagg (refused) nor a robust --aggregate.",
    "aggregate": "fedavg (weighted mean), krum, median or trimmed-mean (Flower's Krum, "
                 "FedMedian, FedTrimmedAvg with beta 0.2), applied to the updates that passed "
                 "validation. Not with --secagg.",
    "byzantine": "SIMULATION of attackers, for studies: this share of the clients (seeded) send "
                 "their update sign-flipped and amplified (global − 10·update). Krum assumes "
                 "that share of each round is malicious.",
}
