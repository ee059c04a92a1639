"""The op catalog: every op a spec may name, with its parameters and what it means.

This is the spec layer's view of the ops: :mod:`convpipe.spec` validates each step through it and
``convpipe ops`` / the JSON Schema list it, without importing a single op implementation (no scipy, no
engines, no dask). :mod:`convpipe.ops` implements each entry (``ops.registry`` maps a name to its class,
and a test checks that the two agree name for name).

One module per op family: :mod:`.local`, :mod:`.point`, :mod:`.axis`, :mod:`.spectral`,
:mod:`.stochastic`, :mod:`.intensity`, :mod:`.features`, :mod:`.layers`, :mod:`.objects`, :mod:`.morphology`;
:mod:`.base` holds what they share.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from . import axis, features, intensity, layers, local, morphology, objects, point, spectral, stochastic
from .base import AxesParam, Entry, Mode, ModeParams, OpParams, PerAxis, PerAxisInt

__all__ = ["AxesParam", "Entry", "Mode", "ModeParams", "OpParams", "PerAxis", "PerAxisInt", "catalog", "entry",
           "names"]


def _build() -> Mapping[str, Entry]:
    out: dict[str, Entry] = {}
    for family in (local, point, axis, spectral, stochastic, intensity, features, layers, objects, morphology):
        for e in family.ENTRIES:
            if e.name in out:
                raise RuntimeError(f"op {e.name!r} is in the catalog twice")
            out[e.name] = e
    return MappingProxyType(dict(sorted(out.items())))


_CATALOG = _build()


def catalog() -> Mapping[str, Entry]:
    """Every op of the catalog by name (sorted, read-only)."""
    return _CATALOG


def names() -> list[str]:
    """The op names a spec may use, sorted."""
    return list(_CATALOG)


def entry(name: str) -> Entry:
    """The catalog entry of ``name`` (KeyError for an unknown op)."""
    return _CATALOG[name]
