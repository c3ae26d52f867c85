"""The validation split: a seeded, stratified slice of a data set's training split.

Settings (learning rate, hidden width) are chosen on `val`; `test` is read only for the numbers
reported. The slice is taken over the whole training split's labels, before any task selects its
classes, and with a fixed seed, so every model, task and run seed holds out the same images: a
BNN on codes and the binary CNN on pixels are tuned on exactly the same samples (code i is the
code of image i).
"""

from __future__ import annotations

import numpy as np

from hybnn_cli.errors import HybnnError

VAL_FRACTION = 0.1  # the default share of each class held out for validation
VAL_SEED = 0  # fixed: the same validation images for every run


def train_val_indices(labels: np.ndarray, fraction: float = VAL_FRACTION,
                      seed: int = VAL_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the training part and of the validation part of `labels`: from each
    class, round(fraction · n_class) samples picked by a seeded permutation."""
    if not 0.0 <= fraction < 1.0:
        raise HybnnError(f"validation fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = [rng.permutation(np.flatnonzero(labels == c))[:int(round(fraction * n))]
           for c, n in zip(*np.unique(labels, return_counts=True), strict=True)]
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    keep = np.ones(len(labels), dtype=bool)
    keep[val_idx] = False
    return np.flatnonzero(keep), val_idx
