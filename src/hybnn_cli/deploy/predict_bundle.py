"""Prediction from a deploy bundle: image files in, classes out, without torch.

The bundle's encoder runs in ONNX Runtime, the heads on the XNOR kernels (`hybnn_kernels.pipeline`);
images are read batch by batch (`image_files`), so memory stays flat in the number of images
except for the labels themselves. With `labels` (an IDX labels file), each head's accuracy on the
images of its classes is reported too; a prototype head's classes are names (`hybnn learn-class`),
matched with the label's decimal digits ("8" for label 8). Nothing here imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hybnn_cli.data.image_files import iter_batches, open_images
from hybnn_cli.errors import HybnnError


def load(bundle: Path, threads: int, int8: bool = False, heads: list[str] | None = None):
    from hybnn_kernels.pipeline import BundleError, load_bundle

    try:
        return load_bundle(bundle, threads, int8, heads or None)
    except BundleError as e:
        raise HybnnError(str(e)) from None


def int8_slower_note(manifest: dict, batch: int) -> str | None:
    """One line when the bundle's export-time timings, taken on a CPU like this one (same model
    name and flags), show its int8 encoder slower than the float one at the recorded batch size
    nearest `batch`; None when int8 was faster there, or the figures are absent or from another
    CPU (they say nothing about this one)."""
    from hybnn_kernels.machine import cpu_info

    t = (manifest.get("encoder_int8") or {}).get("timing")
    if not t or not t.get("batches"):
        return None
    cpu, flags = cpu_info()
    if t.get("cpu") != cpu or list(t.get("cpu_flags", [])) != flags:
        return None
    b = min(t["batches"], key=lambda k: abs(np.log(int(k)) - np.log(max(batch, 1))))
    f, i = t["batches"][b]["float"]["median"], t["batches"][b]["int8"]["median"]
    if i <= f:
        return None
    return (f"note: on this CPU ({cpu}) the bundle's export timed the int8 encoder slower than "
            f"the float one at batch {b} ({i:.1f} against {f:.1f} µs per image, "
            f"{t['threads']} threads); without --int8 it runs the float encoder")


def read_labels(path: Path, n: int) -> np.ndarray:
    from hybnn_cli.data.datasets import read_idx

    if not Path(path).is_file():
        raise HybnnError(f"{path}: no such labels file")
    y = read_idx(path, ndim=1)
    if len(y) != n:
        raise HybnnError(f"{path}: {len(y)} labels for {n} images")
    return y.astype(np.int64)


def predict_bundle(bundle: Path, images: list[Path], threads: int = 2, int8: bool = False,
                   heads: list[str] | None = None, batch_size: int = 4096,
                   labels: Path | None = None,
                   on_start: Callable[[int], None] | None = None,
                   on_batch: Callable[[int], None] | None = None) -> dict:
    """Classify every image of `images` with the bundle's heads (all, or those named)."""
    if batch_size < 1:
        raise HybnnError(f"--batch-size must be >= 1, got {batch_size}")
    sources = open_images(images)
    n = sum(s.n for s in sources)
    y = read_labels(labels, n) if labels is not None else None
    pipe = load(bundle, threads, int8, heads)
    note = int8_slower_note(pipe.manifest, min(batch_size, n)) if int8 else None
    if on_start:
        on_start(n)
    preds = {name: np.empty(n, dtype=h.classes.dtype) for name, h in pipe.heads.items()}
    t0 = time.perf_counter()
    done = 0
    for batch in iter_batches(sources, batch_size):
        for name, lab in pipe.classify(batch).items():
            preds[name][done:done + len(batch)] = lab
        done += len(batch)
        if on_batch:
            on_batch(len(batch))
    seconds = time.perf_counter() - t0
    out = {}
    for name, pred in preds.items():
        h = pipe.heads[name]
        r = {"classes": h.classes.tolist(), "labels": pred.tolist(),
             "predicted_counts": {str(k): int(v) for k, v in
                                  zip(*np.unique(pred, return_counts=True), strict=True)}}
        if y is not None:
            truth = y if h.classes.dtype.kind in "iu" else y.astype(str)  # names: "8" is 8
            idx = np.flatnonzero(np.isin(truth, h.classes))
            r["n_task"] = int(len(idx))
            r["accuracy"] = float(np.mean(pred[idx] == truth[idx])) if len(idx) else None
        out[name] = r
    return {"model": str(bundle), "encoder": "int8" if int8 else "float", "n": int(n),
            "threads": threads, "batch_size": batch_size, "seconds": seconds, "int8_note": note,
            "images_per_second": n / seconds if seconds else None,
            "time_split_seconds": pipe.timings.to_dict(), "heads": out}
