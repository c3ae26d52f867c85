"""Bit packing: ±1 / {0, 1} / boolean vectors to uint64 words and back, the fast compiled
packers. The bit convention and the numpy-only helpers live in `layout`.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from hybnn_kernels.layout import (  # noqa: F401  (re-exported: the layout in one import)
    WORD_BITS,
    n_words,
    pack_bool,
    padding_set,
    unpack_bits,
    unpack_signs,
    used_bits_in_last_word,
)

# dtypes packed by the compiled path (anything else goes through np.packbits)
_FAST_DTYPES = {np.dtype(t) for t in (np.float32, np.float64, np.bool_, np.int8, np.int16,
                                      np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                                      np.uint64)}


@njit(cache=True)
def bits_set_past(x, used_bits):
    """Compiled core of `padding_set` (callable from other kernels): whether any row of x has a bit
    set at or past position `used_bits` of its last word."""
    last = x.shape[1] - 1
    acc = np.uint64(0)
    for i in range(x.shape[0]):
        acc |= x[i, last]
    return (acc >> np.uint64(used_bits)) != 0


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
    return pack_bool(x > 0)


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Pack sign(x) along the last axis, with sign(0) = sign(−0.0) = +1 (bit 1)."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("pack_signs needs at least one axis")
    if x.dtype in _FAST_DTYPES:
        return _pack_fast(x, _pack_rows_nonneg)
    return pack_bool(~(x < 0))


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
