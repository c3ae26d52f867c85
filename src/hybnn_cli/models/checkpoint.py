"""Checkpoints of the VAE and the task BNN: torch files holding plain data only.

Each is a dict: format name and version, the state dict, the config, the seed, metrics, the
package version, and the SHA-256 of the encoder weights (for a BNN: of the encoder whose codes it
was trained on). Loading uses `torch.load(weights_only=True)`, so no file can run code, and checks
the format before anything else.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from hybnn_cli.device import to_cpu
from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path, provenance, state_sha256
from hybnn_cli.models.bnn import BNNShape, TaskBNN
from hybnn_cli.models.vae import BinaryVAE

VAE_FORMAT = "hybnn-vae"
BNN_FORMAT = "hybnn-bnn"
FORMAT_VERSION = 1


def encoder_sha256(model: BinaryVAE) -> str:
    return state_sha256(model.encoder.state_dict())


def save_checkpoint(path, fmt: str, model: torch.nn.Module, config: dict, seed: int,
                    **extra) -> None:
    payload = provenance(fmt, FORMAT_VERSION, config, seed)
    payload["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in
                             model.state_dict().items()}
    payload.update(to_cpu(extra))  # optimizer state too: a GPU run writes the CPU run's format
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, fmt: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HybnnError(f"{path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        if isinstance(e, pickle.UnpicklingError) and found:
            raise HybnnError(f"{path}: refused: it holds Python objects other than tensors and "
                             f"plain data ({found.group(1)}), and loading them could run "
                             f"code") from None
        raise HybnnError(f"{path}: not a readable checkpoint ({_reason(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise HybnnError(f"{path}: expected a {fmt} checkpoint, found {got!r}")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise HybnnError(f"{path}: {fmt} format version {ckpt.get('format_version')} is not "
                         f"supported (this hybnn reads version {FORMAT_VERSION})")
    return ckpt


def _reason(e: Exception) -> str:
    """The first line that says what is wrong (torch's weights-only errors start with advice)."""
    text = str(e).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def load_vae(path) -> tuple[BinaryVAE, dict]:
    ckpt = load_checkpoint(path, VAE_FORMAT)
    cfg = ckpt["config"]
    model = BinaryVAE(int(cfg["latent_bits"]), int(cfg.get("channels") or 1),
                      int(cfg.get("image_size") or 28))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise HybnnError(f"{path}: weights do not fit the VAE ({str(e).splitlines()[0]})") from None
    if encoder_sha256(model) != ckpt.get("encoder_sha256"):
        raise HybnnError(f"{path}: encoder weights do not match the SHA-256 recorded in the file")
    model.eval()
    return model, ckpt


def load_bnn(path) -> tuple[TaskBNN, dict]:
    ckpt = load_checkpoint(path, BNN_FORMAT)
    model = TaskBNN(BNNShape(**ckpt["shape"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise HybnnError(f"{path}: weights do not fit the BNN ({str(e).splitlines()[0]})") from None
    model.eval()
    return model, ckpt


# ── the binary CNN baseline (the paper's comparison model) ───────────────────────────────────
BASELINE_FORMAT = "hybnn-baseline"


def load_baseline(path):
    """A saved binary CNN baseline and its checkpoint dict (eval mode)."""
    from hybnn_cli.models.binary_cnn import BinaryCNN

    ckpt = load_checkpoint(path, BASELINE_FORMAT)
    model = BinaryCNN(int(ckpt["shape"]["n_classes"]), str(ckpt["shape"]["binarize"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise HybnnError(f"{path}: weights do not fit the baseline CNN "
                         f"({str(e).splitlines()[0]})") from None
    model.eval()
    return model, ckpt
