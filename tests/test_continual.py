"""Continual learning on codes (`hybnn continual`): the replay memory's bounds and class balance,
the generators' samples, resume after an interrupted task, bad input, and a small end-to-end run,
all on synthetic codes (ten classes, each a random prototype with 15% of its bits flipped)."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from hybnn_kernels import n_words, pack_bits, unpack_bits
from typer.testing import CliRunner

from hybnn_cli.cli import app
from hybnn_cli.codes.store import codes_writer
from hybnn_cli.continual.generative import CodeGenerator
from hybnn_cli.continual.memory import ReplayMemory
from hybnn_cli.continual.sequence import (
    ContinualConfig,
    align_weights,
    load_data,
    logit_shift,
    replayed_per_batch,
    run_sequence,
)
from hybnn_cli.errors import HybnnError

N_BITS = 200


def synthetic(n: int, rng: np.random.Generator, protos: np.ndarray, flip: float = 0.15):
    labels = rng.integers(0, len(protos), n)
    bits = protos[labels] ^ (rng.random((n, N_BITS)) < flip)
    return pack_bits(bits), labels.astype(np.uint8)


@pytest.fixture(scope="module")
def codes_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("codes") / "codes.h5"
    rng = np.random.default_rng(0)
    protos = rng.random((10, N_BITS)) < 0.5
    splits = {"train": synthetic(1000, rng, protos), "test": synthetic(300, rng, protos)}
    with codes_writer(path, N_BITS, {k: len(v[1]) for k, v in splits.items()}, "mnist",
                      "ab" * 32, {"synthetic": True}, 0) as write:
        for split, (c, y) in splits.items():
            write(split, 0, c, y)
    return path


def small(**kw) -> ContinualConfig:
    base = dict(epochs_per_task=2, batch_size=32, hidden=64, threads=1, memory=100,
                components=3, finetune_per_class=40)
    return ContinualConfig(**{**base, **kw})


# ── the memory ────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("policy", ["balanced", "reservoir"])
def test_memory_never_holds_more_than_its_capacity(policy):
    rng = np.random.default_rng(1)
    mem = ReplayMemory(37, n_words(N_BITS), policy, seed=0)
    for t in range(5):
        labels = rng.choice([2 * t, 2 * t + 1], size=50 + 13 * t)
        codes = rng.integers(0, 2**63, (len(labels), n_words(N_BITS)), dtype=np.uint64)
        mem.add_task(codes, labels, t)
        assert len(mem) == min(37, sum(50 + 13 * i for i in range(t + 1)))
        assert mem.codes.shape == (len(mem), n_words(N_BITS)) and mem.codes.dtype == np.uint64
        # every kept code is one that was offered, with its own label
        assert mem.nbytes(N_BITS) == len(mem) * 26
    assert mem.n_seen == sum(50 + 13 * i for i in range(5))


def test_balanced_memory_gives_every_class_its_share():
    rng = np.random.default_rng(2)
    mem = ReplayMemory(25, n_words(N_BITS), "balanced", seed=0)
    offered = {}
    for t in range(3):
        labels = np.repeat([2 * t, 2 * t + 1], 40)
        codes = rng.integers(0, 2**63, (80, n_words(N_BITS)), dtype=np.uint64)
        offered.update({c.tobytes(): int(y) for c, y in zip(codes, labels, strict=True)})
        mem.add_task(codes, labels, t)
        counts = np.bincount(mem.labels, minlength=2 * t + 2)
        share = 25 // (2 * t + 2)
        assert counts.min() >= share and counts.max() <= share + 1 and counts.sum() == 25
    assert all(offered[c.tobytes()] == y for c, y in zip(mem.codes, mem.labels, strict=True))


def test_reservoir_keeps_old_and_new_tasks_in_proportion():
    mem = ReplayMemory(500, 1, "reservoir", seed=3)
    for t in range(2):
        mem.add_task(np.arange(2000, dtype=np.uint64)[:, None], np.full(2000, t), t)
    # every code seen is kept with probability 500/4000, so about half of each task
    assert 200 <= np.sum(mem.labels == 0) <= 300


def test_memory_smaller_than_the_classes_is_refused(codes_file):
    with pytest.raises(HybnnError, match="memory must keep at least one code per class"):
        run_sequence(small(strategy="replay", memory=9), load_data(codes_file))


# ── the generators ────────────────────────────────────────────────────────────────────────────
def test_generator_samples_have_the_right_shape_class_and_clear_padding():
    rng = np.random.default_rng(4)
    protos = rng.random((4, N_BITS)) < 0.5
    codes, labels = synthetic(800, rng, protos, flip=0.05)
    gen = CodeGenerator(N_BITS, components=2)
    gen.fit(codes, labels.astype(np.int64), seed=0)
    assert gen.classes == [0, 1, 2, 3]
    assert gen.nbytes() == 4 * (2 * N_BITS + 2 * 4)
    out, out_labels = gen.sample(30, np.random.default_rng(0), classes=[1, 3])
    assert out.shape == (60, n_words(N_BITS)) and out.dtype == np.uint64
    assert out_labels.tolist() == [1] * 30 + [3] * 30
    assert not np.any(out[:, -1] >> np.uint64(N_BITS % 64))  # padding bits past bit 200 are 0
    # a sample of class c is nearest to class c's prototype
    bits = unpack_bits(out, N_BITS).astype(bool)
    nearest = np.argmin([(bits ^ p).sum(1) for p in protos], axis=0)
    assert (nearest == out_labels).all()


# ── the sequence ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("strategy", ["replay", "generative"])
def test_resume_after_an_interrupted_task_repeats_an_unbroken_run(codes_file, tmp_path, strategy):
    data = load_data(codes_file)
    cfg = small(strategy=strategy, finetune_epochs=1)
    whole = run_sequence(cfg, data, tmp_path / "whole.pt")
    ckpt = tmp_path / "part.pt"
    run_sequence(cfg, data, ckpt, stop_after=2)  # "interrupted" after task 2
    assert torch.load(ckpt, weights_only=True)["tasks_done"] == 2
    resumed = run_sequence(cfg, data, ckpt, resume=True)
    strip = [{k: v for k, v in h.items() if k != "train_seconds"} for h in resumed.history]
    assert strip == [{k: v for k, v in h.items() if k != "train_seconds"}
                     for h in whole.history]
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    with pytest.raises(HybnnError, match="other settings \\(lr\\)"):
        run_sequence(replace(cfg, lr=0.5), data, ckpt, resume=True)


def test_metrics_follow_their_definitions(codes_file):
    seq = run_sequence(small(strategy="none"), load_data(codes_file))
    s, acc = seq.summary(), [h["test"]["per_task"] for h in seq.history]
    assert [len(a) for a in acc] == [1, 2, 3, 4, 5]
    assert s["test"]["average_acc"] == pytest.approx(np.mean(acc[-1]))
    assert s["test"]["forgetting"] == pytest.approx(
        np.mean([max(acc[i][j] for i in range(j, 4)) - acc[-1][j] for j in range(4)]))
    assert s["test"]["backward_transfer"] == pytest.approx(
        np.mean([acc[-1][j] - acc[j][j] for j in range(4)]))
    # fine-tuning in the class scenario forgets: the old tasks end far below where they were
    assert s["test"]["forgetting"] > 0.25 and s["memory_bytes"] == 0


# ── the command ───────────────────────────────────────────────────────────────────────────────
def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, fragment: str):
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("Error:") and fragment in err and "\n" not in err, err


def test_bad_input_gives_one_line_errors(codes_file, tmp_path):
    one_line_error(run("continual", "--codes", codes_file, "--strategy", "ewc"),
                   "unknown strategy 'ewc': use none, replay, generative, joint")
    one_line_error(run("continual", "--codes", codes_file, "--scenario", "domain"),
                   "unknown scenario 'domain'")
    one_line_error(run("continual", "--codes", codes_file, "--memory", 5),
                   "--memory 5 is less than the 10 classes")
    unlabelled = tmp_path / "nolabels.h5"
    unlabelled.write_bytes(codes_file.read_bytes())
    with h5py.File(unlabelled, "a") as f:
        del f["train/labels"]
    one_line_error(run("continual", "--codes", unlabelled),
                   "missing dataset /train/codes or /train/labels")
    one_line_error(run("continual", "--codes", tmp_path / "none.h5"), "no such codes file")


def test_cli_runs_two_seeds_writes_json_and_resumes(codes_file, tmp_path):
    args = ["continual", "--codes", codes_file, "--scenario", "task", "--strategy", "replay",
            "--memory", 100, "--epochs-per-task", 2, "--batch-size", 32, "--hidden", 64,
            "--threads", 1, "--seeds", "0,1", "--out", tmp_path, "--json"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["config"]["seeds"] == [0, 1] and [r["seed"] for r in res["runs"]] == [0, 1]
    assert res["memory_bytes"] == 100 * 26
    assert len(res["test"]["seen_acc_curve"]) == 5
    # task-incremental on separable codes: every pair is told apart
    assert res["test"]["average_acc"]["mean"] >= 0.9
    assert json.loads((tmp_path / "task-replay.json").read_text())["runs"] == res["runs"]
    assert (tmp_path / "task-replay-seed1.pt").is_file()
    again = run(*args, "--resume")  # both seeds finished: nothing is retrained
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["runs"] == res["runs"]


def test_flip_augments_only_the_replayed_codes_at_its_rate(codes_file):
    data = load_data(codes_file)
    seqs = {}
    for flip in (0.0, 0.2):
        seq = run_sequence(small(strategy="replay", flip=flip), data, stop_after=1)
        x, y = seq._replay(400, [0, 1], np.random.default_rng(5))
        pick = np.random.default_rng(5).integers(len(seq.memory), size=400)  # the same draw
        clean = unpack_bits(seq.memory.codes[pick], N_BITS) * 2.0 - 1
        assert y.tolist() == seq.memory.labels[pick].tolist()
        seqs[flip] = float(np.mean(x.numpy() != clean))
    assert seqs[0.0] == 0.0 and 0.18 < seqs[0.2] < 0.22


def test_balanced_batches_replay_as_many_codes_per_old_class_as_new_per_new_class():
    cfg = small(batch_size=32, replay_ratio=0.5)
    assert replayed_per_batch(cfg, n_old=6, n_new=2) == 16  # the ratio
    balanced = replace(cfg, balanced_batches=True)
    # 32 new codes over 2 classes: 16 per class, so 16 for each of the old classes
    assert [replayed_per_batch(balanced, 2 * t, 2) for t in range(1, 5)] == [32, 64, 96, 128]


def test_logit_shift_is_the_log_of_each_seen_class_share_of_a_batch():
    shift = logit_shift(10, cur=[4, 5], old=[0, 1, 2, 3], n_new=32, n_rep=32)
    # 16 codes of each new class and 8 of each old one in a batch of 64
    expected = [np.log(8 / 64)] * 4 + [np.log(16 / 64)] * 2 + [0.0] * 4
    assert shift.tolist() == pytest.approx(expected)


def test_head_fine_tuning_changes_only_the_output_scale_and_offset(codes_file):
    data = load_data(codes_file)
    cfg = small(strategy="replay", finetune_epochs=2, finetune_head=True, finetune_lr=0.05)
    seq = run_sequence(cfg, data, stop_after=2)
    before = {k: v.clone() for k, v in seq.model.state_dict().items()}
    seq._finetune(1, [0, 1, 2, 3])
    after = seq.model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["bn2.bias", "bn2.weight"]


# ── against the newest-class bias: weight aligning, nearest mean of exemplars, EMA ─────────────
def test_weight_aligning_scales_the_new_classes_to_the_old_mean_norm():
    bn = torch.nn.BatchNorm1d(6)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 3.0, 4.0, 0.5, 9.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
        bn.running_var.copy_(torch.tensor([1.0, 4.0, 1.0, 4.0, 1.0, 1.0]) - bn.eps)
    k = align_weights(bn, new=[2, 3], old=[0, 1])
    # norms |γ|/σ: old 1 and 1 (mean 1), new 3 and 2 (mean 2.5)
    assert k == pytest.approx(1 / 2.5)
    assert bn.weight.tolist() == pytest.approx([1.0, -2.0, 3 / 2.5, 4 / 2.5, 0.5, 9.0])
    assert bn.bias.tolist() == pytest.approx([0.1, 0.2, 0.3 / 2.5, 0.4 / 2.5, 0.5, 0.6])
    norm = bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)
    assert float(norm[[2, 3]].mean()) == pytest.approx(float(norm[[0, 1]].mean()))


def test_nme_readout_goes_to_the_nearest_class_mean_of_the_memory(codes_file):
    data = load_data(codes_file)
    seq = run_sequence(small(strategy="replay", readout="nme"), data, stop_after=3)
    x = data.test.x[:50]
    with torch.no_grad():
        h_mem = seq.model.hidden(torch.from_numpy(
            unpack_bits(seq.memory.codes, N_BITS).astype(np.float32) * 2 - 1))
        h = seq.model.hidden(x)
    means = {c: h_mem[torch.from_numpy(seq.memory.labels == c)].mean(0) for c in range(6)}
    naive = [max(means, key=lambda c: float(hi @ means[c] / means[c].norm())) for hi in h]
    scores = seq._nme_scores(x)
    assert scores.argmax(1).tolist() == naive
    assert (scores[:, 6:] == -1e9).all()  # classes not yet in the memory never win
    assert seq.history[-1]["test"]["seen"] > 0.9  # separable codes: the means tell them apart
    with pytest.raises(HybnnError, match="--readout nme needs the stored codes"):
        small(strategy="generative", readout="nme").check()


def test_weight_average_is_loaded_with_running_statistics_measured_for_it(codes_file):
    data = load_data(codes_file)
    seq = run_sequence(small(strategy="replay", hidden=16), data, stop_after=1)
    average = [torch.randn_like(p) for p in seq.model.parameters()]
    x = data.train.x[:300]
    seq._load_average(average, x)
    assert all(torch.equal(p, a) for p, a in zip(seq.model.parameters(), average, strict=True))
    xm = torch.cat([x, torch.from_numpy(unpack_bits(seq.memory.codes, N_BITS)
                                        .astype(np.float32) * 2 - 1)])
    with torch.no_grad():
        z = seq.model.fc1(xm)
    # one batch (fewer than 1,024 codes): the running statistics are that batch's
    assert torch.allclose(seq.model.bn1.running_mean, z.mean(0), atol=1e-5)
    assert torch.allclose(seq.model.bn1.running_var, z.var(0), atol=1e-4)
    assert seq.model.bn1.momentum == 0.1


@pytest.mark.parametrize("kw", [{"align": True}, {"ema": 0.9}])
def test_align_and_ema_change_the_run_and_resume_exactly(codes_file, tmp_path, kw):
    data = load_data(codes_file)
    cfg = small(strategy="replay", **kw)
    whole = run_sequence(cfg, data)
    plain = run_sequence(small(strategy="replay"), data)
    assert not torch.equal(whole.model.bn2.weight, plain.model.bn2.weight)
    ckpt = tmp_path / "part.pt"
    run_sequence(cfg, data, ckpt, stop_after=2)
    resumed = run_sequence(cfg, data, ckpt, resume=True)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
