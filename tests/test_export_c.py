"""`hybnn export --c`: the C head, compiled by the system `cc` in strict C99 (with
`__builtin_popcountll` and with the plain fallback), gives the Python runtime's labels and scores
bit for bit on every code: on random heads of odd widths, on a BNN checkpoint (against torch too),
on a head trained on real codes of the tiny pipeline, and on real MNIST codes when HYBNN_DATA is
set. Bad inputs are one line with exit code 1 and leave no file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hybnn_kernels.bits import pack_bits
from hybnn_kernels.deploy_file import DEPLOY_FORMAT, DEPLOY_VERSION, read_deploy
from hybnn_kernels.h5attrs import write_attrs
from hybnn_kernels.head_numpy import NumpyHead
from hybnn_kernels.layout import n_words
from hybnn_kernels.runtime import BNNRuntime, load_deploy
from typer.testing import CliRunner

from hybnn_cli.cli import app
from hybnn_cli.deploy import export_c
from hybnn_cli.deploy.export_head import torch_predict
from hybnn_cli.models.bnn import BNNShape
from hybnn_cli.models.checkpoint import BNN_FORMAT, save_checkpoint
from tests.test_export import random_codes, trained_looking_bnn

CC = shutil.which("cc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler: `cc` is not on PATH")
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
VARIANTS = {"builtin": ["-O2"], "fallback": ["-O2", "-DHYBNN_NO_BUILTIN"]}

DRIVER = r"""/* reads packed codes (N_WORDS little-endian uint64 each) from argv[1]; prints per
   code: the label of _scores, the label of _classify, then each score's float32 bits in hex */
#include <stdio.h>
#include <string.h>
#include "@HEADER@"

int main(int argc, char **argv)
{
    uint64_t code[HYBNN_@UP@_N_WORDS];
    float scores[HYBNN_@UP@_N_CLASSES];
    FILE *f;
    int c;
    if (argc != 2 || (f = fopen(argv[1], "rb")) == NULL) {
        return 2;
    }
    while (fread(code, sizeof code[0], HYBNN_@UP@_N_WORDS, f) == HYBNN_@UP@_N_WORDS) {
        int label = hybnn_@NAME@_scores(code, scores);
        printf("%d %d", label, hybnn_@NAME@_classify(code));
        for (c = 0; c < HYBNN_@UP@_N_CLASSES; ++c) {
            uint32_t bits;
            memcpy(&bits, &scores[c], sizeof bits);
            printf(" %08lx", (unsigned long)bits);
        }
        printf("\n");
    }
    fclose(f);
    return 0;
}
"""


def export(model: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["export", str(model), "--c", str(out), *extra])


def run_c(out: Path, codes: np.ndarray, flags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Compile OUT.c with a driver (strict C99 + `flags`), run it on `codes`: (labels, scores
    as uint32 bits); the labels of `_classify` are checked equal to `_scores`' here."""
    name = export_c.c_name(out)
    header, source = export_c.out_paths(out)
    folder = out.parent
    driver = folder / f"driver_{name}.c"
    driver.write_text(DRIVER.replace("@HEADER@", header.name).replace("@UP@", name.upper())
                      .replace("@NAME@", name))
    exe = folder / f"driver_{name}_{len(flags)}"
    subprocess.run([CC, *STRICT, *flags, "-o", str(exe), str(source), str(driver)], check=True,
                   capture_output=True, text=True)
    data = folder / "codes.bin"
    np.ascontiguousarray(codes, dtype="<u8").tofile(data)
    lines = subprocess.run([str(exe), str(data)], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    assert len(lines) == len(codes)
    rows = [line.split() for line in lines]
    labels = np.array([int(r[0]) for r in rows], dtype=np.int64)
    assert [int(r[1]) for r in rows] == labels.tolist()  # classify = scores' label
    scores = np.array([[int(x, 16) for x in r[2:]] for r in rows], dtype=np.uint32)
    return labels, scores.reshape(len(codes), -1)


def assert_equal_to_runtime(out: Path, deploy_arrays, codes: np.ndarray) -> None:
    """The C head = the compiled runtime = the numpy head, labels and score bits, both builds."""
    rt = BNNRuntime.from_deploy(deploy_arrays)
    want_scores, want_labels = rt.run(codes)
    np_scores, np_labels = NumpyHead(deploy_arrays).run(codes)
    np.testing.assert_array_equal(np_labels, want_labels)
    for flags in VARIANTS.values():
        labels, scores = run_c(out, codes, flags)
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_array_equal(scores, want_scores.view(np.uint32))


def write_deploy_file(path: Path, w1, t1, w2, table, n_bits: int, meta: dict | None = None):
    """A deploy file of raw arrays, as `hybnn export --out` lays it out."""
    with h5py.File(path, "w") as f:
        write_attrs(f.attrs, {"format": DEPLOY_FORMAT, "format_version": DEPLOY_VERSION,
                              "n_bits": n_bits, "hidden": w1.shape[0], "n_classes": w2.shape[0],
                              "encoder_sha256": "ab" * 32, "seed": 7, "config": {"x": 1},
                              **(meta or {})})
        for name, arr in (("fc1/weights", w1), ("fc1/thresholds", t1), ("fc2/weights", w2),
                          ("fc2/score_table", table)):
            f.create_dataset(name, data=arr)


def random_head(n_bits: int, hidden: int, n_classes: int, seed: int):
    """Random packed weights (zero padding), thresholds over the whole reachable range and past
    it, and a score table with ties, ±0, subnormals and large values."""
    rng = np.random.default_rng(seed)
    w1 = pack_bits(rng.integers(0, 2, (hidden, n_bits)))
    t1 = rng.integers(-n_bits - 1, n_bits + 2, hidden).astype(np.int64)
    w2 = pack_bits(rng.integers(0, 2, (n_classes, hidden)))
    pool = np.array([0.0, -0.0, 1.0, -1.0, 1e-40, -3e-39, 3.4e38, 0.1, 2.5], dtype=np.float32)
    table = np.where(rng.random((n_classes, hidden + 1)) < 0.5,
                     rng.choice(pool, (n_classes, hidden + 1)),
                     rng.standard_normal((n_classes, hidden + 1)) * 10).astype(np.float32)
    return w1, t1, w2, table


@needs_cc
@pytest.mark.parametrize("n_bits,hidden,n_classes,seed", [
    (200, 128, 2, 0), (200, 512, 10, 1), (65, 70, 3, 2), (1, 1, 1, 3), (64, 64, 5, 4),
    (63, 129, 7, 5), (128, 200, 2, 6), (300, 33, 4, 7)])
def test_random_heads_equal_the_runtime_bit_for_bit(tmp_path, n_bits, hidden, n_classes, seed):
    w1, t1, w2, table = random_head(n_bits, hidden, n_classes, seed)
    model = tmp_path / "head.h5"
    classes = list(range(10, 10 + n_classes))
    write_deploy_file(model, w1, t1, w2, table, n_bits,
                      {"task": {"name": "any", "classes": classes}})
    r = export(model, tmp_path / "head-1", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["name"] == "head_1" and summary["classes"] == classes
    assert summary["model"]["kind"] == "deploy file"
    codes = random_codes(n_bits, 1500, seed)
    codes[:4] = 0  # all −1
    codes[4:8] = pack_bits(np.ones((4, n_bits), np.uint8))  # all +1
    assert_equal_to_runtime(tmp_path / "head-1", read_deploy(model), codes)
    assert f"{{{', '.join(map(str, classes))}}}" in (tmp_path / "head-1.c").read_text()


@needs_cc
def test_a_checkpoint_equals_torch_and_the_runtime(tmp_path):
    """From a BNN checkpoint (negative and zero batch-norm scales, ties at the thresholds): the C
    scores are torch's own, bit for bit; the header records where the head came from."""
    model = trained_looking_bnn(BNNShape(200, 128, 10), 3)
    ckpt = tmp_path / "bnn-all.pt"
    save_checkpoint(ckpt, BNN_FORMAT, model, {"task": "all", "lr": 0.03}, 5,
                    shape=model.shape.to_dict(), encoder_sha256="cd" * 32,
                    task={"name": "all", "classes": list(range(10))})
    out = tmp_path / "c" / "bnn-all"
    r = export(ckpt, out)
    assert r.exit_code == 0, r.output
    assert "hybnn_bnn_all_classify" in r.stdout
    codes = random_codes(200, 3000, 3)
    want_scores, want_labels = torch_predict(model, codes)
    for flags in VARIANTS.values():
        labels, scores = run_c(out, codes, flags)
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_array_equal(scores, want_scores.view(np.uint32))
    header = (tmp_path / "c" / "bnn-all.h").read_text()
    import hashlib

    for text in ("cd" * 32, hashlib.sha256(ckpt.read_bytes()).hexdigest(), "BNN checkpoint",
                 "seed 5", '"lr": 0.03', "hybnn 0.1.0", "word j / 64", "bits 8..63",
                 "#include <stdint.h>", "HYBNN_BNN_ALL_N_WORDS 4"):
        assert text in header, text
    # nothing but stdint.h is included, and nothing allocates
    both = header + (tmp_path / "c" / "bnn-all.c").read_text()
    assert [line for line in both.splitlines() if line.startswith("#include")] == [
        "#include <stdint.h>", '#include "bnn-all.h"']
    assert "malloc" not in both and "static uint64_t" not in both  # no global that is written


@needs_cc
def test_padding_bits_set_give_minus_one(tmp_path):
    w1, t1, w2, table = random_head(200, 16, 2, 9)
    model = tmp_path / "h.h5"
    write_deploy_file(model, w1, t1, w2, table, 200)
    assert export(model, tmp_path / "pad").exit_code == 0
    codes = random_codes(200, 3, 9)
    codes[1, 3] |= np.uint64(1) << np.uint64(200 - 192)  # bit 200: padding
    codes[2, 3] |= np.uint64(1) << np.uint64(63)
    with pytest.raises(ValueError):
        load_deploy(model).run(codes[1:2])  # the runtime refuses them too
    for flags in VARIANTS.values():
        labels, _ = run_c(tmp_path / "pad", codes, flags)
        assert labels[0] >= 0 and labels[1:].tolist() == [-1, -1]


@needs_cc
def test_a_head_trained_on_real_codes(tiny_pipeline, tmp_path):
    """The tiny pipeline's encoder codes, a BNN trained on them, exported as a checkpoint and as
    a deploy file: the same C, and the runtime's labels on every test code."""
    from hybnn_cli.codes.store import read_codes
    from tests.conftest import _train_bnn

    bnn = _train_bnn(tiny_pipeline, tmp_path, "all")
    deploy = tmp_path / "all.h5"
    assert CliRunner().invoke(app, ["export", str(bnn), "--out", str(deploy)]).exit_code == 0
    assert export(bnn, tmp_path / "from_pt").exit_code == 0
    assert export(deploy, tmp_path / "from_h5").exit_code == 0
    body = [(tmp_path / f"from_{k}.c").read_text().split("\n", 2)[2].replace(f"from_{k}", "x")
            .replace(f"FROM_{k.upper()}", "X") for k in ("pt", "h5")]
    assert body[0] == body[1]
    codes = read_codes(tiny_pipeline["codes"], "test").codes
    assert_equal_to_runtime(tmp_path / "from_h5", read_deploy(deploy), codes)


@needs_cc
@pytest.mark.slow
def test_real_mnist_codes(mnist_dir, tmp_path):
    """Every code of the MNIST test set (a seeded encoder; a 10-class BNN trained one epoch)."""
    from hybnn_cli.codes.extract import encode_batches
    from hybnn_cli.data.datasets import load_split
    from hybnn_cli.data.tensors import codes_to_tensor
    from hybnn_cli.models.bnn import TaskBNN
    from hybnn_cli.models.vae import BinaryVAE
    from hybnn_cli.train.bnn_loop import train_bnn
    from hybnn_cli.train.configs import BNNConfig

    images, labels = load_split("mnist", "test", mnist_dir)
    torch.manual_seed(0)
    vae = BinaryVAE(200).eval()
    codes = np.concatenate([c for _, c in encode_batches(vae.encoder, images, 2000)])
    x, y = codes_to_tensor(codes, 200), torch.from_numpy(labels.astype(np.int64))
    model = TaskBNN(BNNShape(200, 128, 10))
    cfg = BNNConfig(task="all", epochs=1, batch_size=256, threads=2)
    train_bnn(model, cfg, x, y, x[:256], y[:256], torch.optim.Adam(model.parameters(), lr=cfg.lr))
    model.eval()
    ckpt = tmp_path / "bnn.pt"
    save_checkpoint(ckpt, BNN_FORMAT, model, {"task": "all", "epochs": 1}, 0,
                    shape=model.shape.to_dict(), task={"name": "all", "classes": list(range(10))})
    assert export(ckpt, tmp_path / "mnist").exit_code == 0
    want_scores, want = torch_predict(model, codes)
    assert len(np.unique(want)) == 10  # not a constant model
    for flags in VARIANTS.values():
        got, scores = run_c(tmp_path / "mnist", codes, flags)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(scores, want_scores.view(np.uint32))


# ── bad inputs: one line, exit code 1, no file ─────────────────────────────────────────────────
@pytest.fixture
def small_deploy(tmp_path) -> Path:
    w1, t1, w2, table = random_head(200, 8, 2, 1)
    path = tmp_path / "small.h5"
    write_deploy_file(path, w1, t1, w2, table, 200)
    return path


def one_line_error(r, *words: str) -> None:
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("name,words", [
    ("3task", ["'3task' cannot name C functions"]), ("a.b", ["'a.b'"]), ("x y", ["'x y'"]),
    ("_x", ["start with a letter"]), ("a" * 65, ["at most 64"])])
def test_a_bad_name_is_refused(small_deploy, tmp_path, name, words):
    one_line_error(export(small_deploy, tmp_path / "out" / name), *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra,words", [
    (["--vae", "v.pt"], ["without --out, --vae"]), (["--int8"], ["--int8"]),
    (["--out", "x.h5"], ["--out"]), (["--check", "codes.h5"], ["--check"])])
def test_options_that_do_not_go_with_c(small_deploy, tmp_path, extra, words):
    one_line_error(export(small_deploy, tmp_path / "head", *extra), *words)
    assert not list(tmp_path.glob("head*"))


def test_other_bad_inputs(small_deploy, tmp_path):
    r = CliRunner().invoke(app, ["export", str(small_deploy), str(small_deploy), "--c",
                                 str(tmp_path / "two")])
    one_line_error(r, "2 models", "one head")
    one_line_error(export(tmp_path / "missing.pt", tmp_path / "h"), "missing.pt", "no such file")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    one_line_error(export(junk, tmp_path / "h"), "junk.pt", "not a readable checkpoint")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs["format"] = "something-else"
    one_line_error(export(foreign, tmp_path / "h"), "not a hybnn deploy file")
    (tmp_path / "dir.c").mkdir()
    one_line_error(export(small_deploy, tmp_path / "dir"), "is a folder")
    one_line_error(CliRunner().invoke(app, ["export", str(small_deploy)]), "--out", "--c")
    assert not list(tmp_path.glob("h.*")) and not (tmp_path / "dir.h").exists()


def test_non_finite_scores_are_refused(tmp_path):
    w1, t1, w2, table = random_head(200, 8, 2, 2)
    table[1, 3] = np.inf
    path = tmp_path / "inf.h5"
    write_deploy_file(path, w1, t1, w2, table, 200)
    one_line_error(export(path, tmp_path / "inf"), "non-finite")
    assert not list(tmp_path.glob("inf.[ch]"))


def test_both_files_or_neither(small_deploy, tmp_path, monkeypatch):
    """A failure while the files are renamed leaves neither (nor a temporary file); an existing
    pair is replaced whole by a new export."""
    import os

    real = os.replace
    calls = []

    def fail_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(export_c.os, "replace", fail_second)
    with pytest.raises(OSError):
        export_c.write_c_head(small_deploy, tmp_path / "pair")
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.h5"]
    monkeypatch.setattr(export_c.os, "replace", real)
    summary = export_c.write_c_head(small_deploy, tmp_path / "pair.c")  # the suffix is optional
    assert summary["header"] == str(tmp_path / "pair.h") and (tmp_path / "pair.c").is_file()
    assert n_words(200) == summary["n_words"]


@needs_cc
def test_the_docs_example_compiles_and_classifies(tmp_path):
    """docs/deploy.md's C example, compiled against an exported `task3` head, gives the runtime's
    labels on logits."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    example = text[text.index("```c\n") + 5:]
    example = example[:example.index("```")]
    w1, t1, w2, table = random_head(200, 128, 2, 11)
    model = tmp_path / "task3.h5"
    write_deploy_file(model, w1, t1, w2, table, 200, {"task": {"name": "task3",
                                                               "classes": [4, 5]}})
    assert export(model, tmp_path / "task3").exit_code == 0
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((50, 200)).astype(np.float32)
    logits[0, :] = 0.0  # a logit of 0 is the bit +1
    main = (example + "\n#include <stdio.h>\nint main(void)\n{\n    float x[200];\n"
            "    while (fread(x, sizeof x[0], 200, stdin) == 200) {\n"
            "        printf(\"%d\\n\", classify_image(x));\n    }\n    return 0;\n}\n")
    (tmp_path / "example.c").write_text(main)
    exe = tmp_path / "example"
    subprocess.run([CC, *STRICT, "-o", str(exe), str(tmp_path / "example.c"),
                    str(tmp_path / "task3.c")], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], input=logits.tobytes(), check=True, capture_output=True)
    got = [int(x) for x in out.stdout.split()]
    from hybnn_kernels.layout import pack_signs_numpy

    want = np.array([4, 5])[load_deploy(model).predict(pack_signs_numpy(logits))]
    assert got == want.tolist()


# ── the C head in the e2e benchmark (study.e2e_c_head): correctness only, speed is its job ────
@pytest.fixture(scope="module")
def small_bundle(tiny_pipeline, tmp_path_factory):
    """A float bundle with the 10-class head of the tiny pipeline, and its test images."""
    from hybnn_cli.data.datasets import load_split
    from tests.conftest import _train_bnn

    out = tmp_path_factory.mktemp("c-bundle")
    bnn = _train_bnn(tiny_pipeline, out, "all")
    r = CliRunner().invoke(app, ["export", str(bnn), "--vae", str(tiny_pipeline["vae"]), "--out",
                                 str(out / "bundle"), "--calibration", "50", "--data-dir",
                                 str(tiny_pipeline["root"])])
    assert r.exit_code == 0, r.output
    return out / "bundle", load_split("fake", "test", tiny_pipeline["root"])[0]


@needs_cc
def test_e2e_times_the_c_head_after_checking_it(small_bundle):
    from hybnn_cli.study import e2e_c_head

    bundle, images = small_bundle
    r = e2e_c_head.c_head_speed(bundle, images, "all", quick=True, n_codes=100)
    assert r["measured"] and r["codes"] == 100 and r["head"] == "all"
    assert len(r["checks"]) == 2 * len(e2e_c_head.BUILDS) and all(r["checks"].values())
    assert set(r["timing"]) == {*e2e_c_head.BUILDS, "runtime_one_sample"}
    for t in r["timing"].values():
        assert t["median_seconds"] > 0 and t["us_per_image"] == pytest.approx(
            1e6 * t["median_seconds"] / 100)
    text = e2e_c_head.c_head_text({"speed": {"c_head_batch_1": r}})
    assert "µs per code at batch 1" in text and "not measured" not in text
    assert f"{r['timing']['c_O2_native']['us_per_image']:.3f}" in text


@needs_cc
def test_e2e_refuses_a_c_head_that_answers_wrong(small_bundle, monkeypatch):
    from hybnn_cli.study import e2e_c_head

    wrong = e2e_c_head.DRIVER.replace("labels[i] = hybnn_head_classify(", "labels[i] = 1 + "
                                      "hybnn_head_classify(")
    assert wrong != e2e_c_head.DRIVER
    monkeypatch.setattr(e2e_c_head, "DRIVER", wrong)
    bundle, images = small_bundle
    with pytest.raises(SystemExit, match="a check failed"):
        e2e_c_head.c_head_speed(bundle, images, "all", quick=True, n_codes=50)


def test_e2e_without_cc_says_why(small_bundle, monkeypatch):
    from hybnn_cli.study import e2e_c_head

    monkeypatch.setattr(e2e_c_head.shutil, "which", lambda name: None)
    r = e2e_c_head.c_head_speed(*small_bundle, "all", quick=True)
    assert r == {"measured": False, "reason": "no C compiler (`cc`) on PATH"}
    assert "not measured (no C compiler" in e2e_c_head.c_head_text(
        {"speed": {"c_head_batch_1": r}})


def test_the_block_says_not_measured_for_a_file_without_the_c_head():
    from hybnn_cli.study import docgen

    text = docgen.RENDERERS["e2e-c-head"](docgen.RESULTS_DIR)
    rec = json.loads((docgen.RESULTS_DIR / "e2e.json").read_text())
    if "c_head_batch_1" not in rec["speed"]:
        assert "not measured (this file predates it)" in text
    assert "benchmarks/results/e2e.json" in text


@needs_cc
@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler: `c++` is not on PATH")
def test_a_cpp_host_links_the_c_head(tmp_path):
    """The header declares the functions extern "C": a C++ program calls the head compiled as C."""
    w1, t1, w2, table = random_head(70, 33, 3, 12)
    model = tmp_path / "h.h5"
    write_deploy_file(model, w1, t1, w2, table, 70)
    assert export(model, tmp_path / "cpp_head").exit_code == 0
    (tmp_path / "main.cpp").write_text(
        '#include <cstdio>\n#include "cpp_head.h"\nint main()\n{\n'
        "    uint64_t code[HYBNN_CPP_HEAD_N_WORDS] = {0};\n"
        '    std::printf("%d\\n", hybnn_cpp_head_classify(code));\n    return 0;\n}\n')
    obj = tmp_path / "cpp_head.o"
    subprocess.run([CC, *STRICT, "-c", "-o", str(obj), str(tmp_path / "cpp_head.c")], check=True)
    exe = tmp_path / "main"
    subprocess.run(["c++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o",
                    str(exe), str(tmp_path / "main.cpp"), str(obj)], check=True,
                   capture_output=True, text=True)
    got = int(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)
    assert got == int(load_deploy(model).predict(np.zeros((1, 2), np.uint64))[0])
