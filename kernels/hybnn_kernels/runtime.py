"""The torch-free BNN runtime: runs an exported task BNN on packed codes, numpy and numba only.

A deploy file (HDF5, written by `hybnn export`) holds:

- ``/fc1/weights`` (hidden, words(n_bits)) uint64: the first layer's sign(W) bits, with the bits of
  every neuron whose batch-norm scale is negative flipped;
- ``/fc1/thresholds`` (hidden,) int64: hidden bit j = 1 ⇔ dot_j >= thresholds[j] (batch norm + sign
  folded into one integer per neuron);
- ``/fc2/weights`` (n_classes, words(hidden)) uint64: the output layer's sign(W) bits;
- ``/fc2/score_table`` (n_classes, hidden + 1) float32: the class score for every possible output
  dot value d ∈ {−hidden, −hidden + 2, …, hidden}, at column (d + hidden) / 2 (the output batch
  norm, evaluated by torch itself at export, so scores are bit-identical to the torch model's);
- root attributes: ``format`` = "hybnn-deploy", ``format_version``, ``n_bits``, ``hidden``,
  ``n_classes``, ``encoder_sha256``, and the provenance of the exporter (``config``, ``seed``,
  ``hybnn_version`` as JSON).

The whole head (fused hidden layer → output layer → table → argmax) runs in one compiled call; ties
take the first class, as `torch.argmax` does. h5py is imported inside `load_deploy` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, prange, types

from hybnn_kernels.bits import WORD_BITS, bits_set_past, used_bits_in_last_word
from hybnn_kernels.checks import (
    aligned_empty,
    check_out,
    check_threads,
    check_words,
    compile_once,
)
from hybnn_kernels.dense import BinaryDense, make_dense, threshold_pack_rows
from hybnn_kernels.deploy_file import (  # noqa: F401  (DEPLOY_*: re-exported)
    DEPLOY_FORMAT,
    DEPLOY_VERSION,
    DeployArrays,
    DeployFileError,
    read_deploy,
)
from hybnn_kernels.parallel import SERIAL_OPS, enter, leave, threads_for
from hybnn_kernels.tile import CACHE, MR, NR, tile_full, tile_row
from hybnn_kernels.xnor import PackedWeights, prepack

_MAX_THREADS = numba.config.NUMBA_NUM_THREADS
@njit(cache=CACHE, inline="always")
def _head_rows(codes, i0, rows, p1, cthr1, p2, n_classes, hidden, table, h, masks, cnt,
               scores, labels):
    threshold_pack_rows(codes, i0, rows, p1, cthr1, masks, h, 0)
    for p in range(p2.shape[0]):
        if rows == MR:
            tile_full(h, 0, p2, p, cnt)
        else:
            tile_row(h, 0, p2, p, cnt)
        for r in range(rows):
            for jj in range(min(NR, n_classes - p * NR)):
                scores[i0 + r, p * NR + jj] = table[p * NR + jj, hidden - cnt[r * NR + jj]]
    for r in range(rows):
        best = 0
        for c in range(1, n_classes):
            if scores[i0 + r, c] > scores[i0 + r, best]:
                best = c
        labels[i0 + r] = best


@njit(cache=CACHE, inline="always")
def _head_range(codes, p1, cthr1, p2, n_classes, hidden, table, scores, labels, rt0, rt1):
    h = np.empty((MR, (hidden + 63) // 64), dtype=np.uint64)
    masks = np.empty(MR, dtype=np.uint64)
    cnt = np.empty(MR * NR, dtype=np.int64)
    n_rt = codes.shape[0] // MR
    for rt in range(rt0, rt1):
        if rt < n_rt:
            _head_rows(codes, rt * MR, MR, p1, cthr1, p2, n_classes, hidden, table, h, masks, cnt,
                       scores, labels)
        else:
            _head_rows(codes, n_rt * MR + (rt - n_rt), 1, p1, cthr1, p2, n_classes, hidden, table,
                       h, masks, cnt, scores, labels)


# The compiled entry points take few arguments, because Numba's dispatch costs about 0.1 µs per
# argument, a large share of a one-sample call: the head's constant data travel as one uint64 array,
# the *blob* (`_make_blob`), unpacked into views inside the compiled code (`_unpack`):
#   header (HEADER words): words, pad_from (used bits in a code's last word; 64: no padding),
#                          P1, P2, kw2 (words of the hidden code), hidden, n_classes
#   then the hidden layer's panels (P1·words·NR), its count thresholds (P1·NR, int64), the output
#   layer's panels (P2·kw2·NR) and the score table (n_classes·(hidden + 1) float32, padded to
#   whole words).
HEADER = 8


def _make_blob(p1, cthr1, p2, table, pad_from) -> np.ndarray:
    t = np.zeros(table.size + table.size % 2, dtype=np.float32)
    t[: table.size] = table.ravel()
    header = np.zeros(HEADER, dtype=np.int64)
    header[:7] = [p1.shape[1], pad_from, p1.shape[0], p2.shape[0], p2.shape[1], table.shape[1] - 1,
                  table.shape[0]]
    parts = [header.view(np.uint64), p1.ravel(), cthr1.view(np.uint64), p2.ravel(),
             t.view(np.uint64)]
    # on a cache line, as `prepack` lays panels: the header is 64 bytes and each panel block a
    # multiple of 256, so both layers' panels start on lines too (no split vector loads)
    blob = aligned_empty(sum(x.size for x in parts), np.uint64)
    np.concatenate(parts, out=blob)
    return blob


@njit(cache=CACHE, inline="always")
def _unpack(blob):
    h = blob[:HEADER].view(np.int64)
    words, n_p1, n_p2, kw2, hidden, n_classes = h[0], h[2], h[3], h[4], h[5], h[6]
    o = HEADER
    p1 = blob[o: o + n_p1 * words * NR].reshape((n_p1, words, NR))
    o += n_p1 * words * NR
    cthr1 = blob[o: o + n_p1 * NR].view(np.int64)
    o += n_p1 * NR
    p2 = blob[o: o + n_p2 * kw2 * NR].reshape((n_p2, kw2, NR))
    o += n_p2 * kw2 * NR
    table = blob[o: o + (n_classes * (hidden + 1) + 1) // 2].view(np.float32)
    table = table[: n_classes * (hidden + 1)].reshape((n_classes, hidden + 1))
    return p1, cthr1, p2, table, n_classes, hidden


# one signature (read-only arrays take writable ones too), compiled (or loaded from the cache)
# when the first runtime is built, not at import (`checks.compile_once`)
_SERIAL_SIGNATURE = types.int64(types.Array(types.uint64, 2, "C", readonly=True),
                                types.Array(types.uint64, 1, "C", readonly=True),
                                types.Array(types.float32, 2, "C"),
                                types.Array(types.int64, 1, "C"))


@njit(cache=CACHE)
def _head_serial(codes, blob, scores, labels):
    """Runs the head on one thread and returns 0, or returns without computing anything: 1 when an
    array's shape does not fit the head, 2 when a code has padding bits set. Compiled for its
    one signature only (`checks.compile_once`; other types raise TypeError at the call: the
    caller's checked path takes them)."""
    m = codes.shape[0]
    h = blob[:HEADER].view(np.int64)
    n_classes = h[6]
    if (codes.shape[1] != h[0] or scores.shape[0] != m or scores.shape[1] != n_classes
            or labels.shape[0] != m):
        return 1
    pad_from = h[1]
    if pad_from < WORD_BITS and bits_set_past(codes, pad_from):
        return 2
    p1, cthr1, p2, table, n_classes, hidden = _unpack(blob)
    _head_range(codes, p1, cthr1, p2, n_classes, hidden, table, scores, labels, 0,
                m // MR + m % MR)
    return 0


@njit(cache=CACHE, parallel=True)
def _head_parallel(codes, blob, scores, labels, n_chunks):
    n_chunks, previous = enter(n_chunks)
    m = codes.shape[0]
    total = m // MR + m % MR
    n_chunks = min(total, n_chunks)
    p1, cthr1, p2, table, n_classes, hidden = _unpack(blob)
    for c in prange(n_chunks):
        _head_range(codes, p1, cthr1, p2, n_classes, hidden, table, scores, labels,
                    c * total // n_chunks, (c + 1) * total // n_chunks)
    leave(previous)


@dataclass
class BNNRuntime:
    """An exported task BNN, ready to run on packed codes (N, words(n_bits)) uint64."""

    fc1: BinaryDense
    fc2: PackedWeights
    score_table: np.ndarray  # float32 (n_classes, hidden + 1)
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, fc1_weights, fc1_thresholds, fc2_weights, score_table, n_bits: int,
                    meta: dict | None = None) -> BNNRuntime:
        fc1 = make_dense(np.asarray(fc1_weights), np.asarray(fc1_thresholds), n_bits)
        hidden = fc1.n_out
        fc2 = prepack(np.asarray(fc2_weights), hidden)
        table = np.ascontiguousarray(score_table, dtype=np.float32)
        if table.shape != (fc2.n, hidden + 1):
            raise DeployFileError(
                f"score table must have shape ({fc2.n}, {hidden + 1}), got {table.shape}")
        return cls(fc1, fc2, table, dict(meta or {}))

    @classmethod
    def from_deploy(cls, a: DeployArrays) -> BNNRuntime:
        """The compiled head of a deploy file's checked arrays (`deploy_file.read_deploy`)."""
        return cls.from_arrays(a.fc1_weights, a.fc1_thresholds, a.fc2_weights, a.score_table,
                               a.n_bits, a.meta)

    @property
    def n_bits(self) -> int:
        return self.fc1.n_in

    @property
    def hidden(self) -> int:
        return self.fc1.n_out

    @property
    def n_classes(self) -> int:
        return self.fc2.n

    @property
    def weight_bytes(self) -> int:
        """Bytes of packed weights (both layers, without panel padding)."""
        return self.fc1.weights.nbytes + self.fc2.nbytes

    def __post_init__(self):
        compile_once(_head_serial, _SERIAL_SIGNATURE)
        self._words = self.fc1.weights.words
        self._blob = _make_blob(self.fc1.weights.panels, self.fc1.count_thresholds,
                                self.fc2.panels, self.score_table,
                                used_bits_in_last_word(self.n_bits))
        self._blob.flags.writeable = False
        self._n_classes = self.fc2.n
        self._ops_per_row = 2.0 * self.fc1.n_out * self.fc1.n_in

    def run(self, codes: np.ndarray, threads: int | None = None,
            out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 (N, n_classes), labels int64 (N,)) for packed codes (N, words).

        `out`: an optional (scores, labels) pair of C-contiguous arrays of those dtypes and shapes
        to write into (no allocation per call)."""
        # Fast path for small batches (batch 1 included): the compiled call's own signature checks
        # the types and the compiled code the shapes and the padding; anything it refuses takes
        # the checked path, which raises the precise error.
        try:
            m = codes.shape[0]
            if m * self._ops_per_row < SERIAL_OPS and (
                    threads is None or threads.__class__ is int and 0 < threads <= _MAX_THREADS):
                if out is None:
                    scores = np.empty((m, self._n_classes), dtype=np.float32)
                    labels = np.empty(m, dtype=np.int64)
                else:
                    scores, labels = out
                if _head_serial(codes, self._blob, scores, labels) == 0:
                    return scores, labels
        except (AttributeError, IndexError, TypeError, ValueError):
            pass
        return self._run_checked(codes, threads, out)

    def _run_checked(self, codes, threads, out):
        codes = check_words("codes", codes, self.n_bits)  # raises, or copies to contiguous
        threads = check_threads(threads)
        m = codes.shape[0]
        if out is None:
            scores = np.empty((m, self._n_classes), dtype=np.float32)
            labels = np.empty(m, dtype=np.int64)
        else:
            scores = check_out(out[0], (m, self._n_classes), np.float32)
            labels = check_out(out[1], (m,), np.int64)
        if m == 0:
            return scores, labels
        t = threads_for(m * self._ops_per_row, threads)
        if t != 1:
            _head_parallel(codes, self._blob, scores, labels, t)
        elif _head_serial(codes, self._blob, scores, labels) != 0:
            raise AssertionError("the head refused checked arguments")  # a bug, not bad input
        return scores, labels

    def one_sample(self):
        """A head for one code at a time with its own buffers, the cheapest call at batch 1
        (`one_sample.OneSampleHead`): ``head.code[:] = code; label = head()``."""
        from hybnn_kernels.one_sample import OneSampleHead

        return OneSampleHead(self)

    def predict(self, codes: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Class labels int64 (N,) for packed codes (N, words(n_bits))."""
        return self.run(codes, threads)[1]


def load_deploy(path) -> BNNRuntime:
    """Read a deploy file written by `hybnn export` (h5py is imported here, not at import)."""
    return BNNRuntime.from_deploy(read_deploy(path))


assert WORD_BITS % NR == 0
