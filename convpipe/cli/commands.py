"""The ``convpipe`` app and its core commands (run, validate, explain, ops, schema, demo): thin over the API.

User mistakes (bad specs, missing inputs, existing outputs) end with one line on stderr and exit 1;
failures while running end with exit 2. Never a traceback for a user mistake. validate, explain, ops and
schema do their work in :mod:`.instant`, which also runs their plain command lines without typer.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConvpipeError
from . import instant
from .instant import _backend_note_matters, _cli_url, _name_the_flags  # noqa: F401  (run uses them too)
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
    instant.validate(spec, typer.echo)


@app.command()
def explain(
    spec: Path = typer.Argument(..., help="pipeline spec"),
    input: Optional[str] = typer.Option(None, "--input", help="override input.url"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="threads | processes | local:N | tcp://... | profile:NAME"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
    recalibrate: bool = typer.Option(False, "--recalibrate", help="measure this machine's costs again (a few "
                                     "seconds) before estimating, and cache them: the cached ones were taken "
                                     "while the machine was busy, or it changed"),
) -> None:
    """Show the plan: passes, halos, tile, tasks, memory per worker, methods, read amplification."""
    instant.explain(spec, input, cluster, as_json, typer.echo, recalibrate=recalibrate)


@app.command()
def ops(name: Optional[str] = typer.Argument(None, help="one op: its parameters' meanings, units, keys and values")) -> None:
    """List every op with its parameters and defaults (or describe one op)."""
    instant.ops(name, typer.echo)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec."""
    instant.schema(typer.echo)


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
    except (ConvpipeError, KeyboardInterrupt) as e:
        return instant.report(e, _err)
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
