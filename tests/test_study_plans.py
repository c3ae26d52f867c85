"""The studies that choose settings run end to end on tiny settings under a draft plan: their
candidates run sealed and their records hold no test number, the chosen setting alone reads
test, and a result file refuses a changed plan."""

from __future__ import annotations

import json

import pytest

from hybnn_cli.sealed import found_test_keys
from hybnn_cli.study.provenance import read_result
from tests.benchmark_scripts import load_benchmark
from tests.fed_codes import make_codes

TINY_CONTINUAL = {
    "common": ["--memory", "100", "--components", "2", "--threads", "1", "--batch-size", "64",
               "--epochs-per-task", "1"],
    "tuning_encoder": "a", "tuning_seeds": [0],
    "candidates": {"replay": {"wide": ["--hidden", "32"], "narrow": ["--hidden", "16"]}},
    "rule": "highest validation accuracy", "tie_break": ["fewer parameters", "earlier"],
    "seeds": [0, 1], "scenarios": ["class"], "strategies": ["replay"],
}


@pytest.fixture(scope="module")
def codes(tmp_path_factory):
    return make_codes(tmp_path_factory.mktemp("plans") / "codes.h5", n_train=1000, n_test=200)


def test_continual_study_seals_its_candidates(codes, tmp_path):
    script = load_benchmark("continual")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(TINY_CONTINUAL))
    out = tmp_path / "continual.json"
    argv = ["--codes", f"a={codes}", "--plan", str(plan), "--draft", "--work",
            str(tmp_path / "work"), "--out", str(out), "--figure", str(tmp_path / "c.png"),
            "--jobs", "2"]
    script.main(argv)
    r = read_result(out, script.FORMAT)
    assert r["plan"]["draft"] is True and len(r["plan"]["sha256"]) == 64
    assert set(r["tuning"]) == {"replay/wide", "replay/narrow"}
    assert found_test_keys(r["tuning"]) == []  # sealed: no candidate holds a test number
    assert r["chosen"]["replay"]["name"] in ("wide", "narrow")
    assert set(r["runs"]) == {"a/class/replay"}
    for run in r["runs"].values():  # the study's runs read test, each seed once
        assert [x["seed"] for x in run["runs"]] == [0, 1] and "test" in run
        assert {"commit", "dirty", "started", "ended"} <= set(run["made"])
        assert len(run["made_per_seed"]) == 2
    assert (tmp_path / "c.png").is_file()
    # a rerun with the same plan finds everything done; a changed plan is refused
    script.main(argv)
    plan.write_text(json.dumps({**TINY_CONTINUAL, "seeds": [0, 1, 2]}))
    with pytest.raises(Exception, match="made under another version"):
        script.main(argv)


TINY_FEDTUNE = {
    "screen": {"task": "3", "clients": 6, "fraction": 0.5, "partition": "iid", "uplink": "float",
               "rounds": 2, "local_epochs": 1, "threads": 1},
    "screen_seeds": [0],
    "candidates": {"fedavg": "", "fedavgm": "--server-momentum 0.9"},
    "rule": "highest final validation accuracy", "tie_break": ["earlier"],
    "rows": ["task3/6/iid/float"], "alpha": 0.5, "seeds": [0, 1],
    "centralized": {"epochs": 2},
}


def test_fedtune_screens_sealed_then_reads_test_for_the_rows_only(codes, tmp_path):
    script = load_benchmark("fedtune")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(TINY_FEDTUNE))
    out = tmp_path / "fedtune.json"
    script.main(["--codes", str(codes), "--plan", str(plan), "--draft", "--out", str(out),
                 "--models", str(tmp_path / "models"), "--jobs", "2"])
    r = read_result(out, script.FORMAT)
    assert set(r["screen"]) == {"fedavg/seed0", "fedavgm/seed0"}
    assert found_test_keys(r["screen"]) == [] and found_test_keys(r["chosen"]) == []
    assert r["chosen"]["name"] in ("fedavg", "fedavgm")
    row = r["rows"]["task3/6/iid/float"]
    assert set(row["seeds"]) == {"0", "1"} and len(row["test_acc"]["values"]) == 2
    assert row["options"] == TINY_FEDTUNE["candidates"][r["chosen"]["name"]]
    central = r["centralized"]["task3"]
    assert set(central["seeds"]) == {"0", "1"} and central["epochs"] == 2
    assert row["gap_to_centralized"] == central["test_acc"]["mean"] - row["test_acc"]["mean"]
    assert row["target_met"] == (row["gap_to_centralized"] <= 0.01)
    # the docs render the file: the screen and the rows
    from hybnn_cli.study import docgen

    screen = docgen.RENDERERS["fedtune-screen"](tmp_path)
    assert f"**{r['chosen']['name']}**" in screen and "a draft plan" in screen
    rows = docgen.RENDERERS["fedtune-rows"](tmp_path)
    assert "| 3 | 6 | iid | float | 0, 1 |" in rows


TINY_FORGETPROOF = {
    "encoders": ["a"], "common": ["--threads", "1"], "strategies": ["mixture", "prototype"],
    "tuning_scenario": "class", "tuning_seeds": [0],
    "candidates": {"K2": ["--components", "2"], "K1": ["--components", "1"]},
    "rule": "highest validation accuracy", "tie_break": ["fewer parameters", "earlier"],
    "seeds": [0, 1], "scenarios": ["class", "task"],
    "order_invariance": {"scenario": "class", "task_order": "3,1,5,2,4", "seeds": [0, 1]},
    "anchors": {"strategies": ["none", "replay", "generative", "joint"]},
}


def test_forgetproof_study_seals_its_candidates_and_reads_test_at_the_chosen_k(codes, tmp_path):
    script = load_benchmark("forgetproof")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(TINY_FORGETPROOF))
    out = tmp_path / "forgetproof.json"
    argv = ["--codes", f"a={codes}", "--plan", str(plan), "--draft", "--work",
            str(tmp_path / "work"), "--out", str(out), "--no-anchors", "--jobs", "2"]
    script.main(argv)
    r = read_result(out, script.FORMAT)
    assert r["plan"]["draft"] is True and {"started", "ended", "machine"} <= set(r)
    assert set(r["tuning"]) == {f"a/{s}/{k}" for s in ("mixture", "prototype")
                                for k in ("K1", "K2")}
    assert found_test_keys(r["tuning"]) == []  # sealed: no candidate holds a test number
    for s in ("mixture", "prototype"):
        chosen = r["chosen"][f"a/{s}"]
        assert chosen["components"] == {"K1": 1, "K2": 2}[chosen["name"]]
        if len(chosen["tied"]) == 2:  # a tie goes to fewer parameters: K1, though listed last
            assert chosen["name"] == "K1"
    assert set(r["runs"]) == {f"a/{sc}/{s}" for sc in ("class", "task")
                              for s in ("mixture", "prototype")}
    for key, run in r["runs"].items():  # the study's runs read test, each seed once
        k = r["chosen"][key.split("/")[0] + "/" + key.split("/")[2]]["components"]
        assert run["config"]["components"] == k and [x["seed"] for x in run["runs"]] == [0, 1]
        assert "test" in run and len(run["made_per_seed"]) == 2
        assert len(run["per_task_final"]["test"]) == 2
    assert set(r["shuffled"]) == {"a/class/mixture", "a/class/prototype"}
    assert r["shuffled"]["a/class/mixture"]["tasks"][0] == [4, 5]  # task 3 learned first
    for row in r["order_invariance"].values():  # each class fitted alone: the order is moot
        assert row["splits"]["test"]["max_abs_difference"] == 0 and row["seeds"] == [0, 1]
    # a rerun with the same plan finds everything done; a changed plan is refused
    script.main(argv)
    assert read_result(out, script.FORMAT)["runs"] == r["runs"]
    plan.write_text(json.dumps({**TINY_FORGETPROOF, "seeds": [0, 1, 2]}))
    with pytest.raises(Exception, match="made under another version"):
        script.main(argv)
