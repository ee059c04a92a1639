"""validate, explain, ops and schema: their work, and their plain command lines run without typer.

issue 17 asks that ``convpipe --help``, ``validate``, ``ops``, ``schema`` and ``explain`` start within twice the
time of ``python -c "import numpy, yaml, pydantic"``. typer (its import, its click commands and the pydantic
TypeAdapter it builds for every parameter) costs about as much as that baseline's pydantic part, before a
command does anything. So :func:`fast_main` runs the plain forms of these commands itself --
``validate SPEC``, ``explain SPEC [--json]``, ``ops [NAME]``, ``schema``: no other option, no ``-`` word, the
arity typer would accept -- and hands every other command line (``--help``, options, mistakes) to typer.
What they print and how they fail is the same either way: the typer commands of :mod:`.commands` call the
functions below, and errors end in :func:`report`, which :func:`convpipe.cli.commands.main` uses too.

Imports nothing of typer, click or rich, and loads the library modules inside each command.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConvpipeError, SpecError, SpecErrors

__all__ = ["explain", "fast_main", "ops", "report", "schema", "validate"]

Echo = Callable[[str], Any]


def echo(msg: str) -> None:
    """``typer.echo(msg)`` for a str on a text stdout: the line, a newline, flushed."""
    out = sys.stdout
    out.write(f"{msg}\n")
    out.flush()


def echo_err(msg: str) -> None:
    """``typer.echo(msg, err=True)``."""
    err = sys.stderr
    err.write(f"{msg}\n")
    err.flush()


# --------------------------------------------------------------------------- the commands


def validate(spec: Path, echo: Echo) -> None:
    from ..spec import load_spec

    # a spec without input is what `run SPEC --input URL` and the API take: valid, and said so
    s = load_spec(spec, input_required=False)
    note = "" if s.input is not None else " (no input: give --input URL to run or explain it)"
    echo(f"valid: {s.name!r}, {len(s.steps)} step(s){note}")


def explain(spec: Path, input: str | None, cluster: str | None, as_json: bool, echo: Echo, *,
            recalibrate: bool = False) -> None:
    import json

    from ..api import load
    from ..estimate import calibration, explain_json, explain_text

    p = load(spec)
    if recalibrate:  # after the spec is read: its mistakes are reported before seconds of measuring
        calibration(refresh=True)
    with _name_the_flags(input=input):
        plan = p.explain(input=_cli_url(input), cluster=cluster)
    if (plan.backend_note or "").startswith("auto chose cpu") and not _backend_note_matters(p.spec, None):
        plan.backend_note = None
    echo(json.dumps(explain_json(plan), indent=2) if as_json else explain_text(plan))


def ops(name: str | None, echo: Echo) -> None:
    from ..params import catalog

    if name is not None:
        from ..errors import InputError
        from ..params.describe import describe_op, suggest

        if name not in catalog():
            raise InputError(f"unknown op {name!r}{suggest(name, list(catalog()))} (convpipe ops lists them)")
        echo(describe_op(name))
        return
    for name, op in catalog().items():
        params = []
        for fname, f in op.Params.model_fields.items():
            params.append(fname if f.is_required() else f"{fname}={f.get_default(call_default_factory=True)!r}")
        echo(f"{name:28s} [{op.kind}] {op.summary}")
        echo(f"{'':28s} {', '.join(params) if params else '(no parameters)'}")


def schema(echo: Echo) -> None:
    from ..schema_doc import schema_text

    echo(schema_text())


# --------------------------------------------------------------------------- shared with the typer commands


def _cli_url(value: str | None) -> str | None:
    """A ``--input`` / ``--output`` value as the run gets it: a relative path resolves against the working
    directory (SPEC.md: URLs given on the command line), not against the spec's folder; URLs pass as given."""
    if value is None or "://" in value:
        return value
    import os

    return os.path.abspath(os.path.expanduser(value))


_SPEC_FIELD = re.compile(r"^(input|output)\.url(?: \(line \d+\))?: ")


@contextlib.contextmanager
def _name_the_flags(**flags: str | None) -> Iterator[None]:
    """An error about ``input.url`` / ``output.url`` names ``--input`` / ``--output`` when the flag gave the
    value: the spec's line is not where the value came from."""
    try:
        yield
    except ConvpipeError as e:
        def fix(err: Any) -> None:
            if isinstance(err, SpecError) and err.path in ("input.url", "output.url") and flags.get(err.path[:-4]):
                err.path, err.line = f"--{err.path[:-4]}", None
                err.args = (err.format(),)
            elif not isinstance(err, SpecError):
                m = _SPEC_FIELD.match(str(err))
                if m and flags.get(m.group(1)):
                    err.args = (f"--{m.group(1)} {str(err)[m.end():]}",)

        for err in (e.errors if isinstance(e, SpecErrors) else [e]):
            fix(err)
        raise


def _backend_note_matters(spec: Any, flag: str | None) -> bool:
    """Whether "backend auto chose cpu" tells the user anything: they asked for ``auto`` themselves (the
    flag or the spec), or CuPy is installed (so a GPU was possible). The default on a machine without CuPy
    says nothing new."""
    import importlib.util

    asked = flag or ((spec.raw.get("execution") or {}).get("backend") if isinstance(spec.raw, dict) else None)
    return asked == "auto" or importlib.util.find_spec("cupy") is not None


def report(e: BaseException, err: Echo) -> int:
    """A user error (or Ctrl-C) as the command line says it: one line per error on stderr; the exit code."""
    if isinstance(e, SpecErrors):
        for one in e.errors:
            err(f"error: {one.format()}")
        return e.exit_code
    if isinstance(e, ConvpipeError):
        err(f"error: {e}")
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        err("interrupted (outputs left incomplete; --resume finishes them)")
        return 130
    raise e


def _plain(argv: list[str]) -> Callable[[], None] | None:
    """The command ``argv`` names when it is one of the plain forms (see the module), else None."""
    if not argv:
        return None
    cmd, args = argv[0], argv[1:]
    as_json = cmd == "explain" and args[-1:] == ["--json"]
    if as_json:
        args = args[:-1]
    if any(a.startswith("-") for a in args):
        return None  # an option (or --help, or --): typer's to parse
    if cmd == "validate" and len(args) == 1:
        return lambda: validate(Path(args[0]), echo)
    if cmd == "explain" and len(args) == 1:
        return lambda: explain(Path(args[0]), None, None, as_json, echo)
    if cmd == "ops" and len(args) <= 1:
        return lambda: ops(args[0] if args else None, echo)
    if cmd == "schema" and not args:
        return lambda: schema(echo)
    return None


def fast_main(argv: list[str] | None = None) -> int | None:
    """Run a plain ``validate`` / ``explain`` / ``ops`` / ``schema`` command line; its exit code, or None when
    typer must parse ``argv`` (default ``sys.argv[1:]``)."""
    command = _plain(list(sys.argv[1:] if argv is None else argv))
    if command is None:
        return None
    try:
        command()
    except (ConvpipeError, KeyboardInterrupt) as e:
        return report(e, echo_err)
    return 0
