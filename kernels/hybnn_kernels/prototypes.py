"""Binary class prototypes in numpy alone (no numba, no torch): the Bernoulli-mixture EM that fits
them, the nearest-prototype rule that scores codes against them, and a bundle's prototype head.

A class's codes x ∈ {0, 1}^D are modelled as a K-component Bernoulli mixture
p(x) = Σ_k π_k Π_j μ_kj^x_j (1 − μ_kj)^(1−x_j), fitted by EM (Bishop, "Pattern Recognition and
Machine Learning", §9.3.3; `em_mixture`, seeded). A prototype is a component's means rounded to
bits (bit 1 where μ ≥ 1/2), packed like a code (`fit_prototypes`); a code goes to the class of its
nearest prototype in Hamming distance, popcount(x XOR p) by `np.bitwise_count`, ties to the
lowest class, then the lowest component (`nearest`). This is the one EM of the project:
`hybnn_cli.continual` (generative replay, the per-class learners) uses it too, and a device
learns a new class with it (`hybnn learn-class`).

`PrototypeHead` is a bundle's prototype head (see `pipeline`): class names (strings), K packed
prototypes per class in (class, component) order, read from a ``.npy`` file of uint64 words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybnn_kernels.layout import n_words, pack_bool, padding_set, unpack_bits

EM_ITERS = 40
ROWS_PER_BLOCK = 1024  # codes scored at once (memory: ROWS_PER_BLOCK × prototypes × 8 bytes)


def em_mixture(bits: np.ndarray, k: int, seed, iters: int = EM_ITERS) -> tuple:
    """EM for a K-component Bernoulli mixture on {0, 1} rows (K at most the number of rows);
    returns (weights π (K,), probabilities μ (K, D)), float64, every μ inside [0.001, 0.999].
    `seed`: anything `np.random.default_rng` takes."""
    x = bits.astype(np.float64)
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    mu = np.clip(0.5 * x[rng.choice(n, k, replace=False)] + 0.25 + 0.05 * rng.random(
        (k, x.shape[1])) - 0.025, 0.01, 0.99)
    pi = np.full(k, 1.0 / k)
    for _ in range(iters):
        # E step: log responsibilities, one matrix product per term
        logp = x @ np.log(mu).T + (1 - x) @ np.log1p(-mu).T + np.log(pi)
        logp -= logp.max(1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(1, keepdims=True)
        # M step (a pseudo-count keeps every probability inside (0, 1))
        nk = r.sum(0) + 1e-9
        mu = np.clip((r.T @ x + 0.5) / (nk[:, None] + 1.0), 1e-3, 1 - 1e-3)
        pi = nk / nk.sum()
    return pi, mu


def round_prototypes(probs: np.ndarray) -> np.ndarray:
    """A mixture's probabilities μ (K, D) rounded to bits (bit 1 where μ ≥ 1/2), packed: (K,
    n_words(D)) uint64, padding bits 0."""
    return pack_bool(np.asarray(probs) >= 0.5)


def fit_prototypes(codes: np.ndarray, n_bits: int, k: int, seed,
                   iters: int = EM_ITERS) -> np.ndarray:
    """K packed prototypes (K, n_words(n_bits)) uint64 of one class from its packed codes (N,
    n_words) uint64, N >= K: EM (`em_mixture`, seeded by `seed`), then μ rounded to bits."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != n_words(n_bits):
        raise ValueError(f"codes must be (N, {n_words(n_bits)}) uint64, got {codes.shape}")
    if k < 1 or len(codes) < k:
        raise ValueError(f"{k} prototypes need at least {max(k, 1)} codes, got {len(codes)}")
    _, mu = em_mixture(unpack_bits(codes, n_bits), k, seed, iters)
    return round_prototypes(mu)


def hamming(codes: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """(N, P) int32: popcount(code XOR prototype) of every packed code with every prototype."""
    out = np.zeros((len(codes), len(prototypes)), np.int32)
    for w in range(prototypes.shape[1]):
        out += np.bitwise_count(codes[:, w, None] ^ prototypes[None, :, w])
    return out


def nearest(codes: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """(N,) int64: the row of each code's nearest prototype in Hamming distance, the first row
    (the lowest class, then the lowest component, in (class, component) order) on a tie."""
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    out = np.empty(len(codes), np.int64)
    for s in range(0, len(codes), ROWS_PER_BLOCK):
        out[s:s + ROWS_PER_BLOCK] = hamming(codes[s:s + ROWS_PER_BLOCK], prototypes).argmin(1)
    return out


def read_prototypes(path, n_bits: int, rows: int) -> np.ndarray:
    """A prototype file: a ``.npy`` array (rows, n_words(n_bits)) of uint64, padding bits 0, read
    without pickles; ValueError naming what is wrong."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable prototype file ({e})") from None
    if arr.dtype != np.uint64 or arr.shape != (rows, n_words(n_bits)):
        raise ValueError(f"{path}: expected ({rows}, {n_words(n_bits)}) uint64 prototypes, got "
                         f"{arr.shape} {arr.dtype}")
    if padding_set(arr, n_bits):
        raise ValueError(f"{path}: a prototype has a bit set past bit {n_bits}")
    return np.ascontiguousarray(arr)


def write_prototypes(path, prototypes: np.ndarray) -> None:
    """Write packed prototypes as a ``.npy`` file (`path` an open binary file or a name)."""
    np.save(path, np.ascontiguousarray(prototypes, dtype=np.uint64), allow_pickle=False)


@dataclass
class PrototypeHead:
    """A bundle's prototype head: class names, and K packed prototypes per class."""

    name: str
    classes: np.ndarray  # str (n_classes,): the class names, in the order they were learned
    prototypes: np.ndarray  # uint64 (n_classes · K, words), in (class, component) order
    components: int
    owner: np.ndarray = field(init=False, repr=False)  # int64 (P,): each prototype's class index

    def __post_init__(self):
        if len(self.prototypes) != len(self.classes) * self.components:
            raise ValueError(f"head {self.name}: {len(self.prototypes)} prototypes for "
                             f"{len(self.classes)} classes of {self.components}")
        self.owner = np.repeat(np.arange(len(self.classes)), self.components)

    def labels(self, codes: np.ndarray, threads: int = 1) -> np.ndarray:
        """Class names (N,) for packed codes (N, words); `threads` is unused (one numpy pass)."""
        if not len(self.classes):
            raise ValueError(f"head {self.name} has no classes")
        return self.classes[self.owner[nearest(codes, self.prototypes)]]
