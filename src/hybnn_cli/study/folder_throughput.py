"""Extraction from an image folder against the IDX path: its measurement, result file and block.

The same images (the first N of MNIST's train and test splits, or all of them) are written out
as PNG files, `<split>/<label>/<index>.png`, into a temporary folder; one VAE encodes them three
ways, each a call of `stages.extract_codes` in this process (torch's import and the VAE's
loading are outside the timing of none of them alike):
- `idx`: the named set, read from its IDX files (`extract --dataset mnist --limit N`);
- `folder, cold`: the PNG folder with an empty cache of decoded images: the files hashed, decoded
  into the cache (`data.image_store`), then encoded batch by batch (`extract --data`);
- `folder, cached`: the same folder, its decoded images found in the cache: the files hashed
  (the data's identity), then encoded.
The contenders run in turn, `repeats` rounds after one untimed round; each time is the whole
extraction (reading, encoding, writing the codes file), and a folder's reading time is kept
apart. Before any time counts, the folder's codes are checked equal to the IDX path's, bit for
bit (the folder holds each class in turn, in index order). `run_throughput` writes
`benchmarks/results/folder-throughput.json`; `benchmarks/folder_throughput.py` runs it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.docgen import renderer, source, table
from hybnn_cli.study.provenance import end_run, read_result, start_run, write_result

FORMAT = "hybnn-folder-throughput"
VERSION = 1
RESULT = "folder-throughput.json"
CONTENDERS = ("idx", "folder, cold", "folder, cached")
SPLITS = ("train", "test")


def write_pngs(root: Path, data_dir, limit: int | None, on_image=None) -> int:
    """The first `limit` (or all) MNIST images of each split as PNG files under `root`; returns
    how many were written."""
    from PIL import Image

    from hybnn_cli.data.datasets import load_split

    n = 0
    for split in SPLITS:
        images, labels = load_split("mnist", split, data_dir)
        images, labels = images[:limit], labels[:limit]
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            d = root / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:05d}.png")
            n += 1
            if on_image:
                on_image(1)
    return n


@contextmanager
def image_cache(path: Path):
    """$HYBNN_IMAGE_CACHE set to `path` for the block."""
    old = os.environ.get("HYBNN_IMAGE_CACHE")
    os.environ["HYBNN_IMAGE_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("HYBNN_IMAGE_CACHE", None)
        else:
            os.environ["HYBNN_IMAGE_CACHE"] = old


def extract_once(which: str, vae: Path, folder: Path, out: Path, cache: Path, data_dir,
                 limit: int | None, batch_size: int) -> dict:
    """One extraction by contender `which`: its seconds in all and, for a folder, reading."""
    from hybnn_cli.data.labelled import open_labelled
    from hybnn_cli.train import stages

    if which == "folder, cold" and cache.exists():
        shutil.rmtree(cache)
    with image_cache(cache):
        t0 = time.perf_counter()
        if which == "idx":
            data, read = open_labelled("mnist", data_dir=data_dir), None
            stages.extract_codes(vae, out, data, batch_size=batch_size, limit=limit)
        else:
            data = open_labelled(data=folder)
            read = time.perf_counter() - t0
            stages.extract_codes(vae, out, data, batch_size=batch_size)
        return {"seconds": time.perf_counter() - t0, "read_seconds": read}


def check_same_codes(png: Path, idx: Path) -> None:
    """The folder's codes are the IDX path's, in the folder's order; else HybnnError."""
    from hybnn_cli.codes.store import read_codes

    for split in SPLITS:
        a, b = read_codes(png, split), read_codes(idx, split)
        order = np.argsort(b.labels, kind="stable")
        if not (np.array_equal(a.labels, b.labels[order])
                and np.array_equal(a.codes, b.codes[order])):
            raise HybnnError(f"the folder's {split} codes differ from the IDX path's")


def measure(vae: Path, data_dir=None, limit: int | None = None, repeats: int = 5,
            batch_size: int = 1000, work: Path | None = None, on_step=None) -> dict:
    """The result file's body: every contender's times over `repeats` rounds (after one untimed
    round whose codes are checked), with the load average around each run."""
    if repeats < 1:
        raise HybnnError(f"--repeats must be at least 1, got {repeats}")
    with tempfile.TemporaryDirectory(prefix="folder-throughput-", dir=work) as tmp:
        tmp = Path(tmp)
        n = write_pngs(tmp / "pngs", data_dir, limit, on_step)
        png_bytes = sum(f.stat().st_size for f in (tmp / "pngs").rglob("*.png"))
        args = dict(vae=vae, folder=tmp / "pngs", data_dir=data_dir, limit=limit,
                    batch_size=batch_size)
        caches = {"idx": tmp / "cache-idx", "folder, cold": tmp / "cache-cold",
                  "folder, cached": tmp / "cache-cached"}
        for i, which in enumerate(CONTENDERS):  # untimed: first calls; the cache of "cached"
            extract_once(which, out=tmp / f"untimed-{i}.h5", cache=caches[which], **args)
        for i in (1, 2):
            check_same_codes(tmp / f"untimed-{i}.h5", tmp / "untimed-0.h5")
        runs = []
        for rep in range(repeats):
            for which in CONTENDERS:
                load0 = os.getloadavg()[0]
                t = extract_once(which, out=tmp / "timed.h5", cache=caches[which], **args)
                runs.append({"contender": which, "repeat": rep, **t,
                             "load_average": [load0, os.getloadavg()[0]]})
                if on_step:
                    on_step(0)
    return {"images": n, "limit": limit, "png_bytes": png_bytes, "batch_size": batch_size,
            "repeats": repeats, "vae": str(vae), "codes_equal": True, "runs": runs}


def run_throughput(out: Path, argv: list[str], vae: Path, threads: int, **settings) -> dict:
    """`measure(vae, **settings)` with `threads` torch threads, written to `out` as made by the
    command `argv`."""
    import torch  # noqa: F401  (imported first, so that `using` sets its threads)

    from hybnn_cli.threads import using

    run = start_run(out, argv)
    with using(threads) as n:
        body = measure(vae, **settings)
    return write_result(out, FORMAT, VERSION, {**body, "threads": n}, argv=argv,
                        run=end_run(run))


# ── the generated block ───────────────────────────────────────────────────────────────────────
def summary(r: dict) -> dict[str, dict]:
    """Per contender: images per second (median, min, max over the repeats), the median seconds
    in all and reading (a folder), and the median's ratio to the IDX path's."""
    out = {}
    for which in CONTENDERS:
        runs = [x for x in r["runs"] if x["contender"] == which]
        rates = [r["images"] / x["seconds"] for x in runs]
        reads = [x["read_seconds"] for x in runs if x["read_seconds"] is not None]
        out[which] = {"rate": statistics.median(rates), "min": min(rates), "max": max(rates),
                      "seconds": statistics.median(x["seconds"] for x in runs),
                      "read": statistics.median(reads) if reads else None}
    for which in CONTENDERS:
        out[which]["ratio"] = out[which]["rate"] / out["idx"]["rate"]
    return out


@renderer("folder-throughput")
def folder_throughput(results_dir: Path) -> str:
    path = Path(results_dir) / RESULT
    if not path.is_file():
        return ("Extraction from a PNG folder against the IDX path: not measured yet "
                "(`python benchmarks/folder_throughput.py` writes "
                f"`benchmarks/results/{RESULT}`).")
    r = read_result(path, FORMAT)
    s = summary(r)
    rows = [[which, f"{v['rate']:,.0f} ({v['min']:,.0f}–{v['max']:,.0f})", f"{v['seconds']:.2f}",
             "" if v["read"] is None else f"{v['read']:.2f}", f"{v['ratio']:.2f}×"]
            for which, v in s.items()]
    loads = [a for x in r["runs"] for a in x["load_average"]]
    what = ("all" if r["limit"] is None else f"the first {r['limit']:,} of each split; the IDX "
            f"path reads its whole files, as `extract --limit` does")
    return (f"`hybnn extract` of MNIST's train and test images ({what}: {r['images']:,} "
            f"images, {r['png_bytes'] / 1e6:.1f} MB as PNG files) with one VAE, "
            f"{r['threads']} thread(s), batch {r['batch_size']}: from the IDX files, from a "
            f"folder of PNG files with an empty cache of decoded images, and from the folder "
            f"again with its images cached. Images per second over the whole extraction "
            f"(reading, encoding, writing): median (min–max) of {r['repeats']} runs each, in "
            f"turn, after an untimed round in which the folder's codes were checked equal to "
            f"the IDX path's bit for bit. The files were in the OS page cache; load average "
            f"{min(loads):.1f} – {max(loads):.1f} on {r['machine']['cores']} cores.\n\n"
            + table(["path", "images/s", "seconds (median)", "of which reading",
                     "rate vs IDX"], rows)
            + "\n\n" + source(RESULT, r))
