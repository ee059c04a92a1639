"""The ``convpipe`` app and its core commands (run, validate, explain, ops, schema, demo): thin over the API.

User mistakes (bad specs, missing inputs, existing outputs) end with one line on stderr and exit 1;
failures while running end with exit 2. Never a traceback for a user mistake.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConvpipeError, SpecError, SpecErrors

from .lazy import LazyGroup  # noqa: E402

app = typer.Typer(cls=LazyGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Declarative, chunk-exact image-processing pipelines over Zarr stacks.")


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


class _Progress:
    """A rich bar on a terminal, plain ``progress: done/total`` lines otherwise (fed by the run's events)."""

    def __init__(self, label: str):
        self.label = label
        self.tty = sys.stdout.isatty()
        self.bar = None
        self.task = None
        self._last = (0.0, -1)

    def __enter__(self):
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self.bar.__enter__()
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            if self.task is None:
                self.task = self.bar.add_task(self.label, total=total)
            self.bar.update(self.task, completed=done, total=total)
            return
        now = time.monotonic()
        last_t, last_pct = self._last
        pct = int(100 * done / max(total, 1))
        if done >= total or (now - last_t >= 1.0 and pct != last_pct):
            self._last = (now, pct)
            print(f"progress: {done}/{total}", flush=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _event_pipe():
    """The job service's events pipe (``CONVPIPE_EVENTS_FD``): the run's events as JSON lines, or None.

    The service reads a job's progress from there, never from its human-readable output.
    """
    import os

    from ..run.events import EVENTS_FD_ENV, JsonLinesWriter

    fd = os.environ.get(EVENTS_FD_ENV)
    if not fd:
        return None
    try:
        n = int(fd)
        os.set_inheritable(n, False)  # Dask worker processes must not hold the pipe open
        return JsonLinesWriter(os.fdopen(n, "w", encoding="utf-8", closefd=True))
    except (ValueError, OSError) as e:
        _err(f"warning: {EVENTS_FD_ENV}={fd!r} is not an open file descriptor ({e}); no events are sent")
        return None


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


def _quiet_auto_cpu(write: Callable[[str], Any], matters: bool) -> Callable[[str], Any]:
    if matters:
        return write
    return lambda msg: None if msg.startswith("backend auto chose cpu") else write(msg)


@app.command()
def run(
    spec: Path = typer.Argument(..., help="pipeline spec (YAML or JSON)"),
    input: Optional[str] = typer.Option(None, "--input", help="override input.url"),
    output: Optional[str] = typer.Option(None, "--output", help="override output.url"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="threads | processes | local:N | tcp://... | profile:NAME"),
    backend: Optional[str] = typer.Option(None, "--backend", help="cpu | gpu | auto"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output"),
    resume: bool = typer.Option(False, "--resume", help="finish an output left incomplete by an interrupted run"),
    report: Optional[Path] = typer.Option(None, "--report", help="write an HTML run report"),
) -> None:
    """Run a pipeline: input Zarr -> steps -> output Zarr."""
    from ..api import load
    from ..errors import RunInterrupted
    from ..run.events import log_subscriber, progress_subscriber

    pipe = _event_pipe()
    try:
        p = load(spec)
        log = _quiet_auto_cpu(_err, _backend_note_matters(p.spec, backend))
        with _Progress(p.spec.name) as prog, _name_the_flags(input=input, output=output):
            subscribers = [log_subscriber(log), progress_subscriber(prog)] + ([pipe] if pipe else [])
            res = p.run(input=_cli_url(input), output=_cli_url(output), cluster=cluster, backend=backend,
                        overwrite=True if overwrite else None, resume=resume, on_event=subscribers)
    except RunInterrupted as e:  # caught here: typer turns a KeyboardInterrupt into a bare exit 130
        if e.written is None:
            _err(f"interrupted before {e.output_url} was created; nothing was written")
        else:
            again = [str(spec)] + [x for k, v in (("--input", input), ("--output", output), ("--cluster", cluster),
                                                   ("--backend", backend)) if v for x in (k, v)]
            _err(f"interrupted: {e.written} of {e.tiles} tiles of {e.output_url} are written; "
                 f"`convpipe run {shlex.join(again)} --resume` finishes it")
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        _err("interrupted before the run started; nothing was written")
        raise typer.Exit(130) from None
    finally:
        if pipe is not None:
            pipe.close()
    if res.elapsed == 0 and res.skipped_tiles == res.tiles:
        typer.echo(f"done: {res.output_url} was already complete; nothing to do")
        return
    vps = res.voxels_per_second
    from ..estimate import summary_suffix

    typer.echo(f"done: {res.output_url}  {res.elapsed:.2f} s, {vps / 1e6:.1f} Mvoxel/s, {res.tasks} tasks, "
               f"{res.tiles} tiles" + (f" ({res.skipped_tiles} resumed)" if res.skipped_tiles else "")
               + summary_suffix(res))
    if report is not None:
        try:
            from ..report import write_report
        except ImportError:
            _err("warning: run reports are not available in this build; no report written")
        else:
            try:
                written = write_report(p, res, report)
            except OSError as e:  # the run succeeded; an unwritable report path is only a warning
                _err(f"warning: cannot write the report {report}: {e}")
            else:
                typer.echo(f"report: {written}")


@app.command()
def validate(spec: Path = typer.Argument(..., help="pipeline spec")) -> None:
    """Check a spec without touching data: exit 0 valid, 1 invalid (errors on stderr)."""
    from ..spec import load_spec

    # a spec without input is what `run SPEC --input URL` and the API take: valid, and said so
    s = load_spec(spec, input_required=False)
    note = "" if s.input is not None else " (no input: give --input URL to run or explain it)"
    typer.echo(f"valid: {s.name!r}, {len(s.steps)} step(s){note}")


@app.command()
def explain(
    spec: Path = typer.Argument(..., help="pipeline spec"),
    input: Optional[str] = typer.Option(None, "--input", help="override input.url"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="threads | processes | local:N | tcp://... | profile:NAME"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
) -> None:
    """Show the plan: passes, halos, tile, tasks, memory per worker, methods, read amplification."""
    from ..api import load
    from ..estimate import explain_json, explain_text

    p = load(spec)
    with _name_the_flags(input=input):
        plan = p.explain(input=_cli_url(input), cluster=cluster)
    if (plan.backend_note or "").startswith("auto chose cpu") and not _backend_note_matters(p.spec, None):
        plan.backend_note = None
    typer.echo(json.dumps(explain_json(plan), indent=2) if as_json else explain_text(plan))


@app.command()
def ops(name: Optional[str] = typer.Argument(None, help="one op: its parameters' meanings, units, keys and values")) -> None:
    """List every op with its parameters and defaults (or describe one op)."""
    from ..params import catalog

    if name is not None:
        from ..errors import InputError
        from ..params.describe import describe_op, suggest

        if name not in catalog():
            raise InputError(f"unknown op {name!r}{suggest(name, list(catalog()))} (convpipe ops lists them)")
        typer.echo(describe_op(name))
        return
    for name, op in catalog().items():
        params = []
        for fname, f in op.Params.model_fields.items():
            params.append(fname if f.is_required() else f"{fname}={f.get_default(call_default_factory=True)!r}")
        typer.echo(f"{name:28s} [{op.kind}] {op.summary}")
        typer.echo(f"{'':28s} {', '.join(params) if params else '(no parameters)'}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec."""
    from ..spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def demo(out: Path = typer.Option(Path("demo-out"), "--out", help="folder for sample data and outputs")) -> None:
    """Make sample data and run the example pipelines (no network)."""
    from ..demo import run_demo

    run_demo(out, echo=typer.echo)


def _register() -> None:
    """Commands living in their own modules of this package (each adds itself with ``register(app)``).

    Each module imports only typer at its top, so registering them all costs nothing at start-up; ``bench``
    needs its registries for its help texts and is loaded only when run (:class:`.lazy.LazyGroup`); :func:`main`
    builds only the command the line names (:func:`.lazy.lazy_root`).
    """
    from . import bench, ingest, kernel, preview, service, verify

    for mod in (preview, ingest):
        mod.register(app)
    bench.register_stub(app)
    service.register(app)
    verify.register(app)
    kernel.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """``convpipe ARGS``: run the command, print a user error as one line; the exit code."""
    from .lazy import lazy_root

    try:
        rv = lazy_root(app).main(args=argv, standalone_mode=False)
        if isinstance(rv, int):  # typer.Exit(n) inside a command comes back as its code
            return rv
    except SpecErrors as e:
        for err in e.errors:
            _err(f"error: {err.format()}")
        return e.exit_code
    except ConvpipeError as e:
        _err(f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        _err("interrupted (outputs left incomplete; --resume finishes them)")
        return 130
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        _err("aborted")
        return 1
    except Exception as e:
        # usage errors: typer raises its bundled copy of click's ClickException, older typers click's own
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _entry() -> None:
    sys.exit(main())
