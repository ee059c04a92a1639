"""Sessions of the dashboard: sign-in with the service's token, a session cookie, and cross-site checks.

The cookie holds only a random session id (never the token, nor anything derived from it); the service keeps
the ids' SHA-256 digests and their expiry in memory, so a restart signs everyone out and a stolen database or
log holds no session. The cookie is HttpOnly (scripts cannot read it), SameSite=Strict (a browser does not send
it with a request another site starts) and expires. Every form post must also carry the session's CSRF token
(an HMAC of the session id under a per-service secret) and come from a page of the service itself (its
``Origin``, else its ``Referer``, names the service's host): either check alone refuses a cross-site post.

The cookie authenticates the dashboard's pages only: the JSON API keeps requiring the bearer token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from urllib.parse import urlsplit

__all__ = ["SESSION_SECONDS", "Sessions", "same_origin"]

#: How long a sign-in lasts (the cookie's Max-Age and the server's own expiry).
SESSION_SECONDS = 12 * 3600
#: Most live sessions kept; the oldest go first beyond that (only the right token creates one).
MAX_SESSIONS = 1000


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8", "replace")).hexdigest()


class Sessions:
    """The signed-in browsers of one service.

    Parameters
    ----------
    lifetime : float
        Seconds a session lasts after sign-in.
    """

    def __init__(self, lifetime: float = SESSION_SECONDS, max_sessions: int = MAX_SESSIONS):
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self._secret = secrets.token_bytes(32)
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self) -> str:
        """A new session; returns its id (the cookie's value)."""
        sid = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            for key in [k for k, t in self._expiry.items() if t <= now]:
                del self._expiry[key]
            while len(self._expiry) >= self.max_sessions:
                del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
            self._expiry[_digest(sid)] = now + self.lifetime
        return sid

    def valid(self, sid: str | None) -> bool:
        """Whether ``sid`` is a live session."""
        if not sid:
            return False
        with self._lock:
            t = self._expiry.get(_digest(sid))
            if t is None:
                return False
            if t <= time.time():
                del self._expiry[_digest(sid)]
                return False
            return True

    def drop(self, sid: str | None) -> None:
        """Sign a session out."""
        if sid:
            with self._lock:
                self._expiry.pop(_digest(sid), None)

    def csrf(self, sid: str) -> str:
        """The CSRF token of session ``sid``, to put in every form the session's pages show."""
        return hmac.new(self._secret, b"csrf:" + sid.encode("utf-8", "replace"), hashlib.sha256).hexdigest()

    def csrf_ok(self, sid: str | None, token: str | None) -> bool:
        """Whether ``token`` is the CSRF token of the live session ``sid``."""
        if not sid or not token or not self.valid(sid):
            return False
        return hmac.compare_digest(self.csrf(sid), token)


def same_origin(headers: dict[str, str]) -> bool:
    """Whether a form post comes from a page of this service.

    Its ``Origin`` (else its ``Referer``) must name the host the request was sent to (the ``Host`` header):
    a page of another site cannot set either. A post with neither is refused (browsers send ``Origin`` with
    every form post). Only the host and port are compared, so a TLS-terminating proxy in front of the
    service (``https`` outside, ``http`` here) does not break the dashboard.
    """
    host = (headers.get("host") or "").strip().lower()
    if not host:
        return False
    claimed = headers.get("origin")
    if claimed is None or claimed == "":
        claimed = headers.get("referer")
    if not claimed or claimed == "null":
        return False
    try:
        parts = urlsplit(claimed)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https"):
        return False
    netloc = parts.netloc.lower()
    default = {"http": ":80", "https": ":443"}[parts.scheme]
    return hmac.compare_digest(netloc.removesuffix(default), host.removesuffix(default))
