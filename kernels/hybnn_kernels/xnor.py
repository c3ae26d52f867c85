"""XNOR-popcount GEMM on packed bits: the ±1 dot products of every row of `a` with every row of `w`.

    dot[i, j] = n_bits − 2·popcount(a[i] XOR w[j])

Layout: `a` is (M, words) uint64 and `w` is (N, words) uint64, bits packed as in
`hybnn_kernels.bits` (padding bits zero). The fast path re-lays the weights once into *panels* of
NR rows, k-major (`prepack`), so that one k step reads NV contiguous vectors of weights. A register
tile of MR rows of `a` against one panel keeps MR·NV vector accumulators in registers: each word of
`a` is broadcast to a vector, XORed with the panel's vectors, popcounted and added (an outer
product, no horizontal sums).

The tile is written in LLVM IR (`numba.extending.intrinsic`) with explicit vector types, because
Numba disables LLVM's SLP vectorizer and a plain loop gets vectorized along k instead. Two variants,
picked from the CPU's features at import:

- ``qword``: CPUs with AVX-512 VPOPCNTDQ. Vectors of 8 u64, `ctpop` on u64 lanes (`vpopcntq`),
  a 4 × 32 tile: 16 zmm accumulators.
- ``byte``: everything else (AVX2, SSE, ARM...). `ctpop` on u8 lanes (a nibble lookup table with
  `vpshufb` on AVX2, `vpopcntb` with AVX-512 BITALG), byte accumulators flushed into u64 lanes every
  31 steps (8·31 < 256). Vectors of 4 u64, a 3 × 8 tile: 16 ymm registers hold it without spills.

The environment variable ``HYBNN_KERNEL_VARIANT=qword|byte`` overrides the choice (for tests; both
are correct on every CPU, only the speed differs; an overridden variant is not cached on disk).
Kernels of the detected variant are compiled with ``cache=True``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from hybnn_kernels.bits import WORD_BITS, n_words

# --------------------------------------------------------------------------------------------------
# Variant selection


def _cpu_features() -> set[str]:
    """The features Numba compiles for (NUMBA_CPU_FEATURES if set, else the host's)."""
    forced = numba.config.CPU_FEATURES
    if forced:
        return {f[1:] for f in forced.split(",") if f.startswith("+")}
    import llvmlite.binding as llb

    if numba.config.CPU_NAME and numba.config.CPU_NAME != "host":
        return set()  # a named CPU: its features are unknown here; pick by name below
    return {k for k, v in llb.get_host_cpu_features().items() if v}


def _pick_variant() -> str:
    forced = os.environ.get("HYBNN_KERNEL_VARIANT", "").strip().lower()
    if forced in ("qword", "byte"):
        return forced
    if forced:
        raise ValueError(f"HYBNN_KERNEL_VARIANT must be 'qword' or 'byte', got {forced!r}")
    name = (numba.config.CPU_NAME or "").lower()
    if name.startswith(("znver4", "znver5", "icelake", "sapphirerapids", "tigerlake")):
        return "qword"
    return "qword" if "avx512vpopcntdq" in _cpu_features() else "byte"


VARIANT = _pick_variant()
# x86 AVX2 sums the bytes of each u64 lane in one instruction (vpsadbw)
_PSADBW = "avx2" in _cpu_features() and platform.machine().lower() in ("x86_64", "amd64")
# Compiled code bakes in the tile constants: an overridden variant must not share the disk cache.
_CACHE = "HYBNN_KERNEL_VARIANT" not in os.environ
if VARIANT == "qword":
    VW, MR, NV, FLUSH = 8, 4, 4, 0  # lanes per vector, tile rows, vectors per panel row
else:
    VW, MR, NV, FLUSH = 4, 3, 2, 31
NR = VW * NV  # weight rows per panel

# Problems below this many binary operations (2·M·N·K) take the serial path: a parallel launch
# costs about a microsecond, the whole 200 → 128 layer for one sample less than that.
SERIAL_OPS = 2e7

# --------------------------------------------------------------------------------------------------
# The register tile, in LLVM IR


def _broadcast(builder, value, lanes):
    vty = ir.VectorType(value.type, lanes)
    zero = ir.Constant(ir.IntType(32), 0)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, zero)
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


def _ctpop(builder, value):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(value.type, [value.type]),
        f"llvm.ctpop.v{value.type.count}i{value.type.element.width}")
    return builder.call(fn, [value])


def _byte_lane_sums(builder, acc, lanes):
    """Sum the 8 bytes of every u64 lane of acc (each byte <= 248): one `vpsadbw` against zero
    on AVX2 (x86 only), else three shifts and adds in portable IR."""
    i64 = ir.IntType(64)
    vty = ir.VectorType(i64, lanes)
    if lanes == 4 and _PSADBW:
        bty = ir.VectorType(ir.IntType(8), 32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [bty, bty]),
                                            "llvm.x86.avx2.psad.bw")
        return builder.call(fn, [builder.bitcast(acc, bty), ir.Constant(bty, [0] * 32)])

    def splat(c):
        return ir.Constant(vty, [c] * lanes)

    m8 = splat(0x00FF00FF00FF00FF)
    x = builder.add(builder.and_(acc, m8), builder.and_(builder.lshr(acc, splat(8)), m8))
    x = builder.add(x, builder.lshr(x, splat(16)))
    x = builder.add(x, builder.lshr(x, splat(32)))
    return builder.and_(x, splat(0xFFFF))


def _make_tile(mr: int, nv: int, vw: int, flush: int, threshold: bool = False):
    """An intrinsic over the tile of rows a[row0 : row0 + mr] against weight panel p.

    Counts mode, tile(a, row0, panels, p, cnt): cnt[r*NR + j] = popcount(a[row0 + r] ^ panel row j).
    Threshold mode, tile(a, row0, panels, p, cthr, masks): bit j of masks[r] is set when that count
    is <= cthr[p*NR + j] (the fused layer's epilogue, vectorized: compare, then a movemask).
    `a` (M, kw), `panels` (P, kw, NR), `cnt`, `cthr` and `masks` are C-contiguous (callers check).
    """
    nr = nv * vw

    def accumulate(context, builder, a_arr, p_arr, row0_v, p_v):
        i64 = ir.IntType(64)
        vty = ir.VectorType(i64, vw)
        kw = builder.extract_value(a_arr.shape, 1)
        rows = [builder.gep(a_arr.data, [builder.mul(builder.add(row0_v, ir.Constant(i64, r)), kw)])
                for r in range(mr)]
        pbase = builder.gep(p_arr.data, [builder.mul(p_v, builder.mul(kw, ir.Constant(i64, nr)))])
        zero = ir.Constant(vty, [0] * vw)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(nv)] for _ in range(mr)]

        def step(k, targets, byte_mode):
            a_b = [_broadcast(builder, builder.load(builder.gep(rows[r], [k])), vw)
                   for r in range(mr)]
            wrow = builder.gep(pbase, [builder.mul(k, ir.Constant(i64, nr))])
            w = [builder.load(builder.bitcast(builder.gep(wrow, [ir.Constant(i64, v * vw)]),
                                              vty.as_pointer()), align=8)
                 for v in range(nv)]
            for r in range(mr):
                for v in range(nv):
                    x = builder.xor(a_b[r], w[v])
                    if byte_mode:
                        x = builder.bitcast(x, ir.VectorType(ir.IntType(8), vw * 8))
                    s = builder.add(builder.load(targets[r][v]), _ctpop(builder, x))
                    builder.store(s, targets[r][v])

        if flush == 0:
            with cgutils.for_range(builder, kw) as loop:
                step(loop.index, acc, False)
        else:
            bty = ir.VectorType(ir.IntType(8), vw * 8)
            bzero = ir.Constant(bty, [0] * (vw * 8))
            bacc = [[cgutils.alloca_once_value(builder, bzero) for _ in range(nv)]
                    for _ in range(mr)]
            fl = ir.Constant(i64, flush)
            n_blocks = builder.udiv(builder.add(kw, ir.Constant(i64, flush - 1)), fl)
            with cgutils.for_range(builder, n_blocks) as outer:
                k0 = builder.mul(outer.index, fl)
                rem = builder.sub(kw, k0)
                length = builder.select(builder.icmp_unsigned("<", rem, fl), rem, fl)
                for r in range(mr):
                    for v in range(nv):
                        builder.store(bzero, bacc[r][v])
                with cgutils.for_range(builder, length) as inner:
                    step(builder.add(k0, inner.index), bacc, True)
                for r in range(mr):
                    for v in range(nv):
                        b = builder.bitcast(builder.load(bacc[r][v]), vty)
                        s = _byte_lane_sums(builder, b, vw)
                        builder.store(builder.add(builder.load(acc[r][v]), s), acc[r][v])
        return [[builder.load(acc[r][v]) for v in range(nv)] for r in range(mr)]

    def prologue(context, builder, signature, args):
        a_arr = context.make_array(signature.args[0])(context, builder, args[0])
        p_arr = context.make_array(signature.args[2])(context, builder, args[2])
        row0_v = context.cast(builder, args[1], signature.args[1], types.intp)
        p_v = context.cast(builder, args[3], signature.args[3], types.intp)
        return a_arr, p_arr, row0_v, p_v

    if not threshold:
        @intrinsic
        def tile(typingctx, a, row0, panels, p, cnt):
            sig = types.void(a, row0, panels, p, cnt)

            def codegen(context, builder, signature, args):
                a_arr, p_arr, row0_v, p_v = prologue(context, builder, signature, args)
                c_arr = context.make_array(signature.args[4])(context, builder, args[4])
                counts = accumulate(context, builder, a_arr, p_arr, row0_v, p_v)
                vty = ir.VectorType(ir.IntType(64), vw)
                for r in range(mr):
                    for v in range(nv):
                        offset = ir.Constant(ir.IntType(64), r * nr + v * vw)
                        dst = builder.gep(c_arr.data, [offset])
                        builder.store(counts[r][v], builder.bitcast(dst, vty.as_pointer()), align=8)
                return context.get_dummy_value()

            return sig, codegen

        return tile

    @intrinsic
    def tile_threshold(typingctx, a, row0, panels, p, cthr, masks):
        sig = types.void(a, row0, panels, p, cthr, masks)

        def codegen(context, builder, signature, args):
            a_arr, p_arr, row0_v, p_v = prologue(context, builder, signature, args)
            t_arr = context.make_array(signature.args[4])(context, builder, args[4])
            m_arr = context.make_array(signature.args[5])(context, builder, args[5])
            counts = accumulate(context, builder, a_arr, p_arr, row0_v, p_v)
            i64 = ir.IntType(64)
            vty = ir.VectorType(i64, vw)
            tbase = builder.gep(t_arr.data, [builder.mul(p_v, ir.Constant(i64, nr))])
            thr = [builder.load(builder.bitcast(builder.gep(tbase, [ir.Constant(i64, v * vw)]),
                                                vty.as_pointer()), align=8) for v in range(nv)]
            for r in range(mr):
                word = ir.Constant(i64, 0)
                for v in range(nv):
                    bits = builder.bitcast(builder.icmp_signed("<=", counts[r][v], thr[v]),
                                           ir.IntType(vw))
                    part = builder.shl(builder.zext(bits, i64), ir.Constant(i64, v * vw))
                    word = builder.or_(word, part)
                builder.store(word, builder.gep(m_arr.data, [ir.Constant(i64, r)]))
            return context.get_dummy_value()

        return sig, codegen

    return tile_threshold


_tile_full = _make_tile(MR, NV, VW, FLUSH)
_tile_row = _make_tile(1, NV, VW, FLUSH)
_tile_full_threshold = _make_tile(MR, NV, VW, FLUSH, threshold=True)
_tile_row_threshold = _make_tile(1, NV, VW, FLUSH, threshold=True)

# --------------------------------------------------------------------------------------------------
# Drivers (compiled): tiles t in [t0, t1) in panel-major order, so a panel stays in L1.


@njit(cache=_CACHE, inline="always")
def _tile_range(a, panels, n, n_bits, out, t0, t1, cnt):
    m = a.shape[0]
    n_rt = m // MR
    rem = m - n_rt * MR
    per_panel = n_rt + rem  # full row tiles, then single remainder rows
    for t in range(t0, t1):
        p = t // per_panel
        rt = t - p * per_panel
        j0 = p * NR
        jn = min(NR, n - j0)
        if rt < n_rt:
            i0 = rt * MR
            _tile_full(a, i0, panels, p, cnt)
            for r in range(MR):
                for jj in range(jn):
                    out[i0 + r, j0 + jj] = n_bits - 2 * cnt[r * NR + jj]
        else:
            i = n_rt * MR + (rt - n_rt)
            _tile_row(a, i, panels, p, cnt)
            for jj in range(jn):
                out[i, j0 + jj] = n_bits - 2 * cnt[jj]


@njit(cache=_CACHE)
def _n_tiles(m, n_panels):
    n_rt = m // MR
    return n_panels * (n_rt + (m - n_rt * MR))


@njit(cache=_CACHE)
def _xnor_gemm_serial(a, panels, n, n_bits, out):
    cnt = np.empty(MR * NR, dtype=np.int64)
    _tile_range(a, panels, n, n_bits, out, 0, _n_tiles(a.shape[0], panels.shape[0]), cnt)


@njit(cache=_CACHE, parallel=True)
def _xnor_gemm_parallel(a, panels, n, n_bits, out, n_chunks):
    total = _n_tiles(a.shape[0], panels.shape[0])
    n_chunks = min(total, n_chunks)
    for c in prange(n_chunks):
        cnt = np.empty(MR * NR, dtype=np.int64)
        _tile_range(a, panels, n, n_bits, out, c * total // n_chunks, (c + 1) * total // n_chunks,
                    cnt)


# --------------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class PackedWeights:
    """Weights (N, words) re-laid into zero-padded panels (P, words, NR) for the tiled kernel."""

    panels: np.ndarray
    n: int
    n_bits: int

    @property
    def words(self) -> int:
        return self.panels.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the N real weight rows (the panel padding is excluded)."""
        return self.n * self.words * 8


def _check_words(name: str, x, n_bits: int) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint64 words, got {type(x).__name__}")
    if x.dtype != np.uint64:
        raise TypeError(f"{name} must have dtype uint64 (packed bits), got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, words), got shape {x.shape}")
    w = n_words(n_bits)
    if x.shape[1] != w:
        raise ValueError(f"{name} has {x.shape[1]} words per row, but {n_bits} bits need {w}")
    pad = w * WORD_BITS - n_bits
    if pad and x.shape[0] and _padding_set(x, WORD_BITS - pad):
        raise ValueError(f"{name} has nonzero padding bits past bit {n_bits}")
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


@njit(cache=True)
def _padding_set(x, used_bits):
    """Whether any row has a bit set at or past position used_bits of its last word."""
    last = x.shape[1] - 1
    acc = np.uint64(0)
    for i in range(x.shape[0]):
        acc |= x[i, last]
    return (acc >> np.uint64(used_bits)) != 0


def _check_n_bits(n_bits) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer):
        raise TypeError(f"n_bits must be an integer, got {type(n_bits).__name__}")
    if n_bits < 1:
        raise ValueError(f"n_bits must be >= 1, got {n_bits}")
    return int(n_bits)


def prepack(w: np.ndarray, n_bits: int) -> PackedWeights:
    """Re-lay weights (N, words) uint64 into panels for `xnor_gemm` (once per weight matrix)."""
    n_bits = _check_n_bits(n_bits)
    w = _check_words("w", w, n_bits)
    n, kw = w.shape
    n_panels = (n + NR - 1) // NR
    padded = np.zeros((n_panels * NR, kw), dtype=np.uint64)
    padded[:n] = w
    panels = np.ascontiguousarray(padded.reshape(n_panels, NR, kw).transpose(0, 2, 1))
    return PackedWeights(panels, n, n_bits)


def _check_threads(threads) -> int | None:
    if threads is None:
        return None
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
        raise ValueError(f"threads must be an integer in 1..{limit}, got {threads!r}")
    return threads


def _check_out(out, shape, dtype=np.int32) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != shape:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a {np.dtype(dtype)} array of shape {shape}, got {got}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    return out


def threads_for(ops: float, threads: int | None) -> int:
    """Threads a problem of `ops` binary operations runs on: 1 (serial) below SERIAL_OPS, else the
    requested count (default: Numba's current setting)."""
    if ops < SERIAL_OPS:
        return 1
    return numba.get_num_threads() if threads is None else threads


def call_parallel(fn, threads: int, *args) -> None:
    """Run a parallel kernel on `threads` threads, restoring Numba's setting afterwards."""
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        # dynamic schedule over the 8·threads chunks: a thread descheduled on a shared machine
        # does not hold the others up at the barrier
        with numba.parallel_chunksize(1):
            fn(*args, 8 * threads)
    finally:
        numba.set_num_threads(previous)


def xnor_gemm(a: np.ndarray, w, n_bits: int, out: np.ndarray | None = None,
              threads: int | None = None) -> np.ndarray:
    """±1 dot products of packed rows: int32 (M, N) with dot = n_bits − 2·popcount(a XOR w).

    a: (M, words) uint64; w: (N, words) uint64 or a `PackedWeights` from `prepack` (faster when the
    same weights serve many calls); words = ceil(n_bits / 64), padding bits zero. Read-only and
    non-contiguous inputs are accepted (non-contiguous ones are copied). `out`: an optional
    C-contiguous int32 (M, N) array to write into. `threads`: 1..NUMBA_NUM_THREADS (default: Numba's
    current setting); small problems run serially whatever the setting.
    """
    n_bits = _check_n_bits(n_bits)
    a = _check_words("a", a, n_bits)
    if isinstance(w, PackedWeights):
        if w.n_bits != n_bits:
            raise ValueError(f"weights were packed for {w.n_bits} bits, not {n_bits}")
        pw = w
    else:
        pw = prepack(w, n_bits)
    m, n = a.shape[0], pw.n
    out = _check_out(out, (m, n))
    threads = _check_threads(threads)
    if m == 0 or n == 0:
        return out
    t = threads_for(2.0 * m * n * n_bits, threads)
    if t > 1:
        call_parallel(_xnor_gemm_parallel, t, a, pw.panels, n, n_bits, out)
    else:
        _xnor_gemm_serial(a, pw.panels, n, n_bits, out)
    return out
