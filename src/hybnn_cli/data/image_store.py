"""Decoded images on disk, read by rows: what keeps `--data` image folders flat in memory.

An image folder is decoded once, in a streaming pass, into a uint8 `.npy` file (the store) in the
cache folder (an NPZ's images are copied there, member by member, in blocks of rows):
`$HYBNN_IMAGE_CACHE` if set, else `<user cache>/hybnn/images` (`XDG_CACHE_HOME` or `~/.cache`).
The store is named by the data's identity SHA-256 (`files`) and a key of the decoder (this
module's format version and Pillow's version), so a later command reading the same data finds
it, and other data or another decoder never does. It is written under a temporary name and
renamed when complete; deleting the folder is always safe (it is made again when needed).

`ImageRows` is the store seen as an array of images: `len`, `shape`, `ndim`, slicing (a lazy
view), and integer or boolean indexing (reads those rows). Rows are read with `os.preadv`, not
mapped: the process holds only the rows it asked for, whatever the store's size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path

FORMAT = "hybnn-decoded-images"
VERSION = 1


def cache_root() -> Path:
    """The folder of the stores."""
    if os.environ.get("HYBNN_IMAGE_CACHE"):
        return Path(os.environ["HYBNN_IMAGE_CACHE"])
    from hybnn_cli.data.datasets import cache_dir

    return cache_dir() / "images"


def store_path(sha256: str) -> Path:
    """Where the store of the data with identity `sha256` lives, for this decoder."""
    import PIL

    decoder = hashlib.sha256(f"{FORMAT} {VERSION} Pillow {PIL.__version__}".encode())
    return cache_root() / f"{sha256}-{decoder.hexdigest()[:12]}.npy"


def open_store(path: Path, n: int) -> ImageRows | None:
    """The store at `path` if it is a complete uint8 store of `n` images, else None."""
    try:
        m = np.load(path, mmap_mode="r")  # reads the header only; no page of data is touched
    except (OSError, ValueError, EOFError):
        return None
    if m.dtype != np.uint8 or m.ndim not in (3, 4) or len(m) != n or not m.flags.c_contiguous:
        return None
    rows = ImageRows(path, m.shape, m.offset)
    del m
    return rows


def write_store(path: Path, n: int, fill: Callable, item_shape: tuple | None = None
                ) -> ImageRows:
    """Write a store of `n` images at `path` through a temporary name. `fill(put)` calls
    put(row, images) for every row: one image, or a block of consecutive rows from `row` when
    `item_shape` (the shape of one image) is given; in any order. Without `item_shape` the first
    image fixes the shape of all (the caller checks that the others match)."""
    try:
        return _write_store(path, n, fill, item_shape)
    except OSError as e:
        raise HybnnError(f"{path}: cannot write the cache of decoded images "
                         f"({e.strerror or e}); free some space or point HYBNN_IMAGE_CACHE at "
                         f"another folder") from None


def _write_store(path: Path, n: int, fill: Callable, item_shape: tuple | None) -> ImageRows:
    state: dict = {}
    with atomic_path(path) as tmp, open(tmp, "r+b") as f:

        def start(item: tuple) -> None:
            shape = (n, *item)
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            state.update(offset=f.tell(), shape=shape, row_bytes=int(np.prod(item)))
            f.truncate(state["offset"] + n * state["row_bytes"])
            f.flush()

        def put(row: int, images: np.ndarray) -> None:
            if not state:
                start(images.shape)
            os.pwrite(f.fileno(), np.ascontiguousarray(images, dtype=np.uint8).tobytes(),
                      state["offset"] + row * state["row_bytes"])

        if item_shape is not None:
            start(tuple(item_shape))
        fill(put)
        if not state:
            start((0,))
    return ImageRows(path, state["shape"], state["offset"])


class ImageRows:
    """uint8 images (N, H, W) or (N, H, W, C) stored in a file, read on demand; see the module's
    text. `transform` (batch → batch, of `item_shape`) is applied to every batch read."""

    dtype = np.dtype(np.uint8)

    def __init__(self, path: Path, shape: tuple, offset: int, rows: range | None = None,
                 transform: Callable | None = None, item_shape: tuple | None = None):
        self.path, self.offset = Path(path), int(offset)
        self.stored_item = tuple(shape[1:])
        self.row_bytes = int(np.prod(self.stored_item))
        self.rows = range(shape[0]) if rows is None else rows
        self.transform = transform
        self.item_shape = self.stored_item if item_shape is None else tuple(item_shape)

    def _view(self, rows: range, transform=None, item_shape=None) -> ImageRows:
        return ImageRows(self.path, (0, *self.stored_item), self.offset, rows,
                         transform or self.transform, item_shape or self.item_shape)

    def with_transform(self, transform: Callable, item_shape: tuple) -> ImageRows:
        """The same rows, each batch passed through `transform` (after any earlier one)."""
        before = self.transform
        both = transform if before is None else (lambda batch: transform(before(batch)))
        return self._view(self.rows, both, item_shape)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple:
        return (len(self.rows), *self.item_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.item_shape)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._view(self.rows[key])
        if isinstance(key, (int, np.integer)):
            return self._read(np.array([self.rows[int(key)]]))[0]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} for {len(self)} images")
            idx = np.flatnonzero(idx)
        if idx.dtype.kind not in "iu" or idx.ndim != 1:
            raise IndexError(f"images are indexed by a slice, an integer or a 1-D integer or "
                             f"boolean array, not {idx.dtype} of {idx.ndim} dimensions")
        idx = np.where(idx < 0, idx + len(self), idx).astype(np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        return self._read(self.rows.start + idx * self.rows.step)

    def __array__(self, dtype=None, copy=None):
        out = self._read(np.asarray(self.rows, dtype=np.int64))
        return out if dtype is None else out.astype(dtype)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """The stored rows `rows` (absolute), consecutive runs read in one call each."""
        out = np.empty((len(rows), *self.stored_item), dtype=np.uint8)
        if len(rows):
            starts = np.concatenate([[0], np.flatnonzero(np.diff(rows) != 1) + 1])
            ends = np.append(starts[1:], len(rows))
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                        _read_into(fd, out[a:b], self.offset + int(rows[a]) * self.row_bytes)
                finally:
                    os.close(fd)
            except OSError as e:
                raise HybnnError(f"{self.path}: cannot read the cache of decoded images "
                                 f"({e.strerror or e}); delete it to decode the images again"
                                 ) from None
        return out if self.transform is None else self.transform(out)


def _read_into(fd: int, buf: np.ndarray, offset: int) -> None:
    view, done = memoryview(buf).cast("B"), 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"short read at offset {offset + done}")
        done += got
