"""Result files under `benchmarks/results/`: one provenance header for every measured number.

Every result JSON starts with the same header (`result_header`): its format and version, the git
commit of the code that measured it and whether the tree had uncommitted changes, the command
line, the machine record, and the date. `write_result` writes header + body atomically;
`read_result` loads a file and checks its format.

The machine record (`machine_record`) is built here and only here: CPU model and the flags that
matter to the kernels, cores, load average, and the versions of the numeric packages (read from
the installed metadata, so recording them imports nothing heavy).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path

# CPU flags that decide which kernel variant runs and how fast float matmul can be.
CPU_FLAGS = ("avx", "avx2", "fma", "popcnt", "avx512f", "avx512bw", "avx512vl",
             "avx512_vpopcntdq", "avx512_bitalg", "avx512_vnni", "avx_vnni", "amx_tile")
PACKAGES = ("hybnn", "numpy", "numba", "torch", "h5py", "flwr", "onnxruntime")
REPO_ROOT = Path(__file__).resolve().parents[2]


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and which of `CPU_FLAGS` it has (from /proc/cpuinfo where present)."""
    model, flags = platform.processor() or platform.machine() or "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = value.split()
                break
    except OSError:
        pass
    return model, [f for f in CPU_FLAGS if f in flags]


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


def git_state(root: Path = REPO_ROOT) -> dict:
    """The commit checked out at `root` and whether tracked files differ from it.
    Outside a git checkout both are None."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def result_header(fmt: str, version: int, argv: list[str] | None = None) -> dict:
    """The provenance header of a result file."""
    return {"format": fmt, "format_version": version, **git_state(),
            "command": " ".join(argv if argv is not None else sys.argv),
            "machine": machine_record(),
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}


def write_result(path: str | os.PathLike, fmt: str, version: int, body: dict,
                 argv: list[str] | None = None) -> dict:
    """Write header + body as JSON to `path` atomically; returns what was written."""
    record = {**result_header(fmt, version, argv), **body}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


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
