"""Tasks by class name on any codes file: train-bnn --classes and --task all over the classes
the file records, continual --tasks "a,b;c,d", fed on a file that is not ten-class MNIST; class
names reach checkpoints and deploy files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hybnn_kernels import load_deploy, pack_bits

from hybnn_cli.codes.store import codes_writer
from hybnn_cli.continual.settings import task_sequence
from hybnn_cli.data.tasks import parse_task
from hybnn_cli.errors import HybnnError
from hybnn_cli.models import checkpoint as ck
from tests.conftest import one_line_error, run

NAMES = ["ant", "bee", "cat", "dog", "eel", "fox"]
N_BITS = 64



def named_codes(path: Path, names=NAMES, n_train=1200, n_test=300, seed=0,
                record_names=True) -> Path:
    """Codes of len(names) classes (a noisy prototype per class), recorded as data from files."""
    rng = np.random.default_rng(seed)
    protos = rng.random((len(names), N_BITS)) < 0.5
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % len(names)).astype(np.uint8)
        bits = protos[labels] ^ (rng.random((n, N_BITS)) < 0.1)
        splits[split] = (pack_bits(bits), labels)
    data = {"dataset": "files:animals", "class_names": list(names), "dataset_sha256": "cd" * 32}
    if not record_names:
        data["class_names"] = [str(i) for i in range(len(names))]
    with codes_writer(path, N_BITS, {s: len(v[1]) for s, v in splits.items()}, "files:animals",
                      "ab" * 32, {"generated": "tests/test_class_tasks.py"}, seed,
                      data=data) as write:
        for split, (codes, labels) in splits.items():
            write(split, 0, codes, labels)
    return path


@pytest.fixture(scope="module")
def codes(tmp_path_factory) -> Path:
    return named_codes(tmp_path_factory.mktemp("named") / "codes.h5")


def test_parse_task_by_name_index_and_all():
    t = parse_task(classes="dog,ant", names=NAMES)
    assert t.classes == (3, 0) and t.class_names == ("dog", "ant") and t.name == "classes-dog-ant"
    assert parse_task("cat,bee", names=NAMES).classes == (2, 1)  # --task takes classes too
    assert parse_task(classes="5,1", names=NAMES).class_names == ("fox", "bee")  # by index
    assert parse_task("all", names=NAMES).classes == tuple(range(6))
    assert parse_task("all").classes == tuple(range(10))  # no names: MNIST's ten
    assert parse_task("3", names=NAMES).class_names == ("eel", "fox")
    with pytest.raises(HybnnError, match="task 4 separates classes 6 and 7, but the data has 6"):
        parse_task("4", names=NAMES)
    with pytest.raises(HybnnError, match="unknown class 'cow'; the classes are ant, bee"):
        parse_task(classes="ant,cow", names=NAMES)
    with pytest.raises(HybnnError, match="at least 2 different classes"):
        parse_task(classes="ant,ant", names=NAMES)
    with pytest.raises(HybnnError, match="either --digits or --classes"):
        parse_task(digits="1,2", classes="ant,bee", names=NAMES)
    with pytest.raises(HybnnError, match="must be in 0..5"):
        parse_task(digits="1,7", names=NAMES)


def test_train_bnn_by_class_names_records_them_and_export_carries_them(codes, tmp_path):
    out = tmp_path / "bnn.pt"
    r = run("train-bnn", "--codes", codes, "--classes", "fox,bee,cat", "--epochs", 2,
            "--out", out)
    assert r.exit_code == 0, r.output
    assert "classes-fox-bee-cat (fox vs bee vs cat)" in r.stdout
    _, ckpt = ck.load_bnn(out)
    assert ckpt["task"] == {"name": "classes-fox-bee-cat", "classes": [5, 1, 2],
                            "class_names": ["fox", "bee", "cat"]}
    assert ckpt["shape"]["n_classes"] == 3 and ckpt["data"]["class_names"] == NAMES
    r = run("export", out, "--out", tmp_path / "bnn.h5", "--check", codes, "--json")
    assert r.exit_code == 0, r.output
    assert load_deploy(tmp_path / "bnn.h5").meta["task"]["class_names"] == ["fox", "bee", "cat"]
    r = run("evaluate", out, "--codes", codes, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["acc"] > 0.9, r.output


def test_task_all_takes_every_class_of_the_codes(codes, tmp_path):
    r = run("train-bnn", "--codes", codes, "--task", "all", "--epochs", 1, "--out",
            tmp_path / "all.pt")
    assert r.exit_code == 0, r.output
    _, ckpt = ck.load_bnn(tmp_path / "all.pt")
    assert ckpt["shape"]["n_classes"] == 6 and ckpt["task"]["class_names"] == NAMES


def test_train_bnn_refuses_unknown_classes_with_one_line(codes, tmp_path):
    one_line_error(run("train-bnn", "--codes", codes, "--classes", "ant,cow"),
                   "unknown class 'cow'")
    one_line_error(run("train-bnn", "--codes", codes, "--task", "5"), "the data has 6 classes")
    one_line_error(run("train-bnn", "--codes", codes, "--classes", "ant"),
                   "at least 2 different classes")


def test_task_sequence_parsing():
    assert task_sequence("ant,bee;cat;dog,eel,fox", NAMES, 6) == [(0, 1), (2,), (3, 4, 5)]
    assert task_sequence(None, NAMES, 6) == [(0, 1), (2, 3), (4, 5)]
    assert task_sequence("0,1;2", None, 3) == [(0, 1), (2,)]
    with pytest.raises(HybnnError, match="class 'ant' is in task 1 and task 2"):
        task_sequence("ant,bee;ant", NAMES, 6)
    with pytest.raises(HybnnError, match="at least two tasks"):
        task_sequence("ant,bee", NAMES, 6)
    with pytest.raises(HybnnError, match="give the tasks with --tasks"):
        task_sequence(None, NAMES[:3], 3)


def test_continual_takes_any_task_sequence(codes, tmp_path):
    r = run("continual", "--codes", codes, "--tasks", "cat,dog,ant;bee;eel,fox",
            "--epochs-per-task", 1, "--hidden", 32, "--memory", 60, "--out", tmp_path / "c",
            "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["config"]["tasks"] == "cat,dog,ant;bee;eel,fox"
    assert [list(t) for t in result["tasks"]] == [[2, 3, 0], [1], [4, 5]]
    assert len(result["test"]["seen_acc_curve"]) == 3
    one_line_error(run("continual", "--codes", codes, "--tasks", "ant,bee;bee,cat",
                       "--out", tmp_path / "d"), "class 'bee' is in task 1 and task 2")
    odd = named_codes(tmp_path / "odd.h5", names=NAMES[:3])
    one_line_error(run("continual", "--codes", odd, "--out", tmp_path / "e"),
                   "give the tasks with --tasks")


def test_fed_runs_on_codes_that_are_not_mnist(codes, tmp_path):
    out = tmp_path / "fed.pt"
    r = run("fed", "--codes", codes, "--task", "all", "--clients", 2, "--rounds", 1,
            "--local-epochs", 1, "--hidden", 32, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    _, ckpt = ck.load_bnn(out)
    assert ckpt["shape"]["n_classes"] == 6 and ckpt["task"]["class_names"] == NAMES
    r = run("fed", "--codes", codes, "--task", "fox,ant", "--clients", 2, "--rounds", 1,
            "--local-epochs", 1, "--hidden", 32, "--out", tmp_path / "pair.pt", "--json")
    assert r.exit_code == 0, r.output
    assert ck.load_bnn(tmp_path / "pair.pt")[1]["task"]["classes"] == [5, 0]
