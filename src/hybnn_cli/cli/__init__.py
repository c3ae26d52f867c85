"""The `hybnn` command line (layer 9, the top): commands parse options, call the layers below them
and print. One module per group of commands (`pipeline_cmds`, `deploy_cmds`, `fed_cmd`,
`continual_cmd`, `study_cmds`); `app` holds the app, the shared options and how errors and signals
end a command; `latest` chains default files and `progress` draws the bars. Importing this package
registers every command, in the order `hybnn --help` lists them, and gives each its docstring as
help with the lines of every paragraph joined (`app.unwrap_help`), so the terminal wraps it.

May import: everything.
"""

import importlib

from hybnn_cli.cli.app import _on_sigterm, _on_unraisable, app, main, unwrap_help

GROUPS = ("pipeline_cmds", "deploy_cmds", "fed_cmd", "continual_cmd", "study_cmds")
for _group in GROUPS:
    importlib.import_module(f"hybnn_cli.cli.{_group}")
unwrap_help(app)

__all__ = ["app", "main", "_on_sigterm", "_on_unraisable"]
