"""Pretraining at server scale: --device, data-parallel pretraining under torchrun (2 CPU
processes, gloo, loopback), sharded extraction and merge-codes, the union pretraining set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from hybnn_cli.codes.shards import parse_shard, shard_range
from hybnn_cli.codes.store import read_codes
from hybnn_cli.data.pretrain_sets import load_pretrain_images
from hybnn_cli.device import resolve_device, to_cpu
from hybnn_cli.distributed import SINGLE
from hybnn_cli.errors import HybnnError
from hybnn_cli.models import checkpoint as ck
from hybnn_cli.train import stages
from hybnn_cli.train.configs import VAEConfig
from tests import ddp_workers
from tests.conftest import make_images, write_fake_dataset
from tests.test_cli_pipeline import one_line_error, run

NO_CUDA = not torch.cuda.is_available()


# ── devices ───────────────────────────────────────────────────────────────────────────────────
def test_resolve_device_parses_every_form():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    if NO_CUDA:
        assert resolve_device("auto") == torch.device("cpu")
    for bad in ("gpu", "cuda:", "cpu:0", "auto:1", "cuda:x", ""):
        with pytest.raises(HybnnError, match=r"use auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA; the error is for machines without")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_one_line_error(spec):
    with pytest.raises(HybnnError, match=f"--device {spec}: CUDA is not available here"):
        resolve_device(spec)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA; the error is for machines without")
@pytest.mark.parametrize("command", [
    ["pretrain-vae", "--epochs", "1"],
    ["extract", "--out", "{tmp}/c.h5"],
    ["train-bnn", "--task", "1"],
    ["baseline", "--task", "1"],
])
def test_every_training_command_refuses_cuda_without_a_gpu(command, tmp_path):
    result = run(*[a.format(tmp=tmp_path) for a in command], "--device", "cuda")
    one_line_error(result, "--device cuda: CUDA is not available here")
    assert os.listdir(tmp_path) == []


def test_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path):
    """A file whose tensors are tagged cuda:0 (as a GPU run would write them without to_cpu)
    loads here through map_location="cpu", with the same weights."""
    from hybnn_cli.models.vae import BinaryVAE

    model = BinaryVAE(16)
    payload = {"format": ck.VAE_FORMAT, "format_version": ck.FORMAT_VERSION,
               "config": {"latent_bits": 16}, "seed": 0, "state_dict": model.state_dict(),
               "encoder_sha256": ck.encoder_sha256(model)}
    path = tmp_path / "gpu.pt"
    entry = (1, lambda obj: "cuda:0", lambda obj, location: None)
    torch.serialization._package_registry.append(entry)
    torch.serialization._package_registry.sort(key=lambda e: e[0])
    try:
        torch.save(payload, path)
    finally:
        torch.serialization._package_registry.remove(entry)
    if NO_CUDA:  # the file really names a CUDA device: a plain load fails on this machine
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded, _ = ck.load_vae(path)
    for name, t in loaded.state_dict().items():
        assert t.device.type == "cpu" and torch.equal(t, model.state_dict()[name]), name


def test_saved_state_is_moved_to_the_cpu():
    t = torch.ones(2)
    out = to_cpu({"state": {0: {"exp_avg": t, "step": torch.tensor(3.0)}}, "lr": [0.1, (t,)]})
    assert out["state"][0]["exp_avg"].device.type == "cpu" and out["lr"][0] == 0.1
    assert isinstance(out["lr"][1], tuple) and torch.equal(out["lr"][1][0], t)


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU (torch sees none here)")
def test_cuda_pretraining_writes_the_cpu_format(tiny_pipeline, tmp_path):
    cfg = VAEConfig(dataset="fake", epochs=1, batch_size=64, threads=1, train_limit=256,
                    device="cuda:0")
    stages.pretrain_vae(cfg, tmp_path / "vae.pt", tiny_pipeline["root"])
    raw = torch.load(tmp_path / "vae.pt", map_location="meta", weights_only=True)
    assert raw["config"]["device"] == "cuda:0"
    model, _ = ck.load_vae(tmp_path / "vae.pt")
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
    stages.extract_codes(tmp_path / "vae.pt", tmp_path / "c.h5", "fake", tiny_pipeline["root"],
                         device="cuda:0")
    assert read_codes(tmp_path / "c.h5", "train").codes.shape == (512, 4)


# ── data-parallel pretraining ─────────────────────────────────────────────────────────────────
def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_images(rng.integers(0, 10, n), rng)


@pytest.fixture(scope="module")
def two_ranks(tiny_pipeline, fake_root, tmp_path_factory) -> dict:
    """One 2-process gloo job (spawned, loopback) running `ddp_workers.ddp_worker`; each
    rank's record, and one process's `train_record` on the same data for comparison."""
    from hybnn_cli.data import datasets as data

    folder = tmp_path_factory.mktemp("ddp")
    np.save(folder / "train.npy", _images(384, 0))
    np.save(folder / "test.npy", _images(64, 1))
    cfg = {"epochs": 1, "batch_size": 64, "threads": 1, "seed": 3}
    plan = {"cfg": cfg, "root": str(fake_root), "fake_md5": data.DATASETS["fake"].md5,
            "vae": str(tiny_pipeline["vae"])}
    mp.spawn(ddp_workers.ddp_worker, args=(2, ddp_workers.free_port(), str(folder), plan),
             nprocs=2, join=True)
    ranks = [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]
    one = ddp_workers.train_record(cfg, np.load(folder / "train.npy"),
                                   np.load(folder / "test.npy"), SINGLE)
    return {"ranks": ranks, "one": one, "folder": folder}


def test_two_processes_hold_identical_weights_after_every_step(two_ranks):
    r0, r1 = two_ranks["ranks"]
    assert r0["group"] == [0, 2, "gloo"] and r1["group"] == [1, 2, "gloo"]
    assert len(r0["steps"]) == 384 // 64 == len(r1["steps"])
    assert r0["steps"] == r1["steps"]
    assert r0["state"] == r1["state"]  # batch-norm statistics too, after the epoch
    assert r0["history"] == [{**r1["history"][0], "epoch_seconds": r0["history"][0]
                              ["epoch_seconds"]}]
    assert r0["history"][0]["processes"] == 2


def test_one_epoch_on_two_processes_is_within_2_percent_of_one(two_ranks):
    """Global batch 64: 32 per process against 64 in one; batch norm is per process."""
    one, r0 = two_ranks["one"], two_ranks["ranks"][0]
    assert len(one["steps"]) == 6 and "processes" not in one["history"][0]
    loss1, loss2 = one["history"][0]["train_loss"], r0["history"][0]["train_loss"]
    assert abs(loss2 - loss1) / loss1 < 0.02, (loss1, loss2)
    assert loss1 != loss2  # the per-process batch norm and samples do differ


def test_rank0_alone_writes_each_checkpoint_and_resume_continues(two_ranks):
    r0, r1 = two_ranks["ranks"]
    out = str(two_ranks["folder"] / "vae.pt")
    assert r0["writes"] == [out, out] and r1["writes"] == []  # epoch 1, then resumed epoch 2
    assert [h["epoch"] for h in r0["resumed"]] == [1, 2] == [h["epoch"] for h in r1["resumed"]]
    assert r0["resumed"][0] == r0["pretrain"][0]
    ckpt = ck.load_checkpoint(out, ck.VAE_FORMAT)
    assert ckpt["metrics"]["history"] == r0["resumed"]


def test_under_torchrun_each_rank_extracts_its_shard_and_rank0_merges(two_ranks, tiny_pipeline):
    folder = two_ranks["folder"]
    r0, r1 = two_ranks["ranks"]
    assert r0["extract"]["shards"] == 2 and r0["extract"]["n_train"] == 512
    assert r1["extract"]["n_train"] == 256  # rank 1's own shard
    assert not list(folder.glob("codes.shard*"))  # rank 0 removed the shards
    _assert_same_codes(folder / "codes.h5", tiny_pipeline["codes"])


def test_global_batch_must_divide_among_the_processes():
    from hybnn_cli.distributed import Group, local_batch_size

    assert local_batch_size(128, Group(world_size=4)) == 32
    with pytest.raises(HybnnError, match=r"--batch-size 100 is the global batch, split equally "
                                         r"among 3 processes: give a multiple of 3"):
        local_batch_size(100, Group(world_size=3))


def _torchrun(*args, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "hybnn_cli", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_torchrun_pretrains_on_a_union_and_rank0_alone_writes(tmp_path):
    """`torchrun --nproc-per-node 2 -m hybnn_cli pretrain-vae` on two IDX sets hybnn does not
    know by name (blocks+stripes): rank 0 alone prints and writes."""
    write_fake_dataset(tmp_path / "data" / "blocks", n_train=192, n_test=32, seed=1)
    write_fake_dataset(tmp_path / "data" / "stripes", n_train=64, n_test=32, seed=2)
    out = tmp_path / "run" / "vae.pt"
    common = ["--dataset", "blocks+stripes", "--data-dir", tmp_path / "data", "--batch-size",
              "64", "--threads", "1", "--device", "cpu", "--out", out]
    r = _torchrun("pretrain-vae", "--epochs", "1", *common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Saved") == 1 and r.stderr.count("epoch   1") == 1, r.stderr
    assert sorted(os.listdir(out.parent)) == ["vae.png", "vae.pt"]
    ckpt = ck.load_checkpoint(out, ck.VAE_FORMAT)
    assert ckpt["config"]["device"] == "cpu" and ckpt["config"]["dataset"] == "blocks+stripes"
    assert ckpt["metrics"]["processes"] == 2


# ── sharded extraction ────────────────────────────────────────────────────────────────────────
def _assert_same_codes(a: Path, b: Path) -> None:
    for split in ("train", "test"):
        ca, cb = read_codes(a, split), read_codes(b, split)
        assert ca.codes.dtype == cb.codes.dtype == np.uint64
        assert np.array_equal(ca.codes, cb.codes) and np.array_equal(ca.labels, cb.labels)
        for key in ("n_bits", "encoder_sha256", "dataset", "n_classes", "seed"):
            assert ca.attrs[key] == cb.attrs[key], key


def _shards(pipe, folder: Path, n: int, vae=None) -> list[Path]:
    paths = []
    for k in range(n):
        paths.append(folder / f"s{k}of{n}.h5")
        stages.extract_codes(vae or pipe["vae"], paths[-1], "fake", pipe["root"],
                             batch_size=100, shard=(k, n))
    return paths


@pytest.mark.parametrize("n", [2, 3, 7])
def test_merged_shards_equal_a_single_extract_bit_for_bit(tiny_pipeline, tmp_path, n):
    paths = _shards(tiny_pipeline, tmp_path, n)
    sizes = [read_codes(p, "train").codes.shape[0] for p in paths]
    assert sizes == [shard_range(512, k, n)[1] - shard_range(512, k, n)[0] for k in range(n)]
    result = run("merge-codes", *reversed(paths), "--out", tmp_path / "merged.h5", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shards"] == n
    _assert_same_codes(tmp_path / "merged.h5", tiny_pipeline["codes"])


def test_merge_copies_in_chunks(tiny_pipeline, tmp_path, monkeypatch):
    """Memory stays flat: no write to the merged file is larger than CHUNK codes."""
    from hybnn_cli.codes import shards

    monkeypatch.setattr(shards, "CHUNK", 50)
    seen = []
    shards.merge_codes(_shards(tiny_pipeline, tmp_path, 2), tmp_path / "m.h5", on_rows=seen.append)
    assert max(seen) == 50 and sum(seen) == 512 + 128
    _assert_same_codes(tmp_path / "m.h5", tiny_pipeline["codes"])


def test_merge_refuses_overlap_missing_and_other_encoders(tiny_pipeline, tmp_path):
    paths = _shards(tiny_pipeline, tmp_path, 3)
    out = tmp_path / "m.h5"
    one_line_error(run("merge-codes", paths[0], paths[1], paths[0], "--out", out),
                   f"{paths[0]} and {paths[0]} are both shard 0/3: they overlap")
    one_line_error(run("merge-codes", paths[0], paths[2], "--out", out),
                   "shard 1/3 is missing: 1 of 3 shards not given")
    (tmp_path / "two").mkdir()
    two = _shards(tiny_pipeline, tmp_path / "two", 2)
    one_line_error(run("merge-codes", paths[0], two[1], paths[2], "--out", out),
                   f"{two[1]} is shard 1/2 but {paths[0]} is one of 3")
    # a shard from another encoder: the same VAE with one weight changed
    model, vae_ckpt = ck.load_vae(tiny_pipeline["vae"])
    with torch.no_grad():
        model.encoder.fc.bias[0] += 1.0
    other = tmp_path / "other.pt"
    ck.save_checkpoint(other, ck.VAE_FORMAT, model, vae_ckpt["config"], 0,
                       encoder_sha256=ck.encoder_sha256(model))
    (tmp_path / "o").mkdir()
    foreign = _shards(tiny_pipeline, tmp_path / "o", 3, vae=other)[1]
    one_line_error(run("merge-codes", paths[0], foreign, paths[2], "--out", out),
                   f"{foreign} was made by encoder {ck.encoder_sha256(model)[:12]}… but "
                   f"{paths[0]} by encoder")
    one_line_error(run("merge-codes", tiny_pipeline["codes"], "--out", out),
                   "not a shard (it was written by extract without --shard)")
    assert not out.exists()


def test_overlapping_ranges_are_refused_even_with_distinct_indices(tiny_pipeline, tmp_path):
    """A shard file whose recorded range overlaps its neighbour's (edited, or from another
    slicing rule) is refused by the range walk, not only by the index check."""
    from hybnn_cli.codes.shards import check_cover

    infos = [({}, {"index": 0, "count": 2, "ranges": {"train": [0, 6, 10], "test": [0, 1, 2]}}),
             ({}, {"index": 1, "count": 2, "ranges": {"train": [5, 10, 10], "test": [1, 2, 2]}})]
    with pytest.raises(HybnnError, match=r"a.h5 and b.h5 overlap: both hold /train indices 5..5"):
        check_cover([Path("a.h5"), Path("b.h5")], infos)
    infos[1][1]["ranges"]["train"] = [7, 10, 10]
    with pytest.raises(HybnnError, match=r"/train indices 6..6 are in no shard"):
        check_cover([Path("a.h5"), Path("b.h5")], infos)


@pytest.mark.parametrize("text,message", [("3/3", "K counts from 0"), ("1-2", "write K/N"),
                                          ("0/0", "K counts from 0")])
def test_shard_option_is_checked(text, message, tmp_path):
    one_line_error(run("extract", "--shard", text, "--out", tmp_path / "c.h5"), message)
    assert parse_shard("2/7") == (2, 7)


def test_shard_files_are_codes_files_with_their_range(tiny_pipeline, tmp_path):
    path = _shards(tiny_pipeline, tmp_path, 3)[2]
    with h5py.File(path) as f:
        shard = json.loads(f.attrs["config"])["shard"]
    assert shard == {"index": 2, "count": 3, "ranges": {"train": [341, 512, 512],
                                                         "test": [85, 128, 128]}}


# ── the union pretraining set ─────────────────────────────────────────────────────────────────
def test_union_of_mnist_and_fashion_has_120000_images(mnist_and_fashion_dir):
    from hybnn_cli.data.datasets import load_split

    union = load_pretrain_images("mnist+fashion-mnist", "train", mnist_and_fashion_dir)
    assert union.shape == (120_000, 28, 28) and union.dtype == np.uint8
    assert np.array_equal(union[:60_000], load_split("mnist", "train", mnist_and_fashion_dir)[0])
    assert np.array_equal(union[60_000:],
                          load_split("fashion-mnist", "train", mnist_and_fashion_dir)[0])
    assert load_pretrain_images("mnist+fashion-mnist", "test", mnist_and_fashion_dir).shape[0] \
        == 20_000


def test_pretraining_set_names_are_checked(tmp_path, fake_root):
    one_line_error(run("pretrain-vae", "--dataset", "nosuch", "--data-dir", tmp_path),
                   "unknown dataset 'nosuch': not one of mnist, fashion-mnist")
    one_line_error(run("pretrain-vae", "--dataset", "mnist+mnist"),
                   "dataset 'mnist+mnist' names a set twice")
    one_line_error(run("pretrain-vae", "--dataset", "mnist+../x"),
                   "'../x' is not a data set name")


def test_union_of_a_known_set_and_an_idx_folder(fake_root, tmp_path):
    """`fake` is verified by its MD5 sums; `extra`, unknown to hybnn, is read as found."""
    import shutil

    from hybnn_cli.data.datasets import read_idx

    shutil.copytree(fake_root / "fake", tmp_path / "fake")
    write_fake_dataset(tmp_path / "extra", n_train=40, n_test=8, seed=5)
    union = load_pretrain_images("fake+extra", "train", tmp_path)
    assert union.shape == (512 + 40, 28, 28)
    assert np.array_equal(union[:512], load_pretrain_images("fake", "train", tmp_path))
    assert np.array_equal(union[512:],
                          read_idx(tmp_path / "extra" / "train-images-idx3-ubyte.gz"))
    assert load_pretrain_images("fake+extra", "test", tmp_path).shape[0] == 128 + 8


# ── the generated README blocks ───────────────────────────────────────────────────────────────
def test_server_scale_blocks_render_from_their_result_files(tmp_path):
    from hybnn_cli.study import docgen
    from hybnn_cli.study.provenance import write_result

    run0 = {"label": "1 process × 2 threads", "processes": 1, "epoch_seconds": [23.45],
            "train_loss": [159.0], "test_recon": 90.6, "load_average": [1.0, 2.0]}
    write_result(tmp_path / "ddp-scaling.json", "hybnn-ddp-scaling", 1, {
        "epochs": 1, "batch_size": 128, "runs": [run0], "parameters": 1000,
        "gradient_bytes_per_step": 4000, "steps_per_epoch": 469,
        "allreduce_loopback_2proc_seconds": {"median": 0.002, "min": 0.001, "reps": 30}})
    write_result(tmp_path / "union-encoder.json", "hybnn-union-encoder", 1, {
        "vae_epochs": 3, "bnn_epochs": 30, "seed": 0, "encoders": [
            {"pretrain_dataset": d, "n_pretrain_images": n,
             "tasks": {"task1": {"val_acc": 0.991, "test_acc": acc}}}
            for d, n, acc in (("mnist", 60000, 0.9975), ("mnist+fashion-mnist", 120000, 0.9968))]})
    text = docgen.render_text("<!-- generated: ddp-scaling -->\n<!-- /generated -->\n"
                              "<!-- generated: union-encoder -->\n<!-- /generated -->\n", tmp_path)
    assert "| 1 process × 2 threads | 23.4 | 159.00 | 90.60 | 1.0 – 2.0 |" in text
    assert "The load stayed within the cores" in text
    assert "1,000 float32 values, 0.00 MB, 469 times an epoch" in text
    assert "compute of 50 ms per step" in text  # 23.45 s / 469 steps
    # 2 machines at 1 Gbit/s: 469 · (0.025 + 2·½·4000 B / 125 MB/s) = 11.74 s, 23.45 / 11.74 = 2.0
    assert "| 2 | 11.7 s (2.0×) | 11.7 s (2.0×) |" in text
    assert "| task1 | 99.10 / 99.75 | 99.10 / 99.68 |" in text
    assert "mnist+fashion-mnist (120,000 images)" in text


def test_ddp_scaling_block_gives_the_repeats_median_and_range_and_says_when_loaded(tmp_path):
    from hybnn_cli.study import docgen
    from hybnn_cli.study.provenance import write_result

    def run(secs, load, repeat):
        return {"label": "1 process × 1 thread", "processes": 1, "epoch_seconds": [secs],
                "train_loss": [159.0], "test_recon": 90.6, "load_average": load,
                "repeat": repeat}

    runs = [run(30.0, [0.5, 0.7], 0), run(20.0, [0.7, 0.9], 1), run(25.0, [0.9, 64.0], 2)]
    write_result(tmp_path / "ddp-scaling.json", "hybnn-ddp-scaling", 2, {
        "epochs": 1, "batch_size": 128, "repeats": 3, "runs": runs, "parameters": 1000,
        "gradient_bytes_per_step": 4000, "steps_per_epoch": 469,
        "allreduce_loopback_2proc_seconds": {"median": 0.002, "min": 0.001, "reps": 30}})
    text = docgen.render_text("<!-- generated: ddp-scaling -->\n<!-- /generated -->\n", tmp_path)
    assert "| 1 process × 1 thread | 25.0 (20.0–30.0) | 159.00 | 90.60 | 0.5 – 64.0 |" in text
    assert "each run repeated 3 time(s) in turn" in text
    assert "The load exceeded the cores during some runs" in text  # 64 > any machine's cores here
    assert "compute of 43 ms per step" in text  # the fastest repeat: 20.0 s / 469 steps

