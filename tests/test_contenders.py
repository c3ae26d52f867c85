"""The benchmark's dense contenders compute what they stand for: the int8 matmuls (torch._int_mm,
ONNX Runtime's MatMulInteger) equal the naive ±1 dot products on random shapes, padded or not;
the int8 heads and the compiled float head give the TaskBNN's labels and the torch float head's
hidden bits and scores. Correctness only: speed is the benchmark's job."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybnn_cli.bench import float_head, int8_matmul
from hybnn_cli.bench.runner import bench_bnn
from hybnn_cli.deploy.export_head import torch_predict
from hybnn_cli.models.bnn import BNNShape
from tests.naive import pack_ref, xnor_gemm_ref

# odd M, K below, at and past a word (64), N not a multiple of 8
SHAPES = [(1, 200, 128), (3, 65, 7), (17, 64, 8), (33, 129, 31), (2, 1, 1), (70, 257, 65)]


def _signs(rng, rows, n):
    bits = rng.integers(0, 2, size=(rows, n), dtype=np.uint8)
    return bits, (bits.astype(np.int8) * 2 - 1)


def _cuda_rule(m, k, n):
    return (max(m, 17), -(-k // 8) * 8, -(-n // 8) * 8)


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int8_matmuls_equal_the_naive_dot_products(m, k, n):
    rng = np.random.default_rng(m * 1000 + k)
    abits, a = _signs(rng, m, k)
    wbits, w = _signs(rng, n, k)
    want = xnor_gemm_ref(pack_ref(abits), pack_ref(wbits), k)
    for dims in (None, _cuda_rule(m, k, n)):  # as torch takes it here, and padded
        run, out, info = int8_matmul.torch_int8_matmul(a, w, dims)
        with torch.inference_mode():
            run()
        np.testing.assert_array_equal(out, want, err_msg=f"torch_int8 dims={dims}")
        assert out.shape == (m, n) and out.dtype == np.int32
        assert info["padded"] == (dims is not None and tuple(dims) != (m, k, n))
    for threads in (1, 2):
        run, out, _ = int8_matmul.ort_int8_matmul(a, w, threads)
        run()
        np.testing.assert_array_equal(out, want, err_msg=f"ort_int8 threads={threads}")


def test_torch_2_13_on_cpu_takes_any_shape():
    """What the benchmark records: torch 2.13's CPU _int_mm needs no padding (its CUDA version
    wants M > 16 and K, N multiples of 8)."""
    for m, k, n in SHAPES:
        assert int8_matmul.int_mm_dims(m, k, n) == ((m, k, n), None)


def test_a_refused_shape_is_padded_and_the_reason_recorded(monkeypatch):
    """Where torch refuses a shape (its CUDA rule, simulated), the product is computed on a
    zero-padded copy and stays exact; the record says so and why."""
    real = torch._int_mm

    def strict(a, b, out=None):
        if a.shape[0] <= 16 or a.shape[1] % 8 or b.shape[1] % 8:
            raise RuntimeError("self.size(0) needs to be greater than 16\nmore")
        return real(a, b) if out is None else real(a, b, out=out)

    monkeypatch.setattr(int8_matmul, "_DIMS", {})
    monkeypatch.setattr(torch, "_int_mm", strict)
    rng = np.random.default_rng(0)
    abits, a = _signs(rng, 3, 65)
    wbits, w = _signs(rng, 7, 65)
    run, out, info = int8_matmul.torch_int8_matmul(a, w)
    run()
    np.testing.assert_array_equal(out, xnor_gemm_ref(pack_ref(abits), pack_ref(wbits), 65))
    assert info == {"padded": True, "shape": [3, 65, 7], "computed_shape": [17, 72, 8],
                    "why": "torch._int_mm refused (3, 65, 7): self.size(0) needs to be greater "
                           "than 16"}


def test_int_thresholds_decide_as_the_float_comparison():
    t = np.array([-np.inf, np.inf, -3.5, -3.0, 0.0, 2.25, 7.0, 1e9], np.float32)
    ti = int8_matmul.int_thresholds(t, 8)
    d = np.arange(-8, 9)[:, None]  # every reachable dot of 8 ±1 terms (and more)
    np.testing.assert_array_equal(d >= ti, d >= t)


@pytest.mark.parametrize("shape", [(200, 128, 2), (65, 33, 5)])
@pytest.mark.parametrize("batch", [1, 37])
@pytest.mark.parametrize("padded", [False, True])
def test_int8_heads_give_the_taskbnn_labels_and_exact_scores(shape, batch, padded):
    shape = BNNShape(*shape)
    model = bench_bnn(shape)
    fh = float_head.fold(model)
    rng = np.random.default_rng(batch)
    bits, x = _signs(rng, batch, shape.n_bits)
    _, want = torch_predict(model, pack_ref(bits))
    w1bits = (fh["w1"].T > 0).astype(np.uint8)
    h = xnor_gemm_ref(pack_ref(bits), pack_ref(w1bits), shape.n_bits) >= fh["t1"]
    dims = None
    if padded:
        l1 = _cuda_rule(batch, shape.n_bits, shape.hidden)
        dims = {"layer1": l1, "layer2": _cuda_rule(l1[0], l1[2], shape.n_classes)}
    with torch.inference_mode():
        runs, bufs, info = int8_matmul.int8_heads(fh, x, threads=2, dims=dims)
        for run in runs.values():
            run()
    want_scores = int8_matmul.score_reference(h, fh)
    for name, buf in bufs.items():
        np.testing.assert_array_equal(buf["labels"], want, err_msg=name)
        np.testing.assert_array_equal(buf["scores"].view(np.uint32),
                                      want_scores.view(np.uint32), err_msg=name)
    np.testing.assert_array_equal(bufs["torch_int8"]["h"], h)
    assert info["torch_int8"]["layer2"]["padded"] == padded


@pytest.mark.parametrize("shape", [(200, 128, 2), (65, 33, 5), (7, 3, 3)])
def test_compiled_float_head_equals_the_torch_float_head(shape):
    """One input at a time, the compiled head gives the torch float head's hidden bits and
    labels (and the TaskBNN's) and its scores up to float rounding (its sums run in another
    order), on random inputs; hidden sizes that are and are not multiples of its block of 4."""
    shape = BNNShape(*shape)
    model = bench_bnn(shape)
    fh = float_head.fold(model)
    rng = np.random.default_rng(1)
    bits, x8 = _signs(rng, 300, shape.n_bits)
    x = x8.astype(np.float32)
    _, want = torch_predict(model, pack_ref(bits))
    with torch.inference_mode():
        runs, bufs = float_head.vector_heads(fh, x)
        runs["torch_f32"]()
    ref = bufs["torch_f32"]
    head = float_head.CompiledFloatHead(fh)
    labels, hidden, scores = [], [], []
    for row in x:
        head.x[:] = row
        labels.append(head())
        hidden.append(head.h.copy())
        scores.append(head.scores.copy())
    np.testing.assert_array_equal(labels, ref["labels"])
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_array_equal(np.array(hidden), ref["h"])
    np.testing.assert_allclose(np.array(scores), ref["scores"], rtol=1e-5, atol=1e-5)
    assert isinstance(labels[0], int)
    with pytest.raises(AttributeError):
        head.x = np.zeros(shape.n_bits, np.float32)  # the compiled code reads the buffer by address
