"""The settings of a federated run: one dataclass, mirrored by `[tool.flwr.app.config]`.

Flower passes run settings as a flat `run_config` of TOML scalars with dashed keys; `FedConfig`
converts to and from it so that `hybnn fed`, `flwr run` and the tests all describe a run the same
way. The defaults here equal the ones in pyproject.toml (a test checks it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from hybnn_cli.errors import HybnnError
from hybnn_cli.train_bnn import BNNConfig

PARTITIONS = ("iid", "dirichlet")
UPLINKS = ("float", "bits")


@dataclass
class FedConfig:
    codes: str = "runs/codes.h5"  # codes file: the server's test split, the clients' train split
    task: str = "3"
    clients: int = 3  # number of partitions (one per client)
    rounds: int = 20
    local_epochs: int = 5
    batch_size: int = 128
    lr: float = BNNConfig.lr  # train-bnn's default: a federated run follows its schedule
    hidden: int = 128
    partition: str = "iid"
    alpha: float = 0.5  # Dirichlet concentration (partition = dirichlet)
    uplink: str = "float"
    seed: int = 0
    min_valid: int = 1  # fewer valid updates in a round → keep the previous global model
    round_timeout: float = 600.0  # seconds the server waits for a round's replies
    threads: int = 0  # CPU threads of each process (torch and kernels); 0: every core
    out: str = ""  # checkpoint of the final global BNN ("" = none)
    out_dir: str = ""  # where the server writes rounds.jsonl and result.json ("" = none)

    def __post_init__(self) -> None:
        if self.partition not in PARTITIONS:
            raise HybnnError(f"unknown partition '{self.partition}': use iid or dirichlet")
        if self.uplink not in UPLINKS:
            raise HybnnError(f"unknown uplink '{self.uplink}': use float or bits")
        if self.clients < 1 or self.rounds < 1 or self.local_epochs < 1:
            raise HybnnError("clients, rounds and local epochs must be at least 1")
        if self.partition == "dirichlet" and not self.alpha > 0:
            raise HybnnError(f"the Dirichlet alpha must be > 0, got {self.alpha}")

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
                kw[f.name] = type(getattr(cls(), f.name))(run_config[key])
        return cls(**kw)
