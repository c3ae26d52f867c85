"""End to end, uint8 pixels to labels (`benchmarks/e2e.py`): a deploy bundle (ONNX Runtime encoder
+ XNOR head) against the torch pipeline (encoder in `inference_mode`, threshold, the float32 BNN
head at its best), in one process, on the same test images, with the same number of threads. This
module runs the study (`run`), records it in `benchmarks/results/e2e.json` and renders it (the
block `e2e`). What it measures:

- agreement (`agreement`), on the test images, for every head of the bundle: code bits that
  differ from the torch encoder's, labels that differ from the torch pipeline's (encoder →
  TaskBNN module), and the accuracy of both, for the float and the int8 encoder;
- speed (`e2e_speed`): throughput at a large batch and latency at batch 1, for torch eager, torch
  at its best (`e2e_torch`), bundle float and bundle int8, every contender's labels checked
  before its time counts;
- the head's two kernels (`e2e_speed.head_kernels`): the numpy head of the base install against
  the compiled head of the `fast` install, at the large batch and at batch 1;
- new processes (`e2e_processes`): cold start, installed sizes (base, fast, with torch), peak
  memory of `hybnn predict` with its default settings in the base and the fast install;
- on-device learning (`e2e_speed.learn_speed`): `hybnn learn-class` timed per class and per
  image (encode + fit), on a copy of the bundle.

Files from before a measurement existed render with "not measured" in its place.

The bundle's checkpoints (paths recorded in its manifest) must be at hand for the torch side.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hybnn_cli.study.docgen import pct, renderer, source, table
from hybnn_cli.study.e2e_processes import processes
from hybnn_cli.study.e2e_speed import head_kernels, learn_speed, speed
from hybnn_cli.study.e2e_torch import log
from hybnn_cli.study.provenance import end_run, read_result, start_run, write_result
from hybnn_cli.threads import using

FORMAT = "hybnn-e2e"
E2E = "e2e.json"


def run(bundle: Path, out: Path, argv: list[str], *, venvs: Path, threads: int, head: str,
        data_dir: Path | None, quick: bool, batch: int, candidates: tuple[str, ...],
        dataset: str) -> dict:
    """The whole study: agreement, speed and (unless `quick`) the new processes; written to `out`
    with the provenance of this run (taken as it starts, `argv` the command recorded)."""
    from hybnn_cli.data.datasets import find_file, get_spec, load_split

    run_rec = start_run(out, argv)  # provenance of the run, taken when it starts
    images, labels = load_split(dataset, "test", data_dir)
    spec = get_spec(dataset)
    files = {s: find_file(spec, spec.files[s][0], data_dir, False) for s in ("test", "train")}
    body = {"threads": threads, "head_timed": head, "bundle": str(bundle),
            "dataset": dataset, "torch_candidates": list(candidates),
            "manifest": json.loads((bundle / "bundle.json").read_text()),
            "nice": os.nice(0), "load_average_before": list(os.getloadavg())}
    body["agreement"] = agreement(bundle, images, labels, threads)
    body["speed"] = speed(bundle, images, head, threads, quick, batch, candidates)
    body["learning"] = learn_speed(bundle, dataset, data_dir, threads, quick)
    body["head_kernels"] = head_kernels(bundle, images, head, threads, quick, batch)
    if not quick:
        body["processes"] = processes(bundle, images, head, venvs, files)
    body["load_average_after"] = list(os.getloadavg())
    done = end_run(run_rec)
    for row in (*body["agreement"].values(), *body["speed"].values()):
        row["run"] = done
    result = write_result(out, FORMAT, 1, body, argv=argv, run=done)
    log(f"wrote {out}")
    return result


def agreement(bundle: Path, images, labels, threads: int) -> dict:
    """Every head of the bundle on every test image, for the float and the int8 encoder: code
    bits that differ from the torch encoder's, labels that differ from the torch pipeline's, the
    accuracy of both on the images of the head's classes."""
    from hybnn_kernels import load_bundle, pack_signs

    from hybnn_cli.deploy.export_bundle import torch_logits
    from hybnn_cli.deploy.export_head import torch_predict
    from hybnn_cli.models.checkpoint import load_bnn, load_vae

    m = json.loads((bundle / "bundle.json").read_text())
    vae, _ = load_vae(m["encoder"]["checkpoint"]["path"])
    with using(threads):  # torch's and the kernels' threads, restored after
        want_codes = pack_signs(torch_logits(vae.encoder, images))
        y = labels.astype(np.int64)
        out = {}
        for variant in ("float", "int8"):
            pipe = load_bundle(bundle, threads, int8=variant == "int8")
            codes = np.concatenate([pipe.encode(images[s:s + 4096])
                                    for s in range(0, len(images), 4096)])
            flipped = int(np.unpackbits((codes ^ want_codes).view(np.uint8)).sum())
            rows = {}
            for name, entry in m["heads"].items():
                model, _ = load_bnn(entry["checkpoint"]["path"])
                classes = np.asarray(entry["classes"])
                torch_labels = classes[torch_predict(model, want_codes)[1]]
                got = pipe.classify_codes(codes, [name])[name]
                task = np.isin(y, classes)
                acc_t = float(np.mean(torch_labels[task] == y[task]))
                acc_b = float(np.mean(got[task] == y[task]))
                rows[name] = {"n": int(len(y)), "n_task": int(task.sum()),
                              "labels_differing": int(np.count_nonzero(got != torch_labels)),
                              "labels_identical_fraction": float(np.mean(got == torch_labels)),
                              "labels_differing_on_task_images":
                                  int(np.count_nonzero(got[task] != torch_labels[task])),
                              "accuracy_torch": acc_t, "accuracy_bundle": acc_b,
                              "accuracy_diff_points": 100 * (acc_b - acc_t)}
            n_bits = len(images) * m["encoder"]["latent_bits"]
            out[variant] = {"bits": int(want_codes.shape[0] * m["encoder"]["latent_bits"]),
                            "flipped_bits": flipped, "flipped_fraction": flipped / n_bits,
                            "images_with_a_flipped_bit": int(np.count_nonzero(
                                (codes != want_codes).any(axis=1))),
                            "heads": rows}
            log(f"agreement {variant}: {flipped} flipped bits; " + ", ".join(
                f"{k} {v['labels_differing']} labels differ, acc {v['accuracy_torch']:.4f} → "
                f"{v['accuracy_bundle']:.4f}" for k, v in rows.items()))
        return out


@renderer("e2e")
def e2e(results_dir: Path) -> str:
    """The deploy bundle against the torch pipeline: agreement, speed, start-up, size."""
    r = read_result(Path(results_dir) / E2E, FORMAT)
    ag, sp = r["agreement"], r["speed"]
    rows = []
    for name, f in ag["float"]["heads"].items():
        q = ag["int8"]["heads"][name]
        rows.append([name, f["n_task"], f"{f['labels_differing']} / "
                     f"{f['labels_differing_on_task_images']}", pct(f["accuracy_torch"]),
                     pct(f["accuracy_bundle"]), f"{q['labels_differing']} / "
                     f"{q['labels_differing_on_task_images']}", pct(q["accuracy_bundle"]),
                     f"{q['accuracy_diff_points']:+.2f}"])
    agree = table(["head", "task images", "float: labels ≠ torch's (all / task images)",
                   "torch accuracy %", "float accuracy %",
                   "int8: labels ≠ torch's (all / task images)", "int8 accuracy %",
                   "int8 − torch (points)"], rows)
    b, one = sp["batch_4096"], sp["batch_1"]

    def split(c):
        s = c["time_share"]
        return " / ".join(f"{100 * v:.0f}%" for v in s.values()) if s else "–"

    def iqr(c, n):
        return "–".join(f"{1e6 * t / n:.0f}" for t in c["iqr_seconds"])

    best = "torch_best" in b and "torch_best" in one  # runs before it timed eager torch only

    def label(k):
        if k != "torch_best":
            return k
        return (f"torch_best ({b['torch_best_choice']['chosen']} at 4096, "
                f"{one['torch_best_choice']['chosen']} at 1)")

    perf = table(["pipeline", "batch 4096: µs per image (quartiles)", "images/s",
                  "batch 1: µs, median (quartiles)",
                  "time split at 4096 (encoder / threshold+pack / head)", "time split at 1"],
                 [[label(k), f"{b[k]['us_per_image']:.1f} ({iqr(b[k], 4096)})",
                   f"{b[k]['images_per_second']:,.0f}",
                   f"{one[k]['us_per_image']:.1f} ({iqr(one[k], 1)})", split(b[k]),
                   split(one[k])]
                  for k in ("torch", *(["torch_best"] if best else []), "bundle_float",
                            "bundle_int8")])
    flags = set(r["machine"].get("cpu_flags", []))
    if not flags & {"avx512_vnni", "avx_vnni"}:
        perf += ("\n\nThis CPU has neither AVX-512 VNNI nor AVX-VNNI (the machine record's "
                 "`cpu_flags`), the int8 dot-product instructions ONNX Runtime's quantized "
                 "convolutions are built for; without them its int8 kernels run on AVX2 "
                 "multiply-adds, and the int8 speed-up above is what remains.")
    text = (f"On the {ag['float']['heads']['all']['n']:,} MNIST test images the float bundle's "
            f"codes differ from the torch encoder's in {ag['float']['flipped_bits']} of "
            f"{ag['float']['bits']:,} bits, the int8 encoder's in {ag['int8']['flipped_bits']:,} "
            f"({ag['int8']['flipped_fraction']:.2%}). Each head's labels are compared with the "
            f"torch pipeline's on all images and on the images of its classes, where its "
            f"accuracy is measured:\n\n{agree}\n\n"
            f"Speed, head `{r['head_timed']}`, {r['threads']} threads, one process, same images "
            f"(load average {r['load_average_before'][0]:.1f} before, "
            f"{r['load_average_after'][0]:.1f} after, on a shared machine): the float bundle is "
            f"{b['speedup_float_vs_torch']:.1f}× torch at batch 4096 and "
            f"{one['speedup_float_vs_torch']:.1f}× at batch 1; int8 is "
            f"{b['speedup_int8_vs_float']:.2f}× the float bundle at batch 4096 and "
            f"{one['speedup_int8_vs_float']:.2f}× at batch 1: {_int8_verdict(r, b, one)}."
            + (_torch_best_text(b, one) if best else "") + _encoder_alone_text(one)
            + f"\n\n{perf}")
    text += "\n\n" + _head_kernels_text(r.get("head_kernels"))
    pr = r.get("processes")
    if pr:
        c = pr["cold_start"]
        imports = ", ".join(f"`{k}` {v:.2f} s" for k, v in pr["import_seconds"].items()
                            if k != "python")
        numba = {True: " (numba started)", False: " (numba not started: the numpy head)"}.get(
            c["bundle"].get("numba_imported"), "")
        text += (f"\n\nCold start (new process: import, load, classify one image; median of 3): "
                 f"bundle {c['bundle']['seconds']:.2f} s{numba}, torch "
                 f"{c['torch']['seconds']:.2f} s (import alone: {imports}; the interpreter "
                 f"alone {pr['import_seconds']['python']:.2f} s). " + _installed_text(pr))
    return text + "\n\n" + _learning_text(r.get("learning")) + "\n\n" + source(E2E, r)


def _learning_text(le: dict | None) -> str:
    """On-device learning (`hybnn learn-class`), or "not measured" for a run before it."""
    if not le:
        return "On-device learning of a new class (`hybnn learn-class`): not measured in this run."
    return (f"On-device learning of a new class (`hybnn learn-class`, {le['components']} "
            f"prototypes from {le['per_class_images']:,} training images per class, each digit "
            f"in turn, on a copy of the bundle): {le['median_class_seconds']:.2f} s per class "
            f"(encode + fit, median; {le['median_class_wall_seconds']:.2f} s with loading and "
            f"writing the bundle), {le['us_per_image']:.0f} µs per image "
            f"({le['encode_us_per_image']:.0f} encoding, {le['fit_us_per_image']:.0f} fitting); "
            f"the ten digits learned so score {pct(le['test_accuracy'])}% on the "
            f"{le['test_images']:,} test images.")


def _int8_verdict(r: dict, b: dict, one: dict) -> str:
    """Whether int8 pays on the CPU of this run, at the large batch and at batch 1."""
    cpu = r["machine"].get("cpu", "this CPU")
    wins = [n for n, c in (("batch 4096", b), ("batch 1", one)) if c["speedup_int8_vs_float"] > 1]
    if len(wins) == 2:
        return f"on {cpu}, int8 is the faster encoder at both batch sizes"
    if not wins:
        return f"on {cpu}, int8 is slower than float at both batch sizes: keep the float encoder"
    return f"on {cpu}, int8 is faster only at {wins[0]}"


def _encoder_alone_text(one: dict) -> str:
    """Batch 1 against the ONNX Runtime encoder alone at its best (runs before the one-image
    path did not time it)."""
    if "encoder_alone" not in one:
        return ""
    t = one["one_image_threads"]
    return (f" At batch 1 the float bundle runs its one-image path (I/O binding, threshold and "
            f"pack fused, the one-code head; {t['bundle_float']} thread(s), chosen at load by a "
            f"short measurement) in {one['float_over_encoder_alone']:.2f}× the time of the ONNX "
            f"Runtime encoder alone at its best ({one['encoder_alone']['us_per_image']:.1f} µs, "
            f"{one['encoder_alone_threads']} thread(s), I/O binding{_by_threads(one)}).")


def _by_threads(one: dict) -> str:
    """The encoder alone at each thread count it was timed at (runs since it is timed at each)."""
    by = one.get("encoder_alone_by_threads")
    if not by or len(by) < 2:
        return ""
    return "; timed at each thread count in the same rounds: " + ", ".join(
        f"{v:.1f} µs with {t}" for t, v in sorted(by.items(), key=lambda kv: int(kv[0])))


MEMORY_TARGET_MB = 150  # issue 25: `hybnn predict` on 60,000 images, default settings
BASE_TARGET_MB = 250  # issue 25: the base install, without numba or torch


def _installed_text(pr: dict) -> str:
    """Installed sizes and predict's peak memory. A file from before the base install lost numba
    measured one runtime venv, with numba (`runtime_only`): that is the fast install's size, and
    the base install's is not measured."""
    m, mem = pr["installed_mb"], pr["predict_peak_memory"]
    if "base" in m:
        base = (f"{m['base']:,.0f} MB for the base install (`pip install .`: the numpy head, no "
                f"numba; the target was under {BASE_TARGET_MB} MB)")
        fast = m["fast"]
    else:
        base = "not measured for the base install without numba"
        fast = m["runtime_only"] if "numba" in pr.get("runtime_venv_packages", {}) else None
    fast = "not measured" if fast is None else f"{fast:,.0f} MB"
    where = " in the base install" if "base" in m else ""

    def peak(key, fallback=None):
        row = mem.get(key) or (mem.get(fallback) if fallback else None)
        return "not measured" if row is None else (
            f"{row['peak_rss_mb']:.0f} MB on {row['images']:,} images")

    text = (f"Installed (site-packages): {base}, {fast} with numba (`pip install '.[fast]'`), "
            f"{m['with_torch']:,.0f} MB with torch. Peak memory of `hybnn predict --model "
            f"BUNDLE`{where}: {peak('test')}, {peak('train')}")
    if "base" in m:
        train = mem["train"]["peak_rss_mb"]
        text += (f" ({'within' if train <= MEMORY_TARGET_MB else 'above'} the target of "
                 f"{MEMORY_TARGET_MB} MB on the training images; every head, the default batch "
                 f"of {mem['train'].get('batch_size')}); in the fast install "
                 f"{peak('test_fast')}, {peak('train_fast')}")
    return text + "."


def _head_kernels_text(hk: dict | None) -> str:
    """Both head kernels' speed (`e2e_speed.head_kernels`), or "not measured"."""
    if not hk:
        return ("The head alone on its two kernels (the numpy head of the base install, the "
                "compiled head of the `fast` install): not measured in this run.")
    rows = []
    for key, n in ((k, int(k.split("_")[1])) for k in hk if k.startswith("batch_")):
        b = hk[key]
        rows.append([f"{n:,}", f"{b['numpy']['us_per_code']:.2f}",
                     f"{b['numba']['us_per_code']:.3f}", f"{b['speedup_numba_vs_numpy']:.0f}×"])
    return (f"The head `{hk['head']}` alone on its two kernels, on the bundle's codes of the test "
            f"images (labels identical on all {hk['codes_checked']:,} codes): the numpy head "
            f"(`np.bitwise_count`), which the base install runs, and the compiled head, which "
            f"`pip install '.[fast]'` adds:\n\n" + table(
                ["batch", "numpy head: µs per code", "compiled head (numba): µs per code",
                 "speed-up of the compiled head"], rows))


def _torch_best_text(b: dict, one: dict) -> str:
    """Torch at its best (`benchmarks/e2e.py`): what was chosen at each batch, the code bits that
    differ from eager's, and the float bundle against it."""
    def flips(c):
        f = c["torch_best_choice"]["codes_vs_eager"]
        return f"{f['flipped_bits']:,} of {f['bits']:,} code bits on {f['images']:,} images"

    return (f" Torch at its best (`torch_best`: batch norm folded into the convolutions, then the "
            f"fastest of that module eager, `torch.jit.freeze` + `optimize_for_inference` and "
            f"`torch.compile`, chosen in the run at each batch: "
            f"`{b['torch_best_choice']['chosen']}` at batch 4096, "
            f"`{one['torch_best_choice']['chosen']}` at batch 1) differs from eager torch in "
            f"{flips(b)} at batch 4096 and {flips(one)} at batch 1; the float bundle is "
            f"{b['speedup_float_vs_torch_best']:.1f}× it at batch 4096 and "
            f"{one['speedup_float_vs_torch_best']:.1f}× at batch 1.")
