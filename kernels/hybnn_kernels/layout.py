"""The bit layout of packed codes and weights, in numpy only (no numba: the cold path of a deploy
bundle imports this and never starts numba; `bits` adds the compiled packers).

Convention (shared by training, export and every kernel):
- bit 1 means +1, bit 0 means −1;
- bit j of a vector lives in word j // 64 at position j % 64, least significant bit first;
- padding bits past the vector's length are 0, so a ±1 dot product over n_bits real bits is
  n_bits − 2·popcount(a XOR w).
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64
# the width of hybnn's codes: the VAE's binary latent, the task BNN's input (the paper's 200 bits)
CODE_BITS = 200


def n_words(n_bits: int) -> int:
    """Number of uint64 words that hold n_bits bits."""
    if n_bits < 0:
        raise ValueError(f"n_bits must be >= 0, got {n_bits}")
    return (n_bits + WORD_BITS - 1) // WORD_BITS


def used_bits_in_last_word(n_bits: int) -> int:
    """How many bits of a code's last word are real (1..64); the rest are padding and must be 0."""
    return n_bits - (n_words(n_bits) - 1) * WORD_BITS


def padding_set(x: np.ndarray, n_bits: int) -> bool:
    """Whether any row of packed vectors x (rows, n_words(n_bits)) uint64 has a padding bit set,
    i.e. a bit at or past position n_bits (the convention above says they are all 0)."""
    used = used_bits_in_last_word(n_bits)
    if used == WORD_BITS or x.shape[0] == 0:
        return False
    return bool(np.bitwise_or.reduce(x[:, -1]) >> np.uint64(used))


def pack_bool(b: np.ndarray) -> np.ndarray:
    """Pack a boolean array's last axis into uint64 words (True → bit 1), with np.packbits."""
    n = b.shape[-1]
    w = n_words(n)
    pad = w * WORD_BITS - n
    if pad:
        b = np.concatenate([b, np.zeros(b.shape[:-1] + (pad,), dtype=bool)], axis=-1)
    packed = np.packbits(b, axis=-1, bitorder="little")  # (..., w * 8) uint8
    packed = np.ascontiguousarray(packed)
    return packed.view("<u8").astype(np.uint64, copy=False).reshape(b.shape[:-1] + (w,))


def pack_signs_numpy(x: np.ndarray) -> np.ndarray:
    """`bits.pack_signs` without numba: sign(x) along the last axis, 0, −0.0 and NaN → bit 1."""
    return pack_bool(~(np.asarray(x) < 0))


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
