"""XNOR-popcount GEMM on packed bits: the ±1 dot products of every row of `a` with every row of `w`.

    dot[i, j] = n_bits − 2·popcount(a[i] XOR w[j])

Layout: `a` is (M, words) uint64 and `w` is (N, words) uint64, bits packed as in
`hybnn_kernels.bits` (padding bits zero). The fast path re-lays the weights once into *panels* of
NR rows, k-major (`prepack`), so that one k step reads NV contiguous vectors of weights; the
register tile that runs over a panel (and the CPU variant it is built for) is in `tile`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange, types

from hybnn_kernels.bits import bits_set_past
from hybnn_kernels.checks import (
    aligned_empty,
    check_n_bits,
    check_out,
    check_threads,
    check_words,
    compile_once,
)
from hybnn_kernels.parallel import enter, leave, threads_for
from hybnn_kernels.tile import CACHE, MR, NR, tile_full, tile_full_dots, tile_row, tile_row_dots

_MAX_THREADS = numba.config.NUMBA_NUM_THREADS

# --------------------------------------------------------------------------------------------------
# Drivers (compiled). The panels are taken in blocks of `bp` panels (about `BLOCK_BYTES` of weights,
# which stay in L2); within a block, tiles go in row-major order: a tile's rows of `a` stay in L1
# while the block's panels stream past from L2, and the output is written a full panel's NR dots at
# a time. Without blocks, every row tile would stream all the weights from L3 or memory once the
# weight matrix outgrows L2 (from 4096 × 4096 bits on).

BLOCK_BYTES = 256 * 1024  # weights per block: well inside the L2 of every x86 core we run on


def block_panels(panels: np.ndarray) -> int:
    """Panels per block: about BLOCK_BYTES of weights, at least one."""
    return max(1, BLOCK_BYTES // max(1, panels.shape[1] * panels.shape[2] * 8))


@njit(cache=CACHE, inline="always")
def _tile_range(a, panels, n, n_bits, out, t0, t1, bp, cnt):
    """Tiles t0 .. t1 − 1 of the order above. Block b holds panels b·bp .. b·bp + s − 1 (s = bp,
    or fewer in the last block) and its s·R tiles (R row tiles); its tile l is row tile l // s
    against panel b·bp + l % s. Row tiles past the last full one are single rows. One body, no
    helper taking arrays: Numba increfs and decrefs the arrays passed to an inlined helper, atomic
    operations that drain the pending output stores at every row tile."""
    m = a.shape[0]
    n_panels = panels.shape[0]
    n_rt = m // MR
    rows_t = n_rt + (m - n_rt * MR)  # R
    per_block = bp * rows_t  # tiles in a full block
    full = n // NR  # panels whose NR rows are all real weight rows
    for b in range(t0 // per_block, (t1 + per_block - 1) // per_block):
        pb = b * bp
        s = min(bp, n_panels - pb)
        l0 = max(t0 - b * per_block, 0)
        l1 = min(t1 - b * per_block, s * rows_t)
        for rt in range(l0 // s, (l1 + s - 1) // s):
            p0 = pb + max(l0 - rt * s, 0)
            p1 = pb + min(l1 - rt * s, s)
            # rows a[i0 : i0 + rows]: MR, or one by one after the last full row tile
            i0, rows = (rt * MR, MR) if rt < n_rt else (n_rt * MR + (rt - n_rt), 1)
            for p in range(p0, min(p1, full)):
                if rows == MR:
                    tile_full_dots(a, i0, panels, p, n_bits, out)
                else:
                    tile_row_dots(a, i0, panels, p, n_bits, out)
            if p1 > full >= p0:  # the last panel, part padding: through the counts
                if rows == MR:
                    tile_full(a, i0, panels, full, cnt)
                else:
                    tile_row(a, i0, panels, full, cnt)
                j0 = full * NR
                for r in range(rows):
                    for jj in range(n - j0):
                        out[i0 + r, j0 + jj] = n_bits - 2 * cnt[r * NR + jj]


@njit(cache=CACHE)
def _n_tiles(m, n_panels):
    n_rt = m // MR
    return n_panels * (n_rt + (m - n_rt * MR))


@njit(cache=CACHE, inline="always")
def _refused(a, panels, n, n_bits, out):
    """Whether the arguments do not fit one another: words per row, the panels for n weight rows,
    the output's shape, or padding bits set in `a` (the compiled half of the checks)."""
    kw = (n_bits + 63) // 64
    if (n_bits < 1 or n < 0 or a.shape[1] != kw or panels.shape[1] != kw
            or panels.shape[0] != (n + NR - 1) // NR or panels.shape[2] != NR
            or out.shape[0] != a.shape[0] or out.shape[1] != n):
        return True
    used = n_bits - (kw - 1) * 64
    return used < 64 and bits_set_past(a, used)


@njit(cache=CACHE)
def _xnor_gemm_serial(a, panels, n, n_bits, out, bp):
    """The GEMM on one thread, in blocks of bp panels; returns 0, or 1 without computing anything
    (`_refused`)."""
    if _refused(a, panels, n, n_bits, out) or bp < 1:
        return 1
    cnt = np.empty(MR * NR, dtype=np.int64)
    _tile_range(a, panels, n, n_bits, out, 0, _n_tiles(a.shape[0], panels.shape[0]), bp, cnt)
    return 0


@njit(cache=CACHE, parallel=True)
def _xnor_gemm_parallel(a, panels, n, n_bits, out, bp, n_chunks):
    """The GEMM on n_chunks threads (0: Numba's setting), each on a contiguous range of tiles (so
    on its own blocks of weights); returns 0, or 1 as the serial one."""
    if _refused(a, panels, n, n_bits, out) or bp < 1:
        return 1
    n_chunks, previous = enter(n_chunks)
    total = _n_tiles(a.shape[0], panels.shape[0])
    n_chunks = min(total, n_chunks)
    for c in prange(n_chunks):
        cnt = np.empty(MR * NR, dtype=np.int64)
        _tile_range(a, panels, n, n_bits, out, c * total // n_chunks, (c + 1) * total // n_chunks,
                    bp, cnt)
    leave(previous)
    return 0


# One signature each (read-only arrays take writable ones too), compiled (or loaded from the
# cache) on first use, not at import (`checks.compile_once`); other types raise TypeError at the
# call, and the caller's checked path takes them.
_A = types.Array(types.uint64, 2, "C", readonly=True)
_PANELS = types.Array(types.uint64, 3, "C", readonly=True)
_OUT = types.Array(types.int32, 2, "C")
_SERIAL_SIGNATURE = types.int64(_A, _PANELS, types.int64, types.int64, _OUT, types.int64)
_PARALLEL_SIGNATURE = types.int64(_A, _PANELS, types.int64, types.int64, _OUT, types.int64,
                                  types.int64)


def _run(a, panels, n, n_bits, out, n_chunks) -> int:
    """The serial kernel when n_chunks is 1, else the parallel one; their status (0: done)."""
    bp = block_panels(panels)
    if n_chunks == 1:
        compile_once(_xnor_gemm_serial, _SERIAL_SIGNATURE)
        return _xnor_gemm_serial(a, panels, n, n_bits, out, bp)
    compile_once(_xnor_gemm_parallel, _PARALLEL_SIGNATURE)
    return _xnor_gemm_parallel(a, panels, n, n_bits, out, bp, n_chunks)


# --------------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class PackedWeights:
    """Weights (N, words) re-laid into zero-padded panels (P, words, NR) for the tiled kernel."""

    panels: np.ndarray
    n: int
    n_bits: int

    @property
    def words(self) -> int:
        return self.panels.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the N real weight rows (the panel padding is excluded)."""
        return self.n * self.words * 8


def prepack(w: np.ndarray, n_bits: int) -> PackedWeights:
    """Re-lay weights (N, words) uint64 into panels for `xnor_gemm` (once per weight matrix)."""
    n_bits = check_n_bits(n_bits)
    w = check_words("w", w, n_bits)
    n, kw = w.shape
    n_panels = (n + NR - 1) // NR
    padded = np.zeros((n_panels * NR, kw), dtype=np.uint64)
    padded[:n] = w
    # on a cache line (`aligned_empty`): the tile loads a panel's k step as whole vectors, and a
    # vector starting 16 bytes into a line (numpy's own start) is a split load every time
    panels = aligned_empty((n_panels, kw, NR), np.uint64)
    panels[...] = padded.reshape(n_panels, NR, kw).transpose(0, 2, 1)
    return PackedWeights(panels, n, n_bits)


def xnor_gemm(a: np.ndarray, w, n_bits: int, out: np.ndarray | None = None,
              threads: int | None = None) -> np.ndarray:
    """±1 dot products of packed rows: int32 (M, N) with dot = n_bits − 2·popcount(a XOR w).

    a: (M, words) uint64; w: (N, words) uint64 or a `PackedWeights` from `prepack` (faster when the
    same weights serve many calls); words = ceil(n_bits / 64), padding bits zero. Read-only and
    non-contiguous inputs are accepted (non-contiguous ones are copied). `out`: an optional
    C-contiguous int32 (M, N) array to write into. `threads`: 1..NUMBA_NUM_THREADS (default: Numba's
    current setting); small problems run serially whatever the setting.
    """
    # Fast path (prepacked weights and an output given, as in a serving loop or the benchmark):
    # the compiled call's own signature checks the types, its first lines the shapes and the
    # padding; anything it refuses takes the checked path, which raises the precise error.
    if out is not None and w.__class__ is PackedWeights and n_bits.__class__ is int and (
            threads is None or threads.__class__ is int and 0 < threads <= _MAX_THREADS):
        try:
            if w.n_bits == n_bits and _run(a, w.panels, w.n, n_bits, out, threads_for(
                    2.0 * a.shape[0] * w.n * n_bits, threads)) == 0:
                return out
        except (AttributeError, IndexError, TypeError):
            pass
    n_bits = check_n_bits(n_bits)
    a = check_words("a", a, n_bits)
    if isinstance(w, PackedWeights):
        if w.n_bits != n_bits:
            raise ValueError(f"weights were packed for {w.n_bits} bits, not {n_bits}")
        pw = w
    else:
        pw = prepack(w, n_bits)
    m, n = a.shape[0], pw.n
    # its own output on a cache line (`aligned_empty`): only a large GEMM gains from it
    out = aligned_empty((m, n)) if out is None else check_out(out, (m, n))
    threads = check_threads(threads)
    if m == 0 or n == 0:
        return out
    if _run(a, pw.panels, n, n_bits, out, threads_for(2.0 * m * n * n_bits, threads)) != 0:
        raise AssertionError("the GEMM refused checked arguments")  # a bug, not bad input
    return out
