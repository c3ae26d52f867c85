"""A VAE that takes the data's shape: one or three channels, square sizes 8 to 64 (one more
stride-2 stage per doubling), any --latent-bits; a 3-channel 32×32 folder and an 8×8 NPZ go
through pretrain-vae, extract, train-bnn, export --vae and predict --model BUNDLE, whose labels
equal the torch pipeline's; the ONNX encoder is built for the recorded shape; a bundle reads image
files at its shape, resizing them only when its VAE's training images were resized."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybnn_cli.codes.store import read_attrs, read_codes
from hybnn_cli.errors import HybnnError
from hybnn_cli.models import checkpoint as ck
from hybnn_cli.models.vae import BinaryVAE, Encoder, encoder_stages
from tests.conftest import idx_bytes, one_line_error, predict_json, run


@pytest.mark.parametrize("channels, size, stages", [(1, 8, 1), (1, 16, 2), (1, 28, 3),
                                                    (3, 32, 3), (3, 64, 4), (3, 12, 2)])
def test_the_vae_takes_the_shape(channels, size, stages):
    assert encoder_stages(size) == stages
    model = BinaryVAE(64, channels, size)
    assert len(model.encoder.features) == stages
    recon, logits = model(torch.rand(3, channels, size, size))
    assert recon.shape == (3, channels, size, size) and logits.shape == (3, 64)


def test_the_default_vae_is_the_papers_shape():
    shapes = {k: tuple(v.shape) for k, v in BinaryVAE().state_dict().items()}
    assert shapes["encoder.features.0.0.weight"] == (32, 1, 3, 3)
    assert shapes["encoder.features.2.0.weight"] == (128, 64, 3, 3)
    assert shapes["encoder.fc.weight"] == (200, 128 * 4 * 4)
    assert shapes["decoder.fc.0.weight"] == (64 * 7 * 7, 200)
    assert shapes["decoder.out.weight"] == (32, 1, 4, 4)
    assert not any(k.startswith("encoder.features.3") for k in shapes)


def test_sizes_and_channels_out_of_range_are_refused():
    with pytest.raises(HybnnError, match="--image-size must be from 8 to 64"):
        Encoder(200, 1, 128)
    with pytest.raises(HybnnError, match="1 or 3 channels"):
        Encoder(200, 2, 28)


def colour_folder(root: Path, n=24, size=32, seed=0) -> Path:
    """Three classes of RGB images: a bright square in the class's colour."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("test", n // 3)):
        for c, name in enumerate(("red", "green", "blue")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(count):
                img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
                img[4:size - 4, 4:size - 4, c] = 255
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def torch_labels(vae_path: Path, bnn_path: Path, images: np.ndarray) -> tuple:
    """The torch pipeline on uint8 images at the VAE's shape: (dataset labels, encoder logits)."""
    from hybnn_kernels import pack_signs

    from hybnn_cli.deploy.export_bundle import torch_logits
    from hybnn_cli.deploy.export_head import torch_predict

    vae, _ = ck.load_vae(vae_path)
    model, ckpt = ck.load_bnn(bnn_path)
    logits = torch_logits(vae.encoder, images)
    _, idx = torch_predict(model, pack_signs(logits))
    return np.asarray(ckpt["task"]["classes"])[idx], logits


def assert_bundle_is_torch(bundle: Path, vae: Path, bnn: Path, images: np.ndarray,
                           labels: list) -> None:
    """`labels` (predict's, on files holding `images`) equal the torch pipeline's on `images`;
    the bundle's codes equal the torch encoder's but for bits of a logit within rounding of 0."""
    from hybnn_kernels import load_bundle, pack_signs, unpack_bits

    want, logits = torch_labels(vae, bnn, images)
    codes = load_bundle(bundle, threads=1).encode(images)
    differ = unpack_bits(codes ^ pack_signs(logits), logits.shape[1]).astype(bool)
    assert np.all(np.abs(logits[differ]) < 1e-4)
    same = ~differ.any(axis=1)
    assert same.mean() > 0.9 and np.array_equal(np.asarray(labels)[same], want[same])


def class_indices(head: dict) -> np.ndarray:
    """predict's labels of one head (its JSON) as class indices: a head of named classes answers
    with their names, which `class_names` maps back to `classes`."""
    labels = np.asarray(head["labels"])
    if "class_names" not in head:
        return labels
    return np.asarray(head["classes"])[[head["class_names"].index(x) for x in labels.tolist()]]


def png_images(folders: list[Path]) -> tuple[list[Path], np.ndarray]:
    """The PNG files of `folders` in predict's order, and their pixels as training reads them."""
    from hybnn_cli.data.files import decode_image

    files = [f for d in folders for f in sorted(d.glob("*.png"))]
    return files, np.stack([decode_image(f, f.read_bytes()) for f in files])


@pytest.fixture(scope="module")
def colour(tmp_path_factory) -> dict:
    """A 3-channel 32×32 folder through pretrain-vae, extract, train-bnn and export --vae."""
    tmp = tmp_path_factory.mktemp("colour")
    root = colour_folder(tmp / "colours")
    vae = tmp / "vae.pt"
    r = run("pretrain-vae", "--data", root, "--epochs", 1, "--batch-size", 16,
            "--latent-bits", 96, "--threads", 1, "--out", vae)
    assert r.exit_code == 0, r.output
    codes = tmp / "codes.h5"
    r = run("extract", "--vae", vae, "--data", root, "--out", codes)
    assert r.exit_code == 0, r.output
    r = run("train-bnn", "--codes", codes, "--classes", "blue,red", "--epochs", 1,
            "--out", tmp / "bnn.pt")
    assert r.exit_code == 0, r.output
    r = run("export", tmp / "bnn.pt", "--vae", vae, "--out", tmp / "bundle", "--calibration",
            40, "--json")
    assert r.exit_code == 0, r.output
    return {"tmp": tmp, "root": root, "vae": vae, "codes": codes, "bnn": tmp / "bnn.pt",
            "bundle": tmp / "bundle"}


def test_a_colour_folder_goes_through_the_pipeline(colour):
    from hybnn_kernels.pipeline import SHAPED_VERSION

    ckpt = ck.load_checkpoint(colour["vae"], ck.VAE_FORMAT)
    assert (ckpt["config"]["channels"], ckpt["config"]["image_size"]) == (3, 32)
    assert "resize" not in ckpt["config"]  # 32×32 taken as it is
    assert Image.open(colour["vae"].with_suffix(".png")).mode == "RGB"
    c = read_codes(colour["codes"], "train")
    assert c.n_bits == 96 and c.codes.shape == (72, 2)
    m = json.loads((colour["bundle"] / "bundle.json").read_text())
    inp = m["encoder"]["input"]
    assert (inp["channels"], inp["height"], inp["width"], inp["resize"]) == (3, 32, 32, "none")
    assert inp["layout"] == "NCHW" and m["format_version"] == SHAPED_VERSION
    assert m["encoder"]["check"]["images"] == 40
    folders = [colour["root"] / "test" / n for n in ("blue", "green", "red")]
    files, images = png_images(folders)
    got = predict_json("--model", colour["bundle"], *folders)
    [head] = got["heads"]
    assert [f["path"] for f in got["files"]] == list(map(str, files))
    assert got["heads"][head]["class_names"] == ["blue", "red"]  # the fixture's task
    assert_bundle_is_torch(colour["bundle"], colour["vae"], colour["bnn"], images,
                           class_indices(got["heads"][head]))


def test_a_colour_bundle_reads_npy_either_way_and_one_image_at_a_time(colour, tmp_path):
    from hybnn_kernels import load_bundle
    from hybnn_kernels.pipeline import BundleError

    _, images = png_images([colour["root"] / "test" / n for n in ("blue", "green", "red")])
    np.save(tmp_path / "last.npy", images)  # (N, H, W, C), as files hold them
    np.save(tmp_path / "first.npy", images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    np.save(tmp_path / "one.npy", images[5])
    pipe = load_bundle(colour["bundle"], threads=1)
    want = pipe.classify(images)
    [head] = want
    for f in ("last.npy", "first.npy"):
        got = predict_json("--model", colour["bundle"], tmp_path / f)["heads"][head]
        assert np.array_equal(class_indices(got), want[head]), f
    got = predict_json("--model", colour["bundle"], tmp_path / "one.npy")
    assert got["n"] == 1 and class_indices(got["heads"][head]).tolist() == [want[head][5]]
    one = pipe.one_image(1)
    assert [one(img)[head] for img in images] == want[head].tolist()
    assert np.array_equal(one.encode(images[3]), pipe.encode(images[3:4])[0])
    assert one(images[3:4]) == {head: want[head][3]}  # (1, H, W, C) too
    for bad in (images[0, :, :, 0], images[0, 0], images[0, :31]):  # (32, 32), (32, 3), 31 rows
        with pytest.raises(BundleError, match="expected one 32×32×3 uint8 image"):
            one(bad)
    with pytest.raises(BundleError, match=r"expected 3×32×32 images \(channels × height"):
        pipe.classify(images[:, :, :, 0])


def test_a_bundle_refuses_images_it_cannot_take_in_one_line(colour, tmp_path):
    Image.new("L", (32, 32)).save(tmp_path / "gray.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")
    np.save(tmp_path / "gray.npy", np.zeros((2, 32, 32), np.uint8))
    for f, got in (("gray.png", "got 1×32×32"), ("big.png", "got 3×40×40"),
                   ("gray.npy", "got 1×32×32")):
        one_line_error(run("predict", "--model", colour["bundle"], tmp_path / f),
                       f"expected 3×32×32 images (channels × height × width), {got}")
    one_line_error(run("learn-class", "--model", colour["bundle"], "--name", "x",
                       tmp_path / "big.png"), "got 3×40×40")


def _a_resized_bundle_resizes_square_images_as_training_did(tmp_path: Path, big: Path) -> None:
    """A bundle whose VAE took 40×40 images resized to 16×16: square PNGs of any size are resized
    by `fit_images`' own function (the labels are the bundle's on fit_images' output, and the
    torch pipeline's), other squares too; a non-square image is refused in one line."""
    from hybnn_kernels import load_bundle

    from hybnn_cli.data.labelled import RESIZE, fit_images

    bundle = tmp_path / "bundle16"
    inp = json.loads((bundle / "bundle.json").read_text())["encoder"]["input"]
    assert (inp["channels"], inp["height"], inp["resize"]) == (3, 16, RESIZE)
    files, images = png_images([big / "test" / n for n in ("blue", "green", "red")])
    assert images.shape[1:] == (40, 40, 3)
    Image.fromarray(images[0]).resize((24, 24)).save(tmp_path / "small.png")
    fitted = fit_images(images, "test", 3, 16)
    got = predict_json("--model", bundle, *files, tmp_path / "small.png")
    [head] = got["heads"]
    labels = class_indices(got["heads"][head])
    want = load_bundle(bundle, threads=1).classify(fitted)[head]
    assert np.array_equal(labels[:-1], want)
    assert_bundle_is_torch(bundle, tmp_path / "v16.pt", tmp_path / "b16.pt", fitted, labels[:-1])
    small = fit_images(np.asarray(Image.open(tmp_path / "small.png"))[None], "small", 3, 16)
    assert labels[-1] == load_bundle(bundle, threads=1).classify(small)[head][0]
    Image.new("RGB", (40, 30)).save(tmp_path / "wide.png")
    one_line_error(run("predict", "--model", bundle, tmp_path / "wide.png"),
                   "got 3×30×40; only square images are resized")
    r = run("learn-class", "--model", bundle, "--name", "big", "--components", 2, *files[:4])
    assert r.exit_code == 0, r.output
    m = json.loads((bundle / "bundle.json").read_text())
    assert m["format_version"] == 3 and m["encoder"]["input"]["resize"] == RESIZE
    got = predict_json("--model", bundle, *files[:4])
    assert class_indices(got["heads"][head]).tolist() == labels[:4].tolist()
    assert got["heads"]["learned"]["labels"] == ["big"] * 4  # its only class


def test_onnx_encoder_is_built_for_the_recorded_shape():
    ort = pytest.importorskip("onnxruntime")
    from hybnn_cli.deploy.export_bundle import encoder_onnx

    torch.manual_seed(0)
    model = BinaryVAE(96, 3, 32)
    model(torch.rand(8, 3, 32, 32))  # batch norm statistics that are not the identity
    enc = model.encoder.eval()
    proto = encoder_onnx(enc)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 32, 32]
    x = torch.rand(5, 3, 32, 32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {proto.graph.input[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = enc(x).numpy()
    assert np.allclose(got, want, atol=1e-4)


def test_an_8x8_npz_and_a_resized_folder(tmp_path):
    rng = np.random.default_rng(0)
    y = {s: rng.integers(0, 4, n) for s, n in (("train", 200), ("test", 60))}
    x = {}
    for s, labels in y.items():  # a digits-like set: class k lights row pair k
        x[s] = (rng.random((len(labels), 8, 8)) * 40).astype(np.uint8)
        for i, k in enumerate(labels):
            x[s][i, 2 * k:2 * k + 2, 1:7] = 255
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=x["train"], y_train=y["train"], x_test=x["test"], y_test=y["test"])
    vae = tmp_path / "vae8.pt"
    r = run("pretrain-vae", "--data", npz, "--epochs", 1, "--batch-size", 32, "--latent-bits", 32,
            "--threads", 1, "--out", vae)
    assert r.exit_code == 0, r.output
    assert ck.load_checkpoint(vae, ck.VAE_FORMAT)["config"]["image_size"] == 8
    r = run("extract", "--vae", vae, "--data", npz, "--out", tmp_path / "c8.h5")
    assert r.exit_code == 0, r.output
    r = run("train-bnn", "--codes", tmp_path / "c8.h5", "--classes", "0,3", "--epochs", 1,
            "--out", tmp_path / "b8.pt")
    assert r.exit_code == 0, r.output
    r = run("export", tmp_path / "b8.pt", "--vae", vae, "--out", tmp_path / "bundle8",
            "--calibration", 50, "--int8")
    assert r.exit_code == 0, r.output
    np.save(tmp_path / "x8.npy", x["test"])
    got = predict_json("--model", tmp_path / "bundle8", tmp_path / "x8.npy")
    [head] = got["heads"]
    assert_bundle_is_torch(tmp_path / "bundle8", vae, tmp_path / "b8.pt", x["test"],
                           got["heads"][head]["labels"])
    assert predict_json("--model", tmp_path / "bundle8", tmp_path / "x8.npy", "--int8")["n"] == 60
    # the head alone, with the torch encoder: image files read at the VAE's shape too
    r = run("export", tmp_path / "b8.pt", "--out", tmp_path / "b8.h5")
    assert r.exit_code == 0, r.output
    r = run("predict", "--model", tmp_path / "b8.h5", "--encoder", vae, tmp_path / "x8.npy",
            "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["labels"] == got["heads"][head]["labels"]
    # a square folder of another size, brought to --image-size, the method recorded
    big = colour_folder(tmp_path / "big", n=6, size=40)
    r = run("pretrain-vae", "--data", big, "--image-size", 16, "--epochs", 1, "--batch-size", 6,
            "--latent-bits", 32, "--threads", 1, "--out", tmp_path / "v16.pt")
    assert r.exit_code == 0, r.output
    cfg = ck.load_checkpoint(tmp_path / "v16.pt", ck.VAE_FORMAT)["config"]
    assert cfg["image_size"] == 16 and "bilinear" in cfg["resize"]
    r = run("extract", "--vae", tmp_path / "v16.pt", "--data", big, "--out", tmp_path / "c16.h5")
    assert r.exit_code == 0, r.output
    assert read_attrs(tmp_path / "c16.h5")["config"]["resize"]["to"] == 16
    r = run("train-bnn", "--codes", tmp_path / "c16.h5", "--classes", "red,blue", "--epochs", 1,
            "--out", tmp_path / "b16.pt")
    assert r.exit_code == 0, r.output
    r = run("export", tmp_path / "b16.pt", "--vae", tmp_path / "v16.pt", "--out",
            tmp_path / "bundle16", "--calibration", 12)
    assert r.exit_code == 0, r.output  # its check images were fitted: the encoder takes 16×16
    _a_resized_bundle_resizes_square_images_as_training_did(tmp_path, big)
    huge = colour_folder(tmp_path / "huge", n=3, size=80)
    one_line_error(run("pretrain-vae", "--data", huge, "--out", tmp_path / "v.pt"),
                   "the images are 80×80; give --image-size from 8 to 64")
    assert not (tmp_path / "v.pt").exists()


def test_the_readme_example_for_your_own_images_runs(tmp_path, monkeypatch):
    """The README's "your own images, end to end" block, command by command, on a generated
    folder of 40×40 colour images of two classes named cat and dog (resized to 32, as the
    block's `--image-size 32` says), with options appended only to make it quick (one epoch,
    few calibration images); `predict` prints the image's path and one of the two class names."""
    import re
    import shlex

    from PIL import Image

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"Your own images, end to end.*?```\n(.*?)```", text, re.S)[1]
    lines = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert [shlex.split(line)[1] for line in lines] == [
        "pretrain-vae", "extract", "train-bnn", "export", "predict"]
    rng = np.random.default_rng(0)
    for split, count in (("train", 30), ("test", 8)):
        for c, name in enumerate(("cat", "dog")):
            d = tmp_path / "photos" / split / name
            d.mkdir(parents=True)
            for i in range(count):
                img = (rng.random((40, 40, 3)) * 60).astype(np.uint8)
                img[8:32, 8:32, c] = 255
                Image.fromarray(img).save(d / f"{i}.png")
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "image.png")
    quick = {"pretrain-vae": ["--epochs", "1", "--batch-size", "16", "--threads", "1"],
             "train-bnn": ["--epochs", "2"], "export": ["--calibration", "20"]}
    monkeypatch.chdir(tmp_path)
    for line in lines:
        words = shlex.split(line)[1:]
        r = run(*words, *quick.get(words[0], []))
        assert r.exit_code == 0, f"{line}\n{r.output}"
    rows = [row.split("\t") for row in r.output.splitlines() if row.startswith("image.png")]
    assert len(rows) == 1 and rows[0][1] in ("cat", "dog"), r.output
    # the JSON names the class too, and --labels (class indices) still scores the named head
    idx = np.array([0] * 4 + [1] * 4, dtype=np.uint8)
    (tmp_path / "labels-idx1-ubyte").write_bytes(idx_bytes(idx))
    files = [str(tmp_path / "photos" / "test" / n / f"{i}.png") for n in ("cat", "dog")
             for i in range(4)]
    bundle = shlex.split(lines[-1])[3]
    r = run("predict", "--model", bundle, *files, "--labels",
            tmp_path / "labels-idx1-ubyte", "--json")
    assert r.exit_code == 0, r.output
    head = next(iter(json.loads(r.output)["heads"].values()))
    assert head["class_names"] == ["cat", "dog"] and set(head["labels"]) <= {"cat", "dog"}
    assert head["n_task"] == 8
    shown = np.asarray(head["labels"]) == np.asarray(["cat", "dog"])[idx]
    assert head["accuracy"] == pytest.approx(shown.mean())
