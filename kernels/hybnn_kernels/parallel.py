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
    afterwards. The chunks are scheduled dynamically, one at a time: a thread descheduled on a
    shared machine does not hold the others up at the barrier. (Each of Numba's setters costs
    about 1.4 µs from Python: the thread count is set only when it changes, and the chunk size
    directly rather than through the `parallel_chunksize` context manager, which cost 4 µs.)"""
    previous = numba.get_num_threads()
    if threads != previous:
        numba.set_num_threads(threads)
    chunksize = numba.set_parallel_chunksize(1)
    try:
        fn(*args, 8 * threads)
    finally:
        numba.set_parallel_chunksize(chunksize)
        if threads != previous:
            numba.set_num_threads(previous)
