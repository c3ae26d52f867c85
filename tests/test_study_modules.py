"""The study modules beneath the continual, reproduction and scaling scripts, on what the end-to-end
smoke tests (test_study_scripts.py, test_study_plans.py) do not reach: the jobs a plan makes,
the refusals (one line, exit code 1, from the scripts), the scaling model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import load_plan
from hybnn_cli.study import continual_study, ddp_scaling
from hybnn_cli.study.reproduction_work import first_seed_files

ROOT = Path(__file__).resolve().parents[1]
PLAN = {
    "common": ["--threads", "1", "--epochs-per-task", "1"],
    "tuning_encoder": "a", "tuning_seeds": [0],
    "candidates": {"replay": {"wide": ["--hidden", "32"], "narrow": ["--hidden", "16"]},
                   "task/none": {"slow": ["--lr", "0.001"]}},
    "rule": "highest validation accuracy", "tie_break": ["fewer parameters", "earlier"],
    "seeds": [0, 1], "scenarios": ["class", "task"], "strategies": ["none", "replay"],
}


@pytest.fixture
def study(tmp_path) -> continual_study.ContinualStudy:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    return continual_study.ContinualStudy(load_plan(path, draft=True), {"a": "a.h5", "b": "b.h5"},
                                          tmp_path / "work", tmp_path / "out.json", ["x"])


def test_tuning_runs_every_candidate_sealed_on_the_tuning_encoder(study, tmp_path):
    jobs = dict(study.tuning_jobs())
    assert set(jobs) == {"replay/wide", "replay/narrow", "task/none/slow"}
    cmd = jobs["task/none/slow"]
    assert cmd[:7] == ["continual", "--codes", "a.h5", "--scenario", "task", "--strategy", "none"]
    assert cmd[cmd.index("--lr") + 1] == "0.001" and cmd[cmd.index("--seeds") + 1] == "0"
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "work" / "tuning" / "task-none-slow")


def test_the_study_runs_each_strategy_with_its_groups_choice(study):
    study.chosen = {"replay": {"options": ["--hidden", "16"]},
                    "task/none": {"options": ["--lr", "0.001"]}}
    jobs = dict(study.study_jobs("b", "b.h5"))
    assert list(jobs) == ["b/class/none", "b/class/replay", "b/task/none", "b/task/replay"]
    assert "--lr" not in jobs["b/class/none"]  # no group for the class scenario's none
    assert jobs["b/task/none"][jobs["b/task/none"].index("--lr") + 1] == "0.001"
    for key in ("b/class/replay", "b/task/replay"):  # a strategy's group serves both scenarios
        assert continual_study.hidden_of(jobs[key]) == 16
    cmd = continual_study.with_seed(jobs["b/task/none"], "1")
    assert cmd[cmd.index("--seeds") + 1] == "1" and len(cmd) == len(jobs["b/task/none"])


def test_a_plan_is_refused_without_its_tuning_encoder(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    with pytest.raises(HybnnError, match="the plan tunes on the 'a' encoder"):
        continual_study.ContinualStudy(load_plan(plan, draft=True), {"b": "b.h5"}, tmp_path,
                                       tmp_path / "out.json", ["x"])
    # from the script: that message alone, exit code 1, no traceback
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "continual.py"), "--codes",
                        "b=b.h5", "--plan", str(plan), "--draft", "--out",
                        str(tmp_path / "out.json")], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "the plan tunes on the 'a' encoder: give --codes a=PATH"]


def test_first_seed_files_refuse_a_study_not_done(tmp_path):
    study = {"config": {"seeds": [3, 4]}, "vaes": [{"path": "v.pt"}], "codes": [None],
             "tasks": []}
    with pytest.raises(HybnnError, match="first VAE or its codes are not done"):
        first_seed_files(study, tmp_path)
    study["codes"] = [{"path": "c.h5"}]
    study["tasks"] = [{"task": "task1", "hybnn": {"runs": [{"seed": 4, "path": "b4.pt"},
                                                            {"seed": 3, "path": "b3.pt"}]}},
                      {"task": "task2", "hybnn": None}]
    with pytest.raises(HybnnError, match="task2 BNN is not done"):
        first_seed_files(study, tmp_path)
    study["tasks"].pop()
    assert first_seed_files(study, tmp_path) == {
        "vae.pt": tmp_path / "v.pt", "codes-mnist.h5": tmp_path / "c.h5",
        "bnn-task1.pt": tmp_path / "b3.pt"}  # the first seed's


def test_the_scaling_model_divides_compute_and_adds_the_ring_all_reduce():
    r = {"steps_per_epoch": 10, "gradient_bytes_per_step": 1.25e8,  # 1 s a step at 1 Gbit/s
         "runs": [{"label": "slow", "processes": 1, "epoch_seconds": [30.0]},
                  {"label": "fast", "processes": 1, "epoch_seconds": [25.0, 20.0]},
                  {"label": "two", "processes": 2, "epoch_seconds": [1.0]}]}
    compute, base, rows = ddp_scaling.scaling_model(r)
    assert (compute, base) == (2.0, "fast")  # the fastest one-process epoch over its steps
    assert rows[0] == [1, "20.0 s (1.0×)", "20.0 s (1.0×)"]  # one machine: no all-reduce
    # 2 machines at 1 Gbit/s: 10 · (2 / 2 + 2 · 1/2 · 1 s) = 20 s
    assert rows[1][0] == 2 and rows[1][1] == "20.0 s (1.0×)"
    assert rows[1][2] == "11.0 s (1.8×)"  # at 10 Gbit/s: 10 · (1 + 0.1)
