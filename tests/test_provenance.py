"""Provenance per run (`results.run_record`): taken when a run starts, attached to every row, named
by the file's header; recorded commands that rerun from the repository's root."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from hybnn_cli.errors import HybnnError
from hybnn_cli.study import provenance as results

ROOT = results.REPO_ROOT


def test_a_run_record_holds_commit_machine_and_its_start_and_end():
    run = results.run_record()
    assert set(run) >= {"commit", "dirty", "diff_sha256", "machine", "started", "ended"}
    assert set(run["machine"]) == {"cpu", "cores", "load_average"}
    assert run["ended"] is None and (run["diff_sha256"] is None) == (not run["dirty"])
    done = results.end_run(run)
    assert run["ended"] is None  # the start record is left as it was
    start, end = (dt.datetime.fromisoformat(done[k]) for k in ("started", "ended"))
    assert start.utcoffset() == dt.timedelta(0) and start <= end
    assert len(done["load_average_end"]) == 3


def test_same_code_means_same_commit_and_same_uncommitted_diff():
    a = {"commit": "c1", "dirty": False, "diff_sha256": None}
    assert results.same_code(a, dict(a))
    assert not results.same_code(a, {**a, "commit": "c2"})
    dirty = {"commit": "c1", "dirty": True, "diff_sha256": "d1"}
    assert results.same_code(dirty, dict(dirty))
    assert not results.same_code(dirty, {**dirty, "diff_sha256": "d2"})
    assert not results.same_code(a, dirty)
    assert not results.same_code(None, a) and not results.same_code({"commit": None}, a)


def test_the_header_is_the_runs_and_names_the_commits_of_its_rows(tmp_path, monkeypatch):
    run = results.run_record()
    old_row = {"acc": 0.5, "run": {**run, "commit": "0" * 40}}
    new_row = {"acc": 0.6, "run": results.end_run(run)}
    out = tmp_path / "r.json"
    rec = results.write_result(out, "demo", 1, {"runs": {"a": old_row, "b": new_row}},
                               argv=["python", "x.py"], run=results.end_run(run))
    assert rec["commit"] == run["commit"] and rec["date"] == run["started"]
    assert rec["started"] == run["started"] and rec["ended"] >= run["started"]
    assert rec["row_commits"] == sorted({"0" * 40, run["commit"]})
    assert json.loads(out.read_text())["runs"]["a"]["run"]["commit"] == "0" * 40
    # rows all of the run's commit: no row_commits; without a run, the old header
    rec = results.write_result(out, "demo", 1, {"runs": {"b": new_row}}, argv=["x"], run=run)
    assert "row_commits" not in rec
    rec = results.write_result(out, "demo", 1, {"v": 1}, argv=["x"])
    assert {"format", "commit", "dirty", "command", "machine", "date"} <= set(rec)


def test_recorded_commands_rerun_from_the_repository_root(tmp_path):
    cmd = results.recorded_command(
        [str(ROOT / ".venv/bin/hybnn"), "bench", "--out", str(ROOT / "benchmarks/results/b.json"),
         "--codes", f"mnist={ROOT}/runs/c.h5", f"--plot={ROOT}/runs/s.png",
         "--note", "fashion=a VAE, 20 epochs", "--engine-config", "3/1000/iid/float/3"])
    assert cmd == ("hybnn bench --out benchmarks/results/b.json --codes mnist=runs/c.h5 "
                   "--plot=runs/s.png --note 'fashion=a VAE, 20 epochs' "
                   "--engine-config 3/1000/iid/float/3")
    assert results.outside_paths(cmd) == []
    # from another folder, an existing relative path is made relative to the root
    assert results.recorded_command(["python", "../src/hybnn_cli"], cwd=ROOT / "benchmarks") == \
        "python src/hybnn_cli"
    out = results.recorded_command(["python", "x.py", "--out", str(tmp_path / "a.json"),
                                    "--data", "../shared/data"])
    assert results.outside_paths(out) == [str(tmp_path / "a.json"), "../shared/data"]


def test_a_result_file_refuses_a_command_with_paths_outside_the_checkout(tmp_path):
    argv = ["python", "benchmarks/x.py", "--work", str(tmp_path)]
    with pytest.raises(HybnnError, match="names paths outside the checkout"):
        results.write_result(results.RESULTS_DIR / "no-such-test-file.json", "demo", 1, {},
                             argv=argv)
    assert not (results.RESULTS_DIR / "no-such-test-file.json").exists()
    results.write_result(tmp_path / "fine.json", "demo", 1, {}, argv=argv)  # not a result file



# ── one command for every result: `make results` ─────────────────────────────────────────────
def results_target() -> tuple[dict[str, str], list[str]]:
    """From the Makefile: the comment naming each result file's line ({file: command}), and the
    recipe lines of `results` (continuations joined)."""
    import re

    text = (ROOT / "Makefile").read_text()
    block = text[text.index("# Every measured result"):]
    named = dict(re.findall(r"^#\s+([\w.-]+\.json)\s+(.+?)\s*$", block[:block.index("\nresults:")],
                            flags=re.M))
    recipe = block[block.index("\nresults:"):].split("\n\n")[0].replace("\\\n", " ")
    lines = [" ".join(line.split()) for line in recipe.splitlines()[1:] if line.startswith("\t")]
    return named, lines


def test_make_results_names_the_line_that_makes_every_result_file():
    named, lines = results_target()
    files = sorted(p.name for p in (ROOT / "benchmarks" / "results").glob("*.json"))
    assert files and sorted(set(files) - set(named)) == [], "result files no line makes"
    for name, command in named.items():
        made = [line for line in lines if " ".join(command.split()) in line]
        assert made, f"{name}: no line of `make results` runs `{command}`"


def test_make_results_names_no_path_outside_the_checkout():
    _, lines = results_target()
    assert lines
    for line in lines:
        assert results.outside_paths("make " + line) == [], line
        assert "--merge" not in line, line  # no result file assembled from parts


def test_a_run_writing_its_result_file_is_not_a_modified_tree(tmp_path):
    """A study rewrites its own result file as it goes: that is output, not a change of the code
    that runs; a changed source file still is."""
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    out, code = tmp_path / "benchmarks" / "results" / "r.json", tmp_path / "a.py"
    out.write_text("{}")
    code.write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    out.write_text('{"rows": 1}')
    assert results.git_state(tmp_path)["dirty"] is False
    assert results.run_record(tmp_path)["diff_sha256"] is None
    code.write_text("x = 2\n")
    assert results.git_state(tmp_path)["dirty"] is True
