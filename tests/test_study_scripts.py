"""Every study script end to end on tiny settings: generated images and codes, one or two epochs,
outputs in a temporary folder (never in benchmarks/results/). Each result file written is checked
for its provenance: the header of the run, and the run record of each row.

The generated images stand in for MNIST in this process (`generated_mnist`): the `mnist` data set
is pointed at them for the module's tests, so the scripts run unchanged."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybnn_cli.data import datasets as data
from hybnn_cli.study.provenance import REPO_ROOT, RESULTS_DIR, same_code
from tests.benchmark_scripts import load_benchmark
from tests.conftest import write_fake_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("flower_env")]


@pytest.fixture(scope="module")
def generated_mnist(tmp_path_factory):
    """Generated 28×28 images (class = place of a bright block) as the `mnist` data set."""
    root = tmp_path_factory.mktemp("generated-data")
    md5 = write_fake_dataset(root / "mnist", n_train=600, n_test=200)
    patch = pytest.MonkeyPatch()
    patch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.MNIST, md5=md5, mirrors=()))
    patch.setenv("HYBNN_DATA", str(root))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def study(generated_mnist, tmp_path_factory) -> dict:
    """The reproduction study, quick, on the generated images: one task, one binarization, one
    seed, the 10-class BNN; its stages first made by prefill_stages.py, then reused."""
    from hybnn_cli.cli import app

    work = tmp_path_factory.mktemp("study")
    out = work / "results"
    load_benchmark("prefill_stages").main(["--quick", "--seeds", "0", "--work", str(work),
                                           "vae:0", "1:threshold"])
    made = {p.name for p in work.glob("*.json")}
    assert any(n.startswith("vae-mnist-") for n in made)
    result = CliRunner().invoke(app, ["reproduce", "--quick", "--tasks", "1", "--binarize",
                                      "threshold", "--no-fashion", "--seeds", "0", "--threads",
                                      "1", "--work", str(work), "--results-dir", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in work.glob("*.json")} >= made  # the prefilled stages were reused
    return {"work": work, "results": out / "reproduction.json"}


def check_provenance(path: Path, fmt: str) -> dict:
    """A result file with the run's header; every row's run record of the same code as it."""
    assert RESULTS_DIR not in path.resolve().parents
    rec = json.loads(path.read_text())
    assert rec["format"] == fmt
    for key in ("commit", "dirty", "command", "machine", "date", "started", "ended"):
        assert key in rec, f"{path.name}: no {key}"
    assert rec["started"] <= rec["ended"]
    return rec


def rows_of(section: dict) -> list[dict]:
    assert section
    for row in section.values():
        assert same_code(row["run"], {**row["run"], "commit": row["run"]["commit"]})
        assert row["run"]["started"] <= row["run"]["ended"]
    return list(section.values())


def test_reproduce_and_prefill_stages(study):
    rec = check_provenance(study["results"], "hybnn-reproduction")
    [task] = rec["tasks"]
    for entry in (task["hybnn"], task["baselines"]["threshold"], rec["ten_class"]):
        for run in entry["runs"]:
            assert run["run"]["commit"] == rec["commit"] and run["run"]["ended"]
    assert rec["vaes"][0]["run"]["started"] <= rec["started"]  # made before, by prefill
    assert len(rec["code_version"]) == 64
    assert rec["command"].startswith("hybnn reproduce")


def test_prefill_stages_reuses_what_is_done(study, capsys):
    load_benchmark("prefill_stages").main(["--quick", "--seeds", "0", "--work",
                                           str(study["work"]), "vae:0", "bnn:1"])
    out = capsys.readouterr().out
    assert "reused VAE on mnist" in out and " done " not in out


def test_exactness(study, tmp_path):
    out = tmp_path / "exactness.json"
    load_benchmark("exactness").main(["--study", str(study["results"]), "--work",
                                      str(study["work"]), "--out", str(out)])
    rec = check_provenance(out, "hybnn-exactness")
    assert {r["task"] for r in rec["results"]} == {"task1", "all"}
    for row in rec["results"]:
        assert row["mismatches"] == 0 and row["run"]["commit"] == rec["commit"]


def test_federated_and_its_resume(study, tmp_path):
    out, script = tmp_path / "federated.json", load_benchmark("federated")
    args = ["--study", str(study["results"]), "--work", str(study["work"]), "--tasks", "1",
            "--variants", "iid", "--rounds", "2", "--models", str(tmp_path / "m"),
            "--out", str(out)]
    script.main(args)
    rec = check_provenance(out, "hybnn-federated-benchmark")
    [row] = rows_of(rec["runs"])
    assert row["command"].startswith("hybnn fed ") and len(row["accuracy_curve"]) == 2
    script.main(args)  # a rerun keeps the row made by this code with this command
    assert json.loads(out.read_text())["runs"] == rec["runs"]


def seed_runs(row: dict, seeds: list[int]) -> list[dict]:
    """A row over seeds: one run per seed, each with its own run record and command, and the
    mean ± std over them of the final test accuracy."""
    assert row["seeds"] == seeds and set(row["per_seed"]) == {str(s) for s in seeds}
    runs = [row["per_seed"][str(s)] for s in seeds]
    rows_of(row["per_seed"])
    for seed, run in zip(seeds, runs, strict=True):
        assert f"--seed {seed} " in run["command"]
    accs = [run["test_acc"] for run in runs]
    assert row["test_acc"]["values"] == accs
    assert row["test_acc"]["mean"] == pytest.approx(sum(accs) / len(accs))
    assert row["test_acc"]["std"] == pytest.approx(statistics.stdev(accs))
    return runs


def render(block: str, results_dir: Path) -> str:
    from hybnn_cli.study import docgen

    return docgen.render_text(f"<!-- generated: {block} -->\n<!-- /generated -->\n", results_dir)


def test_fedpriv_over_seeds_and_its_docs_block(study, tmp_path):
    codes = Path(study["work"]) / json.loads(study["results"].read_text())["codes"][0]["path"]
    out = tmp_path / "feddp.json"
    args = ["--study", "dp", "--codes", str(codes), "--reproduction", str(study["results"]),
            "--task", "1", "--clients", "3", "--fraction", "1", "--rounds", "2",
            "--local-epochs", "1", "--noises", "0.5", "--seeds", "0,1",
            "--models", str(tmp_path / "m"), "--out", str(out)]
    load_benchmark("fedpriv").main(args)
    rec = check_provenance(out, "hybnn-fedpriv")
    assert rec["format_version"] == 2 and rec["seeds"] == [0, 1] and "seed" not in rec
    assert set(rec["runs"]) == {"plain", "dp/0.5"}
    for row in rec["runs"].values():
        seed_runs(row, [0, 1])
        assert row["seconds_per_round"]["std"] >= 0
    assert out.with_suffix(".png").is_file()
    text = render("fedpriv-dp", tmp_path)
    plain = rec["runs"]["plain"]["test_acc"]
    assert "seeds 0, 1 (mean ± std over them)" in text
    assert f"| no DP | – | – | {100 * plain['mean']:.2f} ± {100 * plain['std']:.2f} |" in text
    load_benchmark("fedpriv").main(args)  # a rerun keeps the runs made by this code
    assert json.loads(out.read_text())["runs"] == rec["runs"]


@pytest.fixture(scope="module")
def bundle(study, tmp_path_factory) -> Path:
    """study_artifacts.py, then `hybnn export` of its files as a bundle with the int8 encoder."""
    from hybnn_cli.cli import app

    out = tmp_path_factory.mktemp("artifacts")
    load_benchmark("study_artifacts").main(["--study", str(study["results"]), "--work",
                                            str(study["work"]), "--out", str(out)])
    names = {p.name for p in out.iterdir()}
    assert names == {"vae.pt", "codes-mnist.h5", "bnn-task1.pt", "bnn-all.pt", "artifacts.json"}
    result = CliRunner().invoke(app, ["export", str(out / "bnn-task1.pt"), str(out / "bnn-all.pt"),
                                      "--vae", str(out / "vae.pt"), "--int8", "--calibration",
                                      "100", "--out", str(out / "bundle"), "--json"])
    assert result.exit_code == 0, result.output
    return out / "bundle"


def test_int8(bundle, tmp_path):
    out = tmp_path / "int8.json"
    load_benchmark("int8").main(["--bundle", str(bundle), "--calibration", "100", "--rounds",
                                 "1", "--quick", "--threads", "1", "--out", str(out)])
    rec = check_provenance(out, "hybnn-int8")
    rows_of(rec["variants"])
    assert rec["variants"]["float32"]["flipped_bit_fraction"] == 0


def test_e2e(bundle, tmp_path, monkeypatch):
    # e2e times batches of 4096 test images: a generated set that large, for this test only
    md5 = write_fake_dataset(tmp_path / "data" / "mnist", n_train=10, n_test=4096, seed=2)
    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.MNIST, md5=md5,
                                                                    mirrors=()))
    monkeypatch.setenv("HYBNN_DATA", str(tmp_path / "data"))
    out = tmp_path / "e2e.json"
    load_benchmark("e2e").main(["--bundle", str(bundle), "--threads", "1", "--head", "task1",
                                "--quick", "--out", str(out)])
    rec = check_provenance(out, "hybnn-e2e")
    rows_of(rec["speed"])
    assert rec["agreement"]["float"]["heads"]["task1"]["labels_differing"] == 0


def test_gemm_efficiency(tmp_path):
    out = tmp_path / "gemm.json"
    load_benchmark("gemm_efficiency").main(["--sizes", "64", "--pairs", "1", "--out", str(out)])
    rec = check_provenance(out, "hybnn-gemm-efficiency")
    assert rec["results"][0]["run"]["commit"] == rec["commit"]


@pytest.fixture(scope="module")
def generated_set(generated_mnist) -> str:
    """A second folder of generated images, a pretraining set known by its folder's name."""
    write_fake_dataset(generated_mnist / "generated", n_train=200, n_test=50, seed=1)
    return "generated"


def test_server_scale_scaling(generated_set, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ddp.json"
    # as a script: the all-reduce workers are started by name (torch.multiprocessing.spawn);
    # from tmp_path, where its `hybnn pretrain-vae` runs record their outputs (runs/latest.json)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "server_scale.py"),
                           "scaling", "--epochs", "1", "--dataset", generated_set, "--reps",
                           "3", "--repeats", "2", "--work", str(tmp_path / "w"), "--out",
                           str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]  # why, if the script failed
    assert (tmp_path / "runs" / "latest.json").is_file()  # not the checkout's own record
    rec = check_provenance(out, "hybnn-ddp-scaling")
    assert [(r["processes"], r["repeat"]) for r in rec["runs"]] == [  # in turn, twice
        (1, 0), (1, 0), (2, 0), (1, 1), (1, 1), (2, 1)]
    assert all(r["run"]["ended"] for r in rec["runs"]) and rec["steps_per_epoch"] == 2


def test_server_scale_union_over_seeds_its_resume_and_docs_block(generated_set, tmp_path):
    out = tmp_path / "union-encoder.json"
    args = ["union", "--vae-epochs", "1", "--bnn-epochs", "1", "--threads", "1", "--limit", "200",
            "--datasets", f"mnist,mnist+{generated_set}", "--seeds", "0,1",
            "--work", str(tmp_path / "w"), "--out", str(out)]
    script = load_benchmark("server_scale")
    script.main(args)
    rec = check_provenance(out, "hybnn-union-encoder")
    assert rec["format_version"] == 2 and rec["seeds"] == [0, 1] and "seed" not in rec
    assert [e["pretrain_dataset"] for e in rec["encoders"]] == ["mnist", f"mnist+{generated_set}"]
    for enc in rec["encoders"]:
        assert enc["seeds"] == [0, 1] and [r["seed"] for r in rows_of(enc["per_seed"])] == [0, 1]
        assert set(enc["tasks"]) == {f"task{t}" for t in range(1, 6)}
        for task, accs in enc["tasks"].items():
            for split in ("val_acc", "test_acc"):
                values = [enc["per_seed"][s]["tasks"][task][split] for s in ("0", "1")]
                assert accs[split]["values"] == values
                assert accs[split]["mean"] == pytest.approx(statistics.fmean(values))
                assert accs[split]["std"] == pytest.approx(statistics.stdev(values))
    text = render("union-encoder", tmp_path)
    assert "seeds 0, 1 (mean ± std over them)" in text
    t1 = rec["encoders"][0]["tasks"]["task1"]
    assert (f"| task1 | {100 * t1['val_acc']['mean']:.2f} ± {100 * t1['val_acc']['std']:.2f} / "
            f"{100 * t1['test_acc']['mean']:.2f} ± {100 * t1['test_acc']['std']:.2f} |") in text
    script.main(args)  # the seeds made by this code with these settings are kept
    assert json.loads(out.read_text())["encoders"] == rec["encoders"]


def test_fedscale_over_seeds_its_resume_and_docs_blocks(tmp_path):
    """The scale study on generated codes, 2 seeds: each grid row and the centralized reference
    over the seeds, the timing runs once with their spread over rounds; every fedscale block
    renders the file."""
    from hybnn_cli.study.provenance import write_result
    from tests.fed_codes import make_codes

    codes = make_codes(tmp_path / "codes.h5", n_train=1200, n_test=300)
    study = tmp_path / "reproduction.json"  # the learning rates "chosen" by a study
    write_result(study, "hybnn-reproduction", 1, {
        "tasks": [{"task": "task3", "hybnn": {"chosen": {"lr": 0.03}}}],
        "ten_class": {"chosen": {"lr": 0.01, "hidden": 128}}})
    out = tmp_path / "fedscale.json"
    args = ["--codes", str(codes), "--study", str(study), "--tasks", "3", "--clients", "6",
            "--partitions", "iid", "--uplinks", "float", "--fraction", "0.5", "--rounds", "2",
            "--local-epochs", "1", "--seeds", "0,1", "--engines", "inprocess",
            "--engine-config", "3/6/iid/float/2", "--secagg-config", "3/6/iid/2",
            "--memory-clients", "", "--models", str(tmp_path / "m"), "--out", str(out),
            "--figure", str(tmp_path / "fedscale.png"),
            "--fed-options", "--client-opt adam --server-opt sgd"]  # FedAvg, named
    script = load_benchmark("fedscale")
    script.main(args)
    rec = check_provenance(out, "hybnn-fedscale")
    assert rec["format_version"] == 2 and rec["seeds"] == [0, 1] and rec["timing_seed"] == 0
    central = rec["centralized"]["task3"]
    assert central["seeds"] == [0, 1] and len(rows_of(central["per_seed"])) == 2
    assert central["test_acc"]["values"] == [central["per_seed"][s]["test_acc"]
                                             for s in ("0", "1")]
    [row] = rec["runs"].values()
    runs = seed_runs(row, [0, 1])
    within = row["rounds_to_within_1pt"]
    assert within["values"] == [
        next((i + 1 for i, a in enumerate(r["accuracy_curve"])
              if a >= central["test_acc"]["mean"] - 0.01), None) for r in runs]
    assert within["reached"] == sum(v is not None for v in within["values"])
    for section in ("engines", "secagg"):  # timings: one run each, with their spread
        for run in rows_of(rec[section]):
            assert "--seed 0 " in run["command"] and run["seconds_per_round_std"] >= 0
    assert len(rec["engines"]) == 1 and len(rec["secagg"]) == 2
    assert (tmp_path / "fedscale.png").is_file()

    from hybnn_cli.study import docgen

    blocks = [n for n in docgen.RENDERERS if n.startswith("fedscale-")]
    text = docgen.render_text("".join(f"<!-- generated: {n} -->\n<!-- /generated -->\n"
                                      for n in blocks), tmp_path)
    acc, c = row["test_acc"], central["test_acc"]
    cells = (f"| {100 * c['mean']:.2f} ± {100 * c['std']:.2f} | "
             f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} |")
    assert cells in text and "seeds 0, 1 (mean ± std over them)" in text
    assert "| FedAvg | Adam 0.03, 128 |" in text  # the run's settings, from its first seed
    assert "Timings: one run each, seed 0" in text
    sampled = runs[0]["sampled_per_round"]
    assert f"| 3 | 128 | 6 | {sampled} | iid | float |" in text
    from hybnn_cli.study.fed_scale import fedscale_targets

    targets = fedscale_targets(tmp_path, clients=6, by_round=2)
    held = {0: "no", 1: "1 of 2 seeds", 2: "**yes** (2 of 2 seeds)"}  # checks, seeds they held in
    first = ", ".join("–" if w is None else str(w) for w in within["values"])
    assert (f"{cells} {first} | {held[within['reached']]} | "
            f"{held[sum(a >= c['mean'] - 0.01 for a in acc['values'])]} |") in targets
    rec = json.loads(out.read_text())
    script.main(args)  # a rerun keeps every run made by this code with the same command
    again = json.loads(out.read_text())
    for section in ("centralized", "runs", "engines", "secagg"):
        assert again[section] == rec[section]


def test_folder_throughput_and_its_docs_block(generated_mnist, tiny_pipeline, tmp_path):
    from hybnn_cli.study.folder_throughput import CONTENDERS

    assert "not measured yet" in render("folder-throughput", tmp_path)  # no result file
    out = tmp_path / "folder-throughput.json"
    load_benchmark("folder_throughput").main([
        "--vae", str(tiny_pipeline["vae"]), "--limit", "100", "--repeats", "2", "--threads", "1",
        "--work", str(tmp_path), "--out", str(out)])
    rec = check_provenance(out, "hybnn-folder-throughput")
    assert rec["images"] == 200 and rec["codes_equal"] and rec["png_bytes"] > 0
    assert [(x["contender"], x["repeat"]) for x in rec["runs"]] == [  # in turn, twice
        (c, i) for i in range(2) for c in CONTENDERS]
    assert all((x["read_seconds"] is None) == (x["contender"] == "idx") for x in rec["runs"])
    assert not list(tmp_path.glob("folder-throughput-*"))  # the PNGs were removed
    text = render("folder-throughput", tmp_path)
    rates = sorted(200 / x["seconds"] for x in rec["runs"] if x["contender"] == "idx")
    assert f"| idx | {statistics.median(rates):,.0f} ({rates[0]:,.0f}–{rates[-1]:,.0f}) |" in text
    assert "`benchmarks/results/folder-throughput.json`" in text and "| 1.00× |" in text
