"""Slow, obviously correct references for the kernels: loops over Python ints and ±1 arrays."""

from __future__ import annotations

import numpy as np


def pack_ref(bits: np.ndarray) -> np.ndarray:
    """{0, 1} array (rows, n) → uint64 words, bit j in word j // 64 at position j % 64."""
    bits = np.asarray(bits)
    rows, n = bits.shape
    words = (n + 63) // 64
    out = np.zeros((rows, words), dtype=np.uint64)
    for i in range(rows):
        for j in range(n):
            if bits[i, j]:
                out[i, j // 64] |= np.uint64(1) << np.uint64(j % 64)
    return out


def unpack_ref(words: np.ndarray, n_bits: int) -> np.ndarray:
    """uint64 words (rows, w) → {0, 1} int array (rows, n_bits)."""
    rows = words.shape[0]
    out = np.zeros((rows, n_bits), dtype=np.int64)
    for i in range(rows):
        for j in range(n_bits):
            out[i, j] = (int(words[i, j // 64]) >> (j % 64)) & 1
    return out


def xnor_gemm_ref(a: np.ndarray, w: np.ndarray, n_bits: int) -> np.ndarray:
    """±1 dot products of the packed rows, by unpacking to ±1 and multiplying element by element."""
    sa = unpack_ref(a, n_bits) * 2 - 1
    sw = unpack_ref(w, n_bits) * 2 - 1
    out = np.zeros((a.shape[0], w.shape[0]), dtype=np.int64)
    for i in range(a.shape[0]):
        for j in range(w.shape[0]):
            out[i, j] = int(np.sum(sa[i] * sw[j]))
    return out


def binary_dense_ref(a: np.ndarray, w: np.ndarray, thresholds: np.ndarray,
                     n_bits: int) -> np.ndarray:
    """Packed output bits: bit j of row i is 1 when dot(a[i], w[j]) >= thresholds[j]."""
    dot = xnor_gemm_ref(a, w, n_bits)
    return pack_ref((dot >= np.asarray(thresholds)[None, :]).astype(np.int64))


def bnn_predict_ref(state: dict, codes: np.ndarray, n_bits: int, eps: float = 1e-5) -> np.ndarray:
    """The task BNN's predicted class for packed codes, from its state dict alone, in float64:
    ±1 inputs, sign(W) (sign(0) = +1), batch norm with running statistics, sign, again, argmax."""
    def sign(v):
        return np.where(v >= 0, 1.0, -1.0)

    def bn(v, name):
        p = {k: state[f"{name}.{k}"].double().numpy()
             for k in ("running_mean", "running_var", "weight", "bias")}
        return (v - p["running_mean"]) / np.sqrt(p["running_var"] + eps) * p["weight"] + p["bias"]

    x = unpack_ref(codes, n_bits) * 2.0 - 1.0
    h = sign(bn(x @ sign(state["fc1.weight"].double().numpy()).T, "bn1"))
    return np.argmax(bn(h @ sign(state["fc2.weight"].double().numpy()).T, "bn2"), axis=1)


def bnn_scores_ref(codes: np.ndarray, w1: np.ndarray, thresholds: np.ndarray, w2: np.ndarray,
                   table: np.ndarray, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of a deploy file's arrays (see `hybnn_kernels.runtime`): hidden bit j is
    dot_j >= thresholds[j], the output dot d of class c is looked up at table[c, (d + hidden) / 2],
    the label is the first class with the highest score."""
    hidden = w1.shape[0]
    h = binary_dense_ref(codes, w1, thresholds, n_bits)
    d = xnor_gemm_ref(h, w2, hidden)
    scores = np.stack([table[c, (d[:, c] + hidden) // 2] for c in range(w2.shape[0])], axis=1)
    return scores, np.argmax(scores, axis=1)
