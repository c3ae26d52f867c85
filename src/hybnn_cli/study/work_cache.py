"""A work folder of cached stages: each stage's artifact is named by the SHA-256 of its key (its
config and seed, minus the thread count, the identity of its inputs, and the version of the code
that makes it), with a JSON record beside it holding the key and the stage's result. A stage whose
record is present and whose key matches is not run again; a lock file per stage keeps two processes
sharing the folder from making the same artifact (a lock whose process is gone is taken over). The
study (`reproduce`) is built on it.

The code version (`fileio.code_version`) is a SHA-256 over the source of the modules that make the
stages (`code_modules`) and every hybnn module they import: a stage made by other code has another
key, so it is made again rather than silently reused. Each stage's result carries the record of
the run that made it (`results.run_record`: commit, dirty flag, machine, start and end times).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path, code_version, provenance
from hybnn_cli.study.provenance import end_run, run_record

STAGE_FORMAT = "hybnn-stage"
# the modules whose code makes the stages (with every hybnn module they import)
STAGE_MODULES = ("hybnn_cli.train.stages", "hybnn_cli.study.work_cache")


class Reporter:
    """Progress callbacks of the study; the default does nothing (the CLI draws bars)."""

    def stage(self, description: str, total: int | None) -> None: ...

    def step(self, completed: int, status: str = "") -> None: ...

    def done(self, description: str, result: str, cached: bool) -> None: ...


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def config_key(cfg) -> dict:
    """A config as a cache key: everything but the thread count."""
    return {k: v for k, v in cfg.to_dict().items() if k != "threads"}


class StageCache:
    """Artifacts `<work>/<name>-<digest><suffix>` with their records `<artifact>.json`; every key
    holds the version of the code of `code_modules` (taken once, when the cache is made)."""

    def __init__(self, work: Path, reporter: Reporter, cached_only: bool = False,
                 code_modules: tuple[str, ...] = STAGE_MODULES):
        self.work = Path(work)
        self.reporter = reporter
        self.cached_only = cached_only
        self.missing: list[str] = []  # stages not done yet (cached_only)
        self.code = code_version(tuple(code_modules))

    def full_key(self, key: dict) -> dict:
        """The key as stored: the stage's own, with the code version; tuples as lists."""
        return json.loads(json.dumps({**key, "code_version": self.code}))

    def path(self, name: str, key: dict, suffix: str) -> Path:
        return self.work / f"{name}-{key_digest(self.full_key(key))}{suffix}"

    def run(self, name: str, key: dict, suffix: str, description: str,
            fn: Callable[[Path], dict], summary: Callable[[dict], str]) -> dict | None:
        """The stage's result: from its record, else by running it (None when cached_only).
        A result made here holds the record of this run (`run`)."""
        key = self.full_key(key)
        art = self.path(name, key, suffix)
        record = art.with_name(art.name + ".json")
        if record.is_file() and art.exists():
            try:
                old = json.loads(record.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("key") == key:
                self.reporter.done(description, summary(old["result"]), cached=True)
                return old["result"]
        if self.cached_only:
            self.missing.append(description)
            return None
        with stage_lock(art):
            run = run_record()
            result = {**fn(art), "run": end_run(run)}
            payload = provenance(STAGE_FORMAT, 1, key, int(key.get("seed", 0)))
            payload.update(key=key, artifact=art.name, result=result)
            with atomic_path(record) as tmp:
                tmp.write_text(json.dumps(payload, indent=1, default=str))
        self.reporter.done(description, summary(result), cached=False)
        return result


class StageBusy(HybnnError):
    """Another live process is making this stage's artifact."""


@contextlib.contextmanager
def stage_lock(art: Path):
    """Hold `<artifact>.lock` (holding the owner's pid) while the stage runs, so two processes
    sharing a work folder never make the same artifact; a lock whose process is gone is taken
    over."""
    lock = art.with_name(art.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise StageBusy(f"{art.name} is being made by process {pid}; wait for it to "
                                f"finish or stop it") from None
            lock.unlink(missing_ok=True)
    else:
        raise StageBusy(f"cannot take the lock {lock}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
