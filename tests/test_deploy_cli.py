"""`hybnn export`, `hybnn predict` and `hybnn bench` through CliRunner: exit codes, messages,
and the kernel predictions against the torch model on a small generated pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hybnn_cli.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tiny_pipeline, tmp_path_factory):
    """A task-3 BNN trained for 2 epochs on the tiny pipeline's codes, and its deploy file."""
    from hybnn_cli import stages
    from hybnn_cli.tasks import parse_task
    from hybnn_cli.train_bnn import BNNConfig

    out = tmp_path_factory.mktemp("deploy")
    cfg = BNNConfig(task="task3", epochs=2, batch_size=32, threads=1)
    stages.train_task_bnn(tiny_pipeline["codes"], parse_task("3"), cfg, out / "bnn.pt")
    r = runner.invoke(app, ["export", str(out / "bnn.pt"), "--out", str(out / "bnn.h5"),
                            "--check", str(tiny_pipeline["codes"]), "--json"])
    assert r.exit_code == 0, r.output
    return {**tiny_pipeline, "bnn": out / "bnn.pt", "deploy": out / "bnn.h5", "out": out,
            "export": json.loads(r.stdout)}


def test_export_checks_against_torch(trained):
    res = trained["export"]
    assert res["check"]["mismatches"] == 0 and res["check"]["n"] == 128
    assert res["n_bits"] == 200 and res["hidden"] == 128 and res["n_classes"] == 2
    assert res["task"] == {"name": "task3", "classes": [4, 5]}


def test_predict_codes_matches_torch_accuracy(trained):
    from hybnn_cli.checkpoint import load_bnn
    from hybnn_cli.codes import read_codes
    from hybnn_cli.export import torch_predict
    from hybnn_cli.tasks import parse_task

    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--codes",
                            str(trained["codes"]), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    model, _ = load_bnn(trained["bnn"])
    c = read_codes(trained["codes"], "test")
    idx, y = parse_task("3").select(c.labels)
    _, pred = torch_predict(model, c.codes[idx])
    assert res["n"] == 128 and res["n_task"] == len(idx)
    assert res["accuracy"] == pytest.approx(float(np.mean(pred == y)))
    plain = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--codes",
                                str(trained["codes"]), "--split", "train"])
    assert plain.exit_code == 0 and "accuracy" in plain.stdout and "/train" in plain.stdout


def test_predict_images_png_npy_idx(trained):
    from hybnn_cli.checkpoint import load_bnn, load_vae
    from hybnn_cli.data import load_split
    from hybnn_cli.train_vae import images_to_tensor

    images, _ = load_split("fake", "test", trained["root"])
    x = images[:3]
    png = trained["out"] / "digit.png"
    Image.fromarray(x[0]).save(png)
    npy = trained["out"] / "digits.npy"
    np.save(npy, x[1:3])
    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--encoder",
                            str(trained["vae"]), str(png), str(npy), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["labels"]
    vae, _ = load_vae(trained["vae"])
    bnn, _ = load_bnn(trained["bnn"])
    with torch.no_grad():
        codes = torch.where(vae.encoder(images_to_tensor(x)) < 0, -1.0, 1.0)
        want = [(4, 5)[i] for i in bnn(codes).argmax(1).tolist()]
    assert got == want
    idx = next(trained["root"].glob("fake/t10k-images*"))
    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--encoder",
                            str(trained["vae"]), str(idx)])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == 128


def test_predict_refuses_codes_from_another_encoder(trained, tmp_path):
    import h5py
    bad = tmp_path / "codes.h5"
    bad.write_bytes(trained["codes"].read_bytes())
    with h5py.File(bad, "r+") as f:
        f.attrs["encoder_sha256"] = "0" * 64
    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--codes", str(bad)])
    assert r.exit_code == 1
    assert "expects codes from encoder" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("args,msg", [
    (["export", "missing.pt", "--out", "x.h5"], "missing.pt: no such file"),
    (["predict", "--model", "missing.h5", "--codes", "c.h5"], "missing.h5: no such deploy file"),
    (["predict", "--model", "m.h5"], "give either --codes"),
    (["predict", "--model", "m.h5", "--codes", "c.h5", "--encoder", "v.pt"], "give either"),
    (["predict", "--model", "m.h5", "--encoder", "v.pt"], "needs image files"),
    (["bench", "--threads", "64"], "--threads 64: at most"),
])
def test_bad_invocations_exit_1_with_one_line(args, msg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_predict_rejects_bad_images_and_not_a_deploy_file(trained, tmp_path):
    txt = tmp_path / "x.npy"
    np.save(txt, np.zeros((2, 5, 5), np.uint8))
    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--encoder",
                            str(trained["vae"]), str(txt)])
    assert r.exit_code == 1 and "expected 28×28 images" in r.stderr
    r = runner.invoke(app, ["predict", "--model", str(trained["codes"]), "--codes",
                            str(trained["codes"])])
    assert r.exit_code == 1 and "not a hybnn deploy file" in r.stderr


def test_export_check_refuses_mismatched_encoder(trained, tmp_path):
    import h5py
    bad = tmp_path / "codes.h5"
    bad.write_bytes(trained["codes"].read_bytes())
    with h5py.File(bad, "r+") as f:
        f.attrs["encoder_sha256"] = "1" * 64
    r = runner.invoke(app, ["export", str(trained["bnn"]), "--out", str(tmp_path / "m.h5"),
                            "--check", str(bad)])
    assert r.exit_code == 1 and "expects codes from encoder" in r.stderr


def test_commands_have_help_with_an_example():
    for cmd in ("export", "predict", "bench"):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "Example" in r.stdout


def test_bench_gemm_case_and_clean_env(monkeypatch):
    from hybnn_cli import bench
    res = bench.bench_gemm(256, threads=1, quick=True)
    assert res["ops"] == 2 * 256**3
    assert set(res) >= {"xnor", "numpy_f32", "torch_f32", "speedup_vs_best_float"}
    assert res["weight_bytes"] == {"binary": 256 * 4 * 8, "float32": 256 * 256 * 4, "ratio": 32.0}
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    env = bench.clean_env()
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert json.loads(env["HYBNN_BENCH_PARENT_ENV"])["OPENBLAS_CORETYPE"] == "Haswell"
