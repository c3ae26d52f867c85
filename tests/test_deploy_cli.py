"""`hybnn export`, `hybnn predict` and `hybnn bench` through CliRunner: exit codes, messages,
and the kernel predictions against the torch model on a small generated pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hybnn_cli.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tiny_pipeline, tmp_path_factory):
    """A task-3 BNN trained for 2 epochs on the tiny pipeline's codes, and its deploy file."""
    from hybnn_cli.data.tasks import parse_task
    from hybnn_cli.train import stages
    from hybnn_cli.train.configs import BNNConfig

    out = tmp_path_factory.mktemp("deploy")
    cfg = BNNConfig(task="task3", epochs=2, batch_size=32, threads=1)
    stages.train_task_bnn(tiny_pipeline["codes"], parse_task("3"), cfg, out / "bnn.pt")
    r = runner.invoke(app, ["export", str(out / "bnn.pt"), "--out", str(out / "bnn.h5"),
                            "--check", str(tiny_pipeline["codes"]), "--json"])
    assert r.exit_code == 0, r.output
    return {**tiny_pipeline, "bnn": out / "bnn.pt", "deploy": out / "bnn.h5", "out": out,
            "export": json.loads(r.stdout)}


def test_export_checks_against_torch(trained):
    res = trained["export"]
    assert res["check"]["mismatches"] == 0 and res["check"]["n"] == 128
    assert res["n_bits"] == 200 and res["hidden"] == 128 and res["n_classes"] == 2
    assert res["task"] == {"name": "task3", "classes": [4, 5]}


def test_predict_codes_matches_torch_accuracy(trained):
    from hybnn_cli.codes.store import read_codes
    from hybnn_cli.data.tasks import parse_task
    from hybnn_cli.deploy.export_head import torch_predict
    from hybnn_cli.models.checkpoint import load_bnn

    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--codes",
                            str(trained["codes"]), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    model, _ = load_bnn(trained["bnn"])
    c = read_codes(trained["codes"], "test")
    idx, y = parse_task("3").select(c.labels)
    _, pred = torch_predict(model, c.codes[idx])
    assert res["n"] == 128 and res["n_task"] == len(idx)
    assert res["accuracy"] == pytest.approx(float(np.mean(pred == y)))
    plain = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--codes",
                                str(trained["codes"]), "--split", "train"])
    assert plain.exit_code == 0 and "accuracy" in plain.stdout and "/train" in plain.stdout


def test_predict_images_png_npy_idx(trained):
    from hybnn_cli.data.datasets import load_split
    from hybnn_cli.data.tensors import images_to_tensor
    from hybnn_cli.models.checkpoint import load_bnn, load_vae

    images, _ = load_split("fake", "test", trained["root"])
    x = images[:3]
    png = trained["out"] / "digit.png"
    Image.fromarray(x[0]).save(png)
    npy = trained["out"] / "digits.npy"
    np.save(npy, x[1:3])
    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--encoder",
                            str(trained["vae"]), str(png), str(npy), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["labels"]
    vae, _ = load_vae(trained["vae"])
    bnn, _ = load_bnn(trained["bnn"])
    with torch.no_grad():
        codes = torch.where(vae.encoder(images_to_tensor(x)) < 0, -1.0, 1.0)
        want = [(4, 5)[i] for i in bnn(codes).argmax(1).tolist()]
    assert got == want
    idx = next(trained["root"].glob("fake/t10k-images*"))
    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--encoder",
                            str(trained["vae"]), str(idx)])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == 128


def test_predict_refuses_codes_from_another_encoder(trained, tmp_path):
    import h5py
    bad = tmp_path / "codes.h5"
    bad.write_bytes(trained["codes"].read_bytes())
    with h5py.File(bad, "r+") as f:
        f.attrs["encoder_sha256"] = "0" * 64
    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--codes", str(bad)])
    assert r.exit_code == 1
    assert "expects codes from encoder" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("args,msg", [
    (["export", "missing.pt", "--out", "x.h5"], "missing.pt: no such file"),
    (["predict", "--model", "missing.h5", "--codes", "c.h5"], "missing.h5: no such deploy file"),
    (["predict", "--model", "m.h5"], "give either --codes"),
    (["predict", "--model", "m.h5", "--codes", "c.h5", "--encoder", "v.pt"], "give either"),
    (["predict", "--model", "m.h5", "--encoder", "v.pt"], "needs image files"),
    (["predict", "--model", "runs/bundle", "x.png"], "runs/bundle: no such deploy file or bundle"),
    (["bench", "--threads", "64"], "--threads 64: at most"),
])
def test_bad_invocations_exit_1_with_one_line(args, msg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.h5").write_bytes(b"")  # a model that exists: the options are checked first
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_predict_rejects_bad_images_and_not_a_deploy_file(trained, tmp_path):
    txt = tmp_path / "x.npy"
    np.save(txt, np.zeros((2, 5, 5), np.uint8))
    r = runner.invoke(app, ["predict", "--model", str(trained["deploy"]), "--encoder",
                            str(trained["vae"]), str(txt)])
    assert r.exit_code == 1 and "expected 1×28×28 images (channels × height × width), got " \
        "1×5×5" in r.stderr
    r = runner.invoke(app, ["predict", "--model", str(trained["codes"]), "--codes",
                            str(trained["codes"])])
    assert r.exit_code == 1 and "not a hybnn deploy file" in r.stderr


def test_export_check_refuses_mismatched_encoder(trained, tmp_path):
    import h5py
    bad = tmp_path / "codes.h5"
    bad.write_bytes(trained["codes"].read_bytes())
    with h5py.File(bad, "r+") as f:
        f.attrs["encoder_sha256"] = "1" * 64
    r = runner.invoke(app, ["export", str(trained["bnn"]), "--out", str(tmp_path / "m.h5"),
                            "--check", str(bad)])
    assert r.exit_code == 1 and "expects codes from encoder" in r.stderr


def test_commands_have_help_with_an_example():
    for cmd in ("export", "predict", "bench"):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "Example" in r.stdout


def test_bench_quick_runs_end_to_end_with_every_check_passed(tmp_path, monkeypatch):
    """`hybnn bench --quick` once, for real: a child process without the OpenBLAS overrides, every
    case checked against its reference, a result file with its provenance header."""
    from hybnn_cli.bench import runner as bench
    from hybnn_cli.study.provenance import read_result

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # must not reach the benchmark process
    out, png = tmp_path / "bench.json", tmp_path / "speedup.png"
    r = runner.invoke(app, ["bench", "--quick", "--out", str(out), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "bench: square GEMM 512: checked" in r.stderr
    res = read_result(out, "hybnn-bench")
    assert res["format_version"] == bench.BENCH_VERSION and res["quick"] is True
    assert len(res["commit"]) == 40 and isinstance(res["dirty"], bool)
    assert res["machine"]["cores"] >= 1 and res["setup"]["threads"] == 2
    assert res["setup"]["openblas_env_in_parent"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert res["setup"]["openblas_env_in_bench"]["OPENBLAS_CORETYPE"] is None
    assert [c["name"] for c in res["cases"]] == [
        "head 200-128-2 b=4096", "head 200-128-2 b=1", "hidden 200-128 b=4096", "gemm 256",
        "gemm 512"]
    assert res["checks_passed"] is True and all(c["check"]["passed"] for c in res["cases"])
    for c in res["cases"]:
        ratios = [v for k, v in c.items() if k.startswith("speedup_vs_")]
        assert len(ratios) >= 4 and all(0 < v < float("inf") for v in ratios), c["name"]
    head = res["cases"][0]
    assert head["check"]["values"] == 4096
    for k in ("xnor", "numpy_f32", "torch_f32", "numpy_f32_matmul", "torch_f32_matmul"):
        assert head[k]["seconds"] > 0 and head[k]["repeats"] >= 3
    assert head["speedup_vs_best_float"] == pytest.approx(
        min(head["numpy_f32"]["seconds"], head["torch_f32"]["seconds"]) / head["xnor"]["seconds"])
    assert head["weight_bytes"] == {"binary": 128 * 4 * 8 + 2 * 2 * 8, "int8": 128 * 202,
                                    "float32": 4 * 128 * 202,
                                    "ratio": 4 * 128 * 202 / (128 * 4 * 8 + 2 * 2 * 8)}
    # every case has the int8 contenders; the headline is against the fastest dense contender of
    # any precision, the float32 and int8 ratios beside it, each naming its contender
    for c in res["cases"]:
        floats = [k for k in ("numpy_f32", "torch_f32", "numba_f32") if k in c]
        int8 = ["torch_int8", "ort_int8"]
        assert all(c[k]["seconds"] > 0 for k in int8), c["name"]
        records = [c["torch_int8"][k] for k in ("layer1", "layer2")] if "batch" in c else [
            c["torch_int8"]]  # torch._int_mm's shapes: a head calls it twice
        assert all("padded" in x and "shape" in x for x in records), c["name"]
        for key, group in (("best_float", floats), ("best_int8", int8),
                           ("best_dense", floats + int8)):
            best = min(group, key=lambda k, c=c: c[k]["seconds"])
            assert c[f"speedup_vs_{key}"] == pytest.approx(c[best]["seconds"]
                                                           / c["xnor"]["seconds"])
            assert c["fastest"][{"best_float": "float32"}.get(key, key[5:])] == best
    one = res["cases"][1]  # batch 1: the one-code head, the run() path timed beside it
    assert one["xnor"]["api"].startswith("BNNRuntime.one_sample()")
    assert one["xnor_run"]["api"].startswith("BNNRuntime.run(")
    assert one["xnor_run"]["seconds"] > 0 and one["check"]["values"] == 1
    assert one["numba_f32"]["api"].startswith("float_head.CompiledFloatHead")
    assert "numba_f32" not in head
    assert "head 200-128-2 b=1: XNOR is the one-code head (BNNRuntime.one_sample()" in r.stdout
    assert "head 200-128-2 b=1: the float32 head compiled" in r.stdout
    assert res["cases"][3]["weight_bytes"] == {"binary": 256 * 4 * 8, "int8": 256 * 256,
                                               "float32": 256 * 256 * 4, "ratio": 32.0}
    # the roofline: both peaks measured in the run, each contender over its own peak (measured
    # at the start of each of a case's 3 timing rounds: the run's bound is the highest of all,
    # each case is set against the highest of its own)
    roof = res["roofline"]
    assert len(roof["measured"]) == 3 * len(res["cases"])
    for peak in ("fma_f32", "xnor"):
        assert roof[peak]["ops_per_second"] == max(
            m[peak]["ops_per_second"] for m in roof["measured"])
    assert roof["ratio_bound"] == pytest.approx(
        roof["xnor"]["ops_per_second"] / roof["fma_f32"]["ops_per_second"])
    gemm = res["cases"][4]
    own = gemm["roofline"]["measured"]
    assert own == roof["measured"][12:15]
    best = {k: max(m[k]["ops_per_second"] for m in own) for k in ("xnor", "fma_f32")}
    assert gemm["fraction_of_peak"]["xnor"] == pytest.approx(
        gemm["xnor"]["ops_per_second"] / best["xnor"])
    assert gemm["fraction_of_peak"]["numpy_f32"] == pytest.approx(
        gemm["numpy_f32"]["ops_per_second"] / best["fma_f32"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SITECUSTOMIZE_WRONG_LABEL = """
import numpy as np
from hybnn_kernels import runtime

_run = runtime.BNNRuntime.run


def wrong_run(self, codes, threads=None, out=None):
    scores, labels = _run(self, codes, threads, out)
    labels[len(labels) // 2] ^= 1  # one wrong label
    return scores, labels


runtime.BNNRuntime.run = wrong_run
"""


def test_bench_fails_in_one_line_when_the_kernel_head_gives_a_wrong_label(tmp_path, monkeypatch):
    """The benchmark process runs with the runtime patched (through sitecustomize) to flip one
    label: the command must refuse its timings with one line and exit 1."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE_WRONG_LABEL)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    out = tmp_path / "bench.json"
    r = runner.invoke(app, ["bench", "--quick", "--json", "--out", str(out)])
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "Error: bench head 200-128-2 b=4096: XNOR head labels differ from the numpy_f32 float "
        "head's on 1 of 4096 samples; the timings of this run are not valid")
    assert r.stdout == "" and not out.exists()


def test_bench_case_fails_when_one_xnor_dot_product_is_wrong(monkeypatch):
    from hybnn_kernels import xnor

    from hybnn_cli.bench import runner as bench
    from hybnn_cli.errors import HybnnError

    right = xnor.xnor_gemm

    def one_bit_flipped(*args, **kwargs):
        out = right(*args, **kwargs)
        out[3, 5] ^= 2  # dot products are even for even K: flipping bit 1 gives another even one
        return out

    monkeypatch.setattr(xnor, "xnor_gemm", one_bit_flipped)
    with pytest.raises(HybnnError, match=r"^bench gemm 256: XNOR dot products differ from "
                       r"numpy_f32 on the same ±1 values at 1 of 65536 entries; the timings of "
                       r"this run are not valid$"):
        bench.bench_gemm(256, threads=1, quick=True)


def test_bench_child_reports_a_failed_check_as_json(monkeypatch, capsys):
    from hybnn_cli.bench import runner as bench
    from hybnn_cli.errors import HybnnError

    def failing(quick, threads):
        raise HybnnError("bench gemm 256: wrong")

    monkeypatch.setattr(bench, "run", failing)
    assert bench.main(["--quick"]) == 1
    assert json.loads(capsys.readouterr().out) == {"error": "bench gemm 256: wrong"}


def test_bench_clean_env_drops_the_openblas_overrides(monkeypatch):
    from hybnn_cli.bench import runner as bench

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    env = bench.clean_env()
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert json.loads(env["HYBNN_BENCH_PARENT_ENV"])["OPENBLAS_CORETYPE"] == "Haswell"


@pytest.mark.parametrize("shape", [(200, 128, 2), (65, 32, 5)])
def test_bench_network_and_float_head(shape):
    """The benchmark's BNN keeps every decision off the reachable dot values, and the float head
    built from it gives the TaskBNN module's labels (numpy and torch, two classes and more)."""
    from hybnn_kernels.bits import pack_bits

    from hybnn_cli.bench import float_head
    from hybnn_cli.bench import runner as bench
    from hybnn_cli.deploy.export_head import torch_predict
    from hybnn_cli.models.bnn import BNNShape

    shape = BNNShape(*shape)
    model = bench.bench_bnn(shape)
    k, h, c = shape.n_bits, shape.hidden, shape.n_classes

    def scale(bn):
        return (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs()

    with torch.no_grad():
        d1 = torch.arange(-k, k + 1, 2, dtype=torch.float32)[:, None].expand(-1, h).contiguous()
        assert torch.all(model.bn1(d1).abs() >= 0.99 * scale(model.bn1))
        d2 = torch.arange(-h, h + 1, 2, dtype=torch.float32)
        grid = torch.cartesian_prod(*[d2] * 2)  # every pair of output dots, for classes 0 and 1
        scores = model.bn2(torch.cat([grid, torch.zeros(len(grid), c - 2)], 1))
        gap = (scores[:, 0] - scores[:, 1]).abs()
        assert torch.all(gap >= 0.99 * 2 / c * scale(model.bn2)[0])
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(2000, k), dtype=np.uint8)
    x = bits.astype(np.float32) * 2 - 1
    _, want = torch_predict(model, pack_bits(bits))
    assert len(set(want.tolist())) == c  # every class occurs: the labels say something
    fh = float_head.fold(model)
    assert all(v.dtype == np.float32 for v in fh.values())
    with torch.inference_mode():
        heads, bufs = float_head.vector_heads(fh, x)
        for name, run in heads.items():
            run()
            np.testing.assert_array_equal(bufs[name]["labels"], want, err_msg=name)
