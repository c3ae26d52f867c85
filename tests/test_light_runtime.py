"""The light runtime (issue 25, items 2 and 3): a bundle's heads run on the numpy head, with the
compiled head's labels, in a process where numba cannot import; `hybnn predict`'s peak memory does
not grow with the number of images; its labels are kept compact and written in slices, as the
JSON the rest of the CLI prints. (The 150 MB target on 60,000 MNIST images lives in the e2e
benchmark, not here.)"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import idx_bytes, predict_json

BLOCK_NUMBA = "import sys; sys.modules['numba'] = None; sys.modules['llvmlite'] = None\n"


def run_python(code: str, *args) -> str:
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_without_numba_every_head_runs_in_numpy_with_the_compiled_labels(bundle):
    """compiled=None on a batch larger than NUMPY_ROWS, and compiled=True, would start numba;
    where it cannot import, both run the numpy head, with no error, and say so."""
    from hybnn_kernels.pipeline import NUMPY_ROWS, load_bundle

    code = BLOCK_NUMBA + (
        "import json, numpy as np\n"
        "from hybnn_kernels import pipeline\n"
        "x = np.load(sys.argv[2])\n"
        "out = {'available': pipeline.compiled_kernels_available()}\n"
        "for compiled in (None, True):\n"
        "    p = pipeline.load_bundle(sys.argv[1], 2, compiled=compiled)\n"
        "    labels = p.classify(x)\n"
        "    out[str(compiled)] = {'kernel': p.head_kernel(),\n"
        "                          'numba': sys.modules.get('numba') is not None,\n"
        "                          'labels': {k: v.tolist() for k, v in labels.items()}}\n"
        "print(json.dumps(out))\n")
    got = json.loads(run_python(code, bundle["bundle"], bundle["out"] / "test.npy"))
    assert len(bundle["images"]) > NUMPY_ROWS
    compiled = load_bundle(bundle["bundle"], 2, compiled=True)
    want = compiled.classify(bundle["images"])
    assert compiled.head_kernel() == "numba" and got["available"] is False
    for mode in ("None", "True"):
        assert got[mode]["kernel"] == "numpy" and got[mode]["numba"] is False
        assert got[mode]["labels"] == {k: v.tolist() for k, v in want.items()}, mode


def peak_rss_mb(*cmd) -> float:
    """Peak resident memory of `cmd` run in a new process (which runs nothing else)."""
    code = ("import resource, subprocess, sys\n"
            "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    return int(run_python(code, *cmd)) / 1e3


@pytest.mark.slow
def test_predict_peak_memory_does_not_grow_with_the_images(bundle, tmp_path):
    """Default settings, no numba: 16 times the images (a raw IDX file, read with plain reads)
    raise the peak by less than the batch of 4096 the old default ran (which alone took hundreds
    of MB)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16384, 28, 28), dtype=np.uint8)
    peaks = {}
    for n in (1024, 16384):
        f = tmp_path / f"x{n}-idx3-ubyte"
        f.write_bytes(idx_bytes(x[:n]))
        peaks[n] = peak_rss_mb(sys.executable, "-c", BLOCK_NUMBA + (
            "from hybnn_cli.cli import main\n"
            "sys.argv = ['hybnn', *sys.argv[1:]]\nmain()\n"), "predict", "--model",
            bundle["bundle"], f, "--json")
    assert peaks[16384] - peaks[1024] < 30, peaks


def test_predict_json_writes_labels_in_slices_as_json_dumps_would(bundle, monkeypatch):
    from hybnn_cli.deploy import predict_bundle as pb

    monkeypatch.setattr(pb, "_SLICE", 5)  # several slices for the 128 test images
    got = predict_json("--model", bundle["bundle"], bundle["out"] / "test.npy")
    result = {"model": 'a "quoted" \\ path', "n": 3, "heads": {
        'h"1': {"classes": [-200, 7], "labels": np.array([-200, 7, 7], np.int16)},
        "h2": {"classes": ["a", "b"], "labels": np.array(["a", "b", "b"])}},
        "files": [{"path": 'x".png', "kind": "png", "images": 1},
                  {"path": "y.npy", "kind": "npy", "images": 2}]}
    pieces = []
    pb.write_json(result, pieces.append)
    want = {**result, "heads": {k: {**v, "labels": v["labels"].tolist()}
                                for k, v in result["heads"].items()},
            "by_image": {'x".png': {'h"1': -200, "h2": "a"}, "y.npy:0": {'h"1': 7, "h2": "b"},
                         "y.npy:1": {'h"1': 7, "h2": "b"}}}
    assert json.loads("".join(pieces)) == want and len(pieces) > 3
    assert len(got["heads"]["all"]["labels"]) == len(bundle["images"]) == got["n"]
    assert set(got["heads"]["task3"]["labels"]) <= {4, 5}


def test_labels_are_kept_in_the_smallest_type_that_holds_the_classes():
    from hybnn_cli.deploy.predict_bundle import label_dtype

    assert [label_dtype(np.array(c)) for c in ([0, 9], [-128, 127], [0, 128], [0, 2 ** 40])] == [
        np.int8, np.int8, np.int16, np.int64]


def test_the_default_batch_is_one_number():
    """`hybnn predict --batch-size`'s default, the library's and the runtime's agree."""
    import typer.main
    from hybnn_kernels.pipeline import DEFAULT_BATCH

    from hybnn_cli.cli import app
    from hybnn_cli.deploy import predict_bundle as pb

    cmd = typer.main.get_command(app).commands["predict"]
    (option,) = [p for p in cmd.params if p.name == "batch_size"]
    assert option.default == pb.DEFAULT_BATCH == DEFAULT_BATCH


# ── the e2e benchmark's new fields ────────────────────────────────────────────────────────────
def _e2e_with(tmp_path, **fields) -> str:
    """The e2e block rendered from the committed e2e.json with `fields` of its body replaced."""
    from hybnn_cli.study.e2e_study import E2E, e2e
    from hybnn_cli.study.provenance import REPO_ROOT

    r = json.loads((REPO_ROOT / "benchmarks" / "results" / E2E).read_text())
    for key, value in fields.items():
        if value is None:
            r.pop(key, None)
        else:
            r[key] = value
    (tmp_path / E2E).write_text(json.dumps(r))
    return e2e(tmp_path)


def test_e2e_renders_a_file_from_before_the_light_install_with_not_measured(tmp_path):
    from hybnn_cli.study.provenance import REPO_ROOT

    now = json.loads((REPO_ROOT / "benchmarks/results/e2e.json").read_text())["processes"]
    # a file of the runs before the light install: one runtime venv, which held numba
    old = {**now, "installed_mb": {"runtime_only": 454.9, "with_torch": 1311.7},
           "runtime_venv_packages": {**now["runtime_venv_packages"], "numba": "0.61.0"},
           "predict_peak_memory": {k: now["predict_peak_memory"][k] for k in ("test", "train")}}
    text = _e2e_with(tmp_path, processes=old, head_kernels=None)
    assert "not measured for the base install without numba" in text
    assert "455 MB with numba" in text
    assert "two kernels (the numpy head of the base install" in text and "not measured" in text


def test_e2e_renders_both_installs_both_heads_and_the_memory_target(tmp_path):
    from hybnn_cli.study.provenance import REPO_ROOT

    old = json.loads((REPO_ROOT / "benchmarks/results/e2e.json").read_text())
    pr = {**old["processes"], "installed_mb": {"base": 201.4, "fast": 330.2, "with_torch": 1200}}

    def mem(mb, n):
        return {"images": n, "peak_rss_mb": mb, "wall_seconds": 1.0, "head_kernel": "numpy",
                "batch_size": 256, "images_per_second": 1000.0, "heads": 6}

    pr["predict_peak_memory"] = {"test": mem(111.0, 10000), "train": mem(149.4, 60000),
                                 "test_fast": mem(170.0, 10000), "train_fast": mem(171.0, 60000)}

    def row(us):
        return {"median_seconds": us * 1e-6, "us_per_code": us}

    hk = {"head": "all", "codes_checked": 10000, "labels_identical": True,
          "batch_4096": {"numpy": row(8.0), "numba": row(0.25), "speedup_numba_vs_numpy": 32.0},
          "batch_1": {"numpy": row(40.0), "numba": row(1.5), "speedup_numba_vs_numpy": 26.7}}
    text = _e2e_with(tmp_path, processes=pr, head_kernels=hk)
    assert "201 MB for the base install" in text and "330 MB with numba" in text
    assert "149 MB on 60,000 images (within the target of 150 MB" in text
    assert "in the fast install 170 MB on 10,000 images, 171 MB on 60,000 images." in text
    assert "| 4,096 | 8.00 | 0.250 | 32× |" in text and "| 1 | 40.00 | 1.500 | 27× |" in text
    pr["predict_peak_memory"]["train"]["peak_rss_mb"] = 151.0
    assert "above the target of 150 MB" in _e2e_with(tmp_path, processes=pr, head_kernels=hk)


def test_e2e_times_both_head_kernels_after_checking_their_labels(bundle):
    from hybnn_cli.study.e2e_speed import head_kernels

    r = head_kernels(bundle["bundle"], bundle["images"], "all", 1, quick=True, batch=16)
    assert r["labels_identical"] and r["codes_checked"] == len(bundle["images"])
    for key in ("batch_16", "batch_1"):
        for kernel in ("numpy", "numba"):
            assert r[key][kernel]["us_per_code"] > 0 and r[key][kernel]["repeats"] >= 3
        assert r[key]["speedup_numba_vs_numpy"] == pytest.approx(
            r[key]["numpy"]["median_seconds"] / r[key]["numba"]["median_seconds"])
