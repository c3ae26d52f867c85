"""`hybnn reproduce`, `hybnn report` and `hybnn baseline`: the study end to end on a small
configuration, the cache, the federated figure, and clear errors for bad inputs."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybnn_cli.cli import app
from hybnn_cli.errors import HybnnError

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def _error(result) -> str:
    return " ".join((result.stderr or result.output).split())


@pytest.mark.parametrize("args, message", [
    (["baseline", "--binarize", "median"],
     "unknown input binarization 'median': use sign, threshold, none"),
    (["baseline", "--task", "9"], "unknown task '9': use 1..5"),
    (["reproduce", "--tasks", "1,7"], "unknown task '7': use 1..5"),
    (["reproduce", "--tasks", "all"], "--tasks takes digit-pair tasks 1..5"),
    (["reproduce", "--binarize", "sign,round"],
     "unknown input binarization 'round': use sign, threshold, none"),
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
    import statistics

    work, out = tmp_path / "work", tmp_path / "results"
    args = ["reproduce", "--quick", "--limit", "300", "--tasks", "1", "--work", str(work),
            "--results-dir", str(out), "--threads", "1", "--data-dir", str(mnist_and_fashion_dir),
            "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    res = json.loads((out / "reproduction.json").read_text())
    assert printed["results"] == str(out / "reproduction.json")

    # provenance header and config
    assert res["format"] == "hybnn-reproduction" and len(res["commit"] or "x" * 40) == 40
    assert res["config"]["seeds"] == [0, 1] and res["config"]["limit"] == 300
    assert len({v["encoder_sha256"] for v in res["vaes"]}) == 2  # one VAE per seed
    [t] = res["tasks"]
    assert t["task"] == "task1" and set(t["baselines"]) == {"sign", "threshold", "none"}
    assert sum(t["test_class_counts"]) == t["n_test"]
    assert t["distinct_test_inputs"]["sign"] == 1
    sign = t["baselines"]["sign"]
    assert sorted(sign["predicted_class_counts"])[0] == 0  # the sign model never varies
    # so it scores exactly the share of the one class it predicts
    only = sign["predicted_class_counts"].index(t["n_test"])
    assert sign["runs"][0]["test_acc"] == pytest.approx(t["test_class_counts"][only] / t["n_test"])
    for entry in [t["hybnn"], *t["baselines"].values(), res["ten_class"]]:
        # the chosen setting is the best on validation; the test split only for the seeds' runs
        best = max(entry["tuning"], key=lambda c: c["val_acc"])
        assert all(best[k] == v for k, v in entry["chosen"].items())
        assert [r["seed"] for r in entry["runs"]] == [0, 1]
        assert entry["runs"][0]["val_acc"] == best["val_acc"]
        accs = [r["test_acc"] for r in entry["runs"]]
        assert entry["test_acc"] == pytest.approx(statistics.fmean(accs))
        assert entry["test_acc_std"] == pytest.approx(statistics.stdev(accs))
        assert "test_acc" not in entry["history"][-1]  # epochs report validation only
        for r in entry["runs"]:  # a whole number of the test samples
            correct = r["test_acc"] * entry["n_test"]
            assert correct == pytest.approx(round(correct), abs=1e-6)
        assert entry["time_to_99"]["seconds"] <= entry["train_epoch_seconds"] + 1e-9
    # a reported test accuracy is the checkpoint's own, recomputed by `hybnn evaluate`
    run = t["hybnn"]["runs"][1]
    codes = work / res["codes"][1]["path"]
    ev = runner.invoke(app, ["evaluate", str(work / run["path"]), "--codes", str(codes),
                             "--json"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["acc"] == pytest.approx(run["test_acc"])
    assert res["ten_class"]["n_test"] == 300
    assert res["model_sizes"]["binary_cnn"]["total"]["binary_params"] > 0
    pairs = res["fashion"]["pairs"]
    assert len(pairs) == 5 and all(p["mnist_vae"]["seeds"] == [0] for p in pairs)
    assert res["fashion"]["codes"]["mnist_vae"]["encoder_sha256"] == res["vaes"][0][
        "encoder_sha256"]
    assert res["fashion"]["vae"]["encoder_sha256"] != res["vaes"][0]["encoder_sha256"]

    # plots and table written; no federated results here, so no Figure 7
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {"reproduction-fig4-accuracy.png", "reproduction-fig5-loss.png",
                    "reproduction-fig6-accuracy.png", "reproduction-cost.png",
                    "reproduction-fashion.png"}
    assert all((out / p).read_bytes()[:8] == PNG for p in pngs)
    md = (out / "reproduction.md").read_text()
    assert "| task1 | 0 vs 1 |" in md and "Command: `hybnn reproduce" in md
    assert f"{100 * t['hybnn']['test_acc']:.2f} ± {100 * t['hybnn']['test_acc_std']:.2f}%" in md

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
    # the first seed's candidates of each CNN: 3 binarizations of task 1 and 5 Fashion pairs
    assert len(partial["missing"]) == 2 * 3 + 2 * 5
    assert partial["tasks"][0]["baselines"]["sign"] is None
    assert partial["tasks"][0]["hybnn"]["test_acc"] == t["hybnn"]["test_acc"]
    assert "not done when these results were gathered" in (part / "reproduction.md").read_text()

    # report redraws from the JSON alone, and adds Figure 7 once federated results exist
    for p in out.glob("*.png"):
        p.unlink()
    from hybnn_cli.study.fed_records import FORMAT, VERSION
    from hybnn_cli.study.provenance import write_result

    write_result(out / "federated.json", FORMAT, VERSION,
                 {"runs": {"iid/task1/seed0": {"accuracy_curve": [0.6, 0.8]}}})
    rep = runner.invoke(app, ["report", "--results", str(out / "reproduction.json"), "--json"])
    assert rep.exit_code == 0, rep.output
    written = json.loads(rep.stdout)
    assert Path(written["Figure 7: federated accuracy per round"]).read_bytes()[:8] == PNG
    assert len(list(out.glob("*.png"))) == 6


def test_a_stage_locked_by_a_live_process_is_not_run_twice(tmp_path):
    import subprocess
    import sys

    from hybnn_cli.study.work_cache import Reporter, StageBusy, StageCache

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
    made = cache.run("demo", key, ".txt", "demo", make, str)
    assert made["value"] == 1 and "run" in made  # the record of the run that made it
    assert cache.run("demo", key, ".txt", "demo", make, str) == made
    assert len(calls) == 1 and not lock.exists()


def test_federated_curves_come_from_the_one_federated_format(tmp_path):
    from hybnn_cli.study.fed_records import FORMAT, VERSION
    from hybnn_cli.study.provenance import write_result
    from hybnn_cli.study.reproduction_report import find_federated

    run = {"accuracy_curve": [0.5, 0.75], "test_acc": 0.75}
    write_result(tmp_path / "federated.json", FORMAT, VERSION,
                 {"runs": {"iid/task1/seed0": run, "iid/task1/seed1": run,
                           "bits/task2/seed0": run}})
    (tmp_path / "federated-notes.json").write_text('{"format": "something else"}')
    assert find_federated(tmp_path) == [
        ("federated: bits", [{"label": "task2 seed0", "rounds": [1, 2], "acc": [0.5, 0.75]}]),
        ("federated: iid", [{"label": "task1 seed0", "rounds": [1, 2], "acc": [0.5, 0.75]},
                            {"label": "task1 seed1", "rounds": [1, 2], "acc": [0.5, 0.75]}])]
    write_result(tmp_path / "federated.json", FORMAT, VERSION + 1, {"runs": {}})
    with pytest.raises(HybnnError, match=f"federated benchmark version {VERSION + 1}, this "
                       f"hybnn reads version {VERSION}$"):
        find_federated(tmp_path)
