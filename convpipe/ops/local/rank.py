"""Box filters of a window ``size``: ``uniform`` (the mean) and the rank filters ``median``, ``minimum``,
``maximum`` (a window holding a NaN gives NaN, see :func:`convpipe.engines.rank_filter`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import engines
from ...params.local import SizeParams
from ..base import NO_CONTEXT, Context
from .base import LocalOp


class _SizeOp(LocalOp):
    Params = SizeParams

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes, size=self.params.size)
        self.size = {a: int(v) for a, v in self.per_axis(self.params.size, self.axes, "size").items()}

    def halo(self):
        return {a: (s // 2, s - 1 - s // 2) for a, s in self.size.items()}


class Uniform(_SizeOp):
    name = "uniform"
    linear = True

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """scipy.ndimage.uniform_filter: one 1-D mean pass per axis of size > 1.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()``; float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        w = {self.ax(a): (np.full(s, 1.0 / s), s // 2) for a, s in self.size.items() if s > 1}
        return self.crop(engines.sep_correlate(x, w))

    def shift_gain(self):
        return float(np.prod([np.full(s, 1.0 / s).sum() for s in self.size.values() if s > 1]))

    def method(self):
        return "separable"


class _Rank(_SizeOp):
    def shift_gain(self):  # a window's k-th value moves with the window
        return 1.0

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """scipy.ndimage's median / minimum / maximum filter (named by the op) over the box ``size``.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()``; float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        return self.crop(engines.rank_filter(x, self.name, {self.ax(a): s for a, s in self.size.items()}))


class Median(_Rank):
    name = "median"


class Minimum(_Rank):
    name = "minimum"


class Maximum(_Rank):
    name = "maximum"
