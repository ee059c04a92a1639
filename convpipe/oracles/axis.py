"""Ops along one axis: ``moving_average`` and ``autoregressive``."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from .base import op

def _along(dims: str, axis: str | None) -> int:
    if axis is None:
        axis = next((a for a in "tz" if a in dims), None)
        if axis is None:
            raise ValueError(f"axes {dims!r} have no t or z axis: name the axis")
    return dims.index(axis)

@op
def moving_average(x, dims, window, axis=None, align="centered", mode="reflect", cval=0.0):
    """scipy.ndimage.uniform_filter1d; trailing: the window ends at the sample (origin (window - 1) // 2).
    Non-finite input: the mean of each window by correlate1d (a running sum would carry a NaN on to
    windows that do not hold it)."""
    ax = _along(dims, axis)
    origin = 0 if align == "centered" else (int(window) - 1) // 2
    x = np.asarray(x, dtype=np.float64)
    if np.isfinite(x).all():
        return ndi.uniform_filter1d(x, int(window), axis=ax, mode=mode, cval=cval, origin=origin), dims
    w = np.full(int(window), 1.0 / int(window))
    return ndi.correlate1d(x, w, axis=ax, mode=mode, cval=cval, origin=origin), dims

@op
def autoregressive(x, dims, coefficients, axis=None):
    """scipy.signal.lfilter([1], [1, -a1, ..., -ak]) along the axis."""
    from scipy.signal import lfilter

    a = np.concatenate([[1.0], -np.asarray(coefficients, dtype=np.float64)])
    return lfilter([1.0], a, np.asarray(x, dtype=np.float64), axis=_along(dims, axis)), dims
