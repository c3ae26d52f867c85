"""The bits-curve study (`study.bits_study`, `benchmarks/bits.py`): its quick draft of the plan,
the refusals (a draft that would publish, a changed plan), the block before the study has run,
and the study end to end on real MNIST at tiny sizes: the result file's structure, a VAE cut
short that resumes, a rerun that adds nothing, and the block rendered from the file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import load_plan
from hybnn_cli.study import bits_study, docgen
from hybnn_cli.study.provenance import RESULTS_DIR, read_result
from tests.benchmark_scripts import load_benchmark
from tests.conftest import real_data_root

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "bits": [16, 40], "datasets": ["mnist"], "seeds": [0], "tasks": ["1"],
    "pretrain_vae": ["--epochs", "2", "--train-limit", "200", "--threads", "1"],
    "extract": ["--limit", "200", "--threads", "1"],
    "train_bnn": ["--epochs", "1", "--threads", "1"], "export": ["--threads", "1"],
    "candidates": {}, "rule": "none: a measurement at fixed settings", "tie_break": [],
}


def test_the_committed_plan_and_its_quick_draft():
    plan = load_plan(ROOT / "benchmarks" / "plans" / "bits.json", draft=True)
    pb = plan.body
    assert pb["bits"] == [32, 64, 200, 512, 1024] and pb["seeds"] == [0, 1, 2]
    assert pb["datasets"] == ["mnist", "fashion-mnist"]
    assert pb["tasks"] == ["all", "1", "2", "3", "4", "5"] and pb["candidates"] == {}
    assert bits_study.option(pb["pretrain_vae"], "--epochs") == "3"
    quick = bits_study.quick_plan(plan, ["mnist"])
    assert quick.commit is None and quick.sha256 != plan.sha256  # a draft, of its own body
    assert quick.body["bits"] == [16, 40] and quick.body["datasets"] == ["mnist"]
    assert bits_study.option(quick.body["pretrain_vae"], "--epochs") == "1"
    assert bits_study.option(quick.body["train_bnn"], "--epochs") == "1"
    assert bits_study.option(quick.body["extract"], "--limit") == "300"
    assert plan.body["bits"] == [32, 64, 200, 512, 1024]  # the plan itself is left as it is


def test_code_bytes():
    assert [bits_study.code_bytes(b) for b in (16, 40, 200, 1024)] == [2, 5, 25, 128]
    assert [bits_study.code_word_bytes(b) for b in (16, 40, 200, 1024)] == [8, 8, 32, 128]


def test_a_draft_publishes_nothing(tmp_path):
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(TINY))
    plan = load_plan(plan_path, draft=True)
    with pytest.raises(HybnnError, match="publishes nothing"):
        bits_study.check_unpublished(plan, [RESULTS_DIR / "bits.json"])
    bits_study.check_unpublished(plan, [tmp_path / "bits.json"])  # elsewhere: fine
    # from the script: one line, exit code 1, before any work
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bits.py"), "--plan",
                        str(plan_path), "--draft", "--work", str(tmp_path / "w")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert "publishes nothing" in line
    assert not (tmp_path / "w").exists()


def test_the_block_before_the_study_has_run(tmp_path):
    text = docgen.RENDERERS["bits-table"](tmp_path)
    assert text.startswith("Not run yet: `python benchmarks/bits.py --jobs 2`")
    assert "benchmarks/plans/bits.json" in text


@pytest.mark.slow
def test_the_study_end_to_end_on_real_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBNN_DATA", str(real_data_root("mnist")))
    from hybnn_cli.cli import app

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(TINY))
    out, work, figure = tmp_path / "bits.json", tmp_path / "work", tmp_path / "bits.png"
    argv = ["--plan", str(plan), "--draft", "--work", str(work), "--out", str(out),
            "--figure", str(figure), "--jobs", "2"]
    # a VAE cut short: one of its two epochs saved where the study keeps it
    cut = work / "mnist" / "bits16" / "seed0" / "vae.pt"
    r = CliRunner().invoke(app, ["pretrain-vae", "--dataset", "mnist", "--latent-bits", "16",
                                 "--seed", "0", "--epochs", "1", "--train-limit", "200",
                                 "--threads", "1", "--out", str(cut), "--json"])
    assert r.exit_code == 0, r.output
    script = load_benchmark("bits")
    script.main(argv)

    r = read_result(out, script.FORMAT)
    for key in ("commit", "dirty", "command", "machine", "date", "started", "ended"):
        assert key in r
    assert r["plan"]["draft"] is True and r["command"].startswith("python benchmarks/bits.py")
    assert set(r["points"]) == {"mnist/bits16/seed0", "mnist/bits40/seed0"}
    for bits in (16, 40):
        p = r["points"][f"mnist/bits{bits}/seed0"]
        assert p["code_bytes"] == math.ceil(bits / 8) and p["codes"]["n_bits"] == bits
        assert p["vae"]["epochs"] == 2 and p["vae"]["test_recon"] > 0
        assert p["codes"]["encoder_sha256"] == p["vae"]["encoder_sha256"]
        t = p["tasks"]["1"]
        assert 0 <= t["test_acc"] <= 1 and 0 <= t["val_acc"] <= 1 and t["classes"] == [0, 1]
        assert t["head"]["shape"] == [bits, 128, 2]
        arrays = t["head"]["bytes"]["arrays"]
        assert arrays["fc1/weights"] == 128 * 8  # one uint64 word per neuron for <= 64 bits
        assert arrays["fc2/score_table"] == 2 * 129 * 4
        assert t["head"]["bytes"]["total"] == sum(arrays.values())
        assert {"commit", "dirty", "started", "ended"} <= set(t["made"])
        row = r["curve"]["mnist"][str(bits)]
        assert row["tasks"]["1"]["test_acc"]["values"] == [t["test_acc"]]
    resumed = {b: r["points"][f"mnist/bits{b}/seed0"]["vae"]["made"]["resumed_after_epochs"]
               for b in (16, 40)}
    assert resumed == {16: 1, 40: 0}
    assert figure.is_file()

    # a rerun finds every stage done and runs no command
    def no_run(*a, **k):
        raise AssertionError("a rerun ran a command")

    monkeypatch.setattr(bits_study.continual_study, "run_hybnn", no_run)
    script.main(argv)
    assert read_result(out, script.FORMAT)["points"] == r["points"]

    # the block, from the file
    text = docgen.RENDERERS["bits-table"](tmp_path)
    assert "**mnist**" in text and "a draft plan, not committed" in text
    rows = [line for line in text.splitlines() if line.startswith("| 16 |")]
    assert len(rows) == 1 and rows[0].startswith("| 16 | 2 | – / 3112 |")
    assert f"{100 * r['points']['mnist/bits16/seed0']['tasks']['1']['test_acc']:.2f} ± 0.00" \
        in rows[0]

    # a changed plan is refused
    plan.write_text(json.dumps({**TINY, "seeds": [0, 1]}))
    with pytest.raises(HybnnError, match="made under another version"):
        script.main(argv)


# ── resuming, on a fake `hybnn` (no process is started) ──────────────────────────────────────
class FakeHybnn:
    """Stands in for `continual_study.run_hybnn`: records each command, answers like `hybnn`."""

    def __init__(self, sha: str = "e" * 64):
        self.calls: list[list[str]] = []
        self.sha = sha

    def __call__(self, cmd: list[str], env: dict):
        self.calls.append(cmd)
        made = {"commit": "c" * 40, "dirty": False, "wall_seconds": 1.0}
        out = Path(cmd[cmd.index("--out") + 1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch()
        if cmd[0] == "pretrain-vae":
            n = int(bits_study.option(cmd, "--epochs"))
            return {"history": [{"test_recon": 100.0 - e, "test_kl": 5.0, "epoch_seconds": 2.0}
                                for e in range(n)]}, made
        if cmd[0] == "extract":
            bits = int(out.parent.parent.name.removeprefix("bits"))
            return {"encoder_sha256": self.sha, "n_bits": bits, "n_train": 10, "n_test": 5}, made
        if cmd[0] == "train-bnn":
            return {"classes": [0, 1], "n_train": 9, "n_val": 1, "n_test": 5, "train_acc": 0.9,
                    "val_acc": 0.8, "test_acc": 0.7, "train_seconds": 0.1,
                    "history": [{}]}, made
        return {"out": str(out), "encoder_sha256": self.sha, "n_bits": 16, "hidden": 128,
                "n_classes": 2}, made


@pytest.fixture
def fake(monkeypatch):
    run = FakeHybnn()
    monkeypatch.setattr(bits_study.continual_study, "run_hybnn", run)
    monkeypatch.setattr(bits_study, "_sha_of", lambda path: run.sha)
    monkeypatch.setattr(bits_study, "head_bytes", lambda path: {"arrays": {}, "total": 3112})
    saved = {}
    monkeypatch.setattr(bits_study, "vae_epochs_saved",
                        lambda path: saved.get(path.parent.parent.name, 0) if path.is_file()
                        else 0)
    run.saved = saved  # bits folder name → epochs the VAE checkpoint there holds
    return run


def fake_study(tmp_path, plan: dict | None = None) -> bits_study.BitsStudy:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan or {**TINY, "bits": [16], "tasks": ["all", "1"]}))
    return bits_study.BitsStudy(load_plan(path, draft=True), tmp_path / "work",
                                tmp_path / "bits.json", ["python", "benchmarks/bits.py"])


def test_a_rerun_makes_only_what_is_missing(tmp_path, fake):
    body = fake_study(tmp_path).run()
    assert [c[0] for c in fake.calls] == ["pretrain-vae", "extract", "train-bnn", "export",
                                          "train-bnn", "export"]
    p = body["points"]["mnist/bits16/seed0"]
    assert p["vae"]["test_recon"] == 99.0 and p["vae"]["made"]["resumed_after_epochs"] == 0
    assert body["curve"]["mnist"]["16"]["tasks"]["1"]["test_acc"]["mean"] == 0.7
    what, figure, file = bits_study.headline_row(tmp_path)  # the README's row, from the file
    assert figure == "`mnist`: 16 bits (2 B) 70.00 ± 0.00" and "seeds 0" in what
    assert file.startswith("[`bits.json`](benchmarks/results/bits.json)")
    # a task lost (e.g. interrupted before its record): only it is made again, from the codes
    rec = json.loads((tmp_path / "bits.json").read_text())
    del rec["points"]["mnist/bits16/seed0"]["tasks"]["1"]
    (tmp_path / "bits.json").write_text(json.dumps(rec))
    fake.calls.clear()
    fake_study(tmp_path).run()
    assert [c[0] for c in fake.calls] == ["train-bnn", "export"]
    assert fake.calls[0][fake.calls[0].index("--task") + 1] == "1"
    # nothing missing: nothing runs
    fake.calls.clear()
    fake_study(tmp_path).run()
    assert fake.calls == []


def test_a_vae_cut_short_resumes_and_a_finished_unrecorded_one_trains_again(tmp_path, fake):
    vae = tmp_path / "work" / "mnist" / "bits16" / "seed0" / "vae.pt"
    vae.parent.mkdir(parents=True)
    vae.touch()
    fake.saved["bits16"] = 1  # one of the plan's two epochs
    fake_study(tmp_path).run()
    first = fake.calls[0]
    assert first[0] == "pretrain-vae" and first[-2:] == ["--resume", str(vae)]
    rec = json.loads((tmp_path / "bits.json").read_text())
    assert rec["points"]["mnist/bits16/seed0"]["vae"]["made"]["resumed_after_epochs"] == 1
    # every epoch saved but no record (cut between the last save and the record), codes gone:
    # trained from the start, not resumed (which would refuse a finished checkpoint)
    (tmp_path / "bits.json").unlink()
    (vae.parent / "codes.h5").unlink()
    fake.saved["bits16"] = 2
    fake.calls.clear()
    fake_study(tmp_path).run()
    assert fake.calls[0][0] == "pretrain-vae" and "--resume" not in fake.calls[0]


def test_a_new_encoder_retrains_the_points_bnns(tmp_path, fake):
    fake_study(tmp_path).run()
    folder = tmp_path / "work" / "mnist" / "bits16" / "seed0"
    (folder / "codes.h5").unlink()
    (folder / "vae.pt").unlink()
    rec = json.loads((tmp_path / "bits.json").read_text())
    del rec["points"]["mnist/bits16/seed0"]["tasks"]["1"]  # one task still to do
    (tmp_path / "bits.json").write_text(json.dumps(rec))
    fake.sha = "f" * 64  # the VAE made again is another encoder
    fake.calls.clear()
    body = fake_study(tmp_path).run()
    assert [c[0] for c in fake.calls] == ["pretrain-vae", "extract", "train-bnn", "export",
                                          "train-bnn", "export"]  # both tasks, not only "1"
    assert {t["encoder_sha256"] for t in body["points"]["mnist/bits16/seed0"]["tasks"].values()} \
        == {"f" * 64}
