"""Result files under `benchmarks/results/`: one provenance header for every measured number.

Every result JSON starts with the same header (`result_header`): its format and version, the git
commit of the code that measured it and whether the tree had uncommitted changes, the command
line, the machine record, and the date. `write_result` writes header + body atomically;
`read_result` loads a file and checks its format.

Provenance belongs to the run, not to the save. `run_record()`, called when a run starts, takes
the commit, the dirty flag (and a hash of the uncommitted diff), the machine (CPU, cores, load
average) and the start time (`start_run(path, argv)` checks the command first, see below, then
does the same); `end_run(run)` stamps its end (time and load). A script attaches the record to
every row it writes (`row["run"]`), so a file whose rows were made at several commits says so per
row, and passes it to `write_result(..., run=run)`, whose header then holds the run's provenance
(taken at its start) and, when the rows were made at other commits, those commits
(`row_commits`). `same_code(a, b)`: were two runs made by the same code (same commit,
same uncommitted diff), so that a resumed script may keep a row instead of making it again.

Recorded commands are rerunnable from the repository's root (`recorded_command`): the program is
named by its name (`python`, `hybnn`), paths inside the checkout are relative to its root, and a
result file under `benchmarks/results/` refuses a command naming a path outside the checkout.

The machine record (`machine_record`) is built here and only here: CPU model and the flags that
matter to the kernels, cores, load average, and the versions of the numeric packages (read from
the installed metadata, so recording them imports nothing heavy).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from hybnn_kernels.machine import cpu_info

from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path

PACKAGES = ("hybnn", "numpy", "numba", "torch", "h5py", "flwr", "onnxruntime")
REPO_ROOT = Path(__file__).resolve().parents[3]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine_record() -> dict:
    """What ran the measurement: CPU, cores, load, Python and the numeric packages' versions."""
    cpu, flags = cpu_info()
    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "packages": {p: _version(p) for p in PACKAGES}}


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


# What a run writes, not what it runs: a study updating its own result file as it goes must not
# mark its later rows as made by a modified tree.
OUTPUTS = ":(exclude)benchmarks/results"


def git_state(root: Path = REPO_ROOT) -> dict:
    """The commit checked out at `root` and whether tracked files other than the result files
    (`OUTPUTS`) differ from it. Outside a git checkout both are None."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", OUTPUTS)
    return {"commit": commit.strip(),
            "dirty": bool(status.strip()) if status is not None else None}


def now_utc() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run_record(root: Path = REPO_ROOT) -> dict:
    """The provenance of a run, taken when it starts: commit, dirty flag, the SHA-256 of the
    uncommitted diff of tracked files (None when clean), the machine (CPU, cores, load average)
    and the start time (ISO, UTC). Stamp its end with `end_run`."""
    state = git_state(root)
    diff = None
    if state["dirty"]:
        text = _git(root, "diff", "HEAD", "--no-color", "--no-ext-diff", "--", ".", OUTPUTS)
        diff = hashlib.sha256(text.encode()).hexdigest() if text is not None else None
    cpu, _ = cpu_info()
    return {**state, "diff_sha256": diff,
            "machine": {"cpu": cpu, "cores": os.cpu_count(),
                        "load_average": [round(x, 2) for x in os.getloadavg()]},
            "started": now_utc(), "ended": None}


def start_run(path: str | os.PathLike, argv: list[str]) -> dict:
    """A script's first call: refuse, before any work, a command that `write_result` would
    refuse for `path` (`check_rerunnable`); then the run's record (`run_record`)."""
    check_rerunnable(path, recorded_command(argv))
    return run_record()


def end_run(run: dict) -> dict:
    """A copy of `run` with its end stamped: time (ISO, UTC) and the load average then."""
    return {**run, "ended": now_utc(),
            "load_average_end": [round(x, 2) for x in os.getloadavg()]}


def same_code(a: dict | None, b: dict | None) -> bool:
    """Whether two run records were made by the same code: the same commit and the same
    uncommitted diff (none, or the same one). A record without a commit matches nothing."""
    if not a or not b or not a.get("commit"):
        return False
    return all(a.get(k) == b.get(k) for k in ("commit", "dirty", "diff_sha256"))


def recorded_command(argv: list[str], cwd: Path | None = None) -> str:
    """`argv` as a command rerunnable from the repository's root, quoted for a shell: the
    program by its name (a path such as `.venv/bin/hybnn` becomes `hybnn`), and every path inside
    the checkout relative to its root (also in `--opt=path` and `name=path` arguments). Paths
    outside stay as given (`outside_paths` finds them)."""
    cwd = Path.cwd() if cwd is None else cwd
    words = [Path(argv[0]).name] if argv else []
    for word in argv[1:]:
        head, value = _split_value(word)
        words.append(head + _rooted(value, cwd))
    return shlex.join(words)


def _split_value(word: str) -> tuple[str, str]:
    """`--opt=value` → ("--opt=", value); `name=value` → ("name=", value); else ("", word)."""
    if word.startswith("-"):
        name, eq, value = word.partition("=")
        return (name + eq, value) if eq else ("", word)
    name, eq, value = word.rpartition("=")
    return (name + eq, value) if eq else ("", word)


def _rooted(value: str, cwd: Path) -> str:
    """A path inside the checkout, relative to its root; anything else unchanged."""
    if "/" not in value:
        return value
    p = Path(value)
    if not p.is_absolute():
        if cwd.resolve() == REPO_ROOT or not (cwd / p).exists():
            return value  # already relative to the root (or not a path)
        p = cwd / p
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return value


def outside_paths(command: str) -> list[str]:
    """The words of a recorded command that name a path outside the checkout: absolute paths
    not under its root, and relative ones that climb out of it."""
    out = []
    for word in shlex.split(command)[1:]:
        value = _split_value(word)[1]
        if value.startswith(("/", "..")):
            p = (REPO_ROOT / value).resolve()
            if p != REPO_ROOT and REPO_ROOT not in p.parents:
                out.append(value)
    return out


def result_header(fmt: str, version: int, argv: list[str] | None = None,
                  run: dict | None = None) -> dict:
    """The provenance header of a result file: the run's (`run_record`, taken at its start)
    when given, else taken now."""
    command = recorded_command(argv if argv is not None else sys.argv)
    if run is None:
        return {"format": fmt, "format_version": version, **git_state(), "command": command,
                "machine": machine_record(), "date": now_utc()}
    machine = {**machine_record(), "load_average": run["machine"]["load_average"]}
    return {"format": fmt, "format_version": version, "commit": run["commit"],
            "dirty": run["dirty"], "diff_sha256": run.get("diff_sha256"), "command": command,
            "machine": machine, "date": run["started"], "started": run["started"],
            "ended": run.get("ended") or now_utc()}


def row_commits(body) -> list[str]:
    """The commits of the run records (`"run": {...}`) anywhere in a result's body."""
    found: set[str] = set()

    def walk(x) -> None:
        if isinstance(x, dict):
            run = x.get("run")
            if isinstance(run, dict) and run.get("commit"):
                found.add(run["commit"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(body)
    return sorted(found)


def write_result(path: str | os.PathLike, fmt: str, version: int, body: dict,
                 argv: list[str] | None = None, *, run: dict | None = None) -> dict:
    """Write header + body as JSON to `path` atomically; returns what was written. With `run`
    (`run_record`), the header is the run's, and names every commit its rows were made at
    (`row_commits`) when any differs from the run's. A file under `benchmarks/results/` refuses
    a command that names a path outside the checkout."""
    header = result_header(fmt, version, argv, run)
    check_rerunnable(path, header["command"])
    commits = row_commits(body)
    if run is not None and any(c != header["commit"] for c in commits):
        header["row_commits"] = commits
    record = {**header, **body}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def check_rerunnable(path: str | os.PathLike, command: str) -> None:
    """Refuse to record, in a file under `benchmarks/results/`, a command naming a path outside
    the checkout: the command must rerun from the repository's root."""
    if RESULTS_DIR not in Path(path).resolve().parents:
        return
    outside = outside_paths(command)
    if outside:
        raise HybnnError(f"{path}: the command names paths outside the checkout "
                         f"({', '.join(outside)}); a result file's command must rerun from the "
                         f"repository's root: use paths inside it (e.g. runs/...)")


def read_result(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """Load a result file; refuse one without a provenance header or of another format."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise HybnnError(f"{path}: no such result file") from None
    except json.JSONDecodeError as e:
        raise HybnnError(f"{path}: not a JSON result file ({e})") from None
    if "commit" not in record or "format" not in record:
        raise HybnnError(f"{path}: result file has no provenance header (format, commit)")
    if fmt is not None and record["format"] != fmt:
        raise HybnnError(f"{path}: result format is {record['format']!r}, expected {fmt!r}")
    return record
