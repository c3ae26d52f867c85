"""How a kernel call is spread over threads: small problems run serially, larger ones on Numba's
parallel backend with a static schedule (one share per thread), Numba's thread setting restored
afterwards."""

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
    afterwards. The work is cut into one contiguous share per thread (Numba's default static
    schedule, chunk size 0). Timed against one-at-a-time dynamic chunks in one process on a Zen 3
    (GEMMs 256³ to 4096³, the head and the hidden layer at batch 4096), the two were level within
    the machine's noise from 512³ up, and static was ahead at 256³–384³, where the two calls of
    `numba.set_parallel_chunksize` that dynamic chunks need (1.4–2.5 µs each from Python) are a
    tenth of the call. Numba's thread count is set only when it changes (each setter costs as
    much)."""
    previous = numba.get_num_threads()
    if threads != previous:
        numba.set_num_threads(threads)
    try:
        fn(*args, threads)
    finally:
        if threads != previous:
            numba.set_num_threads(previous)
