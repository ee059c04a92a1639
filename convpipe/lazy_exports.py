"""Names a module re-exports from others, loaded on first use (PEP 562).

Why: ``import convpipe`` and the instant commands must not load dask or zarr (or pydantic models they do not
need) just because a package re-exports a name from a module that does.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(name: str, package: str, sources: Mapping[str, str], *, public: Iterable[str] = ()
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for module ``name``: attribute ``a`` in ``sources`` is taken from the module
    ``sources[a]`` (relative to ``package``) when first asked for, and kept in ``name``'s globals so later
    lookups skip ``__getattr__``; ``__dir__`` lists the module's globals and ``public``.

    Examples
    --------
    >>> __getattr__, __dir__ = lazy_exports(__name__, __package__, {"load": "api"})  # doctest: +SKIP
    """
    public = tuple(public)

    def __getattr__(attr: str) -> Any:
        source = sources.get(attr)
        if source is None:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        value = getattr(importlib.import_module(f".{source}", package), attr)
        setattr(sys.modules[name], attr, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[name]), *public})

    return __getattr__, __dir__
