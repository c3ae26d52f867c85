"""The pipeline commands through Typer's CliRunner: exit codes, outputs and one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hybnn_cli.cli import app
from hybnn_cli.codes.store import read_codes
from hybnn_cli.data.datasets import load_split
from hybnn_cli.errors import HybnnError
from hybnn_cli.models import checkpoint as ck
from tests.naive import bnn_predict_ref

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, fragment: str):
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("Error:") and fragment in err, err
    assert "Traceback" not in result.output


def test_an_error_quoting_brackets_prints_them(codes):
    # the message is printed as text, not as rich markup ("[red]" would vanish)
    one_line_error(run("train-bnn", "--codes", str(codes), "--task", "[red]x[/]"),
                   "unknown task '[red]x[/]'")


SEED_OPTS = {"--seed", "--seeds"}


def test_help_lists_every_command_with_an_example_json_and_seed():
    import typer.main

    result = run("--help")
    assert result.exit_code == 0
    commands = typer.main.get_command(app).commands
    for cmd in app.registered_commands:
        name = cmd.name
        assert name in result.stdout
        sub = run(name, "--help")
        assert sub.exit_code == 0, name
        text = " ".join(sub.stdout.split())
        assert "Example: hybnn " + name in text, name
        opts = {o for p in commands[name].params for o in p.opts}
        assert "--json" in opts, name
        # a command with randomness takes --seed (reproduce: --seeds); one without says why not
        assert bool(opts & SEED_OPTS) != ("No --seed: " in text), name


def test_seeded_commands_are_the_ones_with_randomness():
    import typer.main

    commands = typer.main.get_command(app).commands
    seeded = {n for n, c in commands.items() if any(SEED_OPTS & set(p.opts) for p in c.params)}
    assert seeded == {"pretrain-vae", "train-bnn", "fed", "baseline", "reproduce", "export",
                      "continual", "learn-class"}


def test_pretrain_writes_checkpoint_and_png_and_resumes(tmp_path, fake_root):
    out = tmp_path / "vae.pt"
    result = run("pretrain-vae", "--dataset", "fake", "--data-dir", fake_root, "--epochs", 1,
                 "--batch-size", 64, "--threads", 1, "--seed", 3, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["epoch"] == 1 and info["test_recon"] > 0
    assert out.exists() and out.with_suffix(".png").exists()
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["format"] == "hybnn-vae" and ckpt["seed"] == 3
    assert ckpt["config"]["epochs"] == 1 and len(ckpt["encoder_sha256"]) == 64
    # resume for one more epoch; the history grows and the seed must match
    result = run("pretrain-vae", "--dataset", "fake", "--data-dir", fake_root, "--epochs", 2,
                 "--batch-size", 64, "--threads", 1, "--seed", 3, "--out", out,
                 "--resume", out, "--json")
    assert result.exit_code == 0, result.output
    assert [h["epoch"] for h in json.loads(result.stdout)["history"]] == [1, 2]
    result = run("pretrain-vae", "--dataset", "fake", "--data-dir", fake_root, "--epochs", 3,
                 "--seed", 4, "--out", tmp_path / "v2.pt", "--resume", out)
    one_line_error(result, "cannot resume: it was trained with batch_size=64")


def test_extract_train_evaluate(tiny_pipeline, tmp_path):
    codes = tmp_path / "codes.h5"
    result = run("extract", "--vae", tiny_pipeline["vae"], "--dataset", "fake", "--data-dir",
                 tiny_pipeline["root"], "--out", codes, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["n_train"] == 512 and info["n_test"] == 128 and info["n_bits"] == 200
    bnn = tmp_path / "bnn.pt"
    result = run("train-bnn", "--codes", codes, "--task", "all", "--epochs", 3, "--threads", 1,
                 "--out", bnn, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert len(info["history"]) == 3 and "test_acc" not in info["history"][-1]
    # the generated classes are separable: 94.5–98.4% over seeds 0–2 where chance is 10%
    assert info["test_acc"] >= 0.8
    ckpt = torch.load(bnn, weights_only=True)
    test = read_codes(codes, "test")
    pred = bnn_predict_ref(ckpt["state_dict"], test.codes, test.n_bits)
    assert info["test_acc"] == pytest.approx(np.mean(pred == test.labels), abs=1e-9)  # no hybnn
    vae_sha = torch.load(tiny_pipeline["vae"], weights_only=True)["encoder_sha256"]
    assert ckpt["encoder_sha256"] == vae_sha and ckpt["task"]["classes"] == list(range(10))
    result = run("evaluate", bnn, "--codes", codes, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["acc"] == pytest.approx(info["test_acc"])
    # the validation slice: the same samples training validated on, and disjoint from training
    result = run("evaluate", bnn, "--codes", codes, "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    val = json.loads(result.stdout)
    assert val["acc"] == pytest.approx(info["val_acc"])
    assert info["val_acc"] == info["history"][-1]["val_acc"]
    assert val["n"] == info["n_val"] and info["n_val"] + info["n_train"] == 512
    result = run("train-bnn", "--codes", codes, "--digits", "2,5", "--epochs", 1, "--out",
                 tmp_path / "b25.pt")
    assert result.exit_code == 0, result.output
    assert "digits-2-5 (2 vs 5): validation accuracy" in result.stdout
    assert "test accuracy" in result.stdout


def test_pipeline_on_real_mnist_learns(mnist_dir, tmp_path):
    """A short real run: 5000 images, one VAE epoch, task 1 (0 vs 1) on 4000 codes per split."""
    vae, codes = tmp_path / "vae.pt", tmp_path / "codes.h5"
    assert run("pretrain-vae", "--data-dir", mnist_dir, "--epochs", 1, "--train-limit", 5000,
               "--out", vae).exit_code == 0
    assert run("extract", "--vae", vae, "--data-dir", mnist_dir, "--limit", 4000,
               "--out", codes).exit_code == 0
    result = run("train-bnn", "--codes", codes, "--task", "1", "--epochs", 10,
                 "--out", tmp_path / "b.pt", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    _, labels = load_split("mnist", "test", mnist_dir)
    assert info["n_test"] == int((labels[:4000] <= 1).sum())  # zeros and ones among them
    assert info["test_acc"] >= 0.97


def test_resume_bnn_continues_history(tiny_pipeline, tmp_path):
    bnn = tmp_path / "b.pt"
    common = ["train-bnn", "--codes", tiny_pipeline["codes"], "--task", "2", "--threads", 1,
              "--seed", 4, "--out", bnn, "--json"]
    assert run(*common, "--epochs", 2).exit_code == 0
    assert torch.load(bnn, weights_only=True)["seed"] == 4  # the seed is recorded
    result = run(*common, "--epochs", 4, "--resume", bnn)
    assert result.exit_code == 0, result.output
    assert [h["epoch"] for h in json.loads(result.stdout)["history"]] == [1, 2, 3, 4]
    one_line_error(run(*common, "--epochs", 6, "--resume", bnn, "--lr", "0.5"),
                   "cannot resume: it was trained with lr=0.01, this run asks for 0.5")


def test_mismatched_encoder_is_refused(tiny_pipeline, tmp_path):
    bnn = tmp_path / "b.pt"
    assert run("train-bnn", "--codes", tiny_pipeline["codes"], "--task", "1", "--epochs", 1,
               "--out", bnn).exit_code == 0
    # a second encoder: same data, another seed
    vae2, codes2 = tmp_path / "vae2.pt", tmp_path / "codes2.h5"
    assert run("pretrain-vae", "--dataset", "fake", "--data-dir", tiny_pipeline["root"],
               "--epochs", 1, "--seed", 9, "--train-limit", 64, "--out", vae2).exit_code == 0
    assert run("extract", "--vae", vae2, "--dataset", "fake", "--data-dir",
               tiny_pipeline["root"], "--out", codes2).exit_code == 0
    one_line_error(run("evaluate", bnn, "--codes", codes2), "expects codes from encoder")
    one_line_error(run("train-bnn", "--codes", codes2, "--task", "1", "--epochs", 2,
                       "--resume", bnn, "--out", tmp_path / "c.pt"),
                   "expects codes from encoder")


def test_bad_inputs_give_one_line_errors(tiny_pipeline, tmp_path, no_network):
    codes = tiny_pipeline["codes"]
    one_line_error(run("train-bnn", "--codes", codes, "--task", "7"), "unknown task '7'")
    one_line_error(run("train-bnn", "--codes", codes, "--digits", "3"),
                   "needs at least two different classes")
    one_line_error(run("train-bnn", "--codes", codes, "--task", "1", "--digits", "1,2"),
                   "either --task or --digits")
    one_line_error(run("train-bnn", "--codes", tmp_path / "none.h5"), "no such codes file")
    one_line_error(run("train-bnn", "--codes", codes, "--schedule", "step"),
                   "unknown --schedule 'step'")
    one_line_error(run("pretrain-vae", "--dataset", "cifar"), "unknown dataset 'cifar'")
    one_line_error(run("extract", "--vae", tmp_path / "none.pt", "--out", tmp_path / "c.h5"),
                   "no such file")
    one_line_error(run("extract", "--vae", codes, "--out", tmp_path / "c.h5"),
                   "not a readable checkpoint")
    one_line_error(run("evaluate", tiny_pipeline["vae"], "--codes", codes),
                   "expected a hybnn-bnn checkpoint, found 'hybnn-vae'")
    one_line_error(run("extract", "--vae", tiny_pipeline["vae"], "--out", tmp_path),
                   "is a folder")
    assert not (tmp_path / "c.h5").exists()


def test_task_without_samples_is_refused(tiny_pipeline, tmp_path):
    import h5py

    from hybnn_cli.codes.store import read_codes
    codes = tmp_path / "codes.h5"
    shutil.copy(tiny_pipeline["codes"], codes)
    labels = read_codes(codes, "test").labels
    with h5py.File(codes, "a") as f:
        f["test"]["labels"][...] = (labels % 2) * 2 + 4  # only 4 and 6 left in /test
    one_line_error(run("train-bnn", "--codes", codes, "--task", "1", "--epochs", 1),
                   "task task1 (classes 0,1) has no samples in /test")


def test_label_outside_the_classes_is_refused_before_training(tiny_pipeline, tmp_path):
    import h5py

    codes = tmp_path / "codes.h5"
    shutil.copy(tiny_pipeline["codes"], codes)
    with h5py.File(codes, "a") as f:
        f["test"]["labels"][5] = 200
    one_line_error(run("train-bnn", "--codes", codes, "--task", "all", "--epochs", 1,
                       "--out", tmp_path / "bnn.pt"),
                   f"{codes}: /test/labels holds 200 (at index 5), outside the 10 classes 0..9 "
                   f"of 'fake'")
    assert not (tmp_path / "bnn.pt").exists()


def test_checkpoint_loads_with_weights_only(tiny_pipeline):
    model, ckpt = ck.load_vae(tiny_pipeline["vae"])
    assert ckpt["format_version"] == ck.FORMAT_VERSION and not model.training


class _RunsCode:
    """Unpickling this runs `exec`, which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",))


@pytest.mark.parametrize("fmt, load, command", [
    (ck.VAE_FORMAT, ck.load_vae, ["extract", "--out", "{tmp}/codes.h5", "--vae"]),
    (ck.BNN_FORMAT, ck.load_bnn, ["evaluate", "--codes", "{codes}"]),
    (ck.BASELINE_FORMAT, ck.load_baseline, None),
])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, codes, fmt,
                                                                          load, command):
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"format": fmt, "format_version": ck.FORMAT_VERSION, "state_dict": {},
                "config": _RunsCode(marker)}, path)
    # the file is truly malicious: an unsafe load runs its code
    with open(path, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.exists()
    marker.unlink()

    message = (f"{path}: refused: it holds Python objects other than tensors and plain data "
               f"(exec), and loading them could run code")
    with pytest.raises(HybnnError) as e:
        load(path)
    assert str(e.value) == message
    if command is not None:
        one_line_error(run(*[a.format(tmp=tmp_path, codes=codes) for a in command], path), message)
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


def test_the_headline_sequence_chains_in_an_empty_folder(tmp_path, monkeypatch, fake_root):
    """`hybnn pretrain-vae`, `hybnn extract --out codes.h5`, `hybnn train-bnn --task 3` as typed
    (plus options that only make it small): each stage finds what the one before wrote."""
    monkeypatch.chdir(tmp_path)
    small = ("--dataset", "fake", "--data-dir", fake_root)
    r = run("pretrain-vae", *small, "--epochs", 1, "--train-limit", 128)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "runs/vae.pt").is_file()
    r = run("extract", "--out", "codes.h5", *small)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "codes.h5").is_file()
    r = run("train-bnn", "--task", 3, "--epochs", 1)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().endswith("→ runs/bnn-task3.pt")
    _, ckpt = ck.load_bnn(tmp_path / "runs/bnn-task3.pt")
    assert ckpt["codes"] == "codes.h5"
    r = run("evaluate", "runs/bnn-task3.pt")
    assert r.exit_code == 0 and r.stdout.startswith("task3 test: accuracy"), r.output


def test_a_missing_default_says_which_command_makes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(run("train-bnn", "--task", 3), "no codes file here: runs/codes.h5 does not "
                   "exist and hybnn extract has not written one in this folder; run hybnn "
                   "extract first or give --codes")
    one_line_error(run("extract"), "no vae file here: runs/vae.pt does not exist")
    assert not (tmp_path / "runs/codes.h5").exists()
