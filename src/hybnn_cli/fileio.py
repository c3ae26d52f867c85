"""Writing files safely and recording what made them.

- `atomic_path`: write to a temporary name in the same folder, rename at the end; an interrupted or
  failed write never leaves a half file under the real name.
- `atomic_dir`: the same for a folder (a deploy bundle): built beside its name, renamed at the end.
- `provenance`: the metadata every artifact carries (format, version, config, seed, package).
- `state_sha256`: a stable SHA-256 of a torch state dict (the encoder's identity).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hybnn_cli import __version__
from hybnn_cli.errors import HybnnError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal rights
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it becomes `path` only if the block succeeds.

    An existing `path` is replaced only if it holds `marker` (a folder this project wrote);
    between the two renames a reader may briefly find no folder, never a half-written one."""
    import shutil

    path = Path(path)
    if path.exists() and not (path / marker).is_file():
        raise HybnnError(f"{path} exists and is not a folder this command wrote (no {marker}); "
                         f"give a new name or remove it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def provenance(fmt: str, format_version: int, config: dict, seed: int) -> dict:
    """The metadata recorded with every artifact."""
    return {
        "format": fmt,
        "format_version": format_version,
        "config": config,
        "seed": seed,
        "hybnn_version": __version__,
    }


def state_sha256(state: dict) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes, in sorted key order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
