"""Help that reads well: every command's help is paragraphs the terminal wraps (no line broken
mid-sentence by the source's line breaks), shows one example, and `hybnn --help` lists each
command on one line and fits about one 80×24 screen."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from hybnn_cli.cli import app

COMMANDS = [info.name for info in app.registered_commands]


def help_text(args: list[str], columns: int) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(columns),
                                                          "TERMINAL_WIDTH": str(columns)})
    assert res.exit_code == 0, res.output
    return res.output


def description(text: str) -> list[str]:
    """The lines between the usage line and the first panel, stripped."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    return [line.strip() for line in lines[start:end]]


def hard_breaks(lines: list[str], columns: int) -> list[str]:
    """Lines that end well before the terminal's edge without punctuation while the next line
    goes on in lower case: a sentence broken by a line break of the source."""
    return [f"{a!r} / {b!r}" for a, b in zip(lines, lines[1:], strict=False)
            if a and b and len(a) < columns - 30 and not re.search(r"[.:;!?)]$", a)
            and b[0].islower()]


def test_the_check_finds_a_hard_wrapped_paragraph():
    lines = ["Train the task BNN on codes and report its", "validation and test accuracy."]
    assert hard_breaks(lines, 200)
    assert not hard_breaks(["Train the task BNN on codes.", "", "It trains on ..."], 200)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_is_unwrapped_with_one_example(command):
    lines = description(help_text([command], 200))
    assert hard_breaks(lines, 200) == []
    examples = [line for line in lines if line.startswith("Example:")]
    assert len(examples) == 1 and f"hybnn {command}" in examples[0]


def test_root_help_lists_each_command_on_one_line_and_fits_a_screen():
    text = help_text([], 80)
    assert len(text.rstrip("\n").splitlines()) <= 30
    panel = text[text.index("Commands"):].splitlines()[1:]
    rows = [line.strip("│ ") for line in panel if line.startswith("│")]
    assert [row.split()[0] for row in rows] == COMMANDS  # no continuation lines
    assert any(line.strip().startswith("Example: hybnn") for line in description(text))
    wide = help_text([], 200)
    assert hard_breaks(description(wide), 200) == []
