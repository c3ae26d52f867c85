"""The BNN head for one code at a time, at the lowest cost per call: `BNNRuntime.one_sample()`.

At batch 1 the head's arithmetic takes a couple of hundred nanoseconds, and calling it through
Numba's dispatcher (which types and unboxes every array argument on every call) costs more than
that. `OneSampleHead` owns its buffers instead: the code goes into ``head.code`` (words,) uint64,
the class scores come out in ``head.scores`` (n_classes,) float32, and ``head()`` returns the
label. The compiled entry is a C callback (`numba.cfunc`) taking one pointer, to a context array
that holds the addresses of the runtime's constant arrays, of the two buffers and of a scratch
area, and the shapes, all fixed when the head is made, so a call is arithmetic only. The head is
that entry applied to its context (a `functools.partial` of a ctypes function that holds the GIL,
`ctypes.PYFUNCTYPE`), so ``head()`` runs no Python code at all; a code with padding bits set makes
the entry set a ValueError through the C API, which ctypes raises. The arithmetic is the runtime's
own (`runtime._head_rows`): the same scores, bit for bit, and the same ties.

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
import functools

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from hybnn_kernels.bits import WORD_BITS, bits_set_past, used_bits_in_last_word
from hybnn_kernels.runtime import BNNRuntime, _head_rows
from hybnn_kernels.tile import CACHE, MR, NR

# The context array: the addresses the compiled entry reads (the runtime's own constant arrays,
# the head's two buffers and its scratch) and the shapes, fixed when the head is made, so that a
# call does nothing but arithmetic (no header to parse, no views to cut).
(_CODE, _SCORES, _P1, _CTHR1, _P2, _TABLE, _SCRATCH,
 _WORDS, _PAD_FROM, _N_P1, _N_P2, _KW2, _HIDDEN, _N_CLASSES,
 _SET_ERROR, _ERROR_TYPE, _ERROR_TEXT, _CONTEXT) = range(18)


@intrinsic
def _pointer(typingctx, address):
    """An integer address as a void pointer (for `numba.carray`)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@intrinsic
def _set_error(typingctx, function, error_type, text):
    """Calls the C function at address `function` as PyErr_SetString(error_type, text) (all three
    addresses): the compiled entry raises its own error, and ctypes, which calls it holding the GIL
    (`ctypes.PYFUNCTYPE`), raises it on return."""
    if not all(isinstance(t, types.Integer) for t in (function, error_type, text)):
        return None

    def codegen(context, builder, signature, args):
        vp = cgutils.voidptr_t
        fn = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), [vp, vp]).as_pointer())
        builder.call(fn, [builder.inttoptr(args[1], vp), builder.inttoptr(args[2], vp)])
        return context.get_dummy_value()

    return types.void(function, error_type, text), codegen


@njit(cache=CACHE, inline="always")
def _scratch_words(kw2):
    """Words of scratch for one row: the hidden code (MR rows of the tile), the tile's masks and
    counts, and the label."""
    return MR * kw2 + MR + MR * NR + 1


def _head_one(context):
    """Returns the label of the code in the context's buffer (its scores written); when the code
    has padding bits set, computes nothing, sets a ValueError and returns -1."""
    ctx = carray(context, (_CONTEXT,), np.int64)
    words, pad_from, kw2, n_classes = ctx[_WORDS], ctx[_PAD_FROM], ctx[_KW2], ctx[_N_CLASSES]
    codes = carray(_pointer(ctx[_CODE]), (1, words), np.uint64)
    if pad_from < WORD_BITS and bits_set_past(codes, pad_from):
        _set_error(ctx[_SET_ERROR], ctx[_ERROR_TYPE], ctx[_ERROR_TEXT])
        return -1
    hidden = ctx[_HIDDEN]
    p1 = carray(_pointer(ctx[_P1]), (ctx[_N_P1], words, NR), np.uint64)
    cthr1 = carray(_pointer(ctx[_CTHR1]), (ctx[_N_P1] * NR,), np.int64)
    p2 = carray(_pointer(ctx[_P2]), (ctx[_N_P2], kw2, NR), np.uint64)
    table = carray(_pointer(ctx[_TABLE]), (n_classes, hidden + 1), np.float32)
    scores = carray(_pointer(ctx[_SCORES]), (1, n_classes), np.float32)
    at = ctx[_SCRATCH]
    hidden_code = carray(_pointer(at), (MR, kw2), np.uint64)
    at += 8 * MR * kw2
    masks = carray(_pointer(at), (MR,), np.uint64)
    at += 8 * MR
    counts = carray(_pointer(at), (MR * NR,), np.int64)
    label = carray(_pointer(at + 8 * MR * NR), (1,), np.int64)
    _head_rows(codes, 0, 1, p1, cthr1, p2, n_classes, hidden, table, hidden_code, masks, counts,
               scores, label)
    return label[0]


_ENTRIES: dict = {}  # (function, fastmath) → (its C callback, that callback as a ctypes function)


def entry_of(fn, fastmath: bool | set = False):
    """`fn(context) -> int64` as a C callback taking one pointer (`numba.cfunc`, compiled or loaded
    from the cache once per process), called through ctypes holding the GIL."""
    key = (fn, repr(fastmath))
    if key not in _ENTRIES:
        compiled = cfunc(types.int64(types.voidptr), fastmath=fastmath, cache=CACHE)(fn)
        _ENTRIES[key] = (compiled, ctypes.PYFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)(
            compiled.address))
    return _ENTRIES[key][1]


class OneSampleHead(functools.partial):
    """A runtime's head for one code at a time, with its own buffers (see the module's doc): the
    compiled entry applied to the head's context, so that ``head()`` is a call of C code from C,
    without a Python frame."""

    def __new__(cls, runtime: BNNRuntime, code: np.ndarray | None = None):
        """`code`: the input buffer to read, (words,) uint64, shared with its writer (the
        one-image tail's heads share one); a new one by default."""
        p1, cthr1 = runtime.fc1.weights.panels, runtime.fc1.count_thresholds
        p2, table = runtime.fc2.panels, runtime.score_table
        for x in (p1, cthr1, p2, table):
            assert x.flags.c_contiguous
        kw2 = p2.shape[1]
        if code is None:
            code = np.zeros(runtime._words, dtype=np.uint64)
        elif code.dtype != np.uint64 or code.shape != (runtime._words,) or (
                not code.flags.c_contiguous):
            raise ValueError(f"code buffer must be C-contiguous ({runtime._words},) uint64")
        scores = np.zeros(runtime.n_classes, dtype=np.float32)
        scratch = np.zeros(_scratch_words(kw2), dtype=np.uint64)
        text = f"code has nonzero padding bits past bit {runtime.n_bits}".encode()
        context = np.zeros(_CONTEXT, dtype=np.int64)
        for i, x in ((_CODE, code), (_SCORES, scores), (_P1, p1), (_CTHR1, cthr1), (_P2, p2),
                     (_TABLE, table), (_SCRATCH, scratch)):
            context[i] = x.ctypes.data
        context[[_WORDS, _PAD_FROM, _N_P1, _N_P2, _KW2, _HIDDEN, _N_CLASSES]] = [
            p1.shape[1], used_bits_in_last_word(runtime.n_bits), p1.shape[0], p2.shape[0], kw2,
            runtime.hidden, runtime.n_classes]
        context[[_SET_ERROR, _ERROR_TYPE, _ERROR_TEXT]] = [
            ctypes.cast(ctypes.pythonapi.PyErr_SetString, ctypes.c_void_p).value,
            ctypes.c_void_p.in_dll(ctypes.pythonapi, "PyExc_ValueError").value,
            ctypes.cast(ctypes.c_char_p(text), ctypes.c_void_p).value]
        head = super().__new__(cls, entry_of(_head_one), ctypes.c_void_p(context.ctypes.data))
        # everything the context points into lives as long as the head
        head._keep = (runtime, context, scratch, text)
        head.context = context
        head._code, head._scores = code, scores
        return head

    @property
    def code(self) -> np.ndarray:
        """The input buffer, (words,) uint64: the packed code the next call classifies."""
        return self._code

    @property
    def scores(self) -> np.ndarray:
        """The class scores of the last call, (n_classes,) float32."""
        return self._scores

    def classify(self, code: np.ndarray) -> int:
        """Copies one packed code (words,) into `code`, then classifies it (the copy costs about
        as much as the call: a producer that writes into `code` directly saves it)."""
        self._code[:] = code
        return self()


# ── the one-image tail: threshold, pack and every head in one call ─────────────────────────────
# After the encoder has written an image's logits, `OneImageTail()` packs them into the code the
# heads share and runs each head (`_head_one` on its context), in one compiled call: the numpy
# threshold and pack and one call per head cost several times the arithmetic at batch 1.
(_T_LOGITS, _T_CODE, _T_N_BITS, _T_HEADS, _T_LABELS, _T_N_HEADS, _T_CONTEXT) = range(7)

_head_one_inline = njit(cache=CACHE)(_head_one)


def _tail(context):
    """Packs the logits into the code (logit >= 0 → bit 1, bit j at position j % 64 of word
    j // 64; padding bits zero), then writes each head's label; returns the first head's error
    (-1) or 0."""
    ctx = carray(context, (_T_CONTEXT,), np.int64)
    n_bits, n_heads = ctx[_T_N_BITS], ctx[_T_N_HEADS]
    logits = carray(_pointer(ctx[_T_LOGITS]), (n_bits,), np.float32)
    words = (n_bits + WORD_BITS - 1) // WORD_BITS
    code = carray(_pointer(ctx[_T_CODE]), (words,), np.uint64)
    for w in range(words):
        acc = np.uint64(0)
        for b in range(min(WORD_BITS, n_bits - w * WORD_BITS)):
            if logits[w * WORD_BITS + b] >= 0:
                acc |= np.uint64(1) << np.uint64(b)
        code[w] = acc
    heads = carray(_pointer(ctx[_T_HEADS]), (n_heads,), np.int64)
    labels = carray(_pointer(ctx[_T_LABELS]), (n_heads,), np.int64)
    for i in range(n_heads):
        labels[i] = _head_one_inline(_pointer(heads[i]))
        if labels[i] < 0:
            return -1
    return 0


class OneImageTail(functools.partial):
    """``tail()``: the code of the logits in `logits` (n_bits,) float32, written into ``tail.code``,
    and every head's label of it in ``tail.labels`` (n_heads,) int64, in one call of C code from C
    (as `OneSampleHead`). The logits buffer is the caller's (an encoder's bound output); the heads
    are `BNNRuntime`s on codes of `n_bits` bits."""

    def __new__(cls, logits: np.ndarray, runtimes: list[BNNRuntime]):
        if logits.dtype != np.float32 or logits.ndim != 1 or not logits.flags.c_contiguous:
            raise ValueError("logits buffer must be C-contiguous 1-D float32")
        n_bits = len(logits)
        code = np.zeros((n_bits + WORD_BITS - 1) // WORD_BITS, dtype=np.uint64)
        if any(rt.n_bits != n_bits for rt in runtimes):
            raise ValueError(f"every head must take {n_bits} bits")
        heads = [OneSampleHead(rt, code) for rt in runtimes]
        contexts = np.array([h.context.ctypes.data for h in heads], dtype=np.int64)
        labels = np.zeros(len(heads), dtype=np.int64)
        context = np.zeros(_T_CONTEXT, dtype=np.int64)
        context[[_T_LOGITS, _T_CODE, _T_N_BITS, _T_HEADS, _T_LABELS, _T_N_HEADS]] = [
            logits.ctypes.data, code.ctypes.data, n_bits,
            contexts.ctypes.data if len(heads) else 0, labels.ctypes.data, len(heads)]
        tail = super().__new__(cls, entry_of(_tail), ctypes.c_void_p(context.ctypes.data))
        tail._keep = (logits, heads, contexts, context)
        tail._code, tail._labels, tail._heads = code, labels, heads
        return tail

    @property
    def code(self) -> np.ndarray:
        """The packed code of the last call, (words,) uint64."""
        return self._code

    @property
    def labels(self) -> np.ndarray:
        """Each head's label (class index) of the last call, (n_heads,) int64."""
        return self._labels

    @property
    def heads(self) -> list[OneSampleHead]:
        """The heads, in order (each one's ``scores`` hold its last call's class scores)."""
        return self._heads


# ── the one-image normaliser: uint8 pixels into the encoder's float32 input ─────────────────────
# The same arithmetic as `Pipeline.encode` (float32(pixel) − offset, then / scale, each rounded to
# float32), in one compiled call on buffers fixed when it is made: right after an encoder run the
# caches hold the encoder's weights, and a numpy ufunc call with a cast costs several times its
# warm time there.
(_N_PIXELS, _N_INPUT, _N_COUNT, _N_CONSTANTS, _N_CONTEXT) = range(5)


def _normalise(context):
    ctx = carray(context, (_N_CONTEXT,), np.int64)
    n = ctx[_N_COUNT]
    pixels = carray(_pointer(ctx[_N_PIXELS]), (n,), np.uint8)
    x = carray(_pointer(ctx[_N_INPUT]), (n,), np.float32)
    constants = carray(_pointer(ctx[_N_CONSTANTS]), (2,), np.float32)  # offset, scale
    offset, scale = constants[0], constants[1]
    for i in range(n):
        x[i] = (np.float32(pixels[i]) - offset) / scale
    return 0


class OneImageNormaliser(functools.partial):
    """``normalise()``: ``x = (float32(pixel) − offset) / scale`` from ``pixels`` (uint8) into `x`
    (float32, the caller's: an encoder's bound input), element by element, in one call of C code
    from C (as `OneSampleHead`)."""

    def __new__(cls, x: np.ndarray, offset: float, scale: float):
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            raise ValueError("input buffer must be C-contiguous float32")
        pixels = np.zeros(x.shape, dtype=np.uint8)
        constants = np.array([offset, scale], dtype=np.float32)
        context = np.zeros(_N_CONTEXT, dtype=np.int64)
        context[[_N_PIXELS, _N_INPUT, _N_COUNT, _N_CONSTANTS]] = [
            pixels.ctypes.data, x.ctypes.data, x.size, constants.ctypes.data]
        norm = super().__new__(cls, entry_of(_normalise), ctypes.c_void_p(context.ctypes.data))
        norm._keep = (x, constants, context)
        norm._pixels = pixels
        return norm

    @property
    def pixels(self) -> np.ndarray:
        """The uint8 input buffer, of the input's shape."""
        return self._pixels
