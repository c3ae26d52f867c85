"""Process bodies for the data-parallel tests (`test_distributed.py`): importable by the
processes torch.multiprocessing spawns. Each joins a gloo group on loopback through the same
`distributed.process_group` torchrun uses, trains, and leaves its record in a JSON file."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_torchrun_env(rank: int, world: int, port: int) -> None:
    """The variables torchrun gives each process, on loopback."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))


def param_sha(model: torch.nn.Module) -> str:
    from hybnn_cli.fileio import state_sha256

    return state_sha256(dict(model.named_parameters()))


def train_record(cfg_dict: dict, images: np.ndarray, test: np.ndarray, group) -> dict:
    """Train a fresh VAE (seeded) on `images`; the parameters' SHA-256 after every step, the
    full state's at the end, and the metrics."""
    from hybnn_cli.fileio import state_sha256
    from hybnn_cli.models.vae import BinaryVAE
    from hybnn_cli.train.configs import VAEConfig
    from hybnn_cli.train.vae_loop import train_vae

    cfg = VAEConfig(**cfg_dict)
    torch.set_num_threads(cfg.threads)  # the CLI does this through `threads.using`
    torch.manual_seed(cfg.seed)
    model = BinaryVAE(cfg.latent_bits)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps: list[str] = []
    history = train_vae(model, cfg, images, test, optimizer,
                        on_step=lambda *a: steps.append(param_sha(model)), group=group)
    return {"steps": steps, "state": state_sha256(model.state_dict()), "history": history}


def ddp_worker(rank: int, world: int, port: int, folder: str, plan: dict) -> None:
    """One process of the 2-process job: train_vae step by step (`train_record`), then the
    pretrain-vae stage and its resume (every checkpoint write logged), then sharded extraction
    with rank 0 merging; the record goes to <folder>/rank<r>.json."""
    from hybnn_cli.data import datasets as data
    from hybnn_cli.distributed import process_group
    from hybnn_cli.models import checkpoint as ck
    from hybnn_cli.train import stages
    from hybnn_cli.train.configs import VAEConfig
    from hybnn_cli.train.stages import extract_parallel

    set_torchrun_env(rank, world, port)
    folder = Path(folder)
    data.DATASETS["fake"] = data.DatasetSpec(name="fake", folder="fake", files=data.MNIST.files,
                                             md5=plan["fake_md5"], mirrors=(),
                                             class_names=data.MNIST.class_names)
    images, test = np.load(folder / "train.npy"), np.load(folder / "test.npy")
    writes: list[str] = []
    save = ck.save_checkpoint
    ck.save_checkpoint = lambda path, *a, **k: (writes.append(str(path)), save(path, *a, **k))
    with process_group("cpu") as group:
        record = train_record(plan["cfg"], images, test, group)
        record["group"] = [group.rank, group.world_size, group.backend]
        out = folder / "vae.pt"
        cfg = VAEConfig(**{**plan["cfg"], "dataset": "fake", "train_limit": 256})
        record["pretrain"] = stages.pretrain_vae(cfg, out, plan["root"], group=group)["history"]
        cfg.epochs = 2
        record["resumed"] = stages.pretrain_vae(cfg, out, plan["root"], resume=out,
                                                group=group)["history"]
        record["extract"] = extract_parallel(group, Path(plan["vae"]), folder / "codes.h5",
                                             "fake", plan["root"], batch_size=100)
    record["writes"] = writes
    (folder / f"rank{rank}.json").write_text(json.dumps(record, default=str))
