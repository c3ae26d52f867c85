"""The encoder in float32 against int8 quantizations of it, on ONNX Runtime, on this CPU
(`benchmarks/int8.py`): run (`run`), recorded in `benchmarks/results/int8.json` (format
"hybnn-int8") and rendered (the block `int8`).

`hybnn export --int8` quantizes the encoder one way (QDQ, int8 activations, per-channel int8
weights, the first convolution and the last layer kept in float32: `export_bundle.FLOAT_NODES`).
Whether any int8 encoder beats float32 depends on the CPU: ONNX Runtime's quantized convolutions
are built for the int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI); without them they run
on AVX2 multiply-adds. This study quantizes the bundle's float encoder in the formats ONNX
Runtime offers (QDQ or QOperator, int8 or uint8 activations, with and without the last layer in
float32), calibrated as `--int8` is, and times each against the float encoder in one process with
the same threads and images: µs per image at batch 4096 and at batch 1 (medians of interleaved
rounds), and the fraction of code bits that differ from the float encoder's on the MNIST test
images. Nothing is chosen here; the bundle keeps what `--int8` writes. The provenance of the run
(taken when it starts) is in the file's header and in every variant's row.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hybnn_cli.study.docgen import renderer, source, table
from hybnn_cli.study.provenance import end_run, read_result, start_run, write_result

FORMAT = "hybnn-int8"
VERSION = 1
INT8 = "int8.json"
# name: (format, activations, nodes kept in float32; None: export_bundle.FLOAT_NODES)
VARIANTS = {
    "qdq-int8 (--int8)": ("QDQ", "int8", None),
    "qdq-uint8": ("QDQ", "uint8", None),
    "qoperator-uint8": ("QOperator", "uint8", None),
    "qdq-uint8, last layer int8 too": ("QDQ", "uint8", ("conv0",)),
    "qoperator-uint8, last layer int8 too": ("QOperator", "uint8", ("conv0",)),
}


def log(msg: str) -> None:
    """A progress line of the study, on stderr."""
    print(msg, file=sys.stderr, flush=True)


def timed(session, x: np.ndarray, repeats: int) -> list[float]:
    """Seconds of `repeats` runs of the encoder session on x, after one warm-up run."""
    from hybnn_cli.deploy.export_bundle import INPUT

    feed = {INPUT["name"]: x}
    session.run(None, feed)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return times


def run(bundle: Path, out: Path, argv: list[str], *, threads: int, calibration: int, seed: int,
        rounds: int, quick: bool) -> dict:
    """Quantize, check and time every variant against the float encoder; write the result to
    `out` with the provenance of this run (taken as it starts, `argv` the command recorded)."""
    from hybnn_kernels.pipeline import make_session, read_manifest

    from hybnn_cli.data.datasets import load_split
    from hybnn_cli.deploy.export_bundle import INPUT

    run_rec = start_run(out, argv)
    float_path = bundle / read_manifest(bundle)["encoder"]["file"]
    test, _ = load_split("mnist", "test")
    x_test = test[:, None].astype(np.float32) / np.float32(INPUT["scale"])
    sessions = {"float32": make_session(float_path, threads)}
    with tempfile.TemporaryDirectory() as tmp:
        flipped = _quantized(sessions, float_path, Path(tmp), x_test, threads, calibration, seed)
    reps_big, reps_one = (2, 50) if quick else (5, 400)
    times = {name: {"4096": [], "1": []} for name in sessions}
    for r in range(rounds):  # interleaved: every variant sees the same drift in machine load
        log(f"timing, round {r + 1} of {rounds}")
        for name, s in sessions.items():
            times[name]["4096"] += timed(s, x_test[:4096], reps_big)
            times[name]["1"] += timed(s, x_test[:1], reps_one)
    done = end_run(run_rec)
    rows = _rows(times, flipped, done)
    body = {"bundle": str(bundle), "threads": threads, "calibration": calibration,
            "seed": seed, "test_images": len(x_test), "rounds": rounds,
            "repeats": {"4096": reps_big * rounds, "1": reps_one * rounds},
            "variants": rows}
    result = write_result(out, FORMAT, VERSION, body, argv=argv, run=done)
    for name, row in rows.items():
        log(f"{name:40s} {row['us_per_image_4096']:6.1f} µs/img at 4096 "
            f"({row['speedup_4096']:.2f}×), {row['us_batch_1']:6.1f} µs at 1 "
            f"({row['speedup_1']:.2f}×), "
            f"{row['flipped_bit_fraction']:.2%} bits flipped")
    return result


def _quantized(sessions: dict, float_path: Path, tmp: Path, x_test, threads: int,
               calibration: int, seed: int) -> dict:
    """Every variant quantized from the float encoder (calibrated as `--int8` is) and added to
    `sessions`; returns each session's fraction of code bits that differ from float32's."""
    from hybnn_kernels.pipeline import make_session

    from hybnn_cli.deploy.export_bundle import (
        FLOAT_NODES,
        INPUT,
        calibration_images,
        quantize_int8,
    )

    calib = calibration_images("mnist", calibration, seed, None)
    for name, (fmt, act, keep) in VARIANTS.items():
        log(f"quantizing: {name}")
        out = tmp / f"{len(sessions)}.onnx"
        quantize_int8(float_path, out, calib, quant_format=fmt, activations=act,
                      float_nodes=FLOAT_NODES if keep is None else keep)
        sessions[name] = make_session(out, threads)
    ref = sessions["float32"].run(None, {INPUT["name"]: x_test})[0] >= 0
    return {name: float(np.mean((s.run(None, {INPUT["name"]: x_test})[0] >= 0) != ref))
            for name, s in sessions.items()}


def _rows(times: dict, flipped: dict, done: dict) -> dict:
    """Each variant's row: medians per image at 4096 and at batch 1, its speedups over float32,
    its flipped bits, how it was quantized, the run."""
    from hybnn_cli.deploy.export_bundle import FLOAT_NODES

    rows = {}
    for name in times:
        b4096 = statistics.median(times[name]["4096"]) / 4096 * 1e6
        b1 = statistics.median(times[name]["1"]) * 1e6
        fmt, act, keep = VARIANTS.get(name, ("float32", "float32", "all"))
        rows[name] = {"us_per_image_4096": b4096, "us_batch_1": b1,
                      "flipped_bit_fraction": flipped[name], "format": fmt, "activations": act,
                      "float_nodes": (list(FLOAT_NODES if keep is None else keep)
                                      if keep != "all" else "all")}
    base = rows["float32"]
    for row in rows.values():
        row["speedup_4096"] = base["us_per_image_4096"] / row["us_per_image_4096"]
        row["speedup_1"] = base["us_batch_1"] / row["us_batch_1"]
        row["run"] = done
    return rows


@renderer("int8")
def int8_variants(results_dir: Path) -> str:
    """The float encoder against the int8 quantizations ONNX Runtime offers, on this CPU."""
    r = read_result(Path(results_dir) / INT8, FORMAT)
    def kept(v):
        return ", ".join(v) if isinstance(v, list) else v

    rows = [[name, v["format"], v["activations"], kept(v["float_nodes"]),
             f"{v['us_per_image_4096']:.1f}", f"{v['speedup_4096']:.2f}×",
             f"{v['us_batch_1']:.1f}", f"{v['speedup_1']:.2f}×",
             f"{v['flipped_bit_fraction']:.2%}"]
            for name, v in r["variants"].items()]
    flags = ", ".join(r["machine"].get("cpu_flags", [])) or "none recorded"
    return (f"Encoder alone on ONNX Runtime, {r['threads']} threads, {r['test_images']:,} MNIST "
            f"test images (CPU flags: {flags}; load average "
            f"{r['machine']['load_average'][0]:.1f}):\n\n"
            + table(["encoder", "format", "activations", "kept in float32",
                     "µs/image at 4096", "× float32", "µs at batch 1", "× float32",
                     "code bits ≠ float32's"], rows)
            + "\n\n" + source(INT8, r))
