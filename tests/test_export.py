"""Export exactness: the kernel runtime's scores and labels equal the torch model's, bit for bit,
including negative and zero batch-norm scales, exact ties at the thresholds and tied class
scores."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hybnn_kernels.bits import pack_bits
from hybnn_kernels.deploy_file import check_arrays, read_deploy
from hybnn_kernels.head_numpy import NumpyHead
from hybnn_kernels.runtime import DeployFileError, load_deploy

from hybnn_cli.deploy.export_head import (
    export_arrays,
    runtime_from_model,
    torch_predict,
    verify_export,
    write_deploy,
)
from hybnn_cli.errors import HybnnError
from hybnn_cli.models.bnn import BNNShape, TaskBNN
from tests.naive import xnor_gemm_ref


def trained_looking_bnn(shape: BNNShape, seed: int) -> TaskBNN:
    """A TaskBNN with batch-norm statistics like a trained one, plus the awkward cases."""
    g = torch.Generator().manual_seed(seed)
    model = TaskBNN(shape)
    h, k = shape.hidden, shape.n_bits
    with torch.no_grad():
        model.fc1.weight.uniform_(-1, 1, generator=g)
        model.fc2.weight.uniform_(-1, 1, generator=g)
        bn1 = model.bn1
        bn1.running_mean.copy_(torch.randn(h, generator=g) * 0.1 * k ** 0.5)
        bn1.running_var.copy_(torch.rand(h, generator=g) * k + 1)
        bn1.weight.copy_(torch.randn(h, generator=g))  # about half negative
        bn1.bias.copy_(torch.randn(h, generator=g))
        bn1.weight[0] = 0.0  # constant neurons: zero scale, either sign of bias
        bn1.bias[0] = 0.0  # BN output exactly 0 → sign +1 → always on
        bn1.weight[1] = 0.0
        bn1.bias[1] = -0.5  # always off
        # exact ties: BN output exactly 0 at an integer dot value, rising and falling
        for j, scale in ((2, 1.0), (3, -1.0), (4, 0.5)):
            bn1.running_var[j] = 1.0 - bn1.eps
            bn1.running_mean[j] = float(k % 2)  # a reachable dot value
            bn1.weight[j] = scale
            bn1.bias[j] = 0.0
        bn1.weight[5] = 1e-3  # unreachable threshold (always on or always off)
        bn1.bias[5] = 10.0
        bn2 = model.bn2
        c = shape.n_classes
        bn2.running_mean.copy_(torch.randn(c, generator=g) * 3)
        bn2.running_var.copy_(torch.rand(c, generator=g) * h + 1)
        bn2.weight.copy_(torch.randn(c, generator=g))
        bn2.bias.copy_(torch.randn(c, generator=g))
    return model.eval()


def random_codes(n_bits: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pack_bits(rng.integers(0, 2, size=(n, n_bits)))


def numpy_head_from_model(model: TaskBNN) -> NumpyHead:
    a = export_arrays(model)
    return NumpyHead(check_arrays(a["fc1/weights"], a["fc1/thresholds"], a["fc2/weights"],
                                  a["fc2/score_table"], model.shape.n_bits))


@pytest.mark.parametrize("shape,seed", [
    (BNNShape(200, 128, 2), 0), (BNNShape(200, 128, 10), 1), (BNNShape(65, 70, 3), 2),
    (BNNShape(1, 8, 2), 3), (BNNShape(200, 512, 10), 4),
])
def test_runtime_equals_torch_bit_for_bit(shape, seed):
    model = trained_looking_bnn(shape, seed)
    runtime = runtime_from_model(model)
    codes = random_codes(shape.n_bits, 3001, seed)
    want_scores, want_labels = torch_predict(model, codes)
    scores, labels = runtime.run(codes)
    np.testing.assert_array_equal(scores.view(np.uint32), want_scores.view(np.uint32))
    np.testing.assert_array_equal(labels, want_labels)
    assert verify_export(model, runtime, codes) == 0
    # batch size does not matter, parallel or serial
    for i in range(25):  # one sample at a time (the scalar path)
        one_scores, one_labels = runtime.run(codes[i:i + 1])
        np.testing.assert_array_equal(one_scores.view(np.uint32),
                                      want_scores[i:i + 1].view(np.uint32))
        np.testing.assert_array_equal(one_labels, want_labels[i:i + 1])
    np.testing.assert_array_equal(runtime.predict(codes, threads=1), want_labels)
    # the numpy head (a bundle's cold path) gives the same scores, in any batch size
    head = numpy_head_from_model(model)
    for part in (codes, codes[:1], codes[:0]):
        np_scores, np_labels = head.run(part)
        np.testing.assert_array_equal(np_scores.view(np.uint32),
                                      want_scores[:len(part)].view(np.uint32))
        np.testing.assert_array_equal(np_labels, want_labels[:len(part)])
    # and its path for one code at a time (`NumpyHead.one`) the same labels, ties included
    assert [head.one(c) for c in codes[:300]] == want_labels[:300].tolist()



@pytest.mark.parametrize("n", [1, 5000])  # batch 1 takes the serial path, 5000 the parallel one
def test_runtime_refuses_codes_with_padding_bits_set(n):
    runtime = runtime_from_model(trained_looking_bnn(BNNShape(200, 128, 2), 11))
    codes = random_codes(200, n, 11)
    codes[-1, -1] |= np.uint64(1) << np.uint64(200 - 3 * 64)  # bit 200: the first padding bit
    with pytest.raises(ValueError, match="^codes has nonzero padding bits past bit 200$"):
        runtime.run(codes, threads=2)


def test_runtime_writes_into_given_outputs():
    model = trained_looking_bnn(BNNShape(200, 128, 2), 10)
    runtime = runtime_from_model(model)
    codes = random_codes(200, 257, 10)
    want_scores, want_labels = runtime.run(codes)
    scores, labels = np.full((257, 2), np.nan, np.float32), np.full(257, -1, np.int64)
    got = runtime.run(codes, out=(scores, labels))
    assert got[0] is scores and got[1] is labels
    np.testing.assert_array_equal(scores.view(np.uint32), want_scores.view(np.uint32))
    np.testing.assert_array_equal(labels, want_labels)
    with pytest.raises(ValueError, match=r"out must be a int64 array of shape \(257,\)"):
        runtime.run(codes, out=(scores, labels.astype(np.int32)))

@pytest.mark.parametrize("n", [1, 2, 5000])  # the small-batch fast path and the checked path
def test_runtime_checks_every_argument_on_every_path(n):
    model = trained_looking_bnn(BNNShape(200, 128, 2), 12)
    runtime = runtime_from_model(model)
    codes = random_codes(200, n, 12)
    _, want = torch_predict(model, codes)
    readonly = codes.copy()
    readonly.flags.writeable = False
    strided = np.repeat(codes, 2, axis=0)[::2]
    for given in (readonly, strided):  # computed all the same (the strided ones copied)
        np.testing.assert_array_equal(runtime.predict(given), want)
    bad = [
        (dict(codes=codes[:, :3].copy()), ValueError,
         "^codes has 3 words per row, but 200 bits need 4$"),
        (dict(codes=codes.view(np.int64)), TypeError, "^codes must have dtype uint64"),
        (dict(codes=codes[0]), ValueError, "^codes must be 2-D"),
        (dict(codes=codes.tolist()), TypeError, "^codes must be a numpy array"),
        (dict(threads=0), ValueError, "^threads must be an integer in 1"),
        (dict(threads=True), ValueError, "^threads must be an integer in 1"),
        (dict(out=(np.empty((n + 1, 2), np.float32), np.empty(n, np.int64))), ValueError,
         rf"^out must be a float32 array of shape \({n}, 2\)"),
        (dict(out=(np.empty((n, 2), np.float32), np.empty(n + 1, np.int64))), ValueError,
         rf"^out must be a int64 array of shape \({n},\)"),
        (dict(out=(np.empty((n, 4), np.float32)[:, ::2], np.empty(n, np.int64))), ValueError,
         "^out must be C-contiguous and writeable$"),
    ]
    for kwargs, error, message in bad:
        args = {"codes": codes, **kwargs}
        with pytest.raises(error, match=message):
            runtime.run(args.pop("codes"), **args)


def test_hidden_bits_match_torch_including_ties_and_flips():
    shape = BNNShape(200, 128, 2)
    model = trained_looking_bnn(shape, 5)
    arrays = export_arrays(model)
    flipped = arrays["fc1/flipped"]
    assert flipped.any() and not flipped.all()
    thresholds = arrays["fc1/thresholds"]
    assert not flipped[2] and thresholds[2] == 0  # rising tie: BN(0) = 0 → +1, so d >= 0
    assert flipped[3] and thresholds[3] == 0  # falling tie: on for d <= 0, i.e. −d >= 0
    codes = random_codes(200, 500, 6)
    # codes that hit the tie neurons' dot = 0 exactly: the neuron's own weights with half flipped
    w_signs = (torch.where(model.fc1.weight[2] < 0, -1.0, 1.0)).numpy()
    x = w_signs.copy()
    x[:100] *= -1
    codes = np.concatenate([codes, pack_bits(x[None, :])])
    from hybnn_kernels.bits import unpack_signs
    xs = torch.from_numpy(unpack_signs(codes, 200).astype(np.float32))
    with torch.no_grad():
        want = (model.hidden(xs) > 0).numpy()
    assert model.fc1(xs[-1:])[0, 2].item() == 0.0  # the tie case is really exercised
    dots = xnor_gemm_ref(codes, arrays["fc1/weights"], 200)
    got = dots >= arrays["fc1/thresholds"][None, :]
    np.testing.assert_array_equal(got, want)


def test_tied_class_scores_pick_the_first_class_like_torch():
    shape = BNNShape(64, 16, 3)
    model = trained_looking_bnn(shape, 7)
    with torch.no_grad():
        model.bn2.weight.zero_()
        model.bn2.bias.copy_(torch.tensor([0.5, 2.0, 2.0]))  # classes 1 and 2 tie everywhere
    runtime = runtime_from_model(model)
    codes = random_codes(64, 50, 8)
    _, want = torch_predict(model, codes)
    assert np.all(want == 1)
    np.testing.assert_array_equal(runtime.predict(codes), want)
    np.testing.assert_array_equal(numpy_head_from_model(model).run(codes)[1], want)


@pytest.mark.parametrize("n_bits", [1, 63, 64, 65, 200])
def test_numpy_head_refuses_what_the_compiled_head_refuses(n_bits):
    model = trained_looking_bnn(BNNShape(n_bits, 8, 2), 3)
    head, runtime = numpy_head_from_model(model), runtime_from_model(model)
    codes = random_codes(n_bits, 4, 1)
    bad = [(codes.astype(np.int64), "uint64"), (codes[:, :0], "words per row"),
           (codes[0], "2-D")]
    if n_bits % 64:
        padded = codes.copy()
        padded[2, -1] |= np.uint64(1) << np.uint64(63)
        bad.append((padded, "padding bits"))
    for given, msg in bad:
        with pytest.raises(ValueError, match=msg):
            head.run(given)
        with pytest.raises((TypeError, ValueError)):
            runtime.run(given)


def test_deploy_file_round_trip(tmp_path: Path):
    model = trained_looking_bnn(BNNShape(200, 128, 2), 9)
    ckpt = {"config": {"task": "task3"}, "seed": 4, "encoder_sha256": "ab" * 32,
            "task": {"name": "task3", "classes": [4, 5]}, "format": "hybnn-bnn"}
    out = tmp_path / "bnn.h5"
    summary = write_deploy(out, model, ckpt)
    # 200 bits take 4 words (256 bits) per neuron: 128·4·8 + 2·2·8 bytes against 4·(200·128 + 128·2)
    assert summary["weight_bytes"] == 128 * 4 * 8 + 2 * 2 * 8
    assert summary["float32_weight_bytes"] == 4 * (200 * 128 + 128 * 2)
    rt = load_deploy(out)
    arrays = read_deploy(out)  # what the numpy head of a bundle reads, without numba
    assert arrays.meta == rt.meta and (arrays.n_bits, arrays.hidden, arrays.n_classes) == \
        (200, 128, 2)
    assert rt.meta["format"] == "hybnn-deploy" and rt.meta["encoder_sha256"] == "ab" * 32
    assert rt.meta["task"] == {"name": "task3", "classes": [4, 5]} and rt.meta["seed"] == 4
    codes = random_codes(200, 1000, 10)
    np.testing.assert_array_equal(rt.predict(codes), torch_predict(model, codes)[1])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_load_deploy_refuses_other_files(tmp_path: Path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DeployFileError, match="not a readable HDF5"):
        load_deploy(bad)
    import h5py
    with h5py.File(bad, "w") as f:
        f.attrs["format"] = "hybnn-codes"
    with pytest.raises(DeployFileError, match="not a hybnn deploy file"):
        load_deploy(bad)


def test_nan_batch_norm_is_refused():
    model = trained_looking_bnn(BNNShape(16, 8, 2), 11)
    with torch.no_grad():
        model.bn2.running_var[0] = float("nan")
    with pytest.raises(HybnnError, match="non-finite"):
        export_arrays(model)


def test_runtime_import_does_not_pull_torch_or_h5py():
    import subprocess
    import sys
    code = ("import sys, hybnn_kernels, hybnn_kernels.runtime, hybnn_kernels.dense;"
            "print('torch' in sys.modules, 'h5py' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["False", "False"], r.stderr
