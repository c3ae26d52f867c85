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
        "h2": {"classes": [0], "labels": np.zeros(0, np.int8)}}}
    pieces = []
    pb.write_json(result, pieces.append)
    want = {**result, "heads": {k: {**v, "labels": v["labels"].tolist()}
                                for k, v in result["heads"].items()}}
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
