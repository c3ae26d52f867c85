"""Data sets from files (`--data PATH`, `data.files`): image folders, NPZ and IDX folders give the
same codes as the IDX path, record their identity and class names, and bad input is refused with
one line and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from hybnn_cli.codes.store import read_attrs, read_codes
from hybnn_cli.data.datasets import load_split
from hybnn_cli.data.labelled import open_labelled
from hybnn_cli.errors import HybnnError
from hybnn_cli.models import checkpoint as ck
from tests.conftest import idx_bytes, make_images, one_line_error, run

N = 300  # MNIST images of each split written out as PNG



def write_png_folder(root: Path, splits: dict, names=None) -> Path:
    """splits: split → (images, labels); files <root>/<split>/<class>/<index>.png."""
    for split, (images, labels) in splits.items():
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            d = root / split / (names[label] if names else str(label))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def mnist_pngs(mnist_dir, tmp_path_factory) -> dict:
    splits = {s: tuple(a[:N] for a in load_split("mnist", s, mnist_dir)) for s in ("train",
                                                                               "test")}
    root = write_png_folder(tmp_path_factory.mktemp("pngs") / "mnist-png", splits)
    return {"root": root, "splits": splits}


def shapes_npz(path: Path, n_train=240, n_test=80, seed=0, **override) -> Path:
    """A generated 28×28 set of three classes, with class names."""
    rng = np.random.default_rng(seed)
    y_train, y_test = rng.integers(0, 3, n_train), rng.integers(0, 3, n_test)
    arrays = {"x_train": make_images(y_train, rng), "y_train": y_train.astype(np.int64),
              "x_test": make_images(y_test, rng), "y_test": y_test.astype(np.int64),
              "class_names": np.array(["circle", "square", "cross"])}
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


# ── the same codes from files as from IDX ─────────────────────────────────────────────────────
def test_mnist_as_pngs_gives_the_idx_codes_bit_for_bit(mnist_pngs, mnist_dir, tiny_pipeline,
                                                       tmp_path):
    vae = tiny_pipeline["vae"]
    r = run("extract", "--vae", vae, "--data", mnist_pngs["root"], "--out", tmp_path / "png.h5")
    assert r.exit_code == 0, r.output
    r = run("extract", "--vae", vae, "--dataset", "mnist", "--data-dir", mnist_dir, "--limit", N,
            "--out", tmp_path / "idx.h5")
    assert r.exit_code == 0, r.output
    for split in ("train", "test"):
        png, idx = read_codes(tmp_path / "png.h5", split), read_codes(tmp_path / "idx.h5", split)
        # the folder holds class 0's images first, each class in file-name (= index) order
        order = np.argsort(idx.labels, kind="stable")
        assert np.array_equal(png.labels, idx.labels[order])
        assert np.array_equal(png.codes, idx.codes[order])
    attrs = read_attrs(tmp_path / "png.h5")
    assert attrs["class_names"] == [str(d) for d in range(10)]
    assert len(attrs["dataset_sha256"]) == 64 and attrs["data_source"]["kind"] == "folder"
    assert "dataset_sha256" not in read_attrs(tmp_path / "idx.h5")  # a named set: unchanged


def test_an_idx_folder_reads_as_the_named_set(mnist_dir, tmp_path):
    folder = tmp_path / "idx"
    shutil.copytree(mnist_dir / "mnist", folder)
    got = open_labelled(data=folder)
    for split in ("train", "test"):
        assert all(np.array_equal(a, b) for a, b in zip(got.split(split),
                                                        load_split("mnist", split, mnist_dir),
                                                        strict=True))
    assert got.class_names == tuple(str(d) for d in range(10)) and got.source["kind"] == "idx"


def test_identity_follows_contents_and_names_not_place(mnist_pngs, tmp_path):
    first = open_labelled(data=mnist_pngs["root"]).sha256
    copy = shutil.copytree(mnist_pngs["root"], tmp_path / "elsewhere")
    assert open_labelled(data=copy).sha256 == first  # moved: same data
    one = next((copy / "train" / "3").iterdir())
    one.rename(one.with_name("renamed.png"))
    assert open_labelled(data=copy).sha256 != first  # a file list that differs
    arr = np.asarray(Image.open(copy / "train" / "3" / "renamed.png")).copy()
    arr[0, 0] ^= 1
    Image.fromarray(arr).save(copy / "train" / "3" / "renamed.png")
    second = open_labelled(data=copy).sha256
    assert second != first


def test_an_unsplit_folder_is_split_per_class_and_recorded(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 20)
    root = write_png_folder(tmp_path / "pool", {"all": (make_images(labels, rng), labels)},
                            names=["ant", "bee", "cat"]) / "all"
    a = open_labelled(data=root, test_fraction=0.25)
    assert a.class_names == ("ant", "bee", "cat")
    assert np.bincount(a.split("test")[1]).tolist() == [5, 5, 5]
    assert np.bincount(a.split("train")[1]).tolist() == [15, 15, 15]
    assert a.source["test_fraction"] == 0.25 and a.source["kind"] == "folder-split"
    b = open_labelled(data=root, test_fraction=0.25)
    assert np.array_equal(a.split("test")[0], b.split("test")[0])  # seeded: the same split
    c = open_labelled(data=root, test_fraction=0.5)
    assert c.sha256 != a.sha256  # another split is other data


# ── NPZ through extract and train-bnn; codes of other data refused ─────────────────────────────
@pytest.fixture(scope="module")
def npz_codes(tiny_pipeline, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("npz")
    npz = shapes_npz(d / "shapes.npz")
    r = run("extract", "--vae", tiny_pipeline["vae"], "--data", npz, "--out", d / "codes.h5")
    assert r.exit_code == 0, r.output
    return {"dir": d, "npz": npz, "codes": d / "codes.h5", "vae": tiny_pipeline["vae"]}


def test_an_npz_goes_through_extract_and_train_bnn(npz_codes):
    attrs = read_attrs(npz_codes["codes"])
    assert attrs["class_names"] == ["circle", "square", "cross"] and attrs["n_classes"] == 3
    assert attrs["dataset"] == "files:shapes.npz"
    out = npz_codes["dir"] / "bnn.pt"
    r = run("train-bnn", "--codes", npz_codes["codes"], "--task", "all", "--epochs", 1,
            "--out", out)
    assert r.exit_code == 0, r.output
    _, ckpt = ck.load_bnn(out)
    assert ckpt["data"]["class_names"] == ["circle", "square", "cross"]
    assert ckpt["data"]["dataset_sha256"] == attrs["dataset_sha256"]
    r = run("evaluate", out, "--codes", npz_codes["codes"])
    assert r.exit_code == 0, r.output


def test_codes_of_other_data_are_refused(npz_codes, tiny_pipeline):
    bnn = npz_codes["dir"] / "bnn-refuse.pt"
    r = run("train-bnn", "--codes", npz_codes["codes"], "--task", "all", "--epochs", 1,
            "--out", bnn)
    assert r.exit_code == 0, r.output
    other = npz_codes["dir"] / "other.h5"
    r = run("extract", "--vae", npz_codes["vae"], "--data",
            shapes_npz(npz_codes["dir"] / "other.npz", seed=5), "--out", other)
    assert r.exit_code == 0, r.output
    one_line_error(run("evaluate", bnn, "--codes", other), "holds codes of files:other.npz")
    # a named set's codes (no identity recorded) are other data too
    one_line_error(run("evaluate", bnn, "--codes", tiny_pipeline["codes"]), "holds codes of fake")


def test_pretrain_vae_from_a_folder_records_the_data(npz_codes, tmp_path):
    out = tmp_path / "vae.pt"
    r = run("pretrain-vae", "--data", npz_codes["npz"], "--epochs", 1, "--batch-size", 64,
            "--latent-bits", 64, "--threads", 1, "--out", out)
    assert r.exit_code == 0, r.output
    ckpt = ck.load_checkpoint(out, ck.VAE_FORMAT)
    assert ckpt["config"]["data"] == str(npz_codes["npz"])
    assert ckpt["data"]["dataset_sha256"] == read_attrs(npz_codes["codes"])["dataset_sha256"]
    one_line_error(run("pretrain-vae", "--data", npz_codes["npz"], "--dataset", "mnist",
                       "--out", tmp_path / "x.pt"), "not both")


# ── bad input: one line, exit 1, nothing written ──────────────────────────────────────────────
def _folder(tmp_path, name="bad", n=4, size=(28, 28), mode="L"):
    root = tmp_path / name
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.new(mode, size, color=i * 40 if mode == "L" else (i, 0, 0)).save(
                    d / f"{i}.png")
    return root


def _mixed_sizes(root):
    Image.new("L", (32, 32)).save(root / "train" / "b" / "9.png")


def _truncated(root):
    p = root / "train" / "a" / "1.png"
    p.write_bytes(p.read_bytes()[:40])


def _unreadable(root):
    (root / "test" / "b" / "0.png").write_bytes(b"\x89PNG not really")


def _not_an_image(root):
    (root / "train" / "a" / "notes.txt").write_text("hello")


def _no_test_images(root):
    shutil.rmtree(root / "test" / "b")


def _empty_class(root):
    for p in (root / "train" / "b").iterdir():
        p.unlink()


def _mixed_channels(root):
    Image.new("RGB", (28, 28)).save(root / "test" / "a" / "5.png")


BAD_FOLDERS = {
    "mixed sizes": (_mixed_sizes, "all images of a data set must have one size"),
    "truncated": (_truncated, "not a readable image"),
    "unreadable": (_unreadable, "not a readable image"),
    "non-image file": (_not_an_image, "not an image file"),
    "a class with no test images": (_no_test_images, "class 'b' has no test images"),
    "a class with no images": (_empty_class, "class 'b' holds no images"),
    "mixed channels": (_mixed_channels, "one size and channel count"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_a_bad_folder_is_refused_with_one_line(case, tiny_pipeline, tmp_path):
    spoil, message = BAD_FOLDERS[case]
    root = _folder(tmp_path)
    spoil(root)
    out = tmp_path / "codes.h5"
    one_line_error(run("extract", "--vae", tiny_pipeline["vae"], "--data", root, "--out", out),
                   message)
    assert not out.exists() and not list(tmp_path.glob(".codes.h5*"))


def test_an_empty_folder_and_a_missing_path_are_refused(tmp_path, tiny_pipeline):
    (tmp_path / "empty").mkdir()
    one_line_error(run("extract", "--vae", tiny_pipeline["vae"], "--data", tmp_path / "empty",
                       "--out", tmp_path / "c.h5"), "empty folder")
    one_line_error(run("pretrain-vae", "--data", tmp_path / "nowhere", "--out",
                       tmp_path / "v.pt"), "no such file or folder")
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "v.pt").exists()


def test_a_too_small_class_for_the_test_fraction_is_refused(tmp_path):
    root = _folder(tmp_path, n=1) / "train"
    with pytest.raises(HybnnError, match="class 'a' has no test images with --test-fraction"):
        open_labelled(data=root, test_fraction=0.2)


def test_images_the_vae_cannot_take_are_refused(tiny_pipeline, tmp_path):
    for name, kw, message in (("wide", {"size": (32, 28)}, "the VAE takes square images"),
                              ("rgb", {"mode": "RGB"}, "the VAE takes 1 channel of 28×28")):
        root = _folder(tmp_path, name, **kw)
        one_line_error(run("extract", "--vae", tiny_pipeline["vae"], "--data", root, "--out",
                           tmp_path / "c.h5"), message)
    assert not (tmp_path / "c.h5").exists()


def test_square_images_of_another_size_are_resized_and_recorded(tiny_pipeline, tmp_path):
    root = _folder(tmp_path, "big", size=(32, 32))
    r = run("extract", "--vae", tiny_pipeline["vae"], "--data", root, "--out", tmp_path / "c.h5")
    assert r.exit_code == 0, r.output
    assert read_attrs(tmp_path / "c.h5")["config"]["resize"]["to"] == 28


BAD_NPZ = {
    "labels out of range": ({"y_test": np.full(80, 3)}, "y_test holds 3 (at index 0), outside "
                                                          "the 3 classes"),
    "negative labels": ({"y_train": np.full(240, -1)}, "y_train holds -1"),
    "a missing key": ({"y_test": None}, "missing key y_test"),
    "float images": ({"x_train": np.zeros((240, 28, 28), np.float32)}, "must be uint8"),
    "labels and images disagree": ({"y_train": np.zeros(7, np.int64)}, "7 labels for 240"),
    "one class named twice": ({"class_names": np.array(["a", "b", "a"])}, "names a class twice"),
}


@pytest.mark.parametrize("case", BAD_NPZ)
def test_a_bad_npz_is_refused_with_one_line(case, tiny_pipeline, tmp_path):
    override, message = BAD_NPZ[case]
    npz = shapes_npz(tmp_path / "bad.npz", **override)
    out = tmp_path / "codes.h5"
    one_line_error(run("extract", "--vae", tiny_pipeline["vae"], "--data", npz, "--out", out),
                   message)
    assert not out.exists()


def test_not_an_npz_and_a_broken_idx_folder_are_refused(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(HybnnError, match="not a readable NPZ"):
        open_labelled(data=tmp_path / "x.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(HybnnError, match="takes a folder of images"):
        open_labelled(data=tmp_path / "x.csv")
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 28, 28))))
    with pytest.raises(HybnnError, match="train-labels-idx1-ubyte.*is missing"):
        open_labelled(data=idx)


def test_merge_codes_refuses_shards_of_other_data(npz_codes, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    other = shapes_npz(tmp_path / "o.npz", seed=9)
    assert run("extract", "--vae", npz_codes["vae"], "--data", npz_codes["npz"], "--shard", "0/2",
               "--out", a).exit_code == 0
    assert run("extract", "--vae", npz_codes["vae"], "--data", other, "--shard", "1/2",
               "--out", b).exit_code == 0
    one_line_error(run("merge-codes", a, b, "--out", tmp_path / "m.h5"), "from data")
    with h5py.File(a) as f:  # the shard keeps the data's record
        assert "dataset_sha256" in f.attrs


def test_the_test_split_of_files_is_sealed_in_a_sealed_run(npz_codes, monkeypatch):
    from hybnn_cli.sealed import ENV, TestSealed

    data = open_labelled(data=npz_codes["npz"])
    monkeypatch.setenv(ENV, "1")
    assert len(data.split("train")[0]) == 240
    with pytest.raises(TestSealed, match="the test split is sealed"):
        data.split("test")
