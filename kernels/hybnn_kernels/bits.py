"""Bit packing: ±1 / {0, 1} / boolean vectors to uint64 words and back.

Convention (shared by training, export and every kernel):
- bit 1 means +1, bit 0 means −1;
- bit j of a vector lives in word j // 64 at position j % 64, least significant bit first;
- padding bits past the vector's length are 0, so a ±1 dot product over n_bits real bits is
  n_bits − 2·popcount(a XOR w).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

WORD_BITS = 64
# dtypes packed by the compiled path (anything else goes through np.packbits)
_FAST_DTYPES = {np.dtype(t) for t in (np.float32, np.float64, np.bool_, np.int8, np.int16,
                                      np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                                      np.uint64)}


def n_words(n_bits: int) -> int:
    """Number of uint64 words that hold n_bits bits."""
    if n_bits < 0:
        raise ValueError(f"n_bits must be >= 0, got {n_bits}")
    return (n_bits + WORD_BITS - 1) // WORD_BITS


def used_bits_in_last_word(n_bits: int) -> int:
    """How many bits of a code's last word are real (1..64); the rest are padding and must be 0."""
    return n_bits - (n_words(n_bits) - 1) * WORD_BITS


@njit(cache=True)
def bits_set_past(x, used_bits):
    """Compiled core of `padding_set` (callable from other kernels): whether any row of x has a bit
    set at or past position `used_bits` of its last word."""
    last = x.shape[1] - 1
    acc = np.uint64(0)
    for i in range(x.shape[0]):
        acc |= x[i, last]
    return (acc >> np.uint64(used_bits)) != 0


def padding_set(x: np.ndarray, n_bits: int) -> bool:
    """Whether any row of packed vectors x (rows, n_words(n_bits)) uint64 has a padding bit set,
    i.e. a bit at or past position n_bits (the convention above says they are all 0)."""
    used = used_bits_in_last_word(n_bits)
    return used < WORD_BITS and x.shape[0] > 0 and bool(bits_set_past(x, used))


def pack_bits(x: np.ndarray) -> np.ndarray:
    """Pack the last axis of x into uint64 words.

    Values greater than zero (+1, 1, True) become bit 1; everything else (−1, 0, False) bit 0.
    For real-valued inputs use `pack_signs`, which applies the project's sign (0 → +1).
    Returns an array of shape x.shape[:-1] + (n_words(x.shape[-1]),), dtype uint64.
    """
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("pack_bits needs at least one axis")
    if x.dtype in _FAST_DTYPES:
        return _pack_fast(x, _pack_rows_pos)
    return _pack_bool(x > 0)


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Pack sign(x) along the last axis, with sign(0) = sign(−0.0) = +1 (bit 1)."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("pack_signs needs at least one axis")
    if x.dtype in _FAST_DTYPES:
        return _pack_fast(x, _pack_rows_nonneg)
    return _pack_bool(~(x < 0))


def _pack_bool(b: np.ndarray) -> np.ndarray:
    """np.packbits path, for dtypes the compiled path does not take."""
    n = b.shape[-1]
    w = n_words(n)
    pad = w * WORD_BITS - n
    if pad:
        b = np.concatenate([b, np.zeros(b.shape[:-1] + (pad,), dtype=bool)], axis=-1)
    packed = np.packbits(b, axis=-1, bitorder="little")  # (..., w * 8) uint8
    packed = np.ascontiguousarray(packed)
    return packed.view("<u8").astype(np.uint64, copy=False).reshape(b.shape[:-1] + (w,))


def _pack_fast(x: np.ndarray, kernel) -> np.ndarray:
    n = x.shape[-1]
    rows = x.reshape(-1, n) if x.size else np.zeros((0, n), x.dtype)
    rows = rows if rows.flags.c_contiguous else np.ascontiguousarray(rows)
    out = np.empty((rows.shape[0], n_words(n)), dtype=np.uint64)
    if rows.shape[0] and n:
        kernel(rows, out)
    return out.reshape(x.shape[:-1] + (n_words(n),))


def _make_mask64(positive: bool):
    """intrinsic(x, i, j0) → uint64 whose bit t is the test of x[i, j0 + t], t < 64: one 64-lane
    vector compare and a bitcast of the <64 x i1> mask (vcmpps + vmovmskps on x86).
    positive: x > 0; otherwise not x < 0 (the project's sign: 0, −0.0 and NaN give 1)."""

    @intrinsic
    def mask64(typingctx, x, i, j0):
        sig = types.uint64(x, i, j0)

        def codegen(context, builder, signature, args):
            arrty = signature.args[0]
            arr = context.make_array(arrty)(context, builder, args[0])
            i64 = ir.IntType(64)
            n = builder.extract_value(arr.shape, 1)
            iv = context.cast(builder, args[1], signature.args[1], types.intp)
            jv = context.cast(builder, args[2], signature.args[2], types.intp)
            ptr = builder.gep(arr.data, [builder.add(builder.mul(iv, n), jv)])
            elem = context.get_data_type(arrty.dtype)
            vty = ir.VectorType(elem, 64)
            v = builder.load(builder.bitcast(ptr, vty.as_pointer()), align=arrty.dtype.bitwidth // 8
                             if not isinstance(arrty.dtype, types.Boolean) else 1)
            dt = arrty.dtype
            if isinstance(dt, types.Float):
                zero = ir.Constant(vty, [0.0] * 64)
                m = builder.fcmp_ordered(">", v, zero) if positive else \
                    builder.fcmp_unordered(">=", v, zero)
            else:
                zero = ir.Constant(vty, [0] * 64)
                signed = isinstance(dt, types.Integer) and dt.signed
                if positive:
                    m = builder.icmp_signed(">", v, zero) if signed else \
                        builder.icmp_unsigned("!=", v, zero)
                else:
                    m = builder.icmp_signed(">=", v, zero) if signed else \
                        builder.icmp_unsigned(">=", v, zero)
            return builder.bitcast(m, i64)

        return sig, codegen

    return mask64


_mask64_pos = _make_mask64(True)
_mask64_nonneg = _make_mask64(False)


@njit(cache=True)
def _pack_rows_pos(x, out):
    m, n = x.shape
    full = n // 64
    for i in range(m):
        for q in range(full):
            out[i, q] = _mask64_pos(x, i, q * 64)
        if full < out.shape[1]:
            w = np.uint64(0)
            for j in range(full * 64, n):
                if x[i, j] > 0:
                    w |= np.uint64(1) << np.uint64(j - full * 64)
            out[i, full] = w


@njit(cache=True)
def _pack_rows_nonneg(x, out):
    m, n = x.shape
    full = n // 64
    for i in range(m):
        for q in range(full):
            out[i, q] = _mask64_nonneg(x, i, q * 64)
        if full < out.shape[1]:
            w = np.uint64(0)
            for j in range(full * 64, n):
                if not x[i, j] < 0:
                    w |= np.uint64(1) << np.uint64(j - full * 64)
            out[i, full] = w


def unpack_bits(words: np.ndarray, n_bits: int) -> np.ndarray:
    """Inverse of `pack_bits`: uint64 words (..., w) to a uint8 {0, 1} array (..., n_bits)."""
    words = np.asarray(words)
    if words.dtype != np.uint64:
        raise TypeError(f"expected uint64 words, got {words.dtype}")
    if words.shape[-1] != n_words(n_bits):
        raise ValueError(
            f"{n_bits} bits need {n_words(n_bits)} words, got {words.shape[-1]} words"
        )
    as_bytes = np.ascontiguousarray(words).astype("<u8", copy=False).view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=-1, bitorder="little")
    return bits[..., :n_bits]


def unpack_signs(words: np.ndarray, n_bits: int) -> np.ndarray:
    """uint64 words to an int8 ±1 array (..., n_bits)."""
    return unpack_bits(words, n_bits).astype(np.int8) * 2 - 1
