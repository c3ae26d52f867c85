"""The benchmark behind `hybnn bench`: XNOR-popcount kernels against numpy and torch float32 and
against int8 (torch._int_mm, ONNX Runtime's MatMulInteger) on the same work, in one process,
every answer checked.

Cases: the BNN head 200 → 128 → 2 (kernel runtime against the float32 head built from the same
network, `float_head`, compiled too at batch 1; against the same head in int8, `int8_matmul`; and
against the float hidden-layer matmul 200 → 128 alone), the fused hidden layer 200 → 128, and
square GEMMs. The headline ratio of a case, `speedup_vs_best_dense`, is against its fastest dense
contender of any precision (`fastest` names it); the float32 and int8 ratios stay beside it.

Method: every contender writes into a preallocated output; JIT compile and first-touch costs are
paid in a warm-up outside the timing; each time is the median of several repeats, taken in three
interleaved rounds of blocks (kernel, numpy, torch, kernel, ...) so that all contenders see the same
drift in the load of a shared machine, with a short pause between blocks (OpenBLAS worker threads
spin for a while after a call and slow whatever runs next); operations are counted as 2·M·N·K for
float, int8 and binary alike, so the ratio of rates is the speedup on equal shapes.

Checks: after the warm-up, before any time counts, and again after the timing, every contender's
output is compared with a reference from the same run (`_compare(check=...)`); a mismatch raises
`HybnnError` and the benchmark fails. The float inputs are the ±1 values of the very bits the
kernel reads (the int8 inputs the same values as int8), so dot products are small integers, exact
in float32 and int32, and must be equal exactly.
The head's labels must equal the float head's: the benchmark's BNN (`bench_bnn`) places every batch
norm's decision between two reachable dot values, so float rounding cannot turn a label (see there).

The float baseline must be the strongest one: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some
machines) pin OpenBLAS to an older kernel, and they are read when numpy loads. So `hybnn bench` runs
this module in a child process whose environment has both unset (`run_in_clean_env`), and the
result records which BLAS kernel actually ran (threadpoolctl).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from hybnn_kernels.layout import CODE_BITS

from hybnn_cli.errors import HybnnError

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BENCH_FORMAT = "hybnn-bench"
BENCH_VERSION = 3  # 3: int8 contenders, compiled float head at batch 1, speedup_vs_best_dense


def run_in_clean_env(quick: bool, threads: int, log=sys.stderr) -> dict:
    """Run the benchmark in a child process without the OpenBLAS overrides; return its result
    (the body of the result file, without the provenance header). The child's progress lines go
    to `log` (None: dropped); a failed check in the child raises its one-line message here."""
    cmd = [sys.executable, "-m", "hybnn_cli.bench.runner", "--threads", str(threads)]
    if quick:
        cmd.append("--quick")
    proc = subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def forward():  # progress lines (and a traceback, if the child crashes) as they come
        for line in proc.stderr:
            if log is not None:
                log.write(line)
                log.flush()

    relay = threading.Thread(target=forward, daemon=True)
    relay.start()
    try:
        out = proc.stdout.read()
        proc.wait()
    finally:  # Ctrl-C or SIGTERM here: the child must not go on alone
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    relay.join()
    try:
        result = json.loads(out)
    except ValueError:
        result = None
    if proc.returncode != 0:
        if isinstance(result, dict) and "error" in result:
            raise HybnnError(result["error"])
        raise HybnnError(f"the benchmark process failed (exit {proc.returncode})")
    return result


def clean_env() -> dict:
    """This environment without the OpenBLAS overrides (their values kept for the record)."""
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    env["HYBNN_BENCH_PARENT_ENV"] = json.dumps({k: os.environ.get(k) for k in OPENBLAS_VARS})
    return env


# ── measuring ────────────────────────────────────────────────────────────────────────────────
def _compare(fns: dict, ops: float, repeats: int, min_total: float = 0.0, rounds: int = 3,
             check=None, peaks_threads: int | None = None) -> dict:
    """Time each contender (name → zero-argument callable) in `rounds` interleaved rounds, so that
    all of them see the same drift in machine load; each round runs a block of calls of one
    contender, then pauses briefly (OpenBLAS threads keep spinning after a call). `check()` runs
    after the warm-up (before any time counts) and after the timing, and raises on a wrong answer.
    Returns name → {seconds (median), min_seconds, repeats, ops_per_second}; with
    `peaks_threads`, each round starts with the machine's peaks on that many threads
    (`measure_roofline`), and "roofline" holds them (`combine_rooflines`): the bound at the
    moments the contenders ran."""
    for fn in fns.values():  # warm-up: JIT compile, first touch of outputs, thread pools
        fn()
    if check is not None:
        check()
    per_round = max(1, -(-repeats // rounds))
    times = {name: [] for name in fns}
    measured = []
    for _ in range(rounds):
        if peaks_threads is not None:
            time.sleep(0.05)  # as before every block: the last float contender's threads spin
            measured.append(measure_roofline(peaks_threads))
        for name, fn in fns.items():
            time.sleep(0.05)
            block, total = [], 0.0
            while len(block) < per_round or total < min_total / rounds:
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                block.append(dt)
                total += dt  # not sum(block): reading the whole list evicted the contender's
                if len(block) >= 5000:  # data from L1 between two timed calls
                    break
            times[name] += block
    if check is not None:
        check()
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"seconds": med, "ops_per_second": ops / med, "min_seconds": min(ts),
                     "repeats": len(ts)}
    if measured:
        out["roofline"] = combine_rooflines(measured)
    return out


def _require(ok, case: str, what: str) -> None:
    """A check of the benchmark: raises the one-line HybnnError when `ok` is false."""
    if not ok:
        raise HybnnError(f"bench {case}: {what}; the timings of this run are not valid")


def _equal(a, b) -> bool:
    """Exactly equal values (float32 and integer arrays of integers compare as numbers)."""
    import numpy as np

    return a.shape == b.shape and bool(np.array_equal(a, b))


def _budget(ops: float, quick: bool) -> tuple[int, float]:
    """(repeats, minimum seconds per contender) for a case of `ops` operations."""
    if quick:
        return (300 if ops < 1e6 else 3), 0.0
    if ops < 1e6:
        return 2001, 0.5
    if ops <= 1e9:
        return 33, 0.5
    return (11 if ops <= 1e11 else 5), 0.0


def bench_setup(threads: int) -> dict:
    """What the result's machine record (`results.machine_record`) does not say: threads, the
    BLAS that numpy loaded, the OpenBLAS overrides, the kernel variant. Called after the cases
    ran (Numba's threading layer is known only then)."""
    import llvmlite.binding as llb
    import numba
    import torch
    from hybnn_kernels import tile
    from threadpoolctl import threadpool_info

    blas = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                   "threading_layer")}
            for d in threadpool_info() if d.get("user_api") == "blas"]
    return {
        "threads": threads, "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.threading_layer(), "torch_threads": torch.get_num_threads(),
        "llvm_cpu_name": llb.get_host_cpu_name(), "numpy_blas": blas,
        "openblas_env_in_parent": json.loads(os.environ.get("HYBNN_BENCH_PARENT_ENV", "{}")),
        "openblas_env_in_bench": {k: os.environ.get(k) for k in OPENBLAS_VARS},
        "kernel": {"variant": tile.VARIANT, "tile_rows": tile.MR, "panel_rows": tile.NR,
                   "vector_u64_lanes": tile.VW},
    }


def _random_bits(rng, rows: int, n_bits: int):
    """Random bits (rows, n_bits) uint8, their packed words, and their ±1 float32 values (what
    the float contenders get: the same numbers the kernel reads)."""
    import numpy as np
    from hybnn_kernels.bits import pack_bits

    bits = rng.integers(0, 2, size=(rows, n_bits), dtype=np.uint8)
    signs = bits.astype(np.float32)
    signs *= 2
    signs -= 1
    return bits, pack_bits(bits), signs


def _float_matmuls(x, wt) -> tuple[dict, dict]:
    """numpy and torch float32 x (M, K) @ wt (K, N), each into its own preallocated output:
    (contenders, outputs as numpy arrays). Call the torch one inside `torch.inference_mode`."""
    import numpy as np
    import torch

    m, n = x.shape[0], wt.shape[1]
    outs = {"numpy_f32": np.empty((m, n), np.float32), "torch_f32": np.empty((m, n), np.float32)}
    tx, tw, to = torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(outs["torch_f32"])
    of = outs["numpy_f32"]
    return ({"numpy_f32": lambda: np.matmul(x, wt, out=of),
             "torch_f32": lambda: torch.matmul(tx, tw, out=to)}, outs)


def _int8_matmuls(a8, w8, threads: int) -> tuple[dict, dict, dict]:
    """The int8 contenders (`int8_matmul`) of a8 (M, K) @ w8ᵀ (w8 (N, K)), ±1 int8, each into
    its own preallocated int32 output: (contenders, outputs, info per contender: how it was
    called, torch's padding). Call inside `torch.inference_mode`."""
    from hybnn_cli.bench.int8_matmul import ort_int8_matmul, torch_int8_matmul

    fns, outs, info = {}, {}, {}
    for name, make in (("torch_int8", lambda: torch_int8_matmul(a8, w8)),
                       ("ort_int8", lambda: ort_int8_matmul(a8, w8, threads))):
        fns[name], outs[name], info[name] = make()
    return fns, outs, info


FLOAT32 = ("numpy_f32", "torch_f32", "numba_f32")  # float32 contenders (numba_f32: batch 1 only)
INT8 = ("torch_int8", "ort_int8")


def _ratios(res: dict, floats=("numpy_f32", "torch_f32"), key: str = "best_float") -> None:
    """speedup_vs_<contender> for each of `floats` and speedup_vs_<key> over the best of them (from
    medians; from minima too), each the contender's time over the kernel's."""
    x = res["xnor"]
    for name in floats:
        res[f"speedup_vs_{name.replace('_f32', '')}"] = res[name]["seconds"] / x["seconds"]
    res[f"speedup_vs_{key}"] = min(res[f]["seconds"] for f in floats) / x["seconds"]
    res[f"speedup_vs_{key}_from_minima"] = (min(res[f]["min_seconds"] for f in floats)
                                           / x["min_seconds"])


def _headline(res: dict) -> None:
    """The ratios of a case: XNOR against each dense contender (speedup_vs_<name>), against the
    fastest float32 one (speedup_vs_best_float), the fastest int8 one (speedup_vs_best_int8) and
    the fastest of any precision (speedup_vs_best_dense, the headline); `fastest` names the
    contender behind each (by median)."""
    floats = tuple(n for n in FLOAT32 if n in res)
    int8 = tuple(n for n in INT8 if n in res)
    _ratios(res, floats)
    res["fastest"] = {"float32": min(floats, key=lambda n: res[n]["seconds"])}
    for key, group in (("best_int8", int8), ("best_dense", floats + int8)):
        if group:
            _ratios(res, group, key)
            res["fastest"][key.removeprefix("best_")] = min(group,
                                                            key=lambda n: res[n]["seconds"])


# ── the machine's own bounds ─────────────────────────────────────────────────────────────────
def measure_roofline(threads: int) -> dict:
    """The float32 FMA peak and the XNOR tile's arithmetic peak (`hybnn_kernels.roofline`) on
    `threads` threads, and their ratio: the most the XNOR kernel can gain over float32 here."""
    from hybnn_kernels import roofline

    fma, xnor = roofline.fma_peak(threads), roofline.xnor_peak(threads)
    return {"fma_f32": fma, "xnor": xnor,
            "ratio_bound": xnor["ops_per_second"] / fma["ops_per_second"]}


def combine_rooflines(measurements: list[dict]) -> dict:
    """Peaks measured at several moments: the higher of each is the bound (a loaded moment only
    lowers a measured peak), every measurement kept for the record. For a case, its own rounds'
    measurements (the moments it ran: a shared machine's speed drifts by tens of percent within
    minutes, and a peak caught outside a case could be far from the speed it ran at); for the
    run, all of them."""
    out = {k: max((m[k] for m in measurements), key=lambda r: r["ops_per_second"])
           for k in ("fma_f32", "xnor")}
    out["ratio_bound"] = out["xnor"]["ops_per_second"] / out["fma_f32"]["ops_per_second"]
    out["measured"] = measurements
    return out


def fractions_of_peak(case: dict, roof: dict) -> dict:
    """Each contender's rate over its own peak: the XNOR kernel over the XNOR peak, the float32
    contenders over the FMA peak (ops counted alike, 2·M·N·K)."""
    peaks = {"xnor": roof["xnor"]["ops_per_second"], "float": roof["fma_f32"]["ops_per_second"]}
    return {name: case[name]["ops_per_second"] / peaks["xnor" if name == "xnor" else "float"]
            for name in ("xnor", "numpy_f32", "torch_f32") if name in case}


# ── cases ────────────────────────────────────────────────────────────────────────────────────
def bench_gemm(size: int, threads: int, quick: bool) -> dict:
    """Square M = N = K: XNOR on K-bit rows against float32 matmul and int8 matmul of their ±1
    values. Check: all give the same integer dot products."""
    import numpy as np
    import torch
    from hybnn_kernels.xnor import prepack, xnor_gemm

    rng = np.random.default_rng(size)
    m = n = k = size
    name = f"gemm {size}"
    ops = 2.0 * m * n * k
    _, a, xa = _random_bits(rng, m, k)
    _, w, xw = _random_bits(rng, n, k)
    pw = prepack(w, k)
    out = np.empty((m, n), np.int32)
    with torch.inference_mode():
        floats, fouts = _float_matmuls(xa, np.ascontiguousarray(xw.T))
        int8s, iouts, iinfo = _int8_matmuls(xa.astype(np.int8), xw.astype(np.int8), threads)
        del xw

        def check():
            for f, o in {**fouts, **iouts}.items():
                _require(_equal(out, o), name, f"XNOR dot products differ from {f} on the same ±1 "
                         f"values at {int(np.count_nonzero(out != o))} of {out.size} entries")

        res = {"name": name, "m": m, "n": n, "k": k, "ops": ops,
               **_compare({"xnor": lambda: xnor_gemm(a, pw, k, out=out, threads=threads),
                           **floats, **int8s}, ops, *_budget(ops, quick), check=check,
                          peaks_threads=threads),
               "weight_bytes": {"binary": pw.nbytes, "int8": n * k, "float32": 4 * n * k},
               "check": {"passed": True, "compared": "XNOR int32 dot products = numpy and torch "
                         "float32 matmul and torch and ONNX Runtime int8 matmul of the same ±1 "
                         "values, every entry, exactly", "values": out.size}}
    for f, i in iinfo.items():
        res[f].update(i)
    _headline(res)
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
    _, codes, x = _random_bits(rng, m, k)
    _, w, xw = _random_bits(rng, n, k)
    t = rng.integers(-20, 21, size=n)
    layer = make_dense(w, t, k)
    out = np.empty((m, 2), np.uint64)
    ops = 2.0 * m * n * k
    with torch.inference_mode():
        floats, fouts = _float_matmuls(x, np.ascontiguousarray(xw.T))
        int8s, iouts, iinfo = _int8_matmuls(x.astype(np.int8), xw.astype(np.int8), threads)

        def check():
            for f, o in {"torch_f32": fouts["torch_f32"], **iouts}.items():
                _require(_equal(fouts["numpy_f32"], o), name,
                         f"numpy float32 and {f} dot products differ")
            want = pack_bits((fouts["numpy_f32"] >= t).astype(np.uint8))
            _require(_equal(out, want), name, "the fused XNOR layer's bits differ from "
                     f"(float dot >= threshold) in {int(np.count_nonzero(out != want))} words")

        res = {"name": name, "m": m, "n": n, "k": k, "ops": ops,
               **_compare({"xnor": lambda: binary_dense(codes, layer, out=out, threads=threads),
                           **floats, **int8s}, ops, *_budget(ops, quick), check=check,
                          peaks_threads=threads),
               "weight_bytes": {"binary": layer.weights.nbytes, "int8": n * k,
                                "float32": 4 * n * k},
               "check": {"passed": True, "compared": "fused layer's packed bits = (float32 dot "
                         ">= threshold) packed; numpy dots = torch dots = torch and ONNX Runtime "
                         "int8 dots", "values": m * n}}
    for f, i in iinfo.items():
        res[f].update(i)
    _headline(res)
    res["weight_bytes"]["ratio"] = 4 * n * k / layer.weights.nbytes
    return res


def bench_bnn(shape, seed: int = 0):
    """A TaskBNN (eval mode) with random weights and trained-looking batch norms whose decisions
    never sit on a reachable value, so that a float head and the kernel (integer thresholds, score
    table) must agree on every label, whatever the rounding of either.

    Hidden layer: a dot of n_bits ±1 terms has the parity of n_bits; each neuron's batch norm is
    set (mean = c + β/s, s = γ/√(var + ε)) so that BN(d) = (d − c)·s with c of the other parity: the
    sign changes halfway between two reachable dots, |BN(d)| >= |s|. Output layer: all classes
    share one scale s and have boundaries c_i = r + 2i/n_classes, so two scores differ by
    |(d_i − d_j) − 2(i − j)/n_classes|·|s| >= 2|s|/n_classes (dots of one layer share a parity):
    no near-tie, the argmax is the same in any rounding.
    """
    import torch

    from hybnn_cli.models.bnn import TaskBNN

    g = torch.Generator().manual_seed(seed)
    model = TaskBNN(shape).eval()

    def scale(c):  # |γ| in [0.25, 1.75], random sign; var in [1, 51]
        sign = torch.where(torch.rand(c, generator=g) < 0.5, -1.0, 1.0)
        gamma = sign * (0.25 + 1.5 * torch.rand(c, generator=g))
        return gamma, torch.rand(c, generator=g) * 50 + 1

    with torch.no_grad():
        model.fc1.weight.copy_(torch.randn(shape.hidden, shape.n_bits, generator=g))
        model.fc2.weight.copy_(torch.randn(shape.n_classes, shape.hidden, generator=g))
        h = shape.hidden
        c1 = 2 * torch.randint(-10, 11, (h,), generator=g) + (shape.n_bits + 1) % 2
        gamma2, var2 = scale(1)
        r = 2 * torch.randint(-3, 4, (1,), generator=g) + shape.hidden % 2
        c2 = r + 2.0 * torch.arange(shape.n_classes) / shape.n_classes
        for bn, c, (gamma, var) in ((model.bn1, c1, scale(h)),
                                    (model.bn2, c2, (gamma2.expand(shape.n_classes),
                                                     var2.expand(shape.n_classes)))):
            beta = torch.randn(bn.num_features, generator=g)
            bn.weight.copy_(gamma)
            bn.running_var.copy_(var)
            bn.bias.copy_(beta)
            bn.running_mean.copy_(c + beta / (gamma / torch.sqrt(var + bn.eps)))
    return model


def bench_head(batch: int, threads: int, quick: bool) -> dict:
    """The whole BNN head 200 → 128 → 2 on `bench_bnn`: the kernel runtime (packed codes in,
    scores and labels out) against the float32 head at its best (`float_head`: numpy and torch,
    and at batch 1 compiled, entered as the XNOR one-code head is), against the same head in int8
    (`int8_matmul.int8_heads`: torch and ONNX Runtime), and against the float hidden-layer matmul
    200 → 128 alone (numpy and torch).

    Checks: the float heads' labels equal the TaskBNN module's (computed once, untimed: the float
    head is the same network); the kernel's labels equal every float head's; the kernel's scores
    equal, bit for bit, its score table at the output dots each float head computed (so every
    hidden bit and output dot agrees); the int8 heads' labels equal the TaskBNN module's, their
    scores equal, bit for bit, (h @ W2)·2s₂ + shift2 at the exact hidden bits, and torch's hidden
    bits equal those; both hidden matmuls equal the XNOR dot products."""
    import numpy as np
    import torch
    from hybnn_kernels.bits import pack_bits
    from hybnn_kernels.xnor import xnor_gemm

    from hybnn_cli.bench.float_head import CompiledFloatHead, fold, vector_heads
    from hybnn_cli.bench.int8_matmul import int8_heads, score_reference
    from hybnn_cli.deploy.export_head import runtime_from_model, torch_predict
    from hybnn_cli.models.bnn import BNNShape

    shape = BNNShape(CODE_BITS, 128, 2)
    name = f"head {CODE_BITS}-128-2 b={batch}"
    model = bench_bnn(shape)
    rt = runtime_from_model(model)
    fh = fold(model)
    rng = np.random.default_rng(batch)
    _, codes, x = _random_bits(rng, batch, shape.n_bits)
    _, want_labels = torch_predict(model, codes)
    # the hidden-layer dots of the float head's ±1 weights, by the kernel (untimed reference)
    dots1 = xnor_gemm(codes, pack_bits((fh["w1"].T > 0).astype(np.uint8)), shape.n_bits)
    want_int8_scores = score_reference(dots1 >= fh["t1"], fh)
    ops = 2.0 * batch * (shape.n_bits * shape.hidden + shape.hidden * shape.n_classes)
    scores = np.empty((batch, shape.n_classes), np.float32)
    labels = np.empty(batch, np.int64)
    table = rt.score_table
    with torch.inference_mode():
        heads, hbufs = vector_heads(fh, x)
        compiled = None
        if batch == 1:  # the compiled float head, as the XNOR one-code head, is batch 1's
            compiled = heads["numba_f32"] = CompiledFloatHead(fh)
            compiled.x[:] = x[0]
            hbufs["numba_f32"] = {"h": compiled.h[None], "scores": compiled.scores[None],
                                  "labels": np.empty(1, np.int64)}
        int8s, ibufs, iinfo = int8_heads(fh, x, threads)
        mms, mouts = _float_matmuls(x, fh["w1"])
        matmuls = {f"{k}_matmul": fn for k, fn in mms.items()}

        def check():
            if compiled is not None:  # its label is what the call returns
                hbufs["numba_f32"]["labels"][0] = compiled()
            for f, buf in ibufs.items():
                _require(_equal(buf["labels"], want_labels), name,
                         f"the {f} head's labels differ from the TaskBNN module's")
                _require(_equal(buf["scores"].view(np.uint32), want_int8_scores.view(np.uint32)),
                         name, f"the {f} head's scores differ from (h @ W2)·2s₂ + shift2 at the "
                         "exact hidden bits")
            _require(_equal(ibufs["torch_int8"]["h"], dots1 >= fh["t1"]), name,
                     "the torch_int8 head's hidden bits differ from (XNOR dots >= thresholds)")
            for f, buf in hbufs.items():
                _require(_equal(buf["labels"], want_labels), name,
                         f"the {f} float head's labels differ from the TaskBNN module's")
                _require(_equal(labels, buf["labels"]), name, "XNOR head labels differ from the "
                         f"{f} float head's on {int(np.count_nonzero(labels != buf['labels']))} "
                         f"of {batch} samples")
            for f, buf in hbufs.items():  # output dots from the float head's hidden bits
                d2 = (2 * (buf["h"] @ fh["w2"]) - fh["w2_sum"]).astype(np.int64)
                want = table[np.arange(shape.n_classes), (d2 + shape.hidden) // 2]
                _require(_equal(scores.view(np.uint32), want.view(np.uint32)), name,
                         f"XNOR head scores differ from the score table at the {f} float head's "
                         "output dots")
            for f, o in mouts.items():
                _require(_equal(o, dots1), name, f"{f} hidden-layer dots differ from XNOR's")

        run = {"xnor": lambda: rt.run(codes, threads, out=(scores, labels))}
        if batch == 1:  # the one-code head (its own buffers, one pointer per call) is batch 1's
            one = rt.one_sample()
            one.code[:] = codes[0]

            def run_one():
                labels[0] = one()
                scores[0] = one.scores

            run = {"xnor": one, "xnor_run": run["xnor"]}
            check = _checking_both(check, run_one, run["xnor_run"])
        res = {"name": name, "batch": batch, "ops": ops,
               **_compare({**run, **heads, **int8s, **matmuls}, ops, *_budget(ops, quick),
                          check=check, peaks_threads=threads),
               "weight_bytes": {"binary": rt.weight_bytes,
                                "int8": shape.hidden * (shape.n_bits + shape.n_classes),
                                "float32": 4 * shape.hidden * (shape.n_bits + shape.n_classes)},
               "check": {"passed": True, "compared": "XNOR labels = numpy and torch (and at "
                         "batch 1 compiled) float head labels = TaskBNN labels = torch and ONNX "
                         "Runtime int8 head labels; XNOR scores = score table at each float "
                         "head's output dots, bit for bit; int8 scores = (h @ W2)·2s₂ + shift2 at "
                         "the exact hidden bits, bit for bit; float hidden matmuls = XNOR dots",
                         "values": batch}}
    if batch == 1:
        res["xnor"]["api"] = "BNNRuntime.one_sample(): label = head() on the code in head.code"
        res["xnor_run"]["api"] = "BNNRuntime.run(codes, threads, out=(scores, labels))"
        res["numba_f32"]["api"] = ("float_head.CompiledFloatHead: label = head() on the ±1 "
                                   "values in head.x")
    for f, i in iinfo.items():
        res[f].update(i)
    for key in (*run, *heads, *int8s, *matmuls):
        res[key]["us_per_sample"] = res[key]["seconds"] / batch * 1e6
        res[key]["samples_per_second"] = batch / res[key]["seconds"]
    _headline(res)
    _ratios(res, tuple(matmuls), "best_hidden_matmul")
    res["weight_bytes"]["ratio"] = res["weight_bytes"]["float32"] / rt.weight_bytes
    return res


def _checking_both(check, run_one, run_batch):
    """`check` applied to the one-code head's answer (`run_one` writes it into the checked
    buffers), then to the batch path's."""
    def both():
        run_one()
        check()
        run_batch()
        check()
    return both


METHOD = ("medians over repeats timed in 3 interleaved rounds per case (every contender sees the "
          "same load drift), JIT warm-up outside the timing, preallocated outputs for every "
          "contender; ops = 2·M·N·K for float, int8 and binary; kernel weights pre-packed into "
          "panels, float weights pre-signed to ±1 float32 and batch norm pre-folded; float inputs "
          "are the ±1 float32 values of the bits the kernel reads (unpacked outside the timing); "
          "torch in inference_mode on plain tensors; int8 contenders: torch._int_mm (int8 × int8 "
          "→ int32, no padding needed by torch 2.13 on CPU, recorded per case) and ONNX Runtime "
          "MatMulInteger (uint8 activations a + 1 with zero point 1, int8 weights a constant of "
          "the graph; the head as one graph), inputs prepared outside the timing, every dot "
          "product exact; at batch 1 the kernel is the one-code head (BNNRuntime.one_sample: the "
          "code already in its input buffer, as each float contender's input is already in its "
          "array), the general run() path timed beside it as xnor_run, and the float head also "
          "compiled (numba_f32: float_head.CompiledFloatHead, a Numba cfunc entered through "
          "ctypes as the one-code head is); the headline ratio (speedup_vs_best_dense) is against "
          "the fastest dense contender of any precision, float32 and int8 ratios beside it; "
          "every output checked against a reference after the warm-up and after the timing; each "
          "case's peaks (float32 FMA, the XNOR tile's loop) measured at the start of each of its "
          "3 rounds, its fractions of peak set against the highest of them")


def run(quick: bool = False, threads: int = 2, log=sys.stderr) -> dict:
    """Run every case; returns the body of the result file (`hybnn bench` adds the provenance
    header). Raises HybnnError when a check fails."""
    import torch  # noqa: F401  (imported first, so `using_threads` sets its threads too)
    from threadpoolctl import threadpool_limits

    from hybnn_cli import __version__
    from hybnn_cli.threads import using as using_threads

    sizes = [256, 512] if quick else [256, 512, 1024, 2048, 4096]
    cases = []
    t_start, load_start = time.time(), os.getloadavg()
    with using_threads(threads), threadpool_limits(limits=threads, user_api="blas"):
        # every case measures the peaks in each of its timing rounds (`_compare`): the speed
        # of a shared (or virtual) machine drifts within a run, so each case is set against the
        # bound at the moments it ran
        todo = [(f"BNN head, batch {b}", bench_head, b) for b in (4096, 1)]
        todo.append(("hidden layer 200 → 128, batch 4096", bench_hidden, 4096))
        todo += [(f"square GEMM {s}", bench_gemm, s) for s in sizes]
        for what, case, arg in todo:
            t0 = time.time()
            cases.append(case(arg, threads, quick))
            print(f"bench: {what}: checked, {time.time() - t0:.1f} s", file=log, flush=True)
        roofline = combine_rooflines([m for c in cases for m in c["roofline"]["measured"]])
        setup = bench_setup(threads)
    for c in cases:
        c["fraction_of_peak"] = fractions_of_peak(c, c["roofline"])
    return {"hybnn_version": __version__, "quick": quick, "setup": setup,
            "load_average": {"start": [round(x, 2) for x in load_start],
                             "end": [round(x, 2) for x in os.getloadavg()]},
            "seconds": time.time() - t_start, "method": METHOD, "roofline": roofline,
            "checks_passed": all(c["check"]["passed"] for c in cases), "cases": cases}


def plot(result: dict, path: Path) -> None:
    """Speedup of the XNOR kernel over numpy and torch float32 and over the faster int8 contender
    against GEMM size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hybnn_cli.fileio import atomic_path

    gemm = [c for c in result["cases"] if c["name"].startswith("gemm")]
    sizes = [c["m"] for c in gemm]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(sizes, [c["speedup_vs_numpy"] for c in gemm], "o-", label="vs numpy float32 (OpenBLAS)")
    ax.plot(sizes, [c["speedup_vs_torch"] for c in gemm], "s-", label="vs torch float32")
    if all("speedup_vs_best_int8" in c for c in gemm):
        ax.plot(sizes, [c["speedup_vs_best_int8"] for c in gemm], "^-",
                label="vs the faster int8 (torch._int_mm, ONNX Runtime)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xlabel("M = N = K (bits for the kernel)")
    ax.set_ylabel("speedup (same 2·M·N·K operations)")
    m, s = result["machine"], result["setup"]
    ax.set_title(f"XNOR-popcount GEMM vs dense matmul (outputs checked equal)\n{m['cpu']} "
                 f"({s['llvm_cpu_name']}), {s['threads']} threads, kernel variant "
                 f"{s['kernel']['variant']}, load average {result['load_average']['start'][0]:.1f}"
                 f" at start", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """The child process of `hybnn bench`: prints the result body as JSON on stdout, or
    {"error": message} and exit code 1 when a check fails."""
    import argparse

    p = argparse.ArgumentParser(description="hybnn benchmark (child process of `hybnn bench`)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    try:
        body = run(args.quick, args.threads)
    except HybnnError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 1
    print(json.dumps(body), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
