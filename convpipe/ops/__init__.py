"""Ops: the implementations of the op catalog (:mod:`convpipe.params`), one package or module per family.

Each op implements its catalog entry on the :class:`~convpipe.ops.base.Op` protocol (parameters, halo, kind,
capabilities, ``apply``); :mod:`.registry` maps a catalog name to its class and imports it on first use.
"""

from . import registry
from .base import Context, Op
from ..params.base import OpParams

__all__ = ["Context", "Op", "OpParams", "registry"]
