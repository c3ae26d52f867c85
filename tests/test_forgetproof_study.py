"""The forget-proof study (`study.forgetproof_study`, `benchmarks/forgetproof.py`) on what its
end-to-end smoke test (test_study_plans.py) does not reach: the refusals (a changed plan, a
candidate record with a test number, anchors of another encoder), the choice of K on validation
with its tie-break, the jobs the plan makes, and the generated blocks on a small fake result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import ENV, found_test_keys, load_plan
from hybnn_cli.study import docgen, forgetproof_study
from hybnn_cli.study.provenance import write_result
from tests.fed_codes import make_codes

ROOT = Path(__file__).resolve().parents[1]
PLAN = {
    "encoders": ["a"], "common": ["--threads", "1"], "strategies": ["mixture", "prototype"],
    "tuning_scenario": "class", "tuning_seeds": [0],
    "candidates": {"K5": ["--components", "5"], "K1": ["--components", "1"],
                   "K10": ["--components", "10"]},
    "rule": "highest validation accuracy", "tie_break": ["fewer parameters", "earlier"],
    "seeds": [0, 1], "scenarios": ["class", "task"],
    "order_invariance": {"scenario": "class", "task_order": "3,1,5,2,4", "seeds": [0, 1]},
    "anchors": {"strategies": ["none", "replay", "generative", "joint"]},
}


def make_study(tmp_path, plan: dict = PLAN, **kw) -> forgetproof_study.ForgetproofStudy:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return forgetproof_study.ForgetproofStudy(load_plan(path, draft=True), {"a": "a.h5"},
                                              tmp_path / "work", tmp_path / "out.json", ["x"],
                                              **kw)


def test_a_changed_plan_is_refused_once_a_result_exists(tmp_path):
    study = make_study(tmp_path)
    study.save()  # a result file made under the plan
    make_study(tmp_path)  # the same plan: fine
    with pytest.raises(HybnnError, match="made under another version of"):
        make_study(tmp_path, {**PLAN, "seeds": [0, 1, 2]})
    # from the script: that message alone, exit code 1, no traceback
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "forgetproof.py"), "--codes",
                        "a=a.h5", "--plan", str(tmp_path / "plan.json"), "--draft", "--out",
                        str(tmp_path / "out.json"), "--no-anchors"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert "was made under another version of" in line


def test_the_plans_encoders_are_required(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    with pytest.raises(HybnnError, match="give --codes NAME=PATH for each of them"):
        forgetproof_study.ForgetproofStudy(load_plan(path, draft=True), {"b": "b.h5"}, tmp_path,
                                           tmp_path / "out.json", ["x"])


def answer(val: float, test: bool = False) -> dict:
    """A `hybnn continual --json` answer in miniature (one seed)."""
    m = {"final_seen_acc": {"mean": val, "std": 0.0, "values": [val]}}
    run = {"seed": 0, "val": m, "train_seconds": 1.0, "memory_bytes": 10,
           "history": [{"val": {"per_task": [val] * 5}}]}
    res = {"config": {"components": 1, "seeds": [0]}, "tasks": [[0, 1], [2, 3], [4, 5], [6, 7],
                                                                [8, 9]],
           "memory_bytes": 10, "train_seconds": {"mean": 1.0}, "val": m, "runs": [run]}
    if test:
        res["test"] = m
    return res


def test_candidates_run_sealed_and_a_record_with_a_test_number_is_refused(tmp_path,
                                                                          monkeypatch):
    study = make_study(tmp_path)
    envs = []

    def fake_run(cmd, env, with_test=False):
        envs.append(env)
        return answer(0.9, test=with_test), {"wall_seconds": 1.0}

    monkeypatch.setattr(forgetproof_study.continual_study, "run_hybnn", fake_run)
    key, cmd = study.tuning_jobs()[0]
    study.tune_one(key, cmd)
    assert envs[-1][ENV] == "1"  # the candidate ran sealed
    assert found_test_keys(study.body["tuning"]) == [] and key in study.body["tuning"]
    monkeypatch.setattr(forgetproof_study.continual_study, "run_hybnn",
                        lambda cmd, env: fake_run(cmd, env, with_test=True))
    key2, cmd2 = study.tuning_jobs()[1]
    with pytest.raises(HybnnError, match="holds test numbers"):
        study.tune_one(key2, cmd2)
    assert key2 not in study.body["tuning"]


def test_k_is_chosen_on_validation_and_a_tie_goes_to_fewer_parameters(tmp_path):
    study = make_study(tmp_path)
    vals = {"mixture": {"K5": 0.93, "K1": 0.90, "K10": 0.95},
            "prototype": {"K5": 0.91, "K1": 0.85, "K10": 0.91}}  # a tie: K5 has fewer
    for strategy, by_k in vals.items():
        for name, v in by_k.items():
            study.body["tuning"][f"a/{strategy}/{name}"] = answer(v)
    study.choose_k()
    assert study.chosen["a/mixture"]["components"] == 10
    assert study.chosen["a/prototype"]["name"] == "K5"
    assert study.chosen["a/prototype"]["tied"] == ["K5", "K10"]
    assert study.body["chosen"]["rule"] == PLAN["rule"]
    # a record that holds a test number is not chosen from
    study.body["tuning"]["a/mixture/K1"] = answer(0.99, test=True)
    with pytest.raises(HybnnError, match="holds test numbers"):
        study.choose_k()


def test_the_study_runs_both_scenarios_and_the_shuffled_order_at_the_chosen_k(tmp_path):
    study = make_study(tmp_path)
    study.chosen = {"a/mixture": {"options": ["--components", "10"]},
                    "a/prototype": {"options": ["--components", "5"]}}
    jobs = {(section, key): cmd for section, key, cmd in study.study_jobs("a")}
    assert list(jobs) == [("runs", "a/class/mixture"), ("runs", "a/class/prototype"),
                          ("runs", "a/task/mixture"), ("runs", "a/task/prototype"),
                          ("shuffled", "a/class/mixture"), ("shuffled", "a/class/prototype")]
    cmd = jobs[("shuffled", "a/class/prototype")]
    assert cmd[cmd.index("--components") + 1] == "5"
    assert cmd[cmd.index("--task-order") + 1] == "3,1,5,2,4"
    assert cmd[cmd.index("--seeds") + 1] == "0,1" and cmd[-2:] == ["--resume", "--json"]
    assert "--task-order" not in jobs[("runs", "a/task/prototype")]
    assert "--task-order" not in study.tuning_jobs()[0][1]


def test_anchors_must_come_from_codes_of_the_same_encoder(tmp_path):
    codes = make_codes(tmp_path / "codes.h5", n_train=100, n_test=20)
    run = {"memory_bytes": 52000, "train_seconds": {"mean": 60.0}, "command": "hybnn continual",
           **{s: {m: {"mean": 0.9, "std": 0.01, "values": [0.9]}
                  for m in forgetproof_study.ANCHOR_METRICS} for s in ("val", "test")}}
    anchors = tmp_path / "continual.json"
    runs = {"a/class/replay": {**run, "encoder_sha256": "ab" * 32},
            "b/class/replay": {**run, "encoder_sha256": "cd" * 32}}  # another encoder's name
    write_result(anchors, "hybnn-continual-benchmark", 3, {"runs": runs, "encoders": {}})
    got = forgetproof_study.read_anchors(anchors, {"a": str(codes)}, ["replay", "joint"])
    assert list(got["runs"]) == ["a/class/replay"] and len(got["sha256"]) == 64
    runs["a/class/replay"]["encoder_sha256"] = "cd" * 32
    write_result(anchors, "hybnn-continual-benchmark", 3, {"runs": runs, "encoders": {}})
    with pytest.raises(HybnnError, match="codes of another encoder"):
        forgetproof_study.read_anchors(anchors, {"a": str(codes)}, ["replay"])


def ms(mean: float, std: float = 0.0, n: int = 2) -> dict:
    return {"mean": mean, "std": std, "values": [mean] * n}


def fake_run(acc: float, memory: int, k: int, order: str | None = None) -> dict:
    tasks = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    if order:
        tasks = [tasks[int(t) - 1] for t in order.split(",")]
    finals = [[0.99, 0.98, 0.97, 0.96, 0.95]] * 2
    return {"config": {"components": k, **({"task_order": order} if order else {})},
            "memory_bytes": memory, "train_seconds": ms(1.5),
            "val": {m: ms(acc - 0.01) for m in ("final_seen_acc", "average_acc")},
            "test": {"final_seen_acc": ms(acc, 0.001), "average_acc": ms(acc),
                     "forgetting": ms(0.02)},
            "runs": [{"seed": s, "val": {"final_seen_acc": acc - 0.01},
                      "test": {"final_seen_acc": acc}} for s in (0, 1)],
            "tasks": tasks, "per_task_final": {"test": finals}}


@pytest.fixture
def fake_result(tmp_path) -> Path:
    """A small result file: one encoder, mixture only, the class scenario, two candidates."""
    body = {
        "plan": {"path": "plan.json", "sha256": "0" * 64, "committed_in": "f" * 40,
                 "draft": False, "rule": "highest validation accuracy",
                 "tie_break": ["fewer parameters"]},
        "seeds": [0, 1], "scenarios": ["class"], "strategies": ["mixture"],
        "candidates": {"K1": 1, "K10": 10}, "tuning_scenario": "class", "tuning_seeds": [0],
        "encoders": {"e": {"codes": "e.h5", "study_wall_seconds": 120.0, "jobs": 1,
                           "load_average_start": [4.0], "load_average_end": [5.0]}},
        "tuning": {"e/mixture/K1": {"memory_bytes": 8040, "train_seconds": ms(0.5, n=1),
                                    "val": {"final_seen_acc": ms(0.89, n=1)}},
                   "e/mixture/K10": {"memory_bytes": 80400, "train_seconds": ms(2.0, n=1),
                                     "val": {"final_seen_acc": ms(0.94, n=1)}}},
        "chosen": {"e/mixture": {"name": "K10", "components": 10}, "rule": "r",
                   "tie_break": ["t"]},
        "runs": {"e/class/mixture": fake_run(0.95, 80400, 10)},
        "shuffled": {"e/class/mixture": fake_run(0.95, 80400, 10, "3,1,5,2,4")},
        "anchors": {"file": "benchmarks/results/continual.json", "commit": "c" * 40,
                    "runs": {"e/class/joint": {
                        "memory_bytes": 1404026, "train_seconds": ms(40.0),
                        "val": {"final_seen_acc": {"mean": 0.96, "std": 0.0,
                                                   "values": [0.961, 0.959]}},
                        "test": {m: ms(0.965, 0.001) for m in forgetproof_study.ANCHOR_METRICS}}}},
    }
    body["order_invariance"] = forgetproof_study.order_invariance(body)
    write_result(tmp_path / "forgetproof.json", forgetproof_study.FORMAT,
                 forgetproof_study.VERSION, body, argv=["python", "benchmarks/forgetproof.py"])
    return tmp_path


def render(block: str, results_dir: Path) -> str:
    return docgen.render_text(f"<!-- generated: {block} -->\n<!-- /generated -->\n", results_dir)


def test_the_table_block_puts_the_chosen_k_beside_the_anchors(fake_result):
    text = render("forgetproof-table", fake_result)
    assert ("| e | class | mixture, K = 10 | measured here | 80.4 kB | 95.00 ± 0.10 | +1.50 | "
            "2.00 ± 0.00 | 99.0 / 98.0 / 97.0 / 96.0 / 95.0 | 1.5 |") in text
    assert ("| e | class | joint (upper bound) | continual.json | 1,404.0 kB | 96.50 ± 0.10 | "
            "+0.00 | 96.50 ± 0.10 | – | 40.0 |") in text
    assert "with one run at a time, load average 4.0 at the start and 5.0 at the end" in text
    assert "the chosen K is the largest the plan lists" in text  # K10 of K1, K10
    assert "`benchmarks/plans/" not in text and "`plan.json`, committed in `ffffffffffff`" in text
    assert "*From `benchmarks/results/forgetproof.json`" in text


def test_the_curve_block_shows_validation_only_against_joint_on_the_same_seed(fake_result):
    text = render("forgetproof-curve", fake_result)
    assert "| e | mixture | 1 | 8.0 kB | 89.00 | +7.10 | 0.5 |  |" in text  # 96.1 − 89.0
    assert "| e | mixture | 10 | 80.4 kB | 94.00 | +2.10 | 2.0 | chosen |" in text
    assert "the test split plays no part" in text


def test_the_order_block_and_the_headline_row(fake_result):
    text = render("forgetproof-order", fake_result)
    assert ("| e | class | mixture | `3,1,5,2,4` | 0, 1 | 95.00, 95.00 | 95.00, 95.00 | 0.00 | "
            "0.00 |") in text
    what, figure, cell = forgetproof_study.headline_row(fake_result)
    assert figure == ("`e` encoder: mixture (K = 10, 80.4 kB) 95.00 ± 0.10, joint 96.50 ± 0.10 "
                      "(1,404.0 kB)")
    assert "seeds 0, 1" in what and "forgetproof.json" in cell


def test_the_per_task_cell_goes_by_task_number_whatever_the_order_learned():
    run = fake_run(0.9, 1, 1, "3,1,5,2,4")  # finals in learned order: task 3 first
    assert forgetproof_study._per_task(run) == "98.0 / 96.0 / 99.0 / 95.0 / 97.0"
