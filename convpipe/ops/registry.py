"""Op registry: op modules register their classes here by name."""

from __future__ import annotations

_OPS: dict[str, type] = {}
_LOADED = False


def register(cls: type) -> type:
    if cls.name in _OPS:
        raise RuntimeError(f"op {cls.name!r} registered twice")
    _OPS[cls.name] = cls
    return cls


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import axis, features, local, point, spectral  # noqa: F401  (they register on import)


def names() -> list[str]:
    _load()
    return sorted(_OPS)


def get(name: str) -> type:
    _load()
    return _OPS[name]
