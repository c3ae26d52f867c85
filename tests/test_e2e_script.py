"""`benchmarks/e2e.py` and its study's torch at its best (`study.e2e_torch`): the encoder with
batch norm folded computes eager's logits, the fastest working candidate is chosen and recorded (a
failing one with its error), and the whole script runs on a tiny bundle and generated images with
the best-torch path checked against the TaskBNN on its own codes. Correctness only: speed is the
benchmark's job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hybnn_cli.cli import app
from hybnn_cli.study import e2e_torch
from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def e2e():
    return load_benchmark("e2e")


@pytest.fixture(scope="module")
def bundle(tiny_pipeline, tmp_path_factory):
    """Task 3's BNN of the tiny pipeline in a bundle with its int8 encoder."""
    from hybnn_cli.data.tasks import parse_task
    from hybnn_cli.train import stages
    from hybnn_cli.train.configs import BNNConfig

    out = tmp_path_factory.mktemp("e2e-bundle")
    task = parse_task("3")
    bnn = out / "bnn-3.pt"
    stages.train_task_bnn(tiny_pipeline["codes"], task,
                          BNNConfig(task=task.name, epochs=2, batch_size=32, threads=1), bnn)
    r = CliRunner().invoke(app, ["export", str(bnn), "--vae", str(tiny_pipeline["vae"]),
                                 "--out", str(out / "bundle"), "--int8", "--calibration", "100",
                                 "--data-dir", str(tiny_pipeline["root"]), "--json"])
    assert r.exit_code == 0, r.output
    return {**tiny_pipeline, "bundle": out / "bundle", "out": out}


@pytest.fixture(scope="module")
def encoder_and_images(tiny_pipeline):
    from hybnn_cli.data.datasets import load_split
    from hybnn_cli.models.checkpoint import load_vae

    images, _ = load_split("fake", "test", tiny_pipeline["root"])
    return load_vae(tiny_pipeline["vae"])[0].encoder.eval(), images


def test_folded_encoder_computes_eager_logits(encoder_and_images):
    from hybnn_cli.data.tensors import images_to_tensor

    encoder, images = encoder_and_images
    folded = e2e_torch.folded_encoder(encoder)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = images_to_tensor(images)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), encoder(x), atol=1e-4, rtol=1e-4)


def test_a_failing_candidate_is_recorded_and_the_other_chosen(encoder_and_images, monkeypatch):
    def broken(module, x):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(e2e_torch, "_compile", broken)
    encoder, images = encoder_and_images
    fn, rec = e2e_torch.best_torch_encoder(encoder, images[:8], ("jit", "compile"), reps=2)
    assert rec["chosen"] == "jit" and rec["batch"] == 8
    assert rec["candidates"]["compile"] == {
        "how": e2e_torch.TORCH_CANDIDATES["compile"], "ok": False,
        "error": "RuntimeError: no C++ compiler",
        "seconds_to_fail": rec["candidates"]["compile"]["seconds_to_fail"]}
    jit = rec["candidates"]["jit"]
    assert jit["ok"] and jit["median_seconds"] > 0 and jit["repeats"] == 6
    assert isinstance(jit["flipped_bits"], int) and jit["max_abs_logit_diff"] < 1e-3
    monkeypatch.setattr(e2e_torch, "_jit", broken)  # nothing works: the folded module, eager
    fn, rec = e2e_torch.best_torch_encoder(encoder, images[:8], ("jit", "compile"), reps=1)
    assert rec["chosen"] == "folded" and not rec["candidates"]["jit"]["ok"]
    fn, rec = e2e_torch.best_torch_encoder(encoder, images[:8],
                                           tuple(e2e_torch.TORCH_CANDIDATES), reps=1)
    assert rec["chosen"] == "folded" and rec["candidates"]["folded"]["ok"]


def test_code_flips_counts_every_image_in_padded_batches(encoder_and_images):
    encoder, images = encoder_and_images
    folded = e2e_torch.folded_encoder(encoder)
    with torch.inference_mode():
        def flip_three(x):  # a stand-in encoder that flips three bits of the first image
            out = encoder(x).clone()
            out[0, :3] = -out[0, :3] - (out[0, :3] == 0).float()
            return out

        rec = e2e_torch.code_flips(flip_three, encoder, images[:21], batch=8)  # 8 + 8 + 5 (padded)
    assert rec["images"] == 21 and rec["bits"] == 21 * encoder.latent_bits
    assert rec["flipped_bits"] == 9 and rec["images_with_a_flipped_bit"] == 3
    assert e2e_torch.code_flips(folded, encoder, images[:5], batch=1)["images"] == 5


def test_e2e_quick_runs_with_torch_at_its_best(e2e, bundle, tmp_path):
    out = tmp_path / "e2e.json"
    assert e2e.main(["--bundle", str(bundle["bundle"]), "--dataset", "fake", "--data-dir",
                     str(bundle["root"]), "--head", "task3", "--threads", "1", "--quick",
                     "--batch", "16", "--torch-candidates", "jit", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["torch_candidates"] == ["jit"] and res["dataset"] == "fake"
    for key, batch, flips in (("batch_16", 16, 128), ("batch_1", 1, 32)):
        sp = res["speed"][key]
        assert all(sp["checks"].values()) and sp["checks"]["torch_best_equals_taskbnn_on_its_codes"]
        choice = sp["torch_best_choice"]
        assert choice["chosen"] == "jit" and choice["batch"] == batch
        assert choice["codes_vs_eager"]["images"] == flips
        assert choice["codes_vs_eager"]["flipped_bits"] <= choice["codes_vs_eager"]["bits"]
        assert isinstance(choice["labels_differing_from_eager"], int)
        for c in ("torch", "torch_best", "bundle_float", "bundle_int8"):
            assert sp[c]["median_seconds"] > 0, c
        assert sp["speedup_float_vs_torch_best"] == pytest.approx(
            sp["torch_best"]["median_seconds"] / sp["bundle_float"]["median_seconds"])
    one = res["speed"]["batch_1"]  # the one-image path beside the encoder alone
    assert one["encoder_alone"]["median_seconds"] > 0 and one["encoder_alone_threads"] == 1
    assert one["encoder_alone_by_threads"] == {"1": one["encoder_alone"]["us_per_image"]}
    assert one["one_image_threads"] == {"bundle_float": 1, "bundle_int8": 1}
    assert one["float_over_encoder_alone"] == pytest.approx(
        one["bundle_float"]["median_seconds"] / one["encoder_alone"]["median_seconds"])
    assert one["bundle_float"]["time_share"] == {} and "encoder_alone" not in res["speed"][
        "batch_16"]


def test_e2e_refuses_an_unknown_candidate(e2e, capsys):
    with pytest.raises(SystemExit):
        e2e.main(["--torch-candidates", "jit,onnx"])
    assert "--torch-candidates: choose from folded, jit, compile" in capsys.readouterr().err


@pytest.mark.slow
def test_torch_compile_candidate_runs_or_says_why(encoder_and_images):
    """torch.compile on this CPU-only, offline machine (inductor builds C++ with the system
    compiler; up to tens of seconds): it gives eager's logits up to rounding, or its failure is
    recorded and the folded module runs eager."""
    encoder, images = encoder_and_images
    fn, rec = e2e_torch.best_torch_encoder(encoder, images[:4], ("compile",), reps=2)
    c = rec["candidates"]["compile"]
    if c["ok"]:
        assert rec["chosen"] == "compile" and c["max_abs_logit_diff"] < 1e-3
        with torch.inference_mode():
            from hybnn_cli.data.tensors import images_to_tensor

            x = images_to_tensor(images[:4])
            np.testing.assert_allclose(fn(x).numpy(), encoder(x).numpy(), atol=1e-3)
    else:
        assert rec["chosen"] == "folded" and c["error"]


def test_install_venvs_are_made_again_for_new_code(tmp_path, monkeypatch):
    """The e2e venvs hold a copy of the checkout: one made at another commit is made again."""
    from hybnn_cli.study import e2e_processes

    made = []

    def fake_run(cmd, **kw):
        if cmd[1:3] == ["-m", "venv"]:
            made.append(cmd[-1])
            Path(cmd[-1]).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(e2e_processes.subprocess, "run", fake_run)
    commit = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(e2e_processes, "git_state", lambda: commit)
    e2e_processes.make_venvs(tmp_path / "v")
    assert len(made) == len(e2e_processes.VENVS)
    e2e_processes.make_venvs(tmp_path / "v")  # same commit: reused
    assert len(made) == len(e2e_processes.VENVS)
    commit["commit"] = "b" * 40
    e2e_processes.make_venvs(tmp_path / "v")
    assert len(made) == 2 * len(e2e_processes.VENVS)
    assert ("b" * 40) in (tmp_path / "v" / "runtime" / ".done").read_text()
