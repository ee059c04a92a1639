"""Op registry: op modules register their classes here by name."""

from __future__ import annotations

import threading

_OPS: dict[str, type] = {}
_LOADED = False
_LOCK = threading.Lock()  # the service loads specs from several threads at once


def register(cls: type) -> type:
    if cls.name in _OPS:
        raise RuntimeError(f"op {cls.name!r} registered twice")
    _OPS[cls.name] = cls
    return cls


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    with _LOCK:
        if not _LOADED:
            from . import axis, features, local, point, spectral  # noqa: F401  (they register on import)
            from . import objects  # noqa: F401  (morphology, distance transform: convpipe.ops.objects)

            _LOADED = True  # only once every module registered: a half-filled registry rejects valid ops


def names() -> list[str]:
    _load()
    return sorted(_OPS)


def get(name: str) -> type:
    _load()
    return _OPS[name]
