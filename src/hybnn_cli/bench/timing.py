"""How `hybnn bench` measures a case: every contender timed in interleaved rounds (`compare`),
every answer checked before and after the timing (`require`, `equal`), the repeats a case's size
is given (`budget`), and the machine's own peaks measured at the moments the contenders ran
(`measure_roofline`, `combine_rooflines`).

Method: every contender writes into a preallocated output; JIT compile and first-touch costs are
paid in a warm-up outside the timing; each time is the median of several repeats, taken in three
interleaved rounds of blocks (kernel, numpy, torch, kernel, ...) so that all contenders see the same
drift in the load of a shared machine, with a short pause between blocks (OpenBLAS worker threads
spin for a while after a call and slow whatever runs next).
"""

from __future__ import annotations

import statistics
import time

from hybnn_cli.errors import HybnnError


def compare(fns: dict, ops: float, repeats: int, min_total: float = 0.0, rounds: int = 3,
            check=None, peaks_threads: int | None = None) -> dict:
    """Time each contender (name → zero-argument callable) in `rounds` interleaved rounds, so that
    all of them see the same drift in machine load; each round runs a block of calls of one
    contender, then pauses briefly (OpenBLAS threads keep spinning after a call). `check()` runs
    after the warm-up (before any time counts) and after the timing, and raises on a wrong answer.
    Returns name → {seconds (median), min_seconds, repeats, ops_per_second}; with
    `peaks_threads`, each round starts with the machine's peaks on that many threads
    (`measure_roofline`), and "roofline" holds them (`combine_rooflines`): the bound at the
    moments the contenders ran."""
    for fn in fns.values():  # warm-up: JIT compile, first touch of outputs, thread pools
        fn()
    if check is not None:
        check()
    per_round = max(1, -(-repeats // rounds))
    times = {name: [] for name in fns}
    measured = []
    for _ in range(rounds):
        if peaks_threads is not None:
            time.sleep(0.05)  # as before every block: the last float contender's threads spin
            measured.append(measure_roofline(peaks_threads))
        for name, fn in fns.items():
            time.sleep(0.05)
            block, total = [], 0.0
            while len(block) < per_round or total < min_total / rounds:
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                block.append(dt)
                total += dt  # not sum(block): reading the whole list evicted the contender's
                if len(block) >= 5000:  # data from L1 between two timed calls
                    break
            times[name] += block
    if check is not None:
        check()
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"seconds": med, "ops_per_second": ops / med, "min_seconds": min(ts),
                     "repeats": len(ts)}
    if measured:
        out["roofline"] = combine_rooflines(measured)
    return out


def require(ok, case: str, what: str) -> None:
    """A check of the benchmark: raises the one-line HybnnError when `ok` is false."""
    if not ok:
        raise HybnnError(f"bench {case}: {what}; the timings of this run are not valid")


def equal(a, b) -> bool:
    """Exactly equal values (float32 and integer arrays of integers compare as numbers)."""
    import numpy as np

    return a.shape == b.shape and bool(np.array_equal(a, b))


def budget(ops: float, quick: bool) -> tuple[int, float]:
    """(repeats, minimum seconds per contender) for a case of `ops` operations."""
    if quick:
        return (300 if ops < 1e6 else 3), 0.0
    if ops < 1e6:
        return 2001, 0.5
    if ops <= 1e9:
        return 33, 0.5
    return (11 if ops <= 1e11 else 5), 0.0


# ── the machine's own bounds ─────────────────────────────────────────────────────────────────
def measure_roofline(threads: int) -> dict:
    """The float32 FMA peak and the XNOR tile's arithmetic peak (`hybnn_kernels.roofline`) on
    `threads` threads, and their ratio: the most the XNOR kernel can gain over float32 here."""
    from hybnn_kernels import roofline

    fma, xnor = roofline.fma_peak(threads), roofline.xnor_peak(threads)
    return {"fma_f32": fma, "xnor": xnor,
            "ratio_bound": xnor["ops_per_second"] / fma["ops_per_second"]}


def combine_rooflines(measurements: list[dict]) -> dict:
    """Peaks measured at several moments: the higher of each is the bound (a loaded moment only
    lowers a measured peak), every measurement kept for the record. For a case, its own rounds'
    measurements (the moments it ran: a shared machine's speed drifts by tens of percent within
    minutes, and a peak caught outside a case could be far from the speed it ran at); for the
    run, all of them."""
    out = {k: max((m[k] for m in measurements), key=lambda r: r["ops_per_second"])
           for k in ("fma_f32", "xnor")}
    out["ratio_bound"] = out["xnor"]["ops_per_second"] / out["fma_f32"]["ops_per_second"]
    out["measured"] = measurements
    return out
