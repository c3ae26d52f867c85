"""The float and int8 encoders of a bundle timed on the exporting machine (`export --int8`),
without torch: the export runs this module in a new process (`time_in_new_process`), because the
exporting process has just run the torch encoder, and torch's idle worker threads keep spinning on
the cores for a while after a parallel region, which slows ONNX Runtime's threads by a large and
varying factor. A process that never imported torch measures what `hybnn predict` would see.

Each encoder is timed warm at each batch size, the encoders taking turns in short blocks of calls
(so that a change in load hits both alike; call by call, one session's spinning worker threads
would slow the other's run): median, min and max microseconds per image, with the CPU's name
and flags and the thread count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hybnn_cli.errors import HybnnError

TIMING_BATCHES = (1, 256)  # the batch sizes the export times both encoders at
TIMING_SECONDS = 0.5  # about how long each (encoder, batch) pair is timed
# The encoders take turns in blocks of calls, not call by call: an ONNX Runtime session's worker
# threads spin for a while after each run, and would compete with the other session's run.
BLOCK_SECONDS = 0.02


def time_encoders(paths: dict[str, Path], images: np.ndarray, threads: int, input_name: str,
                  scale: float, batches=TIMING_BATCHES, seconds: float = TIMING_SECONDS) -> dict:
    """Median (and min, max) microseconds per image of each ONNX encoder in `paths` at each batch
    size, in this process, on uint8 `images` (N, H, W) or (N, H, W, C) normalised as
    x = pixel / scale."""
    from hybnn_kernels.machine import cpu_info
    from hybnn_kernels.pipeline import make_session, normalise

    sessions = {k: make_session(p, threads) for k, p in paths.items()}
    cpu, flags = cpu_info()
    out = {"cpu": cpu, "cpu_flags": flags, "threads": threads, "unit": "microseconds per image",
           "process": "a new one, without torch", "batches": {}}
    for b in batches:
        x = normalise(np.resize(images, (b, *images.shape[1:])), 0.0, scale)
        feed = {input_name: x}
        times = {k: [] for k in sessions}
        t_end = time.perf_counter() + seconds * len(sessions)
        while time.perf_counter() < t_end or min(map(len, times.values())) < 5:
            for k, s in sessions.items():  # a block of calls each, its first one not timed
                s.run(None, feed)
                block_end = time.perf_counter() + BLOCK_SECONDS
                while True:
                    t0 = time.perf_counter()
                    s.run(None, feed)
                    t1 = time.perf_counter()
                    times[k].append((t1 - t0) * 1e6 / b)
                    if t1 >= block_end:
                        break
        out["batches"][str(b)] = {k: {"median": float(np.median(v)), "min": float(min(v)),
                                      "max": float(max(v)), "calls": len(v)}
                                  for k, v in times.items()}
    return out


def time_in_new_process(paths: dict[str, Path], images: np.ndarray, threads: int,
                        input_name: str, scale: float) -> dict:
    """`time_encoders` run by `python -m hybnn_cli.deploy.encoder_timing` in a new process."""
    with tempfile.TemporaryDirectory(prefix="hybnn-timing-") as tmp:
        img = Path(tmp) / "images.npy"
        np.save(img, images[:max(TIMING_BATCHES)])
        cmd = [sys.executable, "-m", "hybnn_cli.deploy.encoder_timing", str(img), str(threads),
               input_name, str(scale), *(f"{k}={p}" for k, p in paths.items())]
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no message"])[-1]
        raise HybnnError(f"timing the encoders in a new process failed: {last}")
    return json.loads(r.stdout)


def main(argv: list[str]) -> None:
    images, threads, input_name, scale, *pairs = argv
    paths = dict(p.split("=", 1) for p in pairs)
    print(json.dumps(time_encoders(paths, np.load(images), int(threads), input_name,
                                   float(scale))))


if __name__ == "__main__":
    main(sys.argv[1:])
