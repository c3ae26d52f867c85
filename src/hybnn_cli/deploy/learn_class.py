"""Learning a new class on the device (`hybnn learn-class`): a deploy bundle's encoder (ONNX
Runtime) turns the class's images into codes, the class's K binary prototypes are fitted on them
with numpy alone (`hybnn_kernels.prototypes`: EM, then the means rounded to bits), and they are
appended to the bundle's prototype head (made if absent). Neither torch nor numba is imported.

The classes already in the head are never refitted: their prototypes stay byte for byte what
they were, so nothing learned before is forgotten. The bundle changes atomically: the new
prototype file is written under a name holding its SHA-256, then the manifest is replaced (the
commit point), then the old prototype file is removed; a failure before the manifest is replaced
leaves the bundle as it was. Two learn-class runs on one bundle take turns (`bundle_lock`), so
both classes are kept.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hybnn_cli import __version__
from hybnn_cli.data.image_files import expand_paths, iter_batches, open_images
from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path

DEFAULT_HEAD = "learned"
DEFAULT_COMPONENTS = 10
HEAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a head's name is part of a file name


def check_name(name: str) -> None:
    if not name or not name.strip():
        raise HybnnError("--name is empty: give the new class a name")
    if any(not ch.isprintable() for ch in name) or len(name) > 100:
        raise HybnnError(f"--name {name!r}: a class name is at most 100 printable characters "
                         f"(no tabs or line breaks)")


def planned_head(m: dict, bundle: Path, name: str, head: str,
                 components: int | None) -> tuple[dict | None, int]:
    """The prototype head the class goes into (None if new) and K; HybnnError for a name taken,
    a head name that is not allowed or a K that differs from the head's."""
    check_name(name)
    if not HEAD_NAME.fullmatch(head):
        raise HybnnError(f"--head {head!r}: a head name is letters, digits, '_', '.' and '-' "
                         f"(at most 64, starting with a letter or digit)")
    if head in (m.get("heads") or {}):
        raise HybnnError(f"{bundle}: {head} is a BNN head; give another --head for the prototype "
                         f"head")
    entry = (m.get("prototype_heads") or {}).get(head)
    if entry is None:
        k = DEFAULT_COMPONENTS if components is None else components
    else:
        k = int(entry["components"])
        if name in entry["classes"]:
            raise HybnnError(f"{bundle}: head {head} already has a class named {name!r}; give "
                             f"another --name")
        if components is not None and components != k:
            raise HybnnError(f"--components {components}: head {head} holds {k} prototypes per "
                             f"class; give --components {k} or another --head")
    if k < 1:
        raise HybnnError(f"--components must be >= 1, got {k}")
    return entry, k


def blas_threads(threads: int):
    """numpy's BLAS limited to `threads` threads for the block, where threadpoolctl is installed
    (the `train` extra); else numpy's own default. The EM's products are small: a BLAS that
    spreads them over busy cores spends more time waiting than computing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def encode(pipe, sources, batch_size: int,
           on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Packed codes (N, words) of every image of `sources`, through the bundle's float encoder."""
    from hybnn_kernels.pipeline import BundleError

    parts = []
    for batch in iter_batches(sources, batch_size):
        try:
            parts.append(pipe.encode(batch))
        except BundleError as e:
            raise HybnnError(str(e)) from None
        if on_batch:
            on_batch(len(batch))
    return np.concatenate(parts)


def write_head(bundle: Path, m: dict, head: str, entry: dict | None, prototypes: np.ndarray,
               record: dict) -> dict:
    """Append the class of `record` with its `prototypes` to head `head` and commit: the new
    prototype file, then the manifest, then the old file removed. Returns the head's entry."""
    from hybnn_kernels.pipeline import MANIFEST, format_version, input_shape
    from hybnn_kernels.prototypes import write_prototypes

    old = None if entry is None else bundle / entry["file"]
    table = prototypes if old is None else np.concatenate([np.load(old), prototypes])
    buf = io.BytesIO()
    write_prototypes(buf, table)
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    new = bundle / "heads" / f"{head}-{sha[:16]}.npy"
    try:
        with atomic_path(new) as tmp:
            tmp.write_bytes(buf.getvalue())
    except OSError as e:
        raise HybnnError(f"{bundle}: cannot write {new.name} ({e}); the bundle is unchanged") \
            from None
    enc = m["encoder"]
    new_entry = {"file": f"heads/{new.name}", "sha256": sha,
                 "encoder_sha256": enc["weights_sha256"], "latent_bits": enc["latent_bits"],
                 "components": record["components"], "rule": "nearest prototype in Hamming "
                 "distance; ties: the lowest class, then the lowest component",
                 "classes": [*(entry or {}).get("classes", []), record["name"]],
                 "learned": {**(entry or {}).get("learned", {}), record["name"]: record}}
    out = {**m, "format_version": format_version(input_shape(m)),
           "prototype_heads": {**(m.get("prototype_heads") or {}), head: new_entry}}
    try:
        with atomic_path(bundle / MANIFEST) as tmp:
            tmp.write_text(json.dumps(out, indent=2) + "\n")
    except BaseException as e:
        if old is None or new.resolve() != old.resolve():
            new.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise HybnnError(f"{bundle}: cannot write {MANIFEST} ({e}); the bundle is "
                             f"unchanged") from None
        raise
    if old is not None and old.resolve() != new.resolve():
        old.unlink(missing_ok=True)
    return new_entry


def learn_class(bundle: Path, name: str, images: list[Path], head: str = DEFAULT_HEAD,
                components: int | None = None, seed: int = 0, threads: int = 2,
                batch_size: int = 4096, on_start: Callable[[int], None] | None = None,
                on_batch: Callable[[int], None] | None = None) -> dict:
    """Learn class `name` from `images` into prototype head `head` of `bundle` (module
    docstring); returns what was done, with the seconds spent encoding and fitting."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise HybnnError(f"{bundle}: no such bundle folder")
    if batch_size < 1:
        raise HybnnError(f"--batch-size must be >= 1, got {batch_size}")
    with bundle_lock(bundle):  # another learn-class on this bundle waits for this one's write
        return _learn_class(bundle, name, images, head, components, seed, threads, batch_size,
                            on_start, on_batch)


@contextlib.contextmanager
def bundle_lock(bundle: Path):
    """An exclusive lock on the bundle's folder (flock, released when the block ends or the
    process dies), so that two classes learned at once are both kept: the second reads the
    manifest the first wrote. Where flock is missing (not POSIX), no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(bundle, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _learn_class(bundle, name, images, head, components, seed, threads, batch_size, on_start,
                 on_batch) -> dict:
    from hybnn_kernels.pipeline import BundleError, load_bundle
    from hybnn_kernels.prototypes import EM_ITERS, fit_prototypes

    try:  # every file of the bundle checked before it changes
        pipe = load_bundle(bundle, threads, compiled=False)
    except BundleError as e:
        raise HybnnError(str(e)) from None
    m = pipe.manifest
    entry, k = planned_head(m, bundle, name, head, components)
    files = expand_paths(images)
    sources = open_images(files, pipe.shape)  # read at the encoder's shape (`image_files`)
    n = sum(s.n for s in sources)
    if n < k:
        raise HybnnError(f"{n} image{'s' * (n != 1)} of {name!r} for {k} prototypes: give at "
                         f"least {k} images, or fewer --components")
    if on_start:
        on_start(n)
    t0 = time.perf_counter()
    codes = encode(pipe, sources, batch_size, on_batch)
    t1 = time.perf_counter()
    with blas_threads(threads):
        prototypes = fit_prototypes(codes, pipe.n_bits, k, seed)
    t2 = time.perf_counter()
    record = {"name": name, "images": int(n), "files": len(files), "seed": seed,
              "components": k, "em_iters": EM_ITERS, "encoder": "float",
              "learned": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "hybnn_version": __version__,
              "seconds": {"encode": t1 - t0, "fit": t2 - t1}}
    new_entry = write_head(bundle, m, head, entry, prototypes, record)
    seconds = {"encode": t1 - t0, "fit": t2 - t1, "write": time.perf_counter() - t2}
    return {"model": str(bundle), "head": head, "name": name, "components": k,
            "images": int(n), "seed": seed, "classes": new_entry["classes"],
            "file": new_entry["file"], "prototype_bytes": int(k * ((pipe.n_bits + 7) // 8)),
            "seconds": seconds, "seconds_per_image": (t2 - t0) / n}
