"""Edge filters: ``sobel``, ``prewitt``, ``scharr`` (magnitude, components or orientation) and ``laplace``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import engines
from ...finite import is_finite
from ...params.local import EdgeParams, LaplaceParams
from ..base import NO_CONTEXT, Context, insert_axis
from .base import LocalOp, sqrt_sum_squares


def orientation(dy, dx):
    """arctan2(dy, dx) in (-pi, pi], 0 where both are 0, whatever the sign of a zero (SPEC.md).

    Engines disagree on the sign of an exactly zero derivative (OpenCV gives +0, scipy -0), and arctan2
    turns that sign into 0, pi or -pi. Adding +0.0 maps -0 to +0 (IEEE 754) and changes nothing else, so
    arctan2 then gives 0 for a zero gradient and never -pi. In place: the components are temporaries.
    """
    np.add(dy, 0.0, out=dy)
    np.add(dx, 0.0, out=dx)
    return np.arctan2(dy, dx)


class _Edge(LocalOp):
    Params = EdgeParams
    smooth: np.ndarray
    deriv = np.array([-1.0, 0.0, 1.0])
    wants_outside = True

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes)
        if self.params.output == "orientation" and len(self.axes) != 2:
            raise self.error(f"orientation needs exactly 2 axes, got {self.axes!r}", "output")
        if self.params.output == "components" and "c" in self.in_axes:
            raise self.error("components would add a 'c' axis, but the input already has one", "output")
        self.linear = self.params.output == "components"

    @property
    def out_axes(self):
        return insert_axis(self.in_axes, "c") if self.params.output == "components" else self.in_axes

    def out_extent(self, axis, n):
        return len(self.axes)

    def channel_labels(self, labels):
        """``components``: channel i is the derivative along ``axes[i]`` (``d/dy``, ``d/dx``)."""
        if self.params.output == "components":
            return [f"d/d{a}" for a in self.axes]
        return super().channel_labels(labels)

    @property
    def hides_nonfinite(self):  # arctan2(inf, x) is finite (convpipe.finite)
        return self.params.output == "orientation"

    def halo(self):
        return {a: (1, 1) for a in self.axes}

    def shift_gain(self):  # every component has the derivative [-1, 0, 1]: shift-invariant
        return 0.0

    def component(self, x, along, ctx: Context = NO_CONTEXT, *, crop: bool = True):
        w = {self.ax(a): ((self.deriv if a == along else self.smooth), 1) for a in self.axes}
        # scipy.ndimage.sobel: the derivative pass first, then smoothing along the other axes in order
        order = [self.ax(along)] + [self.ax(a) for a in self.axes if a != along]
        y = engines.sep_correlate(x, w, fill=self.fill(ctx), order=order)
        return self.crop(y) if crop else y

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The derivative along each of ``axes`` (smoothed along the others), combined by ``output``.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by one voxel along ``axes``; float32 or float64
        ctx : Context; ``ctx.outside`` for mode constant

        Returns
        -------
        array, ``x``'s dtype, ``x``'s shape less the halo along ``axes``: the magnitude, the orientation in
        (-pi, pi] (exactly two axes), or the components stacked along a new ``c`` axis (``out_axes``)
        """
        out = self.params.output
        if out == "magnitude":  # every component is a fresh array (taps on every axis): squared and summed in place
            return self.crop(sqrt_sum_squares([self.component(x, a, ctx, crop=False) for a in self.axes]))
        comps = [self.component(x, a, ctx) for a in self.axes]
        if out == "orientation":
            dy, dx = comps  # axes in tczyx order: the first plays y, the second x
            if x.dtype.itemsize < 8 and not (is_finite(dy) and is_finite(dx)) and engines.all_finite(x):
                # components of finite values overflowed: arctan2(inf, inf) would be a finite, wrong angle
                dy, dx = (self.component(x.astype(np.float64), a, ctx) for a in self.axes)
            return orientation(dy, dx).astype(x.dtype, copy=False)
        cpos = self.out_axes.index("c")
        return np.stack(comps, axis=cpos)

    def method(self):
        return "separable"


class Sobel(_Edge):
    name = "sobel"
    smooth = np.array([1.0, 2.0, 1.0])


class Prewitt(_Edge):
    name = "prewitt"
    smooth = np.array([1.0, 1.0, 1.0])


class Scharr(_Edge):
    name = "scharr"
    smooth = np.array([3.0, 10.0, 3.0]) / 16.0


class Laplace(LocalOp):
    name = "laplace"
    linear = True
    Params = LaplaceParams

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes)

    def halo(self):
        return {a: (1, 1) for a in self.axes}

    def shift_gain(self):  # [1, -2, 1] sums to 0
        return 0.0

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """scipy.ndimage.laplace: the sum over ``axes`` of the [1, -2, 1] second differences.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by one voxel along ``axes``; float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        return self.laplacian(x)

    def method(self):
        return "separable"
