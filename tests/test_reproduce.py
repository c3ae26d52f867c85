"""`hybnn reproduce`, `hybnn report` and `hybnn baseline`: the study end to end on a small
configuration, the cache, the federated figure, and clear errors for bad inputs."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybnn_cli.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def _error(result) -> str:
    return " ".join((result.stderr or result.output).split())


@pytest.mark.parametrize("args, message", [
    (["baseline", "--binarize", "median"],
     "unknown --binarize 'median': use sign, threshold, none"),
    (["baseline", "--task", "9"], "unknown task '9': use 1..5"),
    (["reproduce", "--tasks", "1,7"], "unknown task '7': use 1..5"),
    (["reproduce", "--tasks", "all"], "--tasks takes digit-pair tasks 1..5"),
    (["reproduce", "--binarize", "sign,round"],
     "unknown --binarize 'round': use sign, threshold, none"),
    (["train-bnn", "--codes", "no/such/codes.h5", "--task", "1"],
     "no/such/codes.h5: no such codes file"),
    (["report", "--results", "no/such/reproduction.json"],
     "no/such/reproduction.json: no such results file; run `hybnn reproduce` first"),
])
def test_bad_inputs_get_one_line_errors(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert message in _error(result)
    assert "Traceback" not in result.output


def test_report_refuses_a_json_that_is_not_a_reproduction(tmp_path):
    p = tmp_path / "other.json"
    p.write_text(json.dumps({"format": "hybnn-bench"}))
    result = runner.invoke(app, ["report", "--results", str(p)])
    assert result.exit_code == 1
    assert "not a reproduction results file (format 'hybnn-bench'" in _error(result)


@pytest.mark.slow
def test_study_end_to_end_on_a_small_configuration(tmp_path, mnist_and_fashion_dir):
    work, out = tmp_path / "work", tmp_path / "results"
    args = ["reproduce", "--quick", "--limit", "300", "--tasks", "1,2", "--work", str(work),
            "--results-dir", str(out), "--threads", "1", "--data-dir", str(mnist_and_fashion_dir),
            "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    res = json.loads((out / "reproduction.json").read_text())
    assert printed["results"] == str(out / "reproduction.json")

    # structure: provenance, both tasks with HyBNN and three baselines, 10-class, sizes, fashion
    assert res["format"] == "hybnn-reproduction" and res["seed"] == 0
    assert res["config"]["limit"] == 300 and res["config"]["bnn_epochs"] == 2
    assert [t["task"] for t in res["tasks"]] == ["task1", "task2"]
    for t in res["tasks"]:
        assert len(t["hybnn"]["history"]) == 2
        assert set(t["baselines"]) == {"sign", "threshold", "none"}
        assert sum(t["test_class_counts"]) == t["n_test"]
        assert t["distinct_test_inputs"]["sign"] == 1
        sign = t["baselines"]["sign"]
        assert sorted(sign["predicted_class_counts"])[0] == 0  # the sign model never varies
        # so it scores exactly the share of the one class it predicts
        only = sign["predicted_class_counts"].index(t["n_test"])
        assert sign["test_acc"] == pytest.approx(t["test_class_counts"][only] / t["n_test"])
        for run in [t["hybnn"], *t["baselines"].values()]:
            # a whole number of the task's test samples, and the last epoch's figure
            correct = run["test_acc"] * t["n_test"]
            assert correct == pytest.approx(round(correct), abs=1e-6)
            assert run["test_acc"] == run["history"][-1]["test_acc"]
            assert run["time_to_99"]["seconds"] <= run["train_epoch_seconds"] + 1e-9
    assert res["ten_class"]["n_test"] == 300
    assert res["model_sizes"]["binary_cnn"]["total"]["binary_params"] > 0
    pairs = res["fashion"]["pairs"]
    assert len(pairs) == 5 and all({"mnist_vae", "fashion_vae", "threshold"} <= set(p)
                                   for p in pairs)
    assert res["fashion"]["codes"]["mnist_vae"]["encoder_sha256"] == res["vae"]["encoder_sha256"]
    assert res["fashion"]["vae"]["encoder_sha256"] != res["vae"]["encoder_sha256"]

    # plots and table written; no federated results here, so no Figure 7
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {"reproduction-fig4-accuracy.png", "reproduction-fig5-loss.png",
                    "reproduction-fig6-accuracy.png", "reproduction-cost.png",
                    "reproduction-fashion.png"}
    assert all((out / p).read_bytes()[:8] == PNG for p in pngs)
    md = (out / "reproduction.md").read_text()
    assert "| task1 | 0 vs 1 |" in md and "Command: `hybnn reproduce" in md

    # a rerun reuses every stage
    again = runner.invoke(app, args[:-1])
    assert again.exit_code == 0, again.output
    assert " done " not in again.output.replace("\n", " ")
    assert again.output.count("reused") >= 20

    # --cached-only trains nothing: stages of another config are listed as missing
    part = tmp_path / "partial"
    res2 = runner.invoke(app, args[:-1] + ["--cached-only", "--baseline-epochs", "2",
                                           "--results-dir", str(part)])
    assert res2.exit_code == 0, res2.output
    partial = json.loads((part / "reproduction.json").read_text())
    assert len(partial["missing"]) == 2 * 3 + 5  # the CNNs of 2 tasks and of 5 Fashion pairs
    assert partial["tasks"][0]["baselines"]["sign"] is None
    assert partial["tasks"][0]["hybnn"]["test_acc"] == res["tasks"][0]["hybnn"]["test_acc"]
    assert "not done when these results were gathered" in (part / "reproduction.md").read_text()

    # report redraws from the JSON alone, and adds Figure 7 once federated results exist
    for p in out.glob("*.png"):
        p.unlink()
    (out / "federated.json").write_text(json.dumps(
        {"runs": [{"label": "4 clients", "rounds": [{"round": 1, "test_acc": 0.6},
                                                    {"round": 2, "test_acc": 0.8}]}]}))
    rep = runner.invoke(app, ["report", "--results", str(out / "reproduction.json"), "--json"])
    assert rep.exit_code == 0, rep.output
    written = json.loads(rep.stdout)
    assert Path(written["Figure 7: federated accuracy per round"]).read_bytes()[:8] == PNG
    assert len(list(out.glob("*.png"))) == 6


def test_a_stage_locked_by_a_live_process_is_not_run_twice(tmp_path):
    import subprocess
    import sys

    from hybnn_cli.reproduce import Reporter, StageBusy, StageCache

    cache = StageCache(tmp_path, Reporter())
    key = {"stage": "demo", "seed": 0}
    art = cache.path("demo", key, ".txt")
    calls = []

    def make(path):
        path.write_text("x")
        calls.append(path)
        return {"value": 1}

    lock = art.with_name(art.name + ".lock")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(str(sleeper.pid))
        with pytest.raises(StageBusy, match=f"being made by process {sleeper.pid}"):
            cache.run("demo", key, ".txt", "demo", make, str)
        assert calls == []
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is gone: the lock is taken over, the stage runs once, then it is reused
    assert cache.run("demo", key, ".txt", "demo", make, str) == {"value": 1}
    assert cache.run("demo", key, ".txt", "demo", make, str) == {"value": 1}
    assert len(calls) == 1 and not lock.exists()


def test_federated_curves_read_the_benchmark_files_accuracy_curve():
    from hybnn_cli.report import federated_curves

    curves = federated_curves({"variant": "iid", "runs": {"task1": {"accuracy_curve": [0.5, 0.75],
                                                                    "test_acc": 0.75}}},
                              "federated-iid")
    assert curves == [{"label": "federated-iid runs task1", "rounds": [1, 2], "acc": [0.5, 0.75]}]
