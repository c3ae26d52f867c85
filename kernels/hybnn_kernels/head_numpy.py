"""A task head run in numpy only: the cold path of a deploy bundle.

Starting numba and loading the compiled head from its cache takes about 0.6 s of CPU in a new
process, more than the rest of a one-image classification. `NumpyHead` computes the same scores
and labels as `runtime.BNNRuntime` (exact integer popcounts, the same score table, ties to the
first class) with numpy's `bitwise_count`, at some microseconds per call instead of one; a
`pipeline.Pipeline` runs its first small batches on it and switches to the compiled head later.
"""

from __future__ import annotations

import numpy as np

from hybnn_kernels.deploy_file import DeployArrays
from hybnn_kernels.layout import n_words, pack_bool, padding_set

_ROWS = 1024  # rows per step: the XOR intermediate is rows × hidden × 8 bytes


def check_codes(codes, n_bits: int) -> np.ndarray:
    """codes as a (rows, n_words(n_bits)) uint64 array with zero padding bits, or ValueError."""
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint64 or codes.ndim != 2:
        got = f"{codes.dtype} {codes.shape}" if isinstance(codes, np.ndarray) else \
            type(codes).__name__
        raise ValueError(f"codes must be a 2-D uint64 array, got {got}")
    if codes.shape[1] != n_words(n_bits):
        raise ValueError(f"codes have {codes.shape[1]} words per row, but {n_bits} bits need "
                         f"{n_words(n_bits)}")
    if padding_set(codes, n_bits):
        raise ValueError(f"codes have nonzero padding bits past bit {n_bits}")
    return codes


class NumpyHead:
    """`run(codes)` → (scores float32 (N, n_classes), labels int64 (N,)), as `BNNRuntime.run`."""

    def __init__(self, arrays: DeployArrays):
        self.arrays = arrays
        self._rows = np.arange(arrays.n_classes)[None, :]
        # one word at a time (`_mismatches`): the weights' words as rows
        self._w1 = np.ascontiguousarray(arrays.fc1_weights.T)  # (words(n_bits), hidden)
        self._w2 = np.ascontiguousarray(arrays.fc2_weights.T)  # (words(hidden), n_classes)
        self._count = np.int16 if 2 * max(arrays.n_bits, arrays.hidden) < 2 ** 15 else np.int64
        self._hidden_bytes: np.ndarray | None = None  # `one`'s buffer for the hidden bits

    def run(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self.arrays
        codes = check_codes(codes, a.n_bits)
        scores = np.empty((len(codes), a.n_classes), dtype=np.float32)
        for s in range(0, len(codes), _ROWS):
            mism = self._mismatches(codes[s:s + _ROWS], self._w1)
            h = pack_bool(a.n_bits - 2 * mism >= a.fc1_thresholds)  # dot >= threshold → 1
            cnt = self._mismatches(h, self._w2)
            scores[s:s + _ROWS] = a.score_table[self._rows, a.hidden - cnt]
        return scores, np.argmax(scores, axis=1).astype(np.int64)

    def one(self, code: np.ndarray) -> int:
        """The class index of one packed code (words,) uint64 with zero padding bits (unchecked:
        the caller packed it), in a handful of numpy calls: the path for one image at a time
        (`one_image`), where `run`'s word loop would cost several times more. Same scores, same
        ties (the first class)."""
        a = self.arrays
        if self._hidden_bytes is None:
            self._hidden_bytes = np.zeros(8 * a.fc2_weights.shape[1], dtype=np.uint8)
        mism = np.bitwise_count(a.fc1_weights ^ code).sum(axis=1, dtype=np.int64)
        fired = a.n_bits - 2 * mism >= a.fc1_thresholds  # dot >= threshold → 1
        nb = (len(fired) + 7) // 8
        self._hidden_bytes[:nb] = np.packbits(fired, bitorder="little")
        h = self._hidden_bytes.view("<u8")
        cnt = np.bitwise_count(a.fc2_weights ^ h).sum(axis=1, dtype=np.int64)
        return int(np.argmax(a.score_table[self._rows[0], a.hidden - cnt]))

    def _mismatches(self, x: np.ndarray, w_t: np.ndarray) -> np.ndarray:
        """popcount(x_i XOR w_j) for every row i of x (rows, words) and column j of w_t
        (words, n): a (rows, n) XOR and popcount per word, summed, a few times faster than one
        (rows, n, words) array reduced over its short last axis."""
        total = np.zeros((len(x), w_t.shape[1]), dtype=self._count)
        xor = np.empty((len(x), w_t.shape[1]), dtype=np.uint64)
        for k in range(w_t.shape[0]):
            np.bitwise_xor(x[:, k:k + 1], w_t[k][None, :], out=xor)
            total += np.bitwise_count(xor)
        return total
