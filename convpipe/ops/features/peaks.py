"""``peaks``: local maxima above a threshold -> table; the image passes through."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import engines
from ...params.features import PeaksParams
from ..base import NO_CONTEXT, Context, Op, Rows
from .frames import keep_real


class Peaks(Op):
    """Local maxima: value == maximum_filter(size=2*radius+1 over axes, mode nearest) and value > threshold.

    Plateaus count: every voxel of a flat maximum is a peak, exactly as the oracle. The image passes through.
    """

    name = "peaks"
    kind = "local"
    Params = PeaksParams
    raw_input = True  # compare the stored values: float32 rounding would merge distinct values into plateaus
    emits_table = True

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes)

    def halo(self):
        r = self.params.radius
        return {a: (r, r) for a in self.axes}

    def boundary(self, axis):
        return "nearest", 0.0

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The block without its halo (the image passes through).

        Parameters
        ----------
        x : numpy.ndarray, axes ``in_axes``, padded by ``radius`` along ``axes`` (mode nearest); stored values
        ctx : Context, unused

        Returns
        -------
        numpy.ndarray, ``x``'s shape less the halo, ``x``'s dtype (the chain casts to the compute dtype)
        """
        return self.crop(x)

    def apply_rows(self, x: Any, ctx: Context = NO_CONTEXT) -> tuple[Any, Rows]:
        """The image and its peaks: rows of local indices into it (one column per input axis) and ``value``
        (float64); voxels at the seams between gathered runs (``ctx.coords``) are never peaks."""
        y = self.crop(x)
        size = 2 * self.params.radius + 1
        mx = self.crop(engines.rank_filter(x, "maximum", {self.in_axes.index(a): size for a in self.axes}))
        hit = (y == mx) & (y > self.params.threshold)
        keep_real(hit, self, self.halo(), x.shape, ctx.coords)
        idx = np.nonzero(hit)
        cols = {a: idx[i] for i, a in enumerate(self.in_axes)}
        cols["value"] = y[hit].astype(np.float64)
        return y, cols

    def method(self):
        return "maximum filter"
