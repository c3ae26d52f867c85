"""The fused binary dense layer: XNOR-popcount, per-neuron integer threshold, packed output bits.

    out bit j of row i = 1  ⇔  dot(a[i], w[j]) >= threshold[j],  dot = n_bits − 2·popcount(a XOR w)

The threshold is applied to the popcount inside the register tile (dot >= t ⇔ popcount <= ⌊(n_bits −
t)/2⌋), and the tile's comparison mask is ORed straight into the output words, so the hidden
activations of a BNN never leave bit form. A batch norm followed by sign folds into such a
threshold (`hybnn_cli.deploy.export_head`); a neuron whose batch-norm scale is negative is stored
with flipped weight bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from hybnn_kernels.bits import WORD_BITS, n_words
from hybnn_kernels.checks import check_n_bits, check_out, check_threads, check_words
from hybnn_kernels.parallel import enter, leave, threads_for
from hybnn_kernels.tile import CACHE, MR, NR, tile_full_threshold, tile_row_threshold
from hybnn_kernels.xnor import PackedWeights, prepack

assert WORD_BITS % NR == 0, "a weight panel must not straddle an output word"


@dataclass(frozen=True)
class BinaryDense:
    """A binary dense layer ready for `binary_dense`: packed weight panels and count thresholds."""

    weights: PackedWeights
    thresholds: np.ndarray  # int64 (N,), dot >= thresholds[j] → bit 1
    count_thresholds: np.ndarray  # int64 (P·NR,), popcount <= this → bit 1 (padding: never)

    @property
    def n_in(self) -> int:
        return self.weights.n_bits

    @property
    def n_out(self) -> int:
        return self.weights.n


def make_dense(w: np.ndarray, thresholds: np.ndarray, n_bits: int) -> BinaryDense:
    """A layer from packed weights (N, words) uint64 and integer thresholds (N,) on the dot."""
    n_bits = check_n_bits(n_bits)
    pw = prepack(w, n_bits)
    t = np.asarray(thresholds)
    if t.shape != (pw.n,):
        raise ValueError(f"thresholds must have shape ({pw.n},), got {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"thresholds must be integers, got {t.dtype}")
    t = t.astype(np.int64)
    cthr = np.full(pw.panels.shape[0] * NR, -1, dtype=np.int64)
    cthr[: pw.n] = np.floor_divide(n_bits - t, 2)
    return BinaryDense(pw, t, cthr)


@njit(cache=CACHE, inline="always")
def threshold_pack_rows(a, i0, rows, panels, cthr, masks, out, o0):
    """The fused layer on `rows` rows of a from i0 (rows is MR or 1): XNOR-popcount against every
    weight panel, compare with the thresholds, write the bits to out[o0 .. o0 + rows − 1]."""
    for r in range(rows):
        for q in range(out.shape[1]):
            out[o0 + r, q] = 0
    for p in range(panels.shape[0]):
        if rows == MR:
            tile_full_threshold(a, i0, panels, p, cthr, masks)
        else:
            tile_row_threshold(a, i0, panels, p, cthr, masks)
        q = (p * NR) // 64
        shift = np.uint64((p * NR) % 64)
        for r in range(rows):
            out[o0 + r, q] |= masks[r] << shift


@njit(cache=CACHE, inline="always")
def _dense_range(a, panels, cthr, out, rt0, rt1, masks):
    m = a.shape[0]
    n_rt = m // MR
    for rt in range(rt0, rt1):
        if rt < n_rt:
            i0 = rt * MR
            rows = MR
        else:
            i0 = n_rt * MR + (rt - n_rt)
            rows = 1
        threshold_pack_rows(a, i0, rows, panels, cthr, masks, out, i0)


@njit(cache=CACHE)
def _n_row_tiles(m):
    n_rt = m // MR
    return n_rt + (m - n_rt * MR)


@njit(cache=CACHE)
def _dense_serial(a, panels, cthr, out):
    masks = np.empty(MR, dtype=np.uint64)
    _dense_range(a, panels, cthr, out, 0, _n_row_tiles(a.shape[0]), masks)


@njit(cache=CACHE, parallel=True)
def _dense_parallel(a, panels, cthr, out, n_chunks):
    n_chunks, previous = enter(n_chunks)
    total = _n_row_tiles(a.shape[0])
    n_chunks = min(total, n_chunks)
    for c in prange(n_chunks):
        masks = np.empty(MR, dtype=np.uint64)
        _dense_range(a, panels, cthr, out, c * total // n_chunks, (c + 1) * total // n_chunks,
                     masks)
    leave(previous)


def binary_dense(a: np.ndarray, layer: BinaryDense, out: np.ndarray | None = None,
                 threads: int | None = None) -> np.ndarray:
    """Packed output bits (M, words(N)) uint64 of the layer on packed inputs a (M, words(n_in)).

    Bit j of row i is 1 when dot(a[i], w[j]) >= thresholds[j]; padding bits are 0. `out` and
    `threads` as in `xnor_gemm`.
    """
    if not isinstance(layer, BinaryDense):
        raise TypeError(f"layer must be a BinaryDense (see make_dense), got {type(layer).__name__}")
    a = check_words("a", a, layer.n_in)
    m = a.shape[0]
    out = check_out(out, (m, n_words(layer.n_out)), dtype=np.uint64)
    threads = check_threads(threads)
    if m == 0:
        return out
    panels = layer.weights.panels
    t = threads_for(2.0 * m * layer.n_out * layer.n_in, threads)
    if t == 1:
        _dense_serial(a, panels, layer.count_thresholds, out)
    else:
        _dense_parallel(a, panels, layer.count_thresholds, out, t)
    return out
