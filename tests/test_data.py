"""The IDX loader: real MNIST, gzipped and raw files, and every kind of bad file."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from hybnn_cli.data import datasets as data
from hybnn_cli.errors import HybnnError
from tests.conftest import idx_bytes


def test_real_mnist_loads_and_verifies(mnist_dir):
    images, labels = data.load_split("mnist", "test", mnist_dir)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                            1009]


def test_gz_and_raw_give_the_same_array(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = idx_bytes(arr)
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    md5 = hashlib.md5(raw).hexdigest()
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a", md5, 3), arr)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "b.gz", md5, 3), arr)


def _write(tmp_path, raw, gz=False):
    p = tmp_path / ("f.gz" if gz else "f")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    return p


def test_wrong_magic_number(tmp_path):
    raw = b"\x00\x00\x0d\x03" + bytes(12)
    with pytest.raises(HybnnError, match="wrong magic number 00000d03"):
        data.read_idx(_write(tmp_path, raw))


def test_wrong_dimension_count(tmp_path):
    raw = idx_bytes(np.zeros(5, np.uint8))
    with pytest.raises(HybnnError, match="1 dimensions where 3 were expected"):
        data.read_idx(_write(tmp_path, raw), ndim=3)


def test_truncated_data(tmp_path):
    raw = idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-100]
    with pytest.raises(HybnnError, match=r"truncated: header says \(3, 28, 28\) = 2352 bytes"):
        data.read_idx(_write(tmp_path, raw, gz=True))


def test_truncated_gzip_stream(tmp_path):
    p = tmp_path / "f.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:-20])
    with pytest.raises(HybnnError, match="cannot read"):
        data.read_idx(p)


def test_trailing_bytes(tmp_path):
    raw = idx_bytes(np.zeros(4, np.uint8)) + b"xx"
    with pytest.raises(HybnnError, match="has trailing bytes"):
        data.read_idx(_write(tmp_path, raw))


def test_checksum_mismatch(tmp_path):
    raw = idx_bytes(np.zeros(4, np.uint8))
    with pytest.raises(HybnnError, match="checksum mismatch"):
        data.read_idx(_write(tmp_path, raw), md5="0" * 32)


def test_image_and_label_counts_differ(tmp_path, monkeypatch):
    images = np.zeros((3, 28, 28), np.uint8)
    labels = np.zeros(2, np.uint8)
    files = {}
    for split in data.SPLITS:
        img_name, lbl_name = data.MNIST.files[split]
        (tmp_path / img_name).write_bytes(idx_bytes(images))
        (tmp_path / lbl_name).write_bytes(idx_bytes(labels))
        files[img_name] = hashlib.md5(idx_bytes(images)).hexdigest()
        files[lbl_name] = hashlib.md5(idx_bytes(labels)).hexdigest()
    spec = data.DatasetSpec("odd", "odd", data.MNIST.files, files, (), ())
    monkeypatch.setitem(data.DATASETS, "odd", spec)
    with pytest.raises(HybnnError, match="3 images but 2 labels"):
        data.load_split("odd", "train", tmp_path)


def test_missing_files_say_where_we_looked(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("HYBNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(HybnnError, match=r"not found \(looked in .*empty/mnist.*\) and it"):
        data.load_split("mnist", "test", tmp_path / "empty")


def test_search_order_prefers_data_dir_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBNN_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dirs = data.search_dirs(tmp_path / "cli")
    assert dirs == [tmp_path / "cli", tmp_path / "env", tmp_path / "cache" / "hybnn"]


def test_download_is_verified_and_cached(tmp_path, monkeypatch):
    raw = idx_bytes(np.zeros(4, np.uint8))
    spec = data.DatasetSpec("dl", "dl", {"test": ("x", "y")}, {"x": hashlib.md5(raw).hexdigest()},
                            ("http://mirror.invalid/",), ())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    class Response:
        def __init__(self, payload):
            self.payload = payload

        def read(self):
            return self.payload

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Response(gzip.compress(raw)))
    path = data.find_file(spec, "x", tmp_path / "nothing-here")
    assert path == tmp_path / "hybnn" / "dl" / "x.gz"
    np.testing.assert_array_equal(data.read_idx(path, spec.md5["x"]), np.zeros(4, np.uint8))
    # a corrupted download is refused
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Response(b"junk"))
    path.unlink()
    assert data._download(spec, "x") is None


def test_unknown_dataset_and_split():
    with pytest.raises(HybnnError, match="unknown dataset 'cifar'"):
        data.load_split("cifar", "train")
    with pytest.raises(HybnnError, match="unknown split 'val'"):
        data.load_split("mnist", "val")
