"""The argument checks every public kernel entry point shares (Python side, before any compiled
call): packed word arrays (dtype, shape, padding bits zero, see `bits`), bit counts, thread counts
and output buffers. Each raises TypeError or ValueError with one line naming the argument.
`compile_once` gives a kernel one signature, for the entry points that try the compiled call
first and take these checks only when it refuses."""

from __future__ import annotations

import numba
import numpy as np

from hybnn_kernels.layout import n_words, padding_set


def check_words(name: str, x, n_bits: int) -> np.ndarray:
    """x as a C-contiguous (rows, n_words(n_bits)) uint64 array with its padding bits zero."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint64 words, got {type(x).__name__}")
    if x.dtype != np.uint64:
        raise TypeError(f"{name} must have dtype uint64 (packed bits), got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, words), got shape {x.shape}")
    w = n_words(n_bits)
    if x.shape[1] != w:
        raise ValueError(f"{name} has {x.shape[1]} words per row, but {n_bits} bits need {w}")
    if padding_set(x, n_bits):
        raise ValueError(f"{name} has nonzero padding bits past bit {n_bits}")
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def check_n_bits(n_bits) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer):
        raise TypeError(f"n_bits must be an integer, got {type(n_bits).__name__}")
    if n_bits < 1:
        raise ValueError(f"n_bits must be >= 1, got {n_bits}")
    return int(n_bits)


def check_threads(threads) -> int | None:
    """None (Numba's current setting) or an integer in 1..NUMBA_NUM_THREADS."""
    if threads is None:
        return None
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
        raise ValueError(f"threads must be an integer in 1..{limit}, got {threads!r}")
    return threads


def aligned_empty(shape, dtype=np.int32) -> np.ndarray:
    """np.empty(shape, dtype) whose data starts on a 64-byte cache line. numpy's own arrays start
    16 bytes into one, so a kernel loading or storing whole 64-byte vectors splits every access
    across two lines: the weight panels (`xnor.prepack`, four vector loads per k step), the head's
    constant data (`runtime`) and a GEMM's own output (a panel's 32 int32 dots per store)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    buf = np.empty(n * dtype.itemsize + 64, dtype=np.uint8)
    skip = -buf.ctypes.data % 64
    return buf[skip:skip + n * dtype.itemsize].view(dtype).reshape(shape)


def check_out(out, shape, dtype=np.int32) -> np.ndarray:
    """A new array of `shape` and `dtype` when out is None, else out after checking it fits."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != shape:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a {np.dtype(dtype)} array of shape {shape}, got {got}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    return out


_ONE_SIGNATURE: set = set()  # kernels `compile_once` has compiled


def compile_once(kernel, signature) -> None:
    """Compile a Numba kernel for its one signature (or load it from the cache) on first use, and
    no other version after: arguments of other types raise TypeError at the call instead of
    compiling a new version (the type half of the checks, for a call tried before the checks)."""
    if kernel not in _ONE_SIGNATURE:
        kernel.compile(signature)
        kernel.disable_compile()
        _ONE_SIGNATURE.add(kernel)
