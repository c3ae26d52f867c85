"""Bit packing: ±1 / {0, 1} / boolean vectors to uint64 words and back.

Convention (shared by training, export and every kernel):
- bit 1 means +1, bit 0 means −1;
- bit j of a vector lives in word j // 64 at position j % 64, least significant bit first;
- padding bits past the vector's length are 0, so a ±1 dot product over n_bits real bits is
  n_bits − 2·popcount(a XOR w).
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64


def n_words(n_bits: int) -> int:
    """Number of uint64 words that hold n_bits bits."""
    if n_bits < 0:
        raise ValueError(f"n_bits must be >= 0, got {n_bits}")
    return (n_bits + WORD_BITS - 1) // WORD_BITS


def pack_bits(x: np.ndarray) -> np.ndarray:
    """Pack the last axis of x into uint64 words.

    Values greater than zero (+1, 1, True) become bit 1; everything else (−1, 0, False) bit 0.
    For real-valued inputs use `pack_signs`, which applies the project's sign (0 → +1).
    Returns an array of shape x.shape[:-1] + (n_words(x.shape[-1]),), dtype uint64.
    """
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("pack_bits needs at least one axis")
    return _pack_bool(x > 0)


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Pack sign(x) along the last axis, with sign(0) = sign(−0.0) = +1 (bit 1)."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("pack_signs needs at least one axis")
    return _pack_bool(~(x < 0))


def _pack_bool(b: np.ndarray) -> np.ndarray:
    n = b.shape[-1]
    w = n_words(n)
    pad = w * WORD_BITS - n
    if pad:
        b = np.concatenate([b, np.zeros(b.shape[:-1] + (pad,), dtype=bool)], axis=-1)
    packed = np.packbits(b, axis=-1, bitorder="little")  # (..., w * 8) uint8
    packed = np.ascontiguousarray(packed)
    return packed.view("<u8").astype(np.uint64, copy=False).reshape(b.shape[:-1] + (w,))


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
