"""Encoding images to packed binary codes with the frozen encoder, one batch at a time: the
images may be an array or images read on demand (`data.image_store.ImageRows`), so memory stays
flat in their number."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from hybnn_kernels import pack_bits

from hybnn_cli.data.tensors import images_to_tensor
from hybnn_cli.models.vae import Encoder


@torch.no_grad()
def encode_images(encoder: Encoder, images) -> np.ndarray:
    """uint8 images (B, H, W) or (B, H, W, C) → packed codes (B, words) uint64 (logit >= 0 →
    bit 1), computed on the encoder's device."""
    encoder.eval()
    device = next(encoder.parameters()).device
    logits = encoder(images_to_tensor(images).to(device))
    return pack_bits((logits >= 0).cpu().numpy())


def encode_batches(encoder: Encoder, images,
                   batch_size: int = 1000) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, packed codes) batch by batch; only one batch of images is read at a time."""
    for start in range(0, len(images), batch_size):
        yield start, encode_images(encoder, images[start:start + batch_size])
