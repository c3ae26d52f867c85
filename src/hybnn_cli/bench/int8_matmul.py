"""The int8 contenders of `hybnn bench`: ±1 values as int8, multiplied exactly into int32 dot
products (|dot| <= K, far inside int32), the way a user reaches for int8 on a CPU:

- ``torch_int8``: `torch._int_mm` (int8 × int8 → int32; oneDNN on x86). torch's CUDA version
  wants M > 16 and K, N multiples of 8; the CPU version of torch 2.13 takes any shape.
  `int_mm_dims` finds out on the running build: it tries the shape once, and when torch refuses
  it, pads (M to at least 17, K and N up to multiples of 8, with zeros, which add nothing to a
  dot) and records torch's message;
- ``ort_int8``: ONNX Runtime's `MatMulInteger` with the weights as a constant of the graph (so
  ONNX Runtime may pack them once). Its fast x86 kernels take uint8 activations against int8
  weights (int8 × int8 falls to a slow generic path: tens of times slower here), so the
  activations are given as uint8 a + 1 ∈ {0, 2} with zero point 1: (a + 1) − 1 = a, exactly.

For a GEMM (`torch_int8_matmul`, `ort_int8_matmul`) each contender writes into a preallocated
int32 output; for the BNN head (`int8_heads`) each runs the folded head (`float_head.fold`) with
integer arithmetic up to the scores: d1 = x @ W1 (int8 → int32), h = d1 >= ⌈t1⌉ as 0/1 int8 (the
float head's comparison, exactly: d1 is an integer), d2' = h @ W2 (int8 → int32), scores =
d2' · 2s₂ + shift2 in float32, argmax. The inputs are prepared outside the timing, as the float
contenders' ±1 float32 values are.
"""

from __future__ import annotations

import numpy as np
from hybnn_kernels.checks import aligned_empty

_DIMS: dict = {}  # (m, k, n) → (dims torch._int_mm is called with, torch's refusal or None)


def int_mm_dims(m: int, k: int, n: int) -> tuple[tuple[int, int, int], str | None]:
    """The shape torch._int_mm computes an (m, k) × (k, n) product with on this build: (m, k, n)
    itself when torch accepts it, else padded with zeros to M >= 17 and K, N multiples of 8 (the
    CUDA rule); and the message torch refused the plain shape with (None when it did not)."""
    import torch

    key = (m, k, n)
    if key not in _DIMS:
        try:
            torch._int_mm(torch.zeros(m, k, dtype=torch.int8), torch.zeros(k, n, dtype=torch.int8))
            _DIMS[key] = (key, None)
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            _DIMS[key] = ((max(m, 17), -(-k // 8) * 8, -(-n // 8) * 8),
                          f"torch._int_mm refused {key}: {first}")
    return _DIMS[key]


def _padding_record(shape, dims, why) -> dict:
    """What a result records of torch._int_mm's shape: the product's, and when it was padded,
    the shape computed and why."""
    if tuple(dims) == tuple(shape):
        return {"padded": False, "shape": list(shape)}
    return {"padded": True, "shape": list(shape), "computed_shape": list(dims), "why": why}


def _padded(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), x.dtype)
    out[: x.shape[0], : x.shape[1]] = x
    return out


def torch_int8_matmul(a: np.ndarray, w: np.ndarray, dims=None):
    """`torch._int_mm` of a (M, K) int8 by wᵀ (w (N, K) int8), into a preallocated int32 output:
    (contender, output (M, N) int32 — a view of the padded output when padding was needed, info:
    the padding record). `dims` forces the computed shape (tests of the padded path)."""
    import torch

    (m, k), n = a.shape, w.shape[0]
    why = None
    if dims is None:
        dims, why = int_mm_dims(m, k, n)
    elif tuple(dims) != (m, k, n):
        why = "padding forced by the caller"
    mp, kp, np_ = dims
    ap = _padded(a, mp, kp) if (mp, kp) != (m, k) else np.ascontiguousarray(a)
    wt = np.ascontiguousarray(_padded(w, np_, kp).T)  # (K, N): x @ W
    outp = aligned_empty((mp, np_), np.int32)
    ta, tw, to = torch.from_numpy(ap), torch.from_numpy(wt), torch.from_numpy(outp)
    return (lambda: torch._int_mm(ta, tw, out=to), outp[:m, :n],
            _padding_record((m, k, n), dims, why))


def _session(model, threads: int):
    """An ONNX Runtime session of an in-memory model, set up as the bundle's sessions are."""
    from hybnn_kernels.pipeline import make_session

    return make_session(model.SerializeToString(), threads)


def _model(nodes, inputs, outputs, inits):
    from onnx import helper

    graph = helper.make_graph(nodes, "hybnn_bench_int8", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def as_uint8_activations(a: np.ndarray) -> np.ndarray:
    """±1 int8 values as the uint8 activations `ort_int8` takes: a + 1 ∈ {0, 2} (zero point 1)."""
    return (a.astype(np.int16) + 1).astype(np.uint8)


def _bind(session, inputs: dict, outputs: dict):
    """An IOBinding of the session's inputs and outputs to numpy arrays (outputs preallocated:
    ONNX Runtime writes into them), and the zero-argument call that runs it."""
    io = session.io_binding()
    for name, arr in inputs.items():
        io.bind_cpu_input(name, arr)
    for name, arr in outputs.items():
        io.bind_output(name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
    return lambda: session.run_with_iobinding(io)


def ort_int8_matmul(a: np.ndarray, w: np.ndarray, threads: int):
    """ONNX Runtime's MatMulInteger of a (M, K) ±1 int8 by wᵀ (w (N, K) ±1 int8), the weights a
    constant of the graph, into a preallocated int32 output: (contender, output (M, N) int32,
    info)."""
    from onnx import TensorProto, helper, numpy_helper

    (m, k), n = a.shape, w.shape[0]
    au = as_uint8_activations(a)
    out = aligned_empty((m, n), np.int32)
    model = _model(
        [helper.make_node("MatMulInteger", ["a", "w", "a_zero_point"], ["y"])],
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["m", n])],
        [numpy_helper.from_array(np.ascontiguousarray(w.T), "w"),
         numpy_helper.from_array(np.array(1, np.uint8), "a_zero_point")])
    run = _bind(_session(model, threads), {"a": au}, {"y": out})
    return run, out, {"op": "MatMulInteger", "activations": "uint8 a + 1, zero point 1",
                      "weights": "int8, a constant of the graph"}


def int_thresholds(t1: np.ndarray, n_in: int) -> np.ndarray:
    """The float head's thresholds as int32 on integer dots: d >= t ⇔ d >= ⌈t⌉ (±inf, a neuron
    always or never on, clipped just past the reachable dots −n_in … n_in)."""
    return np.clip(np.ceil(t1.astype(np.float64)), -n_in - 1, n_in + 1).astype(np.int32)


def int8_heads(fh: dict, x: np.ndarray, threads: int, dims=None) -> tuple[dict, dict, dict]:
    """The folded head `fh` (`float_head.fold`) in int8 on ±1 inputs x (B, n_bits) (any dtype
    holding ±1): torch (`torch._int_mm` twice, `ge`, `mul`, `add_`, label) and ONNX Runtime (one
    graph: MatMulInteger, GreaterOrEqual, Cast, MatMulInteger, Cast, Mul, Add, ArgMax), each
    writing into its own preallocated buffers: (contenders, buffers per contender: scores,
    labels, and for torch the hidden h ∈ {0, 1}, info per contender). Call the torch one inside
    `torch.inference_mode`. `dims` forces torch's padded shapes as {"layer1": (B, K, H),
    "layer2": (B, H, C)} (tests); padded classes never win (their shift is −inf)."""
    n_in = fh["w1"].shape[0]
    x8 = np.ascontiguousarray(x, dtype=np.int8)
    w1 = fh["w1"].astype(np.int8)  # (n_in, hidden) ±1
    w2 = fh["w2"].astype(np.int8)  # (hidden, n_classes) ±1
    t1 = int_thresholds(fh["t1"], n_in)
    torch_head, tbuf, tinfo = _torch_int8_head(x8, w1, t1, w2, fh, dims or {})
    ort_head, obuf = _ort_int8_head(x8, w1, t1, w2, fh, threads)
    info = {"torch_int8": tinfo,
            "ort_int8": {"op": "one graph: MatMulInteger (uint8 x + 1, zero point 1) → "
                         "GreaterOrEqual → Cast → MatMulInteger → Cast → Mul → Add → ArgMax"}}
    return ({"torch_int8": torch_head, "ort_int8": ort_head},
            {"torch_int8": tbuf, "ort_int8": obuf}, info)


def _torch_int8_head(x8, w1, t1, w2, fh: dict, forced: dict):
    """The int8 head in torch: (contender, buffers h, scores, labels, padding record). Every
    buffer at the shapes torch._int_mm takes (padding, where needed, is zeros in x and W1,
    neurons that never fire, classes that never win)."""
    import torch

    b, (n_in, hidden), n_classes = x8.shape[0], w1.shape, w2.shape[1]
    scale2, shift2 = fh["scale2"], fh["shift2"]
    (bp, kp, hp), why1 = ((forced["layer1"], "padding forced by the caller") if "layer1" in forced
                          else int_mm_dims(b, n_in, hidden))
    (bp2, hp2, cp), why2 = ((forced["layer2"], "padding forced by the caller")
                            if "layer2" in forced else int_mm_dims(bp, hp, n_classes))
    if (bp2, hp2) != (bp, hp):  # layer 2's rows and inner size are layer 1's outputs
        raise ValueError(f"torch._int_mm's shapes of the two layers do not chain: "
                         f"{(bp, kp, hp)} then {(bp2, hp2, cp)}")
    tx = torch.from_numpy(_padded(x8, bp2, kp))
    tw1 = torch.from_numpy(_padded(w1, kp, hp2))
    tt1 = torch.from_numpy(np.concatenate([t1, np.full(hp2 - hidden, n_in + 1, np.int32)]))
    tw2 = torch.from_numpy(_padded(w2, hp2, cp))
    tscale = torch.from_numpy(np.concatenate([scale2, np.zeros(cp - n_classes, np.float32)]))
    tshift = torch.from_numpy(np.concatenate([shift2, np.full(cp - n_classes, -np.inf,
                                                                np.float32)]))
    d1 = torch.empty((bp2, hp2), dtype=torch.int32)
    hbool = torch.empty((bp2, hp2), dtype=torch.bool)
    h8 = hbool.view(torch.int8)
    d2 = torch.empty((bp2, cp), dtype=torch.int32)
    tsc = torch.empty((bp2, cp), dtype=torch.float32)
    tlab = torch.empty(bp2, dtype=torch.int64)
    ts0, ts1 = tsc[:, 0], tsc[:, 1]

    def torch_head():
        torch._int_mm(tx, tw1, out=d1)
        torch.ge(d1, tt1, out=hbool)
        torch._int_mm(h8, tw2, out=d2)
        torch.mul(d2, tscale, out=tsc)
        tsc.add_(tshift)
        if n_classes == 2:
            torch.gt(ts1, ts0, out=tlab)
        else:
            torch.argmax(tsc, 1, out=tlab)

    tbuf = {"h": h8.numpy()[:b, :hidden], "scores": tsc.numpy()[:b, :n_classes],
            "labels": tlab.numpy()[:b]}
    info = {"layer1": _padding_record((b, n_in, hidden), (bp2, kp, hp2), why1),
            "layer2": _padding_record((b, hidden, n_classes), (bp2, hp2, cp), why2)}
    return torch_head, tbuf, info


def _ort_int8_head(x8, w1, t1, w2, fh: dict, threads: int):
    """The int8 head in ONNX Runtime, the whole head as one graph: (contender, buffers scores,
    labels)."""
    from onnx import TensorProto, helper, numpy_helper

    b, n_in, n_classes = x8.shape[0], w1.shape[0], w2.shape[1]
    au = as_uint8_activations(x8)
    obuf = {"scores": np.empty((b, n_classes), np.float32), "labels": np.empty(b, np.int64)}
    T = TensorProto
    model = _model(
        [helper.make_node("MatMulInteger", ["x", "w1", "x_zero_point"], ["d1"]),
         helper.make_node("GreaterOrEqual", ["d1", "t1"], ["hb"]),
         helper.make_node("Cast", ["hb"], ["h"], to=T.UINT8),
         helper.make_node("MatMulInteger", ["h", "w2"], ["d2"]),
         helper.make_node("Cast", ["d2"], ["d2f"], to=T.FLOAT),
         helper.make_node("Mul", ["d2f", "scale2"], ["scaled"]),
         helper.make_node("Add", ["scaled", "shift2"], ["scores"]),
         helper.make_node("ArgMax", ["scores"], ["labels"], axis=1, keepdims=0)],
        [helper.make_tensor_value_info("x", T.UINT8, ["b", n_in])],
        [helper.make_tensor_value_info("scores", T.FLOAT, ["b", n_classes]),
         helper.make_tensor_value_info("labels", T.INT64, ["b"])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(t1, "t1"),
         numpy_helper.from_array(np.array(1, np.uint8), "x_zero_point"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(fh["scale2"], "scale2"),
         numpy_helper.from_array(fh["shift2"], "shift2")])
    return _bind(_session(model, threads), {"x": au}, obuf), obuf


def score_reference(h: np.ndarray, fh: dict) -> np.ndarray:
    """The int8 heads' scores from exact hidden bits h (B, hidden) ∈ {0, 1}: (h @ W2) · 2s₂ +
    shift2, the product exact in int64, then one float32 multiply and one add (what both int8
    heads compute, so their scores must equal this bit for bit)."""
    d2 = h.astype(np.int64) @ fh["w2"].astype(np.int64)
    return d2.astype(np.float32) * fh["scale2"] + fh["shift2"]
