"""The encoder in float32 against int8 quantizations of it, on ONNX Runtime, on this CPU.

`hybnn export --int8` quantizes the encoder one way (QDQ, int8 activations, per-channel int8
weights, the first convolution and the last layer kept in float32: `bundle_export.FLOAT_NODES`).
Whether any int8 encoder beats float32 depends on the CPU: ONNX Runtime's quantized convolutions
are built for the int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI); without them they run
on AVX2 multiply-adds. This script quantizes the bundle's float encoder in the formats ONNX
Runtime offers (QDQ or QOperator, int8 or uint8 activations, with and without the last layer in
float32), calibrated as `--int8` is, and times each against the float encoder in one process with
the same threads and images: µs per image at batch 4096 and at batch 1 (medians of interleaved
rounds), and the fraction of code bits that differ from the float encoder's on the MNIST test
images. Nothing is chosen here; the bundle keeps what `--int8` writes.

Writes `benchmarks/results/int8.json` (format "hybnn-int8") with the provenance of this run
(`results.run_record`, taken when it starts), which every variant's row also holds.

Usage: python benchmarks/int8.py --bundle runs/e2e/bundle [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hybnn_kernels.pipeline import make_session, read_manifest

from hybnn_cli.data.datasets import load_split
from hybnn_cli.deploy.export_bundle import FLOAT_NODES, INPUT, calibration_images, quantize_int8
from hybnn_cli.study.provenance import end_run, start_run, write_result

FORMAT = "hybnn-int8"
VERSION = 1
VARIANTS = {  # name: (format, activations, nodes kept in float32)
    "qdq-int8 (--int8)": ("QDQ", "int8", FLOAT_NODES),
    "qdq-uint8": ("QDQ", "uint8", FLOAT_NODES),
    "qoperator-uint8": ("QOperator", "uint8", FLOAT_NODES),
    "qdq-uint8, last layer int8 too": ("QDQ", "uint8", ("conv0",)),
    "qoperator-uint8, last layer int8 too": ("QOperator", "uint8", ("conv0",)),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(session, x: np.ndarray, repeats: int) -> list[float]:
    feed = {INPUT["name"]: x}
    session.run(None, feed)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("runs/e2e/bundle"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="few repeats (a smoke run)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/int8.json"))
    a = p.parse_args(argv)
    argv_rec = ["python", "benchmarks/int8.py", *(argv or sys.argv[1:])]
    run = start_run(a.out, argv_rec)
    manifest = read_manifest(a.bundle)
    float_path = a.bundle / manifest["encoder"]["file"]
    test, _ = load_split("mnist", "test")
    x_test = test[:, None].astype(np.float32) / np.float32(INPUT["scale"])
    calib = calibration_images("mnist", a.calibration, a.seed, None)
    sessions = {"float32": make_session(float_path, a.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (fmt, act, keep) in VARIANTS.items():
            log(f"quantizing: {name}")
            out = Path(tmp) / f"{len(sessions)}.onnx"
            quantize_int8(float_path, out, calib, quant_format=fmt, activations=act,
                          float_nodes=keep)
            sessions[name] = make_session(out, a.threads)
        ref = sessions["float32"].run(None, {INPUT["name"]: x_test})[0] >= 0
        flipped = {name: float(np.mean((s.run(None, {INPUT["name"]: x_test})[0] >= 0) != ref))
                   for name, s in sessions.items()}
    big, one = x_test[:4096], x_test[:1]
    reps_big, reps_one = (2, 50) if a.quick else (5, 400)
    times = {name: {"4096": [], "1": []} for name in sessions}
    for r in range(a.rounds):  # interleaved: every variant sees the same drift in machine load
        log(f"timing, round {r + 1} of {a.rounds}")
        for name, s in sessions.items():
            times[name]["4096"] += timed(s, big, reps_big)
            times[name]["1"] += timed(s, one, reps_one)
    rows = {}
    for name in sessions:
        b4096 = statistics.median(times[name]["4096"]) / 4096 * 1e6
        b1 = statistics.median(times[name]["1"]) * 1e6
        rows[name] = {"us_per_image_4096": b4096, "us_batch_1": b1,
                      "flipped_bit_fraction": flipped[name],
                      "format": VARIANTS[name][0] if name in VARIANTS else "float32",
                      "activations": VARIANTS[name][1] if name in VARIANTS else "float32",
                      "float_nodes": list(VARIANTS[name][2]) if name in VARIANTS else "all"}
    base, done = rows["float32"], end_run(run)
    for row in rows.values():
        row["speedup_4096"] = base["us_per_image_4096"] / row["us_per_image_4096"]
        row["speedup_1"] = base["us_batch_1"] / row["us_batch_1"]
        row["run"] = done
    body = {"bundle": str(a.bundle), "threads": a.threads, "calibration": a.calibration,
            "seed": a.seed, "test_images": len(x_test), "rounds": a.rounds,
            "repeats": {"4096": reps_big * a.rounds, "1": reps_one * a.rounds},
            "variants": rows}
    write_result(a.out, FORMAT, VERSION, body, argv=argv_rec, run=done)
    for name, row in rows.items():
        log(f"{name:40s} {row['us_per_image_4096']:6.1f} µs/img at 4096 "
            f"({row['speedup_4096']:.2f}×), {row['us_batch_1']:6.1f} µs at 1 "
            f"({row['speedup_1']:.2f}×), "
            f"{row['flipped_bit_fraction']:.2%} bits flipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
