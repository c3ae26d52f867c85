"""Labelled data sets from files (`--data PATH`), read into a `labelled.LabelledSet`.

Three layouts:
- an image folder: `PATH/train/<class>/*.png|jpg|jpeg` and `PATH/test/<class>/…`, or one folder of
  class subfolders `PATH/<class>/…`, split per class by a seeded permutation (`SPLIT_SEED`): of a
  class's n images, round(test_fraction · n) go to `test`, the rest to `train`. Class names are
  the sorted folder names, label i = the i-th name; within a class, images are in the sorted
  order of their file names. Grayscale images (modes L, 1, LA) give (H, W) arrays; colour ones
  (RGB, RGBA, P, …) give (H, W, 3). All images of a set must share one size and channel count;
- an NPZ with `x_train`, `y_train`, `x_test`, `y_test` (uint8 images N×H×W or N×H×W×C with C 1 or
  3; integer labels) and optionally `class_names` (else the classes are 0..max label);
- a folder of IDX pairs named like MNIST's (`train-images-idx3-ubyte[.gz]`,
  `train-labels-idx1-ubyte[.gz]`, `t10k-…`); classes 0..max label, named by their numbers.

Identity: a SHA-256 over the files in the sorted order of their paths relative to PATH, each as
its relative path, its length and its bytes (an NPZ: its bytes alone, so that a renamed file keeps
its identity; an IDX folder: its four files in the order train images, train labels, test images,
test labels), and for a split folder the split's test fraction and seed, which decide what
`test` holds.

Streaming: an image folder is read file by file and never held whole. A first pass hashes the
files (the identity); their images are then found in the cache of decoded images
(`image_store`, keyed by the identity) or decoded into it in a second pass, file by file, whose
bytes must hash to the same identity. The splits' images are `image_store.ImageRows` (train
rows first, then test, each in the order above), read by batch on demand. `on_file(n, stage)`
reports files hashed (stage "hash") and decoded ("decode"). An NPZ's images are copied into the
same cache in blocks of rows (its labels are loaded); an IDX folder is read whole.

Bad input is refused with one line (`HybnnError`): an empty folder, a class with no images or no
test images, a file that is not an image, an unreadable or truncated image, images of mixed
sizes or channel counts, a missing NPZ key, labels outside the classes.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
from hybnn_kernels.pipeline import file_sha256

from hybnn_cli.data.image_store import ImageRows, open_store, store_path, write_store
from hybnn_cli.data.labelled import SPLIT_SEED, LabelledSet
from hybnn_cli.errors import HybnnError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MAX_CLASSES = 256  # labels are stored as one byte
_GRAY, _COLOUR = ("L", "1", "LA"), ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "RGBX")


def read_files(path: Path, test_fraction: float, on_file=None) -> LabelledSet:
    """The labelled set at `path` (a folder or an NPZ file), checked; see the module's text."""
    if not path.exists():
        raise HybnnError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise HybnnError(f"{path}: --data takes a folder of images, a folder of IDX files "
                             f"or an .npz file")
        return read_npz(path)
    if _idx_file(path, IDX_FILES["train"][0]) is not None:
        return read_idx_folder(path)
    return read_image_folder(path, test_fraction, on_file)


# ── image folders ─────────────────────────────────────────────────────────────────────────────
def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _class_files(root: Path, where: str) -> dict[str, list[Path]]:
    """{class name: sorted image files} of the class subfolders of `root`."""
    entries = _entries(root)
    if not entries:
        raise HybnnError(f"{root}: empty folder; {where} needs class subfolders "
                         f"(<class>/*.png, .jpg or .jpeg)")
    classes = {}
    for entry in entries:
        if not entry.is_dir():
            raise HybnnError(f"{entry}: a file where {where} holds only class subfolders")
        files = _entries(entry)
        for f in files:
            if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
                raise HybnnError(f"{f}: not an image file (.png, .jpg or .jpeg)")
        if not files:
            raise HybnnError(f"{entry}: class '{entry.name}' holds no images")
        classes[entry.name] = files
    if len(classes) > MAX_CLASSES:
        raise HybnnError(f"{root}: {len(classes)} classes; at most {MAX_CLASSES} are supported")
    return classes


def read_image_folder(root: Path, test_fraction: float, on_file=None) -> LabelledSet:
    """An image folder: train/ and test/ of class subfolders, or class subfolders to split."""
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    if presplit:
        train, test = (_class_files(root / s, f"{root}/{s}") for s in ("train", "test"))
        names = tuple(sorted(train))
        for name in test:
            if name not in train:
                raise HybnnError(f"{root / 'test' / name}: class '{name}' has no training "
                                 f"images ({root / 'train' / name} is missing)")
        for name in names:
            if name not in test:
                raise HybnnError(f"{root}: class '{name}' has no test images "
                                 f"({root / 'test' / name} is missing)")
        parts = {"train": train, "test": test}
    else:
        classes = _class_files(root, str(root))
        names = tuple(sorted(classes))
        parts = _split_classes(root, classes, test_fraction)
    files = sorted({f for part in parts.values() for fs in part.values() for f in fs})
    h = _hash_files(root, files, on_file)
    content = h.hexdigest()
    source = {"path": str(root), "kind": "folder", "n_files": len(files)}
    if not presplit:
        h.update(f"split test_fraction={test_fraction!r} seed={SPLIT_SEED}".encode())
        source.update(kind="folder-split", test_fraction=test_fraction, split_seed=SPLIT_SEED)
    order = [f for split in ("train", "test") for name in names for f in parts[split][name]]
    images = _decoded(root, files, order, h.hexdigest(), content, on_file)
    arrays, start = {}, 0
    for split, part in parts.items():
        y = np.asarray([i for i, name in enumerate(names) for _ in part[name]], dtype=np.uint8)
        arrays[split] = (images[start:start + len(y)], y)
        start += len(y)
    return LabelledSet(f"files:{root.resolve().name}", names, h.hexdigest(), source, arrays)


def _split_classes(root: Path, classes: dict[str, list[Path]], fraction: float) -> dict:
    """Per class, round(fraction · n) files (a seeded permutation) to test, the rest to train."""
    if not 0.0 < fraction < 1.0:
        raise HybnnError(f"--test-fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict = {"train": {}, "test": {}}
    for name in sorted(classes):
        files = classes[name]
        n_test = int(round(fraction * len(files)))
        if n_test == 0 or n_test == len(files):
            what = "no test images" if n_test == 0 else "no training images"
            raise HybnnError(f"{root / name}: class '{name}' has {what} with --test-fraction "
                             f"{fraction} of its {len(files)} image(s); add images or split the "
                             f"folder into train/ and test/ yourself")
        test = set(rng.permutation(len(files))[:n_test].tolist())
        parts["test"][name] = [f for i, f in enumerate(files) if i in test]
        parts["train"][name] = [f for i, f in enumerate(files) if i not in test]
    return parts


def _read_bytes(root: Path, f: Path, h) -> bytes:
    """The bytes of `f`, hashed into `h` (relative path, length, bytes)."""
    try:
        raw = f.read_bytes()
    except OSError as e:
        raise HybnnError(f"{f}: cannot read ({e.strerror or e})") from None
    rel = f.relative_to(root).as_posix().encode()
    h.update(len(rel).to_bytes(8, "little") + rel + len(raw).to_bytes(8, "little") + raw)
    return raw


def _hash_files(root: Path, files: list[Path], on_file=None):
    """The SHA-256 of `files` (in this order), read one at a time; `on_file(n, "hash")`."""
    h = hashlib.sha256()
    for f in files:
        _read_bytes(root, f, h)
        if on_file:
            on_file(1, "hash")
    return h


def _decoded(root: Path, files: list[Path], order: list[Path], sha: str, content: str,
             on_file=None) -> ImageRows:
    """The images of `order` as rows of the store of identity `sha` (`image_store`): found in
    the cache, or decoded there now, file by file in the order of `files` (whose bytes must
    still hash to `content`); one size for all; `on_file(n, "decode")`."""
    path = store_path(sha)
    found = open_store(path, len(order))
    if found is not None:
        return found
    row_of = {f: i for i, f in enumerate(order)}

    def fill(put) -> None:
        h, first = hashlib.sha256(), None
        for f in files:
            arr = decode_image(f, _read_bytes(root, f, h))
            if first is None:
                first = (f, arr.shape)
            elif arr.shape != first[1]:
                raise HybnnError(f"{f}: {_shape_text(arr.shape)} but {first[0]} is "
                                 f"{_shape_text(first[1])}; all images of a data set must have "
                                 f"one size and channel count")
            put(row_of[f], arr)
            if on_file:
                on_file(1, "decode")
        if h.hexdigest() != content:
            raise HybnnError(f"{root}: files changed while they were read; read them again")

    return write_store(path, len(order), fill)


def _shape_text(shape: tuple) -> str:
    channels = "grayscale" if len(shape) == 2 else f"{shape[2]} channels"
    return f"{shape[1]}×{shape[0]} {channels}"


def mode_channels(mode: str) -> int | None:
    """The channels `decode_image` gives an image of PIL `mode`: 1 (grayscale modes), 3 (colour
    modes), None (a mode it refuses)."""
    return 1 if mode in _GRAY else 3 if mode in _COLOUR else None


def decode_image(path: Path, raw: bytes) -> np.ndarray:
    """uint8 (H, W) for a grayscale image, (H, W, 3) for a colour one; HybnnError otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            if img.mode in _GRAY:
                return np.asarray(img.convert("L"))
            if img.mode in _COLOUR:
                return np.asarray(img.convert("RGB"))
            mode = img.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise HybnnError(f"{path}: not a readable image ({str(e).splitlines()[0]})") from None
    raise HybnnError(f"{path}: image mode {mode} is not supported; use 8-bit grayscale or RGB")


# ── NPZ ───────────────────────────────────────────────────────────────────────────────────────
def read_npz(path: Path) -> LabelledSet:
    """An NPZ of x_train, y_train, x_test, y_test (and optionally class_names), checked. The
    labels are loaded; the images are copied, in blocks of rows, into the store of the file's
    identity (`image_store`; found there when copied before) and read from it on demand."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise HybnnError(f"{path}: missing key{'s' * (len(missing) > 1)} "
                                 f"{', '.join(missing)} (it has: {', '.join(z.files) or 'none'})")
            got = {k: z[k] for k in ("y_train", "y_test", "class_names") if k in z.files}
            headers = {k: _npy_header(z, k) for k in ("x_train", "x_test")}
    except HybnnError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise HybnnError(f"{path}: not a readable NPZ file ({str(e).splitlines()[0]})") from None
    names = _npz_class_names(path, got)
    shapes = {s: _npz_images(path, headers[f"x_{s}"], f"x_{s}") for s in ("train", "test")}
    labels = {s: _npz_labels(path, got[f"y_{s}"], f"y_{s}", shapes[s][0], names)
              for s in ("train", "test")}
    if shapes["train"][1:] != shapes["test"][1:]:
        raise HybnnError(f"{path}: x_train images are {shapes['train'][1:]} but x_test "
                         f"images {shapes['test'][1:]}")
    sha = file_sha256(path)
    n_train, n = shapes["train"][0], shapes["train"][0] + shapes["test"][0]
    rows = open_store(store_path(sha), n)
    if rows is None:
        rows = write_store(store_path(sha), n, lambda put: _copy_npz_images(path, shapes, put),
                           shapes["train"][1:])
    arrays = {"train": (rows[:n_train], labels["train"]), "test": (rows[n_train:], labels["test"])}
    source = {"path": str(path), "kind": "npz"}
    return LabelledSet(f"files:{path.name}", names, sha, source, arrays)


def _npy_header(z, key: str) -> tuple:
    """(shape, fortran order, dtype) of the array `key` of an open NPZ, from its header alone."""
    with z.zip.open(f"{key}.npy") as f:
        return _read_npy_header(f)


def _read_npy_header(f) -> tuple:
    """(shape, fortran order, dtype) from an open .npy stream, left at the start of the data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)  # versions 2 and 3 share the layout


def _copy_npz_images(path: Path, shapes: dict, put, block_bytes: int = 1 << 24) -> None:
    """x_train's rows, then x_test's, through `put(row, block)` in blocks of about
    `block_bytes` (an array in Fortran order, rare, is loaded whole)."""
    start = 0
    with np.load(path, allow_pickle=False) as z:
        for split in ("train", "test"):
            key, shape = f"x_{split}", shapes[split]
            item = int(np.prod(shape[1:]))
            with z.zip.open(f"{key}.npy") as f:
                _, fortran, _ = _read_npy_header(f)
                if fortran:
                    put(start, np.ascontiguousarray(z[key]).reshape(shape))
                else:
                    per = max(1, block_bytes // max(item, 1))
                    for a in range(0, shape[0], per):
                        k = min(per, shape[0] - a)
                        raw = f.read(k * item)
                        if len(raw) != k * item:
                            raise HybnnError(f"{path}: {key} is truncated")
                        put(start + a, np.frombuffer(raw, np.uint8).reshape(k, *shape[1:]))
            start += shape[0]


def _npz_class_names(path: Path, got: dict) -> tuple[str, ...]:
    if "class_names" in got:
        names = got["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US" or len(names) < 1:
            raise HybnnError(f"{path}: class_names must be a 1-D array of strings")
        names = tuple(str(n.decode() if isinstance(n, bytes) else n) for n in names)
        if len(set(names)) != len(names):
            raise HybnnError(f"{path}: class_names names a class twice")
    else:
        labels = [got[k] for k in ("y_train", "y_test") if got[k].size]
        top = max((int(np.max(y)) for y in labels if y.dtype.kind in "iu"), default=0)
        names = tuple(str(i) for i in range(min(top, MAX_CLASSES) + 1))
    if len(names) > MAX_CLASSES:
        raise HybnnError(f"{path}: {len(names)} classes; at most {MAX_CLASSES} are supported")
    return names


def _npz_images(path: Path, header: tuple, key: str) -> tuple:
    """The shape the images `key` are read as (N, H, W) or (N, H, W, 3), from the array's header
    (a trailing channel of one dropped); HybnnError when they are not uint8 images."""
    shape, _, dtype = header
    if dtype != np.uint8:
        raise HybnnError(f"{path}: {key} must be uint8 images, got {dtype}")
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 3)):
        raise HybnnError(f"{path}: {key} has shape {tuple(shape)}; expected N×H×W or N×H×W×C "
                         f"with C 1 or 3")
    if shape[0] == 0:
        raise HybnnError(f"{path}: {key} holds no images")
    return tuple(int(d) for d in shape)


def _npz_labels(path: Path, y: np.ndarray, key: str, n: int, names: tuple) -> np.ndarray:
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise HybnnError(f"{path}: {key} must be a 1-D integer array, got {y.ndim}-D {y.dtype}")
    if len(y) != n:
        raise HybnnError(f"{path}: {key} has {len(y)} labels for {n} images")
    bad = np.flatnonzero((y < 0) | (y >= len(names)))
    if len(bad):
        raise HybnnError(f"{path}: {key} holds {y[bad[0]]} (at index {bad[0]}), outside the "
                         f"{len(names)} classes 0..{len(names) - 1}")
    return y.astype(np.uint8)


# ── IDX pairs ─────────────────────────────────────────────────────────────────────────────────
def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_idx_folder(folder: Path) -> LabelledSet:
    """A folder of IDX pairs named like MNIST's; classes 0..max label."""
    from hybnn_cli.data.datasets import read_idx

    h, arrays = hashlib.sha256(), {}
    for split, names in IDX_FILES.items():
        found = [_idx_file(folder, n) for n in names]
        for n, f in zip(names, found, strict=True):
            if f is None:
                raise HybnnError(f"{folder}: {n}[.gz] is missing (an IDX folder holds "
                                 f"{', '.join(n for pair in IDX_FILES.values() for n in pair)})")
        x, y = read_idx(found[0], ndim=3), read_idx(found[1], ndim=1)
        if len(x) != len(y):
            raise HybnnError(f"{folder}: {split} has {len(x)} images but {len(y)} labels")
        arrays[split] = (x, y)
        for f in found:
            raw, rel = f.read_bytes(), f.name.encode()
            h.update(len(rel).to_bytes(8, "little") + rel + len(raw).to_bytes(8, "little") + raw)
    if arrays["train"][0].shape[1:] != arrays["test"][0].shape[1:]:
        raise HybnnError(f"{folder}: train images are {arrays['train'][0].shape[1:]} but test "
                         f"images {arrays['test'][0].shape[1:]}")
    top = max((int(y.max()) for _, y in arrays.values() if len(y)), default=0)
    names = tuple(str(i) for i in range(top + 1))
    source = {"path": str(folder), "kind": "idx"}
    return LabelledSet(f"files:{folder.resolve().name}", names, h.hexdigest(), source, arrays)
