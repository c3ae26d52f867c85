"""The README's and docs' numbers are the result files' numbers.

Every generated block (`hybnn_cli.study.docgen`) must equal what its renderer makes of the files in
benchmarks/results/ now; every result file records the commit that made it; and the prose outside
the blocks holds no digit but the few not-measured phrases listed below."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hybnn_cli.study import docgen

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


# Prose is what a reader reads outside the generated blocks and outside code: fenced blocks,
# inline `code` spans (commands, options, dtypes, formulas) and link targets (paths and URLs).
_FENCE = re.compile(r"```.*?```", re.S)
_CODE_SPAN = re.compile(r"`[^`]+`")
_LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
_COMMENT = re.compile(r"<!--.*?-->", re.S)

# In prose every digit is suspect: outside the blocks, a digit may stand only as part of one of
# these whole phrases, none of which is a measured number. Each entry is (regex, why). Keep the
# list short: a new measured-looking phrase belongs in a generated block, not here.
NOT_MEASURED: list[tuple[str, str]] = [
    (r"(?<![\w.])[A-Za-z][A-Za-z_]*(?:[-.]?\d+[A-Za-z_]*)+(?:\.\w+)?",
     "a name with digits in it (float32, uint64, SHA-256, MD5, AVX-512, x86-64, L2, opset, "
     "h5py): an identifier, not a quantity"),
    (r"[αβ]\d\b", "β1, β2: the names of Adam's momentum parameters"),
    (r"\b(?:Python|torch|Flower|opset|Zen) \d+(?:\.\d+)*\b",
     "the version of a language, library or file format, or a CPU generation"),
    (r"\b(?:[A-Z][a-z]+,?|et al\.)\s+\(?(?:19|20)\d\d(?=[),;:]|'s)",
     "the year of a citation, closed by a bracket, comma or colon: (Dua, 2022), Tolias (2019)"),
    (r"\barXiv:\d{4}\.\d{4,5}(?:v\d+)?\b", "an arXiv identifier"),
    (r"\b[Tt]asks? [1-5](?:(?:–|-|, | and )[1-5])*\b",
     "the paper's five tasks are numbered 1 to 5"),
    (r"(?<![\d.])\d vs \d(?![\d.])|\b0/1 … 8/9\b|\b10-class\b",
     "the digit classes a task separates (0 vs 1, the pairs 0/1 … 8/9), the 10-class problem"),
    (r"\b200(?:-bit| (?:Bernoulli )?bits| latent)\b|\b25 bytes\b|\b\d+-bit\b",
     "the code's format (200 bits, 25 bytes) and widths of types in bits (64-bit, 8-bit)"),
    (r"\b200 → 128(?: → (?:2|10))?\b|\b128 → 2\b",
     "the task BNN's layer widths, fixed by the paper (200 → 128 → 2)"),
    (r"\((?:N|hidden|n_classes)(?:, (?:\d+|words|hidden \+ 1))*,?\)|\b28 by 28\b",
     "an array's shape in a file format, and the images' size"),
    (r"[±+−]1\b(?!\s?(?:points?|%|×))|[\[{]−?[01], [01][\]}]|\bbits? [01]\b|sign\(0\)|"
     r"\bx ≥ 0\b",
     "binary values, their bits and the definition of sign: ±1, [0, 1], bit 1, sign(0), x ≥ 0"),
    (r"\bexit(?:s|\s+code)?\s+\d+(?: / \d+)?\b", "a process's exit status"),
    (r"\bseeds? \d+(?:(?:, | and )\d+)*\b|\brank 0\b",
     "a seed is an input of a run; rank 0 is the name of the first process"),
    (r"(?<!in )(?<!after )(?<!within )\b\d+(?: VAE| BNN| local)? epochs(?: per task)?\b|"
     r"(?<!in )(?<!after )(?<!within )\b\d+ rounds\b|\b\d+-round\b",
     "epochs and rounds to train for are settings fixed before a run; 'in N epochs', 'within N "
     "rounds' would be results and are not allowed"),
    (r"\b[\d,]+(?:-client\b| (?:IID )?clients\b)", "the number of clients is a run's setting"),
    (r"\b(?:width|[Bb]atch(?:es of)?) \d+\b|\b\d+ wide\b|\b\d+³",
     "a model width, batch size or GEMM size: inputs of a run"),
    (r"[ηαβσ] =? ?\d+(?:\.\d+)?\b|\bthresholded at 0\.5\b|\b2,000 codes\b",
     "a hyperparameter as set (server step η, Dirichlet α, trimming β), the input threshold, the "
     "replay memory"),
    (r"\bport \d+\b|\b127\.0\.0\.1\b|\b[Ff]igures? \d+(?: and \d+)?\b|(?<![^\n])[ \t]*\d+\. ",
     "a port, the loopback address, a figure of the paper, a numbered list item"),
]
_ALLOWED = re.compile("|".join(f"(?:{rx})" for rx, _ in NOT_MEASURED))
_DIGIT = re.compile(r"[0-9]")

# Code is left out of the digit rule, so a measurement hidden in backticks is caught here.
_UNIT = re.compile(r"\d(?:[\d,]*\d)?(?:\.\d+)?\s?(?:%|×|µs|ms|s|min|MB|kB|GB|KiB|MiB|points?|"
                   r"codes?)(?![\w/])")


def prose(text: str) -> str:
    """`text` without its generated blocks, code, link targets and comments."""
    text = docgen.BLOCK.sub(" ", text)
    for pattern in (_FENCE, _COMMENT, _CODE_SPAN, _LINK_TARGET):
        text = pattern.sub(" ", text)
    return text


def measured_numbers(text: str) -> list[str]:
    """The digits of `text`'s prose that no NOT_MEASURED phrase accounts for, each with its line,
    and any number with a unit inside its code."""
    text_prose = prose(text)
    left = _ALLOWED.sub(lambda m: " " + "\n" * m[0].count("\n"), text_prose)
    found = [f"{line.strip()}  ← {' '.join(re.findall(r'[^ ]*[0-9][^ ]*', rest))}"
             for line, rest in zip(text_prose.split("\n"), left.split("\n"), strict=True)
             if _DIGIT.search(rest)]
    code = docgen.BLOCK.sub(" ", text)
    code = [m[0] for m in _FENCE.finditer(code)] + [m[0] for m in _CODE_SPAN.finditer(
        _FENCE.sub(" ", code))]
    found += [f"in code: {c}" for c in code if _UNIT.search(c)]
    return found


def test_docs_lists_every_doc():
    docs = {"README.md", "benchmarks/README.md",
            *(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))}
    assert docs <= set(docgen.DOCS)


@pytest.mark.parametrize("rel", docgen.DOCS)
def test_prose_outside_the_blocks_quotes_no_measured_number(rel):
    found = measured_numbers((ROOT / rel).read_text())
    assert not found, f"{rel}: digits in prose outside generated blocks:\n" + "\n".join(found)


@pytest.mark.parametrize("sentence", [
    "The bundle starts in 0.12 s.", "The study took 14.7 min per encoder.",
    "Installed: 454 MB for the runtime.", "The global model came within 1 point of centralized.",
    "HyBNN reaches 97% on ten classes.", "the float bundle is 4.2× torch",
    "Its validation curve peaked at round 57.", "task 5 ended 5 codes above", "at 1,311 MB",
    "a speed-up of 3 at batch 4096", "it converged in 14 epochs", "within 40 rounds",
    "improved by +1 point", "from 97 → 98%", "Peak 2048 MB", "3/4 of the runs",
    "`hybnn bench` printed `0.79 µs`", "```\nhybnn bench  # 4.2× torch\n```"])
def test_a_measured_number_in_prose_fails(sentence):
    assert measured_numbers(sentence), sentence


@pytest.mark.parametrize("sentence", [
    "task 3 and tasks 1–5", "Python 3.11 and torch 2.13", "200 bits (25 bytes) in 64-bit words",
    "packed uint64 words", "0 vs 1", "HyBNN (Dua, 2022); FedAdam (Reddi et al. 2021)",
    "arXiv:1904.07734", "20 VAE epochs and 100 BNN epochs", "1,000 IID clients",
    "BinaryLinear(200 → 128)", "exit code 130 / 143", "`--epochs 20`", "bit 1 means +1",
    "Krum (Blanchard et al. 2017)", "tasks 3 and 5 by 100 rounds", "a hidden layer 2048 wide",
    "<!-- generated: accuracy-table -->\n97.18%\n<!-- /generated -->"])
def test_an_allowed_phrase_passes(sentence):
    assert not measured_numbers(sentence), sentence


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


def test_the_architecture_layout_table_names_every_module():
    """Every module of the two packages and their subpackages appears in the layout table of
    docs/architecture.md (as `name` or `name.py`), and every module the table names exists."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    layout = text[text.index("\n## Layout\n"):]
    layout = layout[:layout.find("\n## ", 1)] if "\n## " in layout[1:] else layout
    named = set(re.findall(r"`(?:[\w/]+/)?([a-z0-9_]+)(?:\.py)?/?`", layout))
    subpackages = [p.parent for p in (ROOT / "src/hybnn_cli").glob("*/__init__.py")]
    packages = [ROOT / "src/hybnn_cli", ROOT / "kernels/hybnn_kernels", *subpackages]
    modules = {p.stem for d in packages for p in d.glob("*.py") if not p.stem.startswith("__")}
    assert modules - named == set(), "modules missing from docs/architecture.md's layout table"
    folders = {"hybnn_cli", "hybnn_kernels", "tests", "benchmarks", "plans",
               *(d.name for d in subpackages)}
    assert {n for n in named if n not in modules} <= folders


def _blocks_by_doc() -> dict[str, list[str]]:
    return {rel: docgen.block_names((ROOT / rel).read_text()) for rel in docgen.DOCS
            if (ROOT / rel).is_file()}


def test_every_generated_block_appears_exactly_once():
    """A block is the output of its renderer, so it lives in one place: the page of its topic
    (the README holds the headline table and links to the rest)."""
    where: dict[str, list[str]] = {}
    for rel, names in _blocks_by_doc().items():
        for name in names:
            where.setdefault(name, []).append(rel)
    twice = {name: places for name, places in where.items() if len(places) > 1}
    assert not twice, f"generated blocks in more than one place: {twice}"
    assert where.get("headline") == ["README.md"]
    assert "fedscale-earlier" not in docgen.RENDERERS  # replaced rows are not shown


def test_every_page_in_docs_exists():
    missing = [rel for rel in docgen.DOCS if not (ROOT / rel).is_file()]
    assert not missing, f"docgen.DOCS names pages that do not exist: {missing}"


_ISSUE = re.compile(r"\bissues?\b|#\d+\b", re.I)


@pytest.mark.parametrize("rel", docgen.DOCS)
def test_no_issue_references(rel):
    """The docs describe the project as it is, not the tracker that shaped it."""
    found = [line for line in (ROOT / rel).read_text().splitlines() if _ISSUE.search(line)]
    assert not found, f"{rel}: references to issues:\n" + "\n".join(found)


def test_an_issue_reference_is_caught():
    for line in ("the issue's target", "as issue 12 asked", "Issue #7", "see #24"):
        assert _ISSUE.search(line), line
    assert not _ISSUE.search("the tissue of the encoder, 200-bit codes")


def test_the_headline_renders_a_row_per_result():
    """One row per main result, each linking to an existing page and naming its result file and
    that file's commit."""
    from hybnn_cli.study import headline

    text = docgen.RENDERERS["headline"](docgen.RESULTS_DIR)
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert len(rows) == len(headline.ROWS) >= 5
    for line, (title, page, _) in zip(rows, headline.ROWS, strict=True):
        assert line.startswith(f"| [{title}]({page}) |") and (ROOT / page).is_file(), line
        name = re.search(r"\[`([\w-]+\.json)`\]\(benchmarks/results/\1\)", line)
        assert name, f"{title}: no result file linked"
        commit = json.loads((docgen.RESULTS_DIR / name[1]).read_text())["commit"][:12]
        assert f"commit `{commit}`" in line, f"{title}: not the commit of {name[1]}"
        figure = line.split(" | ")[2]
        assert re.search(r"\d ± \d|\(\d[\d.]*–\d", figure) or "×" in figure, figure
        assert len(line.strip(" |").split(" | ")) == 4, line


def test_the_headline_follows_its_files(tmp_path):
    """A changed figure in a result file changes the headline."""
    import shutil

    for p in docgen.RESULTS_DIR.glob("*.json"):
        shutil.copy(p, tmp_path / p.name)
    rec = json.loads((tmp_path / "continual.json").read_text())
    rec["runs"]["mnist/class/replay"]["test"]["final_seen_acc"].update(mean=0.1234, std=0.0056)
    (tmp_path / "continual.json").write_text(json.dumps(rec))
    text = docgen.RENDERERS["headline"](tmp_path)
    assert "replay 12.34 ± 0.56" in text
    assert text != docgen.RENDERERS["headline"](docgen.RESULTS_DIR)


def test_the_formats_page_lists_every_result_file():
    text = (ROOT / "docs" / "formats.md").read_text()
    listed = set(re.findall(r"^\| `([\w-]+\.json)` \|", text, re.M))
    files = {p.name for p in docgen.RESULTS_DIR.glob("*.json")}
    assert files and files == listed, f"docs/formats.md's result files: {sorted(files ^ listed)}"
