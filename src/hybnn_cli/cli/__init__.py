"""The `hybnn` command line: commands parse options, call the modules below them and print.
One module per group of commands (`pipeline`, `deploy`, `fed`, `continual`, `study`); `common`
holds the app, the shared options and how errors and signals end a command. Importing this
package registers every command, in the order `hybnn --help` lists them."""

import importlib

from hybnn_cli.cli.common import _on_sigterm, _on_unraisable, app, main

GROUPS = ("pipeline", "deploy", "fed", "continual", "study")
for _group in GROUPS:
    importlib.import_module(f"hybnn_cli.cli.{_group}")

__all__ = ["app", "main", "_on_sigterm", "_on_unraisable"]
