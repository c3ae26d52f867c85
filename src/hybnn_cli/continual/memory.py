"""The replay memory: at most `capacity` packed codes with their labels.

Two ways to fill it at the end of each task (van de Ven et al. 2019; Chaudhry et al. 2019):
- `balanced`: every class seen so far keeps capacity // n_classes codes (the first
  capacity % n_classes classes one more); a new class takes its share at random from its task's
  codes and the old classes give up codes at random to make room;
- `reservoir`: reservoir sampling over the stream of all training codes seen, in a seeded order:
  every code seen so far is in the memory with the same probability capacity / n_seen.

Randomness comes from (seed, task) only, so a run resumed at a task boundary repeats an unbroken
one. A code of n_bits bits costs ceil(n_bits / 8) bytes (25 for 200 bits), its label one byte.
"""

from __future__ import annotations

import numpy as np

from hybnn_cli.errors import HybnnError

POLICIES = ("balanced", "reservoir")


class ReplayMemory:
    def __init__(self, capacity: int, n_words: int, policy: str = "balanced", seed: int = 0):
        if policy not in POLICIES:
            raise HybnnError(f"unknown memory policy '{policy}': use {' or '.join(POLICIES)}")
        if capacity < 1:
            raise HybnnError(f"the memory must hold at least one code, got {capacity}")
        self.capacity, self.policy, self.seed = capacity, policy, seed
        self.codes = np.zeros((0, n_words), dtype=np.uint64)
        self.labels = np.zeros(0, dtype=np.int64)
        self.n_seen = 0  # codes offered so far (reservoir sampling needs it)

    def __len__(self) -> int:
        return len(self.labels)

    def add_task(self, codes: np.ndarray, labels: np.ndarray, task: int) -> None:
        """Offer one task's training codes; afterwards at most `capacity` codes are kept."""
        rng = np.random.default_rng([self.seed, task, 7])
        if self.policy == "reservoir":
            self._reservoir(codes, labels, rng)
        else:
            self._balanced(codes, labels, rng)
        assert len(self) <= self.capacity

    def _reservoir(self, codes, labels, rng) -> None:
        keep_c, keep_l = list(self.codes), list(self.labels)
        for i in rng.permutation(len(labels)):
            self.n_seen += 1
            if len(keep_l) < self.capacity:
                keep_c.append(codes[i])
                keep_l.append(labels[i])
            else:
                j = rng.integers(self.n_seen)
                if j < self.capacity:
                    keep_c[j], keep_l[j] = codes[i], labels[i]
        self.codes = np.array(keep_c, dtype=np.uint64).reshape(-1, self.codes.shape[1])
        self.labels = np.array(keep_l, dtype=np.int64)

    def _balanced(self, codes, labels, rng) -> None:
        self.n_seen += len(labels)
        classes = sorted(set(self.labels.tolist()) | set(np.unique(labels).tolist()))
        quota = {c: self.capacity // len(classes) + (k < self.capacity % len(classes))
                 for k, c in enumerate(classes)}
        keep_c, keep_l = [], []
        for c in classes:
            old = np.flatnonzero(self.labels == c)
            if len(old):  # an old class: drop codes at random down to its new quota
                pick = self.codes[np.sort(rng.permutation(old)[:quota[c]])]
            else:
                pick = codes[np.sort(rng.permutation(np.flatnonzero(labels == c))[:quota[c]])]
            keep_c.append(pick)
            keep_l.append(np.full(len(pick), c, dtype=np.int64))
        self.codes = np.concatenate(keep_c).astype(np.uint64)
        self.labels = np.concatenate(keep_l)

    def nbytes(self, n_bits: int) -> int:
        """Bytes of the stored codes (bits packed) and labels (one byte each)."""
        return len(self) * ((n_bits + 7) // 8 + 1)

    def state_dict(self) -> dict:
        return {"codes": self.codes.view(np.int64).copy(), "labels": self.labels.copy(),
                "n_seen": self.n_seen}

    def load_state_dict(self, state: dict) -> None:
        self.codes = np.asarray(state["codes"]).view(np.uint64).copy()
        self.labels = np.asarray(state["labels"], dtype=np.int64)
        self.n_seen = int(state["n_seen"])
