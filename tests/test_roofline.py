"""The roofline's peak loops compute what they claim (their return values against numpy), so
the rates `hybnn bench` divides by come from real work; speed itself is the benchmark's job."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hybnn_kernels import roofline
from hybnn_kernels.tile import FLUSH, MR, NV, VW


def popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8)).reshape(*x.shape, 64).sum(axis=-1)


@pytest.mark.parametrize("n_blocks", [1, 3])
def test_xnor_loop_counts_the_tiles_popcounts(n_blocks):
    rng = np.random.default_rng(n_blocks)
    a = rng.integers(0, 2**63, size=roofline.A_WORDS, dtype=np.int64).view(np.uint64) * 2 + 1
    w = rng.integers(0, 2**63, size=NV * VW, dtype=np.int64).view(np.uint64)
    steps = n_blocks * max(FLUSH, 1)
    want = sum(int(popcount(a[(k + 7 * r) % roofline.A_WORDS] ^ w).sum())
               for k in range(steps) for r in range(MR))
    assert roofline.xnor_checksum(a, w, n_blocks) == want


def test_fma_loop_runs_every_chain():
    steps = 200
    acc = np.array([1.0 + i for i in range(roofline.FMA_CHAINS)])
    for _ in range(steps):
        acc = acc * np.float32(0.9999999) + np.float32(1e-7)
    want = acc.sum() * roofline.FMA_LANES
    assert math.isclose(roofline.fma_checksum(steps), want, rel_tol=1e-5)


def test_peaks_report_rates_of_the_work_done():
    for peak in (roofline.fma_peak(1, seconds=0.002, repeats=3),
                 roofline.xnor_peak(1, seconds=0.002, repeats=3)):
        assert peak["threads"] == 1 and peak["repeats"] == 3
        assert peak["min_seconds"] <= peak["seconds"]
        assert 0 < peak["ops_per_second"] < 1e15 and peak["checksum"] > 0
