"""Image files to classify: IDX (optionally gzipped), PNG and NPY, read in batches.

`open_images` checks every file up front (readable, 28×28, one channel, uint8 or float in
[0, 1]) from its header, without reading the pixels; `ImageSource.batches` then yields uint8
(b, 28, 28) arrays, so a 60,000-image file is classified with memory flat in N: a raw IDX or NPY
file is read batch by batch with plain reads (not memory-mapped: every page of a mapped file
read once stays in the process's resident set, the whole file by the end), a gzipped IDX is
decompressed as a stream, a PNG is one image. `expand_paths` lets a folder stand for the image
files inside it; `image_ids` names each image by its file (and its index in a file of several).
Torch-free.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybnn_cli.errors import HybnnError

SIZE = (28, 28)
_PNG_MODES = ("L", "1")  # 8-bit grayscale, and 1-bit black and white


@dataclass
class ImageSource:
    path: Path
    kind: str  # idx, idx.gz, npy, png
    n: int
    offset: int = 0  # IDX: bytes of header

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        if self.kind == "png":
            yield _read_png(self.path)
        elif self.kind in ("idx", "idx.gz"):
            with (gzip.open if self.kind == "idx.gz" else open)(self.path, "rb") as f:
                f.read(self.offset)
                yield from _read_rows(f, self.path, self.n, batch_size, np.dtype(np.uint8))
        else:
            yield from self._npy_batches(batch_size)

    def _npy_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                           np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if fortran and len(shape) > 1 and np.prod(shape[1:]) > 1:  # rows not contiguous
                arr = np.load(self.path, mmap_mode="r", allow_pickle=False).reshape(self.n, *SIZE)
                chunks = (np.asarray(arr[s:s + batch_size]) for s in range(0, self.n, batch_size))
            else:
                chunks = _read_rows(f, self.path, self.n, batch_size, dtype)
            for chunk in chunks:
                yield _npy_to_uint8(self.path, chunk)


def _read_rows(f, path: Path, n: int, batch_size: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """(b, 28, 28) arrays of `dtype` read from the file object f, batch_size images at a time."""
    row = SIZE[0] * SIZE[1] * dtype.itemsize
    for s in range(0, n, batch_size):
        b = min(batch_size, n - s)
        raw = f.read(b * row)
        if len(raw) != b * row:
            raise HybnnError(f"{path}: truncated after {s + len(raw) // row} images")
        yield np.frombuffer(raw, dtype).reshape(b, *SIZE)


def _read_png(p: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as img:
            img.load()
            return np.asarray(img.convert("L"))[None]
    except (UnidentifiedImageError, OSError) as e:
        raise HybnnError(f"{p}: not a readable PNG ({e})") from None


def _npy_to_uint8(p: Path, arr: np.ndarray) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise HybnnError(f"{p}: float images must lie in [0, 1]")
        return np.round(arr * 255).astype(np.uint8)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _check_shape(p: Path, shape: tuple, what: str) -> int:
    """Number of images in an array of `shape`: (28, 28), (N, 28, 28) or (N, 1, 28, 28)."""
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) == 4 and shape[-1] in (1, 2, 3, 4) and shape[1:3] == SIZE:
        if shape[-1] != 1:
            raise HybnnError(f"{p}: {what} has {shape[-1]} channels; expected 1 (grayscale)")
        shape = (shape[0], *shape[1:3])
    elif len(shape) == 4 and shape[2:] == SIZE:
        if shape[1] != 1:
            raise HybnnError(f"{p}: {what} has {shape[1]} channels; expected 1 (grayscale)")
        shape = (shape[0], *shape[2:])
    if len(shape) != 3 or shape[1:] != SIZE:
        raise HybnnError(f"{p}: expected 28×28 images, got shape {shape}")
    return int(shape[0])


def _open_one(p: Path) -> ImageSource:
    if not p.is_file():
        raise HybnnError(f"{p}: no such image file")
    name = p.name.lower()
    if name.endswith(".png"):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as img:
                size, mode, bands = img.size, img.mode, len(img.getbands())
        except (UnidentifiedImageError, OSError) as e:
            raise HybnnError(f"{p}: not a readable PNG ({e})") from None
        if mode not in _PNG_MODES:
            raise HybnnError(f"{p}: a {mode} image ({bands} channel{'s' * (bands > 1)}); "
                             f"expected one 8-bit grayscale channel (mode L)")
        if size != SIZE:
            raise HybnnError(f"{p}: expected 28×28 images, got {size[0]}×{size[1]}")
        return ImageSource(p, "png", 1)
    if name.endswith(".npy"):
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise HybnnError(f"{p}: not a readable NPY file ({e})") from None
        if not (arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)):
            raise HybnnError(f"{p}: images must be uint8 or float in [0, 1], got {arr.dtype}")
        return ImageSource(p, "npy", _check_shape(p, arr.shape, "the array"))
    return _open_idx(p)


def _open_idx(p: Path) -> ImageSource:
    try:
        with open(p, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        with opener(p, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise HybnnError(f"{p}: wrong magic number {head.hex() or '(empty file)'}, "
                                 f"not an unsigned-byte IDX file")
            dims = head[3]
            raw = f.read(4 * dims)
            if len(raw) < 4 * dims:
                raise HybnnError(f"{p}: truncated header")
            shape = tuple(int.from_bytes(raw[4 * i:4 * i + 4], "big") for i in range(dims))
            n = _check_shape(p, shape, "the IDX array")
            if not gz:
                size = p.stat().st_size - 4 - 4 * dims
                if size != n * SIZE[0] * SIZE[1]:
                    what = "truncated" if size < n * SIZE[0] * SIZE[1] else "has trailing bytes"
                    raise HybnnError(f"{p}: {what}: header says {shape}, file has {size} bytes "
                                     f"of data")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise HybnnError(f"{p}: cannot read ({e})") from None
    return ImageSource(p, "idx.gz" if gz else "idx", n, 4 + 4 * dims)


FOLDER_SUFFIXES = (".png", ".npy")  # the files a folder stands for, besides IDX ones (named *idx*)


def expand_paths(paths: list[Path]) -> list[Path]:
    """The files given, a folder standing for its PNG, NPY and IDX files (names holding "idx"),
    in name order, hidden files left out."""
    out = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and (
            f.name.lower().endswith(FOLDER_SUFFIXES) or "idx" in f.name.lower()))
        if not found:
            raise HybnnError(f"{p}: a folder with no PNG, NPY or IDX image files")
        out.extend(found)
    return out


def image_ids(files: list[dict]) -> Iterator[str]:
    """Each image's name, in order, from `describe(sources)`: its file's path, with `:i` (from 0)
    appended in a file that holds several (IDX, NPY)."""
    for f in files:
        if f["kind"] == "png":
            yield f["path"]
        else:
            yield from (f"{f['path']}:{i}" for i in range(f["images"]))


def describe(sources: list[ImageSource]) -> list[dict]:
    """The files read, in order: path, kind and number of images (JSON-ready)."""
    return [{"path": str(s.path), "kind": s.kind, "images": s.n} for s in sources]


def open_images(paths: list[Path]) -> list[ImageSource]:
    """Check every file's header; refuse an input with no images."""
    sources = [_open_one(Path(p)) for p in paths]
    if sum(s.n for s in sources) == 0:
        raise HybnnError("no images given" if not paths else
                         f"no images in {', '.join(str(p) for p in paths)}")
    return sources


def iter_batches(sources: list[ImageSource], batch_size: int) -> Iterator[np.ndarray]:
    """uint8 (b, 28, 28) batches of at most batch_size images over all sources, in order."""
    buf, have = [], 0
    for src in sources:
        for arr in src.batches(batch_size):
            while len(arr):
                take = arr[:batch_size - have]
                arr = arr[len(take):]
                buf.append(take)
                have += len(take)
                if have == batch_size:
                    yield np.concatenate(buf) if len(buf) > 1 else buf[0]
                    buf, have = [], 0
    if have:
        yield np.concatenate(buf) if len(buf) > 1 else buf[0]
