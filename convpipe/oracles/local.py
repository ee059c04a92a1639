"""Local filters: scipy.ndimage's whole-array references (kernels, Gaussians, edges, rank filters, diffusion)."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from .base import insert_axis, op, per_axis, per_plane, resolve_on
from .kernels import EDGE_SMOOTH, kernel_array, normalize_kernel, orientation
from .layers import kernel_extent

def _kernel_op(fn, x, dims, kernel, axes=None, mode="reflect", cval=0.0, origin=0, normalize="none",
               temperature=1.0, method="auto", base_dir=None, extent="same", stride=1):
    k = normalize_kernel(kernel_array(kernel, base_dir), normalize, temperature)
    on = resolve_on(dims, axes, default={1: "x", 2: "yx", 3: "zyx"}.get(k.ndim, "yx"))
    if k.ndim == 1 and len(on) > 1:
        k = k.reshape((1,) * (len(on) - 1) + (-1,))
    origins = [origin] * k.ndim if isinstance(origin, int) else list(origin)
    if extent != "same" or stride != 1:  # output extents that change: .layers
        return kernel_extent(x, dims, on, k, extent, stride, mode, cval, origins, flip=fn is ndi.convolve), dims
    return per_plane(x, dims, on, lambda s: fn(s, k, mode=mode, cval=cval, origin=origins)), dims

@op
def correlate(x, dims, **p):
    return _kernel_op(ndi.correlate, x, dims, **p)

@op
def convolve(x, dims, **p):
    return _kernel_op(ndi.convolve, x, dims, **p)

@op
def gaussian(x, dims, sigma, order=0, truncate=4.0, mode="reflect", cval=0.0, axes=None):
    on = resolve_on(dims, axes, sigma, order)
    s, o = per_axis(sigma, on), per_axis(order, on)
    return per_plane(x, dims, on, lambda a: ndi.gaussian_filter(a, s, order=o, mode=mode, cval=cval,
                                                                truncate=truncate)), dims

def _box_direct(a: np.ndarray, size: tuple, mode: str, cval: float) -> np.ndarray:
    """uniform_filter as direct 1-D window sums: scipy's running sum carries a NaN/inf to the end of the line
    (inf - inf), which SPEC.md's non-finite rule forbids; for finite input the two agree to rounding."""
    for ax, s in enumerate(size):
        if int(s) > 1:
            a = ndi.correlate1d(a, np.full(int(s), 1.0 / int(s)), axis=ax, mode=mode, cval=cval)
    return a

@op
def uniform(x, dims, size, mode="reflect", cval=0.0, axes=None):
    on = resolve_on(dims, axes, size)
    s = per_axis(size, on)

    def fn(a):
        if np.isfinite(a).all():
            return ndi.uniform_filter(a, s, mode=mode, cval=cval)
        return _box_direct(a, s, mode, cval)

    return per_plane(x, dims, on, fn), dims

def edge_components(x, dims, which, axes=None, mode="reflect", cval=0.0):
    """One array per acted axis (array order): [-1, 0, 1] along it, the smoothing along the others."""
    on = resolve_on(dims, axes)
    comps = []
    for i in range(len(on)):
        def fn(a, i=i):  # the order of scipy.ndimage.sobel: derivative first, then each other axis
            out = ndi.correlate1d(a, [-1.0, 0.0, 1.0], axis=i, mode=mode, cval=cval)
            for j in range(a.ndim):
                if j != i:
                    out = ndi.correlate1d(out, EDGE_SMOOTH[which], axis=j, mode=mode, cval=cval)
            return out
        comps.append(per_plane(x, dims, on, fn))
    return comps, on

def _edge(which, x, dims, axes=None, output="magnitude", mode="reflect", cval=0.0):
    comps, _ = edge_components(x, dims, which, axes, mode, cval)
    if output == "magnitude":
        return np.sqrt(sum(c * c for c in comps)), dims
    if output == "orientation":
        if len(comps) != 2:
            raise ValueError("orientation needs exactly 2 axes")
        return orientation(comps[0], comps[1]), dims
    od = insert_axis(dims, "c")
    return np.stack(comps, axis=od.index("c")), od

@op
def sobel(x, dims, **p):
    return _edge("sobel", x, dims, **p)

@op
def prewitt(x, dims, **p):
    return _edge("prewitt", x, dims, **p)

@op
def scharr(x, dims, **p):
    return _edge("scharr", x, dims, **p)

@op
def laplace(x, dims, axes=None, mode="reflect", cval=0.0):
    on = resolve_on(dims, axes)
    return per_plane(x, dims, on, lambda a: ndi.laplace(a, mode=mode, cval=cval)), dims

@op
def gaussian_laplace(x, dims, sigma, truncate=4.0, mode="reflect", cval=0.0, axes=None):
    on = resolve_on(dims, axes, sigma)
    s = per_axis(sigma, on)
    return per_plane(x, dims, on, lambda a: ndi.gaussian_laplace(a, s, mode=mode, cval=cval,
                                                                 truncate=truncate)), dims

@op
def gaussian_gradient_magnitude(x, dims, sigma, truncate=4.0, mode="reflect", cval=0.0, axes=None):
    on = resolve_on(dims, axes, sigma)
    s = per_axis(sigma, on)
    return per_plane(x, dims, on, lambda a: ndi.gaussian_gradient_magnitude(a, s, mode=mode, cval=cval,
                                                                            truncate=truncate)), dims

@op
def difference_of_gaussians(x, dims, low_sigma, high_sigma=None, mode="nearest", cval=0.0, truncate=4.0,
                            axes=None):
    """skimage.filters.difference_of_gaussians on float input: gaussian(low) - gaussian(high), one mode."""
    on = resolve_on(dims, axes, low_sigma, high_sigma)
    lo = per_axis(low_sigma, on)
    hi = tuple(1.6 * s for s in lo) if high_sigma is None else per_axis(high_sigma, on)
    return per_plane(x, dims, on, lambda a: ndi.gaussian_filter(a, lo, mode=mode, cval=cval, truncate=truncate)
                     - ndi.gaussian_filter(a, hi, mode=mode, cval=cval, truncate=truncate)), dims

@op
def unsharp_mask(x, dims, radius=1.0, amount=1.0, axes=None):
    """skimage.filters.unsharp_mask(preserve_range=True) on float input: x + (x - gaussian(x, radius)) * amount,
    the blur with mode 'reflect'."""
    on = resolve_on(dims, axes, radius)
    r = per_axis(radius, on)
    return per_plane(x, dims, on, lambda a: a + (a - ndi.gaussian_filter(a, r, mode="reflect")) * amount), dims

NUMPY_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}

def pad(a: np.ndarray, pads: list[tuple[int, int]], mode: str, cval: float = 0.0) -> np.ndarray:
    """``a`` extended as scipy.ndimage's ``mode`` extends it (numpy.pad spells the modes differently)."""
    if mode == "constant":
        return np.pad(a, pads, mode="constant", constant_values=cval)
    return np.pad(a, pads, mode=NUMPY_PAD[mode])

def rank_filter(a: np.ndarray, size: tuple, kind: str, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """scipy.ndimage.median_filter / minimum_filter / maximum_filter with a box footprint, by brute force:
    pad by scipy's mode, take every window, pick rank 0 / N // 2 / N - 1 of the N sorted values (scipy's
    median of an even window is the upper middle). Used instead of calling scipy because scipy 1.17's 1-D
    rank filter path returns garbage in mode 'mirror' on lines shorter than the window
    (``median_filter([0.5], 3, mode='mirror')`` is 1.6e-322)."""
    size = tuple(int(s) for s in size)
    p = pad(a, [(s // 2, s - 1 - s // 2) for s in size], mode, cval)
    w = np.lib.stride_tricks.sliding_window_view(p, size).reshape(a.shape + (-1,))
    n = w.shape[-1]
    if kind == "minimum":
        return w.min(axis=-1)
    if kind == "maximum":
        return w.max(axis=-1)
    nan = np.isnan(w)
    if not nan.any():
        return np.partition(w, n // 2, axis=-1)[..., n // 2]
    # SPEC.md's non-finite rule, numpy's for max / min / median: a window holding a NaN gives NaN
    return np.where(nan.any(axis=-1), np.nan, np.partition(np.where(nan, 0.0, w), n // 2, axis=-1)[..., n // 2])

def _rank(kind, x, dims, size, mode="reflect", cval=0.0, axes=None):
    on = resolve_on(dims, axes, size)
    s = per_axis(size, on)
    return per_plane(x, dims, on, lambda a: rank_filter(a, s, kind, mode, cval)), dims

@op
def median(x, dims, **p):
    return _rank("median", x, dims, **p)

@op
def minimum(x, dims, **p):
    return _rank("minimum", x, dims, **p)

@op
def maximum(x, dims, **p):
    return _rank("maximum", x, dims, **p)

@op
def diffusion(x, dims, diffusivity=None, time=None, steps=None, dt=None, mode="reflect", cval=0.0, axes=None):
    on = resolve_on(dims, axes)
    if steps is None:
        sigma = float(np.sqrt(2.0 * diffusivity * time))
        return per_plane(x, dims, on, lambda a: ndi.gaussian_filter(a, sigma, mode=mode, cval=cval)), dims

    def heat(a):
        u = a.copy()
        for _ in range(steps):
            u = u + dt * ndi.laplace(u, mode=mode, cval=cval)
        return u

    return per_plane(x, dims, on, heat), dims
