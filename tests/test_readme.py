"""The README documents every command and opens with the two newcomer commands."""

from pathlib import Path

from hybnn_cli.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_command_is_in_the_readme():
    text = README.read_text()
    missing = [c.name for c in app.registered_commands if f"hybnn {c.name}" not in text]
    assert not missing, f"commands not documented in README.md: {missing}"


def test_readme_opens_with_make_demo_and_make_test():
    head = "\n".join(README.read_text().splitlines()[:8])
    assert "make demo" in head and "make test" in head
