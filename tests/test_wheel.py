"""The wheel a user installs: built from a copy of the sources with the setuptools of this
environment (no network), installed (not editable) into fresh venvs. The base install (`pip install
hybnn`) is a venv where the base dependencies import but numba (the `fast` extra), torch and the
rest of the `train` extra do not: there `hybnn --help` runs, `hybnn predict --model BUNDLE` gives
this environment's labels on the numpy head, and a command that needs the compiled kernels says how
to get them. The `fast` install is the same with numba: there predict runs the compiled head, with
the same labels. The wheel holds every package and module of the source tree, and asks for numba
only with the `fast` and `train` extras."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybnn_cli.cli.app import FAST_EXTRA, TRAIN_EXTRA
from tests.conftest import predict_json

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"hybnn_cli": ROOT / "src" / "hybnn_cli",
            "hybnn_kernels": ROOT / "kernels" / "hybnn_kernels"}
BUILD_FILES = ("pyproject.toml", "README.md", "src", "kernels")


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                       **kwargs)
    assert r.returncode == 0, (f"{' '.join(map(str, cmd))} exited {r.returncode}\n"
                               f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources: a build in the checkout would leave build/
    behind, whose stale modules could stand in for missing ones in the next build."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", tmp / "dist"], cwd=tmp)
    (whl,) = (tmp / "dist").glob("hybnn-*.whl")
    return whl


def make_venv(wheel: Path, tmp: Path, left_out: tuple[str, ...]) -> dict:
    """A fresh venv holding the wheel (not editable). Its site-packages reaches this environment's
    site-packages through a .pth line, for the dependencies (a folder a .pth adds has its own
    .pth files ignored, so this environment's editable hybnn is not on the path); a package of its
    own for each name in `left_out` shadows the real one and fails to import."""
    assert ROOT not in tmp.parents, f"{tmp} must lie outside the checkout {ROOT}"
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
         wheel], cwd=tmp)
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    cwd=tmp).stdout.strip())
    dev_sites = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    (site / "hybnn_dev_dependencies.pth").write_text("".join(f"{d}\n" for d in dev_sites))
    for name in left_out:
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}' (left out of this test's "
            f"install)\", name={name!r})\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {"python": python, "bin": venv / "bin", "site": site, "env": env, "cwd": tmp}


@pytest.fixture(scope="module")
def user_venv(wheel, tmp_path_factory) -> dict:
    """The base install: neither numba (nor llvmlite) nor the `train` extra imports."""
    return make_venv(wheel, tmp_path_factory.mktemp("user"), (*TRAIN_EXTRA, *FAST_EXTRA))


@pytest.fixture(scope="module")
def fast_venv(wheel, tmp_path_factory) -> dict:
    """The `fast` install: numba imports, the `train` extra does not."""
    return make_venv(wheel, tmp_path_factory.mktemp("fast"), TRAIN_EXTRA)


@pytest.fixture(scope="module")
def many_images(bundle, tmp_path_factory) -> Path:
    """An NPY of more images than a head answers in numpy before it compiles (one batch)."""
    from hybnn_kernels.pipeline import NUMPY_ROWS

    path = tmp_path_factory.mktemp("many") / "many.npy"
    assert len(bundle["images"]) > NUMPY_ROWS
    np.save(path, bundle["images"])
    return path


def in_venv(user_venv, *cmd) -> subprocess.CompletedProcess:
    return run(cmd, cwd=user_venv["cwd"], env=user_venv["env"])


def imported(venv, *names) -> list[str]:
    """Which of `names` import in the venv."""
    code = ("import sys\nfor name in sys.argv[1:]:\n    try:\n        __import__(name)\n"
            "    except ImportError:\n        pass\n    else:\n        print(name)\n")
    return in_venv(venv, venv["python"], "-c", code, *names).stdout.split()


def test_the_base_install_imports_hybnn_from_the_wheel_and_not_numba_or_torch(user_venv):
    code = ("import hybnn_cli, hybnn_kernels, numpy, h5py, onnxruntime, typer, rich, PIL\n"
            "print(hybnn_cli.__file__)\nprint(hybnn_kernels.__file__)\n")
    cli, kernels = in_venv(user_venv, user_venv["python"], "-c", code).stdout.splitlines()
    assert Path(cli) == user_venv["site"] / "hybnn_cli" / "__init__.py"
    assert Path(kernels) == user_venv["site"] / "hybnn_kernels" / "__init__.py"
    assert imported(user_venv, *TRAIN_EXTRA, *FAST_EXTRA, "hybnn_kernels.pipeline") == [
        "hybnn_kernels.pipeline"]
    for name in ("torch", "numba"):
        r = subprocess.run([user_venv["python"], "-c", f"import {name}"], cwd=user_venv["cwd"],
                           env=user_venv["env"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "left out of this test's install" in r.stderr, name


def test_hybnn_help_and_predict_run_from_the_base_install(user_venv, bundle, many_images,
                                                          tmp_path):
    r = in_venv(user_venv, user_venv["bin"] / "hybnn", "--help")
    assert "predict" in r.stdout and "export" in r.stdout
    x = bundle["images"][:10]
    pngs = [tmp_path / f"d{i}.png" for i in range(3)]
    for i, png in enumerate(pngs):
        Image.fromarray(x[i]).save(png)
    np.save(tmp_path / "d.npy", x[3:])
    for images in ([*pngs, tmp_path / "d.npy"], [many_images]):  # the cold path; a large batch
        r = in_venv(user_venv, user_venv["bin"] / "hybnn", "predict", "--model",
                    bundle["bundle"], *images, "--threads", "1", "--json")
        got = json.loads(r.stdout)
        want = predict_json("--model", bundle["bundle"], *images, "--threads", "1")
        assert got["n"] == want["n"] == sum(len(np.load(p)) if p.suffix == ".npy" else 1
                                            for p in images)
        assert got["head_kernel"] == "numpy"
        for head in ("task3", "all"):
            assert got["heads"][head]["labels"] == want["heads"][head]["labels"], head
    assert want["head_kernel"] == "numba"  # this environment's, on the large batch


def test_a_command_that_needs_numba_says_how_to_install_it(user_venv, bundle):
    manifest = json.loads((bundle["bundle"] / "bundle.json").read_text())
    r = subprocess.run([user_venv["bin"] / "hybnn", "predict", "--model",
                        bundle["bundle"] / manifest["heads"]["task3"]["file"],
                        "--codes", bundle["codes"]], cwd=user_venv["cwd"], env=user_venv["env"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "pip install 'hybnn[fast]'" in r.stderr, r.stderr


def test_the_fast_install_runs_the_compiled_head(fast_venv, bundle, many_images):
    assert imported(fast_venv, *TRAIN_EXTRA, *FAST_EXTRA) == list(FAST_EXTRA)
    r = in_venv(fast_venv, fast_venv["bin"] / "hybnn", "predict", "--model", bundle["bundle"],
                many_images, "--threads", "1", "--json")
    got = json.loads(r.stdout)
    want = predict_json("--model", bundle["bundle"], many_images, "--threads", "1")
    assert got["head_kernel"] == "numba" and got["n"] == len(bundle["images"])
    for head in ("task3", "all"):
        assert got["heads"][head]["labels"] == want["heads"][head]["labels"], head


def test_the_wheel_asks_for_numba_only_with_the_fast_and_train_extras(wheel):
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        requires = Parser().parsestr(z.read(meta).decode()).get_all("Requires-Dist")
    base = [r for r in requires if "extra ==" not in r]
    numba = [r.split(";")[1].strip() for r in requires if r.startswith("numba")]
    assert "onnxruntime" in " ".join(base) and not [r for r in base if r.startswith("numba")]
    assert sorted(numba) == ['extra == "fast"', 'extra == "train"']


def test_the_wheel_holds_every_package_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg, folder in PACKAGES.items():
        packages = sorted(p.parent for p in folder.rglob("__init__.py"))
        assert folder in packages, f"{folder} has no __init__.py"
        missing = [d for d in packages
                   if (Path(pkg) / d.relative_to(folder) / "__init__.py").as_posix() not in names]
        assert not missing, f"the wheel leaves out the packages {missing}"
        modules = sorted(folder.rglob("*.py"))
        missing = [p for p in modules
                   if (Path(pkg) / p.relative_to(folder)).as_posix() not in names]
        assert not missing, f"the wheel leaves out the modules {missing}"
