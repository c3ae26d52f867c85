"""On-device learning of a new class (`hybnn learn-class`, issue 27 item 2): a bundle exported
from a small VAE trained here on real MNIST learns digits 0–7 into a prototype head, then, in a
process where importing torch (and numba) fails, learns 8 and 9, and `hybnn predict` scores all
ten digits; classes 0–7 are kept byte for byte. Bad input gets one line and leaves the bundle as
it was. The nearest-prototype rule itself (`hybnn_kernels.prototypes`) is checked against a
naive reference and against the XNOR kernels' classifier of `hybnn continual`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hybnn_cli.cli import app
from tests.conftest import idx_bytes, predict_json

runner = CliRunner()
K = 10  # prototypes per digit
N_FIT = 500  # training images per digit learned
N_VAL = 2000  # validation images the accuracy bound is derived on
BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError(f'{{name}} is blocked in this test')
        return None
sys.meta_path.insert(0, _Block())
"""


def _blocked_env(folder: Path, blocked: tuple[str, ...]) -> dict:
    """A child's environment where importing the `blocked` packages fails (one BLAS thread:
    this test runs beside others on a small machine)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCK.format(blocked=blocked))
    return {**os.environ, "PYTHONPATH": str(folder), "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1"}


def _hybnn(args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hybnn_cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def _learn(bundle, digit, folder, *extra):
    r = runner.invoke(app, ["learn-class", "--model", str(bundle), "--name", str(digit),
                            str(folder / f"train{digit}.npy"), "--components", str(K),
                            "--seed", str(digit), "--threads", "1", *map(str, extra)])
    assert r.exit_code == 0, r.output
    return r


def _table(bundle: Path, head: str = "learned") -> tuple[dict, np.ndarray]:
    m = json.loads((bundle / "bundle.json").read_text())
    entry = m["prototype_heads"][head]
    return entry, np.load(bundle / entry["file"])


def _small_mnist(mnist_dir: Path, root: Path, n_train: int, n_test: int) -> str:
    """The first images of MNIST's splits as a dataset of their own (`mnist-small`, in `root`),
    so that the VAE trains and is evaluated on few images."""
    from hybnn_cli.data import datasets as data

    md5 = {}
    (root / "mnist-small").mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = data.load_split("mnist", split, mnist_dir)
        for name, arr in zip(data.MNIST.files[split], (images[:n], labels[:n]), strict=True):
            raw = idx_bytes(arr)
            (root / "mnist-small" / name).write_bytes(raw)
            md5[name] = hashlib.md5(raw).hexdigest()
    data.DATASETS["mnist-small"] = data.DatasetSpec(
        name="mnist-small", folder="mnist-small", files=data.MNIST.files, md5=md5, mirrors=(),
        class_names=data.MNIST.class_names)
    return "mnist-small"


@pytest.fixture(scope="module")
def mnist_bundle(mnist_dir, tmp_path_factory):
    """A bundle (head task 1) of a VAE trained one epoch on 6,000 MNIST images, digits 0–7 learned
    from N_FIT training images each; the images of every digit saved as NPY, and the validation
    and test images with their labels."""
    from threadpoolctl import threadpool_limits

    from hybnn_cli.data.datasets import load_split
    from hybnn_cli.data.splits import train_val_indices
    from hybnn_cli.data.tasks import parse_task
    from hybnn_cli.threads import using
    from hybnn_cli.train import stages
    from hybnn_cli.train.configs import BNNConfig, VAEConfig

    out = tmp_path_factory.mktemp("learn")
    small = _small_mnist(mnist_dir, out / "data", 6000, 500)
    with using(1):  # one thread: this test runs beside others on a small machine
        stages.pretrain_vae(VAEConfig(dataset=small, epochs=1, threads=1), out / "vae.pt",
                            out / "data")
        stages.extract_codes(out / "vae.pt", out / "codes.h5", small, out / "data", limit=2000)
        stages.train_task_bnn(out / "codes.h5", parse_task("1"),
                              BNNConfig(task="1", epochs=1, threads=1), out / "bnn-task1.pt")
    r = runner.invoke(app, ["export", str(out / "bnn-task1.pt"), "--vae", str(out / "vae.pt"),
                            "--out", str(out / "bundle"), "--calibration", "100", "--threads",
                            "1", "--data-dir", str(out / "data"), "--json"])
    assert r.exit_code == 0, r.output
    images, labels = load_split("mnist", "train", mnist_dir)
    train_idx, val_idx = train_val_indices(labels)
    for d in range(10):
        np.save(out / f"train{d}.npy", images[train_idx[labels[train_idx] == d][:N_FIT]])
    val = val_idx[:N_VAL]
    test_x, test_y = load_split("mnist", "test", mnist_dir)
    np.save(out / "test.npy", test_x)
    (out / "test-labels").write_bytes(idx_bytes(test_y))
    with threadpool_limits(1):
        for d in range(8):
            _learn(out / "bundle", d, out)
    return {"dir": out, "bundle": out / "bundle", "val": (images[val], labels[val]),
            "test": (test_x, test_y.astype(np.int64))}


def _accuracy_bound(mnist_bundle) -> tuple[float, float, np.ndarray]:
    """What the same fit gives on validation images (prototypes fitted in this process on the
    same training images with the same K and seeds), the bound the test accuracy must reach (that
    accuracy less four standard errors of the difference of two binomial proportions, the
    validation and the test estimate), and the prototypes of the ten digits."""
    from hybnn_kernels.pipeline import load_bundle
    from hybnn_kernels.prototypes import fit_prototypes, nearest

    d = mnist_bundle["dir"]
    pipe = load_bundle(mnist_bundle["bundle"], 1, heads=["task1"], compiled=False)
    protos = np.concatenate([fit_prototypes(pipe.encode(np.load(d / f"train{c}.npy")),
                                            pipe.n_bits, K, c) for c in range(10)])
    vx, vy = mnist_bundle["val"]
    acc = float(np.mean(nearest(pipe.encode(vx), protos) // K == vy))
    n_test = len(mnist_bundle["test"][1])
    se = math.sqrt(acc * (1 - acc) * (1 / len(vy) + 1 / n_test))
    return acc, acc - 4 * se, protos


def test_learn_eight_and_nine_without_torch_and_forget_nothing(mnist_bundle, tmp_path):
    bundle, d = mnist_bundle["bundle"], mnist_bundle["dir"]
    entry, before = _table(bundle)
    assert entry["classes"] == [str(c) for c in range(8)] and before.shape == (8 * K, 4)
    # learning in a process where torch and numba cannot be imported: numpy and ONNX Runtime
    env = _blocked_env(tmp_path / "no-numba", ("torch", "numba", "llvmlite", "flwr", "onnx"))
    check = subprocess.run([sys.executable, "-c", "import numba"], env=env, capture_output=True,
                           text=True)
    assert check.returncode == 1 and "blocked in this test" in check.stderr
    for digit in (8, 9):
        r = _hybnn(["learn-class", "--model", bundle, "--name", digit, d / f"train{digit}.npy",
                    "--seed", digit, "--threads", "1", "--json"], env)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert (res["components"], res["images"], res["classes"][-1]) == (K, N_FIT, str(digit))
    entry, after = _table(bundle)
    assert entry["classes"] == [str(c) for c in range(10)] and after.shape == (10 * K, 4)
    assert after[:8 * K].tobytes() == before.tobytes()  # nothing forgotten, byte for byte
    assert sorted(p.name for p in (bundle / "heads").iterdir()) == [
        "learned-" + entry["sha256"][:16] + ".npy", "task1.h5"]  # the old table removed
    rec = entry["learned"]["9"]
    assert (rec["images"], rec["seed"], rec["components"], rec["encoder"]) == (N_FIT, 9, K,
                                                                               "float")
    # predicting, torch blocked: every test image, all ten digits
    env = _blocked_env(tmp_path / "no-torch", ("torch", "flwr", "matplotlib", "onnx"))
    r = _hybnn(["predict", "--model", bundle, d / "test.npy", "--labels", d / "test-labels",
                "--head", "learned", "--threads", "1", "--json"], env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["heads"]["learned"]
    val_acc, bound, protos = _accuracy_bound(mnist_bundle)
    assert after.tobytes() == protos.tobytes()  # the device fitted what this process fits
    assert got["n_task"] == len(mnist_bundle["test"][1])
    assert bound > 0.5, f"validation accuracy {val_acc:.3f}: the encoder learned too little"
    assert got["accuracy"] >= bound, (got["accuracy"], val_acc, bound)
    labels = np.asarray(got["labels"])
    assert set(labels) == {str(c) for c in range(10)}
    assert got["accuracy"] == pytest.approx(np.mean(labels == mnist_bundle["test"][1].astype(
        str)))


def test_the_head_gives_the_labels_of_the_xnor_prototype_classifier(mnist_bundle):
    """The numpy rule (Hamming distance by np.bitwise_count) and `hybnn continual`'s prototype
    learner (±1 dot products on the XNOR kernels) pick the same prototype, ties included."""
    from hybnn_kernels.pipeline import load_bundle

    from hybnn_cli.continual.class_models import PrototypeClassifier

    pipe = load_bundle(mnist_bundle["bundle"], 1, heads=["learned"], compiled=False)
    head = pipe.heads["learned"]
    codes = pipe.encode(mnist_bundle["test"][0][:3000])
    n = len(head.classes)
    clf = PrototypeClassifier(pipe.n_bits, n, K)
    clf.load_state_dict({"classes": list(range(n)),
                         "prototypes": [head.prototypes[c * K:(c + 1) * K] for c in range(n)]})
    want = clf.predict(codes, np.ones((len(codes), n), bool))
    assert np.array_equal(head.labels(codes), head.classes[want])


def test_nearest_prototype_ties_and_fit_are_seeded():
    from hybnn_kernels.layout import pack_bool, unpack_bits
    from hybnn_kernels.prototypes import fit_prototypes, hamming, nearest

    rng = np.random.default_rng(0)
    protos = pack_bool(rng.random((12, 70)) < 0.5)
    protos[5] = protos[2]  # a tie: the first row wins
    codes = np.concatenate([protos[[5, 7]], pack_bool(rng.random((40, 70)) < 0.5)])
    naive = (unpack_bits(codes, 70)[:, None, :] != unpack_bits(protos, 70)[None]).sum(-1)
    assert np.array_equal(hamming(codes, protos), naive)
    assert np.array_equal(nearest(codes, protos), naive.argmin(1))
    assert nearest(codes, protos)[:2].tolist() == [2, 7]
    a, b = (fit_prototypes(codes, 70, 4, seed=3) for _ in range(2))
    assert a.tobytes() == b.tobytes() and a.shape == (4, 2)


def _one_line_error(args, msg):
    r = runner.invoke(app, ["learn-class", *map(str, args)])
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], r.stderr


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture
def copy(mnist_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(mnist_bundle["bundle"], dst)
    return dst


@pytest.mark.parametrize("case, msg", [
    ("duplicate", "already has a class named '3'"),
    ("few", "4 images of 'new' for 10 prototypes"),
    ("shape", "expected 1×28×28 images (channels × height × width), got 1×30×28"),
    ("channels", "got 3×28×28"),
    ("components", "holds 10 prototypes per class"),
    ("bnn-head", "task1 is a BNN head"),
    ("empty-folder", "a folder with no PNG, JPEG, NPY or IDX image files"),
    ("tab", "a class name is at most 100 printable characters"),
])
def test_bad_input_gives_one_line_and_leaves_the_bundle(mnist_bundle, copy, tmp_path, case, msg):
    d = mnist_bundle["dir"]
    imgs = {"few": tmp_path / "few.npy", "shape": tmp_path / "shape.npy",
            "channels": tmp_path / "rgb.npy", "empty-folder": tmp_path / "empty"}
    np.save(imgs["few"], np.load(d / "train8.npy")[:4])
    np.save(imgs["shape"], np.zeros((20, 30, 28), np.uint8))
    np.save(imgs["channels"], np.zeros((20, 28, 28, 3), np.uint8))
    imgs["empty-folder"].mkdir()
    args = {"duplicate": ["--name", "3", d / "train8.npy"],
            "few": ["--name", "new", imgs["few"]],
            "shape": ["--name", "new", imgs["shape"]],
            "channels": ["--name", "new", imgs["channels"]],
            "components": ["--name", "new", d / "train8.npy", "--components", "5"],
            "bnn-head": ["--name", "new", d / "train8.npy", "--head", "task1"],
            "empty-folder": ["--name", "new", imgs["empty-folder"]],
            "tab": ["--name", "a\tb", d / "train8.npy"]}[case]
    before = _snapshot(copy)
    _one_line_error(["--model", copy, *args], msg)
    assert _snapshot(copy) == before


def test_not_a_bundle_and_no_images(mnist_bundle, tmp_path):
    npy = mnist_bundle["dir"] / "train8.npy"
    (tmp_path / "empty").mkdir()
    _one_line_error(["--model", tmp_path / "empty", "--name", "8", npy], "not a deploy bundle")
    _one_line_error(["--model", tmp_path / "nothing", "--name", "8", npy], "no such bundle")
    _one_line_error(["--model", mnist_bundle["bundle"], "--name", "8"], "no images given")


def test_a_failed_write_leaves_the_bundle_as_it_was(mnist_bundle, copy, monkeypatch):
    """The manifest is the commit point: when writing it fails, the new prototype file goes and
    the bundle reads as before."""
    from hybnn_cli.deploy import learn_class

    real = learn_class.atomic_path

    def failing(path):
        if Path(path).name == "bundle.json":
            raise OSError("disk full (simulated)")
        return real(path)

    before = _snapshot(copy)
    monkeypatch.setattr(learn_class, "atomic_path", failing)
    _one_line_error(["--model", copy, "--name", "new", mnist_bundle["dir"] / "train8.npy",
                     "--threads", "1"], "disk full (simulated)); the bundle is unchanged")
    assert _snapshot(copy) == before


def test_a_folder_of_pngs_is_learned_and_predict_prints_names(mnist_bundle, copy, tmp_path):
    from PIL import Image

    folder = tmp_path / "eights"
    folder.mkdir()
    for i, img in enumerate(np.load(mnist_bundle["dir"] / "train8.npy")[:12]):
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    r = runner.invoke(app, ["learn-class", "--model", str(copy), "--name", "eight", str(folder),
                            "--head", "mine", "--components", "3", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert (res["images"], res["classes"], res["head"]) == (12, ["eight"], "mine")
    entry, table = _table(copy, "mine")
    assert table.shape == (3, 4) and entry["learned"]["eight"]["files"] == 12
    out = runner.invoke(app, ["predict", "--model", str(copy), str(folder / "00.png"),
                              "--head", "mine", "--head", "learned"])
    assert out.exit_code == 0, out.output
    header, row = out.stdout.splitlines()[-2:]
    assert header == "# image\tmine\tlearned"
    assert row.split("\t")[:2] == [str(folder / "00.png"), "eight"]


def test_damaged_prototypes_are_refused_and_version_1_bundles_still_load(mnist_bundle, copy):
    from hybnn_kernels.pipeline import load_bundle

    entry, _ = _table(copy)
    raw = bytearray((copy / entry["file"]).read_bytes())
    raw[-3] ^= 0xFF
    (copy / entry["file"]).write_bytes(bytes(raw))
    r = runner.invoke(app, ["predict", "--model", str(copy), str(mnist_bundle["dir"] /
                                                                  "train8.npy")])
    assert r.exit_code == 1 and "does not match the manifest's" in r.stderr
    m = json.loads((copy / "bundle.json").read_text())
    del m["prototype_heads"]
    m["format_version"] = 1
    (copy / "bundle.json").write_text(json.dumps(m))
    assert list(load_bundle(copy, 1, compiled=False).heads) == ["task1"]


def test_e2e_times_learning_on_a_copy_and_renders_it(mnist_bundle):
    """The e2e benchmark's on-device learning timing (`e2e_speed.learn_speed`) runs on a copy of
    the bundle (the bundle is not changed); its block says "not measured" for a run before it."""
    from hybnn_cli.study.e2e_speed import learn_speed
    from hybnn_cli.study.e2e_study import _learning_text

    before = _snapshot(mnist_bundle["bundle"])
    le = learn_speed(mnist_bundle["bundle"], "mnist-small", mnist_bundle["dir"] / "data", 1,
                     quick=True)
    assert _snapshot(mnist_bundle["bundle"]) == before
    assert [r["class"] for r in le["classes"]] == [str(c) for c in range(10)]
    assert all(r["images"] == 100 and r["encode_seconds"] > 0 and r["fit_seconds"] > 0
               for r in le["classes"])
    assert le["us_per_image"] == pytest.approx(le["encode_us_per_image"] + le["fit_us_per_image"])
    assert le["test_images"] == 500 and le["test_accuracy"] > 0.5
    assert "not measured" in _learning_text(None)
    text = _learning_text(le)
    assert "µs per image" in text and "not measured" not in text


def test_exporting_over_the_bundle_keeps_what_was_learned_on_the_device(mnist_bundle, copy,
                                                                         tmp_path):
    """`export --vae` over a bundle with learned heads: with the same encoder the new bundle
    holds them, byte for byte, and answers with them; with another encoder, or a learned head
    named as a new head, or a damaged learned file, it refuses in one line and leaves the bundle
    as it was."""
    d = mnist_bundle["dir"]
    entry, table = _table(copy)
    before = predict_json("--model", copy, d / "train9.npy", "--head", "learned", "--threads", "1")
    export = ["export", d / "bnn-task1.pt", "--vae", d / "vae.pt", "--out", copy,
              "--calibration", "50", "--threads", "1", "--data-dir", d / "data"]
    r = runner.invoke(app, list(map(str, export)))
    assert r.exit_code == 0, r.output
    assert "Kept the heads learned on the device: learned" in r.output
    entry2, table2 = _table(copy)
    assert entry2 == entry and np.array_equal(table2, table)
    after = predict_json("--model", copy, d / "train9.npy", "--head", "learned", "--threads", "1")
    assert after["heads"]["learned"]["labels"] == before["heads"]["learned"]["labels"]

    m = json.loads((copy / "bundle.json").read_text())
    m["prototype_heads"]["learned"]["encoder_sha256"] = "0" * 64  # as if another encoder's
    (copy / "bundle.json").write_text(json.dumps(m))
    snap = _snapshot(copy)
    r = runner.invoke(app, list(map(str, export)))
    assert r.exit_code == 1 and "learned on the device (learned) on another encoder" in r.output
    assert _snapshot(copy) == snap

    m["prototype_heads"] = {"task1": entry}  # a learned head named as the new BNN head
    (copy / "bundle.json").write_text(json.dumps(m))
    r = runner.invoke(app, list(map(str, export)))
    assert r.exit_code == 1 and "named task1, as a new head is" in r.output

    m["prototype_heads"] = {"learned": entry}
    (copy / "bundle.json").write_text(json.dumps(m))
    (copy / entry["file"]).write_bytes(b"damaged")
    snap = _snapshot(copy)
    r = runner.invoke(app, list(map(str, export)))
    assert r.exit_code == 1 and "does not match its SHA-256" in r.output
    assert _snapshot(copy) == snap


def test_two_classes_learned_at_once_are_both_kept(mnist_bundle, copy):
    """Two learn-class calls on one bundle at the same time (threads: the lock is per open
    file, so they exclude each other as two processes would): the second waits for the first's
    write and appends to it, so the head ends with both classes."""
    import threading

    from hybnn_cli.deploy.learn_class import learn_class

    d, errors = mnist_bundle["dir"], []
    before = _table(copy)[0]["classes"]

    def learn(digit):
        try:
            learn_class(copy, f"new{digit}", [d / f"train{digit}.npy"], components=K,
                        seed=digit, threads=1)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=learn, args=(digit,)) for digit in (8, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entry, table = _table(copy)
    assert entry["classes"][:-2] == before and sorted(entry["classes"][-2:]) == ["new8", "new9"]
    assert len(table) == len(entry["classes"]) * K
    assert sorted(p.name for p in (copy / "heads").glob("learned-*.npy")) == [
        Path(entry["file"]).name]  # no prototype file left behind
