"""How a kernel call is spread over threads: small problems run serially, larger ones on Numba's
parallel backend with a static schedule (one share per thread).

The thread count is set inside the compiled kernel, not from Python: a parallel kernel starts
with `enter(n_chunks)` and ends with `leave(previous)`. Compiled, reading and setting Numba's
thread count costs next to nothing, while from Python `numba.get_num_threads()` alone costs about a
microsecond, a few percent of a 256³ GEMM on two threads. Numba's static schedule (chunk size 0)
gives each thread one contiguous share. Timed against one-at-a-time dynamic chunks in one process
on a Zen 3 (GEMMs 256³ to 4096³, the head and the hidden layer at batch 4096), the two were level
within the machine's noise from 512³ up, and static was ahead at 256³–384³, where the two calls
of `numba.set_parallel_chunksize` that dynamic chunks need (1.4–2.5 µs each from Python) are a
tenth of the call."""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Problems below this many binary operations (2·M·N·K) take the serial path: a parallel launch
# costs about a microsecond, the whole 200 → 128 layer for one sample less than that.
SERIAL_OPS = 2e7


def threads_for(ops: float, threads: int | None) -> int:
    """The `n_chunks` a kernel call passes on: 1 (the serial path) below SERIAL_OPS, else the
    requested thread count, or 0 for Numba's current setting (read inside the kernel, `enter`)."""
    if ops < SERIAL_OPS:
        return 1
    return 0 if threads is None else threads


@intrinsic
def _get_num_threads(typingctx):
    """Numba's thread count, from the threading layer's own `get_num_threads` symbol (the one
    the parallel loops read), declared by name: `numba.get_num_threads` compiled holds a ctypes
    pointer instead, which keeps a kernel out of the disk cache."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(cgutils.intp_t, []),
                                            "get_num_threads")
        return builder.call(fn, [])

    return types.intp(), codegen


@intrinsic
def _set_num_threads(typingctx, n):
    """Sets Numba's thread count through the threading layer's `set_num_threads` symbol (both
    declared with intp, as Numba's own code declares them)."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [cgutils.intp_t]), "set_num_threads")
        builder.call(fn, [context.cast(builder, args[0], signature.args[0], types.intp)])
        return context.get_dummy_value()

    return types.void(n), codegen


@njit(cache=True, inline="always")
def enter(n_chunks):
    """The first step of a parallel kernel: Numba's thread count set to n_chunks (0: the current
    setting kept). Returns (the thread count the kernel runs on, the setting `leave` restores)."""
    previous = _get_num_threads()
    if n_chunks == 0:
        return previous, previous
    if n_chunks != previous:
        _set_num_threads(n_chunks)
    return n_chunks, previous


@njit(cache=True, inline="always")
def leave(previous):
    """The last step of a parallel kernel: Numba's thread count as it was before `enter`."""
    if _get_num_threads() != previous:
        _set_num_threads(previous)
