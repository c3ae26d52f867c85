"""The float32 BNN head at its best: the contender `hybnn bench` and `benchmarks/e2e.py` set the
XNOR head against (a contender, not the runtime: deployment runs `hybnn_kernels`).

- `fold(model)`: a TaskBNN's head prepared once — weights signed to ±1 float32, batch norm folded
  into a threshold per hidden neuron and into the output layer's weights and bias;
- `vector_heads(fh, x)`: that head in numpy and in torch on a batch of ±1 inputs, every step
  writing into a preallocated buffer;
- `CompiledFloatHead(fh)`: the same head for one input at a time, compiled (Numba), entered the
  way the XNOR one-code head is (`hybnn_kernels.one_sample`): a C callback taking one pointer to
  a context of addresses and shapes fixed when the head is made, called through ctypes without a
  Python frame, so that at batch 1 a comparison with the XNOR head measures arithmetic, not call
  overhead.

    head = CompiledFloatHead(fold(model))
    head.x[:] = signs                 # ±1 float32 (n_bits,)
    label = head()                    # head.scores holds the class scores
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
from hybnn_kernels.one_sample import _pointer, entry_of
from numba import carray


def fold(model) -> dict:
    """The float32 head of a TaskBNN at its best, prepared once:

    - weights signed once to ±1 float32, laid out (in, out) for x @ W;
    - batch norm folded into a per-neuron scale s and shift b, s·d + b. In the hidden layer only
      the side of zero matters (sign), so it reduces to one threshold per neuron on the dot:
      s·d + b >= 0 ⇔ sign(s)·d >= −b/|s| — the weights of neurons with s < 0 are negated once;
    - the hidden layer then yields h ∈ {0, 1} (the comparison's result, written in place), and
      ±1 = 2h − 1, so the output dot is d2 = 2·(h @ W2) − ΣW2 and the scores s₂·d2 + b₂ are one
      matrix product with a bias: h @ (2s₂·W2) + (b₂ − s₂·ΣW2).

    Returns float32 arrays w1 (n_bits, hidden), t1 (hidden,), w2s = 2s₂·W2 (hidden, n_classes),
    shift2 (n_classes,), and w2 = ±1 W2 (hidden, n_classes), w2_sum (n_classes,), scale2 = 2s₂
    (n_classes,) for the checks and the int8 head (`int8_matmul`): w2s = w2 · scale2 exactly.
    """
    import torch

    def sign(w):
        return torch.where(w < 0, -1.0, 1.0)

    def scale_shift(bn):
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return s, bn.bias - bn.running_mean * s

    with torch.no_grad():
        s1, b1 = scale_shift(model.bn1)
        w1 = sign(model.fc1.weight) * torch.where(s1 < 0, -1.0, 1.0)[:, None]
        t1 = torch.where(s1 == 0, torch.where(b1 >= 0, -torch.inf, torch.inf), -b1 / s1.abs())
        w2 = sign(model.fc2.weight)
        s2, b2 = scale_shift(model.bn2)
        w2_sum = w2.sum(1)
        arrays = {"w1": w1.T, "t1": t1, "w2s": (w2 * (2 * s2)[:, None]).T,
                  "shift2": b2 - s2 * w2_sum, "w2": w2.T, "w2_sum": w2_sum, "scale2": 2 * s2}
        return {k: np.ascontiguousarray(v.numpy(), dtype=np.float32) for k, v in arrays.items()}


def vector_heads(fh: dict, x) -> tuple[dict, dict]:
    """numpy and torch versions of the folded head `fh` on ±1 float32 inputs x (B, n_bits), each
    writing into its own preallocated buffers: (contenders, buffers per contender: hidden h ∈
    {0, 1}, scores, labels). Call the torch one inside `torch.inference_mode`.

    numpy: x @ W1 → h, h >= t1 → h, [h, 1] @ [W2s; shift2] → scores (h has a constant column of
    ones, so the bias costs no call), argmax. torch: matmul, ge, addmm (bias and product in one
    call), argmax. With two classes the argmax is one comparison, score₁ > score₀ (ties → class 0,
    as argmax)."""
    import torch

    b, hidden, n_classes = x.shape[0], fh["w1"].shape[1], fh["w2s"].shape[1]
    w1, t1 = fh["w1"], fh["t1"]
    w2b = np.ascontiguousarray(np.vstack([fh["w2s"], fh["shift2"][None]]))
    hb = np.ones((b, hidden + 1), np.float32)
    nb = {"h": hb[:, :hidden], "scores": np.empty((b, n_classes), np.float32),
          "labels": np.empty(b, np.int64)}
    h, sc, lab = nb["h"], nb["scores"], nb["labels"]
    s0, s1 = sc[:, 0], sc[:, -1]

    def numpy_head():
        np.matmul(x, w1, out=h)
        np.greater_equal(h, t1, out=h)
        np.matmul(hb, w2b, out=sc)
        if n_classes == 2:
            np.greater(s1, s0, out=lab)
        else:
            np.argmax(sc, axis=1, out=lab)

    tb = {"h": np.empty((b, hidden), np.float32), "scores": np.empty((b, n_classes), np.float32),
          "labels": np.empty(b, np.int64)}
    tx, tw1, tt1, tw2s, tshift2 = (torch.from_numpy(a) for a in
                                    (x, w1, t1, fh["w2s"], fh["shift2"]))
    th, tsc, tlab = (torch.from_numpy(tb[k]) for k in ("h", "scores", "labels"))
    ts0, ts1 = tsc[:, 0], tsc[:, -1]

    def torch_head():
        torch.matmul(tx, tw1, out=th)
        torch.ge(th, tt1, out=th)
        torch.addmm(tshift2, th, tw2s, out=tsc)
        if n_classes == 2:
            torch.gt(ts1, ts0, out=tlab)
        else:
            torch.argmax(tsc, 1, out=tlab)

    return {"numpy_f32": numpy_head, "torch_f32": torch_head}, {"numpy_f32": nb, "torch_f32": tb}


# ── the compiled head for one input ──────────────────────────────────────────────────────────
# The context array: addresses of the head's constant arrays and buffers, and the shapes.
(_X, _W1, _T1, _W2S, _SHIFT2, _H, _SCORES, _N_IN, _HIDDEN, _N_CLASSES, _CONTEXT) = range(11)
# Reassociation lets LLVM vectorize the dot products. In the hidden layer it changes nothing: the
# dots of ±1 values are small integers, exact in float32 in any order. In the output layer it
# changes the rounding of the scores (as BLAS's blocking does for numpy's and torch's heads).
_FASTMATH = {"reassoc", "contract"}


def _float_head_one(context):
    """The label of the input in the context's buffer x, its scores written: the hidden layer four
    neurons at a time (one load of x feeds four dot products; the weights are neuron rows), each
    dot compared with its threshold into h ∈ {0, 1}, then scores = shift2 + h @ W2s, argmax
    (ties → the first class)."""
    ctx = carray(context, (_CONTEXT,), np.int64)
    n_in, hidden, n_classes = ctx[_N_IN], ctx[_HIDDEN], ctx[_N_CLASSES]
    x = carray(_pointer(ctx[_X]), (n_in,), np.float32)
    w1 = carray(_pointer(ctx[_W1]), (hidden, n_in), np.float32)
    t1 = carray(_pointer(ctx[_T1]), (hidden,), np.float32)
    w2s = carray(_pointer(ctx[_W2S]), (n_classes, hidden), np.float32)
    shift2 = carray(_pointer(ctx[_SHIFT2]), (n_classes,), np.float32)
    h = carray(_pointer(ctx[_H]), (hidden,), np.float32)
    scores = carray(_pointer(ctx[_SCORES]), (n_classes,), np.float32)
    one, zero = np.float32(1.0), np.float32(0.0)
    full = hidden - hidden % 4
    for j in range(0, full, 4):
        a0 = a1 = a2 = a3 = zero
        for k in range(n_in):
            xk = x[k]
            a0 += xk * w1[j, k]
            a1 += xk * w1[j + 1, k]
            a2 += xk * w1[j + 2, k]
            a3 += xk * w1[j + 3, k]
        h[j] = one if a0 >= t1[j] else zero
        h[j + 1] = one if a1 >= t1[j + 1] else zero
        h[j + 2] = one if a2 >= t1[j + 2] else zero
        h[j + 3] = one if a3 >= t1[j + 3] else zero
    for j in range(full, hidden):
        a0 = zero
        for k in range(n_in):
            a0 += x[k] * w1[j, k]
        h[j] = one if a0 >= t1[j] else zero
    label = 0
    for c in range(n_classes):
        s = zero
        for j in range(hidden):
            s += h[j] * w2s[c, j]
        scores[c] = s + shift2[c]
        if scores[c] > scores[label]:
            label = c
    return label


class CompiledFloatHead(functools.partial):
    """The folded float32 head (`fold`) for one input at a time, with its own buffers: ``x``
    (n_bits,) float32 in, ``scores`` (n_classes,) float32 and ``h`` (hidden,) float32 ∈ {0, 1}
    (the hidden layer's outputs) out; ``head()`` returns the label. The compiled entry applied to
    the head's context, as `hybnn_kernels.one_sample.OneSampleHead` is: a call of C code from C,
    without a Python frame. The buffers are fixed when the head is made (the compiled code reads
    them by address); threads that classify at once each make their own head."""

    def __new__(cls, fh: dict):
        n_in, hidden = fh["w1"].shape
        n_classes = fh["w2s"].shape[1]
        w1 = np.ascontiguousarray(fh["w1"].T, dtype=np.float32)  # neuron rows (hidden, n_in)
        w2s = np.ascontiguousarray(fh["w2s"].T, dtype=np.float32)  # class rows
        t1 = np.ascontiguousarray(fh["t1"], dtype=np.float32)
        shift2 = np.ascontiguousarray(fh["shift2"], dtype=np.float32)
        x = np.zeros(n_in, np.float32)
        h = np.zeros(hidden, np.float32)
        scores = np.zeros(n_classes, np.float32)
        context = np.zeros(_CONTEXT, dtype=np.int64)
        for i, a in ((_X, x), (_W1, w1), (_T1, t1), (_W2S, w2s), (_SHIFT2, shift2), (_H, h),
                     (_SCORES, scores)):
            context[i] = a.ctypes.data
        context[[_N_IN, _HIDDEN, _N_CLASSES]] = [n_in, hidden, n_classes]
        head = super().__new__(cls, entry_of(_float_head_one, _FASTMATH),
                               ctypes.c_void_p(context.ctypes.data))
        head._keep = (context, w1, w2s, t1, shift2)  # everything the context points into
        head._x, head._h, head._scores = x, h, scores
        return head

    @property
    def x(self) -> np.ndarray:
        """The input buffer, (n_bits,) float32: the ±1 values the next call classifies."""
        return self._x

    @property
    def h(self) -> np.ndarray:
        """The hidden layer's outputs of the last call, (hidden,) float32 ∈ {0, 1}."""
        return self._h

    @property
    def scores(self) -> np.ndarray:
        """The class scores of the last call, (n_classes,) float32."""
        return self._scores
