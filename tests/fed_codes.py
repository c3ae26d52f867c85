"""Small generated codes files for the federated tests (no VAE needed, learnable by the BNN).

Each digit class gets a random 200-bit prototype; a sample is its class prototype with each bit
flipped with probability `flip`. Labels cycle through 0..9, so every task has samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hybnn_kernels import pack_bits

from hybnn_cli.codes.store import codes_writer
from hybnn_cli.fed.config import FedConfig

N_BITS = 200
FAKE_SHA = "ab" * 32


def make_codes(path: Path, n_train: int = 6000, n_test: int = 1000, flip: float = 0.3,
               seed: int = 0, sha: str = FAKE_SHA) -> Path:
    rng = np.random.default_rng(seed)
    protos = rng.random((10, N_BITS)) < 0.5
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        bits = protos[labels] ^ (rng.random((n, N_BITS)) < flip)
        splits[split] = (pack_bits(bits), labels)
    with codes_writer(path, N_BITS, {s: len(v[1]) for s, v in splits.items()}, "mnist", sha,
                      {"generated": "tests/fed_codes.py"}, seed) as write:
        for split, (codes, labels) in splits.items():
            write(split, 0, codes, labels)
    return path



def small(codes: Path, **kw) -> FedConfig:
    """A 3-client, 3-round, 1-local-epoch run of task 3 on `codes`, plain FedAvg with Adam
    clients (the optimizers named, not left to FedConfig's defaults)."""
    base = dict(codes=str(codes), task="3", clients=3, rounds=3, local_epochs=1, batch_size=64,
                lr=0.03, client_opt="adam", server_opt="sgd")
    return FedConfig(**{**base, **kw})
