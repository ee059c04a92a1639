"""A typer group whose heavy commands load only when run.

``convpipe bench`` names its registered cases, contenders and extra rows in its help texts, and
importing those registries loads the whole benchmark (numpy, scipy, dask, zarr). The root ``--help``
lists it from a stub that carries only its one-line help; the real command replaces the stub when the
command is resolved to run it (or to show its own ``--help``).
"""

from __future__ import annotations

import importlib
from typing import Any

from typer.core import TyperGroup

__all__ = ["LAZY", "LazyGroup"]

#: command name -> module of this package whose ``build()`` returns the real click command
LAZY = {"bench": "convpipe.cli.bench"}


class LazyGroup(TyperGroup):
    """``TyperGroup`` resolving the commands in :data:`LAZY` to their real command on first use."""

    _listing = False

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # listing the commands asks for each one's short help only: the stubs have it
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and cmd_name in LAZY and not self._listing and getattr(cmd, "_stub", True):
            cmd = importlib.import_module(LAZY[cmd_name]).build()
            cmd._stub = False
            self.commands[cmd_name] = cmd
        return cmd
