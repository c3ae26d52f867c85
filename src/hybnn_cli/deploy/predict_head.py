"""Prediction with an exported BNN (the kernel runtime, no torch in the BNN): on a codes file's
split, or on image files through the frozen encoder.

The deploy file's encoder SHA-256 must equal the codes file's (or the VAE checkpoint's): codes from
another encoder mean nothing to the BNN, so a mismatch is refused. Class indices map back to the
dataset's labels through the task's classes recorded at export.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from hybnn_kernels.runtime import BNNRuntime, DeployFileError, load_deploy

from hybnn_cli.codes.store import check_encoder, read_codes
from hybnn_cli.data.tasks import Task
from hybnn_cli.errors import HybnnError


def load_model(path: Path) -> BNNRuntime:
    if not Path(path).is_file():
        raise HybnnError(f"{path}: no such deploy file")
    try:
        return load_deploy(path)
    except DeployFileError as e:
        raise HybnnError(str(e)) from None


def model_task(rt: BNNRuntime) -> Task:
    t = rt.meta.get("task") or {}
    classes = tuple(t.get("classes") or range(rt.n_classes))
    if len(classes) != rt.n_classes:
        raise HybnnError(f"deploy file lists {len(classes)} classes for a {rt.n_classes}-class BNN")
    return Task(str(t.get("name", "unknown")), classes)


def predict_codes(model_path: Path, codes_path: Path, split: str = "test") -> dict:
    """Predict a whole split of a codes file; accuracy on the task's samples when labels exist."""
    rt = load_model(model_path)
    c = read_codes(codes_path, split)
    check_encoder(rt.meta.get("encoder_sha256"), c.attrs["encoder_sha256"], model_path,
                  codes_path)
    if c.n_bits != rt.n_bits:
        raise HybnnError(f"{codes_path}: codes of {c.n_bits} bits, the model takes {rt.n_bits}")
    task = model_task(rt)
    t0 = time.perf_counter()
    _, pred = rt.run(c.codes)
    seconds = time.perf_counter() - t0
    labels = np.asarray(task.classes)[pred]
    result = {"model": str(model_path), "codes": str(codes_path), "split": split,
              "task": task.name, "classes": list(task.classes), "n": int(len(pred)),
              "seconds": seconds, "samples_per_second": len(pred) / seconds if seconds else None,
              "predicted_counts": {str(k): int(v) for k, v in
                                   zip(*np.unique(labels, return_counts=True), strict=True)}}
    idx, y = task.select(c.labels)
    if len(c.labels) == len(pred) and len(idx):
        result["n_task"] = int(len(idx))
        result["accuracy"] = float(np.mean(pred[idx] == y))
    return result


def predict_images(model_path: Path, encoder_path: Path, images: list[Path]) -> dict:
    """Encode image files with the VAE's encoder, then classify the codes with the kernel BNN."""
    from hybnn_cli.codes.extract import encode_batches
    from hybnn_cli.data.image_files import iter_batches, open_images
    from hybnn_cli.models.checkpoint import load_vae

    rt = load_model(model_path)
    vae, ckpt = load_vae(encoder_path)
    check_encoder(rt.meta.get("encoder_sha256"), ckpt["encoder_sha256"], model_path,
                  encoder_path)
    from hybnn_kernels.pipeline import InputShape

    cfg = ckpt["config"]
    size = cfg.get("image_size") or 28
    shape = InputShape(cfg.get("channels") or 1, size, size, cfg.get("resize") or "none")
    x = np.concatenate(list(iter_batches(open_images(images, shape), 4096)))
    codes = np.concatenate([c for _, c in encode_batches(vae.encoder, x)])
    scores, pred = rt.run(codes)
    task = model_task(rt)
    return {"model": str(model_path), "task": task.name, "n": int(len(pred)),
            "labels": [int(task.classes[i]) for i in pred], "scores": scores.tolist()}
