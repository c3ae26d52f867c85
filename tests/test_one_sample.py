"""The one-code-at-a-time head (`BNNRuntime.one_sample`): the same scores as torch, bit for bit,
on odd shapes (bit lengths and widths that are not multiples of 64), ties included; padding bits
refused; its buffers fixed; and the same answers with the kernel variant this CPU does not pick."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hybnn_kernels import tile

from hybnn_cli.deploy.export_head import runtime_from_model, torch_predict
from hybnn_cli.models.bnn import BNNShape
from tests.test_export import random_codes, trained_looking_bnn


@pytest.mark.parametrize("shape,seed", [
    (BNNShape(200, 128, 2), 0), (BNNShape(200, 128, 10), 1), (BNNShape(65, 70, 3), 2),
    (BNNShape(1, 8, 2), 3), (BNNShape(200, 512, 10), 4), (BNNShape(130, 7, 2), 5),
])
def test_one_sample_head_equals_torch_bit_for_bit(shape, seed):
    model = trained_looking_bnn(shape, seed)
    head = runtime_from_model(model).one_sample()
    codes = random_codes(shape.n_bits, 300, seed)
    want_scores, want_labels = torch_predict(model, codes)
    for i in range(len(codes)):
        head.code[:] = codes[i]
        label = head()
        assert label == want_labels[i]
        np.testing.assert_array_equal(head.scores.view(np.uint32), want_scores[i].view(np.uint32))
    # classify() copies the code in first; any code of the right length
    assert head.classify(codes[7]) == want_labels[7]
    np.testing.assert_array_equal(head.code, codes[7])


def test_one_sample_head_breaks_ties_like_torch():
    model = trained_looking_bnn(BNNShape(64, 16, 3), 7)
    with torch.no_grad():
        model.bn2.weight.zero_()
        model.bn2.bias.copy_(torch.tensor([0.5, 2.0, 2.0]))  # classes 1 and 2 tie everywhere
    head = runtime_from_model(model).one_sample()
    for code in random_codes(64, 20, 8):
        assert head.classify(code) == 1


@pytest.mark.parametrize("n_bits", [1, 63, 65, 200])
def test_one_sample_head_refuses_padding_bits_and_keeps_its_buffers(n_bits):
    model = trained_looking_bnn(BNNShape(n_bits, 8, 2), 3)
    head = runtime_from_model(model).one_sample()
    code = random_codes(n_bits, 1, 1)[0]
    want = head.classify(code)
    head.scores[:] = np.nan
    if n_bits % 64:
        head.code[-1] |= np.uint64(1) << np.uint64(n_bits % 64)  # the first padding bit
        with pytest.raises(ValueError, match=f"^code has nonzero padding bits past bit {n_bits}$"):
            head()
        assert np.isnan(head.scores).all()  # refused before anything was computed
    head.code[:] = code
    assert head() == want
    with pytest.raises(AttributeError):
        head.code = np.zeros_like(code)  # the compiled code reads these buffers by address
    with pytest.raises(AttributeError):
        head.scores = np.zeros(2, np.float32)
    with pytest.raises(ValueError):
        head.classify(np.zeros(len(code) + 1, np.uint64))  # a code of the wrong length


OTHER_VARIANT_CHECK = """
import numpy as np
from hybnn_kernels.bits import pack_bits
from hybnn_kernels.runtime import BNNRuntime
from tests.naive import bnn_scores_ref
rng = np.random.default_rng(0)
for n_bits, hidden, classes in [(200, 128, 2), (65, 70, 3)]:
    w1 = pack_bits(rng.integers(0, 2, size=(hidden, n_bits)))
    t1 = rng.integers(-n_bits, n_bits + 1, size=hidden)
    w2 = pack_bits(rng.integers(0, 2, size=(classes, hidden)))
    table = rng.standard_normal((classes, hidden + 1)).astype(np.float32)
    rt = BNNRuntime.from_arrays(w1, t1, w2, table, n_bits)
    head = rt.one_sample()
    codes = pack_bits(rng.integers(0, 2, size=(50, n_bits)))
    scores, labels = bnn_scores_ref(codes, w1, t1, w2, table, n_bits)
    for i in range(50):
        assert head.classify(codes[i]) == labels[i]
        assert np.array_equal(head.scores, scores[i])
print("ok")
"""


@pytest.mark.parametrize("variant", [v for v in ("qword", "byte") if v != tile.VARIANT])
def test_one_sample_head_with_the_other_kernel_variant(variant):
    env = dict(os.environ, HYBNN_KERNEL_VARIANT=variant)
    r = subprocess.run([sys.executable, "-c", OTHER_VARIANT_CHECK], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


@pytest.mark.parametrize("n_bits,widths,seed", [
    (200, [(128, 2), (128, 10), (512, 10)], 0), (65, [(70, 3), (7, 2)], 1), (1, [(8, 2)], 2),
    (130, [], 3), (64, [(64, 4)], 4),
])
def test_one_image_tail_packs_the_logits_and_answers_every_head(n_bits, widths, seed):
    """`OneImageTail`: the code of the logits (the reference packer's, zeros and ties at 0
    included) and each head's label, the runtimes' own, for several heads sharing one code."""
    from hybnn_kernels.layout import pack_signs_numpy
    from hybnn_kernels.one_sample import OneImageTail

    models = [trained_looking_bnn(BNNShape(n_bits, h, c), seed + i)
              for i, (h, c) in enumerate(widths)]
    runtimes = [runtime_from_model(m) for m in models]
    logits = np.zeros(n_bits, dtype=np.float32)
    tail = OneImageTail(logits, runtimes)
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((100, n_bits)).astype(np.float32)
    rows[::3, ::5] = 0.0  # logit 0 → bit 1
    rows[1::3, ::4] = -0.0
    for row in rows:
        logits[:] = row
        assert tail() == 0
        np.testing.assert_array_equal(tail.code, pack_signs_numpy(row[None])[0])
        want = [int(rt.predict(tail.code[None], 1)[0]) for rt in runtimes]
        assert tail.labels.tolist() == want
    with pytest.raises(ValueError, match="logits buffer"):
        OneImageTail(np.zeros((1, n_bits), np.float32), runtimes)
    if runtimes:
        with pytest.raises(ValueError, match=f"every head must take {n_bits + 1} bits"):
            OneImageTail(np.zeros(n_bits + 1, np.float32), runtimes)


@pytest.mark.parametrize("offset,scale", [(0.0, 255.0), (0.5, 3.0), (127.5, 127.5)])
def test_one_image_normaliser_is_numpys_arithmetic_bit_for_bit(offset, scale):
    """`OneImageNormaliser`: float32(pixel) − offset, then / scale, as `Pipeline.encode` computes
    it in numpy, for every pixel value, into the caller's buffer."""
    from hybnn_kernels.one_sample import OneImageNormaliser

    x = np.full((1, 1, 16, 16), np.nan, dtype=np.float32)
    norm = OneImageNormaliser(x, offset, scale)
    norm.pixels[...] = np.arange(256, dtype=np.uint8).reshape(x.shape)
    assert norm() == 0
    want = np.empty(x.shape, np.float32)
    np.subtract(norm.pixels, np.float32(offset), out=want, dtype=np.float32)
    np.divide(want, np.float32(scale), out=want)
    np.testing.assert_array_equal(x.view(np.uint32), want.view(np.uint32))
    with pytest.raises(ValueError, match="float32"):
        OneImageNormaliser(np.zeros(4, np.float64), 0.0, 1.0)
