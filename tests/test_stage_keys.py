"""The stage cache's keys hold the code version (`fileio.code_version`): a stage made by other
code is made again, never silently reused."""

from __future__ import annotations

import json

import pytest


def test_a_stage_key_holds_the_code_version(tmp_path, monkeypatch):
    from hybnn_cli.study import work_cache as stagecache
    from hybnn_cli.study.work_cache import Reporter, StageCache

    key = {"stage": "demo", "seed": 0}
    made = []

    def make(path):
        path.write_text("x")
        made.append(path)
        return {"value": 1}

    cache = StageCache(tmp_path, Reporter())
    first = cache.path("demo", key, ".txt")
    assert StageCache(tmp_path, Reporter()).path("demo", key, ".txt") == first  # same code
    result = cache.run("demo", key, ".txt", "demo", make, str)
    assert result["value"] == 1 and result["run"]["started"] and result["run"]["ended"]
    assert StageCache(tmp_path, Reporter()).run("demo", key, ".txt", "demo", make,
                                                str) == result  # reused
    # other code: another key, so the stage is made again rather than reused
    monkeypatch.setattr(stagecache, "code_version", lambda modules: "f" * 64)
    other = StageCache(tmp_path, Reporter())
    assert other.path("demo", key, ".txt") != first
    other.run("demo", key, ".txt", "demo", make, str)
    assert len(made) == 2
    record = json.loads(made[1].with_name(made[1].name + ".json").read_text())
    assert record["key"]["code_version"] == "f" * 64


def test_the_code_version_follows_the_source_of_the_modules_a_stage_imports(tmp_path,
                                                                            monkeypatch):
    from hybnn_cli import fileio

    pkg = tmp_path / "hybnn_cli"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "stage.py").write_text("from hybnn_cli import helper\n\ndef f():\n"
                                  "    from hybnn_cli.lazy import g\n")
    (pkg / "helper.py").write_text("X = 1\n")
    (pkg / "lazy.py").write_text("def g(): pass\n")
    (pkg / "unrelated.py").write_text("Y = 1\n")
    monkeypatch.setattr(fileio, "_package_dir", lambda name: pkg if name == "hybnn_cli"
                        else pytest.fail(name))

    def version():
        fileio.code_version.cache_clear()
        return fileio.code_version(("hybnn_cli.stage",))

    first = version()
    assert version() == first  # same code, same version
    assert set(fileio._closure(("hybnn_cli.stage",))) == {
        "hybnn_cli", "hybnn_cli.stage", "hybnn_cli.helper", "hybnn_cli.lazy"}
    (pkg / "unrelated.py").write_text("Y = 2\n")
    assert version() == first  # a module the stage does not import
    (pkg / "lazy.py").write_text("def g(): return 1\n")
    changed = version()
    assert changed != first  # a module imported inside a function
    (pkg / "helper.py").write_text("X = 2\n")
    assert version() not in (first, changed)
    fileio.code_version.cache_clear()


def test_the_study_stages_code_version_covers_the_stage_code_and_the_kernels():
    from hybnn_cli import fileio
    from hybnn_cli.study.reproduce import STUDY_MODULES

    names = set(fileio._closure(STUDY_MODULES))
    assert {"hybnn_cli.train.stages", "hybnn_cli.study.reproduce", "hybnn_cli.train.vae_loop",
            "hybnn_cli.train.bnn_loop", "hybnn_cli.models.binary_cnn", "hybnn_cli.codes.extract",
            "hybnn_cli.data.datasets", "hybnn_kernels.bits", "hybnn_kernels.xnor"} <= names
    assert not {"hybnn_cli.study.docgen", "hybnn_cli.cli"} & names
