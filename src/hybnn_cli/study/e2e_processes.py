"""The end-to-end benchmark's new processes (`benchmarks/e2e.py`, `e2e_study`): cold start (a new
process that imports the runtime, loads the bundle and classifies one image, and the same with
torch: import, load the checkpoints, classify; median of 3 after one run that fills the page
cache and Numba's on-disk cache), the installed size of three virtual environments (`make_venvs`:
the base install `pip install .`, numpy head and ONNX Runtime, no numba; the `fast` install
`pip install '.[fast]'`, with numba; and the fast one plus torch==2.13.0), and the peak memory of
`hybnn predict --model BUNDLE` with its default settings (every head, the default batch) on the
test and the training images, in the base install (the issue's target) and in the fast one
(streaming: flat in N). Every child computes with two threads (`threads.child_env`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hybnn_cli.study.e2e_torch import log
from hybnn_cli.study.provenance import REPO_ROOT, git_state
from hybnn_cli.threads import child_env

CHILD_THREADS = 2

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
    """Run `cmd` from the checkout: (wall seconds, stdout); exits with its stderr on failure."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}…: exit {r.returncode}: {r.stderr[-800:]}")
    return wall, r.stdout.strip()


def site_packages_mb(venv: Path) -> float:
    """The size of a virtual environment's site-packages in MB."""
    (sp,) = venv.glob("lib/python*/site-packages")
    total = sum(f.stat().st_size for f in sp.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 1e6


# venv name → what `pip install` gets (the checkout, with an extra, plus other requirements)
VENVS = {"runtime": ("", []), "fast": ("[fast]", []), "torch": ("[fast]", ["torch==2.13.0"])}


def make_venvs(folder: Path) -> dict:
    """runtime: `pip install .` (the base install: no numba); fast: `pip install '.[fast]'`;
    torch: the fast one plus torch==2.13.0. A venv is reused while its `.done` file records the
    same install of the same commit (a venv made for another one, or from older code, is made
    again: pip copies the checkout, so an old venv would time old kernels)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    commit = git_state()["commit"]
    for name, (extra, more) in VENVS.items():
        v = folder / name
        what = " ".join([f"{REPO_ROOT}{extra}", *more, f"at {commit}"])
        done = v / ".done"
        if not done.exists() or done.read_text() != what:
            log(f"creating the {name} venv in {v} (pip install {what})")
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(v)], check=True)
            subprocess.run([str(v / "bin" / "pip"), "install", "--quiet", f"{REPO_ROOT}{extra}",
                            *more], check=True, cwd=REPO_ROOT)
            done.write_text(what)
        made[name] = v
    return made


def packages(venv: Path) -> dict:
    """{name: version} of what is installed in `venv`."""
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                       capture_output=True, text=True, check=True)
    return {p["name"].lower(): p["version"] for p in json.loads(r.stdout)}


# run a command, print its peak RSS (kB) and what its `--json` output says of how it ran
PEAK_RSS = """
import json, resource, subprocess, sys
out = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, check=True).stdout
r = json.loads(out)
print(json.dumps({"kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  **{k: r.get(k) for k in ("head_kernel", "batch_size", "images_per_second")},
                  "heads": len(r["heads"])}))
"""


def predict_memory(bundle: Path, files: dict, venvs: dict, env) -> dict:
    """Peak memory of `hybnn predict --model BUNDLE FILE --json` with its default settings (every
    head, the default batch size), for each split's file, in the base and the fast venvs."""
    mem = {}
    for install in ("runtime", "fast"):
        py = str(venvs[install] / "bin" / "python")
        for split, f in files.items():
            wall, printed = run_wall([py, "-c", PEAK_RSS, py, "-m", "hybnn_cli", "predict",
                                      "--model", str(bundle.resolve()), str(f), "--threads",
                                      str(CHILD_THREADS), "--json"], env)
            got = json.loads(printed)
            row = {"images": 10000 if split == "test" else 60000,
                   "peak_rss_mb": int(got.pop("kb")) / 1e3, "wall_seconds": wall, **got}
            key = split if install == "runtime" else f"{split}_fast"
            mem[key] = row
            log(f"predict on {split} ({install} venv): {row['peak_rss_mb']:.0f} MB peak, "
                f"{row['head_kernel']} head")
    return mem


def processes(bundle: Path, images, head: str, venvs: Path, files: dict) -> dict:
    """Cold start, import times, installed sizes and `hybnn predict`'s peak memory on `files`
    (split → IDX images file), in the virtual environments under `venvs` (`make_venvs`)."""
    vs = make_venvs(venvs)
    py_rt, py_torch = str(vs["runtime"] / "bin" / "python"), str(vs["torch"] / "bin" / "python")
    py_fast = str(vs["fast"] / "bin" / "python")
    pkgs = packages(vs["runtime"])
    if "numba" in pkgs or "torch" in pkgs:
        raise SystemExit(f"{vs['runtime']}: the base install holds numba or torch: {pkgs}")
    one = venvs / "one.npy"
    np.save(one, images[:1])
    env = child_env(CHILD_THREADS)
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
                          ("hybnn_kernels.runtime", py_fast, "hybnn_kernels.runtime"),
                          ("torch", py_torch, "torch"), ("python", py_rt, "sys")):
        imports[name] = statistics.median(run_wall([py, "-c", f"import {mod}"], env)[0]
                                          for _ in range(3))
    return {"cold_start": cold, "import_seconds": imports,
            "installed_mb": {"base": site_packages_mb(vs["runtime"]),
                             "fast": site_packages_mb(vs["fast"]),
                             "with_torch": site_packages_mb(vs["torch"])},
            "runtime_venv_has_torch": "torch" in pkgs, "runtime_venv_has_numba": "numba" in pkgs,
            "runtime_venv_packages": pkgs, "fast_venv_packages": packages(vs["fast"]),
            "predict_peak_memory": predict_memory(bundle, files, vs, env)}
