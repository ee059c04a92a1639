"""The Gaussian family: ``gaussian``, ``gaussian_laplace``, ``gaussian_gradient_magnitude``,
``difference_of_gaussians`` and ``unsharp_mask``, all as separable passes of scipy's own weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import engines
from ...params.local import DogParams, GaussianParams, SigmaParams, UnsharpParams
from ..base import NO_CONTEXT, Context
from .base import LocalOp, axis_sum, gaussian_kernel1d, gaussian_radius, sqrt_sum_squares


class Gaussian(LocalOp):
    name = "gaussian"
    linear = True
    Params = GaussianParams
    wants_outside = True

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes, sigma=p.sigma, order=p.order)
        self.sigma = self.per_axis(p.sigma, self.axes, "sigma")
        self.order = self.per_axis(p.order, self.axes, "order")
        if any(o < 0 or int(o) != o for o in self.order.values()):
            raise self.error("order must be a non-negative integer", "order")
        # scipy skips axes whose sigma is ~0 (order ignored there too)
        self.active = {a: s for a, s in self.sigma.items() if s > 1e-15}
        self.radius = {a: gaussian_radius(s, p.truncate) for a, s in self.active.items()}

    def halo(self):
        return {a: (r, r) for a, r in self.radius.items()}

    def shift_gain(self):  # the product of the 1-D kernels' sums (an order-2 kernel's is not 0)
        return float(np.prod([w.sum() for w, _ in self.weights(self.ax).values()]))

    def weights(self, x_axes_index):
        return {x_axes_index(a): (gaussian_kernel1d(s, int(self.order[a]), self.radius[a]), self.radius[a])
                for a, s in self.active.items()}

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """scipy.ndimage.gaussian_filter of the block, one 1-D pass per axis with sigma > 0.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()``; float32 or float64
        ctx : Context; ``ctx.outside`` for mode constant with a derivative order (scipy pads every pass)

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        w = self.weights(self.ax)
        fill = self.fill(ctx) if any(int(o) for o in self.order.values()) else None
        nd = x.ndim
        lead = {k: v for k, v in w.items() if k < nd - 2}
        if fill is None and lead and len(lead) < len(w):
            # the passes along leading axes (z) run first, as sep_correlate orders them; their halo planes
            # are cropped before the plane passes, which would filter them only to be cropped (a fifth of a
            # 16-plane tile with z sigma 1). Same passes, same order, same values.
            y = engines.sep_correlate(x, lead)
            y = self.crop(y, {a: h for a, h in self.halo().items() if self.ax(a) < nd - 2})
            rest = {k: v for k, v in w.items() if k >= nd - 2}
            return self.crop(engines.sep_correlate(y, rest), {a: h for a, h in self.halo().items()
                                                              if self.ax(a) >= nd - 2})
        return self.crop(engines.sep_correlate(x, w, fill=fill, order=sorted(w)))

    def method(self):
        return "separable"


class _GaussDerivs(LocalOp):
    """Sum over axes of Gaussian derivative filters of one input (one padding, one halo)."""

    Params = SigmaParams
    deriv_order = 2
    wants_outside = True

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes, sigma=p.sigma)
        self.sigma = self.per_axis(p.sigma, self.axes, "sigma")
        self.radius = {a: gaussian_radius(s, p.truncate) if s > 1e-15 else 0 for a, s in self.sigma.items()}

    def halo(self):
        return {a: (r, r) for a, r in self.radius.items()}

    def derivative(self, x, along: str, ctx: Context = NO_CONTEXT):
        w = {}
        for a, s in self.sigma.items():
            if s > 1e-15:
                order = self.deriv_order if a == along else 0
                w[self.ax(a)] = (gaussian_kernel1d(s, order, self.radius[a]), self.radius[a])
        return engines.sep_correlate(x, w, fill=self.fill(ctx), order=sorted(w))

    def method(self):
        return "separable"


class GaussianLaplace(_GaussDerivs):
    name = "gaussian_laplace"
    linear = True

    def shift_gain(self):  # the sum over axes of the second-derivative kernels' sums: not 0
        return float(sum(np.prod([gaussian_kernel1d(s, 2 if a == along else 0, self.radius[a]).sum()
                                  for a, s in self.sigma.items() if s > 1e-15]) for along in self.axes))

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """scipy.ndimage.gaussian_laplace: the sum over ``axes`` of the second Gaussian derivatives.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()``; float32 or float64
        ctx : Context; ``ctx.outside`` for mode constant

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        return axis_sum(self.crop(self.derivative(x, a, ctx)) for a in self.axes)


class GaussianGradientMagnitude(_GaussDerivs):
    name = "gaussian_gradient_magnitude"
    deriv_order = 1

    def shift_gain(self):  # odd kernels sum to 0 (an axis of sigma 0 has none: its "derivative" is a blur)
        return 0.0 if all(s > 1e-15 for s in self.sigma.values()) else None

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """scipy.ndimage.gaussian_gradient_magnitude: sqrt of the summed squared first derivatives.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()``; float32 or float64
        ctx : Context; ``ctx.outside`` for mode constant

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        if any(s > 1e-15 for s in self.sigma.values()):  # fresh arrays: squared and summed in place
            return self.crop(sqrt_sum_squares([self.derivative(x, a, ctx) for a in self.axes]))
        # derivative() returned x itself: not this op's to overwrite
        out = axis_sum((self.crop(self.derivative(x, a, ctx)) for a in self.axes), square=True)
        return np.sqrt(out, out=out)


class DifferenceOfGaussians(LocalOp):
    name = "difference_of_gaussians"
    linear = True
    Params = DogParams

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes, low_sigma=p.low_sigma, high_sigma=p.high_sigma)
        self.low = self.per_axis(p.low_sigma, self.axes, "low_sigma")
        hs = p.high_sigma if p.high_sigma is not None else {a: 1.6 * s for a, s in self.low.items()}
        self.high = self.per_axis(hs, self.axes, "high_sigma")
        if any(self.high[a] < self.low[a] for a in self.axes):
            raise self.error("high_sigma must be >= low_sigma on every axis", "high_sigma")
        self.radius = {a: max(gaussian_radius(self.high[a], p.truncate), gaussian_radius(self.low[a], p.truncate))
                       for a in self.axes}

    def halo(self):
        return {a: (r, r) for a, r in self.radius.items()}

    def shift_gain(self):
        def blur(sig):
            return np.prod([gaussian_kernel1d(s, 0, gaussian_radius(s, self.params.truncate)).sum()
                            for s in sig.values() if s > 1e-15])
        return float(blur(self.low) - blur(self.high))

    def _blur(self, x, sig):
        """The gaussian of ``sig`` on the part of the block its own radius needs (the block is padded by the
        larger radius), cropped to the op's output. Zero taps would turn an inf into NaN (0 * inf), where
        skimage's blur with the smaller radius never reads it."""
        w, sl = {}, [slice(None)] * x.ndim
        for a, R in self.radius.items():
            s = sig[a]
            r = gaussian_radius(s, self.params.truncate) if s > 1e-15 else 0
            sl[self.ax(a)] = slice(R - r, x.shape[self.ax(a)] - (R - r))
            if s > 1e-15:
                w[self.ax(a)] = (gaussian_kernel1d(s, 0, r), r)
        sub = x[tuple(sl)]
        y = engines.sep_correlate(sub, w)
        crop = [slice(None)] * x.ndim
        for ax, (_, r) in w.items():
            crop[ax] = slice(r, y.shape[ax] - r)
        return y[tuple(crop)]

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """skimage.filters.difference_of_gaussians: blur(low_sigma) - blur(high_sigma), each on its own radius.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()`` (the larger radius); float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        return self._blur(x, self.low) - self._blur(x, self.high)

    def method(self):
        return "separable"


class UnsharpMask(LocalOp):
    name = "unsharp_mask"
    linear = True
    Params = UnsharpParams

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes, radius=self.params.radius)
        self.sigma = self.per_axis(self.params.radius, self.axes, "radius")
        self.radius = {a: gaussian_radius(s, 4.0) if s > 1e-15 else 0 for a, s in self.sigma.items()}

    def boundary(self, axis):
        return "reflect", 0.0  # skimage's unsharp_mask blurs with mode='reflect'

    def shift_gain(self):  # x + amount * (x - blur): 1 + amount * (1 - the blur's gain)
        blur = np.prod([gaussian_kernel1d(s, 0, self.radius[a]).sum() for a, s in self.sigma.items() if s > 1e-15])
        return float(1.0 + self.params.amount * (1.0 - blur))

    def halo(self):
        return {a: (r, r) for a, r in self.radius.items()}

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """skimage.filters.unsharp_mask(preserve_range=True): x + amount * (x - gaussian(x, radius)).

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()``; float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        w = {self.ax(a): (gaussian_kernel1d(s, 0, self.radius[a]), self.radius[a])
             for a, s in self.sigma.items() if s > 1e-15}
        blurred = self.crop(engines.sep_correlate(x, w))
        core = self.crop(x)
        return core + (core - blurred) * x.dtype.type(self.params.amount)  # CuPy refuses 0-d numpy arrays

    def method(self):
        return "separable"
