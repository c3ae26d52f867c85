"""The README's and docs' numbers are the result files' numbers.

Every generated block (`hybnn_cli.docgen`) must equal what its renderer makes of the files in
benchmarks/results/ now; every result file records the commit that made it; and the prose outside
the blocks quotes no measured number (percentages, speedups, timings)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hybnn_cli import docgen

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rel", docgen.DOCS)
def test_generated_blocks_match_the_result_files(rel):
    path = ROOT / rel
    text = path.read_text()
    for name in docgen.block_names(text):
        assert name in docgen.RENDERERS, f"{rel}: unknown generated block {name}"
    rendered = docgen.render_text(text)
    if rendered != text:
        old = {m["name"]: m["body"] for m in docgen.BLOCK.finditer(text)}
        new = {m["name"]: m["body"] for m in docgen.BLOCK.finditer(rendered)}
        stale = [n for n in old if old[n] != new[n]]
        pytest.fail(f"{rel}: generated blocks {stale} differ from benchmarks/results/; "
                    f"run `hybnn report --docs`")


# A measured number: a decimal or a whole number followed by %, ×, µs, ms, s, Gop/s, kB, points.
MEASURED = re.compile(r"\d+(?:\.\d+)?\s?(?:%|×|µs|ms\b|Gop/s|Tops/s|kB\b|points\b|s per\b)")


@pytest.mark.parametrize("rel", docgen.DOCS)
def test_prose_outside_the_blocks_quotes_no_measured_number(rel):
    text = docgen.BLOCK.sub("", (ROOT / rel).read_text())
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # commands and their arguments
    found = MEASURED.findall(text)
    assert not found, f"{rel}: numbers outside generated blocks: {found}"


def test_every_result_file_records_its_commit():
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert files
    for p in files:
        rec = json.loads(p.read_text())
        for key in ("format", "commit", "dirty", "command", "machine", "date"):
            assert key in rec, f"{p.name}: no '{key}' in its provenance header"
        assert re.fullmatch(r"[0-9a-f]{40}", rec["commit"]), f"{p.name}: commit {rec['commit']}"


def test_a_changed_number_is_caught(tmp_path):
    """The check can fail: a block whose text no longer matches its file is rewritten."""
    text = "<!-- generated: accuracy-table -->\nmade up 99.99%\n<!-- /generated -->\n"
    assert docgen.render_text(text) != text


def test_the_readme_layout_table_names_every_module():
    """Every module of the two packages and their subpackages appears in the README's layout
    table (as `name` or `name.py`), and every module the table names exists."""
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"):text.index("## Development")]
    named = set(re.findall(r"`(?:[\w/]+/)?([a-z0-9_]+)(?:\.py)?/?`", layout))
    subpackages = [p.parent for p in (ROOT / "src/hybnn_cli").glob("*/__init__.py")]
    packages = [ROOT / "src/hybnn_cli", ROOT / "kernels/hybnn_kernels", *subpackages]
    modules = {p.stem for d in packages for p in d.glob("*.py") if not p.stem.startswith("__")}
    assert modules - named == set(), "modules missing from the README's layout table"
    folders = {"hybnn_kernels", "tests", "benchmarks", *(d.name for d in subpackages)}
    assert {n for n in named if n not in modules} <= folders
