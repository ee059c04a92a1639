"""Command-line parts of the job service: ``serve``, ``submit``, ``status``, ``cancel``, ``jobs`` and
``cluster script`` / ``cluster show``.

:func:`register` adds them to convpipe's typer app; :func:`main` is ``python -m convpipe.service``. This
module is imported by every ``convpipe`` invocation, so it imports nothing heavy at module level (FastAPI,
uvicorn, httpx load inside commands).
Errors are raised as :class:`~convpipe.errors.ConvpipeError`; the CLI's ``main`` prints them as one line.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..errors import ConvpipeError, InputError
from ..limits import MAX_SPEC_BYTES

_SERVER_HELP = "service URL (default $CONVPIPE_SERVER or http://127.0.0.1:8765); the token comes from $CONVPIPE_TOKEN"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _echo(msg: str = "", err: bool = False) -> None:
    typer.echo(msg, err=err)


def _client(server: str | None) -> Any:
    from ..client import ServiceClient

    return ServiceClient(server)


def _read_token(path: Path) -> str:
    """The token in ``path``; a missing file gets a new random token (readable by its owner only)."""
    if not path.exists():
        token = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        _echo(f"wrote a new token to {path} (clients: export CONVPIPE_TOKEN=$(cat {path}))", err=True)
        return token
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise InputError(f"cannot read the token file {path}: {e}") from None
    if len(token) < 16:
        raise InputError(f"the token in {path} is {'empty' if not token else 'too short'}: use at least 16 "
                         "random characters, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if path.stat().st_mode & stat.S_IRWXO:  # group access is normal for a Kubernetes Secret with fsGroup
        _echo(f"warning: {path} is readable by every user; chmod 600 {path}", err=True)
    return token


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8765, "--port", help="port (0 picks a free one)"),
    db: Path = typer.Option(Path("jobs.sqlite"), "--db", help="SQLite job table (job logs go beside it)"),
    token_file: Path = typer.Option(Path("token.txt"), "--token-file",
                                    help="file holding the bearer token (created with a random token if missing)"),
    root: List[str] = typer.Option(..., "--root", help="folder (or URL prefix) job inputs and outputs must lie under; repeatable"),
    cluster: str = typer.Option("threads", "--cluster", help="cluster every job runs on: threads | processes | local:N | tcp://... | tls://... | profile:NAME"),
    max_running: int = typer.Option(2, "--max-running", min=1, help="most jobs running at once"),
    max_body: int = typer.Option(MAX_SPEC_BYTES, "--max-body", min=1024, max=MAX_SPEC_BYTES,
                                 help="largest request body in bytes (at most the largest spec validate reads)"),
    max_queued: int = typer.Option(10_000, "--max-queued", min=1, help="most jobs waiting; further submissions get 429"),
    ready_file: Optional[Path] = typer.Option(None, "--ready-file", hidden=True,
                                              help="write {url, pid} here once the service accepts requests"),
    warm_runner: Optional[bool] = typer.Option(None, "--warm-runner/--no-warm-runner",
                                               help="fork each job from a process that imported convpipe once "
                                                    "(default on Linux, unless CONVPIPE_WARM_RUNNER=0); "
                                                    "--no-warm-runner starts a fresh interpreter per job"),
) -> None:
    """Run the job service: an HTTP API that queues specs and runs each in its own process."""
    import socket

    import uvicorn

    from ..cluster import check_cluster, describe
    from ..service.app import ServiceConfig, create_app
    from ..service.warm import warm_supported

    check_cluster(cluster)  # a bad --cluster (tcp://host without a port) is a start-up error, not a failure
    describe(cluster)       # of every job
    token = _read_token(token_file)
    if host not in _LOOPBACK:
        _echo(f"warning: listening on {host}: reachable from other machines over plain HTTP; "
              "put a TLS-terminating proxy in front of it", err=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e}") from None
    actual = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if family == socket.AF_INET6 else host}:{actual}"
    config = ServiceConfig(db=db.resolve(), token=token, roots=list(root), cluster=cluster, max_running=max_running,
                           max_body=max_body, max_queued=max_queued, url=url, ready_file=ready_file,
                           warm=warm_runner)
    try:
        app = create_app(config)
    except BaseException:
        sock.close()
        raise
    _echo(f"convpipe service on {url}: roots {app.state.service.roots}; cluster {cluster}; "
          f"at most {max_running} running; jobs in {config.db}; "
          f"{'warm runner' if config.warm_runner() and warm_supported() else 'a fresh interpreter per job'}")
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, server_header=False,
                                           lifespan="on", timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


def _duration(job: dict[str, Any]) -> str:
    if not job.get("started"):
        return ""
    start = datetime.fromisoformat(job["started"])
    end = datetime.fromisoformat(job["finished"]) if job.get("finished") else datetime.now(start.tzinfo)
    return f"{(end - start).total_seconds():.1f} s"


class JobDidNotSucceed(ConvpipeError):
    """``submit --wait`` saw its job fail or get cancelled (exit code 2, like a failed ``run``)."""

    exit_code = 2


def _error(job: dict[str, Any]) -> str | None:
    from ..service.store import error_text

    return error_text(job.get("error"))


def _summary(job: dict[str, Any]) -> str:
    s = f"job {job['id']} {job['state']}"
    if job["state"] in ("succeeded", "failed", "cancelled"):
        d = _duration(job)
        s += f" after {d}" if d else ""
    if job.get("error"):
        s += f": {_error(job)}"
    return s


def submit(
    spec: Path = typer.Argument(..., help="pipeline spec (YAML or JSON); '-' reads standard input"),
    wait: bool = typer.Option(False, "--wait", help="show progress until the job ends; exit 0 succeeded, 2 otherwise"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output (as run --overwrite)"),
    resume: bool = typer.Option(False, "--resume",
                                help="finish an output an interrupted run left incomplete (as run --resume)"),
    server: Optional[str] = typer.Option(None, "--server", help=_SERVER_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON"),
) -> None:
    """Submit a spec to the job service. Relative paths in it resolve against the spec's folder, as with run
    (against the working directory for '-'), and reach the service as absolute paths."""
    stdin = str(spec) == "-"
    try:
        text = sys.stdin.read() if stdin else None
    except OSError as e:
        raise InputError(f"cannot read the spec from standard input: {e}") from None
    with _client(server) as c:
        job = c.submit_file(Path.cwd() / "-" if stdin else spec, text=text, source="<stdin>" if stdin else None,
                            overwrite=overwrite, resume=resume)
        if not wait:
            _echo(json.dumps(job) if as_json else f"submitted job {job['id']} ({job['state']})")
            return
        _echo(f"submitted job {job['id']} ({job['name']})", err=as_json)
        final = _follow(c, job, sys.stderr if as_json else sys.stdout)  # --json: stdout holds only the JSON
    if as_json:
        _echo(json.dumps(final))
    if final["state"] != "succeeded":
        # Raised, not typer.Exit: the CLI's main turns it into one line on stderr and exit code 2.
        raise JobDidNotSucceed(_summary(final))
    if not as_json:
        _echo(_summary(final))
        for out in final.get("outputs") or []:
            _echo(f"  output: {out}")


def _follow(c: Any, job: dict[str, Any], stream: Any = None) -> dict[str, Any]:
    """Poll until the job ends: a bar on a terminal, one line per change otherwise (on ``stream``)."""
    stream = stream or sys.stdout
    if stream.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=Console(file=stream)) as bar:
            task = bar.add_task(f"{job['id']} queued", total=1.0)

            def show(j: dict[str, Any]) -> None:
                bar.update(task, completed=j["progress"], description=f"{j['id']} {j['state']}")

            return c.wait(job["id"], on_update=show)
    last: list[Any] = [None]

    def line(j: dict[str, Any]) -> None:
        key = (j["state"], int(100 * j["progress"]))
        if key != last[0]:
            last[0] = key
            print(f"job {j['id']}: {j['state']} {key[1]}%", file=stream, flush=True)

    return c.wait(job["id"], on_update=line)


def status(
    job_id: str = typer.Argument(..., help="job id"),
    server: Optional[str] = typer.Option(None, "--server", help=_SERVER_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON"),
    log: bool = typer.Option(False, "--log", help="print the job's log instead"),
) -> None:
    """Show one job of the service (or its log)."""
    with _client(server) as c:
        if log:
            offset = 0
            while True:  # the service sends a long log in pieces
                text, nxt = c.log(job_id, offset)
                typer.echo(text, nl=False)
                if nxt == offset or not text:
                    return
                offset = nxt
        job = c.job(job_id)
    if as_json:
        _echo(json.dumps(job, indent=2))
        return
    for key in ("id", "name", "state", "progress", "error", "submitted", "started", "finished"):
        value = job.get(key)
        if key == "progress":
            value = f"{100 * value:.0f}%"
        elif key == "error":
            value = _error(job)
        _echo(f"{key + ':':11} {'' if value is None else value}")
    d = _duration(job)
    if d:
        _echo(f"{'elapsed:':11} {d}")
    for out in job.get("outputs") or []:
        _echo(f"{'output:':11} {out}")


def cancel(
    job_id: str = typer.Argument(..., help="job id"),
    server: Optional[str] = typer.Option(None, "--server", help=_SERVER_HELP),
) -> None:
    """Cancel a queued or running job (its partial output stays marked incomplete)."""
    with _client(server) as c:
        job = c.cancel(job_id)
    _echo(_summary(job))


def jobs(
    server: Optional[str] = typer.Option(None, "--server", help=_SERVER_HELP),
    state: Optional[str] = typer.Option(None, "--state", help="only jobs in this state"),
    limit: Optional[int] = typer.Option(50, "--limit", min=1, help="at most this many, newest first"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List the service's jobs, newest first."""
    with _client(server) as c:
        items = c.jobs(state=state, limit=limit)
    if as_json:
        _echo(json.dumps(items, indent=2))
        return
    if not items:
        _echo("no jobs")
        return
    _echo(f"{'ID':12}  {'STATE':9}  {'PROG':>4}  {'ELAPSED':>9}  {'SUBMITTED':19}  NAME")
    for j in items:
        sub = (j.get("submitted") or "")[:19].replace("T", " ")
        _echo(f"{j['id']:12}  {j['state']:9}  {100 * j['progress']:3.0f}%  {_duration(j):>9}  {sub:19}  {j['name']}")


def cluster_script(
    profile: str = typer.Argument(..., help="profile:NAME or a profile YAML path (kind: slurm)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="scheduler address to write in (default ${DASK_SCHEDULER_ADDRESS})"),
) -> None:
    """Print the SLURM batch script a slurm profile submits for each worker job."""
    from ..cluster import SCHEDULER_PLACEHOLDER
    from ..cluster import cluster_script as render

    ref = profile if profile.startswith("profile:") else f"profile:{profile}"
    typer.echo(render(ref, scheduler=scheduler or SCHEDULER_PLACEHOLDER), nl=False)


def cluster_show(
    cluster: str = typer.Argument(..., help="threads | processes | local:N | tcp://... | tls://... | profile:NAME"),
) -> None:
    """Show what a cluster setting means: kind, workers, memory per worker (and a profile's settings)."""
    from dask.utils import format_bytes

    from ..cluster import load_profile, profile_cluster_kwargs, resources

    kind, workers, mem = resources(cluster)  # the figure explain plans with
    _echo(f"cluster:    {cluster}\nkind:       {kind}\nworkers:    {workers}\nmemory:     {format_bytes(mem)} per worker")
    if cluster.startswith("profile:"):
        p = load_profile(cluster)
        cls, kwargs = profile_cluster_kwargs(p)
        _echo(f"profile:    {p.source} ({p.kind})")
        if p.settings.description:
            _echo(f"about:      {p.settings.description}")
        _echo(f"class:      {cls}")
        for k, v in kwargs.items():
            _echo(f"  {k}: {v}")


def register(app: typer.Typer) -> None:
    """Add the service commands (and ``cluster``) to convpipe's typer app."""
    app.command("serve")(serve)
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("cancel")(cancel)
    app.command("jobs")(jobs)
    group = typer.Typer(no_args_is_help=True, help="Clusters: show a setting, print a SLURM profile's batch script.")
    group.command("script")(cluster_script)
    group.command("show")(cluster_show)
    app.add_typer(group, name="cluster")


def main(argv: list[str] | None = None) -> int:
    """Run only the service commands (``python -m convpipe.service``); errors become one line."""
    from ..errors import SpecErrors

    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="convpipe job service and its client.")
    register(app)
    try:
        app(args=argv, standalone_mode=False)
    except SpecErrors as e:
        for err in e.errors:
            _echo(f"error: {err.format()}", err=True)
        return e.exit_code
    except ConvpipeError as e:
        _echo(f"error: {e}", err=True)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        return 130
    except Exception as e:
        if type(e).__name__ == "Abort":  # the bundled click's Abort (typer.Abort is another class)
            return 130
        # usage errors: typer raises its bundled copy of click's ClickException, older typers click's own
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            return e.exit_code
        raise
    return 0
