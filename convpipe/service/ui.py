"""The dashboard: web pages for people, served by the job service itself (SPEC.md, "The job service").

``GET /`` shows a sign-in form (the service's token) and, once signed in, the jobs (name, state, progress,
submitted, elapsed) with a form to submit a spec; ``/ui/jobs/{id}`` shows one job: state, progress, times,
error, outputs, a ``Cancel`` button while it is queued or running, a PNG preview of a middle plane of its
output once it succeeded, its log and its plan. Pages are rendered on the server (jinja2, autoescaped) and
read fine with scripts off; ``static/dashboard.js`` (shipped with the package, nothing fetched from outside)
refreshes the live parts once a second.

Sign-in sets a session cookie (:mod:`.ui_session`); every form post is checked for the session's CSRF token
and for coming from the service's own pages. The JSON API under ``/jobs`` ignores the cookie: it keeps
requiring the bearer token (see ``_Guard`` in :mod:`.app`, which lets only :func:`is_ui_path` through).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..errors import ConvpipeError, SpecError, SpecErrors
from .policy import Forbidden, token_ok
from .store import TERMINAL, Job
from .ui_session import SESSION_SECONDS, Sessions, same_origin
from .ui_views import PlanCache, PreviewCache, job_view, log_tail

if TYPE_CHECKING:
    from .app import Service

__all__ = ["is_ui_path", "register"]

_HERE = Path(__file__).parent
#: Jobs the dashboard lists (newest first); the JSON API and ``convpipe jobs`` reach the rest.
LIST_LIMIT = 200
#: Longest a log download from the job page is (its end).
LOG_DOWNLOAD_BYTES = 4 << 20
#: A wrong token costs this long: guessing stays slow, a person does not notice.
WRONG_TOKEN_DELAY_S = 0.5

_SECURITY_HEADERS = {
    # nothing but this service's own files; no inline script, no framing by another site
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def is_ui_path(path: str) -> bool:
    """Whether a request path belongs to the dashboard (which checks its session itself)."""
    return path == "/" or path == "/ui" or path.startswith("/ui/")


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(_HERE / "templates")), autoescape=True,
                              trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def _form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the browser's default for these forms)."""
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    return {k: v[0] for k, v in fields.items()}


def _safe_next(target: str | None) -> str:
    # only a page of this dashboard: never another site (//host) after sign-in
    if target and target.startswith("/ui/jobs/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


class _Dashboard:
    def __init__(self, service: Service):
        self.service = service
        self.sessions = Sessions()
        self.env = _environment()
        self.plans = PlanCache(service.roots, service.config.cluster)
        self.previews = PreviewCache(service.roots, service.jobs_dir)
        # one cookie per service (its job table): two services on one host do not sign each other out
        self.cookie = "convpipe_" + hashlib.sha256(str(service.config.db).encode()).hexdigest()[:10]
        from .. import __version__

        self.info = {"roots": str(service.roots), "cluster": service.config.cluster,
                     "max_running": service.config.max_running, "base_dir": str(service.roots.base_dir),
                     "version": __version__}

    # ------------------------------------------------------------------ helpers

    def sid(self, request: Request) -> str | None:
        sid = request.cookies.get(self.cookie)
        return sid if self.sessions.valid(sid) else None

    def page(self, template: str, request: Request, status: int = 200, **ctx: Any) -> HTMLResponse:
        sid = self.sid(request)
        html = self.env.get_template(template).render(
            info=self.info, signed_in=sid is not None, csrf=self.sessions.csrf(sid) if sid else "", **ctx)
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    def fragment(self, template: str, request: Request, *, stop: bool = False, **ctx: Any) -> HTMLResponse:
        sid = self.sid(request)
        html = self.env.get_template(template).render(info=self.info, csrf=self.sessions.csrf(sid) if sid else "",
                                                      **ctx)
        headers = dict(_SECURITY_HEADERS)
        if stop:
            headers["X-Refresh"] = "stop"
        return HTMLResponse(html, headers=headers)

    def message(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return self.page("message.html.j2", request, status=status, title=title, message=message)

    def refuse_post(self, request: Request, form: dict[str, str]) -> HTMLResponse | None:
        """None when a form post may go ahead; else the page that refuses it."""
        if not same_origin({k.lower(): v for k, v in request.headers.items()}):
            return self.message(request, 403, "Refused", "This form was not sent from this service's own pages "
                                "(its Origin or Referer names another site), so nothing was done.")
        sid = request.cookies.get(self.cookie)
        if not self.sessions.valid(sid):
            return self.message(request, 403, "Signed out", "Your session has ended; sign in again.")
        if not self.sessions.csrf_ok(sid, form.get("csrf")):
            return self.message(request, 403, "Refused", "This form carries no valid CSRF token for your session "
                                "(it was not sent from this service's pages), so nothing was done.")
        return None

    def jobs_context(self) -> dict[str, Any]:
        store = self.service.store
        jobs = store.list_jobs(limit=LIST_LIMIT)
        counts = {s: store.count(s) for s in ("running", "queued")}
        total = store.total()
        summary = f"{counts['running']} running, {counts['queued']} queued, {total} in all"
        if total > len(jobs):
            summary += f" (the newest {len(jobs)} shown; convpipe jobs --limit N lists more)"
        return {"jobs": [job_view(j) for j in jobs], "summary": summary}

    def preview_context(self, job: Job) -> dict[str, Any]:
        if job.state != "succeeded":
            return {"preview": None, "preview_problem": None}
        try:
            data, caption = self.previews.png(job)
        except ConvpipeError as e:
            return {"preview": None, "preview_problem": str(e)}
        except Exception as e:  # noqa: BLE001 - an output that cannot be drawn must not break the page
            return {"preview": None, "preview_problem": f"{type(e).__name__}: {e}"}
        return {"preview": {"caption": caption, "version": hashlib.sha256(data).hexdigest()[:8]},
                "preview_problem": None}

    def live_context(self, job: Job) -> dict[str, Any]:
        log, cut = log_tail(self.service.runner.log_path(job.id))
        return {"job": job_view(job), "log": log, "log_cut": cut, **self.preview_context(job)}


def register(app: FastAPI, service: Service) -> None:
    """Add the dashboard's routes to the service's app."""
    ui = _Dashboard(service)
    app.state.dashboard = ui
    app.mount("/ui/static", StaticFiles(directory=str(_HERE / "static")), name="ui-static")

    def signin_page(request: Request, status: int = 200, message: str = "", next_: str = "/") -> HTMLResponse:
        return ui.page("signin.html.j2", request, status=status, message=message, next=_safe_next(next_))

    def to_signin(request: Request) -> Response:
        return RedirectResponse("/?next=" + quote(request.url.path, safe="/"), status_code=303)

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        if ui.sid(request) is None:
            return signin_page(request, next_=request.query_params.get("next", "/"))
        ctx = await run_in_threadpool(ui.jobs_context)
        return ui.page("jobs.html.j2", request, errors=[], problem="", spec_text="", **ctx)

    @app.post("/ui/signin", include_in_schema=False)
    async def signin(request: Request) -> Response:
        form = _form(await request.body())
        if not same_origin({k.lower(): v for k, v in request.headers.items()}):
            return ui.message(request, 403, "Refused", "This sign-in was not sent from this service's own page.")
        token = form.get("token", "")
        if not token_ok(b"Bearer " + token.encode("utf-8", "replace"), service.token):
            await asyncio.sleep(WRONG_TOKEN_DELAY_S)
            return signin_page(request, 401, "That is not this service's token.", form.get("next", "/"))
        sid = ui.sessions.create()
        resp = RedirectResponse(_safe_next(form.get("next")), status_code=303)
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"
        resp.set_cookie(ui.cookie, sid, max_age=SESSION_SECONDS, httponly=True, samesite="strict", secure=secure,
                        path="/")
        return resp

    @app.post("/ui/signout", include_in_schema=False)
    async def signout(request: Request) -> Response:
        form = _form(await request.body())
        refused = ui.refuse_post(request, form)
        if refused is not None:
            return refused
        ui.sessions.drop(request.cookies.get(ui.cookie))
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(ui.cookie, path="/", httponly=True, samesite="strict")
        return resp

    @app.post("/ui/jobs", include_in_schema=False)
    async def submit(request: Request) -> Response:
        form = _form(await request.body())
        refused = ui.refuse_post(request, form)
        if refused is not None:
            return refused
        text = form.get("spec", "")
        status, problem, errors = 200, "", list[dict[str, Any]]()
        try:
            job = await run_in_threadpool(service.submit, text)
        except SpecError as e:
            errs = e.errors if isinstance(e, SpecErrors) else [e]
            status, problem = 422, "The spec was not submitted: it has errors."
            errors = [{"line": x.line, "text": f"{x.path or 'spec'}: {x.message}"} for x in errs]
        except Forbidden as e:
            status, problem, errors = 403, "The service refused the spec.", [{"line": None, "text": str(e)}]
        except ConvpipeError as e:  # 409 (another job writes there), 429 (queue full)
            code = getattr(e, "http_status", 400)
            status, problem, errors = code, "The spec was not submitted.", [{"line": None, "text": str(e)}]
        else:
            return RedirectResponse(f"/ui/jobs/{quote(job.id, safe='')}", status_code=303)
        ctx = await run_in_threadpool(ui.jobs_context)
        return ui.page("jobs.html.j2", request, status=status, errors=errors, problem=problem, spec_text=text,
                       **ctx)

    @app.get("/ui/jobs/{job_id}", include_in_schema=False)
    async def job_page(request: Request, job_id: str) -> Response:
        if ui.sid(request) is None:
            return to_signin(request)
        job = await run_in_threadpool(service.store.get, job_id)
        if job is None:
            return ui.message(request, 404, "No such job", f"There is no job {job_id!r}.")
        live = await run_in_threadpool(ui.live_context, job)
        plan = await run_in_threadpool(ui.plans.text, job)
        return ui.page("job.html.j2", request, plan=plan, spec=job.spec, **live)

    @app.post("/ui/jobs/{job_id}/cancel", include_in_schema=False)
    async def cancel(request: Request, job_id: str) -> Response:
        form = _form(await request.body())
        refused = ui.refuse_post(request, form)
        if refused is not None:
            return refused
        job = await run_in_threadpool(service.store.get, job_id)
        if job is None:
            return ui.message(request, 404, "No such job", f"There is no job {job_id!r}.")
        if job.state not in TERMINAL:
            await run_in_threadpool(service.runner.cancel, job_id, wait=service.config.kill_grace + 5.0)
        return RedirectResponse(f"/ui/jobs/{quote(job_id, safe='')}", status_code=303)

    @app.get("/ui/jobs/{job_id}/preview.png", include_in_schema=False)
    async def preview(request: Request, job_id: str) -> Response:
        if ui.sid(request) is None:
            return PlainTextResponse("sign in first", status_code=401)
        job = await run_in_threadpool(service.store.get, job_id)
        if job is None:
            return PlainTextResponse(f"no job {job_id!r}", status_code=404)
        try:
            data, _ = await run_in_threadpool(ui.previews.png, job)
        except ConvpipeError as e:
            return PlainTextResponse(str(e), status_code=404)
        return Response(data, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})

    @app.get("/ui/jobs/{job_id}/log", include_in_schema=False)
    async def log(request: Request, job_id: str) -> Response:
        if ui.sid(request) is None:
            return to_signin(request)
        job = await run_in_threadpool(service.store.get, job_id)
        if job is None:
            return PlainTextResponse(f"no job {job_id!r}", status_code=404)
        text, _ = await run_in_threadpool(log_tail, service.runner.log_path(job_id), LOG_DOWNLOAD_BYTES)
        return PlainTextResponse(text, headers=_SECURITY_HEADERS)

    @app.get("/ui/live/jobs", include_in_schema=False)
    async def live_jobs(request: Request) -> Response:
        if ui.sid(request) is None:
            return PlainTextResponse("sign in first", status_code=401)
        ctx = await run_in_threadpool(ui.jobs_context)
        return ui.fragment("_jobs_live.html.j2", request, **ctx)

    @app.get("/ui/live/jobs/{job_id}", include_in_schema=False)
    async def live_job(request: Request, job_id: str) -> Response:
        if ui.sid(request) is None:
            return PlainTextResponse("sign in first", status_code=401)
        job = await run_in_threadpool(service.store.get, job_id)
        if job is None:
            return PlainTextResponse(f"no job {job_id!r}", status_code=404)
        ctx = await run_in_threadpool(ui.live_context, job)
        return ui.fragment("_job_live.html.j2", request, stop=job.state in TERMINAL, **ctx)
