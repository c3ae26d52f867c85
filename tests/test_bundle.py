"""Deploy bundles: `hybnn export --vae` writes one, `hybnn predict --model BUNDLE` classifies
images with it through ONNX Runtime and the XNOR kernels, without importing torch; bad bundles
and bad images give one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hybnn_cli.cli import app
from tests.conftest import predict_json

runner = CliRunner()


def test_manifest_records_files_hashes_and_provenance(bundle):
    from hybnn_kernels.pipeline import file_sha256

    from hybnn_cli import __version__
    from hybnn_cli.models.checkpoint import load_vae

    m = json.loads((bundle["bundle"] / "bundle.json").read_text())
    assert m == {k: v for k, v in bundle["manifest"].items() if k != "out"}
    _, vck = load_vae(bundle["vae"])
    enc = m["encoder"]
    assert enc["weights_sha256"] == vck["encoder_sha256"] and m["hybnn_version"] == __version__
    assert enc["sha256"] == file_sha256(bundle["bundle"] / "encoder.onnx")
    assert enc["checkpoint"]["sha256"] == file_sha256(bundle["vae"])
    assert enc["opset"] >= 17 and enc["input"]["scale"] == 255.0
    assert sorted(m["heads"]) == ["all", "task3"]
    assert m["heads"]["task3"]["classes"] == [4, 5] and m["heads"]["all"]["classes"] == list(
        range(10))
    for h, p in zip(("task3", "all"), bundle["bnns"], strict=True):
        assert m["heads"][h]["checkpoint"]["sha256"] == file_sha256(p)
        assert m["heads"][h]["sha256"] == file_sha256(bundle["bundle"] / m["heads"][h]["file"])
    assert m["encoder_int8"]["quantization"]["images"] == 200
    assert m["format_version"] == 2  # 1×28×28, unresized: still readable by version-2 runtimes
    assert (enc["input"]["channels"], enc["input"]["height"], enc["input"]["width"],
            enc["input"]["resize"]) == (1, 28, 28, "none")
    assert not [p for p in bundle["out"].iterdir() if p.name.startswith(".bundle")]


def test_onnx_graph_has_batch_norm_folded_and_a_dynamic_batch(bundle):
    import onnx

    model = onnx.load(str(bundle["bundle"] / "encoder.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Conv", "LeakyRelu"] * 3 + ["Flatten", "Gemm"]
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch" and not dim.HasField("dim_value")


def test_bundle_codes_and_labels_match_the_torch_pipeline(bundle):
    """Codes from ONNX Runtime equal the torch encoder's except where a torch logit lies within
    float rounding of 0; labels then equal the torch BNN's on the torch codes."""
    import torch
    from hybnn_kernels import load_bundle, pack_signs, unpack_bits

    from hybnn_cli.deploy.export_bundle import torch_logits
    from hybnn_cli.deploy.export_head import torch_predict
    from hybnn_cli.models.checkpoint import load_bnn, load_vae

    vae, _ = load_vae(bundle["vae"])
    want_logits = torch_logits(vae.encoder, bundle["images"])
    pipe = load_bundle(bundle["bundle"], threads=1)
    codes = pipe.encode(bundle["images"])
    differ = unpack_bits(codes ^ pack_signs(want_logits), 200).astype(bool)
    assert np.all(np.abs(want_logits[differ]) < 1e-4)
    for name, bnn in zip(("task3", "all"), bundle["bnns"], strict=True):
        model, _ = load_bnn(bnn)
        _, want = torch_predict(model, pack_signs(want_logits))
        got = pipe.classify(bundle["images"], [name])[name]
        classes = np.asarray(pipe.heads[name].classes)
        assert np.array_equal(got, classes[want])
    assert torch.get_num_threads() >= 1


def test_heads_answer_small_batches_in_numpy_first_then_compiled(bundle):
    """compiled=None: the first NUMPY_CALLS calls of at most NUMPY_ROWS codes run on the numpy
    head, then the compiled head takes over; a larger batch compiles at once. Every tier gives
    the same labels."""
    from hybnn_kernels import pipeline

    images = bundle["images"]
    codes = pipeline.load_bundle(bundle["bundle"], threads=1, compiled=False).encode(images)
    want = {}
    for compiled in (False, True, None):
        pipe = pipeline.load_bundle(bundle["bundle"], threads=1, compiled=compiled)
        head = pipe.heads["all"]
        assert (head._runtime is not None) == (compiled is True)
        got = np.concatenate([pipe.classify_codes(codes[i:i + 1], ["all"])["all"]
                              for i in range(pipeline.NUMPY_CALLS + 3)])
        want.setdefault("one", got)
        np.testing.assert_array_equal(got, want["one"])
        big = pipe.classify_codes(codes, ["all"])["all"]
        want.setdefault("all", big)
        np.testing.assert_array_equal(big, want["all"])
        assert head.numpy_calls == {False: pipeline.NUMPY_CALLS + 4, True: 0,
                                    None: pipeline.NUMPY_CALLS}[compiled]
        assert (head._runtime is None) == (compiled is False)
    np.testing.assert_array_equal(want["one"], want["all"][:pipeline.NUMPY_CALLS + 3])
    fresh = pipeline.load_bundle(bundle["bundle"], threads=1)
    assert len(codes) > pipeline.NUMPY_ROWS
    fresh.classify_codes(codes, ["all"])  # a large first batch goes straight to the kernels
    assert fresh.heads["all"].numpy_calls == 0 and fresh.heads["all"]._runtime is not None


def test_a_cold_process_classifies_one_image_without_starting_numba(bundle):
    """The cold path: importing the runtime, loading the bundle and classifying one image imports
    neither numba nor torch, and gives the label the compiled head gives."""
    code = ("import sys, numpy as np\n"
            "from hybnn_kernels import load_bundle\n"
            "p = load_bundle(sys.argv[1], 1)\n"
            "x = np.load(sys.argv[2])[:1]\n"
            "print(int(p.classify(x, ['all'])['all'][0]), 'numba' in sys.modules,"
            " 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code, str(bundle["bundle"]),
                        str(bundle["out"] / "test.npy")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    label, numba_loaded, torch_loaded = r.stdout.split()
    from hybnn_kernels import load_bundle

    want = load_bundle(bundle["bundle"], 1, compiled=True).classify(bundle["images"][:1])["all"]
    assert (int(label), numba_loaded, torch_loaded) == (int(want[0]), "False", "False")


def test_predict_bundle_on_idx_png_npy_streams_in_batches(bundle, tmp_path):
    from tests.conftest import idx_bytes

    x = bundle["images"]
    idx = tmp_path / "images-idx3-ubyte"
    idx.write_bytes(idx_bytes(x[:50]))
    png = tmp_path / "d.png"
    Image.fromarray(x[50]).save(png)
    npy = tmp_path / "d.npy"
    np.save(npy, x[51:60, None].astype(np.float32) / 255)  # (N, 1, 28, 28) floats in [0, 1]
    one = predict_json("--model", bundle["bundle"], idx, png, npy, "--batch-size", 4096)
    small = predict_json("--model", bundle["bundle"], idx, png, npy, "--batch-size", 7,
                     "--head", "all")
    ref = predict_json("--model", bundle["bundle"], bundle["out"] / "test.npy")
    assert one["n"] == small["n"] == 60
    assert list(small["heads"]) == ["all"] and sorted(one["heads"]) == ["all", "task3"]
    assert small["heads"]["all"]["labels"] == one["heads"]["all"]["labels"]
    assert one["heads"]["all"]["labels"] == ref["heads"]["all"]["labels"][:60]
    assert one["time_split_seconds"]["images"] == 60
    # each image is named by its file (and its index in a file of several), in the JSON's
    # by_image and in the tab-separated rows; a folder stands for its image files
    names = [f"{idx}:{i}" for i in range(50)] + [str(png)] + [f"{npy}:{i}" for i in range(9)]
    assert list(one["by_image"]) == names
    assert [one["by_image"][k]["all"] for k in names] == one["heads"]["all"]["labels"]
    assert one["files"] == [{"path": str(idx), "kind": "idx", "images": 50},
                            {"path": str(png), "kind": "png", "images": 1},
                            {"path": str(npy), "kind": "npy", "images": 9}]
    folder = predict_json("--model", bundle["bundle"], tmp_path)["by_image"]  # in name order
    in_order = [f"{npy}:{i}" for i in range(9)] + [str(png)] + [f"{idx}:{i}" for i in range(50)]
    assert list(folder) == in_order and folder == one["by_image"]


def test_predict_bundle_reports_accuracy_with_labels_and_int8(bundle, tmp_path):
    from tests.conftest import idx_bytes

    lab = tmp_path / "labels-idx1-ubyte"
    lab.write_bytes(idx_bytes(bundle["labels"]))
    res = predict_json("--model", bundle["bundle"], bundle["out"] / "test.npy", "--labels", lab)
    q = predict_json("--model", bundle["bundle"], bundle["out"] / "test.npy", "--labels", lab,
                 "--int8")
    y = bundle["labels"].astype(np.int64)
    for r in (res, q):
        pred = np.asarray(r["heads"]["all"]["labels"])
        assert r["heads"]["all"]["accuracy"] == pytest.approx(np.mean(pred == y))
        task = np.isin(y, [4, 5])
        pred3 = np.asarray(r["heads"]["task3"]["labels"])
        assert r["heads"]["task3"]["n_task"] == task.sum()
        assert r["heads"]["task3"]["accuracy"] == pytest.approx(np.mean(pred3[task] == y[task]))
    assert q["encoder"] == "int8" and res["encoder"] == "float"
    plain = runner.invoke(app, ["predict", "--model", str(bundle["bundle"]),
                                str(bundle["out"] / "test.npy"), "--labels", str(lab)])
    assert plain.exit_code == 0
    lines = plain.stdout.splitlines()
    assert lines[2] == "# image\ttask3\tall" and len(lines) == 3 + len(y)
    npy = bundle["out"] / "test.npy"
    assert [ln.split("\t") for ln in lines[3:5]] == [
        [f"{npy}:{i}", str(res["heads"]["task3"]["labels"][i]),
         str(res["heads"]["all"]["labels"][i])] for i in (0, 1)]


BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'flwr', 'matplotlib', 'onnx'):
            raise ImportError(f'{name} is blocked in this test')
        return None
sys.meta_path.insert(0, _Block())
"""


def test_predict_from_a_bundle_never_imports_torch(bundle, tmp_path):
    """A fresh process where importing torch (or flwr, matplotlib, onnx) fails classifies the
    images exactly as the in-process run does."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True,
                           text=True)
    assert check.returncode == 1 and "blocked in this test" in check.stderr
    r = subprocess.run([sys.executable, "-m", "hybnn_cli", "predict", "--model",
                        str(bundle["bundle"]), str(bundle["out"] / "test.npy"), "--threads", "1",
                        "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    want = predict_json("--model", bundle["bundle"], bundle["out"] / "test.npy")
    assert res["heads"]["all"]["labels"] == want["heads"]["all"]["labels"]


def _copy_bundle(bundle, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "b"
    shutil.copytree(bundle["bundle"], dst)
    return dst


def _one_line_error(args, msg):
    r = runner.invoke(app, list(map(str, args)))
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], r.stderr
    return lines[0]


def _timing(cpu, flags, float_us, int8_us):
    return {"cpu": cpu, "cpu_flags": flags, "threads": 2, "batches": {
        b: {"float": {"median": f}, "int8": {"median": i}}
        for b, f, i in zip(("1", "256"), float_us, int8_us, strict=True)}}


def test_export_times_both_encoders_on_this_cpu(bundle):
    from hybnn_kernels.machine import cpu_info

    t = bundle["manifest"]["encoder_int8"]["timing"]
    assert (t["cpu"], t["cpu_flags"]) == cpu_info() and t["threads"] >= 1
    assert t["process"] == "a new one, without torch"
    assert sorted(t["batches"], key=int) == ["1", "256"]
    for b in t["batches"].values():
        for enc in ("float", "int8"):
            assert 0 < b[enc]["min"] <= b[enc]["median"] <= b[enc]["max"]
            assert b[enc]["calls"] >= 5


def test_int8_note_only_when_this_cpus_figures_show_int8_slower():
    from hybnn_kernels.machine import cpu_info

    from hybnn_cli.deploy.predict_bundle import int8_slower_note

    cpu, flags = cpu_info()
    slow_at_1 = {"encoder_int8": {"timing": _timing(cpu, flags, (70.0, 20.0), (73.0, 17.0))}}
    note = int8_slower_note(slow_at_1, 1)
    assert "batch 1 " in note and "73.0 against 70.0" in note and "\n" not in note
    assert int8_slower_note(slow_at_1, 4096) is None  # nearest recorded batch: 256, int8 faster
    assert int8_slower_note(slow_at_1, 300) is None
    assert "batch 1 " in int8_slower_note(slow_at_1, 8)
    other = {"encoder_int8": {"timing": _timing(cpu + " (another)", flags, (70.0, 20.0),
                                                (73.0, 25.0))}}
    assert int8_slower_note(other, 1) is None
    assert int8_slower_note({"encoder_int8": {}}, 1) is None and int8_slower_note({}, 1) is None


def test_predict_int8_says_so_in_one_line_when_slower_here(bundle, tmp_path):
    from hybnn_kernels.machine import cpu_info

    b = _copy_bundle(bundle, tmp_path)
    m = json.loads((b / "bundle.json").read_text())
    m["encoder_int8"]["timing"] = _timing(*cpu_info(), (20.0, 20.0), (30.0, 30.0))
    (b / "bundle.json").write_text(json.dumps(m))
    r = runner.invoke(app, ["predict", "--model", str(b), str(bundle["out"] / "test.npy"),
                            "--int8"])
    assert r.exit_code == 0, r.output
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("note:")] == [
        r.stderr.strip()] and "slower" in r.stderr
    r = runner.invoke(app, ["predict", "--model", str(b), str(bundle["out"] / "test.npy")])
    assert r.exit_code == 0 and "note:" not in r.stderr


def test_tampered_or_truncated_onnx_is_refused_before_loading(bundle, tmp_path):
    b = _copy_bundle(bundle, tmp_path)
    onnx_file = b / "encoder.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    _one_line_error(["predict", "--model", b, bundle["out"] / "test.npy"],
                    "does not match the manifest's")
    b2 = _copy_bundle(bundle, tmp_path / "2")
    raw = bytearray((b2 / "heads" / "task3.h5").read_bytes())
    raw[-10] ^= 0xFF
    (b2 / "heads" / "task3.h5").write_bytes(bytes(raw))
    _one_line_error(["predict", "--model", b2, bundle["out"] / "test.npy"], "task3.h5: SHA-256")


def test_head_from_another_encoder_is_refused(bundle, tmp_path):
    b = _copy_bundle(bundle, tmp_path)
    m = json.loads((b / "bundle.json").read_text())
    m["encoder"]["weights_sha256"] = "0" * 64
    (b / "bundle.json").write_text(json.dumps(m))
    _one_line_error(["predict", "--model", b, bundle["out"] / "test.npy"],
                    "head task3 was trained on codes of encoder")


def test_export_refuses_heads_of_another_encoder_and_keeps_no_half_bundle(bundle, tmp_path):
    import torch

    ck = torch.load(bundle["bnns"][0], weights_only=True)
    ck["encoder_sha256"] = "f" * 64
    other = tmp_path / "other.pt"
    torch.save(ck, other)
    _one_line_error(["export", other, "--vae", bundle["vae"], "--out", tmp_path / "b",
                     "--data-dir", bundle["root"]], "a bundle's heads share its encoder")
    _one_line_error(["export", bundle["bnns"][0], bundle["bnns"][0], "--vae", bundle["vae"],
                     "--out", tmp_path / "b", "--data-dir", bundle["root"]],
                    "two checkpoints for task task3")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    _one_line_error(["export", bundle["bnns"][0], "--vae", bundle["vae"], "--out",
                     tmp_path / "taken", "--data-dir", bundle["root"]], "is not a folder this")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt", "taken"]


@pytest.mark.parametrize("make, msg", [
    (lambda p: np.save(p / "x.npy", np.zeros((3, 30, 28), np.uint8)),
     "expected 1×28×28 images (channels × height × width), got 1×30×28"),
    (lambda p: np.save(p / "x.npy", np.zeros((3, 28, 28, 3), np.uint8)), "got 3×28×28"),
    (lambda p: np.save(p / "x.npy", np.zeros((0, 28, 28), np.uint8)), "no images in"),
    (lambda p: Image.new("RGB", (28, 28)).save(p / "x.png"),
     "got 3×28×28: the encoder was trained on grayscale images"),
    (lambda p: Image.new("L", (32, 28)).save(p / "x.png"),
     "expected 1×28×28 images (channels × height × width), got 1×28×32"),
    (lambda p: Image.new("CMYK", (28, 28)).save(p / "x.jpg"), "got 3×28×28"),
    (lambda p: Image.new("I;16", (28, 28)).save(p / "x.png"), "image mode I;16 is not supported"),
    (lambda p: (p / "x.idx").write_bytes(b""), "(empty file)"),
])
def test_bad_images_give_one_line_errors(bundle, tmp_path, make, msg):
    make(tmp_path)
    (f,) = [p for p in tmp_path.iterdir() if p.name.startswith("x.")]
    _one_line_error(["predict", "--model", bundle["bundle"], f], msg)


def test_a_bundle_from_before_shapes_loads_and_predicts_the_same(bundle, tmp_path):
    """A manifest without the input's resize (and channels), as bundles were written before
    bundles of other shapes, reads as one 28×28 channel, unresized: the same labels."""
    import shutil

    from hybnn_kernels.pipeline import READ_VERSIONS, input_shape, load_bundle

    old = tmp_path / "old"
    shutil.copytree(bundle["bundle"], old)
    m = json.loads((old / "bundle.json").read_text())
    for key in ("resize", "channels"):
        del m["encoder"]["input"][key]
    for version in (1, 2):
        m["format_version"] = version
        (old / "bundle.json").write_text(json.dumps(m))
        assert version in READ_VERSIONS and tuple(input_shape(m)) == (1, 28, 28, "none")
        want = load_bundle(bundle["bundle"], threads=1).classify(bundle["images"])
        got = load_bundle(old, threads=1).classify(bundle["images"])
        assert want.keys() == got.keys()
        assert all(np.array_equal(want[k], got[k]) for k in want)
        np.save(tmp_path / "x.npy", bundle["images"][:7])
        out = predict_json("--model", old, tmp_path / "x.npy")
        assert out["heads"]["all"]["labels"] == want["all"][:7].tolist()
    m["format_version"] = 4
    (old / "bundle.json").write_text(json.dumps(m))
    _one_line_error(["predict", "--model", old, tmp_path / "x.npy"],
                    "bundle format version 4, this runtime reads 1, 2 and 3")


def test_image_files_are_read_as_training_reads_them(bundle, tmp_path):
    """Grayscale with alpha (LA) and 1-bit PNGs and a grayscale JPEG give `files.decode_image`'s
    pixels, as an image folder gives them to training."""
    from hybnn_kernels.pipeline import load_bundle

    from hybnn_cli.data.files import decode_image

    img = bundle["images"][0]
    Image.fromarray(img).convert("LA").save(tmp_path / "a.png")
    Image.fromarray(img).convert("1").save(tmp_path / "b.png")
    Image.fromarray(img).save(tmp_path / "c.jpg", quality=90)
    files = sorted(tmp_path.iterdir())
    pixels = np.stack([decode_image(f, f.read_bytes()) for f in files])
    want = load_bundle(bundle["bundle"], threads=1).classify(pixels)["all"]
    out = predict_json("--model", bundle["bundle"], tmp_path)
    assert [f["kind"] for f in out["files"]] == ["png", "png", "jpg"]
    assert out["heads"]["all"]["labels"] == want.tolist()
    assert list(out["by_image"]) == list(map(str, files))


def test_bad_invocations_with_a_bundle(bundle, tmp_path):
    npy = bundle["out"] / "test.npy"
    _one_line_error(["predict", "--model", bundle["bundle"]], "no images given")
    _one_line_error(["predict", "--model", bundle["bundle"], npy, "--head", "task9"],
                    "no head 'task9'")
    _one_line_error(["predict", "--model", bundle["bundle"], npy, "--codes", bundle["codes"]],
                    "a bundle holds its encoder")
    (tmp_path / "empty").mkdir()
    _one_line_error(["predict", "--model", tmp_path / "empty", npy], "not a deploy bundle")
    _one_line_error(["export", bundle["bnns"][0], "--out", tmp_path / "x.h5", "--int8"],
                    "give --vae")


def test_a_training_command_without_torch_says_how_to_install_it(bundle, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH.replace(
        "raise ImportError(f'{name} is blocked in this test')",
        "raise ModuleNotFoundError(f'No module named {name!r}', name=name)"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "hybnn_cli", "export", str(bundle["bnns"][0]),
                        "--out", str(tmp_path / "x.h5")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "Error: this command needs torch, which the runtime-only install leaves out: pip "
        "install 'hybnn[train]' torch==2.13.0"]


def test_image_batches_never_exceed_the_batch_size_and_keep_the_order(tmp_path):
    """IDX (raw and gzipped), NPY and PNG sources are read in order, in batches of at most
    batch_size images that run across file boundaries."""
    import gzip

    from hybnn_cli.data.image_files import iter_batches, open_images
    from tests.conftest import idx_bytes

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(x[:9]))
    (tmp_path / "b-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x[9:17])))
    np.save(tmp_path / "c.npy", x[17:22])
    Image.fromarray(x[22]).save(tmp_path / "d.png")
    sources = open_images([tmp_path / n for n in ("a-idx3-ubyte", "b-idx3-ubyte.gz", "c.npy",
                                                  "d.png")])
    assert [s.n for s in sources] == [9, 8, 5, 1]
    for b in (1, 4, 7, 100):
        batches = list(iter_batches(sources, b))
        assert all(len(y) <= b for y in batches) and len(batches) == -(-23 // b)
        assert np.array_equal(np.concatenate(batches), x)


def test_heads_print_class_names_only_when_they_are_not_the_numbers():
    from hybnn_cli.deploy.predict_bundle import _positions, shown_names

    digits = np.array([3, 8])
    assert shown_names({"class_names": ["3", "8"]}, digits) is None  # MNIST: numbers as before
    assert shown_names({}, digits) is None and shown_names(None, digits) is None
    assert shown_names({"class_names": ["cat"]}, digits) is None  # not one name per class
    assert shown_names({"class_names": ["cat", "dog"]}, digits).tolist() == ["cat", "dog"]
    classes = np.array([7, 2, 5])
    pred = np.array([5, 7, 2, 2, 5])
    assert classes[_positions(classes, pred)].tolist() == pred.tolist()
