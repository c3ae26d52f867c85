"""Learners that cannot forget (`hybnn continual --strategy mixture | prototype`): the prototype
classifier on the kernels against a slow numpy reference, the mixture's log-likelihood against
the formula, the same predictions under a shuffled task order, no forgetting, one-line errors and
the command end to end, all on small generated codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hybnn_kernels import pack_bits, unpack_bits

from hybnn_cli.codes.store import codes_writer
from hybnn_cli.continual.class_models import MixtureClassifier, PrototypeClassifier
from hybnn_cli.continual.generative import em_mixture, log_likelihood
from hybnn_cli.continual.sequence import ContinualConfig, load_data, run_sequence
from hybnn_cli.errors import HybnnError
from tests.test_continual import one_line_error, run

N_BITS = 200
STRATEGIES = ("mixture", "prototype")


def write_codes(path, train_bits, train_labels, test_bits, test_labels):
    splits = {"train": (pack_bits(train_bits), train_labels.astype(np.uint8)),
              "test": (pack_bits(test_bits), test_labels.astype(np.uint8))}
    with codes_writer(path, train_bits.shape[1], {k: len(v[1]) for k, v in splits.items()},
                      "mnist", "ab" * 32, {"synthetic": True}, 0) as write:
        for split, (c, y) in splits.items():
            write(split, 0, c, y)
    return path


def noisy(protos: np.ndarray, n: int, flip: float, rng: np.random.Generator):
    labels = rng.integers(0, len(protos), n)
    return protos[labels] ^ (rng.random((n, protos.shape[1])) < flip), labels


@pytest.fixture(scope="module")
def codes_file(tmp_path_factory):
    """Ten classes, each two prototypes with 25% of their bits flipped (far from separable
    within a pair), classes 0 and 1 near each other (10 bits apart) and far from the others, so
    that task 1 is hard but its codes are never taken for a later class."""
    rng = np.random.default_rng(0)
    protos = rng.random((10, N_BITS)) < 0.5
    protos[1] = protos[0]
    protos[1, :10] ^= True
    # two modes per class: the second one with 20 more bits flipped
    second = protos.copy()
    second[:, 100:120] ^= True
    both = np.concatenate([protos, second])
    tr, tr_mode = noisy(both, 2000, 0.25, rng)
    te, te_mode = noisy(both, 600, 0.25, rng)
    return write_codes(tmp_path_factory.mktemp("codes") / "codes.h5", tr, tr_mode % 10, te,
                       te_mode % 10)


def cfg_of(**kw) -> ContinualConfig:
    return ContinualConfig(**{"components": 3, "threads": 1, **kw})


# ── the classifiers against their references ──────────────────────────────────────────────────
def reference_nearest(codes, protos_per_class, n_bits, allowed):
    """Unpacked ±1 dot products, argmax over the allowed prototypes in (class, component)
    order: the first largest wins."""
    x = unpack_bits(codes, n_bits).astype(np.int64) * 2 - 1
    owner, comp, rows = [], [], []
    for c in sorted(protos_per_class):
        p = unpack_bits(protos_per_class[c], n_bits).astype(np.int64) * 2 - 1
        rows.append(p)
        owner += [c] * len(p)
        comp += list(range(len(p)))
    dots = x @ np.concatenate(rows).T
    out_c, out_k = [], []
    for i in range(len(x)):
        best = max((j for j in range(len(owner)) if allowed[i, owner[j]]),
                   key=lambda j: (dots[i, j], -j))
        out_c.append(owner[best])
        out_k.append(comp[best])
    return np.array(out_c), np.array(out_k)


@pytest.mark.parametrize("n_bits", [13, 77, 130, 200])
def test_prototype_classifier_on_the_kernels_equals_a_numpy_reference(n_bits):
    rng = np.random.default_rng(n_bits)
    n_classes, k = 6, 4
    clf = PrototypeClassifier(n_bits, n_classes, k)
    # five classes fitted (class 3 never), K prototypes each, some of them equal (ties)
    protos = {c: pack_bits(rng.random((k, n_bits)) < 0.5) for c in (0, 1, 2, 4, 5)}
    protos[2][3] = protos[2][1]
    protos[4][0] = protos[1][2]
    clf.load_state_dict({"classes": sorted(protos),
                         "prototypes": [protos[c] for c in sorted(protos)]})
    codes = pack_bits(rng.random((150, n_bits)) < 0.5)
    codes[:10] = protos[4][0]  # exactly on a prototype held by two classes: the lower one wins
    allowed = rng.random((150, n_classes)) < 0.6
    allowed[:, 1] |= ~allowed[:, [0, 2, 4, 5]].any(1)  # every code has a fitted class allowed
    got_c, got_k = clf.nearest(codes, allowed)
    want_c, want_k = reference_nearest(codes, protos, n_bits, allowed)
    np.testing.assert_array_equal(got_c, want_c)
    np.testing.assert_array_equal(got_k, want_k)
    np.testing.assert_array_equal(clf.predict(codes, allowed), want_c)
    assert got_c[0] == (1 if allowed[0, 1] else 4)
    assert clf.nbytes() == 5 * k * ((n_bits + 7) // 8)


def test_fitted_prototypes_are_the_rounded_mixture_means():
    rng = np.random.default_rng(3)
    bits = rng.random((300, 77)) < rng.random(77)
    labels = rng.integers(0, 2, 300)
    clf = PrototypeClassifier(77, 2, 5)
    clf.fit(pack_bits(bits), labels, seed=4)
    for c in (0, 1):
        _, mu = em_mixture(bits[labels == c], 5, seed=[4, c])
        np.testing.assert_array_equal(clf.params[c]["prototypes"], pack_bits(mu >= 0.5))


def test_mixture_log_likelihood_is_the_formula():
    rng = np.random.default_rng(5)
    d, k = 24, 4
    mu = rng.uniform(0.02, 0.98, (k, d))
    pi = rng.dirichlet(np.ones(k))
    x = rng.random((50, d)) < 0.5
    direct = np.log(sum(pi[j] * np.prod(np.where(x, mu[j], 1 - mu[j]), axis=1)
                        for j in range(k)))
    np.testing.assert_allclose(log_likelihood(x, pi, mu), direct, rtol=1e-12)


def test_mixture_classifier_takes_the_class_of_highest_likelihood():
    rng = np.random.default_rng(6)
    bits = rng.random((400, 90)) < np.where(rng.integers(0, 2, 400)[:, None] == 1, 0.8, 0.3)
    labels = rng.integers(0, 4, 400)
    clf = MixtureClassifier(90, 5, 3)
    clf.fit(pack_bits(bits), labels, seed=0)
    p = clf.params
    assert all(p[c]["probs"].dtype == np.float32 for c in range(4))
    ll = np.stack([log_likelihood(bits, p[c]["weights"], p[c]["probs"]) for c in range(4)], 1)
    allowed = rng.random((400, 5)) < 0.7
    allowed[:, 0] = True
    masked = np.where(allowed[:, :4], ll, -np.inf)
    np.testing.assert_array_equal(clf.predict(pack_bits(bits), allowed), masked.argmax(1))
    assert clf.nbytes() == 4 * 4 * (3 + 3 * 90)  # float32 weights and probabilities


# ── the sequence ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("scenario", ["class", "task"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_shuffled_task_order_gives_the_same_predictions(codes_file, strategy, scenario):
    data = load_data(codes_file)
    runs = [run_sequence(cfg_of(strategy=strategy, scenario=scenario, task_order=order), data)
            for order in (None, "3,1,5,2,4")]
    assert [h["classes"] for h in runs[1].history] == [[4, 5], [0, 1], [8, 9], [2, 3], [6, 7]]
    allowed = np.ones((len(data.test.labels), 10), bool)
    preds = [r.learner.predict(data.test.codes, allowed) for r in runs]
    np.testing.assert_array_equal(preds[0], preds[1])
    a, b = (r.summary()["test"] for r in runs)
    assert a["final_seen_acc"] == b["final_seen_acc"] and a["average_acc"] == b["average_acc"]
    # the accuracy of each task at the end is the same, wherever it came in the order
    assert sorted(runs[0].history[-1]["test"]["per_task"]) == \
        sorted(runs[1].history[-1]["test"]["per_task"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_nothing_is_forgotten(codes_file, strategy):
    data = load_data(codes_file)
    seq = run_sequence(cfg_of(strategy=strategy, scenario="class"), data, stop_after=1)
    after_first = {k: [a.copy() for a in v] for k, v in seq.learner.state_dict().items()
                   if k != "classes"}
    just_learned = seq.history[0]["test"]["per_task"][0]
    seq = run_sequence(cfg_of(strategy=strategy, scenario="class"), data)
    final = seq.history[-1]["test"]["per_task"][0]
    # task 1 is hard (its two classes are near each other): a changed model would show
    assert 0.6 < just_learned < 0.99
    assert final == just_learned
    state = seq.learner.state_dict()
    for name, arrays in after_first.items():
        for a, b in zip(arrays, state[name][:2], strict=True):
            np.testing.assert_array_equal(a, b)
    s = seq.summary()["test"]
    assert s["forgetting"] == 0.0 and s["backward_transfer"] == 0.0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_resume_after_an_interrupted_task_repeats_an_unbroken_run(codes_file, tmp_path,
                                                                  strategy):
    data = load_data(codes_file)
    cfg = cfg_of(strategy=strategy, task_order="2,1,3,5,4")
    whole = run_sequence(cfg, data, tmp_path / "whole.pt")
    ckpt = tmp_path / "part.pt"
    run_sequence(cfg, data, ckpt, stop_after=2)
    assert torch.load(ckpt, weights_only=True)["tasks_done"] == 2
    resumed = run_sequence(cfg, data, ckpt, resume=True)

    def strip(seq):
        return [{k: v for k, v in h.items() if k != "train_seconds"} for h in seq.history]

    assert strip(resumed) == strip(whole)
    with pytest.raises(HybnnError, match="other settings \\(task_order\\)"):
        run_sequence(cfg_of(strategy=strategy), data, ckpt, resume=True)


# ── the command ───────────────────────────────────────────────────────────────────────────────
# `run` and `one_line_error` are tests/test_continual.py's


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bad_values_give_one_line_errors(codes_file, tmp_path, strategy):
    base = ["continual", "--codes", codes_file, "--strategy", strategy, "--threads", 1,
            "--out", tmp_path]
    one_line_error(run(*base, "--components", 0), "--components must be at least 1, got 0")
    # the smallest class of the training split (after the validation slice) has fewer codes
    counts = np.bincount(load_data(codes_file).train.labels)
    fewest, c = int(counts.min()), int(counts.argmin())
    one_line_error(run(*base, "--components", counts.max() + 1),
                   f"--components {counts.max() + 1} is more than the {fewest} training codes "
                   f"of class {c}; use at most {fewest}")
    for order in ("1,2,3,4", "1,2,2,4,5", "1,2,3,4,6", "a,b", "1,2,3,4,5,6"):
        one_line_error(run(*base, "--task-order", order),
                       f"--task-order '{order}' is not a permutation of the tasks 1 to")
    assert not list(tmp_path.iterdir())  # refused before anything ran


@pytest.mark.parametrize("scenario", ["class", "task"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cli_runs_with_json_and_resumes(codes_file, tmp_path, strategy, scenario):
    args = ["continual", "--codes", codes_file, "--scenario", scenario, "--strategy", strategy,
            "--components", 4, "--threads", 1, "--seeds", "0,1", "--task-order", "5,4,3,2,1",
            "--out", tmp_path, "--json"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["config"]["task_order"] == "5,4,3,2,1" and res["config"]["components"] == 4
    assert [r["seed"] for r in res["runs"]] == [0, 1]
    assert [h["classes"] for h in res["runs"][0]["history"]][0] == [8, 9]
    per_class = 4 * (4 * (1 + N_BITS)) if strategy == "mixture" else 4 * (N_BITS // 8)
    assert res["memory_bytes"] == 10 * per_class
    assert len(res["test"]["seen_acc_curve"]) == 5
    assert res["test"]["forgetting"]["mean"] == 0.0
    assert res["test"]["final_seen_acc"]["mean"] >= 0.75
    assert (tmp_path / f"{scenario}-{strategy}-seed1.pt").is_file()
    again = run(*args, "--resume")  # both seeds finished: nothing is refitted
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["runs"] == res["runs"]


def test_components_default_depends_on_the_strategy():
    assert ContinualConfig(strategy="mixture").components == 200
    assert ContinualConfig(strategy="prototype").components == 200
    assert ContinualConfig(strategy="generative").components == 50
    assert "task_order" not in ContinualConfig().to_dict()
