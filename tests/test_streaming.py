"""Streaming `--data` image folders (`data.image_store`): decoded once into a cache of uint8 rows
read by batch, so extraction stays flat in memory as the number of images grows; the cache is
found again by the data's identity; reading by rows gives what numpy indexing gives; training
from a folder gives the weights training from the same arrays gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hybnn_cli.cli import app
from hybnn_cli.data import image_store
from hybnn_cli.data.files import read_files
from hybnn_cli.data.labelled import fit_images, resize_images
from hybnn_cli.errors import HybnnError
from hybnn_cli.models import checkpoint as ck

runner = CliRunner()
SIZE = 64  # 3 × 64 × 64 images: 12,288 bytes each
N_SMALL, N_LARGE = 2000, 8000  # 24.6 MB and 98.3 MB of raw images


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def colour_image(rng: np.random.Generator, label: int) -> np.ndarray:
    """A 3 × SIZE × SIZE image: a bright square whose place is the label, over mild noise."""
    img = rng.integers(0, 48, (SIZE, SIZE, 3), dtype=np.uint8)
    r, c = (label // 2) * (SIZE // 2), (label % 2) * (SIZE // 2)
    img[r + 8:r + 24, c + 8:c + 24] = 220
    return img


def write_folder(root: Path, n: int, seed: int = 0, link_from: Path | None = None) -> Path:
    """`n` images in root/train|test/<class>/, four classes, a fifth of each class in test. With
    `link_from` (a folder written by this function with more images), its first files are
    hard-linked instead of written again."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        split, label = ("test" if i % 5 == 0 else "train"), i % 4
        d = root / split / f"c{label}"
        d.mkdir(parents=True, exist_ok=True)
        name = d / f"{i:05d}.png"
        if link_from is not None:
            os.link(link_from / split / f"c{label}" / name.name, name)
        else:
            Image.fromarray(colour_image(rng, label)).save(name)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("streaming")
    large = write_folder(base / "large", N_LARGE)
    small = write_folder(base / "small", N_SMALL, link_from=large)
    return {"base": base, "small": small, "large": large}


@pytest.fixture(scope="module")
def vae64(folders) -> Path:
    """A VAE for 3 × 64 × 64 images (one quick epoch on a few of the small folder's images)."""
    out = folders["base"] / "vae64.pt"
    r = run("pretrain-vae", "--data", folders["small"], "--epochs", 1, "--train-limit", 64,
            "--batch-size", 32, "--latent-bits", 32, "--threads", 1, "--out", out)
    assert r.exit_code == 0, r.output
    return out


# The child reports its own peak (VmHWM, which starts afresh at exec): ru_maxrss would not do,
# since Linux carries the forking parent's peak (this test process's) over fork and exec.
PEAK_CHILD = """
import atexit, os, sys
def report():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(os.environ["HYBNN_TEST_PEAK"], "w") as f:
        f.write(str(kb))
atexit.register(report)
sys.argv = ["hybnn", *sys.argv[1:]]
from hybnn_cli.cli import main
main()
"""


def rss_of_extract(vae: Path, data: Path, out: Path, cache: Path) -> float:
    """Peak resident memory (MB) of `hybnn extract --data` in a child process."""
    peak = out.with_suffix(".peak")
    args = ["extract", "--vae", vae, "--data", data, "--out", out, "--batch-size", 100,
            "--threads", 1, "--json"]
    env = {**os.environ, "HYBNN_IMAGE_CACHE": str(cache), "HYBNN_TEST_PEAK": str(peak)}
    r = subprocess.run([sys.executable, "-c", PEAK_CHILD, *map(str, args)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(peak.read_text()) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_extract_from_a_folder_stays_flat_in_memory_as_n_grows(folders, vae64, tmp_path):
    """Four times the images (74 MB more of raw images; holding them, as reading a folder did,
    cost more than that at its peak) may cost only a little more: the file list."""
    small = rss_of_extract(vae64, folders["small"], tmp_path / "s.h5", tmp_path / "cache-s")
    large = rss_of_extract(vae64, folders["large"], tmp_path / "l.h5", tmp_path / "cache-l")
    raw_growth = (N_LARGE - N_SMALL) * 3 * SIZE * SIZE / 2**20
    assert large - small < 0.35 * raw_growth, (small, large)
    # both were decoded into their caches: one store each, of all their images
    for cache, n in ((tmp_path / "cache-s", N_SMALL), (tmp_path / "cache-l", N_LARGE)):
        [store] = cache.glob("*.npy")
        assert np.load(store, mmap_mode="r").shape == (n, SIZE, SIZE, 3)


def test_the_cache_is_found_again_and_gives_the_same_codes(folders, vae64, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("HYBNN_IMAGE_CACHE", str(tmp_path / "cache"))
    stages = []
    first = read_files(folders["small"], 0.2, on_file=lambda n, stage: stages.append(stage))
    assert stages.count("hash") == N_SMALL and stages.count("decode") == N_SMALL
    stages.clear()
    again = read_files(folders["small"], 0.2, on_file=lambda n, stage: stages.append(stage))
    assert stages.count("hash") == N_SMALL and "decode" not in stages  # found in the cache
    assert again.sha256 == first.sha256
    x, y = again.split("train")
    assert isinstance(x, image_store.ImageRows) and len(x) == len(y) == N_SMALL * 4 // 5
    # rows in the stored order: class c0's files first, each class in file-name order
    files = sorted((folders["small"] / "train" / "c0").iterdir())
    assert np.array_equal(x[0], np.asarray(Image.open(files[0])))
    assert np.array_equal(x[len(files) - 1], np.asarray(Image.open(files[-1])))
    r1 = run("extract", "--vae", vae64, "--data", folders["small"], "--out", tmp_path / "a.h5")
    r2 = run("extract", "--vae", vae64, "--data", folders["small"], "--out", tmp_path / "b.h5")
    assert r1.exit_code == r2.exit_code == 0, r1.output + r2.output
    import h5py

    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        for split in ("train", "test"):
            assert np.array_equal(a[split]["codes"][:], b[split]["codes"][:])


def test_image_rows_index_as_numpy_does(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBNN_IMAGE_CACHE", str(tmp_path))
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (37, 5, 5, 3), dtype=np.uint8)

    def fill(put):
        for i in rng.permutation(len(ref)):  # rows may come in any order
            put(int(i), ref[i])

    rows = image_store.write_store(tmp_path / "x.npy", len(ref), fill)
    assert rows.shape == ref.shape and rows.ndim == 4 and len(rows) == len(ref)
    assert np.array_equal(np.asarray(rows), ref)
    for key in (slice(3, 30), slice(None, None, 4), slice(30, 2, -3)):
        view = rows[key]
        assert np.array_equal(np.asarray(view), ref[key])
        assert np.array_equal(view[[0, -1, 2, 2]], ref[key][[0, -1, 2, 2]])
    for key in (np.array([5, 6, 7, 1, 36, 0]), torch.randperm(37)[:9], ref[:, 0, 0, 0] > 128):
        assert np.array_equal(rows[key], ref[np.asarray(key)])
    assert np.array_equal(rows[-1], ref[-1])
    with pytest.raises(IndexError):
        rows[np.array([37])]
    # resized batch by batch, as the arrays would be resized at once
    lazy = fit_images(rows[2:20], "x", 3, 8)
    assert lazy.shape == (18, 8, 8, 3)
    assert np.array_equal(lazy[[1, 4]], resize_images(ref[2:20], 8)[[1, 4]])
    # a store of another length or a broken file is not taken
    assert image_store.open_store(tmp_path / "x.npy", 36) is None
    (tmp_path / "y.npy").write_bytes(b"not an npy")
    assert image_store.open_store(tmp_path / "y.npy", 37) is None


def test_a_bad_image_leaves_no_store(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HYBNN_IMAGE_CACHE", str(cache))
    root = write_folder(tmp_path / "bad", 40)
    (root / "train" / "c1" / "00009.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(HybnnError, match="00009.png: not a readable image"):
        read_files(root, 0.2)
    assert not list(cache.glob("*.npy")) and not list(cache.glob(".*"))


def test_pretraining_on_a_folder_gives_the_weights_of_its_arrays(tmp_path):
    """The same images from a PNG folder (read by batch from the cache) and from an NPZ (arrays in
    memory): the same shuffling, the same weights bit for bit."""
    root = write_folder(tmp_path / "f", 120)
    data = read_files(root, 0.2)
    npz = tmp_path / "same.npz"
    (xtr, ytr), (xte, yte) = data.split("train"), data.split("test")
    np.savez(npz, x_train=np.asarray(xtr), y_train=ytr, x_test=np.asarray(xte), y_test=yte)
    weights = []
    for source, out in ((root, tmp_path / "a.pt"), (npz, tmp_path / "b.pt")):
        r = run("pretrain-vae", "--data", source, "--epochs", 1, "--batch-size", 16,
                "--latent-bits", 16, "--image-size", 32, "--threads", 1, "--seed", 3,
                "--out", out)
        assert r.exit_code == 0, r.output
        weights.append(ck.load_checkpoint(out, ck.VAE_FORMAT)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_an_npz_is_copied_into_the_cache_by_blocks_and_read_by_rows(save, tmp_path, monkeypatch):
    from hybnn_cli.data import files

    cache = tmp_path / "cache"
    monkeypatch.setenv("HYBNN_IMAGE_CACHE", str(cache))
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, (50, 9, 9, 1), dtype=np.uint8)  # a channel of one: dropped
    x_test = np.asfortranarray(rng.integers(0, 256, (20, 9, 9), dtype=np.uint8))
    npz = tmp_path / "d.npz"
    save(npz, x_train=x_train, y_train=np.arange(50) % 3, x_test=x_test,
         y_test=np.arange(20) % 3)
    data = read_files(npz, 0.2)
    (xtr, ytr), (xte, yte) = data.split("train"), data.split("test")
    assert isinstance(xtr, image_store.ImageRows) and xtr.shape == (50, 9, 9)
    assert np.array_equal(np.asarray(xtr), x_train[..., 0]) and np.array_equal(xte[[3, 1]],
                                                                             x_test[[3, 1]])
    assert np.array_equal(ytr, np.arange(50) % 3) and yte.dtype == np.uint8
    [store] = cache.glob("*.npy")
    mtime = store.stat().st_mtime_ns
    assert np.array_equal(np.asarray(read_files(npz, 0.2).split("test")[0]), x_test)
    assert store.stat().st_mtime_ns == mtime  # found again, not copied again
    # block by block: blocks of a few rows give the same rows
    got = np.zeros((70, 9, 9), np.uint8)

    def put(row, block):
        got[row:row + len(block)] = block

    shapes = {"train": (50, 9, 9), "test": (20, 9, 9)}
    files._copy_npz_images(npz, shapes, put, block_bytes=3 * 81 + 5)
    assert np.array_equal(got, np.concatenate([x_train[..., 0], x_test]))


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HYBNN_IMAGE_CACHE", str(blocker / "cache"))  # under a file: no folder
    root = write_folder(tmp_path / "f", 40)
    with pytest.raises(HybnnError, match="cannot write the cache of decoded images"):
        read_files(root, 0.2)
