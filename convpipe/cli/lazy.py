"""A typer group whose heavy commands load only when run, and whose help shows no type noise.

``convpipe bench`` names its registered cases, contenders and extra rows in its help texts, and
importing those registries loads the whole benchmark (numpy, scipy, dask, zarr). The root ``--help``
lists it from a stub that carries only its one-line help; the real command replaces the stub when the
command is resolved to run it (or to show its own ``--help``).

typer's help labels every parameter with its Python type (``--overwrite <bool>``, ``--index <list[str]>``,
``SPEC <path>``). :func:`tidy` replaces those labels with click's: nothing for a flag or an argument (its
name says what it is), ``TEXT``, ``INTEGER``, ``PATH``, ... for an option's value.
"""

from __future__ import annotations

import importlib
from typing import Any

from typer.core import TyperGroup

__all__ = ["LAZY", "LazyGroup", "lazy_root", "tidy"]

#: command name -> module of this package whose ``build()`` returns the real click command
LAZY = {"bench": "convpipe.cli.bench"}


class LazyGroup(TyperGroup):
    """``TyperGroup`` resolving the commands in :data:`LAZY` to their real command on first use."""

    _listing = False

    def format_help(self, ctx: Any, formatter: Any) -> None:
        tidy(self)
        # listing the commands asks for each one's short help only: the stubs have it
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and not self._listing and getattr(cmd, "_build", None) is not None:
            cmd = cmd._build()  # a stub of lazy_root: typer builds the real command now
            self.commands[cmd_name] = cmd
        if cmd is not None and cmd_name in LAZY and not self._listing and getattr(cmd, "_stub", True):
            cmd = importlib.import_module(LAZY[cmd_name]).build()
            cmd._stub = False
            self.commands[cmd_name] = cmd
        if cmd is not None:
            tidy(cmd)
        return cmd


_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "bool": None}


def _label(param: Any, ctx: Any) -> str | None:
    if getattr(param, "param_type_name", "") == "argument" or getattr(param, "is_flag", False) \
            or getattr(param, "count", False):
        return None
    shown = str(type(param).display_type(param, ctx) or "").strip("<>")  # typer's "<list[str]>"
    if shown.startswith("list[") and shown.endswith("]"):
        shown = shown[5:-1]  # a repeatable option takes one value each time (its help says "repeatable")
    shown = shown.removesuffix(" range")  # "int range": typer adds the range itself ("[x>=1]")
    return _NAMES.get(shown, shown.upper() if shown.isidentifier() else shown)


def _tidy_param(param: Any) -> Any:
    if getattr(param, "_tidy", False):
        return param
    param._tidy = True
    if getattr(param, "param_type_name", "") == "argument" and param.metavar is None:
        param.metavar = param.name.upper()  # SPEC, as SPEC.md writes the usage
    # instance attributes shadow typer's methods: the rich help and the plain one both ask them
    param.display_type_rich = lambda ctx, _p=param: _label(_p, ctx)
    if getattr(param, "param_type_name", "") == "option":
        param.display_type = lambda ctx, _p=param: _label(_p, ctx) or ""
    return param


def tidy(cmd: Any) -> Any:
    """Give ``cmd``'s parameters (its ``--help`` and, for a group, its subcommands') click's help labels."""
    if getattr(cmd, "_tidy", False):
        return cmd
    cmd._tidy = True
    get_params = cmd.get_params  # the --help option is made anew by each call: tidy what it returns
    cmd.get_params = lambda ctx: [_tidy_param(p) for p in get_params(ctx)]
    for sub in getattr(cmd, "commands", {}).values():
        tidy(sub)
    return cmd


def lazy_root(app: Any) -> LazyGroup:
    """The click group of ``app`` whose commands are built when resolved, not all at start-up.

    typer builds every command of an app (signature, annotations, one click parameter each) before it
    parses the command line: for convpipe's 18 commands that is most of ``validate``'s time after the
    imports. Here each command is a stub holding its help (what the root ``--help`` lists) and a builder;
    :meth:`LazyGroup.get_command` swaps in the real command (typer's own, from the same registration)
    when the command line names it.
    """
    import inspect

    from typer.core import TyperCommand
    from typer.main import get_command_from_info, get_command_name, get_group_from_info

    short, markup = app.pretty_exceptions_short, app.rich_markup_mode
    root = LazyGroup(name=None, help=inspect.cleandoc(app.info.help or ""), no_args_is_help=True,
                     rich_markup_mode=markup)
    for ci in app.registered_commands:
        name = ci.name or get_command_name(ci.callback.__name__)
        text = inspect.cleandoc(ci.help) if ci.help is not None else inspect.getdoc(ci.callback)
        stub = TyperCommand(name=name, help=text, short_help=ci.short_help, hidden=ci.hidden,
                            rich_markup_mode=markup, rich_help_panel=ci.rich_help_panel, add_help_option=False)
        stub._build = (lambda ci=ci: get_command_from_info(ci, pretty_exceptions_short=short, rich_markup_mode=markup))
        root.commands[name] = stub
    for gi in app.registered_groups:
        sub = gi.typer_instance
        stub = TyperCommand(name=gi.name, help=inspect.cleandoc(gi.help or sub.info.help or ""),
                            rich_markup_mode=markup, add_help_option=False)
        stub._build = (lambda gi=gi: get_group_from_info(gi, pretty_exceptions_short=short, rich_markup_mode=markup,
                                                         suggest_commands=app.suggest_commands))
        root.commands[gi.name] = stub
    return root
