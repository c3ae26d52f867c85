"""How a kernel call is spread over threads: small problems run serially, larger ones on Numba's
parallel backend with a dynamic schedule, Numba's thread setting restored afterwards."""

from __future__ import annotations

import numba

# Problems below this many binary operations (2·M·N·K) take the serial path: a parallel launch
# costs about a microsecond, the whole 200 → 128 layer for one sample less than that.
SERIAL_OPS = 2e7


def threads_for(ops: float, threads: int | None) -> int:
    """Threads a problem of `ops` binary operations runs on: 1 (serial) below SERIAL_OPS, else the
    requested count (default: Numba's current setting)."""
    if ops < SERIAL_OPS:
        return 1
    return numba.get_num_threads() if threads is None else threads


def call_parallel(fn, threads: int, *args) -> None:
    """Run a parallel kernel fn(*args, n_chunks) on `threads` threads, restoring Numba's setting
    afterwards."""
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        # dynamic schedule over the 8·threads chunks: a thread descheduled on a shared machine
        # does not hold the others up at the barrier
        with numba.parallel_chunksize(1):
            fn(*args, 8 * threads)
    finally:
        numba.set_num_threads(previous)
