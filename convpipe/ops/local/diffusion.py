"""``diffusion``: the heat equation, as one gaussian (sigma = sqrt(2 D t)) or as explicit steps."""

from __future__ import annotations

import math
from typing import Any

from ...params.local import DiffusionParams, GaussianParams
from ..base import NO_CONTEXT, Context
from .base import LocalOp
from .gaussian import Gaussian


class HeatStep(LocalOp):
    """One explicit step u <- u + dt * laplace(u); internal (diffusion with steps expands into these)."""

    name = "heat_step"
    linear = True

    def __init__(self, params, axes, *, step=None, dt=0.1, over="yx"):
        self.dt = dt
        self.axes = over
        super().__init__(params, axes, step=step)

    def halo(self):
        return {a: (1, 1) for a in self.axes}

    def shift_gain(self):  # u + dt * laplace(u): the laplacian ignores a shift
        return 1.0

    def estimate_work(self):  # estimate only: shifted sums per axis, scale, add: ~1.5 x*2+1 a axis, measured
        return {"point": 1.5 * len(self.axes)}

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """u + dt * laplace(u) on the block.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by one voxel along ``axes``; float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        return self.crop(x) + x.dtype.type(self.dt) * self.laplacian(x)


class Diffusion(LocalOp):
    """Never runs itself: :meth:`expand` gives the gaussian or the explicit steps the plan runs."""

    name = "diffusion"
    linear = True
    Params = DiffusionParams

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes)
        if p.steps is not None:
            limit = 1.0 / (2 * len(self.axes))
            if p.dt > limit:
                raise self.error(f"dt {p.dt} is above the stability limit {limit:g} for {len(self.axes)} axes "
                                 "(explicit scheme: dt <= 1 / (2 * number of axes))", "dt")
            self.sub = [HeatStep(p, self.in_axes, step=self.step, dt=p.dt, over=self.axes) for _ in range(p.steps)]
        else:
            sigma = math.sqrt(2.0 * p.diffusivity * p.time)
            gp = GaussianParams(sigma={a: sigma for a in self.axes}, mode=p.mode, cval=p.cval)
            self.sub = [Gaussian(gp, self.in_axes, step=self.step)]

    def expand(self):
        return self.sub

    def halo(self):
        h = {}
        for s in self.sub:
            for a, (lo, hi) in s.halo().items():
                plo, phi = h.get(a, (0, 0))
                h[a] = (plo + lo, phi + hi)
        return h

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The expanded ops one after the other (the plan runs them itself, as separate ops).

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()`` (the sum of the steps' halos); float32 or float64
        ctx : Context, unused (the steps need none: order-0 gaussian, heat steps)

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        for s in self.sub:
            x = s.apply(x)
        return x
