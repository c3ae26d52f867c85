"""The benchmark behind `hybnn bench`: XNOR-popcount kernels against numpy and torch float32 matmul
on the same shapes, in one process.

Method: every contender writes into a preallocated output; JIT compile and first-touch costs are
paid in a warm-up outside the timing; each time is the median of several repeats, taken in three
interleaved rounds of blocks (kernel, numpy, torch, kernel, ...) so that all contenders see the same
drift in the load of a shared machine, with a short pause between blocks (OpenBLAS worker threads
spin for a while after a call and slow whatever runs next); operations are counted as 2·M·N·K for
float and binary alike, so the ratio of rates is the speedup on equal shapes.

The float baseline must be the strongest one: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some
machines) pin OpenBLAS to an older kernel, and they are read when numpy loads. So `hybnn bench` runs
this module in a child process whose environment has both unset (`run_in_clean_env`), and the
result records which BLAS kernel actually ran (threadpoolctl).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BENCH_FORMAT = "hybnn-bench"
BENCH_VERSION = 1


def run_in_clean_env(quick: bool, threads: int, log=sys.stderr) -> dict:
    """Run the benchmark in a child process without the OpenBLAS overrides; return its result."""
    env = clean_env()
    cmd = [sys.executable, "-m", "hybnn_cli.bench", "--threads", str(threads)]
    if quick:
        cmd.append("--quick")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        from hybnn_cli.errors import HybnnError
        raise HybnnError(f"the benchmark process failed (exit {proc.returncode})")
    return json.loads(out)


def clean_env() -> dict:
    """This environment without the OpenBLAS overrides (their values kept for the record)."""
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    env["HYBNN_BENCH_PARENT_ENV"] = json.dumps({k: os.environ.get(k) for k in OPENBLAS_VARS})
    return env


# ── measuring ────────────────────────────────────────────────────────────────────────────────
def _compare(fns: dict, ops: float, repeats: int, min_total: float = 0.0,
             rounds: int = 3) -> dict:
    """Time each contender (name → zero-argument callable) in `rounds` interleaved rounds, so that
    all of them see the same drift in machine load; each round runs a block of calls of one
    contender, then pauses briefly (OpenBLAS threads keep spinning after a call). Returns
    name → {seconds (median), min_seconds, repeats, ops_per_second}."""
    for fn in fns.values():  # warm-up: JIT compile, first touch of outputs, thread pools
        fn()
    per_round = max(1, -(-repeats // rounds))
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(0.05)
            block = []
            while len(block) < per_round or sum(block) < min_total / rounds:
                t0 = time.perf_counter()
                fn()
                block.append(time.perf_counter() - t0)
                if len(block) >= 5000:
                    break
            times[name] += block
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"seconds": med, "ops_per_second": ops / med, "min_seconds": min(ts),
                     "repeats": len(ts)}
    return out


def _repeats(ops: float, quick: bool) -> int:
    if ops > 1e11:
        return 3 if quick else 5
    return 5 if quick else 11


def machine_info(threads: int) -> dict:
    import numba
    import numpy as np
    import torch
    from hybnn_kernels import xnor
    from threadpoolctl import threadpool_info

    cpu, flags = platform.processor() or "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = value.split()
                break
    except OSError:
        pass
    import llvmlite.binding as llb
    interesting = ("avx", "avx2", "fma", "popcnt", "avx512f", "avx512bw", "avx512vl",
                   "avx512_vpopcntdq", "avx512_bitalg", "avx512_vnni", "amx_tile")
    blas = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                   "threading_layer")}
            for d in threadpool_info() if d.get("user_api") == "blas"]
    parent_env = json.loads(os.environ.get("HYBNN_BENCH_PARENT_ENV", "{}"))
    return {
        "cpu": cpu, "llvm_cpu_name": llb.get_host_cpu_name(), "cores": os.cpu_count(),
        "cpu_flags": [f for f in interesting if f in flags],
        "threads": threads, "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.threading_layer(),
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "numpy_blas": blas,
        "openblas_env_in_parent": parent_env,
        "openblas_env_in_bench": {k: os.environ.get(k) for k in OPENBLAS_VARS},
        "kernel": {"variant": xnor.VARIANT, "tile_rows": xnor.MR, "panel_rows": xnor.NR,
                   "vector_u64_lanes": xnor.VW},
        "load_average": list(os.getloadavg()),
    }


def _float_matmuls(rng, m: int, k: int, n: int) -> dict:
    """The float32 contenders on (m, k) @ (k, n): numpy and torch, writing into preallocated
    outputs."""
    import numpy as np
    import torch

    xf = rng.standard_normal((m, k), dtype=np.float32)
    wf = rng.standard_normal((k, n), dtype=np.float32)
    of = np.empty((m, n), np.float32)
    tx, tw, to = torch.from_numpy(xf), torch.from_numpy(wf), torch.empty((m, n))
    return {"numpy_f32": lambda: np.matmul(xf, wf, out=of),
            "torch_f32": lambda: torch.matmul(tx, tw, out=to)}


def bench_gemm(size: int, threads: int, quick: bool) -> dict:
    """Square M = N = K: XNOR on K-bit rows against float32 matmul of the same shape."""
    import numpy as np
    from hybnn_kernels.xnor import prepack, xnor_gemm

    rng = np.random.default_rng(size)
    m = n = k = size
    ops = 2.0 * m * n * k
    reps = _repeats(ops, quick)
    words = k // 64
    a = rng.integers(0, 2**64, size=(m, words), dtype=np.uint64)
    w = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    pw = prepack(w, k)
    out = np.empty((m, n), np.int32)
    res = {"name": f"gemm {size}", "m": m, "n": n, "k": k, "ops": ops,
           **_compare({"xnor": lambda: xnor_gemm(a, pw, k, out=out, threads=threads),
                       **_float_matmuls(rng, m, k, n)}, ops, reps),
           "weight_bytes": {"binary": pw.nbytes, "float32": 4 * n * k}}
    _ratios(res)
    return res


def _ratios(res: dict) -> None:
    best = min(res["numpy_f32"]["seconds"], res["torch_f32"]["seconds"])
    res["speedup_vs_numpy"] = res["numpy_f32"]["seconds"] / res["xnor"]["seconds"]
    res["speedup_vs_torch"] = res["torch_f32"]["seconds"] / res["xnor"]["seconds"]
    res["speedup_vs_best_float"] = best / res["xnor"]["seconds"]
    best_min = min(res["numpy_f32"]["min_seconds"], res["torch_f32"]["min_seconds"])
    res["speedup_vs_best_float_from_minima"] = best_min / res["xnor"]["min_seconds"]
    wb = res["weight_bytes"]
    wb["ratio"] = wb["float32"] / wb["binary"]


def _head_models(shape, seed: int = 0):
    """A TaskBNN with trained-looking batch-norm statistics and its kernel runtime."""
    import torch

    from hybnn_cli.bnn import TaskBNN
    from hybnn_cli.export import runtime_from_model

    g = torch.Generator().manual_seed(seed)
    model = TaskBNN(shape).eval()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=g) * 3)
            bn.running_var.copy_(torch.rand(c, generator=g) * 50 + 1)
            bn.weight.copy_(torch.randn(c, generator=g))
            bn.bias.copy_(torch.randn(c, generator=g))
    return model, runtime_from_model(model)


def bench_head(batch: int, threads: int, quick: bool) -> dict:
    """The whole BNN head 200 → 128 → 2: kernel runtime (packed codes in, labels and scores out)
    against the torch TaskBNN (±1 float32 in) and the same layers as numpy float32 matmuls."""
    import numpy as np
    import torch
    from hybnn_kernels.bits import pack_bits

    from hybnn_cli.bnn import BNNShape

    shape = BNNShape(200, 128, 2)
    model, rt = _head_models(shape)
    rng = np.random.default_rng(batch)
    bits = rng.integers(0, 2, size=(batch, shape.n_bits))
    codes = pack_bits(bits)
    x = (bits * 2 - 1).astype(np.float32)
    tx = torch.from_numpy(x)
    ops = 2.0 * batch * (shape.n_bits * shape.hidden + shape.hidden * shape.n_classes)
    reps = 2001 if batch == 1 else _repeats(ops, quick) * 3
    min_total = 0.2 if quick else 0.5
    w1 = np.where(model.fc1.weight.detach().numpy() < 0, -1, 1).astype(np.float32).T.copy()
    w2 = np.where(model.fc2.weight.detach().numpy() < 0, -1, 1).astype(np.float32).T.copy()

    def bn_params(bn):
        s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
        return s, (bn.bias.detach().numpy() - bn.running_mean.numpy() * s)

    s1, b1 = bn_params(model.bn1)
    s2, b2 = bn_params(model.bn2)
    h = np.empty((batch, shape.hidden), np.float32)
    o = np.empty((batch, shape.n_classes), np.float32)

    def numpy_head():
        np.matmul(x, w1, out=h)
        h[...] = np.where(h * s1 + b1 < 0, -1.0, 1.0)
        np.matmul(h, w2, out=o)
        return (o * s2 + b2).argmax(1)

    def torch_head():
        with torch.no_grad():
            return model(tx).argmax(1)

    res = {"name": f"head 200-128-2 b={batch}", "batch": batch, "ops": ops,
           **_compare({"xnor": lambda: rt.run(codes, threads), "numpy_f32": numpy_head,
                       "torch_f32": torch_head}, ops, reps, min_total),
           "weight_bytes": {"binary": rt.weight_bytes,
                            "float32": 4 * shape.hidden * (shape.n_bits + shape.n_classes)}}
    for key in ("xnor", "numpy_f32", "torch_f32"):
        res[key]["us_per_sample"] = res[key]["seconds"] / batch * 1e6
        res[key]["samples_per_second"] = batch / res[key]["seconds"]
    _ratios(res)
    return res


def bench_hidden(batch: int, threads: int, quick: bool) -> dict:
    """The hidden layer alone, 200 → 128 at `batch`: fused XNOR + threshold + pack against float32
    matmul (the float side does the matmul only, no batch norm or sign)."""
    import numpy as np
    from hybnn_kernels.dense import binary_dense, make_dense

    m, n, k = batch, 128, 200
    rng = np.random.default_rng(7)
    codes = np.ascontiguousarray(
        np.packbits(rng.integers(0, 2, size=(m, 256)) * (np.arange(256) < k), axis=1,
                    bitorder="little").view(np.uint64))
    w = np.ascontiguousarray(
        np.packbits(rng.integers(0, 2, size=(n, 256)) * (np.arange(256) < k), axis=1,
                    bitorder="little").view(np.uint64))
    layer = make_dense(w, rng.integers(-20, 20, size=n), k)
    out = np.empty((m, 2), np.uint64)
    ops = 2.0 * m * n * k
    reps = _repeats(ops, quick) * 3
    res = {"name": f"hidden 200-128 b={batch}", "m": m, "n": n, "k": k, "ops": ops,
           **_compare({"xnor": lambda: binary_dense(codes, layer, out=out, threads=threads),
                       **_float_matmuls(rng, m, k, n)}, ops, reps, 0.3),
           "weight_bytes": {"binary": layer.weights.nbytes, "float32": 4 * n * k}}
    _ratios(res)
    return res


def run(quick: bool = False, threads: int = 2, log=sys.stderr) -> dict:
    """Run every case; returns the result dict (also what `--json` prints)."""
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    from hybnn_cli import __version__

    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    sizes = [256, 512, 1024] if quick else [256, 512, 1024, 2048, 4096]
    cases = []
    t_start = time.time()
    with threadpool_limits(limits=threads, user_api="blas"):
        info = machine_info(threads)
        for b in (1, 4096):
            print(f"bench: BNN head, batch {b}", file=log, flush=True)
            cases.append(bench_head(b, threads, quick))
        print("bench: hidden layer 200 → 128, batch 4096", file=log, flush=True)
        cases.append(bench_hidden(4096, threads, quick))
        for s in sizes:
            print(f"bench: square GEMM {s}", file=log, flush=True)
            cases.append(bench_gemm(s, threads, quick))
    return {"format": BENCH_FORMAT, "format_version": BENCH_VERSION, "hybnn_version": __version__,
            "quick": quick, "command": "hybnn bench" + (" --quick" if quick else ""),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
            "seconds": time.time() - t_start, "machine": info,
            "method": "medians over repeats timed in 3 interleaved rounds per case (every "
                      "contender sees the same load drift), JIT warm-up outside the timing, "
                      "preallocated outputs; "
                      "ops = 2·M·N·K for float and binary; kernel weights pre-packed into panels; "
                      "float inputs are ±1 float32 already unpacked, kernel inputs packed bits",
            "cases": cases}


def plot(result: dict, path: Path) -> None:
    """Speedup of the XNOR kernel over numpy and torch float32 against GEMM size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hybnn_cli.fileio import atomic_path

    gemm = [c for c in result["cases"] if c["name"].startswith("gemm")]
    sizes = [c["m"] for c in gemm]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(sizes, [c["speedup_vs_numpy"] for c in gemm], "o-", label="vs numpy float32 (OpenBLAS)")
    ax.plot(sizes, [c["speedup_vs_torch"] for c in gemm], "s-", label="vs torch float32")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xlabel("M = N = K (bits for the kernel)")
    ax.set_ylabel("speedup (same 2·M·N·K operations)")
    m = result["machine"]
    ax.set_title(f"XNOR-popcount GEMM vs float32 matmul\n{m['cpu']} ({m['llvm_cpu_name']}), "
                 f"{m['threads']} threads, kernel variant {m['kernel']['variant']}, "
                 f"load average {m['load_average'][0]:.1f} at start", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="hybnn benchmark (child process of `hybnn bench`)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    print(json.dumps(run(args.quick, args.threads)))
