"""Shared fixtures: a small generated IDX dataset registered as `fake`, real MNIST (and
Fashion-MNIST) only from the folder HYBNN_DATA names — tests that need them skip with the reason
otherwise, never fail — and a tiny trained pipeline (VAE → codes) built once per session."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from hybnn_cli.data import datasets as data


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28×28 images whose class shows as a bright 7×7 block at a class-dependent place."""
    images = (rng.random((len(labels), 28, 28)) * 60).astype(np.uint8)
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 4)
        images[i, 2 + 7 * r: 9 + 7 * r, 1 + 7 * c: 8 + 7 * c] = 255
    return images


def write_fake_dataset(folder: Path, n_train: int = 512, n_test: int = 128, seed: int = 0,
                       gz: bool = True) -> dict:
    """Write the four IDX files into folder; return their MD5 sums (uncompressed)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = make_images(labels, rng)
        img_name, lbl_name = data.MNIST.files[split]
        for name, arr in ((img_name, images), (lbl_name, labels)):
            raw = idx_bytes(arr)
            md5[name] = hashlib.md5(raw).hexdigest()
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return md5


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> Path:
    """A data root holding `fake/` with generated IDX files; the `fake` dataset is registered."""
    root = tmp_path_factory.mktemp("data")
    md5 = write_fake_dataset(root / "fake")
    spec = data.DatasetSpec(name="fake", folder="fake", files=data.MNIST.files, md5=md5,
                            mirrors=(), class_names=data.MNIST.class_names)
    data.DATASETS["fake"] = spec
    return root


@pytest.fixture(autouse=True)
def latest_in_tmp(monkeypatch, tmp_path_factory):
    """Commands record their last outputs in runs/latest.json of the working folder; a test run
    in-process from the project root must not write (or read) the user's own record."""
    from hybnn_cli.cli import latest

    monkeypatch.setattr(latest, "LATEST", tmp_path_factory.mktemp("latest") / "latest.json")


@pytest.fixture(scope="session")
def _image_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image-cache")


@pytest.fixture(autouse=True)
def image_cache_in_tmp(monkeypatch, _image_cache):
    """Decoded images of --data folders are cached (`data.image_store`); tests keep theirs in a
    temporary folder, never in the user's cache."""
    monkeypatch.setenv("HYBNN_IMAGE_CACHE", str(_image_cache))


@pytest.fixture
def no_network(monkeypatch):
    """Make downloads fail at once."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


def real_data_root(*datasets: str) -> Path:
    """$HYBNN_DATA if it holds every IDX file of `datasets` (in <root>/<folder>/ or <root>/,
    gzipped or not; checksums are checked when they are read); else skip with the reason."""
    specs = [data.get_spec(d) for d in datasets]
    wanted = " and ".join(s.name for s in specs)
    root = os.environ.get("HYBNN_DATA")
    if not root:
        pytest.skip(f"needs real {wanted}: set HYBNN_DATA to the folder holding "
                    f"{', '.join(s.folder + '/' for s in specs)}")
    for spec in specs:
        for name in spec.md5:
            if not any((d / n).is_file() for d in (Path(root) / spec.folder, Path(root))
                       for n in (name, name + ".gz")):
                pytest.skip(f"needs real {wanted}: {name} of {spec.name} is not in "
                            f"$HYBNN_DATA={root}")
    return Path(root)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return real_data_root("mnist")


@pytest.fixture(scope="session")
def mnist_and_fashion_dir() -> Path:
    return real_data_root("mnist", "fashion-mnist")


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, fake_root) -> dict:
    """A VAE trained for one epoch on the fake data, and its codes file."""
    from hybnn_cli.train import stages
    from hybnn_cli.train.configs import VAEConfig

    out = tmp_path_factory.mktemp("pipeline")
    cfg = VAEConfig(dataset="fake", epochs=1, batch_size=64, latent_bits=200, threads=1)
    stages.pretrain_vae(cfg, out / "vae.pt", fake_root)
    stages.extract_codes(out / "vae.pt", out / "codes.h5", "fake", fake_root, batch_size=100)
    return {"root": fake_root, "vae": out / "vae.pt", "codes": out / "codes.h5", "dir": out}


# ── deploy bundles (tests/test_bundle.py, tests/test_wheel.py) ──────────────────────────────────
def _train_bnn(tiny, out: Path, task: str, seed: int = 0) -> Path:
    from hybnn_cli.data.tasks import parse_task
    from hybnn_cli.train import stages
    from hybnn_cli.train.configs import BNNConfig

    cfg = BNNConfig(task=parse_task(task).name, epochs=2, batch_size=32, threads=1, seed=seed)
    path = out / f"bnn-{task}.pt"
    stages.train_task_bnn(tiny["codes"], parse_task(task), cfg, path)
    return path


@pytest.fixture(scope="module")
def bundle(tiny_pipeline, tmp_path_factory):
    """Task 3 and the 10-class BNN of the tiny pipeline in one bundle, int8 encoder included."""
    from typer.testing import CliRunner

    from hybnn_cli.cli import app
    from hybnn_cli.data.datasets import load_split

    out = tmp_path_factory.mktemp("bundle")
    bnns = [_train_bnn(tiny_pipeline, out, "3"), _train_bnn(tiny_pipeline, out, "all")]
    r = CliRunner().invoke(app, ["export", *map(str, bnns), "--vae", str(tiny_pipeline["vae"]),
                                 "--out", str(out / "bundle"), "--int8", "--calibration", "200",
                                 "--data-dir", str(tiny_pipeline["root"]), "--json"])
    assert r.exit_code == 0, r.output
    images, labels = load_split("fake", "test", tiny_pipeline["root"])
    np.save(out / "test.npy", images)
    return {**tiny_pipeline, "bundle": out / "bundle", "bnns": bnns, "out": out,
            "manifest": json.loads(r.stdout), "images": images, "labels": labels}


def run(*args):
    """`hybnn ARGS` in this process (arguments as strings); the CliRunner result."""
    from typer.testing import CliRunner

    from hybnn_cli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, fragment: str):
    """The command failed with exit code 1 and one line on stderr naming `fragment`."""
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("Error:") and fragment in err, err
    assert "\n" not in err and "Traceback" not in result.output, result.output


def predict_json(*args) -> dict:
    """`hybnn predict ARGS --json` in this process; its parsed output."""
    from typer.testing import CliRunner

    from hybnn_cli.cli import app

    r = CliRunner().invoke(app, ["predict", *map(str, args), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# ── federated tests ──────────────────────────────────────────────────────────────────────────
@pytest.fixture
def flower_env(monkeypatch, tmp_path_factory):
    """Flower without telemetry or update checks, with its own FLWR_HOME (federated tests use it
    through `pytestmark`)."""
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path_factory.mktemp("flwr-home")))


@pytest.fixture(scope="module")
def codes(tmp_path_factory) -> Path:
    """A generated codes file the BNN can learn (`tests.fed_codes.make_codes`)."""
    from tests.fed_codes import make_codes

    return make_codes(tmp_path_factory.mktemp("codes") / "codes.h5")
