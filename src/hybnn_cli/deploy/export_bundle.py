"""Export a deploy bundle: the frozen encoder as ONNX and one or more task heads, one folder.

The encoder graph is written with `onnx.helper` from the VAE checkpoint's weights, batch norm
folded into the convolutions (w' = w·γ/√(σ² + ε), b' = β − μ·γ/√(σ² + ε), computed in float64,
stored as float32): three Conv (3×3, stride 2, pad 1) + LeakyRelu(0.2), Flatten, Gemm to the
latent logits (one more stride-2 stage per doubling of the image size, as the VAE has); input
``images`` (batch, C, H, W) float32 with a dynamic batch axis, output ``logits`` (batch,
latent_bits). The manifest's ``encoder.input`` (`input_record`) records the VAE's shape, the
pixel normalisation and the resizing its training images went through (the checkpoint's
``resize``, `labelled.RESIZE`, or "none"); the calibration and check images go through the same
fit (`labelled.fit_images`) as the VAE's data. The export runs the ONNX model in ONNX Runtime on
training images and records, against the torch encoder, the largest logit difference and the
number of code bits that differ (folding changes float rounding; a bit flips only for a logit within
rounding of 0). `--int8` adds the encoder quantized by ONNX Runtime's static quantization (QDQ,
per-channel int8 weights, activations calibrated by MinMax on seeded training images; the first
convolution and the last layer stay float, see FLOAT_NODES). It also times both encoders on the
exporting machine (`encoder_timing`, in a new process without torch: median microseconds per
image at batch 1 and at a large batch, the CPU named) and records them, so that `predict --int8`
can say when int8 is the slower one on the CPU it runs on: on some CPUs it is.

Heads are the deploy files of `export.write_deploy`; every head must come from codes of this
encoder. The folder is written beside its final name and renamed at the end (`atomic_dir`).
Exporting over a bundle keeps the heads learned on the device (`learn-class`'s prototype heads,
`learned_heads`) when the encoder is the same; with another encoder it refuses, since they cannot
answer its codes.
The layout is documented in `hybnn_kernels.pipeline`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from hybnn_kernels import pack_signs
from hybnn_kernels.pipeline import (
    BUNDLE_FORMAT,
    MANIFEST,
    InputShape,
    file_sha256,
    format_version,
    input_shape,
    normalise,
)

from hybnn_cli import __version__
from hybnn_cli.deploy.encoder_timing import time_in_new_process
from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_dir
from hybnn_cli.models.vae import Encoder

OPSET = 21
LEAKY_SLOPE = 0.2
# the input of an encoder of one 28×28 channel (MNIST's); `input_record` gives any VAE's
INPUT = {"name": "images", "channels": 1, "height": 28, "width": 28, "dtype": "float32",
         "layout": "NCHW", "pixels": "uint8", "offset": 0.0, "scale": 255.0,
         "normalisation": "x = (pixel - offset) / scale, in float32"}


def input_record(encoder: Encoder, config: dict) -> dict:
    """The manifest's ``encoder.input`` for `encoder`: `INPUT` at its channels and size, with
    ``resize``, the method its training images were resized by (the VAE checkpoint's config), or
    "none"."""
    size = int(encoder.image_size)
    return {**INPUT, "channels": int(encoder.channels), "height": size, "width": size,
            "resize": str(config.get("resize") or "none")}


def fold_encoder(encoder: Encoder) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple]:
    """([(conv weight, bias) with batch norm folded] per block, (fc weight, fc bias)), float32."""
    encoder.eval()
    convs = []
    for block in encoder.features:
        conv, bn, act = block
        if not (isinstance(act, torch.nn.LeakyReLU) and act.negative_slope == LEAKY_SLOPE
                and conv.stride == (2, 2) and conv.padding == (1, 1) and conv.bias is None):
            raise HybnnError("the encoder's layers are not the ones this exporter knows")
        w = conv.weight.detach().double()
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = bn.bias.detach().double() - bn.running_mean.double() * scale
        convs.append(((w * scale[:, None, None, None]).float().numpy(), bias.float().numpy()))
    fc = (encoder.fc.weight.detach().float().numpy(), encoder.fc.bias.detach().float().numpy())
    return convs, fc


def encoder_onnx(encoder: Encoder):
    """The encoder as an onnx.ModelProto (batch norm folded, dynamic batch, opset OPSET)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    convs, (fw, fb) = fold_encoder(encoder)
    nodes, inits, x = [], [], INPUT["name"]
    for i, (w, b) in enumerate(convs):
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"),
                  numpy_helper.from_array(b, f"conv{i}.bias")]
        nodes.append(helper.make_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"],
                                      [f"conv{i}"], name=f"conv{i}", kernel_shape=[3, 3],
                                      strides=[2, 2], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("LeakyRelu", [f"conv{i}"], [f"act{i}"], name=f"act{i}",
                                      alpha=LEAKY_SLOPE))
        x = f"act{i}"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten", axis=1))
    inits += [numpy_helper.from_array(fw, "fc.weight"), numpy_helper.from_array(fb, "fc.bias")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc",
                                  transB=1))
    graph = helper.make_graph(
        nodes, "hybnn_encoder",
        [helper.make_tensor_value_info(INPUT["name"], TensorProto.FLOAT,
                                       ["batch", encoder.channels, encoder.image_size,
                                        encoder.image_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["batch", encoder.latent_bits])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="hybnn", producer_version=__version__)
    model.ir_version = 10  # readable by ONNX Runtime >= 1.16
    onnx.checker.check_model(model, full_check=True)
    return model


def torch_logits(encoder: Encoder, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    from hybnn_cli.data.tensors import images_to_tensor

    encoder.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            out.append(encoder(images_to_tensor(images[s:s + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.latent_bits), np.float32)


def onnx_logits(onnx_path: Path, images: np.ndarray, threads: int = 2) -> np.ndarray:
    from hybnn_kernels.pipeline import make_session

    s = make_session(onnx_path, threads)
    return s.run(None, {INPUT["name"]: normalise(images, INPUT["offset"], INPUT["scale"])})[0]


def compare_codes(want_logits: np.ndarray, got_logits: np.ndarray) -> dict:
    """Bits that differ between two sets of logits thresholded at 0, and the logit gap."""
    a, b = pack_signs(want_logits), pack_signs(got_logits)
    flipped = int(np.unpackbits((a ^ b).view(np.uint8)).sum())
    return {"images": int(len(want_logits)), "bits": int(want_logits.size),
            "flipped_bits": flipped,
            "max_abs_logit_diff": float(np.max(np.abs(want_logits - got_logits)))
            if len(want_logits) else 0.0}


# Kept in float32 by --int8: the first convolution (one input channel; quantizing its input and
# weights flipped about 3.3% of the code bits on MNIST test images, against 0.8% without it, for
# about 1% of the encoder's multiply-adds) and the last layer (its output is thresholded at 0, so
# its rounding lands on the bits directly: 0.44% flipped with both in float).
FLOAT_NODES = ("conv0", "fc")


def quantize_int8(float_path: Path, out_path: Path, images: np.ndarray, quant_format: str = "QDQ",
                  activations: str = "int8", float_nodes=FLOAT_NODES) -> None:
    """Static int8 quantization (per-channel int8 weights, MinMax calibration on `images`) of
    every node but `float_nodes`: `quant_format` QDQ (quantize/dequantize pairs ONNX Runtime fuses)
    or QOperator (quantized operators), `activations` int8 or uint8. `--int8` uses the defaults;
    `benchmarks/int8.py` compares the others."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([images[s:s + 256] for s in range(0, len(images), 256)])

        def get_next(self):
            b = next(self.batches, None)
            if b is None:
                return None
            return {INPUT["name"]: normalise(b, INPUT["offset"], INPUT["scale"])}

    logging.disable(logging.WARNING)  # its advice to pre-process: shapes are static here
    try:
        quantize_static(str(float_path), str(out_path), Reader(),
                        quant_format=getattr(QuantFormat, quant_format), per_channel=True,
                        activation_type={"int8": QuantType.QInt8,
                                         "uint8": QuantType.QUInt8}[activations],
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=list(float_nodes))
    finally:
        logging.disable(logging.NOTSET)


def _check_input_shape(encoder: Encoder, config: dict, vae_path) -> None:
    """Refuse a VAE whose recorded shape or resizing is not its encoder's, or whose images were
    resized by a method this hybnn does not know (predict could not resize as training did)."""
    from hybnn_cli.data.labelled import RESIZE

    got = (config.get("channels") or 1, config.get("image_size") or 28)
    if got != (encoder.channels, encoder.image_size):
        raise HybnnError(f"{vae_path}: the config records {got[0]}×{got[1]}×{got[1]} images but "
                         f"the encoder takes {encoder.channels}×{encoder.image_size}×"
                         f"{encoder.image_size}")
    if config.get("resize") not in (None, RESIZE):
        raise HybnnError(f"{vae_path}: its images were resized by {config['resize']!r}; this "
                         f"hybnn resizes by {RESIZE!r}")


def calibration_images(dataset: str, n: int, seed: int, data_dir, data: str | None = None,
                       test_fraction: float | None = None,
                       shape: InputShape = InputShape()) -> np.ndarray:
    """n training images (validation slice excluded) picked by `seed`, uint8 (n, H, W) or
    (n, H, W, C) at `shape` (`fit_images`, as the VAE took them), of the named `dataset` or of
    the files at `data` (`data.files`, for a VAE pretrained on them)."""
    from hybnn_cli.data.labelled import fit_images, open_labelled
    from hybnn_cli.data.splits import train_val_indices

    images, labels = (open_labelled(dataset, data_dir=data_dir) if data is None else
                      open_labelled(data=data, test_fraction=test_fraction)).split("train")
    train_idx, _ = train_val_indices(labels)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(train_idx, size=min(n, len(train_idx)), replace=False))
    return np.asarray(fit_images(images[pick], str(data or dataset), shape.channels, shape.height))


def learned_heads(out: Path, weights_sha: str, names) -> dict:
    """The prototype heads (`learn-class`) of the bundle `out`, if it is one, to keep when it is
    exported again: {name: (manifest entry, file bytes)}. Refused with one line when they were
    learned on another encoder's codes, share a name with a new head, or their file changed."""
    try:
        m = json.loads((Path(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}  # no bundle there (atomic_dir refuses a folder it did not write)
    heads = (m.get("prototype_heads") or {}) if isinstance(m, dict) else {}
    if not heads:
        return {}
    other = sorted(n for n, e in heads.items() if str(e.get("encoder_sha256")) != weights_sha)
    if other:
        raise HybnnError(f"{out} holds heads learned on the device ({', '.join(other)}) on "
                         f"another encoder's codes, which the new encoder would lose; export to "
                         f"another folder")
    clash = sorted(set(heads) & set(names))
    if clash:
        raise HybnnError(f"{out} holds a head learned on the device named {clash[0]}, as a new "
                         f"head is; export to another folder")
    kept = {}
    for name, e in heads.items():
        rel = Path(str(e.get("file", "")))
        if len(rel.parts) != 2 or rel.parts[0] != "heads" or rel.suffix != ".npy":
            raise HybnnError(f"{out}: head {name}'s file {e.get('file')} is not a file of "
                             f"heads/; export to another folder")
        path = Path(out) / rel
        try:
            raw = path.read_bytes()
        except OSError:
            raise HybnnError(f"{out}: head {name}'s file {e.get('file')} is missing; export to "
                             f"another folder") from None
        if hashlib.sha256(raw).hexdigest() != e.get("sha256"):
            raise HybnnError(f"{out}: head {name}'s file {e.get('file')} does not match its "
                             f"SHA-256 in {MANIFEST}; export to another folder")
        kept[name] = (e, raw)
    return kept


def _write_heads(tmp: Path, heads: list, weights_sha: str, kept: dict) -> dict:
    """Write the BNN heads (deploy files) and the kept learned heads into the bundle folder
    being made, `tmp`; returns their manifest entries ("heads", and "prototype_heads" if any)."""
    from hybnn_cli.deploy.export_head import write_deploy

    (tmp / "heads").mkdir()
    out: dict = {"heads": {}}
    for name, p, model, ck in heads:
        rel = f"heads/{name}.h5"
        summary = write_deploy(tmp / rel, model, ck)
        out["heads"][name] = {
            "file": rel, "sha256": file_sha256(tmp / rel), "encoder_sha256": weights_sha,
            "classes": list((ck.get("task") or {}).get("classes") or
                            range(summary["n_classes"])),
            "n_classes": summary["n_classes"], "hidden": summary["hidden"],
            **({"class_names": ck["task"]["class_names"]}
               if "class_names" in (ck.get("task") or {}) else {}),
            "checkpoint": {"path": str(p), "sha256": file_sha256(p),
                           "config": ck.get("config", {}), "seed": ck.get("seed")}}
    for entry, raw in kept.values():
        (tmp / entry["file"]).write_bytes(raw)
    if kept:
        out["prototype_heads"] = {name: entry for name, (entry, _) in kept.items()}
    return out


def write_bundle(out: Path, vae_path: Path, bnn_paths: list[Path], int8: bool = False,
                 calibration: int = 2000, seed: int = 0, data_dir=None, threads: int = 2) -> dict:
    """Write the bundle folder `out`; returns its manifest plus the export checks."""
    import onnx

    from hybnn_cli.models.checkpoint import load_bnn, load_vae

    if not bnn_paths:
        raise HybnnError("give at least one BNN checkpoint to put in the bundle")
    if calibration < 1:
        raise HybnnError(f"--calibration must be >= 1, got {calibration}")
    vae, vck = load_vae(vae_path)
    _check_input_shape(vae.encoder, vck["config"], vae_path)
    inp = input_record(vae.encoder, vck["config"])
    shape = input_shape({"encoder": {"input": inp}})
    weights_sha = str(vck["encoder_sha256"])
    heads = []
    for p in bnn_paths:
        model, ck = load_bnn(p)
        name = str((ck.get("task") or {}).get("name") or Path(p).stem)
        if str(ck.get("encoder_sha256", "")) != weights_sha:
            raise HybnnError(f"{p} was trained on codes of encoder "
                             f"{str(ck.get('encoder_sha256', ''))[:12]}… but {vae_path} is "
                             f"encoder {weights_sha[:12]}…; a bundle's heads share its encoder")
        if any(name == h[0] for h in heads):
            raise HybnnError(f"two checkpoints for task {name}: a bundle holds one head per task")
        heads.append((name, p, model, ck))
    kept = learned_heads(out, weights_sha, [h[0] for h in heads])
    dataset = str(vck["config"].get("dataset", "mnist"))
    images = calibration_images(dataset, calibration, seed, data_dir, vck["config"].get("data"),
                                vck["config"].get("test_fraction"), shape)
    want = torch_logits(vae.encoder, images)

    manifest = {"format": BUNDLE_FORMAT, "format_version": format_version(shape),
                "hybnn_version": __version__,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    with atomic_dir(out, marker=MANIFEST) as tmp:
        onnx.save(encoder_onnx(vae.encoder), str(tmp / "encoder.onnx"))
        check = compare_codes(want, onnx_logits(tmp / "encoder.onnx", images, threads))
        manifest["encoder"] = {
            "file": "encoder.onnx", "sha256": file_sha256(tmp / "encoder.onnx"),
            "weights_sha256": weights_sha, "latent_bits": int(vae.encoder.latent_bits),
            "opset": OPSET, "batch_norm": "folded into the convolutions", "input": inp,
            "output": "logits", "threshold": "bit 1 iff logit >= 0",
            "checkpoint": {"path": str(vae_path), "sha256": file_sha256(vae_path),
                           "config": vck.get("config", {}), "seed": vck.get("seed")},
            "check": {"against": "torch encoder, eval mode", "split": f"{dataset} train",
                      "seed": seed, **check}}
        if int8:
            quantize_int8(tmp / "encoder.onnx", tmp / "encoder-int8.onnx", images)
            q = compare_codes(want, onnx_logits(tmp / "encoder-int8.onnx", images, threads))
            manifest["encoder_int8"] = {
                "file": "encoder-int8.onnx", "sha256": file_sha256(tmp / "encoder-int8.onnx"),
                "quantization": {"method": "onnxruntime static", "format": "QDQ",
                                 "per_channel": True, "weights": "int8", "activations": "int8",
                                 "float_nodes": list(FLOAT_NODES),
                                 "calibration": "MinMax", "images": int(len(images)),
                                 "split": f"{dataset} train (validation slice excluded)",
                                 "seed": seed},
                "check": {"against": "torch encoder, eval mode", "on": "the calibration images",
                          **q},
                "timing": time_in_new_process({"float": tmp / "encoder.onnx",
                                               "int8": tmp / "encoder-int8.onnx"}, images,
                                              threads, INPUT["name"], INPUT["scale"])}
        manifest.update(_write_heads(tmp, heads, weights_sha, kept))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
