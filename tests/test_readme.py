"""The README is a front door: short, the two newcomer commands first, a quickstart of real commands
and options, a map of docs/ whose pages exist; every command is documented in the README or docs."""

import re
from pathlib import Path

import typer

from hybnn_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 200


def _section(text: str, title: str) -> str:
    """The text of the `## title` section, up to the next `## ` heading."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _docs_text() -> str:
    return "\n".join(p.read_text() for p in [README, *sorted((ROOT / "docs").glob("*.md"))])


def test_every_command_is_documented():
    """In the README or docs, and in docs/cli.md's table of commands."""
    text = _docs_text()
    names = [c.name for c in app.registered_commands]
    assert names
    missing = [n for n in names if f"hybnn {n}" not in text]
    assert not missing, f"commands not documented in README.md or docs/: {missing}"
    cli = (ROOT / "docs" / "cli.md").read_text()
    listed = set(re.findall(r"^\| `hybnn ([\w-]+)` \|", cli, re.M))
    assert listed == set(names), f"docs/cli.md's table: {sorted(listed ^ set(names))}"


def test_readme_has_at_most_200_lines():
    n = len(README.read_text().splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; move content into docs/"


def test_readme_opens_with_make_demo_and_make_test():
    """The first lines say what HyBNN is, then give the two commands as the first code block; CI
    runs the README's test command."""
    lines = README.read_text().splitlines()[:10]
    fence = [i for i, line in enumerate(lines) if line.startswith("```")]
    assert len(fence) >= 2, "the README's first lines hold no code block"
    commands = [line.split("#")[0].strip() for line in lines[fence[0] + 1:fence[1]]]
    assert commands == ["make demo", "make test"]
    assert any("binary" in line for line in lines[:fence[0]]), "no line says what HyBNN is"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run does not run the README's `make test`"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def _options(name: str) -> set[str]:
    command = typer.main.get_command(app).commands[name]
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)}


def test_quickstart_runs_real_commands_and_options():
    """Every `hybnn COMMAND --option` of the quickstart exists, and it goes images → codes → BNN →
    bundle → predict."""
    quick = _section(README.read_text(), "Quickstart")
    block = re.search(r"```\n(.*?)```", quick, re.S)[1]
    used = []
    for line in block.splitlines():
        words = line.split("#")[0].split()
        assert words[0] == "hybnn", line
        used.append(words[1])
        unknown = [w for w in words[2:] if w.startswith("--") and w not in _options(words[1])]
        assert not unknown, f"{line}: no such option {unknown}"
    order = ["pretrain-vae", "extract", "train-bnn", "export", "predict"]
    assert [c for c in used if c in order] == order, used


def test_an_unknown_option_is_caught():
    assert "--no-such-option" not in _options("train-bnn") and "--task" in _options("train-bnn")


def test_every_page_of_the_docs_map_exists():
    """The README's map links every page of docs/, and every page it links exists."""
    docs_map = _section(README.read_text(), "Documentation")
    linked = re.findall(r"\]\(([^)#\s]+)\)", docs_map)
    assert linked
    missing = [p for p in linked if not (ROOT / p).is_file()]
    assert not missing, f"pages in the README's map that do not exist: {missing}"
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert pages - set(linked) == set(), "pages of docs/ missing from the README's map"


def test_relative_links_of_readme_and_docs_resolve():
    for page in [README, ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = re.sub(r"```.*?```", " ", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)}: broken link {target}"
