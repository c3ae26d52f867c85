"""The GEMM cases of `hybnn bench`: square M = N = K (`bench_gemm`) and the hidden layer 200 → 128
alone (`bench_hidden`), the XNOR kernel against numpy and torch float32 matmul and against int8
matmul (`int8_matmul`) of the same ±1 values, every dot product checked equal.

The float inputs are the ±1 values of the very bits the kernel reads (the int8 inputs the same
values as int8), so dot products are small integers, exact in float32 and int32, and must be
equal exactly.
"""

from __future__ import annotations

from hybnn_kernels.layout import CODE_BITS

from hybnn_cli.bench.speedups import headline
from hybnn_cli.bench.timing import budget, compare, equal, require


def random_bits(rng, rows: int, n_bits: int):
    """Random bits (rows, n_bits) uint8, their packed words, and their ±1 float32 values (what
    the float contenders get: the same numbers the kernel reads)."""
    import numpy as np
    from hybnn_kernels.bits import pack_bits

    bits = rng.integers(0, 2, size=(rows, n_bits), dtype=np.uint8)
    signs = bits.astype(np.float32)
    signs *= 2
    signs -= 1
    return bits, pack_bits(bits), signs


def float_matmuls(x, wt) -> tuple[dict, dict]:
    """numpy and torch float32 x (M, K) @ wt (K, N), each into its own preallocated output:
    (contenders, outputs as numpy arrays). Call the torch one inside `torch.inference_mode`."""
    import numpy as np
    import torch
    from hybnn_kernels.checks import aligned_empty

    m, n = x.shape[0], wt.shape[1]
    outs = {"numpy_f32": aligned_empty((m, n), np.float32),
            "torch_f32": aligned_empty((m, n), np.float32)}
    tx, tw, to = torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(outs["torch_f32"])
    of = outs["numpy_f32"]
    return ({"numpy_f32": lambda: np.matmul(x, wt, out=of),
             "torch_f32": lambda: torch.matmul(tx, tw, out=to)}, outs)


def int8_matmuls(a8, w8, threads: int) -> tuple[dict, dict, dict]:
    """The int8 contenders (`int8_matmul`) of a8 (M, K) @ w8ᵀ (w8 (N, K)), ±1 int8, each into
    its own preallocated int32 output: (contenders, outputs, info per contender: how it was
    called, torch's padding). Call inside `torch.inference_mode`."""
    from hybnn_cli.bench.int8_matmul import ort_int8_matmul, torch_int8_matmul

    fns, outs, info = {}, {}, {}
    for name, make in (("torch_int8", lambda: torch_int8_matmul(a8, w8)),
                       ("ort_int8", lambda: ort_int8_matmul(a8, w8, threads))):
        fns[name], outs[name], info[name] = make()
    return fns, outs, info


def bench_gemm(size: int, threads: int, quick: bool) -> dict:
    """Square M = N = K: XNOR on K-bit rows against float32 matmul and int8 matmul of their ±1
    values. Check: all give the same integer dot products."""
    import numpy as np
    import torch
    from hybnn_kernels.checks import aligned_empty
    from hybnn_kernels.xnor import prepack, xnor_gemm

    rng = np.random.default_rng(size)
    m = n = k = size
    name = f"gemm {size}"
    ops = 2.0 * m * n * k
    _, a, xa = random_bits(rng, m, k)
    _, w, xw = random_bits(rng, n, k)
    pw = prepack(w, k)
    out = aligned_empty((m, n), np.int32)  # every contender's output starts on a cache line
    with torch.inference_mode():
        floats, fouts = float_matmuls(xa, np.ascontiguousarray(xw.T))
        int8s, iouts, iinfo = int8_matmuls(xa.astype(np.int8), xw.astype(np.int8), threads)
        del xw

        def check():
            for f, o in {**fouts, **iouts}.items():
                require(equal(out, o), name, f"XNOR dot products differ from {f} on the same ±1 "
                        f"values at {int(np.count_nonzero(out != o))} of {out.size} entries")

        res = {"name": name, "m": m, "n": n, "k": k, "ops": ops,
               **compare({"xnor": lambda: xnor_gemm(a, pw, k, out=out, threads=threads),
                          **floats, **int8s}, ops, *budget(ops, quick), check=check,
                         peaks_threads=threads),
               "weight_bytes": {"binary": pw.nbytes, "int8": n * k, "float32": 4 * n * k},
               "check": {"passed": True, "compared": "XNOR int32 dot products = numpy and torch "
                         "float32 matmul and torch and ONNX Runtime int8 matmul of the same ±1 "
                         "values, every entry, exactly", "values": out.size}}
    for f, i in iinfo.items():
        res[f].update(i)
    headline(res)
    res["weight_bytes"]["ratio"] = 4 * n * k / pw.nbytes
    return res


def bench_hidden(batch: int, threads: int, quick: bool) -> dict:
    """The hidden layer alone, 200 → 128 at `batch`: fused XNOR + threshold + pack against float32
    and int8 matmul (the dense side does the matmul only, no batch norm or sign). Check: the
    numpy, torch and int8 dots are equal, and the kernel's bits are (those dots >= the
    thresholds), packed."""
    import numpy as np
    import torch
    from hybnn_kernels.bits import pack_bits
    from hybnn_kernels.dense import binary_dense, make_dense

    m, n, k = batch, 128, CODE_BITS
    name = f"hidden {k}-128 b={batch}"
    rng = np.random.default_rng(7)
    _, codes, x = random_bits(rng, m, k)
    _, w, xw = random_bits(rng, n, k)
    t = rng.integers(-20, 21, size=n)
    layer = make_dense(w, t, k)
    out = np.empty((m, 2), np.uint64)
    ops = 2.0 * m * n * k
    with torch.inference_mode():
        floats, fouts = float_matmuls(x, np.ascontiguousarray(xw.T))
        int8s, iouts, iinfo = int8_matmuls(x.astype(np.int8), xw.astype(np.int8), threads)

        def check():
            for f, o in {"torch_f32": fouts["torch_f32"], **iouts}.items():
                require(equal(fouts["numpy_f32"], o), name,
                        f"numpy float32 and {f} dot products differ")
            want = pack_bits((fouts["numpy_f32"] >= t).astype(np.uint8))
            require(equal(out, want), name, "the fused XNOR layer's bits differ from "
                    f"(float dot >= threshold) in {int(np.count_nonzero(out != want))} words")

        res = {"name": name, "m": m, "n": n, "k": k, "ops": ops,
               **compare({"xnor": lambda: binary_dense(codes, layer, out=out, threads=threads),
                          **floats, **int8s}, ops, *budget(ops, quick), check=check,
                         peaks_threads=threads),
               "weight_bytes": {"binary": layer.weights.nbytes, "int8": n * k,
                                "float32": 4 * n * k},
               "check": {"passed": True, "compared": "fused layer's packed bits = (float32 dot "
                         ">= threshold) packed; numpy dots = torch dots = torch and ONNX Runtime "
                         "int8 dots", "values": m * n}}
    for f, i in iinfo.items():
        res[f].update(i)
    headline(res)
    res["weight_bytes"]["ratio"] = 4 * n * k / layer.weights.nbytes
    return res
