"""The codes file: round trip, streaming atomic writes, and refusal of malformed files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hybnn_kernels import pack_signs, unpack_signs

from hybnn_cli.codes.store import codes_writer, read_attrs, read_codes
from hybnn_cli.errors import HybnnError


def _write(path, n_bits=200, n=(50, 20), seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    with codes_writer(path, n_bits, {"train": n[0], "test": n[1]}, "mnist", "ab" * 32,
                      {"why": "test"}, seed) as write:
        for split, size in zip(("train", "test"), n, strict=True):
            signs = rng.choice([-1, 1], size=(size, n_bits))
            labels = rng.integers(0, 10, size).astype(np.uint8)
            for start in range(0, size, 16):  # stream in batches
                write(split, start, pack_signs(signs[start:start + 16]), labels[start:start + 16])
            data[split] = (signs, labels)
    return data


@pytest.mark.parametrize("n_bits", [1, 63, 64, 65, 200])
def test_round_trip(tmp_path, n_bits):
    path = tmp_path / "codes.h5"
    data = _write(path, n_bits)
    for split, (signs, labels) in data.items():
        c = read_codes(path, split)
        assert c.codes.dtype == np.uint64 and c.codes.shape == (len(signs), (n_bits + 63) // 64)
        np.testing.assert_array_equal(unpack_signs(c.codes, n_bits), signs)
        np.testing.assert_array_equal(c.labels, labels)
    attrs = read_attrs(path)
    assert attrs["n_bits"] == n_bits and attrs["encoder_sha256"] == "ab" * 32
    assert attrs["format"] == "hybnn-codes" and attrs["config"] == {"why": "test"}
    assert "LSB first" in attrs["bit_order"] and attrs["seed"] == 0
    assert attrs["dataset"] == "mnist" and attrs["n_classes"] == 10


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "codes.h5"
    with pytest.raises(RuntimeError):
        with codes_writer(path, 200, {"train": 10}, "mnist", "0" * 64, {}, 0) as write:
            write("train", 0, np.zeros((5, 4), np.uint64), np.zeros(5, np.uint8))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def _corrupt(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f["train"].__delitem__("labels"), "missing dataset /train/codes or /train/labels"),
    (lambda f: (f["train"].__delitem__("codes"),
                f["train"].create_dataset("codes", data=np.zeros((50, 4), np.int64))),
     "must be a 2-D uint64 array"),
    (lambda f: (f["train"].__delitem__("codes"),
                f["train"].create_dataset("codes", data=np.zeros((50, 3), np.uint64))),
     "3 words per code but n_bits=200 needs 4"),
    (lambda f: f["train"]["codes"].__setitem__((0, 3), np.uint64(1 << 63)),
     "bits set past bit 200"),
    (lambda f: f.attrs.__setitem__("n_bits", 130), "4 words per code but n_bits=130 needs 3"),
    (lambda f: f.attrs.__setitem__("format", "other"), "not a hybnn codes file"),
    (lambda f: f.attrs.__setitem__("format_version", 99), "format version 99 is not supported"),
    (lambda f: f.attrs.__delitem__("encoder_sha256"), "attribute 'encoder_sha256' is missing"),
])
def test_malformed_files_are_refused(tmp_path, mutate, message):
    path = tmp_path / "codes.h5"
    _write(path)
    _corrupt(path, mutate)
    with pytest.raises(HybnnError, match=message):
        read_codes(path, "train")


def _set_label(f, split, i, value):
    f[split]["labels"][i] = value


@pytest.mark.parametrize("mutate, message", [
    (lambda f: _set_label(f, "test", 3, 200),
     "/test/labels holds 200 (at index 3), outside the 10 classes 0..9 of 'mnist'"),
    (lambda f: _set_label(f, "test", 0, 10), "/test/labels holds 10 (at index 0)"),
    # a file written before n_classes was recorded: its dataset's classes count
    (lambda f: (f.attrs.__delitem__("n_classes"), _set_label(f, "test", 7, 12)),
     "/test/labels holds 12 (at index 7), outside the 10 classes 0..9 of 'mnist'"),
    (lambda f: (f.attrs.__setitem__("n_classes", 2), _set_label(f, "test", 1, 2)),
     "/test/labels holds 2 (at index 1), outside the 2 classes 0..1"),
    (lambda f: (f.attrs.__delitem__("n_classes"), f.attrs.__setitem__("dataset", "cifar")),
     "records neither n_classes nor a known dataset (dataset 'cifar')"),
    (lambda f: (f["test"].__delitem__("labels"),
                f["test"].create_dataset("labels", data=np.full(20, -1, np.int64))),
     "/test/labels holds -1 (at index 0)"),
    (lambda f: (f["test"].__delitem__("labels"),
                f["test"].create_dataset("labels", data=np.zeros(20, np.float32))),
     "/test/labels has shape (20,) and type float32, expected (20,) integers"),
])
def test_labels_outside_the_classes_are_refused(tmp_path, mutate, message):
    path = tmp_path / "codes.h5"
    _write(path)
    read_codes(path, "test")  # valid before
    _corrupt(path, mutate)
    with pytest.raises(HybnnError) as e:
        read_codes(path, "test")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_not_hdf5_and_missing(tmp_path):
    (tmp_path / "x.h5").write_text("hello")
    with pytest.raises(HybnnError, match="not an HDF5 codes file"):
        read_codes(tmp_path / "x.h5", "train")
    with pytest.raises(HybnnError, match="no such codes file"):
        read_codes(tmp_path / "missing.h5", "train")
