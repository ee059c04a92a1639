"""The HTTP API (FastAPI): submit, list, inspect, cancel jobs and read their logs.

Every request must carry ``Authorization: Bearer <token>`` (401 otherwise, checked before anything else,
unknown paths included); request bodies are capped (413). All state lives in one :class:`Service` object
held by the app, so several services can live in one process (tests) and nothing is global.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import ConvpipeError, SpecError, SpecErrors
from ..limits import MAX_SPEC_BYTES
from .conflicts import Conflict, find_conflict
from .policy import Forbidden, Roots, prepare_submission, token_ok
from .runner import Runner
from .store import STATES, TERMINAL, Job, JobStore
from .ui import is_ui_path
from .ui import register as register_dashboard

#: The default request-body limit: the largest spec ``validate`` reads (convpipe.limits.MAX_SPEC_BYTES), so a
#: spec the service refuses for its size is one validate refuses too, and parsing one takes about a second.
DEFAULT_MAX_BODY = MAX_SPEC_BYTES
LOG_CHUNK = 4 << 20
#: ``CONVPIPE_WARM_RUNNER=0`` in the service's environment: every job in a fresh interpreter, as before
WARM_ENV = "CONVPIPE_WARM_RUNNER"


@dataclass
class ServiceConfig:
    """How a service runs.

    Attributes
    ----------
    db : Path
        The SQLite job table; job folders (spec, log) go to ``<db>.d/``.
    token : str
        The bearer token every request must present.
    roots : list of str
        Folders (or URL prefixes) that job inputs and outputs must lie under.
    cluster : str
        The cluster every job runs on (a spec's own ``execution.cluster`` is not used).
    max_running : int
        Most jobs running at once.
    max_body : int
        Largest request body in bytes.
    max_queued : int
        Most jobs waiting at once (further submissions get 429).
    kill_grace : float
        Seconds a cancelled job gets between SIGTERM and SIGKILL.
    python : str
        The interpreter that runs job processes.
    url : str
        Where the service listens (written to ``ready_file``).
    ready_file : Path, optional
        Written with ``{"url", "pid"}`` once the service accepts requests (for scripts and tests).
    warm : bool, optional
        Fork each job's process from a warm runner that imported convpipe once, instead of starting a fresh
        interpreter per job (:mod:`convpipe.service.warm`); Linux only. None (the default): on, unless the
        environment says ``CONVPIPE_WARM_RUNNER=0``.
    """

    db: Path
    token: str
    roots: list[str]
    cluster: str = "threads"
    max_running: int = 2
    max_body: int = DEFAULT_MAX_BODY
    max_queued: int = 10_000
    kill_grace: float = 5.0
    python: str = sys.executable
    url: str = ""
    ready_file: Path | None = None
    warm: bool | None = None

    def warm_runner(self) -> bool:
        """Whether jobs fork from a warm runner (``warm``, or by default ``CONVPIPE_WARM_RUNNER``, on unless 0)."""
        if self.warm is not None:
            return self.warm
        return os.environ.get(WARM_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class Service:
    """The job service's state: store, runner and policy. One per app."""

    def __init__(self, config: ServiceConfig):
        if len(config.token) < 16:
            raise ConvpipeError("the service token must be at least 16 characters")
        self.config = config
        self.token = config.token.encode()
        self.roots = Roots(config.roots)
        self._lock_file = _lock_db(Path(config.db))
        try:
            self.store = JobStore(config.db)
        except (OSError, sqlite3.Error) as e:
            self._lock_file.close()
            raise ConvpipeError(f"cannot open the job table {config.db}: {e}") from None
        self.jobs_dir = Path(str(config.db) + ".d")
        self._submit_lock = threading.Lock()
        self.runner = Runner(self.store, self.jobs_dir, cluster=config.cluster, max_running=config.max_running,
                             check=self._recheck, kill_grace=config.kill_grace, python=config.python,
                             env=self.roots.env(), warm=config.warm_runner())

    def _recheck(self, job: Job) -> None:
        # Submission checked the paths; check again at start, since a symlink under a root may have been
        # re-pointed outside it in between (and the job checks each once more when it opens it).
        prepare_submission(job.spec, self.roots, source=f"job {job.id}")

    def start(self) -> None:
        from ..ops import registry

        # Import every op module now, so that the first submissions do not pay for the imports.
        registry.load_all()
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()
        self.store.close()
        self._lock_file.close()  # releases the flock

    def submit(self, text: str, *, resume: bool = False) -> Job:
        """Check a spec and queue it (``resume``: its run finishes an incomplete output, as ``run --resume``).

        Raises SpecError (422), Forbidden (403), Conflict (409: a queued or running job writes or reads
        where this one writes) or _TooMany (429).
        """
        if self.store.count("queued") >= self.config.max_queued:
            raise _TooMany(f"the queue is full ({self.config.max_queued} jobs waiting); try again later")
        sub = prepare_submission(text, self.roots)
        writes = {field: url for field, url in sub.locations.items() if url in sub.outputs}
        with self._submit_lock:  # check and insert as one: of two racing submissions, one sees the other
            conflict = find_conflict(writes, self.store.active())
            if conflict is not None:
                raise conflict
            job = self.store.add(sub.name, sub.spec_text, sub.outputs, resume=resume)
        self.runner.wake()
        return job

    def read_log(self, job_id: str, offset: int = 0) -> bytes:
        path = self.runner.log_path(job_id)
        try:
            with open(path, "rb") as f:
                f.seek(max(0, offset))
                return f.read(LOG_CHUNK)
        except FileNotFoundError:
            return b""


def _lock_db(db: Path) -> IO[str]:
    """Hold an exclusive lock beside the job table: two services on one table would run jobs twice."""
    db.parent.mkdir(parents=True, exist_ok=True)
    f = open(str(db) + ".lock", "a")  # noqa: SIM115 - held for the service's lifetime
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ConvpipeError(f"another convpipe service is using {db}") from None
    return f


class _TooMany(ConvpipeError):
    """The queue is full: HTTP 429."""

    http_status = 429


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


class _Guard:
    """ASGI middleware: bearer token first (401), then the body size limit (413).

    Pure ASGI rather than a FastAPI dependency so that it covers every request, unknown paths and the
    OpenAPI document included, and so a body is never read for an unauthenticated request. The dashboard's
    pages (:func:`.ui.is_ui_path`) check their own session instead; a session cookie never opens the API.
    """

    def __init__(self, app: Any, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not is_ui_path(scope.get("path", "")) and not token_ok(headers.get(b"authorization"), self.service.token):
            resp = JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
            await resp(scope, receive, send)
            return
        limit = self.service.config.max_body
        too_big = JSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > limit:
            await too_big(scope, receive, send)
            return
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            # Buffer the (small, capped) body so a chunked upload cannot exceed the limit either.
            chunks, size = [], 0
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await too_big(scope, receive, send)
                    return
                chunks.append(chunk)
                if not msg.get("more_body"):
                    break
            body = b"".join(chunks)
            sent = False

            async def replay() -> dict:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)


def _spec_errors(e: SpecError) -> list[dict[str, Any]]:
    errs = e.errors if isinstance(e, SpecErrors) else [e]
    return [{"path": x.path, "line": x.line, "message": x.message, "text": x.format()} for x in errs]


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application of one job service.

    Its lifespan starts the runner (recovering jobs a previous run left running) and stops it on
    shutdown (running jobs are stopped and resume at the next start).
    """
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        if config.ready_file is not None:
            tmp = Path(str(config.ready_file) + ".tmp")
            tmp.write_text(json.dumps({"url": config.url, "pid": os.getpid()}))
            tmp.replace(config.ready_file)  # atomic: a reader never sees half a file
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(title="convpipe job service", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.service = service

    @app.post("/jobs", status_code=201)
    async def submit(request: Request, resume: bool = Query(False)) -> Response:
        body = await request.body()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(422, "invalid spec", errors=[{"path": "spec", "line": None,
                                                        "message": "the spec must be UTF-8 text (YAML or JSON)",
                                                        "text": "spec: the spec must be UTF-8 text"}])
        try:
            job = await run_in_threadpool(lambda: service.submit(text, resume=resume))
        except SpecError as e:
            return _error(422, "invalid spec", errors=_spec_errors(e))
        except Forbidden as e:
            return _error(403, str(e))
        except Conflict as e:
            return _error(409, str(e), job=e.job.public())
        except _TooMany as e:
            return _error(429, str(e))
        return JSONResponse(job.public(), status_code=201, headers={"Location": f"/jobs/{job.id}"})

    @app.get("/jobs")
    async def list_jobs(state: str | None = Query(None), limit: int | None = Query(None, ge=1, le=100_000)
                        ) -> Response:
        if state is not None and state not in STATES:
            return _error(422, f"state must be one of {', '.join(STATES)}")
        jobs = await run_in_threadpool(service.store.list_jobs, state=state, limit=limit)
        return JSONResponse([j.public() for j in jobs])

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: str) -> Response:
        job = await run_in_threadpool(service.store.get, job_id)
        if job is None:
            return _error(404, f"no job {job_id!r}")
        return JSONResponse(job.public())

    @app.post("/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> Response:
        job = await run_in_threadpool(service.store.get, job_id)
        if job is None:
            return _error(404, f"no job {job_id!r}")
        if job.state in TERMINAL:
            return _error(409, f"job {job_id} already {job.state}", job=job.public())
        job = await run_in_threadpool(service.runner.cancel, job_id, wait=service.config.kill_grace + 5.0)
        assert job is not None
        return JSONResponse(job.public())

    @app.get("/jobs/{job_id}/log")
    async def job_log(job_id: str, offset: int = Query(0, ge=0)) -> Response:
        job = await run_in_threadpool(service.store.get, job_id)
        if job is None:
            return _error(404, f"no job {job_id!r}")
        data = await run_in_threadpool(service.read_log, job_id, offset)
        return PlainTextResponse(data.decode("utf-8", "replace"),
                                 headers={"X-Log-Offset": str(offset + len(data))})

    register_dashboard(app, service)
    app.add_middleware(_Guard, service=service)
    return app

