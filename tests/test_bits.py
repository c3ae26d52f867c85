"""Bit packing against the naive reference: round trips, the sign convention, bad inputs."""

import numpy as np
import pytest
from hybnn_kernels.bits import (
    n_words,
    pack_bits,
    pack_signs,
    padding_set,
    unpack_bits,
    unpack_signs,
    used_bits_in_last_word,
)
from hybnn_kernels.layout import pack_signs_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.naive import pack_ref

BIT_LENGTHS = st.sampled_from([1, 63, 64, 65, 200, 1000]) | st.integers(1, 300)


@settings(max_examples=40, deadline=None)
@given(n=BIT_LENGTHS, rows=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))
def test_pack_matches_reference_and_round_trips(n, rows, seed):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(rows, n))
    words = pack_bits(bits)
    assert words.dtype == np.uint64 and words.shape == (rows, n_words(n))
    np.testing.assert_array_equal(words, pack_ref(bits))
    np.testing.assert_array_equal(unpack_bits(words, n), bits)
    signs = bits * 2 - 1
    np.testing.assert_array_equal(pack_bits(signs), words)
    np.testing.assert_array_equal(pack_bits(bits.astype(bool)), words)
    np.testing.assert_array_equal(unpack_signs(pack_signs(signs.astype(np.float32)), n), signs)


def test_sign_convention_zero_and_negative_zero_are_plus_one():
    x = np.array([[0.0, -0.0, -1e-30, 1e-30, -3.0]], dtype=np.float32)
    np.testing.assert_array_equal(unpack_signs(pack_signs(x), 5), [[1, 1, -1, 1, -1]])


@settings(max_examples=40, deadline=None)
@given(n=BIT_LENGTHS, rows=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))
def test_numpy_sign_packing_equals_the_compiled_one(n, rows, seed):
    """The bundle's numba-free packing of encoder logits: the same words for every float32,
    including 0, −0.0, NaN and infinities (NaN and the zeros give bit 1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, -1e-45], dtype=np.float32)
    x[rng.random((rows, n)) < 0.2] = rng.choice(special)
    np.testing.assert_array_equal(pack_signs_numpy(x), pack_signs(x))


def test_padding_bits_are_zero():
    words = pack_bits(np.ones((2, 65)))
    assert int(words[0, 1]) == 1 and int(words[0, 0]) == 2**64 - 1


@pytest.mark.parametrize("n_bits,used", [(1, 1), (63, 63), (64, 64), (65, 1), (200, 8),
                                         (1000, 40)])
def test_padding_rule_flags_exactly_the_bits_past_n_bits(n_bits, used):
    """The one home of the padding rule: bits at or past n_bits (in the last word) must be 0."""
    assert used_bits_in_last_word(n_bits) == used
    x = pack_bits(np.ones((3, n_bits)))
    assert not padding_set(x, n_bits)  # every real bit set, no padding bit
    if used < 64:
        y = x.copy()
        y[2, -1] |= np.uint64(1) << np.uint64(used)  # the first padding bit of the last row
        assert padding_set(y, n_bits)
        z = x.copy()
        z[0, -1] |= np.uint64(1) << np.uint64(63)  # the last padding bit of the first row
        assert padding_set(z, n_bits)
    assert not padding_set(np.zeros((0, x.shape[1]), np.uint64), n_bits)


def test_unpack_rejects_bad_input():
    with pytest.raises(TypeError, match="uint64"):
        unpack_bits(np.zeros((1, 1), dtype=np.int64), 10)
    with pytest.raises(ValueError, match="need 1 words"):
        unpack_bits(np.zeros((1, 2), dtype=np.uint64), 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                                   np.uint8, np.uint32, np.uint64, np.bool_, np.float16])
def test_every_dtype_packs_like_the_reference(dtype):
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, size=(3, 4, 130)).astype(dtype)[:, ::2, :]  # 3-D, non-contiguous
    if np.issubdtype(dtype, np.floating):
        x[0, 0, :3] = [-0.0, np.nan, 0.0]
    flat = x.reshape(-1, 130)
    np.testing.assert_array_equal(pack_bits(x).reshape(-1, 3), pack_ref(flat > 0))
    np.testing.assert_array_equal(pack_signs(x).reshape(-1, 3), pack_ref(~(flat < 0)))


def test_hdf5_attributes_read_back_as_written(tmp_path):
    import h5py
    from hybnn_kernels.h5attrs import read_attrs, write_attrs

    meta = {"format": "x", "n": 200, "ratio": 0.5, "config": {"a": [1, 2], "b": None},
            "classes": [4, 5], "text": "{not json", "flag": True}
    with h5py.File(tmp_path / "a.h5", "w") as f:
        write_attrs(f.attrs, meta)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert read_attrs(f.attrs) == meta
