"""The register tile of the XNOR-popcount kernels, written in LLVM IR, and the CPU variant it is
built for.

A tile of MR rows of `a` against one weight panel (NR weight rows, k-major, see `xnor.prepack`)
keeps MR·NV vector accumulators in registers: each word of `a` is broadcast to a vector, XORed with
the panel's vectors, popcounted and added (an outer product, no horizontal sums). It is written in
LLVM IR (`numba.extending.intrinsic`) with explicit vector types, because Numba disables LLVM's SLP
vectorizer and a plain loop gets vectorized along k instead. Two variants, picked from the CPU's
features at import:

- ``qword``: CPUs with AVX-512 VPOPCNTDQ. Vectors of 8 u64, `ctpop` on u64 lanes (`vpopcntq`),
  a 4 × 32 tile: 16 zmm accumulators.
- ``byte``: everything else (AVX2, SSE, ARM...). `ctpop` on u8 lanes (a nibble lookup table with
  `vpshufb` on AVX2, `vpopcntb` with AVX-512 BITALG), byte accumulators flushed into u64 lanes every
  31 steps (8·31 < 256). Vectors of 4 u64, a 3 × 8 tile: 16 ymm registers hold it without spills.

The environment variable ``HYBNN_KERNEL_VARIANT=qword|byte`` overrides the choice (for tests; both
are correct on every CPU, only the speed differs; an overridden variant is not cached on disk:
`CACHE` is what every kernel built on a tile passes to ``njit(cache=...)``).

The IR helpers `broadcast`, `ctpop` and `byte_lane_sums` also build `roofline`'s peak loop.

Exports: `tile_full` / `tile_row` (counts of MR rows / one row against a panel), `tile_full_dots` /
`tile_row_dots` (the same as int32 dot products stored into the output rows) and
`tile_full_threshold` / `tile_row_threshold` (the fused layer's compare-and-movemask epilogue).
"""

from __future__ import annotations

import os
import platform

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# --------------------------------------------------------------------------------------------------
# Variant selection


def cpu_features() -> set[str]:
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
    return "qword" if "avx512vpopcntdq" in cpu_features() else "byte"


VARIANT = _pick_variant()
# x86 AVX2 sums the bytes of each u64 lane in one instruction (vpsadbw)
PSADBW = "avx2" in cpu_features() and platform.machine().lower() in ("x86_64", "amd64")
# Compiled code bakes in the tile constants: an overridden variant must not share the disk cache.
CACHE = "HYBNN_KERNEL_VARIANT" not in os.environ
if VARIANT == "qword":
    VW, MR, NV, FLUSH = 8, 4, 4, 0  # lanes per vector, tile rows, vectors per panel row
else:
    VW, MR, NV, FLUSH = 4, 3, 2, 31
NR = VW * NV  # weight rows per panel

# --------------------------------------------------------------------------------------------------
# The register tile, in LLVM IR


def broadcast(builder, value, lanes):
    vty = ir.VectorType(value.type, lanes)
    zero = ir.Constant(ir.IntType(32), 0)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, zero)
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


def ctpop(builder, value):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(value.type, [value.type]),
        f"llvm.ctpop.v{value.type.count}i{value.type.element.width}")
    return builder.call(fn, [value])


def byte_lane_sums(builder, acc, lanes):
    """Sum the 8 bytes of every u64 lane of acc (each byte <= 248): one `vpsadbw` against zero
    on AVX2 (x86 only), else three shifts and adds in portable IR."""
    i64 = ir.IntType(64)
    vty = ir.VectorType(i64, lanes)
    if lanes == 4 and PSADBW:
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


def _even_halves(builder, lo, hi):
    """Two <n x i64> → one <2n x i32>: the low 32 bits of every lane of lo, then of hi (one
    two-source permute, `vpermt2d`, on AVX-512)."""
    n = lo.type.count
    i32 = ir.IntType(32)
    wide = ir.VectorType(i32, 2 * n)
    even = ir.Constant(ir.VectorType(i32, 2 * n), list(range(0, 4 * n, 2)))
    return builder.shuffle_vector(builder.bitcast(lo, wide), builder.bitcast(hi, wide), even)


def _concat(builder, vecs):
    """Vectors of one type (a power-of-two count of them) joined end to end."""
    while len(vecs) > 1:
        n = vecs[0].type.count
        idx = ir.Constant(ir.VectorType(ir.IntType(32), 2 * n), list(range(2 * n)))
        vecs = [builder.shuffle_vector(vecs[i], vecs[i + 1], idx) for i in range(0, len(vecs), 2)]
    return vecs[0]


def _make_tile(mr: int, nv: int, vw: int, flush: int, mode: str):
    """An intrinsic over the tile of rows a[row0 : row0 + mr] against weight panel p.

    Counts mode, tile(a, row0, panels, p, cnt): cnt[r*NR + j] = popcount(a[row0 + r] ^ panel row j).
    Dots mode, tile(a, row0, panels, p, n_bits, out): out[row0 + r, p*NR + j] = n_bits − 2·count,
    as int32 vectors stored straight into the rows of `out` (a full panel: p*NR + NR <= N).
    Threshold mode, tile(a, row0, panels, p, cthr, masks): bit j of masks[r] is set when that count
    is <= cthr[p*NR + j] (the fused layer's epilogue, vectorized: compare, then a movemask).
    `a` (M, kw), `panels` (P, kw, NR), `cnt`, `out`, `cthr` and `masks` are C-contiguous (callers
    check).
    """
    if nv % 2:  # the epilogue narrows the counts two vectors at a time (`_even_halves`)
        raise ValueError(f"a tile's vectors per panel row must be even, got {nv}")
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
            a_b = [broadcast(builder, builder.load(builder.gep(rows[r], [k])), vw)
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
                    s = builder.add(builder.load(targets[r][v]), ctpop(builder, x))
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

            def flush_into_acc():
                for r in range(mr):
                    for v in range(nv):
                        b = builder.bitcast(builder.load(bacc[r][v]), vty)
                        s = byte_lane_sums(builder, b, vw)
                        builder.store(builder.add(builder.load(acc[r][v]), s), acc[r][v])

            # rows of at most FLUSH words (200-bit codes: 4) in one block, without the outer loop
            # and the u64 accumulators it keeps live (they spill: 16 registers hold the rest)
            with builder.if_else(builder.icmp_unsigned("<=", kw, fl)) as (short, long):
                with short:
                    with cgutils.for_range(builder, kw) as inner:
                        step(inner.index, bacc, True)
                    flush_into_acc()
                with long:
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
                        flush_into_acc()
        return [[builder.load(acc[r][v]) for v in range(nv)] for r in range(mr)]

    def with_counts(epilogue):
        """The codegen of a tile: accumulate the counts of rows row0.. against panel p, then
        `epilogue(context, builder, signature, args, counts, row0_v, p_v)` puts them out."""
        def codegen(context, builder, signature, args):
            a_arr = context.make_array(signature.args[0])(context, builder, args[0])
            p_arr = context.make_array(signature.args[2])(context, builder, args[2])
            row0_v = context.cast(builder, args[1], signature.args[1], types.intp)
            p_v = context.cast(builder, args[3], signature.args[3], types.intp)
            counts = accumulate(context, builder, a_arr, p_arr, row0_v, p_v)
            epilogue(context, builder, signature, args, counts, row0_v, p_v)
            return context.get_dummy_value()

        return codegen

    i64, i32 = ir.IntType(64), ir.IntType(32)
    vty = ir.VectorType(i64, vw)

    def store_counts(context, builder, signature, args, counts, row0_v, p_v):
        c_arr = context.make_array(signature.args[4])(context, builder, args[4])
        for r in range(mr):
            for v in range(nv):
                dst = builder.gep(c_arr.data, [ir.Constant(i64, r * nr + v * vw)])
                builder.store(counts[r][v], builder.bitcast(dst, vty.as_pointer()), align=8)

    def store_dots(context, builder, signature, args, counts, row0_v, p_v):
        nb = context.cast(builder, args[4], signature.args[4], types.int64)
        o_arr = context.make_array(signature.args[5])(context, builder, args[5])
        oty = ir.VectorType(i32, nr)  # a row's NR dots, stored at once
        nbv = broadcast(builder, builder.trunc(nb, i32), nr)
        ld = builder.extract_value(o_arr.shape, 1)
        col = builder.mul(p_v, ir.Constant(i64, nr))
        for r in range(mr):
            # the low 32 bits of every u64 count (counts are < 2^32), concatenated in panel
            # order: one vector of NR int32 lanes
            cnt32 = _concat(builder, [_even_halves(builder, counts[r][v], counts[r][v + 1])
                                      for v in range(0, nv, 2)])
            dots = builder.sub(nbv, builder.shl(cnt32, ir.Constant(oty, [1] * nr)))
            row = builder.add(row0_v, ir.Constant(i64, r))
            dst = builder.gep(o_arr.data, [builder.add(builder.mul(row, ld), col)])
            builder.store(dots, builder.bitcast(dst, oty.as_pointer()), align=4)

    def store_masks(context, builder, signature, args, counts, row0_v, p_v):
        t_arr = context.make_array(signature.args[4])(context, builder, args[4])
        m_arr = context.make_array(signature.args[5])(context, builder, args[5])
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

    if mode == "counts":
        @intrinsic
        def tile(typingctx, a, row0, panels, p, cnt):
            return types.void(a, row0, panels, p, cnt), with_counts(store_counts)

        return tile

    epilogue = {"dots": store_dots, "threshold": store_masks}[mode]

    @intrinsic
    def tile_into(typingctx, a, row0, panels, p, x, y):  # dots: n_bits, out; threshold: cthr, masks
        return types.void(a, row0, panels, p, x, y), with_counts(epilogue)

    return tile_into


tile_full = _make_tile(MR, NV, VW, FLUSH, "counts")
tile_row = _make_tile(1, NV, VW, FLUSH, "counts")
tile_full_dots = _make_tile(MR, NV, VW, FLUSH, "dots")
tile_row_dots = _make_tile(1, NV, VW, FLUSH, "dots")
tile_full_threshold = _make_tile(MR, NV, VW, FLUSH, "threshold")
tile_row_threshold = _make_tile(1, NV, VW, FLUSH, "threshold")
