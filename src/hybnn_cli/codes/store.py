"""The codes file (HDF5): each image's binary code, packed, with its label.

Layout: `/train/codes` (N, words) uint64 and `/train/labels` (N,) uint8, the same under `/test`.
Root attributes: format "hybnn-codes", format_version, n_bits, bit_order, dataset, n_classes,
class_names (JSON list; label i is class_names[i]), encoder_sha256, hybnn_version, seed and config
(JSON); codes of data read from files (`--data PATH`, `data.files`) also record dataset_sha256
(the data's identity) and data_source (JSON: path, layout, test split). Labels lie in
0..n_classes-1 (files written before n_classes was recorded take it from their dataset's class
list; before class_names, from the named dataset's). Bit j of a code is bit
j % 64 of word j // 64; bit 1 = +1; padding bits are 0.

`CodesWriter` streams batches into a temporary file that is renamed when complete, so memory stays
bounded and an interrupted run leaves no file under the real name. `read_codes` validates before
returning anything, labels included.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from hybnn_kernels.bits import n_words, padding_set
from hybnn_kernels.h5attrs import read_attrs as decode_attrs
from hybnn_kernels.h5attrs import write_attrs

from hybnn_cli.data.datasets import DATASETS, get_spec
from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path, provenance
from hybnn_cli.sealed import guard

CODES_FORMAT = "hybnn-codes"
CODES_VERSION = 1
BIT_ORDER = "bit j in word j//64 at position j%64 (LSB first); bit 1 = +1; padding 0"
# what a codes file (and a BNN checkpoint) records of its data
DATA_KEYS = ("dataset", "class_names", "dataset_sha256", "data_source")


@contextlib.contextmanager
def codes_writer(path, n_bits: int, sizes: dict[str, int], dataset: str, encoder_sha256: str,
                 config: dict, seed: int, data: dict | None = None):
    """Yield write(split, start, codes, labels); the file appears at `path` only on success.
    `data` is what the file records of its data (`LabelledSet.record()`: dataset, class_names,
    and for files dataset_sha256 and data_source); default: the named `dataset`'s."""
    words = n_words(n_bits)
    if data is None:
        data = {"dataset": dataset, "class_names": list(get_spec(dataset).class_names)}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        meta = provenance(CODES_FORMAT, CODES_VERSION, config, seed)
        meta.update(n_bits=n_bits, bit_order=BIT_ORDER, dataset=data["dataset"],
                    n_classes=len(data["class_names"]), encoder_sha256=encoder_sha256,
                    **{k: data[k] for k in DATA_KEYS[1:] if k in data})
        write_attrs(f.attrs, meta)
        for split, n in sizes.items():
            g = f.create_group(split)
            g.create_dataset("codes", shape=(n, words), dtype=np.uint64,
                             chunks=(min(max(n, 1), 8192), words))
            g.create_dataset("labels", shape=(n,), dtype=np.uint8, chunks=(min(max(n, 1), 65536),))

        def write(split: str, start: int, codes: np.ndarray, labels: np.ndarray) -> None:
            f[split]["codes"][start:start + len(codes)] = codes
            f[split]["labels"][start:start + len(labels)] = labels

        yield write


@dataclass
class Codes:
    codes: np.ndarray  # (N, words) uint64
    labels: np.ndarray  # (N,) uint8
    n_bits: int
    attrs: dict


def read_attrs(path: str | os.PathLike) -> dict:
    """The root attributes of a codes file, checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise HybnnError(f"{path}: no such codes file")
    try:
        with h5py.File(path, "r") as f:
            attrs = decode_attrs(f.attrs)
    except OSError as e:
        raise HybnnError(f"{path}: not an HDF5 codes file ({e})") from None
    if attrs.get("format") != CODES_FORMAT:
        raise HybnnError(f"{path}: not a hybnn codes file (format attribute is "
                         f"{attrs.get('format')!r}, expected {CODES_FORMAT!r})")
    if attrs.get("format_version") != CODES_VERSION:
        raise HybnnError(f"{path}: codes format version {attrs.get('format_version')} is not "
                         f"supported (this hybnn reads version {CODES_VERSION})")
    for key in ("n_bits", "encoder_sha256"):
        if key not in attrs:
            raise HybnnError(f"{path}: attribute '{key}' is missing")
    return attrs


def read_codes(path: str | os.PathLike, split: str) -> Codes:
    """Load and validate one split of a codes file (not test in a sealed run, see `sealed`)."""
    guard(split, str(path))
    attrs = read_attrs(path)
    n_bits = int(attrs["n_bits"])
    words = n_words(n_bits)
    with h5py.File(path, "r") as f:
        if split not in f or "codes" not in f[split] or "labels" not in f[split]:
            raise HybnnError(f"{path}: missing dataset /{split}/codes or /{split}/labels")
        dc, dl = f[split]["codes"], f[split]["labels"]
        if dc.dtype != np.uint64 or dc.ndim != 2:
            raise HybnnError(f"{path}: /{split}/codes must be a 2-D uint64 array, found "
                             f"{dc.ndim}-D {dc.dtype}")
        if dc.shape[1] != words:
            raise HybnnError(f"{path}: /{split}/codes has {dc.shape[1]} words per code but "
                             f"n_bits={n_bits} needs {words}")
        if dl.dtype.kind not in "iu" or dl.ndim != 1 or dl.shape[0] != dc.shape[0]:
            raise HybnnError(f"{path}: /{split}/labels has shape {dl.shape} and type {dl.dtype}, "
                             f"expected ({dc.shape[0]},) integers")
        codes, labels = dc[()], dl[()]
    if padding_set(codes, n_bits):
        raise HybnnError(f"{path}: /{split}/codes has bits set past bit {n_bits}: the codes "
                             f"disagree with the n_bits attribute")
    n_classes = _n_classes(path, attrs)
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if len(bad):
        raise HybnnError(f"{path}: /{split}/labels holds {labels[bad[0]]} (at index {bad[0]}), "
                         f"outside the {n_classes} classes 0..{n_classes - 1} of "
                         f"{attrs.get('dataset')!r}")
    return Codes(codes, labels.astype(np.uint8, copy=False), n_bits, attrs)


def check_encoder(model_sha: str | None, codes_sha: str | None, model_path, codes_path) -> None:
    """Refuse to pair a BNN (checkpoint or deploy file) with codes made by another encoder: such
    codes mean nothing to it. `model_sha` is the encoder SHA-256 the BNN was trained on, `codes_sha`
    that of the codes file or VAE checkpoint."""
    want, got = str(model_sha or ""), str(codes_sha or "")
    if want != got:
        raise HybnnError(f"{model_path} expects codes from encoder {want[:12]}… but {codes_path} "
                         f"comes from encoder {got[:12]}…; use codes made by the same VAE "
                         f"(re-extract them) or train a new BNN on these")


def data_record(attrs: dict) -> dict:
    """What a codes file records of its data (`DATA_KEYS`), class_names filled in for older
    files of a named dataset."""
    out = {k: attrs[k] for k in DATA_KEYS if k in attrs}
    if "class_names" not in out:
        names = class_names(attrs)
        if names is not None:
            out["class_names"] = names
    return out


def class_names(attrs: dict) -> list[str] | None:
    """The class names a codes file (or BNN checkpoint) records, those of its named dataset for
    older files, or None when neither is known."""
    if attrs.get("class_names") is not None:
        return [str(n) for n in attrs["class_names"]]
    if attrs.get("dataset") in DATASETS:
        return list(DATASETS[attrs["dataset"]].class_names)
    return None


def check_data(model_data: dict | None, codes_attrs: dict, model_path, codes_path) -> None:
    """Refuse to pair a BNN trained on codes of one data set read from files with codes of other
    data (or the reverse): its labels mean other classes. Files that record no dataset_sha256 on
    either side (named datasets, older files) are not compared."""
    want = (model_data or {}).get("dataset_sha256")
    got = codes_attrs.get("dataset_sha256")
    if want is None and got is None:
        return
    if want != got:
        def name(sha, rec):
            what = rec.get("dataset") or "an unnamed dataset"
            return f"{what} ({sha[:12]}…)" if sha else what
        raise HybnnError(f"{model_path} was trained on codes of {name(want, model_data or {})} "
                         f"but {codes_path} holds codes of {name(got, codes_attrs)}; use codes "
                         f"of the same data or train a new BNN on these")


def _n_classes(path, attrs: dict) -> int:
    """The recorded number of classes, or for older files that of the recorded dataset."""
    if "n_classes" in attrs:
        return int(attrs["n_classes"])
    if attrs.get("dataset") in DATASETS:
        return len(DATASETS[attrs["dataset"]].class_names)
    raise HybnnError(f"{path}: records neither n_classes nor a known dataset (dataset "
                     f"{attrs.get('dataset')!r}), so its labels cannot be checked")
