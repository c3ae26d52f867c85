"""xnor_gemm and the fused binary dense layer against the naive references; bad inputs; both
kernel variants; the machine code of the AVX-512 variant."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hybnn_kernels import parallel, tile
from hybnn_kernels.bits import n_words, pack_bits
from hybnn_kernels.dense import binary_dense, make_dense
from hybnn_kernels.xnor import prepack, xnor_gemm
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.naive import binary_dense_ref, xnor_gemm_ref

BIT_LENGTHS = st.sampled_from([1, 63, 64, 65, 200, 1000]) | st.integers(1, 400)


def random_words(rng, rows, n_bits):
    return pack_bits(rng.integers(0, 2, size=(rows, n_bits)))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 13), n=st.integers(1, 40), n_bits=BIT_LENGTHS,
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_xnor_gemm_matches_reference(m, n, n_bits, threads, seed):
    rng = np.random.default_rng(seed)
    a, w = random_words(rng, m, n_bits), random_words(rng, n, n_bits)
    expected = xnor_gemm_ref(a, w, n_bits)
    got = xnor_gemm(a, w, n_bits, threads=threads)
    assert got.dtype == np.int32 and got.shape == (m, n)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(xnor_gemm(a, prepack(w, n_bits), n_bits), expected)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 13), n=st.integers(1, 150), n_bits=BIT_LENGTHS,
       bp=st.integers(1, 4), chunks=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**32 - 1))
def test_blocks_of_panels_cover_every_tile_once(m, n, n_bits, bp, chunks, seed):
    """The compiled kernel with blocks of bp panels (the order large weight matrices run in), on
    one thread or split into chunks of tiles, against the reference: every output written, right."""
    from hybnn_kernels import xnor

    rng = np.random.default_rng(seed)
    a, w = random_words(rng, m, n_bits), random_words(rng, n, n_bits)
    pw = prepack(w, n_bits)
    out = np.full((m, n), -(2**31), np.int32)
    old = xnor.BLOCK_BYTES
    try:
        xnor.BLOCK_BYTES = bp * pw.panels.shape[1] * tile.NR * 8
        assert xnor.block_panels(pw.panels) == bp
        assert xnor._run(a, pw.panels, n, n_bits, out, chunks) == 0
    finally:
        xnor.BLOCK_BYTES = old
    np.testing.assert_array_equal(out, xnor_gemm_ref(a, w, n_bits))


def test_parallel_path_matches_serial_on_a_large_problem():
    rng = np.random.default_rng(0)
    a, w = random_words(rng, 301, 1000), random_words(rng, 77, 1000)
    assert parallel.threads_for(2.0 * 301 * 77 * 1000, 2) == 2
    expected = xnor_gemm_ref(a[:7], w, 1000)
    par = xnor_gemm(a, w, 1000, threads=2)
    np.testing.assert_array_equal(par[:7], expected)
    np.testing.assert_array_equal(par, xnor_gemm(a, w, 1000, threads=1))


@pytest.mark.parametrize("setting,threads", [(1, 2), (2, None), (2, 1), (1, None)])
def test_parallel_kernels_set_numba_threads_inside_and_restore_them(setting, threads):
    """Every parallel kernel (GEMM, fused layer, head) sets Numba's thread count itself
    (`parallel.enter`) and leaves it as it was (`parallel.leave`), whatever was asked."""
    import numba
    from hybnn_kernels.runtime import BNNRuntime

    from tests.naive import bnn_scores_ref

    rng = np.random.default_rng(setting)
    n_bits, hidden = 1000, 77
    a, w = random_words(rng, 301, n_bits), random_words(rng, hidden, n_bits)
    t1 = rng.integers(-n_bits, n_bits + 1, size=hidden)
    w2 = random_words(rng, 3, hidden)
    table = rng.standard_normal((3, hidden + 1)).astype(np.float32)
    codes = random_words(rng, 2000, n_bits)  # above the serial threshold for the head
    assert parallel.threads_for(2.0 * 2000 * hidden * n_bits, threads) == (threads or 0)
    previous = numba.get_num_threads()
    numba.set_num_threads(setting)
    try:
        got = xnor_gemm(a, w, n_bits, threads=threads)
        assert numba.get_num_threads() == setting
        bits = binary_dense(a, make_dense(w, t1, n_bits), threads=threads)
        assert numba.get_num_threads() == setting
        scores, labels = BNNRuntime.from_arrays(w, t1, w2, table, n_bits).run(codes, threads)
        assert numba.get_num_threads() == setting
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(got, xnor_gemm_ref(a, w, n_bits))
    np.testing.assert_array_equal(bits, binary_dense_ref(a, w, t1, n_bits))
    want_scores, want_labels = bnn_scores_ref(codes, w, t1, w2, table, n_bits)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(scores, want_scores)


def test_read_only_noncontiguous_inputs_and_out():
    rng = np.random.default_rng(1)
    a_big, w = random_words(rng, 10, 200), random_words(rng, 9, 200)
    a = a_big[::2]  # non-contiguous view
    a.flags.writeable = False
    w.flags.writeable = False
    out = np.full((5, 9), -7, dtype=np.int32)
    result = xnor_gemm(a, w, 200, out=out)
    assert result is out
    np.testing.assert_array_equal(out, xnor_gemm_ref(np.ascontiguousarray(a), w, 200))


def test_read_only_memory_map_goes_straight_to_the_kernel(tmp_path):
    rng = np.random.default_rng(4)
    a, w = random_words(rng, 50, 200), random_words(rng, 20, 200)
    np.save(tmp_path / "a.npy", a)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert not mm.flags.writeable and mm.flags.c_contiguous
    np.testing.assert_array_equal(xnor_gemm(mm, w, 200), xnor_gemm_ref(a, w, 200))
    layer = make_dense(w, np.zeros(20, np.int64), 200)
    np.testing.assert_array_equal(binary_dense(mm, layer), binary_dense(a, layer))


@pytest.mark.parametrize("a,w,n_bits,exc,msg", [
    (np.zeros((2, 4), np.int64), np.zeros((3, 4), np.uint64), 200, TypeError, "dtype uint64"),
    (np.zeros((2, 4), np.uint64), np.zeros((3, 4), np.float32), 200, TypeError, "dtype uint64"),
    (np.zeros((2, 4), np.uint64), np.zeros((3, 3), np.uint64), 200, ValueError, "3 words per row"),
    (np.zeros((2, 3), np.uint64), np.zeros((3, 4), np.uint64), 200, ValueError, "3 words per row"),
    (np.zeros(4, np.uint64), np.zeros((3, 4), np.uint64), 200, ValueError, "2-D"),
    (np.zeros((2, 4), np.uint64), np.zeros((3, 4), np.uint64), 0, ValueError, "n_bits must be"),
    (np.zeros((2, 4), np.uint64), np.zeros((3, 4), np.uint64), 200.0, TypeError, "integer"),
    ([[0, 0, 0, 0]], np.zeros((3, 4), np.uint64), 200, TypeError, "numpy array"),
    (np.full((2, 4), 2**63, np.uint64), np.zeros((3, 4), np.uint64), 200, ValueError, "padding"),
])
def test_bad_inputs_raise_clear_errors(a, w, n_bits, exc, msg):
    with pytest.raises(exc, match=msg):
        xnor_gemm(a, w, n_bits)


def test_bad_out_and_threads():
    a, w = np.zeros((2, 1), np.uint64), np.zeros((3, 1), np.uint64)
    with pytest.raises(ValueError, match="int32 array of shape"):
        xnor_gemm(a, w, 64, out=np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        xnor_gemm(a, w, 64, out=np.zeros((3, 2), np.int32).T)
    with pytest.raises(ValueError, match="threads"):
        xnor_gemm(a, w, 64, threads=0)
    with pytest.raises(ValueError, match="packed for 64 bits"):
        xnor_gemm(a, prepack(w, 64), 63)


def test_prepacked_weights_with_out_take_the_compiled_checks_and_refuse_the_same():
    """With prepacked weights and `out`, the compiled kernel checks shapes and padding itself and
    its signature checks types; whatever it refuses gets the checked path's precise error."""
    rng = np.random.default_rng(5)
    a, w = random_words(rng, 5, 200), random_words(rng, 9, 200)
    pw, out = prepack(w, 200), np.full((5, 9), -7, np.int32)
    want = xnor_gemm_ref(a, w, 200)
    assert xnor_gemm(a, pw, 200, out=out) is out
    np.testing.assert_array_equal(out, want)
    read_only = a.copy()
    read_only.flags.writeable = False
    for x in (read_only, np.repeat(a, 2, axis=0)[::2]):  # read-only; non-contiguous (copied)
        out[:] = -7
        np.testing.assert_array_equal(xnor_gemm(x, pw, 200, out=out), want)
    padded = a.copy()
    padded[0, -1] |= np.uint64(1) << np.uint64(8)
    frozen_out = np.zeros((5, 9), np.int32)
    frozen_out.flags.writeable = False
    for args, kw, exc, msg in [
        ((padded, pw, 200), {}, ValueError, "padding bits past bit 200"),
        ((a, pw, 200), {"out": np.zeros((5, 8), np.int32)}, ValueError, "int32 array of shape"),
        ((a, pw, 200), {"out": np.zeros((5, 9), np.int64)}, ValueError, "int32 array of shape"),
        ((a, pw, 200), {"out": frozen_out}, ValueError, "C-contiguous and writeable"),
        ((a.view(np.int64), pw, 200), {}, TypeError, "dtype uint64"),
        ((a[0], pw, 200), {}, ValueError, "2-D"),
        ((a, pw, True), {}, TypeError, "integer"),
        ((a, pw, 256), {}, ValueError, "packed for 200 bits"),
        ((a, pw, 200), {"threads": 3}, ValueError, "threads"),
    ]:
        kw.setdefault("out", np.zeros((5, 9), np.int32))
        with pytest.raises(exc, match=msg):
            xnor_gemm(*args, **kw)
    big_a, big_w = random_words(rng, 301, 1000), random_words(rng, 77, 1000)
    big_want = xnor_gemm_ref(big_a, big_w, 1000)
    for threads in (None, 1, 2):  # the parallel kernel's fast path too
        got = xnor_gemm(big_a, prepack(big_w, 1000), 1000, out=np.empty((301, 77), np.int32),
                        threads=threads)
        np.testing.assert_array_equal(got, big_want)


def test_empty_problems():
    assert xnor_gemm(np.zeros((0, 1), np.uint64), np.zeros((3, 1), np.uint64), 5).shape == (0, 3)
    assert xnor_gemm(np.zeros((2, 1), np.uint64), np.zeros((0, 1), np.uint64), 5).shape == (2, 0)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 11), n=st.integers(1, 150), n_bits=BIT_LENGTHS,
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_binary_dense_matches_reference(m, n, n_bits, threads, seed):
    rng = np.random.default_rng(seed)
    a, w = random_words(rng, m, n_bits), random_words(rng, n, n_bits)
    # thresholds over the whole range, including unreachable ones (always on / always off)
    t = rng.integers(-n_bits - 3, n_bits + 4, size=n)
    got = binary_dense(a, make_dense(w, t, n_bits), threads=threads)
    assert got.shape == (m, n_words(n)) and got.dtype == np.uint64
    np.testing.assert_array_equal(got, binary_dense_ref(a, w, t, n_bits))


def test_binary_dense_parallel_matches_serial():
    rng = np.random.default_rng(2)
    a, w = random_words(rng, 2000, 200), random_words(rng, 128, 200)
    layer = make_dense(w, rng.integers(-30, 30, size=128), 200)
    np.testing.assert_array_equal(binary_dense(a, layer, threads=2),
                                  binary_dense(a, layer, threads=1))
    np.testing.assert_array_equal(binary_dense(a[:5], layer),
                                  binary_dense_ref(a[:5], w, layer.thresholds, 200))


def test_binary_dense_bad_inputs():
    w = np.zeros((3, 1), np.uint64)
    with pytest.raises(ValueError, match="thresholds must have shape"):
        make_dense(w, np.zeros(2, np.int64), 64)
    with pytest.raises(TypeError, match="integers"):
        make_dense(w, np.zeros(3, np.float32), 64)
    with pytest.raises(TypeError, match="BinaryDense"):
        binary_dense(np.zeros((1, 1), np.uint64), w)
    with pytest.raises(ValueError, match="words per row"):
        binary_dense(np.zeros((1, 2), np.uint64), make_dense(w, np.zeros(3, np.int64), 64))


OTHER_VARIANT_CHECK = """
import numpy as np
from hybnn_kernels import xnor
from hybnn_kernels.bits import pack_bits
from hybnn_kernels.dense import binary_dense, make_dense
from hybnn_kernels import tile
assert tile.VARIANT == "{variant}", tile.VARIANT
rng = np.random.default_rng(3)
for m, n, k in [(1, 1, 1), (5, 33, 65), (9, 70, 200), (6, 40, 1000), (300, 130, 1000)]:
    ba, bw = rng.integers(0, 2, size=(m, k)), rng.integers(0, 2, size=(n, k))
    sa, sw = ba * 2 - 1, bw * 2 - 1
    dot = sa @ sw.T
    assert np.array_equal(xnor.xnor_gemm(pack_bits(ba), pack_bits(bw), k), dot)
    t = rng.integers(-k, k + 1, size=n)
    got = binary_dense(pack_bits(ba), make_dense(pack_bits(bw), t, k))
    assert np.array_equal(got, pack_bits((dot >= t).astype(np.uint8)))
print("ok")
"""


@pytest.mark.parametrize("variant", [v for v in ("qword", "byte") if v != tile.VARIANT])
def test_the_other_kernel_variant_is_correct_on_this_cpu(variant):
    """The rest of the suite tests the variant this CPU picks; this one forces the other."""
    env = dict(os.environ, HYBNN_KERNEL_VARIANT=variant)
    r = subprocess.run([sys.executable, "-c", OTHER_VARIANT_CHECK.format(variant=variant)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


ASM_CHECK = """
import json
import numba
import numpy as np
from hybnn_kernels import xnor
a = np.zeros((4, 4), np.uint64)
pw = xnor.prepack(np.zeros((32, 4), np.uint64), 256)
out = np.zeros((4, 32), np.int32)
sig = (numba.typeof(a), numba.typeof(pw.panels), numba.int64, numba.int64, numba.typeof(out),
       numba.int64)
xnor._xnor_gemm_serial.compile(sig)
from hybnn_kernels import tile
print(json.dumps({"variant": tile.VARIANT, "mr": tile.MR, "nv": tile.NV,
                  "asm": list(xnor._xnor_gemm_serial.inspect_asm().values())[0]}))
"""


def innermost_loops(asm: str) -> list[list[str]]:
    """The bodies of the innermost loops of AT&T assembly: the instructions between a label and a
    later conditional jump back to it, with no other label in between."""
    lines = [ln.split("#")[0].strip() for ln in asm.splitlines()]
    labels = {ln[:-1]: i for i, ln in enumerate(lines) if re.fullmatch(r"\.LBB\w+:", ln)}
    loops = []
    for j, ln in enumerate(lines):
        op, target = (ln.split(None, 1) + ["", ""])[:2]
        if op.startswith("j") and op != "jmp" and labels.get(target, j) < j:
            body = lines[labels[target] + 1 : j]
            if not any(re.fullmatch(r"\.LBB\w+:", b) for b in body):
                loops.append([b for b in body if b and not b.startswith(".")])
    return loops


def operands(instr: str) -> list[str]:
    """AT&T operands, source first, destination last (commas inside memory operands kept)."""
    args = (instr.split(None, 1) + [""])[1]
    return [o.strip() for o in re.split(r",\s*(?![^()]*\))", args)] if args else []


def tile_shape(body: list[str]) -> dict:
    """What one trip of a popcount loop does: counts of the vector ops, the accumulators, and
    whether it touches the stack or stores to memory."""
    ops = [b.split()[0] for b in body]
    vec = [b for b in body if b.split()[0] in ("vpxorq", "vpopcntq", "vpaddq")]
    # accumulators: registers that a vpaddq adds into (destination = a source) while they still
    # hold the previous trip's value (not written yet in this trip), i.e. carried round the loop
    accumulators, written = set(), set()
    for b in body:
        ops_b = operands(b)
        if b.startswith("vpaddq") and ops_b[-1] in ops_b[:-1] and ops_b[-1] not in written:
            accumulators.add(ops_b[-1])
        if ops_b:
            written.add(ops_b[-1])
    return {
        "vpxorq": ops.count("vpxorq"), "vpopcntq": ops.count("vpopcntq"),
        "vpaddq": ops.count("vpaddq"), "broadcasts": ops.count("vpbroadcastq"),
        "all_zmm": all(o.startswith("%zmm") or "(" in o for b in vec for o in operands(b)),
        "accumulators": len(accumulators),
        "stack": any("%rsp" in b for b in body),
        "stores": any("(" in operands(b)[-1] for b in body if operands(b)),
    }


def test_avx512_variant_inner_loop_is_the_register_tile():
    """Compile (not run, so any x86-64 CPU will do) the kernel for Zen 4 (AVX-512 VPOPCNTDQ) and
    read its machine code: the tile loop does, per 64-bit word of k, MR broadcasts of `a` and
    MR·NV vpxorq / vpopcntq / vpaddq on zmm registers into MR·NV accumulators kept in registers,
    with no spill to the stack and no store; the single-row loop does the same for one row."""
    features = ("+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+fma,+bmi,+bmi2,+avx512f,"
                "+avx512cd,+avx512bw,+avx512dq,+avx512vl,+avx512vpopcntdq,+avx512bitalg")
    env = dict(os.environ, NUMBA_CPU_NAME="znver4", NUMBA_CPU_FEATURES=features,
               HYBNN_KERNEL_VARIANT="qword")
    r = subprocess.run([sys.executable, "-c", ASM_CHECK], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["variant"] == "qword"
    mr, nv = res["mr"], res["nv"]
    shapes = [tile_shape(body) for body in innermost_loops(res["asm"])
              if any(b.startswith("vpopcntq") for b in body)]

    tile = {"vpxorq": mr * nv, "vpopcntq": mr * nv, "vpaddq": mr * nv, "broadcasts": mr,
            "all_zmm": True, "accumulators": mr * nv, "stack": False, "stores": False}
    assert shapes, "no loop with vpopcntq in the kernel"
    assert tile in shapes, shapes
    for s in shapes:  # the tile, or the single-row loop (which LLVM may unroll along k)
        assert not s["stack"] and not s["stores"] and s["all_zmm"], s
        assert s["vpxorq"] == s["vpopcntq"] == s["vpaddq"] == nv * s["broadcasts"], s
        assert s["accumulators"] == (mr * nv if s == tile else nv), s


def test_loop_reader_sees_a_spill_and_a_missing_accumulator():
    """The asm reader itself: a spilled accumulator and a store are reported."""
    asm = """
.LBB0_3:
\tvpbroadcastq\t(%rsi,%r13,8), %zmm20
\tvpxorq\t(%r9), %zmm20, %zmm28
\tvpopcntq\t%zmm28, %zmm28
\tvpaddq\t64(%rsp), %zmm28, %zmm18
\tvmovdqu64\t%zmm18, 64(%rsp)
\tincq\t%r13
\tcmpq\t%r13, %r14
\tjne\t.LBB0_3
"""
    (body,) = innermost_loops(asm)
    shape = tile_shape(body)
    assert shape["stack"] and shape["stores"] and shape["accumulators"] == 0
    assert shape["vpxorq"] == shape["vpopcntq"] == shape["vpaddq"] == shape["broadcasts"] == 1


@pytest.mark.parametrize("shape,dtype", [((3, 5), np.int32), ((64, 64), np.float32),
                                         ((7,), np.int64), ((0, 4), np.int32)])
def test_outputs_made_for_the_kernels_start_on_a_cache_line(shape, dtype):
    from hybnn_kernels.checks import aligned_empty

    for _ in range(5):  # whatever offset the allocator hands out
        out = aligned_empty(shape, dtype)
        assert out.shape == shape and out.dtype == dtype and out.flags.c_contiguous
        assert out.flags.writeable and (out.size == 0 or out.ctypes.data % 64 == 0)


def test_the_gemm_output_panels_and_head_data_start_on_a_cache_line():
    rng = np.random.default_rng(0)
    a, w = pack_bits(rng.integers(0, 2, (9, 70))), pack_bits(rng.integers(0, 2, (33, 70)))
    got = xnor_gemm(a, w, 70)  # its own output: aligned, and the same dots
    assert got.ctypes.data % 64 == 0 and np.array_equal(got, xnor_gemm_ref(a, w, 70))
    pw = prepack(w, 70)  # the weight panels the tile loads as whole vectors: aligned too
    assert pw.panels.ctypes.data % 64 == 0 and pw.panels.flags.c_contiguous
    assert np.array_equal(xnor_gemm(a, pw, 70), xnor_gemm_ref(a, w, 70))
    from hybnn_kernels.runtime import BNNRuntime

    for _ in range(5):  # the head's constant data (its panels follow a 64-byte header)
        w2 = pack_bits(rng.integers(0, 2, (9, 33)))
        rt = BNNRuntime.from_arrays(w, np.zeros(33, np.int64), w2, np.zeros((9, 34), np.float32),
                                    70)
        assert rt._blob.ctypes.data % 64 == 0
