"""The sealed test split (`hybnn_cli.sealed`): a sealed process cannot read test, the candidate
runs of the continual and federated studies hold no test number, and plans are committed, kept
unchanged, and applied with their tie-break."""

from __future__ import annotations

import json
import subprocess

import pytest
from typer.testing import CliRunner

from hybnn_cli import sealed
from hybnn_cli.cli import app
from hybnn_cli.codes.store import read_codes
from hybnn_cli.data.datasets import load_split
from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.inprocess import run_inprocess
from tests.fed_codes import make_codes, small


@pytest.fixture(scope="module")
def codes(tmp_path_factory):
    return make_codes(tmp_path_factory.mktemp("sealed") / "codes.h5", n_train=1200, n_test=300)


@pytest.fixture
def seal(monkeypatch):
    monkeypatch.setenv(sealed.ENV, "1")


def test_a_sealed_process_cannot_read_test(codes, seal):
    assert len(read_codes(codes, "train").labels) == 1200
    with pytest.raises(sealed.TestSealed, match="test split is sealed"):
        read_codes(codes, "test")
    with pytest.raises(sealed.TestSealed):
        load_split("mnist", "test", data_dir="/nonexistent")  # refused before any file is read


def test_unsealed_reads_test(codes, monkeypatch):
    monkeypatch.delenv(sealed.ENV, raising=False)
    assert len(read_codes(codes, "test").labels) == 300
    monkeypatch.setenv(sealed.ENV, "0")
    assert not sealed.sealed()


def test_sealed_continual_run_reports_validation_only(codes, seal, tmp_path):
    res = CliRunner().invoke(app, [
        "continual", "--codes", str(codes), "--scenario", "class", "--strategy", "replay",
        "--memory", "100", "--epochs-per-task", "1", "--batch-size", "32", "--hidden", "32",
        "--threads", "1", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert "val" in record and sealed.found_test_keys(record) == []
    assert sealed.found_test_keys(json.loads((tmp_path / "class-replay.json").read_text())) == []


def test_sealed_federated_run_reports_validation_only(codes, seal):
    res = run_inprocess(small(codes, rounds=2))
    assert len(res["val_curve"]) == 2
    assert sealed.found_test_keys(res) == []


def test_test_keys_finds_nested_test_numbers():
    record = {"a": [{"x": 1}, {"test_acc": 0.9}], "val": 1}
    assert sealed.found_test_keys(record) == ["/a[1]/test_acc"]
    with pytest.raises(HybnnError, match="holds test numbers"):
        sealed.assert_no_test({"runs": [{"test": {}}]}, "c1")


# ── plans ─────────────────────────────────────────────────────────────────────────────────────
PLAN = {"candidates": {"a": [], "b": ["--hidden", "64"], "c": ["--hidden", "32"]},
        "rule": "highest validation accuracy", "seeds": [0],
        "tie_break": ["fewer parameters", "earlier in the list"]}


def test_choose_breaks_ties_by_size_then_list_order():
    recs = {"a": {"val": 0.9}, "b": {"val": 0.95}, "c": {"val": 0.95}}
    order = list(PLAN["candidates"])
    size = {"a": 128, "b": 64, "c": 32}.get
    got = sealed.choose(recs, order, lambda r: r["val"], size)
    assert got == {"name": "c", "score": 0.95, "tied": ["b", "c"]}
    assert sealed.choose(recs, order, lambda r: r["val"])["name"] == "b"  # list order alone


def test_choose_refuses_test_numbers_and_missing_candidates():
    with pytest.raises(HybnnError, match="candidate b: its record holds test numbers"):
        sealed.choose({"a": {"val": 1}, "b": {"val": 1, "test": 1}}, ["a", "b"], lambda r: r["val"])
    with pytest.raises(HybnnError, match="every candidate has run: b"):
        sealed.choose({"a": {"val": 1}}, ["a", "b"], lambda r: r["val"])


def git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def test_a_plan_runs_only_as_committed(tmp_path):
    git(tmp_path, "init", "-q")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    with pytest.raises(HybnnError, match="not committed"):
        sealed.load_plan(plan)  # untracked
    assert sealed.load_plan(plan, draft=True).commit is None
    git(tmp_path, "add", "plan.json")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "plan")
    p = sealed.load_plan(plan)
    assert p.commit and len(p.commit) == 40 and p.record()["draft"] is False
    plan.write_text(json.dumps({**PLAN, "seeds": [0, 1]}))
    with pytest.raises(HybnnError, match="not committed"):
        sealed.load_plan(plan)  # changed since its commit


def test_a_plan_with_results_does_not_change(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    p = sealed.load_plan(plan, draft=True)
    sealed.check_same_plan({"plan": p.record()}, p, "r.json")  # the same plan: fine
    sealed.check_same_plan({}, p, "r.json")  # a new result file: fine
    plan.write_text(json.dumps({**PLAN, "rule": "lowest loss"}))
    q = sealed.load_plan(plan, draft=True)
    with pytest.raises(HybnnError, match="made under another version"):
        sealed.check_same_plan({"plan": p.record()}, q, "r.json")


def test_a_plan_names_its_rule(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({k: v for k, v in PLAN.items() if k != "tie_break"}))
    with pytest.raises(HybnnError, match="names its 'tie_break'"):
        sealed.load_plan(plan, draft=True)
