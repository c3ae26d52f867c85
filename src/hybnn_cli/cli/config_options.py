"""Typer options made from a settings dataclass, so that a setting's default and help are written
once, beside the dataclass (`fed.config.FedConfig`, `continual.settings.ContinualConfig`).

`config_options(Config, HELP)` decorates a command whose first parameter receives the settings:
every field named in `HELP` becomes an option `--field-name` whose default is the field's default
and whose help is `HELP[name]`; the command's own parameters (files, engine, output) follow as
usual. A boolean field is a flag; one whose default is None (a default that depends on other
settings) is a pair `--name/--no-name`. Ranges and combinations are checked by the dataclass
itself, with one line naming the option.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from dataclasses import MISSING, fields

import typer


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _base_type(hint):
    """`float | None` → float."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def field_options(cls, help_of: dict[str, str]) -> list[inspect.Parameter]:
    """One keyword parameter with a Typer option per field of `cls` named in `help_of`."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in fields(cls):
        if f.name not in help_of:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        kind = _base_type(hints[f.name])
        decl = option_name(f.name)
        if kind is bool and default is None:
            decl = f"{decl}/--no-{decl[2:]}"
        option = typer.Option(default, decl, help=help_of[f.name])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=kind if default is not None else kind | None))
    return params


def config_options(cls, help_of: dict[str, str], first: tuple[str, ...] = ()):
    """Decorate `command(settings: dict, **own)`: the CLI shows the command's own options named
    in `first`, one per field in `help_of`, then the command's other options; the command
    receives the fields' values as `settings`."""
    names = [f.name for f in fields(cls) if f.name in help_of]
    if len(names) != len(help_of):
        raise ValueError(f"help for settings {cls.__name__} does not have: "
                         f"{sorted(set(help_of) - set(names))}")

    def decorate(command):
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]

        @functools.wraps(command)
        def wrapper(**kw):
            settings = {name: kw.pop(name) for name in names}
            return command(settings, **kw)

        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        params = ([p for p in own if p.name in first] + field_options(cls, help_of)
                  + [p for p in own if p.name not in first])
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate
