"""The arithmetic of ``match_template`` and of the peak searches in feature ops, in float64.

``ncc`` is scikit-image's normalised cross-correlation (``match_template``, zero padding), computed so that no
digit is lost to an offset: the block is shifted by a whole number near its mean, the padding and the
non-finite voxels are kept out of the running sums and added back in closed form (a padding of -c, with c near
2**40, would otherwise cost every later window of a cumulative sum its digits), and non-finite voxels make NaN
exactly the positions whose window holds one (SPEC.md's non-finite rule; skimage's FFT and running sums spread a
NaN over the whole image).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.ndimage as ndi


def box_sum(a: np.ndarray, t: int, axis: int) -> np.ndarray:
    """Sums over windows of length ``t`` along ``axis`` (valid part: length n - t + 1)."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (1, 0)
    cs = np.cumsum(np.pad(a, pad), axis=axis)
    n = cs.shape[axis]
    hi = [slice(None)] * a.ndim
    lo = [slice(None)] * a.ndim
    hi[axis] = slice(t, n)
    lo[axis] = slice(0, n - t)
    return cs[tuple(hi)] - cs[tuple(lo)]


def _boxes(a: np.ndarray, tshape: Sequence[int], acted: Sequence[int]) -> np.ndarray:
    for i, t in zip(acted, tshape):
        a = box_sum(a, t, i)
    return a


def ncc(x: np.ndarray, outside: np.ndarray | None, tshape: Sequence[int], acted: Sequence[int], ssd: float,
        correlate: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """NCC for every position of the float64 block ``x`` whose template window lies in the block.

    ``outside``: where the block lies beyond the array (broadcastable to ``x``; skimage's zero padding, whatever
    ``x`` holds there); ``ssd``: the template's sum of squared deviations; ``correlate(v)``: the valid
    correlation of ``v`` with the zero-mean template over ``acted``.
    """
    n_t = float(np.prod(tshape))
    if outside is None:
        outside = np.zeros((1,) * x.ndim, dtype=bool)
    bad = ~np.isfinite(x) & ~outside
    known = ~(outside | bad)
    # a whole number near the mean: better conditioned window sums, and integer-valued images keep exact sums
    # (a flat window then has exactly zero variance -> response 0, as in skimage)
    c = float(np.round(np.mean(x, where=np.broadcast_to(known, x.shape)))) if known.any() else 0.0
    if not math.isfinite(c):
        c = 0.0
    xs = np.where(known, x - c, 0.0)
    num = correlate(xs)
    s1 = _boxes(xs, tshape, acted)
    s2 = _boxes(xs * xs, tshape, acted)
    if outside.any():
        pad = np.broadcast_to(outside, x.shape).astype(np.float64)
        npad = _boxes(pad, tshape, acted)
        # exactly 0 where a window holds no padding (an FFT-based engine leaves round-off there, times c)
        num -= np.where(npad > 0, c * correlate(pad), 0.0)
        s1 = s1 - npad * c
        s2 = s2 + npad * (c * c)
    den = s2 - s1 * s1 / n_t
    den *= ssd
    np.maximum(den, 0, out=den)
    np.sqrt(den, out=den)
    out = np.zeros(num.shape, dtype=np.float64)
    mask = den > np.finfo(np.float64).eps
    out[mask] = num[mask] / den[mask]
    if bad.any():  # NaN where the window holds a NaN/inf, the rest untouched
        out[_boxes(bad.astype(np.float64), tshape, acted) > 0] = np.nan
    return out


def window_max(a: np.ndarray, size) -> np.ndarray:
    """``maximum_filter(a, size, mode='nearest')`` with numpy's NaN rule: a window holding a NaN has the maximum
    NaN, so no voxel of it is a peak (scipy's running maximum has no rule for NaN: its answer depends on where
    the line starts, and so on the tiling)."""
    nan = np.isnan(a)
    if not nan.any():
        return ndi.maximum_filter(a, size=size, mode="nearest")
    mx = ndi.maximum_filter(np.where(nan, -np.inf, a), size=size, mode="nearest")
    mx[ndi.maximum_filter(nan, size=size, mode="nearest")] = np.nan
    return mx
