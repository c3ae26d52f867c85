"""Speed in the end-to-end benchmark (`benchmarks/e2e.py`, `e2e_study`): throughput at a large
batch and latency at batch 1 for torch eager, torch at its best (`e2e_torch`), the bundle with
its float encoder and with its int8 encoder, each with the time split (encoder, threshold + pack,
head). Every contender's labels are checked against the torch TaskBNN's before its time counts
(the int8 encoder's codes differ, so its labels are checked against its own codes through the
torch head, and so are torch-at-its-best's); the contenders are then timed in interleaved rounds
(`compare_speed`: all of them see the same drift of a shared machine), medians reported.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from hybnn_cli.study.e2e_torch import (
    TORCH_CANDIDATES,
    TorchPipeline,
    best_torch_encoder,
    code_flips,
    log,
    timed,
)
from hybnn_cli.threads import using


class BundlePipeline:
    """One head of a loaded bundle as a callable: images → labels."""

    def __init__(self, pipe, head: str):
        self.pipe, self.head = pipe, head

    def __call__(self, images):
        return self.pipe.classify(images, [self.head])[self.head]


# torch's idle worker threads keep spinning for a while after a parallel region; a thread count
# chosen while they spin would be chosen against them, not against the machine
QUIET_SECONDS = 0.5


class OneImagePipeline:
    """One head of a loaded bundle at batch 1 through its one-image path
    (`Pipeline.one_image("fastest")`: I/O binding, fused pack, the one-code head, the faster
    thread count): images (1, H, W) → labels (1,)."""

    def __init__(self, pipe, head: str):
        time.sleep(QUIET_SECONDS)  # torch's worker threads stop spinning before the choice
        self.one, self.head = pipe.one_image("fastest", [head]), head

    def __call__(self, images):  # what a caller gets: {head: label} (timed as it is)
        return self.one(images[0])

    def labels(self, images) -> np.ndarray:
        """Labels (N,) of images (N, H, W), one call each (for the checks)."""
        return np.array([self.one(image)[self.head] for image in images])


class EncoderAlone:
    """The bundle's ONNX Runtime encoder alone at batch 1 on `threads` intra-op threads: a
    preallocated input and output bound once (I/O binding), the run only. The benchmark times it
    at 1 thread and at the pipeline's count in the same interleaved rounds as the whole path, and
    reports the faster as the encoder at its best (a choice made on the timed calls themselves,
    so that a noisy short measurement cannot leave the encoder at its slower count)."""

    def __init__(self, pipe, image, threads: int):
        time.sleep(QUIET_SECONDS)  # as in OneImagePipeline
        self.threads = threads
        self.one = pipe.one_image(threads)
        self.one.encode(image)  # a real image in the bound input, which every call then runs on

    def __call__(self, images):  # the encoder's run only: no normalisation, threshold or head
        self.one.session.run_with_iobinding(self.one.binding)


# between two contenders' blocks: the worker threads of the one before (torch's OpenMP pool keeps
# spinning up to 200 ms after a parallel region by default) stop spinning on the cores the next
# one uses
BETWEEN_SECONDS = 0.3


def compare_speed(contenders: dict, make_input, reps: int, min_total: float, rounds: int = 3,
                  per_image: int = 1) -> dict:
    """Interleaved rounds (all contenders see the same drift of a shared machine); medians."""
    times = {k: [] for k in contenders}
    splits = {}
    for c in contenders.values():  # warm-up (JIT, thread pools, first touch)
        c["fn"](make_input(0))
        c["reset"]()
    for _ in range(rounds):
        for name, c in contenders.items():
            i = [0]

            def call(c=c, i=i):
                c["fn"](make_input(i[0]))
                i[0] += 1

            time.sleep(BETWEEN_SECONDS)
            times[name] += timed(call, max(1, reps // rounds), min_total / rounds)
    for name, c in contenders.items():
        total = sum(times[name])
        splits[name] = {k: v / total for k, v in c["split"]().items()}
        c["reset"]()
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        q1, q3 = np.percentile(ts, [25, 75])
        out[name] = {"median_seconds": med, "us_per_image": 1e6 * med / per_image,
                     "images_per_second": per_image / med, "iqr_seconds": [q1, q3],
                     "min_seconds": min(ts), "repeats": len(ts),
                     "time_share": splits[name]}
    return out


def speed_at(batch: int, reps: int, min_total: float, bundle: Path, images, head: str,
             threads: int, vae_path, bnn_path, candidates=tuple(TORCH_CANDIDATES),
             flip_images: int | None = None, quick: bool = False) -> dict:
    """Every pipeline at `batch`, checked, then timed in interleaved rounds. Torch at its best is
    chosen here, at this batch (`best_torch_encoder`), and its codes compared with eager's on the
    first `flip_images` images (all by default)."""
    from hybnn_kernels import load_bundle

    x = images[:batch]
    tp = TorchPipeline(vae_path, bnn_path, batch)
    best_encoder, choice = best_torch_encoder(tp.eager, x, candidates,
                                              reps=(1 if quick else 3) if batch > 64 else
                                              (20 if quick else 200))
    choice["codes_vs_eager"] = code_flips(best_encoder, tp.eager, images[:flip_images], batch)
    log(f"torch at its best, batch {batch}: {choice['codes_vs_eager']['flipped_bits']} of "
        f"{choice['codes_vs_eager']['bits']:,} code bits differ from eager's")
    tb = TorchPipeline(vae_path, bnn_path, batch, encoder=best_encoder)
    # a warm process: the heads compiled at load (the numpy cold path is for a process's first
    # calls; `cold_start` measures that)
    fl = load_bundle(bundle, threads, heads=[head], compiled=True)
    q8 = load_bundle(bundle, threads, int8=True, heads=[head], compiled=True)
    checks, want, best_labels = _checks(batch, x, head, bnn_path, tp, tb, best_encoder, fl, q8)
    choice["labels_differing_from_eager"] = int(np.count_nonzero(best_labels != want))
    n_img = len(images)

    def make_input(i):
        return x if batch > 1 else images[i % n_img:i % n_img + 1]

    contenders = _contenders(tp, tb, fl, q8, head)
    if batch == 1:  # the bundles through their one-image path, and the encoder alone beside them
        alone = {t: EncoderAlone(fl, x[0], t) for t in sorted({1, fl.threads})}
        for name, p in (("bundle_float", fl), ("bundle_int8", q8)):
            fn = OneImagePipeline(p, head)
            if not np.array_equal(fn.labels(images[:64]), BundlePipeline(p, head)(images[:64])):
                raise SystemExit(f"e2e batch 1: the one-image path of {name} gives other labels "
                                 f"than its batch path")
            contenders[name].update(fn=fn, split=dict)  # no time split on the one-image path
        for t, fn in alone.items():
            contenders[f"encoder_alone_{t}"] = {"fn": fn, "split": dict, "reset": lambda: None}
    r = compare_speed(contenders, make_input, reps, min_total, per_image=batch)
    if batch == 1:
        r["one_image_threads"] = {k: contenders[k]["fn"].one.threads
                                  for k in ("bundle_float", "bundle_int8")}
        by_threads = {t: r.pop(f"encoder_alone_{t}") for t in alone}
        best = min(by_threads, key=lambda t: by_threads[t]["median_seconds"])
        r["encoder_alone"] = by_threads[best]
        r["encoder_alone_threads"] = best
        r["encoder_alone_by_threads"] = {str(t): v["us_per_image"] for t, v in by_threads.items()}
        r["float_over_encoder_alone"] = (r["bundle_float"]["median_seconds"]
                                         / r["encoder_alone"]["median_seconds"])
    r["checks"] = checks
    r["torch_best_choice"] = choice
    r["speedup_float_vs_torch"] = (r["torch"]["median_seconds"]
                                   / r["bundle_float"]["median_seconds"])
    r["speedup_float_vs_torch_best"] = (r["torch_best"]["median_seconds"]
                                        / r["bundle_float"]["median_seconds"])
    r["speedup_torch_best_vs_eager"] = (r["torch"]["median_seconds"]
                                        / r["torch_best"]["median_seconds"])
    r["speedup_int8_vs_float"] = (r["bundle_float"]["median_seconds"]
                                  / r["bundle_int8"]["median_seconds"])
    log(f"batch {batch}: torch {r['torch']['us_per_image']:.2f} µs/image, torch at its best "
        f"({choice['chosen']}) {r['torch_best']['us_per_image']:.2f}, bundle float "
        f"{r['bundle_float']['us_per_image']:.2f}, int8 {r['bundle_int8']['us_per_image']:.2f} "
        f"(float {r['speedup_float_vs_torch']:.2f}× torch, "
        f"{r['speedup_float_vs_torch_best']:.2f}× torch at its best)")
    return r


def _checks(batch: int, x, head: str, bnn_path, tp, tb, best_encoder, fl, q8):
    """The checks before any time counts: the torch float head = the TaskBNN module on the torch
    codes; the float bundle = torch; the int8 bundle and torch at its best = the TaskBNN module on
    their own codes. Returns (the checks, torch's labels, torch-at-its-best's labels); exits with
    the checks when one fails."""
    import torch
    from hybnn_kernels import pack_signs

    from hybnn_cli.data.tensors import images_to_tensor
    from hybnn_cli.deploy.export_head import torch_predict
    from hybnn_cli.models.checkpoint import load_bnn

    model, _ = load_bnn(bnn_path)
    with torch.inference_mode():
        want = tp(x)
        best_labels = tb(x)
        best_codes = pack_signs(best_encoder(images_to_tensor(x)).numpy())
    taskbnn = tp.classes[torch_predict(model, fl.encode(x))[1]]
    checks = {"torch_float_head_equals_taskbnn": bool(np.array_equal(want, taskbnn)),
              "torch_best_equals_taskbnn_on_its_codes": bool(np.array_equal(
                  best_labels, tp.classes[torch_predict(model, best_codes)[1]])),
              "bundle_float_equals_torch": bool(np.array_equal(BundlePipeline(fl, head)(x),
                                                               want)),
              "bundle_int8_equals_taskbnn_on_its_codes": bool(np.array_equal(
                  BundlePipeline(q8, head)(x), tp.classes[torch_predict(model,
                                                                         q8.encode(x))[1]]))}
    if not all(checks.values()):
        raise SystemExit(f"e2e batch {batch}: a check failed: {checks}")
    return checks, want, best_labels


def _contenders(tp, tb, fl, q8, head: str) -> dict:
    """The four pipelines as `compare_speed` contenders: each callable with how to read and reset
    its time split."""
    def bundle_split(p):
        return lambda: {"encoder": p.timings.encoder, "threshold_pack": p.timings.pack,
                        "head": p.timings.head}

    def bundle_reset(p):
        def reset():
            p.timings.encoder = p.timings.pack = p.timings.head = 0.0
            p.timings.images = 0
        return reset

    def torch_reset(t):
        return lambda: t.split.update(encoder=0.0, threshold=0.0, head=0.0)

    return {
        "torch": {"fn": tp, "split": lambda: dict(tp.split), "reset": torch_reset(tp)},
        "torch_best": {"fn": tb, "split": lambda: dict(tb.split), "reset": torch_reset(tb)},
        "bundle_float": {"fn": BundlePipeline(fl, head), "split": bundle_split(fl),
                         "reset": bundle_reset(fl)},
        "bundle_int8": {"fn": BundlePipeline(q8, head), "split": bundle_split(q8),
                        "reset": bundle_reset(q8)},
    }


def speed(bundle: Path, images, head: str, threads: int, quick: bool, batch: int = 4096,
          candidates=tuple(TORCH_CANDIDATES)) -> dict:
    """Every pipeline at the large `batch` and at batch 1 (`speed_at`), on `threads` threads; the
    head exported as C at batch 1 (`e2e_c_head`)."""
    import torch  # noqa: F401  (loaded first, so that `using` sets its threads too)

    m = json.loads((bundle / "bundle.json").read_text())
    paths = m["encoder"]["checkpoint"]["path"], m["heads"][head]["checkpoint"]["path"]
    # codes against eager's: every image at the large batch; at batch 1 (a call per image) the
    # first few hundred
    with using(threads):
        out = {f"batch_{b}": speed_at(b, reps, min_total, bundle, images, head, threads, *paths,
                                       candidates=candidates, flip_images=flips, quick=quick)
                for b, reps, min_total, flips in (
                    (batch, 5 if quick else 15, 0.0 if quick else 3.0, None),
                    (1, 200 if quick else 3000, 0.0 if quick else 3.0, 32 if quick else 500))}
    from hybnn_cli.study.e2e_c_head import c_head_speed

    out["c_head_batch_1"] = c_head_speed(bundle, images, head, quick)  # one thread
    return out


def learn_speed(bundle: Path, dataset: str, data_dir, threads: int, quick: bool,
                per_class: int = 500, components: int = 10, seed: int = 0) -> dict:
    """On-device learning (`hybnn learn-class`) timed: each of the dataset's classes learned in
    turn from `per_class` of its training images (the validation slice left out) into a
    prototype head of a copy of `bundle` (the bundle itself is not changed), with the seconds
    spent encoding, fitting and writing, per class and per image; then the learned head's
    accuracy on the test images (a fixed setting, nothing chosen on it). The fit is numpy alone,
    its BLAS on `threads` threads."""
    import shutil
    import tempfile

    from hybnn_kernels import load_bundle

    from hybnn_cli.data.datasets import load_split
    from hybnn_cli.data.splits import train_val_indices
    from hybnn_cli.deploy.learn_class import learn_class

    per_class = min(per_class, 100) if quick else per_class
    images, labels = load_split(dataset, "train", data_dir)
    train_idx, _ = train_val_indices(labels)
    rows = []
    # a class with fewer training images than K (a tiny test set) fits as many prototypes as it
    # has images: K is lowered for all classes alike, and recorded
    counts = np.bincount(labels[train_idx])
    components = int(min(components, per_class, counts[counts > 0].min()))
    with tempfile.TemporaryDirectory(prefix="e2e-learn-") as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle, copy)
        for c in np.unique(labels).tolist():
            np.save(Path(tmp) / f"{c}.npy", images[train_idx[labels[train_idx] == c][:per_class]])
            t0 = time.perf_counter()
            r = learn_class(copy, str(c), [Path(tmp) / f"{c}.npy"], "e2e-learned", components,
                            seed, threads)
            rows.append({"class": str(c), "images": r["images"], "wall_seconds":
                         time.perf_counter() - t0, **{f"{k}_seconds": v
                                                      for k, v in r["seconds"].items()}})
        test_x, test_y = load_split(dataset, "test", data_dir)
        pipe = load_bundle(copy, threads, heads=["e2e-learned"], compiled=False)
        pred = np.concatenate([pipe.classify(test_x[s:s + 4096])["e2e-learned"]
                               for s in range(0, len(test_x), 4096)])
    n_img = sum(r["images"] for r in rows)
    enc_fit = [r["encode_seconds"] + r["fit_seconds"] for r in rows]
    out = {"per_class_images": per_class, "components": components, "seed": seed,
           "classes": rows, "median_class_seconds": statistics.median(enc_fit),
           "median_class_wall_seconds": statistics.median(r["wall_seconds"] for r in rows),
           "us_per_image": 1e6 * sum(enc_fit) / n_img,
           "encode_us_per_image": 1e6 * sum(r["encode_seconds"] for r in rows) / n_img,
           "fit_us_per_image": 1e6 * sum(r["fit_seconds"] for r in rows) / n_img,
           "test_accuracy": float(np.mean(pred == test_y.astype(str))), "test_images": len(pred)}
    log(f"on-device learning: {out['median_class_seconds']:.2f} s per class (encode + fit, "
        f"median), {out['us_per_image']:.0f} µs per image; the learned head's test accuracy "
        f"{out['test_accuracy']:.4f}")
    return out


def head_kernels(bundle: Path, images, head: str, threads: int, quick: bool,
                 batch: int = 4096) -> dict:
    """The timed head on both its kernels, on the bundle's own codes of the images: the numpy head
    (`head_numpy`, what the base install runs) and the compiled one (numba, the `fast` extra), at
    `batch` and at batch 1 (a call per code, through the codes in turn). Their labels must be
    identical on every code before any time counts; timed in interleaved rounds
    (`compare_speed`), medians."""
    from hybnn_kernels import load_bundle
    from hybnn_kernels.head_numpy import NumpyHead

    pipe = load_bundle(bundle, threads, heads=[head], compiled=True)
    codes = np.concatenate([pipe.encode(images[s:s + 4096]) for s in range(0, len(images), 4096)])
    arrays = pipe.heads[head].arrays
    numpy_head, compiled = NumpyHead(arrays), pipe.heads[head].runtime
    if compiled is None:
        raise SystemExit("e2e: numba does not import here; the compiled head cannot be timed")
    same = bool(np.array_equal(numpy_head.run(codes)[1], compiled.run(codes, threads)[1]))
    if not same:
        raise SystemExit(f"e2e: the numpy and the compiled head {head} give different labels")
    contenders = {"numpy": {"fn": numpy_head.run, "split": dict, "reset": lambda: None},
                  "numba": {"fn": lambda c: compiled.run(c, threads), "split": dict,
                            "reset": lambda: None}}
    out = {"head": head, "codes_checked": int(len(codes)), "labels_identical": same}
    for b, reps, min_total in ((batch, 3 if quick else 15, 0.0 if quick else 2.0),
                               (1, 50 if quick else 2000, 0.0 if quick else 2.0)):
        def make_input(i, b=b):
            return codes[:b] if b > 1 else codes[i % len(codes):i % len(codes) + 1]

        r = compare_speed(contenders, make_input, reps, min_total, per_image=b)
        for row in r.values():
            row["us_per_code"] = row.pop("us_per_image")
            row["codes_per_second"] = row.pop("images_per_second")
            del row["time_share"]
        r["speedup_numba_vs_numpy"] = r["numpy"]["median_seconds"] / r["numba"]["median_seconds"]
        out[f"batch_{b}"] = r
        log(f"head {head} at batch {b}: numpy {r['numpy']['us_per_code']:.2f} µs per code, "
            f"numba {r['numba']['us_per_code']:.2f} ({r['speedup_numba_vs_numpy']:.1f}×)")
    return out
