"""HTTP client of the convpipe job service (httpx).

>>> c = ServiceClient("http://127.0.0.1:8765", token="...")      # doctest: +SKIP
>>> job = c.submit(open("spec.yaml").read())                       # doctest: +SKIP
>>> c.wait(job["id"])["state"]                                     # doctest: +SKIP
'succeeded'

The server comes from ``server=`` or ``$CONVPIPE_SERVER`` (default ``http://127.0.0.1:8765``), the token
from ``token=`` or ``$CONVPIPE_TOKEN``. Service answers become typed errors: an invalid spec is a
:class:`~convpipe.errors.SpecErrors` with each error's path and line, a path outside the service's roots an
:class:`~convpipe.errors.InputError`, anything else a :class:`ServiceError`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from .errors import ConvpipeError, InputError, SpecError, SpecErrors

DEFAULT_SERVER = "http://127.0.0.1:8765"
TERMINAL_STATES = ("succeeded", "failed", "cancelled")


def _q(job_id: str) -> str:
    """A job id as one URL path segment (``/`` or ``..`` in it cannot reach another route)."""
    return quote(str(job_id), safe="")


class ServiceError(ConvpipeError):
    """The service could not be reached, refused the request, or answered an error.

    Attributes
    ----------
    status : int or None
        The HTTP status (None when no answer came).
    """

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


class ServiceClient:
    """A client for one job service.

    Parameters
    ----------
    server : str, optional
        Base URL; default ``$CONVPIPE_SERVER`` or ``http://127.0.0.1:8765``.
    token : str, optional
        Bearer token; default ``$CONVPIPE_TOKEN``.
    timeout : float
        Seconds per request.
    """

    def __init__(self, server: str | None = None, token: str | None = None, *, timeout: float = 30.0):
        self.server = (server or os.environ.get("CONVPIPE_SERVER") or DEFAULT_SERVER).rstrip("/")
        token = token if token is not None else os.environ.get("CONVPIPE_TOKEN")
        if not token:
            raise ServiceError("no token: set CONVPIPE_TOKEN to the service's token")
        self._http = httpx.Client(base_url=self.server, timeout=timeout, trust_env=False,
                                  headers={"Authorization": f"Bearer {token.strip()}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ requests

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.InvalidURL as e:
            raise ServiceError(f"invalid request URL {self.server}{path!r}: {e}") from None
        except httpx.TransportError as e:
            raise ServiceError(f"cannot reach the convpipe service at {self.server}: {e}") from None
        if r.status_code < 400:
            return r
        try:
            body = r.json()
        except ValueError:
            body = {"detail": r.text.strip()[:500]}
        detail = body.get("detail", "") if isinstance(body, dict) else str(body)
        if r.status_code == 401:
            raise ServiceError("the service refused the token (check CONVPIPE_TOKEN)", 401)
        if r.status_code == 422 and isinstance(body, dict) and body.get("errors"):
            errs = [SpecError(e.get("message", ""), path=e.get("path") or "", line=e.get("line"))
                    for e in body["errors"]]
            raise SpecErrors(errs) if len(errs) > 1 else errs[0]
        if r.status_code == 403:
            raise InputError(f"refused by the service: {detail}")
        raise ServiceError(f"{detail or r.reason_phrase} (HTTP {r.status_code})", r.status_code)

    def submit(self, spec_text: str | bytes, *, resume: bool = False) -> dict[str, Any]:
        """Submit a spec (YAML or JSON text); returns the new job (state ``queued``).

        Relative paths in the text resolve under the service's first root; :meth:`submit_file` resolves them
        against the spec's folder instead. ``resume``: the job finishes an output an interrupted run left
        incomplete (``convpipe run --resume``).
        """
        body = spec_text.encode() if isinstance(spec_text, str) else spec_text
        params = {"resume": "true"} if resume else None
        return self._request("POST", "/jobs", content=body, params=params,
                             headers={"Content-Type": "application/yaml"}).json()

    def submit_file(self, path: str | os.PathLike[str], *, overwrite: bool = False, resume: bool = False,
                    text: str | None = None, source: str | None = None) -> dict[str, Any]:
        """Submit a spec file as ``convpipe run`` would run it: relative paths resolve against its folder.

        Parameters
        ----------
        path : str or path
            The spec file (``text``, when given, is its content: e.g. read from standard input, with
            ``path`` standing for a file in the folder it resolves against; ``source`` names it in messages).
        overwrite : bool
            Replace an existing output (``output.overwrite: true``, as ``run --overwrite``).
        resume : bool
            Finish an output an interrupted run left incomplete (``run --resume``).

        Raises
        ------
        SpecError
            The spec is invalid; lines are those of the file as written, also for errors the service found.
        """
        path = Path(path)
        if text is None:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"cannot read the spec {path}: {e}") from None
        local = prepare_spec(text, path.resolve().parent, source=source or str(path), overwrite=overwrite)
        try:
            return self.submit(local.text, resume=resume)
        except SpecError as e:
            raise local.relined(e) from None


    def job(self, job_id: str) -> dict[str, Any]:
        """One job: id, name, state, progress, error, submitted, started, finished, outputs."""
        return self._request("GET", f"/jobs/{_q(job_id)}").json()

    def jobs(self, *, state: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        params = {k: v for k, v in (("state", state), ("limit", limit)) if v is not None}
        return self._request("GET", "/jobs", params=params).json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; returns it after the cancellation."""
        return self._request("POST", f"/jobs/{_q(job_id)}/cancel").json()

    def log(self, job_id: str, offset: int = 0) -> tuple[str, int]:
        """The job's log from byte ``offset``; returns (text, next offset)."""
        r = self._request("GET", f"/jobs/{_q(job_id)}/log", params={"offset": offset})
        return r.text, int(r.headers.get("X-Log-Offset", offset + len(r.content)))

    def wait(self, job_id: str, *, poll: float = 0.5, timeout: float | None = None,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll a job until it ends; ``on_update(job)`` sees every poll. Returns the final job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ServiceError(f"job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll)


@dataclass
class LocalSpec:
    """A spec made ready on the client's side (:func:`prepare_spec`).

    Attributes
    ----------
    text : str
        What to send: the spec as written when nothing changed, else rewritten with absolute locations.
    lines : dict of str to int
        The line of each YAML path (``steps[1].sobel``) in the file as written.
    source : str
        The file's name, for messages.
    """

    text: str
    lines: dict[str, int] = field(default_factory=dict)
    source: str = "<spec>"

    def line_of(self, path: str) -> int | None:
        """The line of ``path`` in the file as written, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            trimmed = re.sub(r"(\.[^.\[\]]+|\[\d+\])$", "", path)
            if trimmed == path:
                return None
            path = trimmed
        return None

    def relined(self, error: SpecError) -> SpecError:
        """``error`` (found by the service in the text sent) with the lines of the file as written."""
        errs = error.errors if isinstance(error, SpecErrors) else [error]
        fixed = [SpecError(e.message, path=e.path, line=self.line_of(e.path) if e.path else e.line) for e in errs]
        return SpecErrors(fixed) if len(fixed) > 1 else fixed[0]


def prepare_spec(text: str, base_dir: Path, *, source: str = "<spec>", overwrite: bool = False) -> LocalSpec:
    """Check a spec here and make its relative locations absolute against ``base_dir`` (the spec's folder).

    The spec is parsed as ``validate`` parses it (its errors come with the file's lines, before anything is
    sent); no kernel or data file is read, the service does that after checking its roots. Every relative
    location (input, output, tables, kernel and template files) becomes the absolute path it means here, as
    ``convpipe run`` would resolve it, so the service checks and opens exactly that place. The text is sent
    as written when no location is relative and ``overwrite`` is not asked for.

    Raises
    ------
    SpecError
        The spec is invalid.
    """
    from .service.policy import dump_spec
    from .spec import format_path, parse_spec_text

    spec = parse_spec_text(text, base_dir=Path(base_dir), source=source)
    lines = {format_path(loc): line for loc, line in spec.lines.items() if loc}
    raw = spec.raw
    changed = False
    for loc in spec.locations():
        if loc.kind == "profile":
            continue  # the service runs every job on its own cluster and drops the spec's unread
        if loc.url != loc.resolved:
            node = raw
            for key in loc.loc[:-1]:
                node = node[key]
            node[loc.loc[-1]] = loc.resolved
            changed = True
    if overwrite and isinstance(raw.get("output"), dict):
        raw["output"]["overwrite"] = True
        changed = True
    return LocalSpec(dump_spec(raw, spec.lines) if changed else text, lines, source)
