"""Reading a deploy file (HDF5, written by `hybnn export`), numpy and h5py only.

The format is described in `runtime`, which builds the compiled head from what `read_deploy`
returns; `head_numpy` runs the same arrays without numba. h5py is imported inside `read_deploy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybnn_kernels.h5attrs import read_attrs
from hybnn_kernels.layout import n_words, padding_set

DEPLOY_FORMAT = "hybnn-deploy"
DEPLOY_VERSION = 1


class DeployFileError(ValueError):
    """A deploy file that is not one, or not one this runtime can run."""


@dataclass(frozen=True)
class DeployArrays:
    """An exported task BNN as arrays, checked: shapes, dtypes and zero padding bits."""

    fc1_weights: np.ndarray  # uint64 (hidden, words(n_bits))
    fc1_thresholds: np.ndarray  # int64 (hidden,): hidden bit j = 1 ⇔ dot_j >= thresholds[j]
    fc2_weights: np.ndarray  # uint64 (n_classes, words(hidden))
    score_table: np.ndarray  # float32 (n_classes, hidden + 1)
    n_bits: int
    meta: dict = field(default_factory=dict)

    @property
    def hidden(self) -> int:
        return self.fc1_weights.shape[0]

    @property
    def n_classes(self) -> int:
        return self.fc2_weights.shape[0]


def check_arrays(w1, t1, w2, table, n_bits: int, meta: dict | None = None) -> DeployArrays:
    """DeployArrays from raw arrays, or ValueError / TypeError naming what does not fit."""
    w1, t1, w2, table = (np.asarray(a) for a in (w1, t1, w2, table))
    for name, w in (("fc1 weights", w1), ("fc2 weights", w2)):
        if w.dtype != np.uint64 or w.ndim != 2:
            raise TypeError(f"{name} must be a 2-D uint64 array, got {w.dtype} {w.shape}")
    hidden = w1.shape[0]
    if n_bits < 1 or hidden < 1 or w2.shape[0] < 1:
        raise ValueError(f"n_bits, hidden and classes must be >= 1, got {n_bits}, {hidden}, "
                         f"{w2.shape[0]}")
    if w1.shape[1] != n_words(n_bits) or w2.shape[1] != n_words(hidden):
        raise ValueError(f"weight shapes {w1.shape}, {w2.shape} do not match n_bits={n_bits}, "
                         f"hidden={hidden}")
    if padding_set(w1, n_bits) or padding_set(w2, hidden):
        raise ValueError("weights have nonzero padding bits")
    if t1.shape != (hidden,) or not np.issubdtype(t1.dtype, np.integer):
        raise ValueError(f"thresholds must be {hidden} integers, got {t1.dtype} {t1.shape}")
    if table.shape != (w2.shape[0], hidden + 1):
        raise ValueError(f"score table must have shape ({w2.shape[0]}, {hidden + 1}), got "
                         f"{table.shape}")
    return DeployArrays(np.ascontiguousarray(w1), t1.astype(np.int64),
                        np.ascontiguousarray(w2),
                        np.ascontiguousarray(table, dtype=np.float32), int(n_bits),
                        dict(meta or {}))


def read_deploy(path) -> DeployArrays:
    """The checked arrays and metadata of a deploy file, or DeployFileError."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DeployFileError(f"{path}: not a readable HDF5 deploy file ({e})") from None
    with f:
        fmt = f.attrs.get("format")
        if fmt != DEPLOY_FORMAT:
            raise DeployFileError(f"{path}: not a hybnn deploy file (format {fmt!r})")
        version = int(f.attrs.get("format_version", -1))
        if version != DEPLOY_VERSION:
            raise DeployFileError(
                f"{path}: deploy format version {version}, this runtime reads {DEPLOY_VERSION}")
        try:
            n_bits, hidden = int(f.attrs["n_bits"]), int(f.attrs["hidden"])
            w1, t1 = f["fc1/weights"][()], f["fc1/thresholds"][()]
            w2, table = f["fc2/weights"][()], f["fc2/score_table"][()]
            meta = read_attrs(f.attrs)
        except KeyError as e:
            raise DeployFileError(f"{path}: incomplete deploy file, missing {e}") from None
    if w1.shape != (hidden, n_words(n_bits)) or w2.shape[1:] != (n_words(hidden),):
        raise DeployFileError(f"{path}: weight shapes {w1.shape}, {w2.shape} do not match "
                              f"n_bits={n_bits}, hidden={hidden}")
    try:
        return check_arrays(w1, t1, w2, table, n_bits, meta)
    except (TypeError, ValueError) as e:
        raise DeployFileError(f"{path}: {e}") from None
