"""A VAE that takes the data's shape: one or three channels, square sizes 8 to 64 (one more
stride-2 stage per doubling), any --latent-bits; a 3-channel 32×32 folder and an 8×8 NPZ go
through pretrain-vae, extract and train-bnn; the ONNX encoder is built for the recorded shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybnn_cli.codes.store import read_attrs, read_codes
from hybnn_cli.errors import HybnnError
from hybnn_cli.models import checkpoint as ck
from hybnn_cli.models.vae import BinaryVAE, Encoder, encoder_stages
from tests.conftest import one_line_error, run


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


def test_a_colour_folder_goes_through_the_pipeline(tmp_path):
    root = colour_folder(tmp_path / "colours")
    vae = tmp_path / "vae.pt"
    r = run("pretrain-vae", "--data", root, "--epochs", 1, "--batch-size", 16,
            "--latent-bits", 96, "--threads", 1, "--out", vae)
    assert r.exit_code == 0, r.output
    ckpt = ck.load_checkpoint(vae, ck.VAE_FORMAT)
    assert (ckpt["config"]["channels"], ckpt["config"]["image_size"]) == (3, 32)
    assert "resize" not in ckpt["config"]  # 32×32 taken as it is
    assert Image.open(vae.with_suffix(".png")).mode == "RGB"
    codes = tmp_path / "codes.h5"
    r = run("extract", "--vae", vae, "--data", root, "--out", codes)
    assert r.exit_code == 0, r.output
    c = read_codes(codes, "train")
    assert c.n_bits == 96 and c.codes.shape == (72, 2)
    r = run("train-bnn", "--codes", codes, "--classes", "blue,red", "--epochs", 1,
            "--out", tmp_path / "bnn.pt")
    assert r.exit_code == 0, r.output
    one_line_error(run("export", tmp_path / "bnn.pt", "--vae", vae, "--out", tmp_path / "b"),
                   "bundles take one channel of 28×28 for now")
    assert not (tmp_path / "b").exists()


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
    huge = colour_folder(tmp_path / "huge", n=3, size=80)
    one_line_error(run("pretrain-vae", "--data", huge, "--out", tmp_path / "v.pt"),
                   "the images are 80×80; give --image-size from 8 to 64")
    assert not (tmp_path / "v.pt").exists()
