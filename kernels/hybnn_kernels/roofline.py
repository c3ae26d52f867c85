"""This machine's own ceilings, measured with tiny compiled loops that touch no memory stream.

- `fma_peak`: float32 fused multiply-adds on `FMA_CHAINS` independent vector accumulators, the
  widest vectors the CPU has (16 lanes with AVX-512, else 8): the ceiling of every float32
  contender (numpy, torch).
- `xnor_peak`: the register tile's own arithmetic, for the variant this process runs
  (`tile.VARIANT`, MR × NV accumulators of VW u64 lanes): per step, MR words of `a` are broadcast
  (from a 64-word buffer that stays in L1, as the tile broadcasts from memory), XORed with NV
  weight vectors held in registers, popcounted and added; the `byte` variant accumulates bytes and
  flushes them into u64 lanes every FLUSH steps, as the tile does. The weight panel's loads are
  the only work of the real tile missing here, so a kernel's rate over this one is how close it
  runs to what its instruction mix allows.

Both run on `threads` threads (one block of steps per thread, `prange`) and return operations per
second counted as the benchmarks count them: 2 per multiply-add, 2 per bit of an XNOR dot product
(so a GEMM of M·N·K bits is 2·M·N·K operations either way). Each loop returns a value derived from
every accumulator, so nothing is optimized away.
"""

from __future__ import annotations

import time

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from hybnn_kernels.tile import (
    CACHE,
    FLUSH,
    MR,
    NV,
    VW,
    broadcast,
    byte_lane_sums,
    cpu_features,
    ctpop,
)

FMA_LANES = 16 if "avx512f" in cpu_features() else 8
FMA_CHAINS = 12  # independent accumulators: more than FMA latency × FMA pipes on known CPUs
A_WORDS = 64  # the broadcast buffer: 512 bytes, always in L1


@intrinsic
def _fma_steps(typingctx, n_steps):
    """n_steps × FMA_CHAINS vector FMAs acc = acc·x + y; returns the sum of every lane."""
    sig = types.float64(n_steps)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        vty = ir.VectorType(f32, FMA_LANES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                             f"llvm.fma.v{FMA_LANES}f32")
        x = ir.Constant(vty, [0.9999999] * FMA_LANES)  # acc → y / (1 − x): stays finite
        y = ir.Constant(vty, [1e-7] * FMA_LANES)
        acc = [cgutils.alloca_once_value(builder, ir.Constant(vty, [1.0 + i] * FMA_LANES))
               for i in range(FMA_CHAINS)]
        n = context.cast(builder, args[0], signature.args[0], types.intp)
        with cgutils.for_range(builder, n):
            for a in acc:
                builder.store(builder.call(fma, [builder.load(a), x, y]), a)
        total = ir.Constant(f32, 0.0)
        for a in acc:
            v = builder.load(a)
            for lane in range(FMA_LANES):
                total = builder.fadd(total, builder.extract_element(v, ir.Constant(
                    ir.IntType(32), lane)))
        return builder.fpext(total, ir.DoubleType())

    return sig, codegen


@intrinsic
def _xnor_steps(typingctx, a, w, n_blocks):
    """n_blocks × max(FLUSH, 1) steps of the tile's arithmetic on MR broadcast words of `a`
    (A_WORDS u64, cycled) and NV weight vectors from `w` (NV·VW u64, loaded once, then held in
    registers); returns the sum of every count."""
    sig = types.int64(a, w, n_blocks)
    steps = max(FLUSH, 1)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        vty = ir.VectorType(i64, VW)
        bty = ir.VectorType(ir.IntType(8), VW * 8)
        a_arr = context.make_array(signature.args[0])(context, builder, args[0])
        w_arr = context.make_array(signature.args[1])(context, builder, args[1])
        n = context.cast(builder, args[2], signature.args[2], types.intp)
        w = [builder.load(builder.bitcast(builder.gep(w_arr.data, [ir.Constant(i64, v * VW)]),
                                          vty.as_pointer()), align=8) for v in range(NV)]
        acc = [[cgutils.alloca_once_value(builder, ir.Constant(vty, [0] * VW))
                for _ in range(NV)] for _ in range(MR)]
        byte_mode = FLUSH > 0
        if byte_mode:
            bacc = [[cgutils.alloca_once_value(builder, ir.Constant(bty, [0] * (VW * 8)))
                     for _ in range(NV)] for _ in range(MR)]
        mask = ir.Constant(i64, A_WORDS - 1)
        with cgutils.for_range(builder, n) as outer:
            base = builder.mul(outer.index, ir.Constant(i64, steps))
            if byte_mode:
                for r in range(MR):
                    for v in range(NV):
                        builder.store(ir.Constant(bty, [0] * (VW * 8)), bacc[r][v])
            with cgutils.for_range(builder, ir.Constant(i64, steps)) as inner:
                k = builder.add(base, inner.index)
                for r in range(MR):
                    idx = builder.and_(builder.add(k, ir.Constant(i64, 7 * r)), mask)
                    ab = broadcast(builder, builder.load(builder.gep(a_arr.data, [idx])), VW)
                    for v in range(NV):
                        x = builder.xor(ab, w[v])
                        if byte_mode:
                            c = ctpop(builder, builder.bitcast(x, bty))
                            builder.store(builder.add(builder.load(bacc[r][v]), c), bacc[r][v])
                        else:
                            builder.store(builder.add(builder.load(acc[r][v]), ctpop(builder, x)),
                                          acc[r][v])
            if byte_mode:
                for r in range(MR):
                    for v in range(NV):
                        s = byte_lane_sums(builder, builder.bitcast(builder.load(bacc[r][v]),
                                                                    vty), VW)
                        builder.store(builder.add(builder.load(acc[r][v]), s), acc[r][v])
        total = ir.Constant(i64, 0)
        for r in range(MR):
            for v in range(NV):
                vec = builder.load(acc[r][v])
                for lane in range(VW):
                    total = builder.add(total, builder.extract_element(
                        vec, ir.Constant(ir.IntType(32), lane)))
        return total

    return sig, codegen


@njit(cache=CACHE)
def fma_checksum(n_steps):
    """One thread's loop of `fma_peak` and its return value (tests compare it with numpy)."""
    return _fma_steps(n_steps)


@njit(cache=CACHE)
def xnor_checksum(a, w, n_blocks):
    """One thread's loop of `xnor_peak` and its return value (tests compare it with numpy)."""
    return _xnor_steps(a, w, n_blocks)


@njit(cache=CACHE, parallel=True)
def _fma_parallel(n_steps, out, n_chunks):
    for c in prange(n_chunks):
        out[c] = _fma_steps(n_steps)


@njit(cache=CACHE, parallel=True)
def _xnor_parallel(a, w, n_blocks, out, n_chunks):
    for c in prange(n_chunks):
        out[c] = _xnor_steps(a, w, n_blocks)


FMA_OPS_PER_STEP = 2 * FMA_LANES * FMA_CHAINS
XNOR_STEPS_PER_BLOCK = max(FLUSH, 1)
XNOR_OPS_PER_STEP = 2 * 64 * MR * NV * VW  # MR·NV vectors of VW 64-bit words


def _run(kernel, args: tuple, ops_per_call: float, threads: int, repeats: int) -> dict:
    """Median rate of `repeats` timed launches of `kernel` on `threads` threads (after one
    warm-up); each launch runs one chunk per thread of `ops_per_call` operations."""
    out = np.zeros(8 * threads, dtype=np.float64 if kernel is _fma_parallel else np.int64)

    def launch():
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            kernel(*args, out, threads)
        finally:
            numba.set_num_threads(previous)

    launch()  # compile, wake the threads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        launch()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"ops_per_second": ops_per_call * threads / med, "seconds": med,
            "min_seconds": float(min(times)), "repeats": repeats, "threads": threads,
            "checksum": float(out[:threads].sum())}


def fma_peak(threads: int, seconds: float = 0.01, repeats: int = 9) -> dict:
    """float32 FMA peak of this machine on `threads` threads (flop/s, as 2 per FMA lane)."""
    steps = max(1000, int(seconds * 4e9 / FMA_CHAINS))  # ≈ `seconds` at ~4 GHz, 1 FMA/cycle
    r = _run(_fma_parallel, (steps,), steps * FMA_OPS_PER_STEP, threads, repeats)
    return {**r, "lanes": FMA_LANES, "chains": FMA_CHAINS}


def xnor_peak(threads: int, seconds: float = 0.01, repeats: int = 9) -> dict:
    """The XNOR tile's arithmetic peak on `threads` threads (binary op/s, 2 per bit)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=A_WORDS, dtype=np.int64).view(np.uint64)
    w = rng.integers(0, 2**63, size=NV * VW, dtype=np.int64).view(np.uint64)
    blocks = max(10, int(seconds * 4e9 / (XNOR_STEPS_PER_BLOCK * MR * NV * 3)))
    r = _run(_xnor_parallel, (a, w, blocks),
             blocks * XNOR_STEPS_PER_BLOCK * XNOR_OPS_PER_STEP, threads, repeats)
    return {**r, "tile": {"rows": MR, "vectors": NV, "lanes": VW, "flush": FLUSH}}
