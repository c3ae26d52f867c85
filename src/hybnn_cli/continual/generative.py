"""Generative replay without stored samples: one Bernoulli mixture per class, in code space.

A class's codes x ∈ {0, 1}^D are modelled as p(x) = Σ_k π_k Π_j μ_kj^x_j (1 − μ_kj)^(1−x_j),
fitted by EM (Bishop, "Pattern Recognition and Machine Learning", §9.3.3) on the class's training
codes when its task ends, then kept; the codes themselves are dropped. To stay small the
probabilities μ are stored as bytes (μ = q / 256 + 1/512, q ∈ 0..255) and the weights π as
float32: K·D + 4·K bytes per class (10,800 for K = 50 components of 200 bits).
Samples are packed like real codes (`hybnn_kernels.pack_bits`), padding bits 0.

The EM (`em_mixture`) is the one of `hybnn_kernels.prototypes` (numpy only, so that a device
fits a class without torch or numba); it and the log-likelihood of codes under a mixture
(`log_likelihood`) serve the per-class classifiers of `class_models` as well.
"""

from __future__ import annotations

import numpy as np
from hybnn_kernels import pack_bits, unpack_bits
from hybnn_kernels.prototypes import EM_ITERS, em_mixture


def fit_mixture(bits: np.ndarray, k: int, seed: int, iters: int = EM_ITERS) -> tuple:
    """`em_mixture` with its probabilities quantized to bytes; returns (weights (K,) float32,
    quantized probabilities (K, D) uint8)."""
    pi, mu = em_mixture(bits, k, seed, iters)
    q = np.clip(np.floor(mu * 256), 0, 255).astype(np.uint8)
    return pi.astype(np.float32), q


def log_likelihood(bits: np.ndarray, weights: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """log p(x) = log Σ_k π_k Π_j μ_kj^x_j (1 − μ_kj)^(1−x_j) of each {0, 1} row x (N, D) under
    one mixture (weights π (K,), probabilities μ (K, D) strictly inside (0, 1)), float64 (N,):
    log p(x | k) = x · (log μ_k − log(1 − μ_k)) + Σ_j log(1 − μ_kj), then a stable log-sum-exp."""
    mu = probs.astype(np.float64)
    log_q = np.log1p(-mu)
    logp = bits.astype(np.float64) @ (np.log(mu) - log_q).T + log_q.sum(1) + np.log(
        weights.astype(np.float64))
    top = logp.max(1)
    return top + np.log(np.exp(logp - top[:, None]).sum(1))


class CodeGenerator:
    """Per-class Bernoulli mixtures over n_bits-bit codes."""

    def __init__(self, n_bits: int, components: int):
        self.n_bits, self.components = n_bits, components
        self.mixtures: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def classes(self) -> list[int]:
        return sorted(self.mixtures)

    def fit(self, codes: np.ndarray, labels: np.ndarray, seed: int) -> None:
        """Fit one mixture per class present in (codes, labels), replacing any earlier one."""
        bits = unpack_bits(codes, self.n_bits)
        for c in np.unique(labels).tolist():
            self.mixtures[int(c)] = fit_mixture(bits[labels == c], self.components,
                                                seed=seed * 1000 + int(c))

    def sample(self, n_per_class: int, rng: np.random.Generator,
               classes: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """n_per_class packed codes (uint64) of each class (all fitted ones by default)."""
        out_c, out_l = [], []
        for c in self.classes if classes is None else classes:
            pi, q = self.mixtures[c]
            mu = q.astype(np.float32) / 256 + 1 / 512
            comp = rng.choice(len(pi), n_per_class, p=pi / pi.sum())
            bits = rng.random((n_per_class, self.n_bits), dtype=np.float32) < mu[comp]
            out_c.append(pack_bits(bits))
            out_l.append(np.full(n_per_class, c, dtype=np.int64))
        if not out_c:
            return np.zeros((0, (self.n_bits + 63) // 64), np.uint64), np.zeros(0, np.int64)
        return np.concatenate(out_c), np.concatenate(out_l)

    def nbytes(self) -> int:
        """Bytes of the stored parameters: uint8 probabilities and float32 weights."""
        return sum(q.nbytes + pi.nbytes for pi, q in self.mixtures.values())

    def state_dict(self) -> dict:
        return {"classes": self.classes,
                "weights": [self.mixtures[c][0] for c in self.classes],
                "probs": [self.mixtures[c][1] for c in self.classes]}

    def load_state_dict(self, state: dict) -> None:
        self.mixtures = {int(c): (np.asarray(w, np.float32), np.asarray(q, np.uint8))
                         for c, w, q in zip(state["classes"], state["weights"], state["probs"],
                                            strict=True)}
