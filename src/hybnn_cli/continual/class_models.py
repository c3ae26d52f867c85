"""Learners that cannot forget (`hybnn continual --strategy mixture | prototype`): one model per
class, fitted by EM on that class's training codes alone when its task comes, then never changed.
Pure compute (numpy and the kernels; no torch). Layer 6.

The encoder is frozen, so a code never changes after it is made: a class's model is as right
after any number of later classes as when it was fitted. Class-incremental accuracy is then the
models' accuracy on all the classes at once, whatever the order of the tasks. Each class's EM is
seeded by (run seed, class) alone, so its model does not depend on when its task comes.

- `MixtureClassifier`: a K-component Bernoulli mixture per class (`hybnn_kernels.prototypes.
  em_mixture`, the EM of generative replay and of `hybnn learn-class`), kept as float32
  (4·(K·D + K) bytes per class); a code goes to the allowed class of highest log-likelihood
  (`generative.log_likelihood`), priors equal.
- `PrototypeClassifier`: each component's probabilities rounded to bits (bit 1 where μ ≥ 1/2;
  `hybnn_kernels.prototypes.round_prototypes`, as a bundle's prototype head is fitted),
  packed (ceil(D / 8) bytes per prototype: 25 for 200 bits); a code goes to the allowed class of
  its nearest prototype in Hamming distance, i.e. of the largest ±1 dot product
  D − 2·popcount(x XOR p) (`hybnn_kernels.xnor_gemm`); ties go to the lowest class, then the
  lowest component.
"""

from __future__ import annotations

import numpy as np
from hybnn_kernels import prepack, unpack_bits, xnor_gemm
from hybnn_kernels.prototypes import em_mixture, round_prototypes

from hybnn_cli.continual.generative import log_likelihood
from hybnn_cli.errors import HybnnError


class ClassModels:
    """Per-class parameters over n_bits-bit codes, each class fitted on its own codes."""

    arrays: tuple[str, ...] = ()  # the names of a class's stored arrays (`state_dict`)

    def __init__(self, n_bits: int, n_classes: int, components: int):
        self.n_bits, self.n_classes, self.components = n_bits, n_classes, components
        self.params: dict[int, dict[str, np.ndarray]] = {}

    @property
    def classes(self) -> list[int]:
        return sorted(self.params)

    def check_counts(self, labels: np.ndarray) -> None:
        """HybnnError (one line) when a class in `labels` has fewer codes than components."""
        counts = np.bincount(labels, minlength=self.n_classes)
        present = np.flatnonzero(counts)
        c = int(present[counts[present].argmin()]) if len(present) else 0
        if len(present) and counts[c] < self.components:
            raise HybnnError(f"--components {self.components} is more than the {counts[c]} "
                             f"training codes of class {c}; use at most {counts[c]}")

    def fit(self, codes: np.ndarray, labels: np.ndarray, seed: int) -> None:
        """Fit one model per class present in (codes, labels) on its codes alone."""
        self.check_counts(labels)
        bits = unpack_bits(codes, self.n_bits)
        for c in np.unique(labels).tolist():
            weights, probs = em_mixture(bits[labels == c], self.components, seed=[seed, int(c)])
            self.params[int(c)] = self._kept(weights, probs)

    def _kept(self, weights: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def class_scores(self, codes: np.ndarray) -> np.ndarray:
        """(N, n_classes) float64: each code's score for each class (-inf for an unfitted one)."""
        raise NotImplementedError

    def predict(self, codes: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """(N,) int64: each code's allowed class (`allowed`: (N, n_classes) bool) of the highest
        score, the lowest class on a tie."""
        scores = np.where(allowed, self.class_scores(codes), -np.inf)
        return scores.argmax(1).astype(np.int64)

    def nbytes(self) -> int:
        """Bytes of the stored parameters."""
        return sum(a.nbytes for p in self.params.values() for a in p.values())

    def state_dict(self) -> dict:
        return {"classes": self.classes,
                **{name: [self.params[c][name] for c in self.classes] for name in self.arrays}}

    def load_state_dict(self, state: dict) -> None:
        self.params = {int(c): {name: np.asarray(state[name][i]) for name in self.arrays}
                       for i, c in enumerate(state["classes"])}


class MixtureClassifier(ClassModels):
    """A Bernoulli mixture per class; the class of highest log-likelihood, priors equal."""

    arrays = ("weights", "probs")

    def _kept(self, weights: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
        return {"weights": weights.astype(np.float32), "probs": probs.astype(np.float32)}

    def class_scores(self, codes: np.ndarray) -> np.ndarray:
        bits = unpack_bits(codes, self.n_bits)
        out = np.full((len(codes), self.n_classes), -np.inf)
        for c, p in self.params.items():
            out[:, c] = log_likelihood(bits, p["weights"], p["probs"])
        return out


class PrototypeClassifier(ClassModels):
    """Packed binary prototypes per class; the class of the nearest prototype in Hamming
    distance (the largest XNOR-popcount dot product)."""

    arrays = ("prototypes",)

    def _kept(self, weights: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
        return {"prototypes": round_prototypes(probs)}

    def _table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All prototypes (P, words) in (class, component) order, and each one's class and
        component."""
        protos = [self.params[c]["prototypes"] for c in self.classes]
        owner = np.concatenate([np.full(len(p), c) for c, p in zip(self.classes, protos,
                                                                  strict=True)])
        component = np.concatenate([np.arange(len(p)) for p in protos])
        return np.concatenate(protos), owner, component

    def dots(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, P) int32 ±1 dot products of the codes with every prototype (the kernels), with
        each prototype's class and component."""
        protos, owner, component = self._table()
        return xnor_gemm(codes, prepack(protos, self.n_bits), self.n_bits), owner, component

    def nearest(self, codes: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each code's nearest allowed prototype: (class, component), (N,) int64 each; on a tie
        the lowest class, then the lowest component (the first in (class, component) order)."""
        dots, owner, component = self.dots(codes)
        dots = np.where(allowed[:, owner], dots, np.iinfo(np.int32).min)
        best = dots.argmax(1)
        return owner[best].astype(np.int64), component[best].astype(np.int64)

    def predict(self, codes: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        return self.nearest(codes, allowed)[0]

    def nbytes(self) -> int:
        """ceil(n_bits / 8) bytes per prototype (its bits packed; the padding of the words it is
        held in for the kernels is not counted, as for the codes of a replay memory)."""
        return sum(len(p["prototypes"]) for p in self.params.values()) * ((self.n_bits + 7) // 8)

    def class_scores(self, codes: np.ndarray) -> np.ndarray:
        """The dot product with the class's nearest prototype."""
        dots, owner, _ = self.dots(codes)
        out = np.full((len(codes), self.n_classes), -np.inf)
        for c in self.classes:
            out[:, c] = dots[:, owner == c].max(1)
        return out


LEARNERS = {"mixture": MixtureClassifier, "prototype": PrototypeClassifier}
