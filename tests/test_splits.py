"""The validation split: stratified, seeded, disjoint from the rest of the training split, and
the same images for codes and pixels."""

from __future__ import annotations

import numpy as np
import pytest

from hybnn_cli.data.splits import train_val_indices
from hybnn_cli.errors import HybnnError


def test_split_is_a_stratified_partition():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 10, size=7001)
    train, val = train_val_indices(labels, 0.1)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert len(np.intersect1d(train, val)) == 0
    for c in range(10):
        n = int((labels == c).sum())
        assert int((labels[val] == c).sum()) == round(0.1 * n)
    # seeded: the same call gives the same split; another seed another one
    assert np.array_equal(val, train_val_indices(labels, 0.1)[1])
    assert not np.array_equal(val, train_val_indices(labels, 0.1, seed=1)[1])


def test_zero_fraction_keeps_everything_and_bad_fractions_are_refused():
    labels = np.array([0, 1, 1, 0, 1])
    train, val = train_val_indices(labels, 0.0)
    assert train.tolist() == [0, 1, 2, 3, 4] and val.size == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(HybnnError, match="validation fraction"):
            train_val_indices(labels, bad)


def test_task_codes_hold_out_the_split_of_the_whole_training_set(tmp_path):
    """A task's validation codes are the task's samples among the indices the split holds out
    of the whole training split (so code i and image i land on the same side)."""
    from hybnn_cli.codes.store import read_codes
    from hybnn_cli.data.tasks import parse_task
    from hybnn_cli.data.tensors import codes_to_tensor
    from hybnn_cli.train.task_samples import load_task_codes
    from tests.fed_codes import make_codes

    codes = make_codes(tmp_path / "codes.h5")
    data = load_task_codes(codes, parse_task("3"), 0.2)
    c = read_codes(codes, "train")
    train_idx, val_idx = train_val_indices(c.labels, 0.2)
    for part, idx in (("train", train_idx), ("val", val_idx)):
        mine = idx[np.isin(c.labels[idx], [4, 5])]
        x, y = data[part]
        assert len(mine) > 0
        assert np.array_equal(x.numpy(), codes_to_tensor(c.codes[mine], 200).numpy())
        assert np.array_equal(y.numpy(), (c.labels[mine] == 5).astype(np.int64))
    assert len(data["test"][1]) == int(np.isin(read_codes(codes, "test").labels, [4, 5]).sum())
