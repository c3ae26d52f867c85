"""End to end, uint8 pixels to labels: a deploy bundle (ONNX Runtime encoder + XNOR head) against
the torch pipeline (encoder in `inference_mode`, threshold, the float32 BNN head at its best), in
one process, on the same MNIST test images, with the same number of threads.

Measures and checks, into `benchmarks/results/e2e.json` (provenance header from `results`):

- agreement, on the 10,000 test images, for every head of the bundle (tasks 1–5 and the 10-class
  model): code bits that differ from the torch encoder's, labels that differ from the torch
  pipeline's (encoder → TaskBNN module), and the accuracy of both, for the float and the int8
  encoder;
- throughput at batch 4096 and latency at batch 1 (median, warm), for torch eager, torch at its
  best, bundle float and bundle int8, with the time split (encoder, threshold + pack, head) of
  each; every contender's labels are checked against the torch TaskBNN's before its time counts
  (the int8 encoder's codes differ, so its labels are checked against its own codes through the
  torch head, and so are torch-at-its-best's);
- torch at its best (`best_torch_encoder`), chosen in the run at each batch size: the encoder with
  batch norm folded into the convolutions (the bundle's folding, `bundle_export.fold_encoder`),
  then the fastest of that module eager, `torch.jit.freeze` + `torch.jit.optimize_for_inference`
  and `torch.compile` (inductor, weights frozen); a candidate that fails is recorded with its
  error and left out.
  Folding changes float rounding, so the codes can differ from eager's where a logit is within
  rounding of 0: the bits that flip are counted (on every test image at the large batch, on the
  first images one by one at batch 1) and recorded;
- cold start: a new process that imports the runtime, loads the bundle and classifies one image
  (and the same with torch: import, load the checkpoints, classify), median of 3 after one run
  that fills the page cache (and Numba's on-disk cache);
- installed size of a runtime-only virtual environment (`pip install .`, the base install) and of
  the same plus torch==2.13.0, and the peak memory of `hybnn predict --model BUNDLE` on the 10,000
  test and the 60,000 training images in the runtime-only one (streaming: flat in N).

Usage: python benchmarks/e2e.py --bundle runs/e2e/bundle [--venvs runs/e2e/venvs]
           [--threads 2] [--head all] [--out benchmarks/results/e2e.json] [--quick]
           [--torch-candidates jit,compile] [--batch 4096] [--dataset mnist]
The bundle's checkpoints (paths recorded in its manifest) must be at hand for the torch side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FORMAT = "hybnn-e2e"
ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ── the torch pipeline ─────────────────────────────────────────────────────────────────────────
class TorchPipeline:
    """images_to_tensor → encoder (inference_mode) → ±1 threshold → float32 head at its best
    (`float_head`). The encoder is the checkpoint's, eager, unless `encoder` (a callable on the
    same input: torch at its best, `best_torch_encoder`) replaces it."""

    def __init__(self, vae_path, bnn_path, batch: int, encoder=None):
        import torch

        from hybnn_cli.bench.float_head import fold, vector_heads
        from hybnn_cli.models.checkpoint import load_bnn, load_vae

        self.eager = load_vae(vae_path)[0].encoder.eval()
        self.encoder = self.eager if encoder is None else encoder
        self.bnn, ck = load_bnn(bnn_path)
        self.classes = np.asarray(ck["task"]["classes"])
        self.x = np.empty((batch, self.eager.latent_bits), np.float32)
        self.tx = torch.from_numpy(self.x)
        self.one, self.minus_one = torch.tensor(1.0), torch.tensor(-1.0)
        fns, bufs = vector_heads(fold(self.bnn), self.x)
        self.head, self.labels = fns["torch_f32"], bufs["torch_f32"]["labels"]
        self.split = {"encoder": 0.0, "threshold": 0.0, "head": 0.0}

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        from hybnn_cli.data.tensors import images_to_tensor

        with torch.inference_mode():
            t0 = time.perf_counter()
            logits = self.encoder(images_to_tensor(images))
            t1 = time.perf_counter()
            torch.where(logits >= 0, self.one, self.minus_one, out=self.tx)
            t2 = time.perf_counter()
            self.head()
            t3 = time.perf_counter()
        self.split["encoder"] += t1 - t0
        self.split["threshold"] += t2 - t1
        self.split["head"] += t3 - t2
        return self.classes[self.labels]


class BundlePipeline:
    def __init__(self, pipe, head: str):
        self.pipe, self.head = pipe, head

    def __call__(self, images):
        return self.pipe.classify(images, [self.head])[self.head]


def timed(fn, reps: int, min_total: float) -> list[float]:
    ts = []
    while len(ts) < reps or sum(ts) < min_total:
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        if len(ts) >= 20000:
            break
    return ts


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

            time.sleep(0.05)
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


# ── torch at its best ──────────────────────────────────────────────────────────────────────────
TORCH_CANDIDATES = {
    "folded": "the folded module, eager (inference_mode)",
    "jit": "torch.jit.trace, torch.jit.freeze, torch.jit.optimize_for_inference",
    "compile": "torch.compile(fullgraph=True, dynamic=False), inductor with freezing "
               "(torch._inductor.config.freezing = True)",
}


def folded_encoder(encoder):
    """The encoder as a plain module with batch norm folded into the convolutions, the bundle's
    folding (`bundle_export.fold_encoder`: computed in float64, stored in float32): three Conv2d
    with bias + LeakyReLU, Flatten, Linear; eval mode, no gradients."""
    import torch
    from torch import nn

    from hybnn_cli.deploy.export_bundle import LEAKY_SLOPE, fold_encoder

    convs, (fw, fb) = fold_encoder(encoder)
    layers = []
    for w, _ in convs:
        conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=2, padding=1)
        layers += [conv, nn.LeakyReLU(LEAKY_SLOPE)]
    fc = nn.Linear(fw.shape[1], fw.shape[0])
    module = nn.Sequential(*layers, nn.Flatten(), fc).eval().requires_grad_(False)
    with torch.no_grad():
        for conv, (w, b) in zip(layers[::2], convs, strict=True):
            conv.weight.copy_(torch.from_numpy(w))
            conv.bias.copy_(torch.from_numpy(b))
        fc.weight.copy_(torch.from_numpy(fw))
        fc.bias.copy_(torch.from_numpy(fb))
    return module


def _jit(module, x):
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.13 marks torch.jit deprecated in favour of torch.compile; it still runs, and is
        # measured against torch.compile here
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(module, x)))


def _compile(module, x):
    import torch
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights as constants: folded and prepacked at compile time
    return torch.compile(module, fullgraph=True, dynamic=False)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


def best_torch_encoder(eager, images: np.ndarray, candidates=tuple(TORCH_CANDIDATES),
                       reps: int = 3, rounds: int = 3):
    """Torch at its best for this encoder at the batch of `images`: batch norm folded
    (`folded_encoder`), then each candidate of TORCH_CANDIDATES built and run on the images
    (compiled now, outside any timing), its logits compared with eager's, and the candidates
    timed in interleaved rounds; returns (the fastest, a record: per candidate the build time, the
    largest logit difference from eager, the code bits that differ, the median time, or the error
    it failed with; the one chosen). The folded module run eager is a candidate too (at batch 1
    the graph modes' own costs per call can exceed what they save), and what runs when every
    candidate asked for fails."""
    import torch

    from hybnn_cli.data.tensors import images_to_tensor

    builders = {"folded": lambda module, x: module, "jit": _jit, "compile": _compile}
    x = images_to_tensor(images)
    folded = folded_encoder(eager)
    with torch.inference_mode():
        ref = eager(x)
    record = {"batch": int(len(images)), "batch_norm": "folded into the convolutions "
              "(bundle_export.fold_encoder)", "candidates": {}}
    fns = {}
    for name in candidates:
        t0 = time.perf_counter()
        try:
            fn = builders[name](folded, x)
            with torch.inference_mode():
                out = fn(x)  # torch.compile compiles here
                out = fn(x)
        except Exception as e:  # a candidate that cannot run here is recorded, not fatal
            record["candidates"][name] = {"how": TORCH_CANDIDATES[name], "ok": False,
                                          "error": _first_line(e),
                                          "seconds_to_fail": time.perf_counter() - t0}
            log(f"torch at its best, batch {len(images)}: {name} failed: {_first_line(e)}")
            continue
        record["candidates"][name] = {
            "how": TORCH_CANDIDATES[name], "ok": True, "build_seconds": time.perf_counter() - t0,
            "max_abs_logit_diff": float((out - ref).abs().max()),
            "flipped_bits": int(((out >= 0) != (ref >= 0)).sum())}
        fns[name] = fn
    if not fns:
        fns["folded"] = folded
        record["candidates"]["folded"] = {"how": TORCH_CANDIDATES["folded"] + ", every "
                                          "candidate asked for failed", "ok": True}
    times = {name: [] for name in fns}
    with torch.inference_mode():
        for _ in range(rounds):  # interleaved, as every comparison here
            for name, fn in fns.items():
                time.sleep(0.05)
                times[name] += timed(lambda fn=fn: fn(x), reps, 0.0)
    for name, ts in times.items():
        record["candidates"][name]["median_seconds"] = statistics.median(ts)
        record["candidates"][name]["repeats"] = len(ts)
    record["chosen"] = min(fns, key=lambda n: record["candidates"][n]["median_seconds"])
    log(f"torch at its best, batch {len(images)}: " + ", ".join(
        f"{n} {1e6 * c['median_seconds'] / len(images):.1f} µs/image" if c["ok"] and
        "median_seconds" in c else f"{n} failed" for n, c in record["candidates"].items())
        + f"; chosen: {record['chosen']}")
    return fns[record["chosen"]], record


def code_flips(encoder, eager, images: np.ndarray, batch: int) -> dict:
    """The code bits of `encoder` that differ from the eager encoder's on `images`, run in
    batches of exactly `batch` (the last one padded with blank images, their codes dropped: a
    compiled encoder keeps its one shape)."""
    import torch

    from hybnn_cli.data.tensors import images_to_tensor

    flipped = rows = 0
    diff = 0.0
    with torch.inference_mode():
        for s in range(0, len(images), batch):
            chunk = images[s:s + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]),
                                                        chunk.dtype)])
            x = images_to_tensor(chunk)
            got, want = encoder(x)[:n], eager(x)[:n]
            differ = (got >= 0) != (want >= 0)
            flipped += int(differ.sum())
            rows += int(differ.any(dim=1).sum())
            diff = max(diff, float((got - want).abs().max()))
    bits = len(images) * eager.latent_bits
    return {"images": int(len(images)), "bits": int(bits), "flipped_bits": flipped,
            "flipped_fraction": flipped / bits, "images_with_a_flipped_bit": rows,
            "max_abs_logit_diff": diff, "batch": batch}


# ── agreement on the test set ──────────────────────────────────────────────────────────────────
def agreement(bundle: Path, images, labels, threads: int) -> dict:
    import torch
    from hybnn_kernels import load_bundle, pack_signs

    from hybnn_cli.deploy.export_bundle import torch_logits
    from hybnn_cli.deploy.export_head import torch_predict
    from hybnn_cli.models.checkpoint import load_bnn, load_vae

    m = json.loads((bundle / "bundle.json").read_text())
    vae, _ = load_vae(m["encoder"]["checkpoint"]["path"])
    torch.set_num_threads(threads)
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
        out[variant] = {"bits": int(want_codes.shape[0] * m["encoder"]["latent_bits"]),
                        "flipped_bits": flipped,
                        "flipped_fraction": flipped / (len(images) * m["encoder"]["latent_bits"]),
                        "images_with_a_flipped_bit": int(np.count_nonzero(
                            (codes != want_codes).any(axis=1))),
                        "heads": rows}
        log(f"agreement {variant}: {flipped} flipped bits; " + ", ".join(
            f"{k} {v['labels_differing']} labels differ, acc {v['accuracy_torch']:.4f} → "
            f"{v['accuracy_bundle']:.4f}" for k, v in rows.items()))
    return out


# ── speed ──────────────────────────────────────────────────────────────────────────────────────
def speed_at(batch: int, reps: int, min_total: float, bundle: Path, images, head: str,
             threads: int, vae_path, bnn_path, candidates=tuple(TORCH_CANDIDATES),
             flip_images: int | None = None, quick: bool = False) -> dict:
    """Every pipeline at `batch`, checked, then timed in interleaved rounds. Torch at its best is
    chosen here, at this batch (`best_torch_encoder`), and its codes compared with eager's on the
    first `flip_images` images (all by default)."""
    import torch
    from hybnn_kernels import load_bundle, pack_signs

    from hybnn_cli.data.tensors import images_to_tensor
    from hybnn_cli.deploy.export_head import torch_predict
    from hybnn_cli.models.checkpoint import load_bnn

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
    # checks before any time counts: the torch float head = the TaskBNN module on the torch
    # codes; the float bundle = torch; the int8 bundle and torch at its best = the TaskBNN
    # module on their own codes
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
    choice["labels_differing_from_eager"] = int(np.count_nonzero(best_labels != want))
    n_img = len(images)

    def make_input(i):
        return x if batch > 1 else images[i % n_img:i % n_img + 1]

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

    contenders = {
        "torch": {"fn": tp, "split": lambda: dict(tp.split), "reset": torch_reset(tp)},
        "torch_best": {"fn": tb, "split": lambda: dict(tb.split), "reset": torch_reset(tb)},
        "bundle_float": {"fn": BundlePipeline(fl, head), "split": bundle_split(fl),
                         "reset": bundle_reset(fl)},
        "bundle_int8": {"fn": BundlePipeline(q8, head), "split": bundle_split(q8),
                        "reset": bundle_reset(q8)},
    }
    r = compare_speed(contenders, make_input, reps, min_total, per_image=batch)
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


def speed(bundle: Path, images, head: str, threads: int, quick: bool, batch: int = 4096,
          candidates=tuple(TORCH_CANDIDATES)) -> dict:
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    m = json.loads((bundle / "bundle.json").read_text())
    paths = m["encoder"]["checkpoint"]["path"], m["heads"][head]["checkpoint"]["path"]
    # codes against eager's: every image at the large batch; at batch 1 (a call per image) the
    # first few hundred
    return {f"batch_{b}": speed_at(b, reps, min_total, bundle, images, head, threads, *paths,
                                   candidates=candidates, flip_images=flips, quick=quick)
            for b, reps, min_total, flips in (
                (batch, 5 if quick else 15, 0.0 if quick else 3.0, None),
                (1, 200 if quick else 3000, 0.0 if quick else 3.0, 32 if quick else 500))}


# ── processes: cold start, installed size, memory ───────────────────────────────────────────────
COLD_BUNDLE = """
import sys, numpy as np
from hybnn_kernels import load_bundle
p = load_bundle(sys.argv[1], 2, heads=[sys.argv[3]])
x = np.load(sys.argv[2])
print(int(p.classify(x, [sys.argv[3]])[sys.argv[3]][0]), "numba" in sys.modules)
"""
COLD_TORCH = """
import sys, json, numpy as np, torch
torch.set_num_threads(2)
from hybnn_cli.models.checkpoint import load_bnn, load_vae
from hybnn_cli.codes.extract import encode_images
from hybnn_cli.deploy.export_head import torch_predict
m = json.load(open(sys.argv[1] + '/bundle.json'))
vae, _ = load_vae(m['encoder']['checkpoint']['path'])
bnn, ck = load_bnn(m['heads'][sys.argv[3]]['checkpoint']['path'])
codes = encode_images(vae.encoder, np.load(sys.argv[2]))
print(int(np.asarray(ck['task']['classes'])[torch_predict(bnn, codes)[1]][0]))
"""


def run_wall(cmd: list[str], env=None) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}…: exit {r.returncode}: {r.stderr[-800:]}")
    return wall, r.stdout.strip()


def site_packages_mb(venv: Path) -> float:
    (sp,) = venv.glob("lib/python*/site-packages")
    total = sum(f.stat().st_size for f in sp.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 1e6


def make_venvs(folder: Path) -> dict:
    """runtime: `pip install .` (the base install); torch: the same plus torch==2.13.0."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, extra in (("runtime", []), ("torch", ["torch==2.13.0"])):
        v = folder / name
        if not (v / ".done").exists():
            log(f"creating the {name} venv in {v} (pip install . {' '.join(extra)})")
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(v)], check=True)
            subprocess.run([str(v / "bin" / "pip"), "install", "--quiet", str(ROOT), *extra],
                           check=True, cwd=ROOT)
            (v / ".done").touch()
        made[name] = v
    return made


def processes(bundle: Path, images, head: str, venvs: Path, files: dict) -> dict:
    vs = make_venvs(venvs)
    py_rt, py_torch = str(vs["runtime"] / "bin" / "python"), str(vs["torch"] / "bin" / "python")
    freeze = subprocess.run([py_rt, "-m", "pip", "list", "--format=json"], capture_output=True,
                            text=True, check=True)
    pkgs = {p["name"].lower(): p["version"] for p in json.loads(freeze.stdout)}
    one = venvs / "one.npy"
    np.save(one, images[:1])
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    cold = {}
    for name, py, script in (("bundle", py_rt, COLD_BUNDLE), ("torch", py_torch, COLD_TORCH)):
        cmd = [py, "-c", script, str(bundle.resolve()), str(one), head]
        first, printed = run_wall(cmd, env)
        walls = [run_wall(cmd, env)[0] for _ in range(3)]
        cold[name] = {"first_run_seconds": first, "seconds": statistics.median(walls),
                      "runs": walls, "label": int(printed.split()[0])}
        if name == "bundle":
            cold[name]["numba_imported"] = printed.split()[1] == "True"
    imports = {}
    for name, py, mod in (("onnxruntime", py_rt, "onnxruntime"),
                          ("hybnn_kernels.pipeline", py_rt, "hybnn_kernels.pipeline"),
                          ("hybnn_kernels.runtime", py_rt, "hybnn_kernels.runtime"),
                          ("torch", py_torch, "torch"), ("python", py_rt, "sys")):
        imports[name] = statistics.median(run_wall([py, "-c", f"import {mod}"], env)[0]
                                          for _ in range(3))
    mem = {}
    rss = ("import resource, subprocess, sys; "
           "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    for split, f in files.items():
        wall, kb = run_wall([py_rt, "-c", rss, py_rt, "-m", "hybnn_cli", "predict", "--model",
                             str(bundle.resolve()), str(f), "--head", head, "--threads", "2",
                             "--json"], env)
        mem[split] = {"images": 10000 if split == "test" else 60000, "peak_rss_mb": int(kb) / 1e3,
                      "wall_seconds": wall}
    return {"cold_start": cold, "import_seconds": imports,
            "installed_mb": {"runtime_only": site_packages_mb(vs["runtime"]),
                             "with_torch": site_packages_mb(vs["torch"])},
            "runtime_venv_has_torch": "torch" in pkgs,
            "runtime_venv_packages": pkgs, "predict_peak_memory": mem}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("runs/e2e/bundle"))
    p.add_argument("--venvs", type=Path, default=Path("runs/e2e/venvs"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--head", default="all")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/e2e.json")
    p.add_argument("--quick", action="store_true", help="few repeats, no venvs (a smoke run)")
    p.add_argument("--batch", type=int, default=4096, help="the large batch (and batch 1)")
    p.add_argument("--torch-candidates", default=",".join(TORCH_CANDIDATES),
                   help="how torch at its best may run the folded encoder (comma-separated, of "
                   f"{', '.join(TORCH_CANDIDATES)}); the fastest that works is chosen")
    p.add_argument("--dataset", default="mnist", help="test images of this dataset (tests use a "
                   "generated one)")
    a = p.parse_args(argv)
    candidates = tuple(c for c in a.torch_candidates.split(",") if c)
    unknown = [c for c in candidates if c not in TORCH_CANDIDATES]
    if unknown or not candidates:
        p.error(f"--torch-candidates: choose from {', '.join(TORCH_CANDIDATES)}")
    from hybnn_cli.data.datasets import find_file, get_spec, load_split
    from hybnn_cli.study.provenance import end_run, start_run, write_result

    argv_rec = ["python", "benchmarks/e2e.py", *(argv if argv is not None else sys.argv[1:])]
    run = start_run(a.out, argv_rec)  # provenance of the run, taken when it starts

    images, labels = load_split(a.dataset, "test", a.data_dir)
    spec = get_spec(a.dataset)
    files = {s: find_file(spec, spec.files[s][0], a.data_dir, False) for s in ("test", "train")}
    body = {"threads": a.threads, "head_timed": a.head, "bundle": str(a.bundle),
            "dataset": a.dataset, "torch_candidates": list(candidates),
            "manifest": json.loads((a.bundle / "bundle.json").read_text()),
            "nice": os.nice(0), "load_average_before": list(os.getloadavg())}
    body["agreement"] = agreement(a.bundle, images, labels, a.threads)
    body["speed"] = speed(a.bundle, images, a.head, a.threads, a.quick, a.batch, candidates)
    if not a.quick:
        body["processes"] = processes(a.bundle, images, a.head, a.venvs, files)
    body["load_average_after"] = list(os.getloadavg())
    done = end_run(run)
    for row in (*body["agreement"].values(), *body["speed"].values()):
        row["run"] = done
    write_result(a.out, FORMAT, 1, body, argv=argv_rec, run=done)
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
