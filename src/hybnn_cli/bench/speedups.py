"""What a case's times mean: the XNOR kernel's speed-up over each dense contender, over the
fastest of each precision and of any (`headline`), and each contender's rate over its own peak
(`fractions_of_peak`). Operations are counted as 2·M·N·K for float, int8 and binary alike, so the
ratio of rates is the speedup on equal shapes.
"""

from __future__ import annotations

FLOAT32 = ("numpy_f32", "torch_f32", "numba_f32")  # float32 contenders (numba_f32: batch 1 only)
INT8 = ("torch_int8", "ort_int8")


def ratios(res: dict, floats=("numpy_f32", "torch_f32"), key: str = "best_float") -> None:
    """speedup_vs_<contender> for each of `floats` and speedup_vs_<key> over the best of them (from
    medians; from minima too), each the contender's time over the kernel's."""
    x = res["xnor"]
    for name in floats:
        res[f"speedup_vs_{name.replace('_f32', '')}"] = res[name]["seconds"] / x["seconds"]
    res[f"speedup_vs_{key}"] = min(res[f]["seconds"] for f in floats) / x["seconds"]
    res[f"speedup_vs_{key}_from_minima"] = (min(res[f]["min_seconds"] for f in floats)
                                           / x["min_seconds"])


def headline(res: dict) -> None:
    """The ratios of a case: XNOR against each dense contender (speedup_vs_<name>), against the
    fastest float32 one (speedup_vs_best_float), the fastest int8 one (speedup_vs_best_int8) and
    the fastest of any precision (speedup_vs_best_dense, the headline); `fastest` names the
    contender behind each (by median)."""
    floats = tuple(n for n in FLOAT32 if n in res)
    int8 = tuple(n for n in INT8 if n in res)
    ratios(res, floats)
    res["fastest"] = {"float32": min(floats, key=lambda n: res[n]["seconds"])}
    for key, group in (("best_int8", int8), ("best_dense", floats + int8)):
        if group:
            ratios(res, group, key)
            res["fastest"][key.removeprefix("best_")] = min(group,
                                                            key=lambda n: res[n]["seconds"])


def fractions_of_peak(case: dict, roof: dict) -> dict:
    """Each contender's rate over its own peak: the XNOR kernel over the XNOR peak, the float32
    contenders over the FMA peak (ops counted alike, 2·M·N·K)."""
    peaks = {"xnor": roof["xnor"]["ops_per_second"], "float": roof["fma_f32"]["ops_per_second"]}
    return {name: case[name]["ops_per_second"] / peaks["xnor" if name == "xnor" else "float"]
            for name in ("xnor", "numpy_f32", "torch_f32") if name in case}
