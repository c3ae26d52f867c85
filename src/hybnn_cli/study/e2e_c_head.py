"""The C head in the end-to-end benchmark (`benchmarks/e2e.py`, called by `e2e_speed.speed`): the
timed head exported by `hybnn export --c`, compiled by the system `cc` into a shared library, and
its time per code at batch 1; and its generated block `e2e-c-head`.

The library holds the head and a driver loop (`DRIVER`) that calls the head's classify function
once per code over M codes (batch 1: one code per call) in C, so a ctypes call from Python costs
once per M codes, not once per code. It is built three times (`BUILDS`): with ``-O2`` (what any
C99 host compiles: on x86-64 without ``-mpopcnt`` the builtin popcount is a library call), with
``-O2 -DHYBNN_NO_BUILTIN`` (the plain bit count) and with ``-O2 -march=native`` (this CPU's own
popcount instruction). Before any time counts, every
code's label and score bits are checked against the runtime's (`BNNRuntime.run`). The runtime's
own one-code head (`BNNRuntime.one_sample`), called from a Python loop, is timed beside them in
the same interleaved rounds (`e2e_speed.compare_speed`), as the Python caller's reference. The C
head runs on one thread.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from hybnn_cli.study.docgen import renderer, source
from hybnn_cli.study.e2e_torch import log
from hybnn_cli.study.provenance import read_result

# the codes' rows go to the head one at a time, as at batch 1
DRIVER = r"""#include "head.h"

void hybnn_bench_scores(const uint64_t *codes, int32_t m, int32_t *labels, float *scores)
{
    int32_t i;
    for (i = 0; i < m; ++i) {
        labels[i] = hybnn_head_scores(codes + (long)i * HYBNN_HEAD_N_WORDS,
                                      scores + (long)i * HYBNN_HEAD_N_CLASSES);
    }
}

void hybnn_bench_classify(const uint64_t *codes, int32_t m, int32_t *labels)
{
    int32_t i;
    for (i = 0; i < m; ++i) {
        labels[i] = hybnn_head_classify(codes + (long)i * HYBNN_HEAD_N_WORDS);
    }
}
"""
BUILDS = {"c_O2": ["-O2"], "c_O2_fallback": ["-O2", "-DHYBNN_NO_BUILTIN"],
          "c_O2_native": ["-O2", "-march=native"]}
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-shared", "-fPIC"]


def _compiler(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return (out.stdout.splitlines() or ["unknown"])[0]


def build(head_file: Path, folder: Path, cc: str) -> dict:
    """`hybnn export --c` of `head_file` into `folder`, compiled per BUILDS: name → library."""
    from hybnn_cli.deploy.export_c import write_c_head

    write_c_head(head_file, folder / "head")
    (folder / "driver.c").write_text(DRIVER)
    libs = {}
    for name, flags in BUILDS.items():
        lib = folder / f"lib{name}.so"
        r = subprocess.run([cc, *STRICT, *flags, "-o", str(lib), str(folder / "head.c"),
                            str(folder / "driver.c")], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"e2e C head: {cc} {' '.join(flags)} failed: {r.stderr.strip()}")
        libs[name] = ctypes.CDLL(str(lib))
    return libs


def _calls(lib, codes: np.ndarray, n_classes: int):
    """(classify over all codes → labels, scores over all codes → (labels, scores)), in C."""
    m = len(codes)
    labels = np.empty(m, dtype=np.int32)
    scores = np.empty((m, n_classes), dtype=np.float32)
    p = codes.ctypes.data_as(ctypes.c_void_p)
    lp, sp = labels.ctypes.data_as(ctypes.c_void_p), scores.ctypes.data_as(ctypes.c_void_p)
    classify, with_scores = lib.hybnn_bench_classify, lib.hybnn_bench_scores
    classify.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p]
    with_scores.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p]
    classify.restype = with_scores.restype = None

    def run_classify():
        classify(p, m, lp)
        return labels

    def run_scores():
        with_scores(p, m, lp, sp)
        return labels, scores

    return run_classify, run_scores


def c_head_speed(bundle: Path, images, head: str, quick: bool, n_codes: int = 10000) -> dict:
    """The C head's time per code at batch 1 on the encoded test images (`n_codes` of them),
    every label and score checked against the runtime first; `measured` False with the reason
    when no `cc` is on PATH."""
    from hybnn_kernels import load_bundle
    from hybnn_kernels.runtime import load_deploy

    from hybnn_cli.study.e2e_speed import compare_speed

    cc = shutil.which("cc")
    if cc is None:
        return {"measured": False, "reason": "no C compiler (`cc`) on PATH"}
    m = json.loads((bundle / "bundle.json").read_text())
    head_file = bundle / m["heads"][head]["file"]
    pipe = load_bundle(bundle, 1, heads=[head], compiled=True)
    x = images[:n_codes]
    codes = np.ascontiguousarray(np.concatenate([pipe.encode(x[s:s + 4096])
                                                 for s in range(0, len(x), 4096)]))
    rt = load_deploy(head_file)
    want_scores, want_labels = rt.run(codes)
    one = rt.one_sample()
    with tempfile.TemporaryDirectory(prefix="hybnn-c-head-") as tmp:
        libs = build(head_file, Path(tmp), cc)
        contenders, checks = {}, {}
        for name, lib in libs.items():
            run_classify, run_scores = _calls(lib, codes, rt.n_classes)
            labels, scores = run_scores()
            checks[f"{name}_scores_equal_runtime"] = bool(
                np.array_equal(labels, want_labels)
                and np.array_equal(scores.view(np.uint32), want_scores.view(np.uint32)))
            checks[f"{name}_labels_equal_runtime"] = bool(np.array_equal(run_classify(),
                                                                         want_labels))
            contenders[name] = {"fn": lambda _, f=run_classify: f(), "split": dict,
                                "reset": lambda: None}

        def python_loop(_):
            for c in codes:
                one.code[:] = c
                one()

        contenders["runtime_one_sample"] = {"fn": python_loop, "split": dict,
                                            "reset": lambda: None}
        if not all(checks.values()):
            raise SystemExit(f"e2e C head: a check failed: {checks}")
        timing = compare_speed(contenders, lambda i: None, 6 if quick else 60,
                               0.0 if quick else 3.0, per_image=len(codes))
    log("C head, batch 1: " + ", ".join(f"{k} {v['us_per_image']:.3f} µs per code"
                                        for k, v in timing.items()))
    return {"measured": True, "head": head, "codes": int(len(codes)), "threads": 1,
            "compiler": _compiler(cc), "builds": {k: STRICT + v for k, v in BUILDS.items()},
            "checks": checks, "timing": timing}


def c_head_text(r: dict) -> str:
    """The block's text for an e2e result `r` (a file without the C head says so)."""
    c = r.get("speed", {}).get("c_head_batch_1")
    if not c or not c.get("measured"):
        why = c.get("reason") if c else "this file predates it"
        return (f"The C head (`hybnn export --c`) at batch 1: not measured ({why}); "
                f"the next run of `benchmarks/e2e.py` measures it.")
    t = c["timing"]

    def cell(k):
        q1, q3 = (1e6 * s / c["codes"] for s in t[k]["iqr_seconds"])
        return f"{t[k]['us_per_image']:.3f} ({q1:.3f}–{q3:.3f})"

    return (f"The C head (`hybnn export --c` of head `{c['head']}`, built by {c['compiler']}, "
            f"one call per code from a C loop over {c['codes']:,} encoded test images, one "
            f"thread; labels and scores equal the runtime's on every one of them): µs per code "
            f"at batch 1, median (quartiles): `-O2` {cell('c_O2')}, `-O2 -DHYBNN_NO_BUILTIN` "
            f"{cell('c_O2_fallback')}, `-O2 -march=native` {cell('c_O2_native')}; the "
            f"runtime's one-code head called from a Python loop {cell('runtime_one_sample')}.")



@renderer("e2e-c-head")
def e2e_c_head(results_dir: Path) -> str:
    """The C head's time per code at batch 1, from e2e.json."""
    r = read_result(Path(results_dir) / "e2e.json", "hybnn-e2e")
    return c_head_text(r) + "\n\n" + source("e2e.json", r)
