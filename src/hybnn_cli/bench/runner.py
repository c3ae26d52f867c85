"""The benchmark behind `hybnn bench`: XNOR-popcount kernels against numpy and torch float32 and
against int8 (torch._int_mm, ONNX Runtime's MatMulInteger) on the same work, in one process,
every answer checked. This module runs the cases in order (`run`) as the child process of `hybnn
bench` (`main`, started by `run_in_clean_env`) and records the setup; the rest of the benchmark is
grouped by purpose:

- `gemm_cases`: square GEMMs and the fused hidden layer 200 → 128;
- `head_case`: the BNN head 200 → 128 → 2 (kernel runtime against the float32 head built from the
  same network, `float_head`, compiled too at batch 1; against the same head in int8,
  `int8_matmul`; and against the float hidden-layer matmul 200 → 128 alone);
- `timing`: the interleaved timing, the checks, the machine's peaks at the moments a case ran;
- `speedups`: the ratios; a case's headline ratio, `speedup_vs_best_dense`, is against its
  fastest dense contender of any precision (`fastest` names it), the float32 and int8 ratios
  beside it;
- `speedup_plot`: the picture of a result.

Checks: after the warm-up, before any time counts, and again after the timing, every contender's
output is compared with a reference from the same run (`timing.compare(check=...)`); a mismatch
raises `HybnnError` and the benchmark fails.

The float baseline must be the strongest one: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some
machines) pin OpenBLAS to an older kernel, and they are read when numpy loads. So `hybnn bench` runs
this module in a child process whose environment has both unset (`run_in_clean_env`), and the
result records which BLAS kernel actually ran (threadpoolctl).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from hybnn_cli.bench.gemm_cases import bench_gemm, bench_hidden
from hybnn_cli.bench.head_case import bench_bnn, bench_head
from hybnn_cli.bench.speedup_plot import plot
from hybnn_cli.bench.speedups import fractions_of_peak
from hybnn_cli.bench.timing import combine_rooflines
from hybnn_cli.errors import HybnnError

__all__ = ["BENCH_FORMAT", "BENCH_VERSION", "bench_bnn", "bench_gemm", "bench_head", "bench_hidden",
           "clean_env", "main", "plot", "run", "run_in_clean_env"]

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
        # every case measures the peaks in each of its timing rounds (`timing.compare`): the speed
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
