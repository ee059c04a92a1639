"""Feature ops: tables of detections and statistics (Parquet), filter banks.

Tables hold one column per axis in global voxel coordinates plus the named values. A tile reports only
the rows in its core, so nothing is lost or doubled at tile borders (see ``tiles._owned_rows``).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .. import engines
from .base import AxesParam, Op, OpParams
from .registry import register


class PeaksParams(OpParams, AxesParam):
    radius: int = Field(ge=0)
    threshold: float = 0.0
    axes: str | None = None
    table: str | None = None


@register
class Peaks(Op):
    """Local maxima: value == maximum_filter(size=2*radius+1 over axes, mode nearest) and value > threshold.

    Plateaus count: every voxel of a flat maximum is a peak, exactly as the oracle. The image passes through.
    """

    name = "peaks"
    kind = "local"
    Params = PeaksParams
    emits_table = True
    summary = "local maxima (plateaus included) above a threshold -> table"

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes)

    def halo(self):
        r = self.params.radius
        return {a: (r, r) for a in self.axes}

    def boundary(self, axis):
        return "nearest", 0.0

    def _crop(self, x):
        sl = [slice(None)] * x.ndim
        r = self.params.radius
        for a in self.axes:
            i = self.in_axes.index(a)
            sl[i] = slice(r, x.shape[i] - r)
        return x[tuple(sl)]

    def apply(self, x, xp=np):
        return self._crop(x)

    def rows(self, x, y):
        size = 2 * self.params.radius + 1
        mx = self._crop(engines.rank_filter(x, "maximum", {self.in_axes.index(a): size for a in self.axes}))
        hit = (y == mx) & (y > self.params.threshold)
        idx = np.nonzero(hit)
        cols = {a: idx[i] for i, a in enumerate(self.in_axes)}
        cols["value"] = y[hit].astype(np.float64)
        return cols

    def method(self):
        return "maximum filter"
