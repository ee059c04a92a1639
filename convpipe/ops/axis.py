"""Ops along one axis (time or stack order): ``moving_average`` and ``autoregressive``.

``axis`` defaults to ``t`` when the input has one, else ``z``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi

from .. import engines
from ..params.axis import AutoregressiveParams, MovingAverageParams
from .base import NO_CONTEXT, Context, Op


class _AlongAxis(Op):
    def resolve_axis(self) -> str:
        a = self.params.axis
        if a is None:
            for cand in "tz":
                if cand in self.in_axes:
                    return cand
            raise self.error(f"the input axes {self.in_axes!r} have no 't' or 'z': name the axis (axis: y, ...)",
                             "axis")
        if a not in self.in_axes:
            raise self.error(f"axis {a!r} is not one of the input axes {self.in_axes!r}", "axis")
        if a == "c":
            raise self.error("filters do not act along the channel axis 'c'", "axis")
        return a


# --------------------------------------------------------------------------- moving_average


class MovingAverage(_AlongAxis):
    """Mean over ``window`` samples along ``axis``; oracle scipy.ndimage.uniform_filter1d.

    ``centered``: the window is [t - window//2, t + (window-1) - window//2] (uniform_filter1d, origin 0).
    ``trailing``: the window ends at the sample, [t - window + 1, t] = uniform_filter1d with
    origin = (window - 1) // 2 (the largest origin scipy allows, which puts the window's last tap on t).
    A local op: halo (window//2, window-1-window//2) centred, (window-1, 0) trailing; samples before the
    first / after the last come from ``mode`` (scipy's modes, at the whole array's ends only).
    """

    name = "moving_average"
    kind = "local"
    linear = True
    Params = MovingAverageParams

    def estimate_work(self):
        """Estimate only: pad, running sum, difference, scale. ``point`` units are the calibrated point probe's
        cost over the planner's 3 ns model of it (``factor_point`` ns): 9.1 ns a voxel on the stack example's
        16 x 128 x 128 tiles against 0.58 ns units (a probe on a warm heap, convpipe.heap)."""
        return {"point": 15.0}

    def setup(self):
        self.axis = self.resolve_axis()
        self.axes = self.axis
        w = int(self.params.window)
        if self.params.align == "centered":
            self.lo, self.hi, self.origin = w // 2, w - 1 - w // 2, 0
        else:
            self.lo, self.hi, self.origin = w - 1, 0, (w - 1) // 2

    def halo(self):
        return {self.axis: (self.lo, self.hi)} if self.params.window > 1 else {}

    def shift_gain(self):  # a mean
        return 1.0

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The moving average along ``axis``.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()`` along ``axis``; float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape less the halo along ``axis``, ``x``'s dtype
        """
        w = int(self.params.window)
        if w == 1:
            return x
        ax = self.in_axes.index(self.axis)
        # the engine's own border handling never matters: the halo holds the true neighbours and is cropped
        if engines.all_finite(x):
            y = ndi.uniform_filter1d(x, w, axis=ax, mode="reflect", origin=self.origin, output=x.dtype)
        else:
            # a running sum carries a NaN/inf to the end of the block (inf - inf): the direct window sum keeps
            # it within the window, whatever the chunking
            y = ndi.correlate1d(x, np.full(w, 1.0 / w), axis=ax, mode="reflect", origin=self.origin,
                                output=x.dtype)
        sl = [slice(None)] * y.ndim
        sl[ax] = slice(self.lo, y.shape[ax] - self.hi)
        return y[tuple(sl)]

    def method(self):
        return "running sum"

    def describe(self):
        p = self.params
        return f"moving_average({p.align} window {p.window} along {self.axis}, mode {p.mode})"


# --------------------------------------------------------------------------- autoregressive


class Autoregressive(_AlongAxis):
    """y[t] = x[t] + sum_i a_i y[t-i] along ``axis``; oracle scipy.signal.lfilter([1], [1, -a1, ..., -ak]).

    Why kind ``full`` (the whole axis per task) rather than a halo: the filter is recursive, so y[t]
    depends on *every* earlier sample (an infinite impulse response). Any finite halo truncates that
    history and is only approximately right (the error decays like |pole|^halo, and not at all for a pole
    on the unit circle, e.g. a1 = 1, a running sum), so no halo can match the oracle for every input.
    With the whole axis in the block, lfilter runs from zero initial state exactly as the oracle does.
    Memory stays bounded: the planner still tiles every other axis, so a task holds
    len(axis) x tile(other axes) voxels (plus a float64 copy), never the whole array.
    """

    name = "autoregressive"
    kind = "full"
    linear = True
    Params = AutoregressiveParams

    def setup(self):
        self.axis = self.resolve_axis()
        self.axes = self.axis
        self.a = np.concatenate([[1.0], -np.asarray(self.params.coefficients, dtype=np.float64)])

    def full_axes(self):
        return self.axis

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """lfilter along ``axis`` from zero initial state, in float64.

        Parameters
        ----------
        x : array, axes ``in_axes``, whole along ``axis``; float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape, ``x``'s dtype
        """
        from scipy.signal import lfilter

        ax = self.in_axes.index(self.axis)
        y = lfilter(np.ones(1), self.a, x.astype(np.float64, copy=False), axis=ax)
        return y.astype(x.dtype, copy=False)

    def method(self):
        return "recursive (lfilter)"

    def describe(self):
        return f"autoregressive({list(self.params.coefficients)} along {self.axis})"
