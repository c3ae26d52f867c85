"""A task's samples, split the one way every trainer splits them: the training split minus a
stratified validation slice (`splits`), and the test split. On codes (±1 tensors, for the task
BNN, centralized or federated) and on images ([0, 1] tensors, for the binary CNN baseline); labels
are remapped to the task's classes 0..n−1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hybnn_cli.codes.store import read_codes
from hybnn_cli.data.datasets import load_split
from hybnn_cli.data.splits import VAL_FRACTION, train_val_indices
from hybnn_cli.data.tasks import Task, parse_task
from hybnn_cli.data.tensors import codes_to_tensor, images_to_tensor
from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import sealed


def codes_task(codes_path, task: str | None = None, digits: str | None = None,
               classes: str | None = None) -> Task:
    """The task of --task / --digits / --classes over the classes a codes file records (their
    names; a file without them has the ten classes of MNIST)."""
    from hybnn_cli.codes.store import class_names, read_attrs

    return parse_task(task, digits, classes, class_names(read_attrs(codes_path)))


def load_task_codes(codes_path: Path, task: Task, val_fraction: float = VAL_FRACTION) -> dict:
    """The task's samples as ±1 tensors: "train" and "val" (a stratified slice of the training
    split, see `splits`) and "test" (not in a sealed run, see `sealed`), with the codes'
    attributes."""
    out = {}
    for split in ("train",) if sealed() else ("train", "test"):
        c = read_codes(codes_path, split)
        parts = split_parts(c.labels, split, val_fraction)
        for name, keep in parts.items():
            idx, y = task.select(c.labels[keep])
            if len(idx) == 0 and name != "val":
                raise HybnnError(f"{codes_path}: task {task.name} (classes "
                                 f"{','.join(map(str, task.classes))}) has no samples in /{split}")
            out[name] = (codes_to_tensor(c.codes[keep][idx], c.n_bits), torch.from_numpy(y))
        out["n_bits"], out["attrs"] = c.n_bits, c.attrs
    return out


def split_parts(labels, split: str, val_fraction: float) -> dict:
    """{"test": all} for the test split; {"train": ..., "val": ...} index arrays for train."""
    if split == "test":
        return {"test": np.arange(len(labels))}
    train_idx, val_idx = train_val_indices(labels, val_fraction)
    return {"train": train_idx, "val": val_idx}


def load_task_images(dataset: str, task: Task, data_dir=None, limit: int | None = None,
                     val_fraction: float = VAL_FRACTION,
                     splits: tuple[str, ...] = ("train", "test")) -> dict:
    """The task's images as [0, 1] tensors (N, 1, 28, 28) with remapped labels: "train", "val"
    (the same slice as `load_task_codes` takes) and "test"; `splits` says which IDX splits to
    read. `limit` keeps the first N images of each split before selecting the task's classes."""
    out = {}
    for split in splits:
        images, labels = load_split(dataset, split, data_dir)
        if limit:
            images, labels = images[:limit], labels[:limit]
        for name, keep in split_parts(labels, split, val_fraction).items():
            idx, y = task.select(labels[keep])
            if len(idx) == 0 and name != "val":
                raise HybnnError(f"{dataset}: task {task.name} (classes "
                                 f"{','.join(map(str, task.classes))}) has no samples in {split}")
            out[name] = (images_to_tensor(images[keep][idx]), torch.from_numpy(y))
    return out


def class_counts(y: torch.Tensor, n_classes: int) -> list[int]:
    return torch.bincount(y, minlength=n_classes).tolist()
