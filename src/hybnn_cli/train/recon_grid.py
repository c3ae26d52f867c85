"""Image files: reconstruction grids (PNG)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hybnn_cli.fileio import atomic_path


def save_recon_grid(path, originals: np.ndarray, recons: np.ndarray, scale: int = 3) -> None:
    """Save rows of pairs: each test image (left) beside its reconstruction (right).

    originals, recons: float arrays (N, 28, 28) in [0, 1]; N is laid out 8 pairs per row.
    """
    n = len(originals)
    cols = 8
    rows = (n + cols - 1) // cols
    h, w = originals.shape[1:]
    grid = np.ones((rows * (h + 2), cols * (2 * w + 4)), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + 2), c * (2 * w + 4)
        grid[y:y + h, x:x + w] = originals[i]
        grid[y:y + h, x + w:x + 2 * w] = recons[i]
    img = Image.fromarray((grid.clip(0, 1) * 255).astype(np.uint8), mode="L")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
