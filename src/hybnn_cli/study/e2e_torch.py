"""The torch side of the end-to-end benchmark (`benchmarks/e2e.py`, `e2e_study`): the torch
pipeline (`TorchPipeline`: encoder in `inference_mode`, threshold, the float32 BNN head at its
best), torch at its best (`best_torch_encoder`: batch norm folded into the convolutions, then the
fastest of that module eager, `torch.jit` frozen and `torch.compile`, chosen in the run), and the
code bits a faster encoder flips against eager's (`code_flips`).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np


def log(msg: str) -> None:
    """A progress line of the study, on stderr."""
    print(msg, file=sys.stderr, flush=True)


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


def timed(fn, reps: int, min_total: float) -> list[float]:
    """Seconds of calls of `fn`: at least `reps` calls and `min_total` seconds (at most 20,000
    calls)."""
    ts = []
    while len(ts) < reps or sum(ts) < min_total:
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        if len(ts) >= 20000:
            break
    return ts


# ── torch at its best ──────────────────────────────────────────────────────────────────────────
TORCH_CANDIDATES = {
    "folded": "the folded module, eager (inference_mode)",
    "jit": "torch.jit.trace, torch.jit.freeze, torch.jit.optimize_for_inference",
    "compile": "torch.compile(fullgraph=True, dynamic=False), inductor with freezing "
               "(torch._inductor.config.freezing = True)",
}


def folded_encoder(encoder):
    """The encoder as a plain module with batch norm folded into the convolutions, the bundle's
    folding (`deploy.export_bundle.fold_encoder`: computed in float64, stored in float32): three
    Conv2d with bias + LeakyReLU, Flatten, Linear; eval mode, no gradients."""
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
              "(deploy.export_bundle.fold_encoder)", "candidates": {}}
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
