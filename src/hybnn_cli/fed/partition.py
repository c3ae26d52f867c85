"""Splitting a training set among federated clients: IID or Dirichlet label skew.

Both are deterministic functions of (labels, number of clients, seed[, alpha]), so every client
computes the same split on its own machine and takes its share by partition id.

- IID: a random permutation cut into near-equal parts.
- Dirichlet (Hsu et al. 2019): for each class, proportions p ~ Dir(alpha · 1_k) over the k
  clients decide how that class's samples are dealt out; small alpha gives strong label skew.
  Draws are repeated until every client holds at least `min_size` samples.
"""

from __future__ import annotations

import numpy as np

from hybnn_cli.errors import HybnnError


def iid_partition(n: int, n_parts: int, seed: int) -> list[np.ndarray]:
    """Indices 0..n−1 shuffled and cut into n_parts near-equal parts."""
    _check(n, n_parts)
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, n_parts)]


def dirichlet_partition(labels: np.ndarray, n_parts: int, alpha: float, seed: int,
                        min_size: int = 10, max_tries: int = 1000) -> list[np.ndarray]:
    """Label-skewed parts: each class split among clients by Dirichlet(alpha) proportions."""
    labels = np.asarray(labels)
    _check(len(labels), n_parts)
    if not alpha > 0:
        raise HybnnError(f"Dirichlet alpha must be > 0, got {alpha}")
    min_size = min(min_size, len(labels) // n_parts)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(n_parts, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise HybnnError(f"could not draw a Dirichlet(alpha={alpha}) split giving every one of "
                     f"{n_parts} clients {min_size} samples; raise alpha or use fewer clients")


def partition_indices(labels: np.ndarray, scheme: str, n_parts: int, alpha: float,
                      seed: int) -> list[np.ndarray]:
    if scheme == "iid":
        return iid_partition(len(labels), n_parts, seed)
    if scheme == "dirichlet":
        return dirichlet_partition(labels, n_parts, alpha, seed)
    raise HybnnError(f"unknown partition '{scheme}': use iid or dirichlet")


def _check(n: int, n_parts: int) -> None:
    if n_parts < 1:
        raise HybnnError(f"need at least one client, got {n_parts}")
    if n < n_parts:
        raise HybnnError(f"{n} training samples cannot be split among {n_parts} clients")
