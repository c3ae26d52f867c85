"""`Pipeline.one_image()`: one image at a time through a bundle (I/O binding, fused threshold and
pack, the heads' one-code entries) gives `Pipeline.classify`'s labels, with compiled or numpy
heads and any thread count; a wrong image is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def images(bundle):
    return np.load(bundle["out"] / "test.npy")


@pytest.mark.parametrize("compiled,threads", [(True, 1), (True, 2), (False, 1)])
def test_one_image_gives_the_batch_path_labels_and_codes(bundle, images, compiled, threads):
    from hybnn_kernels.pipeline import load_bundle

    pipe = load_bundle(bundle["bundle"], 2, compiled=compiled)
    one = pipe.one_image(threads)
    assert one.kernel == ("numba" if compiled else "numpy") and one.threads == threads
    want = pipe.classify(images)
    codes = pipe.encode(images)
    for i, image in enumerate(images):
        got = one(image)
        np.testing.assert_array_equal(one.code, codes[i])
        assert got == {name: int(labels[i]) for name, labels in want.items()}
    assert one(images[0][None]) == {name: int(labels[0]) for name, labels in want.items()}


def test_int8_and_chosen_heads(bundle, images):
    from hybnn_kernels.pipeline import load_bundle

    pipe = load_bundle(bundle["bundle"], 2, int8=True, heads=["task3"], compiled=True)
    one = pipe.one_image(1)
    want = pipe.classify(images[:50])["task3"]
    assert [one(x)["task3"] for x in images[:50]] == want.tolist()


def test_prototype_heads_answer_with_their_class_names(bundle, images, tmp_path):
    import shutil

    from hybnn_kernels.pipeline import load_bundle

    from hybnn_cli.deploy.learn_class import learn_class

    b = tmp_path / "b"
    shutil.copytree(bundle["bundle"], b)
    y = bundle["labels"]
    for c in (4, 5):
        np.save(tmp_path / f"{c}.npy", images[y == c])
        learn_class(b, f"digit{c}", [tmp_path / f"{c}.npy"], "learned", 2, 0, 1)
    pipe = load_bundle(b, 1, compiled=True)
    one = pipe.one_image(1)
    want = pipe.classify(images)
    assert set(want["learned"]) <= {"digit4", "digit5"}
    for i in range(len(images)):
        assert one(images[i]) == {k: (str(v[i]) if k == "learned" else int(v[i]))
                                  for k, v in want.items()}


def test_fastest_picks_a_candidate_by_its_own_timing(bundle, images):
    from hybnn_kernels.pipeline import load_bundle

    pipe = load_bundle(bundle["bundle"], 2, compiled=True)
    one = pipe.one_image("fastest")
    med = one.timing["microseconds_median"]
    assert sorted(med) == [1, 2] and one.threads == min(med, key=med.get)
    assert all(v > 0 for v in med.values()) and one.timing["calls"] == 200
    assert one(images[3]) == {k: int(v[0]) for k, v in pipe.classify(images[3:4]).items()}


@pytest.mark.parametrize("bad", [np.zeros((28, 27), np.uint8), np.zeros((28, 28), np.float32),
                                 np.zeros((2, 28, 28), np.uint8), [[0] * 28] * 28])
def test_a_wrong_image_is_refused(bundle, bad):
    from hybnn_kernels.pipeline import BundleError, load_bundle

    one = load_bundle(bundle["bundle"], 1, compiled=False).one_image()
    with pytest.raises(BundleError, match="expected one 28×28 uint8 image"):
        one(bad)
