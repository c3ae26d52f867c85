"""Load a script of `benchmarks/` as a module for its tests (the scripts are not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def load_benchmark(name: str):
    """`benchmarks/<name>.py`, executed as a module of its own."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
