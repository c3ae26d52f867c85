"""The federated studies' library (`hybnn_cli.study.fed_*`) and their thin scripts: the pieces a
study's run is made of, without running a study (tests/test_study_scripts.py runs them)."""

from __future__ import annotations

import argparse

import pytest

from hybnn_cli.errors import HybnnError
from hybnn_cli.study import fed_priv, fed_runner, fed_scale
from hybnn_cli.study.provenance import RESULTS_DIR
from tests.benchmark_scripts import load_benchmark


def test_the_runs_environment_is_flowers_quiet_one_with_the_thread_count():
    env = fed_runner.run_env(3)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"


def test_a_failed_command_raises_one_error_naming_it_and_its_stderr(tmp_path):
    missing = tmp_path / "missing.h5"
    with pytest.raises(HybnnError) as err:
        fed_runner.hybnn(["fed", "--codes", str(missing), "--rounds", "1", "--json"],
                         fed_runner.run_env(1))
    first, rest = str(err.value).split("\n", 1)
    assert first.startswith("failed (1): hybnn fed --codes ") and str(missing) in first
    assert "missing.h5" in rest  # the end of the command's stderr says what went wrong


def test_a_grid_row_rerun_with_other_options_moves_to_earlier_and_keeps_nothing():
    row = {"fed_options": "--server-opt adam", "per_seed": {"0": {"test_acc": 0.9}}}
    body = {"runs": {"task3/6/iid/float": row}, "earlier": {}}
    assert fed_scale.kept_runs(body, "task3/6/iid/float", "") == {}
    assert body == {"runs": {}, "earlier": {"task3/6/iid/float --server-opt adam": row}}
    body["runs"]["task3/6/iid/float"] = row
    assert fed_scale.kept_runs(body, "task3/6/iid/float", "--server-opt adam") == row["per_seed"]
    assert fed_scale.kept_runs(body, "task5/6/iid/float", "") == {}


@pytest.mark.parametrize(("study", "keys", "extra"), [
    ("dp", ["plain", "dp/0", "dp/0.5"], ["--dp-noise", "0.5", "--dp-clip", "5.0"]),
    ("byzantine", ["plain", "byzantine/krum", "byzantine/median"],
     ["--aggregate", "median", "--byzantine", "0.2"]),
])
def test_the_privacy_studys_settings_start_with_the_plain_run(study, keys, extra):
    args = argparse.Namespace(study=study, noises="0,0.5", dp_clip=5.0, rules="krum,median",
                              byzantine=0.2)
    settings = fed_priv.priv_settings(args)
    assert [k for k, _ in settings] == keys
    assert settings[0][1] == [] and settings[-1][1] == extra


def test_the_scripts_turn_the_librarys_errors_into_one_line(tmp_path):
    with pytest.raises(SystemExit) as bye:
        load_benchmark("federated").main(["--variants", "iid,nope", "--out",
                                          str(tmp_path / "f.json")])
    assert bye.value.code == "unknown variant 'nope': use iid, dirichlet, bits"
    out = RESULTS_DIR / "fedscale-refused.json"
    with pytest.raises(SystemExit) as bye:
        load_benchmark("fedscale").main(["--codes", str(tmp_path / "codes.h5"),
                                         "--out", str(out)])
    assert "the command names paths outside the checkout" in bye.value.code
    assert "\n" not in bye.value.code and not out.exists()
    assert not (tmp_path / "f.json").exists()
