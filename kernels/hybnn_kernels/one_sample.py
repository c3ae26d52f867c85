"""The BNN head for one code at a time, at the lowest cost per call: `BNNRuntime.one_sample()`.

At batch 1 the head's arithmetic takes a few hundred nanoseconds, and calling it through Numba's
dispatcher (which types and unboxes every array argument on every call) costs more than that.
`OneSampleHead` owns its buffers instead: the code goes into ``head.code`` (words,) uint64, the
class scores come out in ``head.scores`` (n_classes,) float32, and ``head()`` returns the label.
The compiled entry is a C callback (`numba.cfunc`) taking one pointer, to a context array that
holds the addresses of the head's constant data (the runtime's blob, `runtime._make_blob`), of
the two buffers and of a scratch area; it is called through ctypes (without releasing the GIL),
which passes that one pointer for a small fraction of a dispatcher's cost. The arithmetic is the
runtime's own (`runtime._head_rows`): the same scores, bit for bit, and the same ties.

    head = runtime.one_sample()
    head.code[:] = packed_code        # or let a packer write straight into head.code
    label = head()                    # head.scores holds the class scores

The buffers are fixed when the head is made (the compiled code reads them by address), so
``code`` and ``scores`` are attributes that cannot be rebound; a code with padding bits set is
refused (ValueError), as everywhere in the runtime. The buffers belong to the head: threads that
classify at the same time each make their own head (`BNNRuntime.one_sample()` is cheap once the
entry is compiled or loaded from the cache).
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from hybnn_kernels.bits import WORD_BITS, bits_set_past
from hybnn_kernels.runtime import HEADER, BNNRuntime, _head_rows, _unpack
from hybnn_kernels.tile import CACHE, MR, NR

# the context array: the addresses the compiled entry reads, and the blob's length in words
_BLOB, _BLOB_WORDS, _CODE, _SCORES, _SCRATCH, _CONTEXT = range(6)


@intrinsic
def _pointer(typingctx, address):
    """An integer address as a void pointer (for `numba.carray`)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@njit(cache=CACHE, inline="always")
def _scratch_words(kw2):
    """Words of scratch for one row: the hidden code (MR rows of the tile), the tile's masks and
    counts, and the label."""
    return MR * kw2 + MR + MR * NR + 1


def _head_one(context):
    """Returns the label of the code in the context's buffer (its scores written), or -1 without
    computing anything when the code has padding bits set."""
    ctx = carray(context, (_CONTEXT,), np.int64)
    blob = carray(_pointer(ctx[_BLOB]), (ctx[_BLOB_WORDS],), np.uint64)
    h = blob[:HEADER].view(np.int64)
    words, pad_from, kw2, n_classes = h[0], h[1], h[4], h[6]
    codes = carray(_pointer(ctx[_CODE]), (1, words), np.uint64)
    if pad_from < WORD_BITS and bits_set_past(codes, pad_from):
        return -1
    scores = carray(_pointer(ctx[_SCORES]), (1, n_classes), np.float32)
    scratch = carray(_pointer(ctx[_SCRATCH]), (_scratch_words(kw2),), np.uint64)
    hidden_code = scratch[:MR * kw2].reshape((MR, kw2))
    masks = scratch[MR * kw2: MR * kw2 + MR]
    counts = scratch[MR * kw2 + MR: MR * kw2 + MR + MR * NR].view(np.int64)
    label = scratch[MR * kw2 + MR + MR * NR:].view(np.int64)
    p1, cthr1, p2, table, n_classes, hidden = _unpack(blob)
    _head_rows(codes, 0, 1, p1, cthr1, p2, n_classes, hidden, table, hidden_code, masks, counts,
               scores, label)
    return label[0]


_entry = None  # the compiled `_head_one` as a ctypes function, made (or loaded from the cache) once


def _compiled_entry():
    global _entry
    if _entry is None:
        compiled = cfunc(types.int64(types.voidptr), cache=CACHE)(_head_one)
        _entry = ctypes.PYFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)(compiled.address)
    return _entry


class OneSampleHead:
    """A runtime's head for one code at a time, with its own buffers (see the module's doc)."""

    __slots__ = ("_code", "_scores", "_scratch", "_context", "_address", "_call", "_runtime",
                 "_n_bits")

    def __init__(self, runtime: BNNRuntime):
        self._runtime = runtime  # keeps the blob alive: the context holds its address
        self._n_bits = runtime.n_bits
        blob = runtime._blob
        self._code = np.zeros(runtime._words, dtype=np.uint64)
        self._scores = np.zeros(runtime.n_classes, dtype=np.float32)
        self._scratch = np.zeros(_scratch_words((runtime.hidden + WORD_BITS - 1) // WORD_BITS),
                                 dtype=np.uint64)
        self._context = np.zeros(_CONTEXT, dtype=np.int64)
        self._context[[_BLOB, _BLOB_WORDS, _CODE, _SCORES, _SCRATCH]] = [
            blob.ctypes.data, blob.size, self._code.ctypes.data, self._scores.ctypes.data,
            self._scratch.ctypes.data]
        self._address = self._context.ctypes.data
        self._call = _compiled_entry()

    @property
    def code(self) -> np.ndarray:
        """The input buffer, (words,) uint64: the packed code the next call classifies."""
        return self._code

    @property
    def scores(self) -> np.ndarray:
        """The class scores of the last call, (n_classes,) float32."""
        return self._scores

    def __call__(self) -> int:
        """The label of the code in `code` (its scores in `scores`)."""
        label = self._call(self._address)
        if label < 0:
            raise ValueError(f"code has nonzero padding bits past bit {self._n_bits}")
        return label

    def classify(self, code: np.ndarray) -> int:
        """Copies one packed code (words,) into `code`, then classifies it (the copy costs about
        as much as the call: a producer that writes into `code` directly saves it)."""
        self._code[:] = code
        return self()
