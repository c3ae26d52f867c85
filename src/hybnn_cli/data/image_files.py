"""Image files to classify: IDX (optionally gzipped), PNG, JPEG and NPY, read in batches at the
shape an encoder takes (`hybnn_kernels.pipeline.InputShape`: a bundle's ``encoder.input``;
1×28×28 by default).

`open_images` checks every file up front from its header, without reading the pixels: readable,
uint8 (or float in [0, 1] in an NPY), and of the encoder's shape. A file's channels must be the
encoder's: a PNG or JPEG is read as training's reader reads an image folder
(`files.decode_image`: modes L, 1, LA as one channel, colour modes as RGB; never grayscale to
colour or colour to grayscale), an NPY holds (H, W), (N, H, W), (N, H, W, C) or (N, C, H, W)
arrays (C 1 or 3; (H, W, 3) is one colour image for a 3-channel encoder), an IDX file (N, H, W).
A size other than the encoder's is refused in one line naming the expected shape, unless the
encoder's training images were resized (``resize`` not "none"): then square images of any size
are resized by `labelled.resize_images`, the function that resized them for training, and
non-square ones are refused. `ImageSource.batches` then yields uint8 (b, H, W) or (b, H, W, C)
arrays at the encoder's shape, so a 60,000-image file is classified with memory flat in N: a raw
IDX or NPY file is read batch by batch with plain reads (not memory-mapped: every page of a
mapped file read once stays in the process's resident set, the whole file by the end), a gzipped
IDX is decompressed as a stream, a PNG or JPEG is one image. `expand_paths` lets a folder stand
for the image files inside it; `image_ids` names each image by its file (and its index in a file
of several). Torch-free.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hybnn_kernels.pipeline import InputShape

from hybnn_cli.errors import HybnnError

SIZE = (28, 28)  # the default encoder's images (`InputShape()`)
PICTURE_KINDS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}  # suffix → kind, one image each


@dataclass
class ImageSource:
    path: Path
    kind: str  # idx, idx.gz, npy, png, jpg
    n: int
    offset: int = 0  # IDX: bytes of header
    item: tuple = SIZE  # one image in the file: (H, W), (H, W, C), or (C, H, W) channels first
    target: InputShape = InputShape()
    channels_first: bool = False

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 arrays of at most batch_size images at the target's shape."""
        for raw in self._raw_batches(batch_size):
            yield self._fit(raw)

    def _raw_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        if self.kind in PICTURE_KINDS.values():
            from hybnn_cli.data.files import decode_image

            yield decode_image(self.path, _read(self.path))[None]
        elif self.kind in ("idx", "idx.gz"):
            with (gzip.open if self.kind == "idx.gz" else open)(self.path, "rb") as f:
                f.read(self.offset)
                yield from _read_rows(f, self.path, self.n, batch_size, np.dtype(np.uint8),
                                      self.item)
        else:
            yield from self._npy_batches(batch_size)

    def _fit(self, batch: np.ndarray) -> np.ndarray:
        """A batch as the file holds it → uint8 (b, H, W) or (b, H, W, C) at the target's shape."""
        if self.channels_first:
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        if batch.ndim == 4 and batch.shape[3] == 1:
            batch = batch[..., 0]
        if batch.shape[1:3] != (self.target.height, self.target.width):
            from hybnn_cli.data.labelled import resize_images

            batch = resize_images(batch, self.target.height)
        return batch

    def _npy_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                           np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if fortran and len(shape) > 1 and np.prod(shape[1:]) > 1:  # rows not contiguous
                arr = np.load(self.path, mmap_mode="r", allow_pickle=False).reshape(self.n,
                                                                                    *self.item)
                chunks = (np.asarray(arr[s:s + batch_size]) for s in range(0, self.n, batch_size))
            else:
                chunks = _read_rows(f, self.path, self.n, batch_size, dtype, self.item)
            for chunk in chunks:
                yield _npy_to_uint8(self.path, chunk)


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError as e:
        raise HybnnError(f"{p}: cannot read ({e.strerror or e})") from None


def _read_rows(f, path: Path, n: int, batch_size: int, dtype: np.dtype,
               item: tuple) -> Iterator[np.ndarray]:
    """(b, *item) arrays of `dtype` read from the file object f, batch_size images at a time."""
    row = int(np.prod(item)) * dtype.itemsize
    for s in range(0, n, batch_size):
        b = min(batch_size, n - s)
        raw = f.read(b * row)
        if len(raw) != b * row:
            raise HybnnError(f"{path}: truncated after {s + len(raw) // row} images")
        yield np.frombuffer(raw, dtype).reshape(b, *item)


def _npy_to_uint8(p: Path, arr: np.ndarray) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise HybnnError(f"{p}: float images must lie in [0, 1]")
        return np.round(arr * 255).astype(np.uint8)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def check_fit(p: Path, channels: int, height: int, width: int, target: InputShape) -> None:
    """Refuse, in one line, images of `channels` × `height` × `width` that `target` cannot take
    (module docstring: resized only when the encoder's training images were, and square)."""
    expected = f"expected {target.text()} images (channels × height × width)"
    got = f"got {channels}×{height}×{width}"
    if channels != target.channels:
        raise HybnnError(f"{p}: {expected}, {got}: the encoder was trained on "
                         f"{'grayscale' if target.channels == 1 else 'colour'} images")
    if (height, width) == (target.height, target.width):
        return
    if target.resize == "none":
        raise HybnnError(f"{p}: {expected}, {got} (images of another size are resized only "
                         f"for an encoder whose training images were)")
    from hybnn_cli.data.labelled import RESIZE

    if target.resize != RESIZE:
        raise HybnnError(f"{p}: the encoder's training images were resized by "
                         f"{target.resize!r}; this hybnn resizes by {RESIZE!r}")
    if height != width:
        raise HybnnError(f"{p}: {expected}, {got}; only square images are resized (as for "
                         f"training): crop them first")


def array_layout(p: Path, shape: tuple, what: str, target: InputShape) -> tuple:
    """(number of images, one image's shape in the file, channels first) of an array of `shape`,
    checked against `target` (module docstring); HybnnError in one line otherwise."""
    first = False
    if len(shape) == 2:
        shape = (1, *shape)
    elif len(shape) == 3 and target.channels == 3 and shape[2] == 3:
        shape = (1, *shape)  # one colour image (H, W, 3)
    if len(shape) == 4 and shape[3] not in (1, 3) and shape[1] in (1, 3):
        first = True
        c, h, w = shape[1:]
    elif len(shape) == 4:
        h, w, c = shape[1:]
    elif len(shape) == 3:
        c, h, w = 1, *shape[1:]
    else:
        raise HybnnError(f"{p}: {what} has shape {shape}; expected images (N, H, W), "
                         f"(N, H, W, C) or (N, C, H, W)")
    check_fit(p, c, h, w, target)
    return int(shape[0]), tuple(shape[1:]), first


def _open_picture(p: Path, target: InputShape) -> ImageSource:
    from PIL import Image, UnidentifiedImageError

    from hybnn_cli.data.files import mode_channels

    try:
        with Image.open(p) as img:
            (w, h), mode = img.size, img.mode
    except (UnidentifiedImageError, OSError) as e:
        raise HybnnError(f"{p}: not a readable image ({e})") from None
    c = mode_channels(mode)
    if c is None:
        raise HybnnError(f"{p}: image mode {mode} is not supported; use 8-bit grayscale or RGB")
    check_fit(p, c, h, w, target)
    return ImageSource(p, PICTURE_KINDS[p.suffix.lower()], 1, item=(h, w) if c == 1 else (h, w, c),
                       target=target)


def _open_one(p: Path, target: InputShape) -> ImageSource:
    if not p.is_file():
        raise HybnnError(f"{p}: no such image file")
    name = p.name.lower()
    if p.suffix.lower() in PICTURE_KINDS:
        return _open_picture(p, target)
    if name.endswith(".npy"):
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise HybnnError(f"{p}: not a readable NPY file ({e})") from None
        if not (arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)):
            raise HybnnError(f"{p}: images must be uint8 or float in [0, 1], got {arr.dtype}")
        n, item, first = array_layout(p, arr.shape, "the array", target)
        return ImageSource(p, "npy", n, item=item, target=target, channels_first=first)
    return _open_idx(p, target)


def _open_idx(p: Path, target: InputShape) -> ImageSource:
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
            n, item, first = array_layout(p, shape, "the IDX array", target)
            if not gz:
                size, want = p.stat().st_size - 4 - 4 * dims, n * int(np.prod(item))
                if size != want:
                    what = "truncated" if size < want else "has trailing bytes"
                    raise HybnnError(f"{p}: {what}: header says {shape}, file has {size} bytes "
                                     f"of data")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise HybnnError(f"{p}: cannot read ({e})") from None
    return ImageSource(p, "idx.gz" if gz else "idx", n, 4 + 4 * dims, item, target, first)


FOLDER_SUFFIXES = (*PICTURE_KINDS, ".npy")  # what a folder stands for, besides IDX (named *idx*)


def expand_paths(paths: list[Path]) -> list[Path]:
    """The files given, a folder standing for its PNG, JPEG, NPY and IDX files (names holding
    "idx"), in name order, hidden files left out."""
    out = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and (
            f.name.lower().endswith(FOLDER_SUFFIXES) or "idx" in f.name.lower()))
        if not found:
            raise HybnnError(f"{p}: a folder with no PNG, JPEG, NPY or IDX image files")
        out.extend(found)
    return out


def image_ids(files: list[dict]) -> Iterator[str]:
    """Each image's name, in order, from `describe(sources)`: its file's path, with `:i` (from 0)
    appended in a file that holds several (IDX, NPY)."""
    for f in files:
        if f["kind"] in PICTURE_KINDS.values():
            yield f["path"]
        else:
            yield from (f"{f['path']}:{i}" for i in range(f["images"]))


def describe(sources: list[ImageSource]) -> list[dict]:
    """The files read, in order: path, kind and number of images (JSON-ready)."""
    return [{"path": str(s.path), "kind": s.kind, "images": s.n} for s in sources]


def open_images(paths: list[Path], target: InputShape = InputShape()) -> list[ImageSource]:
    """Check every file's header against `target` (the encoder's input); refuse an input with no
    images."""
    sources = [_open_one(Path(p), target) for p in paths]
    if sum(s.n for s in sources) == 0:
        raise HybnnError("no images given" if not paths else
                         f"no images in {', '.join(str(p) for p in paths)}")
    return sources


def iter_batches(sources: list[ImageSource], batch_size: int) -> Iterator[np.ndarray]:
    """uint8 (b, H, W) or (b, H, W, C) batches (the sources' target shape) of at most batch_size
    images over all sources, in order."""
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
