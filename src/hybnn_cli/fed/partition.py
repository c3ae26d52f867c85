"""Splitting a training set among federated clients: IID or Dirichlet label skew.

Both are deterministic functions of (labels, number of clients, seed[, alpha]), so every client
computes the same split on its own machine and takes its share by partition id.

- IID: a random permutation cut into near-equal parts.
- Dirichlet (Hsu et al. 2019): for each class, proportions p ~ Dir(alpha · 1_k) over the k
  clients decide how that class's samples are dealt out; small alpha gives strong label skew.
  Draws are repeated (up to `max_tries` = 20) until every client holds at least `min_size` samples,
  where `min_size` is at most n // k. With thousands of clients no draw may give every client
  that many (most of a class goes to a few clients); the last draw is then topped up: each client
  short of `min_size` takes the missing samples from the surplus of the largest parts, mostly
  of one class drawn for it (so that small clients stay label-skewed). A client may
  hold as few as one sample (n // k = 1 at 10,000 clients on a 12,000-sample task).

`partition_indices` caches its answer (a client app is called every round, and on the in-process
and simulation engines many clients share one process): its memory is that of the indices, n
integers whatever the number of clients.
"""

from __future__ import annotations

import functools

import numpy as np

from hybnn_cli.errors import HybnnError


def iid_partition(n: int, n_parts: int, seed: int) -> list[np.ndarray]:
    """Indices 0..n−1 shuffled and cut into n_parts near-equal parts."""
    _check(n, n_parts)
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, n_parts)]


def dirichlet_partition(labels: np.ndarray, n_parts: int, alpha: float, seed: int,
                        min_size: int = 10, max_tries: int = 20) -> list[np.ndarray]:
    """Label-skewed parts: each class split among clients by Dirichlet(alpha) proportions."""
    labels = np.asarray(labels)
    _check(len(labels), n_parts)
    if not alpha > 0:
        raise HybnnError(f"Dirichlet alpha must be > 0, got {alpha}")
    min_size = min(min_size, len(labels) // n_parts)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        draw = []  # per class: its indices in a random order and where to cut them
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(n_parts, alpha))
            draw.append((idx, (np.cumsum(p)[:-1] * len(idx)).astype(int)))
        sizes = sum(np.diff(cuts, prepend=0, append=len(idx)) for idx, cuts in draw)
        if sizes.min() >= min_size:
            break
    parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
    for idx, cuts in draw:
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].append(chunk)
    out = [np.sort(np.concatenate(p)) for p in parts]
    if sizes.min() >= min_size:
        return out
    return _top_up(out, labels, min_size, rng)


def _top_up(parts: list[np.ndarray], labels: np.ndarray, min_size: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    """Give every part at least min_size indices. The largest parts give their surplus above
    min_size (largest first, at random within a part) until the shortfall is covered; each short
    part then draws one class, in proportion to what is left of each, and takes its missing
    samples from that class first, so that small clients stay label-skewed."""
    sizes = np.array([len(p) for p in parts])
    need = np.maximum(min_size - sizes, 0)
    left = int(need.sum())
    kept = list(parts)
    pool = []
    for k in np.argsort(-sizes, kind="stable"):
        if left == 0:
            break
        give = min(max(int(sizes[k]) - min_size, 0), left)
        if give:
            shuffled = rng.permutation(parts[k])
            pool.append(shuffled[:give])
            kept[k] = np.sort(shuffled[give:])
            left -= give
    pool = np.concatenate(pool) if pool else np.zeros(0, dtype=np.int64)
    classes = np.unique(labels[pool])
    by_class = [list(rng.permutation(pool[labels[pool] == c])) for c in classes]
    for k in np.flatnonzero(need):
        avail = np.array([len(b) for b in by_class], dtype=float)
        first = rng.choice(len(classes), p=avail / avail.sum())
        taken: list[int] = []
        for c in [first, *np.argsort(-avail, kind="stable")]:
            while by_class[c] and len(taken) < need[k]:
                taken.append(by_class[c].pop())
        kept[k] = np.sort(np.concatenate([parts[k], np.array(taken, dtype=parts[k].dtype)]))
    return kept


def partition_indices(labels: np.ndarray, scheme: str, n_parts: int, alpha: float,
                      seed: int) -> list[np.ndarray]:
    """The split of `labels` among n_parts clients (cached by the labels' content)."""
    labels = np.ascontiguousarray(labels)
    return _cached(labels.tobytes(), str(labels.dtype), scheme, n_parts, float(alpha), seed)


@functools.lru_cache(maxsize=4)
def _cached(label_bytes: bytes, dtype: str, scheme: str, n_parts: int, alpha: float,
            seed: int) -> list[np.ndarray]:
    labels = np.frombuffer(label_bytes, dtype=dtype)
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
