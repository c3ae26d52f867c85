"""Datasets: MNIST and Fashion-MNIST from the standard IDX files.

Files are found in `--data-dir`, then `$HYBNN_DATA`, then the user cache folder (each searched as
`<dir>/<dataset>/` and `<dir>/`), gzipped or not. Their uncompressed bytes are checked against the
canonical MD5 sums. When the files are missing and the network answers, they are downloaded from
the standard mirrors into the cache folder and verified.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path
from hybnn_cli.sealed import guard


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str
    files: dict  # split → (images file, labels file)
    md5: dict  # file → MD5 of the uncompressed bytes
    mirrors: tuple
    class_names: tuple


MNIST = DatasetSpec(
    name="mnist",
    folder="mnist",
    files={
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    },
    md5={
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    class_names=tuple(str(d) for d in range(10)),
)

# MD5s of the uncompressed files (the upstream README lists those of the .gz files, which differ
# from repackaged copies such as Debian's; the uncompressed bytes are the same everywhere).
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    folder="fashion-mnist",
    files=MNIST.files,
    md5={
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
)

DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
SPLITS = ("train", "test")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hybnn"


def search_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """Where data is looked for, in order."""
    roots: list[Path] = []
    if data_dir:
        roots.append(Path(data_dir))
    if os.environ.get("HYBNN_DATA"):
        roots.append(Path(os.environ["HYBNN_DATA"]))
    roots.append(cache_dir())
    return roots


def get_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise HybnnError(
            f"unknown dataset '{dataset}'; choose one of: {', '.join(DATASETS)}"
        ) from None


def load_split(dataset: str, split: str, data_dir: str | os.PathLike | None = None,
               download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split, verified."""
    spec = get_spec(dataset)
    if split not in SPLITS:
        raise HybnnError(f"unknown split '{split}'; choose train or test")
    guard(split, dataset)
    img_name, lbl_name = spec.files[split]
    images = read_idx(find_file(spec, img_name, data_dir, download), spec.md5[img_name], ndim=3)
    labels = read_idx(find_file(spec, lbl_name, data_dir, download), spec.md5[lbl_name], ndim=1)
    if len(images) != len(labels):
        raise HybnnError(
            f"{dataset} {split}: {len(images)} images but {len(labels)} labels "
            f"({img_name} and {lbl_name} do not belong together)"
        )
    return images, labels


def find_file(spec: DatasetSpec, name: str, data_dir=None, download: bool = True) -> Path:
    roots = search_dirs(data_dir)
    candidates = []
    for root in roots:
        dirs = [root / spec.folder, root]
        for d in dirs:
            candidates += [d / name, d / (name + ".gz")]
    for c in candidates:
        if c.is_file():
            return c
    if download:
        got = _download(spec, name)
        if got is not None:
            return got
    looked = ", ".join(str(r / spec.folder) for r in roots)
    raise HybnnError(
        f"{spec.name} file {name}[.gz] not found (looked in {looked}) and it could not be "
        f"downloaded; put the IDX files in one of those folders or pass --data-dir"
    )


def _download(spec: DatasetSpec, name: str) -> Path | None:
    dest = cache_dir() / spec.folder / (name + ".gz")
    for mirror in spec.mirrors:
        try:
            with urllib.request.urlopen(mirror + name + ".gz", timeout=10) as r:
                payload = r.read()
        except (urllib.error.URLError, OSError, ValueError):
            continue
        try:
            raw = gzip.decompress(payload)
        except (OSError, EOFError):
            continue
        if hashlib.md5(raw).hexdigest() != spec.md5[name]:
            continue
        with atomic_path(dest) as tmp:
            tmp.write_bytes(payload)
        return dest
    return None


_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | os.PathLike, md5: str | None = None,
             ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw), checking magic number, size and the MD5 if given."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            raw = gzip.decompress(f.read()) if head == b"\x1f\x8b" else f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise HybnnError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise HybnnError(f"{path}: wrong magic number {raw[:4].hex() or '(empty file)'}, "
                         "not an unsigned-byte IDX file")
    dims = raw[3]
    if ndim is not None and dims != ndim:
        raise HybnnError(f"{path}: wrong magic number {raw[:4].hex()}: "
                         f"{dims} dimensions where {ndim} were expected")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise HybnnError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        what = "truncated" if len(raw) - header < size else "has trailing bytes"
        raise HybnnError(f"{path}: {what}: header says {shape} = {size} bytes of data, "
                         f"file has {len(raw) - header}")
    if md5 is not None:
        got = hashlib.md5(raw).hexdigest()
        if got != md5:
            raise HybnnError(f"{path}: checksum mismatch: MD5 of the uncompressed bytes is {got}, "
                             f"expected {md5}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
