"""One meaning for `--threads`: how many CPU threads a command computes with — torch's intra-op
threads and the XNOR kernels' (Numba's) threads alike. The default is every core this process may
use, shared out among the processes `torchrun` starts on this machine (LOCAL_WORLD_SIZE).
`using` sets both for the length of a command and restores them afterwards; every command goes
through it, and `child_env` gives a child process the same count, so the rule lives here only."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from hybnn_cli.errors import HybnnError

HELP = ("CPU threads to compute with, for torch and the XNOR kernels alike (default: every core "
        "this process may use; under torchrun, shared among the machine's processes).")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Every core this process may use, divided among the processes torchrun started on this
    machine (its LOCAL_WORLD_SIZE), at least 1."""
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, available_cores() // local)


def resolve(threads: int | None, kernels: bool = True) -> int:
    """The thread count a command runs with: `threads`, or `default_threads()` when None/0;
    at most Numba's NUMBA_NUM_THREADS (fixed when the process starts). `kernels=False`: a
    command that does not need numba (`predict` on a bundle: numba is optional there, and its
    compiled heads take at most that many threads themselves) does not import it to check."""
    if not kernels:
        limit = sys.maxsize
    else:
        import numba

        limit = numba.config.NUMBA_NUM_THREADS
    if not threads:
        return min(default_threads(), limit)
    if threads < 1:
        raise HybnnError(f"--threads must be at least 1, got {threads}")
    if threads > limit:
        raise HybnnError(f"--threads {threads}: at most {limit} here (NUMBA_NUM_THREADS)")
    return threads


@contextlib.contextmanager
def using(threads: int | None) -> Iterator[int]:
    """Run the block with `resolve(threads)` threads in Numba and in torch (when torch is
    imported: the torch-free runtime never imports it), restoring both settings afterwards."""
    import numba

    n = resolve(threads)
    torch = sys.modules.get("torch")
    before = (numba.get_num_threads(), torch.get_num_threads() if torch else None)
    numba.set_num_threads(n)
    if torch:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(before[0])
        if torch:
            torch.set_num_threads(before[1])


def child_env(threads: int, base: dict | None = None) -> dict[str, str]:
    """The environment of a child process that computes with `threads` threads: `base` (default:
    this process's environment) with the thread counts of OpenMP, OpenBLAS and MKL set, which
    torch and numpy read when they start."""
    count = str(threads)
    return {**(os.environ if base is None else base), "OMP_NUM_THREADS": count,
            "OPENBLAS_NUM_THREADS": count, "MKL_NUM_THREADS": count}
