"""Writing files safely and recording what made them.

- `atomic_path`: write to a temporary name in the same folder, rename at the end; an interrupted or
  failed write never leaves a half file under the real name.
- `atomic_dir`: the same for a folder (a deploy bundle): built beside its name, renamed at the end.
- `provenance`: the metadata every artifact carries (format, version, config, seed, package).
- `state_sha256`: a stable SHA-256 of a torch state dict (the encoder's identity).
- `code_version`: a SHA-256 over the source of the modules a piece of work runs (the modules
  named and every hybnn module they import), so that work cached by older code is not reused.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Iterable, Iterator
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


# ── the code version ──────────────────────────────────────────────────────────────────────────
PACKAGES = ("hybnn_cli", "hybnn_kernels")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HybnnError(f"cannot find the package {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def _module_file(name: str) -> Path | None:
    """The source file of a module of PACKAGES ("a.b" → a/b.py or a/b/__init__.py), or None."""
    top, *rest = name.split(".")
    if top not in PACKAGES:
        return None
    base = _package_dir(top).joinpath(*rest)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(name: str, path: Path) -> set[str]:
    """Every hybnn module `path` imports anywhere in its text (lazy imports in functions too),
    each with the packages above it; a module that imports by computed name (importlib)
    depends on every module of its package."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Attribute) and node.attr == "import_module":
            found.add(package + ".*")
    out = set()
    for mod in found:
        parts = mod.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in out if m.split(".")[0] in PACKAGES}


def _closure(modules: Iterable[str]) -> dict[str, Path]:
    """The modules named and every hybnn module they import, transitively: name → file."""
    todo, files = list(modules), {}
    while todo:
        name = todo.pop()
        if name in files:
            continue
        if name.endswith(".*"):  # every module of a package
            pkg = name[:-2]
            folder = _package_dir(pkg.split(".")[0]).joinpath(*pkg.split(".")[1:])
            for f in folder.rglob("*.py"):
                rel = f.relative_to(folder).with_suffix("").parts
                rel = rel[:-1] if rel[-1] == "__init__" else rel
                todo.append(".".join((pkg, *rel)))
            files[name] = folder
            continue
        path = _module_file(name)
        if path is None:
            continue  # a name imported from a module, not a module
        files[name] = path
        todo.extend(_imports(name, path) - files.keys())
    return {k: v for k, v in files.items() if not k.endswith(".*")}


@functools.cache
def code_version(modules: tuple[str, ...] = PACKAGES) -> str:
    """SHA-256 over the source of `modules` and of every hybnn module they import (found in
    their text, lazy imports included), in sorted order of module name: work made by code whose
    version differs is work of other code. Computed once per process: the code a process runs is
    the code it loaded."""
    h = hashlib.sha256()
    for name, path in sorted(_closure(modules).items()):
        h.update(name.encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()
