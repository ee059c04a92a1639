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
import time
from collections.abc import Callable
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

    def submit(self, spec_text: str | bytes) -> dict[str, Any]:
        """Submit a spec (YAML or JSON text); returns the new job (state ``queued``)."""
        body = spec_text.encode() if isinstance(spec_text, str) else spec_text
        return self._request("POST", "/jobs", content=body,
                             headers={"Content-Type": "application/yaml"}).json()

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
