"""Image files: reconstruction grids (PNG)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hybnn_cli.fileio import atomic_path


def save_recon_grid(path, originals: np.ndarray, recons: np.ndarray, scale: int = 3) -> None:
    """Save rows of pairs: each test image (left) beside its reconstruction (right).

    originals, recons: float arrays (N, H, W) or (N, H, W, C) with C 1 or 3, in [0, 1]; N is
    laid out 8 pairs per row.
    """
    if originals.ndim == 4 and originals.shape[3] == 1:
        originals, recons = originals[..., 0], recons[..., 0]
    n = len(originals)
    cols = 8
    rows = (n + cols - 1) // cols
    h, w = originals.shape[1:3]
    grid = np.ones((rows * (h + 2), cols * (2 * w + 4), *originals.shape[3:]), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + 2), c * (2 * w + 4)
        grid[y:y + h, x:x + w] = originals[i]
        grid[y:y + h, x + w:x + 2 * w] = recons[i]
    img = Image.fromarray((grid.clip(0, 1) * 255).astype(np.uint8),
                          mode="L" if grid.ndim == 2 else "RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
