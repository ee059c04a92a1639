"""Ops, one module per family. Each op declares its parameters, halo, kind and apply()."""

from . import registry
from .base import Op, OpParams

__all__ = ["Op", "OpParams", "registry"]
