"""The convpipe job service: an authenticated HTTP API over a durable SQLite job queue.

Jobs run one OS process each (``python -m convpipe run``, forked from a warm runner that imported convpipe
once, or a fresh interpreter), at most ``--max-running`` at a time, on the service's cluster; they survive a
restart of the service (a running job resumes from its finished chunks).

Parts: :mod:`.store` (the job table), :mod:`.policy` (tokens, roots, spec checks), :mod:`.runner` (job
processes), :mod:`.warm` and :mod:`.zygote` (the warm runner), :mod:`.app` (the FastAPI app), :mod:`.cli` (``serve``, ``submit``, ``status``, ``cancel``, ``jobs``).
Submodules are imported lazily: ``convpipe`` imports :mod:`.cli` on every start.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServiceConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
