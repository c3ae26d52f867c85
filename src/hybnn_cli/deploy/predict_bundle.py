"""Prediction from a deploy bundle: image files in, classes out, without torch (and without numba in
the base install).

The bundle's encoder runs in ONNX Runtime, the heads on the XNOR kernels where numba imports and on
the numpy head otherwise (`hybnn_kernels.pipeline`; the result's ``head_kernel`` says which);
images are read batch by batch at the bundle's input shape (`image_files`: resized when the
bundle's encoder was trained on resized images, refused when they do not fit), so memory stays flat
in the number of images except for the labels themselves, kept in the smallest integer type that
holds the head's classes (one or two bytes per image and head) and written out in slices
(`write_json`, `write_rows`): never a Python list of every label. With `labels` (an IDX labels
file), each head's accuracy on the images of its classes is reported too; a prototype head's
classes are names (`hybnn learn-class`), matched with the label's decimal digits ("8" for label 8).
Nothing here imports torch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from hybnn_cli.data.image_files import describe, expand_paths, image_ids, iter_batches, open_images
from hybnn_cli.errors import HybnnError

DEFAULT_BATCH = 256  # = hybnn_kernels.pipeline.DEFAULT_BATCH (tests check), without importing it
_SLICE = 8192  # labels per piece of output


def load(bundle: Path, threads: int, int8: bool = False, heads: list[str] | None = None):
    from hybnn_kernels.pipeline import BundleError, load_bundle

    try:
        return load_bundle(bundle, threads, int8, heads or None)
    except BundleError as e:
        raise HybnnError(str(e)) from None


def bundle_input(bundle: Path):
    """The `InputShape` the bundle's encoder takes, from its manifest (checked, files not yet)."""
    from hybnn_kernels.pipeline import BundleError, input_shape, read_manifest

    try:
        return input_shape(read_manifest(bundle))
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


def label_dtype(classes: np.ndarray) -> np.dtype:
    """The smallest signed integer type that holds every one of `classes`; class names (a
    prototype head's) keep their own string type."""
    if classes.dtype.kind not in "iu":
        return classes.dtype
    lo, hi = (int(classes.min()), int(classes.max())) if len(classes) else (0, 0)
    for t in (np.int8, np.int16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return np.dtype(t)
    return np.dtype(np.int64)


def shown_names(entry: dict | None, classes: np.ndarray) -> np.ndarray | None:
    """The names a BNN head's manifest entry records for its classes (`class_names`, as a task
    made with `--classes cat,dog` keeps them), or None when it records none or they are only the
    class numbers written out ("3", "8" for MNIST's digits): then the numbers are printed."""
    names = (entry or {}).get("class_names")
    if not names or len(names) != len(classes) or classes.dtype.kind not in "iu":
        return None
    if [str(n) for n in names] == [str(c) for c in classes.tolist()]:
        return None
    return np.asarray([str(n) for n in names])


def _positions(classes: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The position in `classes` of each predicted class (every one of `pred` is in `classes`)."""
    order = np.argsort(classes, kind="stable")
    return order[np.searchsorted(classes[order], pred)]


def predict_bundle(bundle: Path, images: list[Path], threads: int = 2, int8: bool = False,
                   heads: list[str] | None = None, batch_size: int = DEFAULT_BATCH,
                   labels: Path | None = None,
                   on_start: Callable[[int], None] | None = None,
                   on_batch: Callable[[int], None] | None = None) -> dict:
    """Classify every image of `images` with the bundle's heads (all, or those named). Each head's
    ``labels`` is a numpy array (`label_dtype`): `write_json` and `write_rows` print them."""
    if batch_size < 1:
        raise HybnnError(f"--batch-size must be >= 1, got {batch_size}")
    sources = open_images(expand_paths(images), bundle_input(bundle))
    n = sum(s.n for s in sources)
    y = read_labels(labels, n) if labels is not None else None
    pipe = load(bundle, threads, int8, heads)
    note = int8_slower_note(pipe.manifest, min(batch_size, n)) if int8 else None
    if on_start:
        on_start(n)
    preds = {name: np.empty(n, dtype=label_dtype(h.classes)) for name, h in pipe.heads.items()}
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
        names = shown_names(pipe.manifest.get("heads", {}).get(name), h.classes)
        shown = pred if names is None else names[_positions(h.classes, pred)]
        r = {"classes": h.classes.tolist(), "labels": shown,
             "predicted_counts": {str(k): int(v) for k, v in
                                  zip(*np.unique(shown, return_counts=True), strict=True)}}
        if names is not None:
            r["class_names"] = names.tolist()
        if y is not None:
            truth = y if h.classes.dtype.kind in "iu" else y.astype(str)  # names: "8" is 8
            idx = np.flatnonzero(np.isin(truth, h.classes))
            r["n_task"] = int(len(idx))
            r["accuracy"] = float(np.mean(pred[idx] == truth[idx])) if len(idx) else None
        out[name] = r
    return {"model": str(bundle), "encoder": "int8" if int8 else "float",
            "head_kernel": pipe.head_kernel(), "n": int(n),
            "threads": threads, "batch_size": batch_size, "seconds": seconds, "int8_note": note,
            "images_per_second": n / seconds if seconds else None, "files": describe(sources),
            "time_split_seconds": pipe.timings.to_dict(), "heads": out}


def _labels_json(labels: np.ndarray) -> Iterator[str]:
    """A JSON array of `labels`, in pieces of `_SLICE` numbers."""
    text = str if labels.dtype.kind in "iu" else json.dumps  # class names are JSON strings
    yield "["
    for s in range(0, len(labels), _SLICE):
        yield ("" if s == 0 else ", ") + ", ".join(map(text, labels[s:s + _SLICE].tolist()))
    yield "]"


def write_json(result: dict, write: Callable[[str], object]) -> None:
    """`predict_bundle`'s result as JSON (indented as `print_json` indents, each head's labels on
    one line), written in pieces through `write`: the labels never become one Python list."""
    # placeholders no path or name can hold (a NUL), swapped for the labels as the text is written
    marks = {f"\0labels-{i}": h["labels"] for i, h in enumerate(result["heads"].values())}
    heads = {name: {**h, "labels": mark} for (name, h), mark in
             zip(result["heads"].items(), marks, strict=True)}
    by_image = "\0by-image"
    text = json.dumps({**result, "heads": heads, "by_image": by_image}, indent=2, default=str)
    for mark, labels in marks.items():
        before, text = text.split(json.dumps(mark), 1)
        write(before)
        for piece in _labels_json(labels):
            write(piece)
    before, text = text.split(json.dumps(by_image), 1)
    write(before)
    for piece in _by_image_json(result):
        write(piece)
    write(text + "\n")


def _by_image_json(result: dict) -> Iterator[str]:
    """A JSON object keyed by image (`image_files.image_ids`: the file's path, `path:i` in a file
    of several), each value {head: label}, in pieces of `_SLICE` images."""
    names = list(result["heads"])
    ids = image_ids(result["files"])
    yield "{"
    for s in range(0, result["n"], _SLICE):
        cols = [result["heads"][h]["labels"][s:s + _SLICE].tolist() for h in names]
        yield ("" if s == 0 else ", ") + ", ".join(
            f"{json.dumps(next(ids))}: {json.dumps(dict(zip(names, row, strict=True)))}"
            for row in zip(*cols, strict=True))
    yield "}"


def write_rows(result: dict, write: Callable[[str], object]) -> None:
    """One tab-separated line per image (its name, `image_files.image_ids`, then each head's
    label), in slices."""
    names = list(result["heads"])
    ids = image_ids(result["files"])
    write("# image\t" + "\t".join(names) + "\n")
    for s in range(0, result["n"], _SLICE):
        cols = [result["heads"][h]["labels"][s:s + _SLICE].tolist() for h in names]
        write("".join(f"{next(ids)}\t" + "\t".join(map(str, row)) + "\n"
                      for row in zip(*cols, strict=True)))
