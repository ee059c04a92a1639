"""The whole-array references of SPEC.md, one per op: what every result of convpipe must equal.

Each op has one function ``opname(x, dims, **params) -> (y, out_dims)`` taking the *spec's* parameters
(same names and defaults; parameters that only steer how convpipe computes, such as ``method`` or
``table``, are accepted and ignored) and returning the reference applied to the whole array in float64,
independently to every sub-array over the axes the op does not act on. Ops that emit a table also have
``TABLES[opname](x, dims, **params) -> {column: values}`` (one column per axis letter in global voxel
coordinates, plus the named values).

Axis order (SPEC.md: every op is exact for every order of the input's axes): every function transposes
its input to canonical ``tczyx`` order, applies the reference there, and transposes the result back to the
input's order (an axis the op adds, ``c``, goes before the first input axis that comes after it in
``tczyx``). So a kernel's dimensions and an orientation's (d/dy, d/dx) follow the axis letters.

This module uses numpy and scipy only (scikit-image for ``blobs`` and ``match_template``, imported when
they run) and imports nothing of convpipe: the oracle must not share code with what it checks. The
tests and ``convpipe verify`` both use it.

``oracle(steps, x, dims)`` chains the references; ``assert_conforms`` applies the contract's tolerance:

    max|out - oracle| <= 1e-5 * max(1, max|oracle|)   in float32   (1e-4 for FFT methods)
    max|out - oracle| <= 1e-10 * max(1, max|oracle|)  in float64   (1e-8 for FFT methods)
"""

from __future__ import annotations

import builtins
import functools
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi

AXES_ORDER = "tczyx"
MODES = ("reflect", "mirror", "nearest", "wrap", "constant")
TOL = {"float32": 1e-5, "float64": 1e-10}
TOL_FFT = {"float32": 1e-4, "float64": 1e-8}
#: the SPEC's parameter names of ops whose reference is computed by FFT (their tolerance is TOL_FFT)
SPECTRAL_OPS = ("fft_filter", "butterworth", "log_spectrum")
#: ops whose reference needs scikit-image (everything else is numpy / scipy)
NEEDS_SKIMAGE = ("blobs", "match_template")


# --------------------------------------------------------------------------- axes


def default_dims(ndim: int) -> str:
    return AXES_ORDER[-ndim:]


def canonical(dims: str) -> str:
    return "".join(a for a in AXES_ORDER if a in dims)


def insert_axis(dims: str, letter: str) -> str:
    """``letter`` inserted before the first axis of ``dims`` that comes after it in 'tczyx'."""
    rank = AXES_ORDER.index(letter)
    i = 0
    while i < len(dims) and AXES_ORDER.index(dims[i]) < rank:
        i += 1
    return dims[:i] + letter + dims[i:]


def output_dims(in_dims: str, out_letters: str) -> str:
    """The order of a result: the input's order for shared axes, a new axis placed by insert_axis."""
    d = "".join(a for a in in_dims if a in out_letters)
    for a in out_letters:
        if a not in d:
            d = insert_axis(d, a)
    return d


def transpose_to(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    return np.transpose(x, [src.index(a) for a in dst])


def resolve_on(dims: str, axes: str | None = None, *per_axis: Any, default: str = "yx") -> str:
    """The axes an op acts on, in the order of ``dims``: explicit ``axes``, else the keys of a per-axis map,
    else ``default`` (restricted to the input's axes; the trailing axes when none of ``default`` is present)."""
    if axes is None:
        for v in per_axis:
            if isinstance(v, dict):
                return "".join(a for a in dims if a in v)
        on = "".join(a for a in default if a in dims)
        return on or dims[-len(default):]
    return "".join(a for a in dims if a in axes)


def per_axis(value: Any, on: str) -> tuple:
    if isinstance(value, dict):
        return tuple(value[a] for a in on)
    return tuple(value for _ in on)


def per_plane(x: np.ndarray, dims: str, on: str, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``fn`` to every sub-array of ``x`` over the axes ``on`` (in array order), independently."""
    x = np.asarray(x, dtype=np.float64)
    idx = [dims.index(a) for a in on]
    k = len(idx)
    moved = np.moveaxis(x, idx, list(range(x.ndim - k, x.ndim)))
    out = np.empty(moved.shape, dtype=np.float64)
    for lead in np.ndindex(*moved.shape[: x.ndim - k]):
        out[lead] = fn(np.ascontiguousarray(moved[lead]))
    return np.moveaxis(out, list(range(x.ndim - k, x.ndim)), idx)


def planes(dims: str, on: str, shape: tuple[int, ...]):
    """(index tuple, {other axis: index}) of every sub-array over ``on``."""
    others = [i for i, a in enumerate(dims) if a not in on]
    for lead in np.ndindex(*[shape[i] for i in others]):
        sl = [slice(None)] * len(dims)
        for i, j in zip(others, lead):
            sl[i] = j
        yield tuple(sl), {dims[i]: j for i, j in zip(others, lead)}


OPS: dict[str, Callable[..., tuple[np.ndarray, str]]] = {}
TABLES: dict[str, Callable[..., dict[str, np.ndarray]]] = {}


def _canonical_call(fn: Callable, x: Any, dims: str, **params: Any):
    x = np.asarray(x)
    cd = canonical(dims)
    res = fn(transpose_to(x, dims, cd) if cd != dims else x, cd, **params)
    if isinstance(res, dict):  # a table: columns by letter, no order
        return res
    y, od = res
    sd = output_dims(dims, od)
    return (transpose_to(y, od, sd) if sd != od else y), sd


def op(fn: Callable) -> Callable:
    """Register ``fn`` as the reference of the op of its name, computed in canonical axis order."""
    @functools.wraps(fn)
    def wrapper(x, dims, **params):
        return _canonical_call(fn, x, dims, **params)

    OPS[fn.__name__] = wrapper
    return wrapper


def table(name: str) -> Callable:
    """Register ``fn`` as the table reference of op ``name`` (computed in canonical order; columns by letter)."""
    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(x, dims, **params):
            return _canonical_call(fn, x, dims, **params)

        TABLES[name] = wrapper
        return wrapper

    return deco


# --------------------------------------------------------------------------- kernels (independent)


def _sep_outer(factors: list[np.ndarray]) -> np.ndarray:
    k = np.asarray(factors[0], dtype=float)
    for f in factors[1:]:
        k = np.multiply.outer(k, np.asarray(f, dtype=float))
    return k


def named_kernel(name: str, **p: Any) -> np.ndarray:
    """Reference definitions of the named kernels (scipy / scikit-image's formulas)."""
    ndim = int(p.get("ndim", 2))
    if name == "gaussian":
        sigma = float(p.get("sigma", 1.0))
        r = p.get("radius")
        r = int(float(p.get("truncate", 4.0)) * sigma + 0.5) if r is None else int(r)
        t = np.arange(-r, r + 1, dtype=float)
        g = np.exp(-0.5 * t * t / sigma**2)
        return _sep_outer([g / g.sum()] * ndim)
    if name == "box":
        s = int(p.get("size", 3))
        return np.full((s,) * ndim, 1.0 / s**ndim)
    if name in ("sobel", "prewitt", "scharr"):
        axis = p.get("axis", "x")
        ax = {"x": ndim - 1, "y": ndim - 2, "z": ndim - 3}[axis] if isinstance(axis, str) else int(axis)
        return _sep_outer([[-1.0, 0.0, 1.0] if d == ax else EDGE_SMOOTH[name] for d in range(ndim)])
    if name == "laplace":  # the response of scipy.ndimage.laplace to a unit impulse (symmetric kernel)
        d = np.zeros((3,) * ndim)
        d[(1,) * ndim] = 1.0
        return ndi.laplace(d, mode="constant")
    if name == "log":
        sigma = float(p.get("sigma", 1.0))
        r = int(float(p.get("truncate", 4.0)) * sigma + 0.5)
        g = np.meshgrid(*([np.arange(-r, r + 1, dtype=float)] * ndim), indexing="ij")
        r2 = sum(v * v for v in g)
        k = (r2 - ndim * sigma**2) / sigma**4 * np.exp(-r2 / (2 * sigma**2))
        return k - k.mean()
    if name == "gabor":  # the real part of skimage.filters.gabor_kernel, on a square grid of radius ceil(3 sigma)
        f = float(p.get("frequency", 0.1))
        theta = float(p.get("theta", 0.0))
        sigma = float(p["sigma"]) if p.get("sigma") is not None else 0.56 / f
        r = int(np.ceil(3 * sigma)) if p.get("radius") is None else int(p["radius"])
        y, x = np.meshgrid(np.arange(-r, r + 1.0), np.arange(-r, r + 1.0), indexing="ij")
        rotx = x * np.cos(theta) + y * np.sin(theta)
        roty = -x * np.sin(theta) + y * np.cos(theta)
        g = np.exp(-0.5 * (rotx**2 / sigma**2 + roty**2 / sigma**2)) / (2 * np.pi * sigma * sigma)
        return g * np.cos(2 * np.pi * f * rotx + float(p.get("offset", 0.0)))
    if name == "sharpen":
        return np.array([[0.0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    if name == "emboss":
        return np.array([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]])
    if name == "disk":  # skimage.morphology.disk / ball: the grid points within the radius
        r = int(p.get("radius", 2))
        g = np.meshgrid(*([np.arange(-r, r + 1)] * ndim), indexing="ij")
        fp = (sum(v * v for v in g) <= r * r).astype(float)
        return fp / fp.sum()
    raise KeyError(name)


def kernel_array(src: Any, base_dir: Path | None = None) -> np.ndarray:
    """A kernel source of a spec (inline list, ``.npy`` path, named kernel) as a float64 array."""
    if isinstance(src, dict):
        src = dict(src)
        return named_kernel(src.pop("name"), **src)
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return np.load(path).astype(float)
    return np.array(src, dtype=float)


def normalize_kernel(k: np.ndarray, how: str = "none", temperature: float = 1.0) -> np.ndarray:
    if how == "none":
        return k
    if how == "sum":
        return k / k.sum()
    if how == "l1":
        return k / np.abs(k).sum()
    if how == "softmax":
        z = k / temperature
        e = np.exp(z - z.max())
        return e / e.sum()
    raise ValueError(how)


def orientation(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """SPEC.md: arctan2(dy, dx) in (-pi, pi], and 0 where both are 0."""
    t = np.arctan2(dy, dx)
    t = np.where(t <= -np.pi, np.pi, t)
    return np.where((dy == 0) & (dx == 0), 0.0, t)


# --------------------------------------------------------------------------- local filters


def _kernel_op(fn, x, dims, kernel, axes=None, mode="reflect", cval=0.0, origin=0, normalize="none",
               temperature=1.0, method="auto", base_dir=None):
    k = normalize_kernel(kernel_array(kernel, base_dir), normalize, temperature)
    on = resolve_on(dims, axes, default={1: "x", 2: "yx", 3: "zyx"}.get(k.ndim, "yx"))
    if k.ndim == 1 and len(on) > 1:
        k = k.reshape((1,) * (len(on) - 1) + (-1,))
    origins = [origin] * k.ndim if isinstance(origin, int) else list(origin)
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


EDGE_SMOOTH = {"sobel": [1.0, 2.0, 1.0], "prewitt": [1.0, 1.0, 1.0], "scharr": [3 / 16, 10 / 16, 3 / 16]}


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


# --------------------------------------------------------------------------- stochastic


_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(_M1)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def _alias(p: np.ndarray) -> tuple[list[int], list[int]]:
    """Walker/Vose alias table in exact integers: weights floor(p_i K 2^32), remainder on the largest."""
    k, one = p.size, 1 << 32
    w = [math.floor(float(v) * k * one) for v in p]
    w[int(np.argmax(p))] += k * one - sum(w)
    thr, alias = [one] * k, list(range(k))
    small = [i for i in range(k) if w[i] < one]
    large = [i for i in range(k) if w[i] >= one]
    while small and large:
        s, g = small.pop(), large[-1]
        thr[s], alias[s] = w[s], g
        w[g] -= one - w[s]
        if w[g] < one:
            large.pop()
            small.append(g)
    for i in small + large:
        thr[i] = one
    return thr, alias


@op
def stochastic(x, dims, kernel, axes=None, origin=0, normalize="none", temperature=1.0, seed=0,
               mode="reflect", cval=0.0, base_dir=None, offset=None):
    """Each voxel copies the input at an offset drawn from the kernel's probabilities. The draw at global
    coordinates (c_0, ..., c_n) over every axis in tczyx order: h_0 = mix(seed * G + G),
    h_(j+1) = mix(h_j + (c_j + 1) G) (splitmix64's finaliser, G its golden gamma, uint64 arithmetic); the
    high 32 bits of h pick an alias-table bucket, the low 32 bits keep it or take its alias.
    ``offset`` ({axis: start}): ``x`` is a part of the array starting there (its draws are the array's)."""
    k = kernel_array(kernel, base_dir)
    if normalize != "none":
        k = normalize_kernel(k, normalize, temperature)
    prob = k / k.sum()
    on = resolve_on(dims, axes, default={1: "x", 2: "yx", 3: "zyx"}.get(prob.ndim, "yx"))
    if prob.ndim == 1 and len(on) > 1:
        prob = prob.reshape((1,) * (len(on) - 1) + (-1,))
    origins = [origin] * prob.ndim if isinstance(origin, int) else list(origin)
    centers = [s // 2 + o for s, o in zip(prob.shape, origins)]
    thr, alias = _alias(prob.ravel())
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        h = _mix(np.array([(seed * _GOLDEN + _GOLDEN) & _MASK64], dtype=np.uint64)).reshape((1,) * x.ndim)
        for j, n in enumerate(x.shape):
            start = int((offset or {}).get(dims[j], 0))
            c = ((np.arange(start, start + n, dtype=np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN))
            h = _mix(h + c.reshape([-1 if i == j else 1 for i in range(x.ndim)]))
        h = np.broadcast_to(h, x.shape)
        bucket = ((h >> np.uint64(32)) * np.uint64(prob.size)) >> np.uint64(32)
    bucket = bucket.astype(np.intp)
    low = h & np.uint64(0xFFFFFFFF)
    choice = np.where(low < np.asarray(thr, dtype=np.uint64)[bucket], bucket, np.asarray(alias)[bucket])
    offsets = np.unravel_index(choice, prob.shape)  # per kernel axis: the drawn tap
    pads = [(0, 0)] * x.ndim
    for a, c, s in zip(on, centers, prob.shape):
        pads[dims.index(a)] = (c, s - 1 - c)
    xp = pad(x, pads, mode, cval)
    idx = list(np.indices(x.shape))
    for a, off in zip(on, offsets):
        i = dims.index(a)
        idx[i] = idx[i] + off  # padded position = output position - centre + tap + centre
    return xp[tuple(idx)], dims


# --------------------------------------------------------------------------- along one axis


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


# --------------------------------------------------------------------------- spectral, per plane


def radius_grid(shape: tuple[int, ...]) -> np.ndarray:
    """r = sqrt(sum_i (f_i / 0.5)^2), f_i from numpy.fft.fftfreq, on the full grid of ``shape``."""
    f = np.meshgrid(*[np.fft.fftfreq(n) / 0.5 for n in shape], indexing="ij")
    return np.sqrt(sum(g * g for g in f))


def _lowpass(r, c, shape, order):
    if shape == "ideal":
        return (r <= c).astype(float)
    if shape == "gaussian":
        return np.exp(-r ** 2 / (2 * c ** 2))
    return 1 / (1 + (r / c) ** (2 * order))


@op
def fft_filter(x, dims, cutoff, kind="lowpass", shape="ideal", order=2.0, axes=None):
    """numpy.fft.fftn of each plane x the radial mask, inverse, real part."""
    on = resolve_on(dims, axes)
    cut = cutoff if isinstance(cutoff, list) else [cutoff]

    def f(a):
        r = radius_grid(a.shape)
        if kind == "lowpass":
            m = _lowpass(r, cut[0], shape, order)
        elif kind == "highpass":
            m = 1 - _lowpass(r, cut[0], shape, order)
        else:
            m = _lowpass(r, cut[1], shape, order) * (1 - _lowpass(r, cut[0], shape, order))
        return np.real(np.fft.ifftn(np.fft.fftn(a) * m))

    return per_plane(x, dims, on, f), dims


@op
def butterworth(x, dims, cutoff_frequency_ratio=0.005, high_pass=True, order=2.0, squared_butterworth=True,
                npad=0, axes=None):
    """skimage.filters.butterworth of each plane (its formula: edge padding by npad, the n-D Butterworth
    weights of the unshifted frequency grid, the real part of the inverse FFT)."""
    on = resolve_on(dims, axes)

    def f(a):
        a = np.pad(a, npad, mode="edge") if npad else a
        ranges = [np.fft.ifftshift((np.arange(-(d - 1) // 2, (d - 1) // 2 + 1) / (d * cutoff_frequency_ratio))
                                   ** 2) for d in a.shape]
        q2 = np.power(functools.reduce(np.add, np.meshgrid(*ranges, indexing="ij", sparse=True)), order)
        w = 1 / (1 + q2)
        if high_pass:
            w = w * q2
        if not squared_butterworth:
            w = np.sqrt(w)
        y = np.real(np.fft.ifftn(np.fft.fftn(a) * w))
        return y[tuple(slice(npad, n - npad) for n in y.shape)] if npad else y

    return per_plane(x, dims, on, f), dims


@op
def log_spectrum(x, dims, axes=None):
    on = resolve_on(dims, axes)
    return per_plane(x, dims, on, lambda a: np.log1p(np.abs(np.fft.fftshift(np.fft.fftn(a))))), dims


# --------------------------------------------------------------------------- point and global ops


@op
def astype(x, dims, dtype):
    dt = np.dtype(dtype)
    x = np.asarray(x)
    if dt.kind in "iu" and x.dtype.kind == "f":
        info = np.iinfo(dt)
        x = np.clip(np.nan_to_num(x, nan=0.0), info.min, info.max)
    return x.astype(dt), dims


@op
def scale(x, dims, factor=1.0, offset=0.0):
    return np.asarray(x, dtype=np.float64) * factor + offset, dims


@op
def clip(x, dims, min=None, max=None):
    return np.clip(np.asarray(x, dtype=np.float64), min, max), dims


@op
def abs(x, dims):
    return np.abs(np.asarray(x, dtype=np.float64)), dims


@op
def log1p(x, dims):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log1p(np.asarray(x, dtype=np.float64)), dims


@op
def sqrt(x, dims):
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.asarray(x, dtype=np.float64)), dims


@op
def threshold(x, dims, value=None, method=None):
    """x > value; with ``method``, value = skimage.filters.threshold_<method> of the whole array as stored."""
    if method is not None:
        from .oracles_objects import auto_threshold

        value = auto_threshold(x, method)
    return (np.asarray(x) > value).astype(np.uint8), dims


@op
def zscore(x, dims):
    """(x - mean) / std of the whole array, population std, float64 statistics (std 0: x - mean)."""
    v = np.asarray(x, dtype=np.float64)
    s = float(np.std(v))
    return (v - float(np.mean(v))) / (s if s != 0 else 1.0), dims


@op
def rescale(x, dims, in_range=None, percentiles=None, out_range=(0.0, 1.0)):
    """skimage.exposure.rescale_intensity on float input: clip to in_range, map linearly onto out_range
    (a degenerate in_range: clip to out_range); in_range = numpy.percentile (linear) or min/max of the array."""
    v = np.asarray(x, dtype=np.float64)
    if in_range is not None:
        lo, hi = (float(a) for a in in_range)
    elif percentiles is not None:
        lo, hi = (float(a) for a in np.percentile(v, percentiles))
    else:
        lo, hi = float(np.min(v)), float(np.max(v))
    omin, omax = (float(a) for a in out_range)
    v = np.clip(v, lo, hi)
    if lo == hi:
        return np.clip(v, omin, omax), dims
    return (v - lo) / (hi - lo) * (omax - omin) + omin, dims


POINT_OPS = ("astype", "scale", "clip", "abs", "log1p", "sqrt", "threshold")
GLOBAL_OPS = ("zscore", "rescale")
#: the local filters of SPEC.md's first table (scipy.ndimage / scikit-image references with a halo)
LOCAL_OPS = ("correlate", "convolve", "gaussian", "uniform", "sobel", "prewitt", "scharr", "laplace",
             "gaussian_laplace", "gaussian_gradient_magnitude", "difference_of_gaussians", "unsharp_mask",
             "median", "minimum", "maximum", "diffusion")


# --------------------------------------------------------------------------- features


def _rows(hit: np.ndarray, dims: str) -> dict[str, np.ndarray]:
    idx = np.nonzero(hit)
    return {a: idx[i].astype(np.int64) for i, a in enumerate(dims)}


@op
def peaks(x, dims, radius, threshold=0.0, axes=None, table=None):
    return np.asarray(x), dims  # the image passes through


@table("peaks")
def peaks_table(x, dims, radius, threshold=0.0, axes=None, table=None):
    """Every voxel where value == maximum_filter(size 2 radius + 1 over axes, mode nearest) and
    value > threshold, on the stored values; columns: axes..., value."""
    on = resolve_on(dims, axes)
    v = np.asarray(x)
    size = [2 * radius + 1 if a in on else 1 for a in dims]
    hit = (v == ndi.maximum_filter(v, size=size, mode="nearest")) & (v > threshold)
    cols = _rows(hit, dims)
    cols["value"] = v[hit].astype(np.float64)
    return cols


def bank_kernels(kernels=None, gabor=None, normalize="none", temperature=1.0, base_dir=None) -> list[np.ndarray]:
    """filter_bank's kernels in channel order (a gabor bank: frequency-major)."""
    if kernels is not None:
        return [normalize_kernel(kernel_array(k, base_dir), normalize, temperature) for k in kernels]
    g = dict(gabor or {})
    n = g.get("orientations", 4)
    thetas = [k * math.pi / n for k in range(n)] if isinstance(n, int) else [float(t) for t in n]
    fr = g.get("frequencies", [0.1, 0.2])
    freqs = [float(f) for f in (fr if isinstance(fr, list) else [fr])]
    return [normalize_kernel(named_kernel("gabor", frequency=f, theta=t, sigma=g.get("sigma"),
                                          radius=g.get("radius"), offset=g.get("offset", 0.0)),
                             normalize, temperature) for f in freqs for t in thetas]


@op
def filter_bank(x, dims, kernels=None, gabor=None, axes=None, mode="reflect", cval=0.0, normalize="none",
                temperature=1.0, method="auto", base_dir=None):
    """Channel i = scipy.ndimage.correlate with kernel i (same mode and cval); adds a c axis."""
    ks = bank_kernels(kernels, gabor, normalize, temperature, base_dir)
    outs = [correlate(x, dims, kernel=k, axes=axes, mode=mode, cval=cval)[0] for k in ks]
    od = insert_axis(dims, "c")
    return np.stack(outs, axis=od.index("c")), od


_BLOB_PARAMS = ("min_sigma", "max_sigma", "num_sigma", "threshold", "overlap", "log_scale", "threshold_rel",
                "exclude_border")


@op
def blobs(x, dims, **p):
    return np.asarray(x), dims


@table("blobs")
def blobs_table(x, dims, axes=None, table=None, **p):
    """skimage.feature.blob_log on every plane over axes; columns: every axis, sigma."""
    from skimage.feature import blob_log

    on = resolve_on(dims, axes)
    kw = {k: v for k, v in p.items() if k in _BLOB_PARAMS}
    v = np.asarray(x, dtype=np.float64)
    cols: dict[str, list] = {a: [] for a in dims}
    cols["sigma"] = []
    for sl, fixed in planes(dims, on, v.shape):
        for b in blob_log(v[sl], **kw):
            for a in dims:
                cols[a].append(int(fixed[a]) if a in fixed else int(round(b[on.index(a)])))
            cols["sigma"].append(float(b[-1]))
    return {k: np.asarray(c, dtype=np.float64 if k == "sigma" else np.int64) for k, c in cols.items()}


def template_array(template, dims: str, axes: str | None = None, source=None, base_dir=None
                   ) -> tuple[np.ndarray, str]:
    """match_template's template and the axes it spans (tczyx order): a kernel source, whose dimensions
    follow ``axes`` (default yx / zyx), or ``{crop: ...}`` of ``source = (pipeline input, its dims)``."""
    if isinstance(template, dict) and "crop" in template:
        if source is None:
            raise ValueError("a crop template needs the pipeline's input (source=)")
        x0, d0 = source
        crop = template["crop"]
        sel = tuple(slice(*crop[a]) if isinstance(crop.get(a), list) else crop.get(a, 0) for a in d0)
        spans = "".join(a for a in d0 if isinstance(crop.get(a), list))
        t = np.asarray(x0[sel], dtype=np.float64)  # x0 may be a Zarr array: read the crop only
        return transpose_to(t, spans, canonical(spans)), canonical(spans)
    t = kernel_array(template, base_dir)
    return t, resolve_on(dims, axes, default={2: "yx", 3: "zyx"}[t.ndim])


@op
def match_template(x, dims, template, axes=None, table=None, radius=3, threshold=0.5, method="auto",
                   source=None, base_dir=None):
    """skimage.feature.match_template(plane, template, pad_input=True) on every plane."""
    from skimage.feature import match_template as mt

    t, on = template_array(template, dims, axes, source, base_dir)
    return per_plane(x, dims, on, lambda a: mt(a, t, pad_input=True)), dims


@table("match_template")
def match_template_table(x, dims, template, axes=None, table=None, radius=3, threshold=0.5, method="auto",
                         source=None, base_dir=None):
    """The correlation's peaks as ``peaks`` finds them (maximum filter 2 radius + 1 over axes, nearest)."""
    ncc, _ = match_template(x, dims, template=template, axes=axes, source=source, base_dir=base_dir)
    _, on = template_array(template, dims, axes, source, base_dir)
    return peaks_table(ncc, dims, radius=radius, threshold=threshold, axes=on)


@op
def stats(x, dims, **p):
    return np.asarray(x), dims


_METRICS = ("count", "mean", "std", "min", "max", "sum", "energy")


def _region_stats(v: np.ndarray, metrics, on_idx, padded: np.ndarray | None, hist: dict | None,
                  bands: list | None) -> dict[str, float]:
    out = {"count": v.size, "mean": np.mean(v) if v.size else np.nan, "std": np.std(v) if v.size else np.nan,
           "min": np.min(v) if v.size else np.nan, "max": np.max(v) if v.size else np.nan,
           "sum": np.sum(v), "energy": np.sum(v * v)}
    res = {m: out[m] for m in metrics}
    if hist is not None:
        dy, dx = padded
        theta = orientation(dy, dx)
        w = np.hypot(dy, dx) if hist.get("weight", "magnitude") == "magnitude" else None
        h, _ = np.histogram(theta, bins=int(hist.get("bins", 8)), range=(-np.pi, np.pi), weights=w)
        res.update({f"orientation_{i}": float(b) for i, b in enumerate(h)})
    if bands is not None:
        power = np.abs(np.fft.fftn(v, axes=on_idx)) ** 2 / float(np.prod([v.shape[i] for i in on_idx]))
        f = np.meshgrid(*[np.fft.fftfreq(v.shape[i]) / 0.5 if i in on_idx else np.zeros(v.shape[i])
                          for i in range(v.ndim)], indexing="ij")
        r = np.sqrt(sum(g * g for g in f))
        res.update({f"band_{i}": float(power[(r >= lo) & (r < hi)].sum())
                    for i, (lo, hi) in enumerate(itertools.pairwise(bands))})
    return res


@table("stats")
def stats_table(x, dims, per="all", metrics=_METRICS, orientation_histogram=None, spectral_bands=None,
                axes=None, mode="reflect", cval=0.0, table=None, tile=None):
    """numpy in float64 of the stored values, per plane (one row per index of the other axes), per tile
    (``tile``: the work tile per axis; columns a (start) and a_stop) or over all. orientation_histogram:
    histogram of the orientation of (sobel along the first axis, along the second) per plane over [-pi, pi]
    (weighted by the gradient magnitude, or counts); spectral_bands: sum of |FFT|^2 / N over each band of
    fft_filter's radius."""
    on = resolve_on(dims, axes)
    v = np.asarray(x, dtype=np.float64)
    grads = None
    if orientation_histogram is not None:
        comps, _ = edge_components(v, dims, "sobel", on, mode, cval)
        grads = np.stack(comps)
    on_idx = [dims.index(a) for a in on]
    regions: list[tuple[dict, tuple]] = []
    if per == "all":
        regions.append(({}, (slice(None),) * v.ndim))
    elif per == "plane":
        for sl, fixed in planes(dims, on, v.shape):
            regions.append((dict(fixed), tuple(slice(j, j + 1) if not isinstance(j, slice) else j for j in sl)))
    else:
        grid = [range(0, n, int(tile.get(a, n))) for a, n in zip(dims, v.shape)]
        for starts in itertools.product(*grid):
            sl = tuple(slice(s, min(s + int(tile.get(a, n)), n)) for s, a, n in zip(starts, dims, v.shape))
            key = {}
            for a, s in zip(dims, sl):
                key[a], key[f"{a}_stop"] = s.start, s.stop
            regions.append((key, sl))
    rows: dict[str, list] = {}
    for key, sl in regions:
        g = grads[(slice(None),) + sl] if grads is not None else (None, None)
        r = _region_stats(v[sl], list(metrics), on_idx, g, orientation_histogram, spectral_bands)
        for k, val in {**key, **r}.items():
            rows.setdefault(k, []).append(val)
    return {k: np.asarray(c, dtype=np.int64 if (k in dims or k.endswith("_stop") or k == "count") else np.float64)
            for k, c in rows.items()}


# --------------------------------------------------------------------------- chains


def step_parts(step: dict | str) -> tuple[str, dict]:
    if isinstance(step, str):
        return step, {}
    (name, params), = step.items()
    return name, dict(params or {})


_SOURCE_OPS = ("match_template",)  # ops that may read the pipeline's input (a crop template)
_FILE_OPS = ("correlate", "convolve", "filter_bank", "stochastic", "match_template")  # kernel paths


def oracle(steps: list, x: np.ndarray, dims: str | None = None, base_dir: Path | None = None,
           tables: dict | None = None, tile: dict | None = None, source: tuple | None = None
           ) -> tuple[np.ndarray, str]:
    """The chain of references on the whole array (float64 throughout, integer inputs cast first).

    ``tables`` (a dict) receives ``{step index: columns}`` for steps that emit a table; ``tile`` (the run's
    work tile per axis letter) is needed for ``stats`` per tile; ``source`` = (the pipeline's input, its
    dims) for a ``match_template`` crop when ``x`` is only a part of it (default: ``x`` itself).
    """
    dims = dims or default_dims(np.ndim(x))
    source = source or (np.asarray(x), dims)
    u = np.asarray(x)
    if u.dtype.kind not in "biuf":
        raise TypeError(f"cannot compute on {u.dtype}")
    for i, st in enumerate(steps):
        name, params = step_parts(st)
        if name in _FILE_OPS and base_dir is not None:
            params["base_dir"] = base_dir
        if name in _SOURCE_OPS:
            params["source"] = source
        if tables is not None and name in TABLES and params.get("table"):
            tp = dict(params, tile=tile) if name == "stats" else params
            tables[i] = TABLES[name](u, dims, **tp)
        # every op sees float64, except point ops (astype's exact cast) and tables of stored values
        if name not in POINT_OPS and u.dtype != np.float64 and name not in ("peaks", "stats", "blobs"):
            u = u.astype(np.float64)
        u, dims = OPS[name](u, dims, **params)
    return u, dims


def fft_based(name: str, params: dict, base_dir: Path | None = None) -> bool:
    """Whether SPEC.md's FFT tolerance applies to a step: spectral ops, ``method: fft``, or ``auto`` with
    a kernel large enough that convpipe may pick the FFT (from 64 taps)."""
    if name in SPECTRAL_OPS:
        return True
    if name not in ("correlate", "convolve", "filter_bank", "match_template"):
        return False
    m = params.get("method", "auto")
    if m == "fft":
        return True
    if m != "auto":
        return False
    try:
        if name == "filter_bank":
            ks = bank_kernels(params.get("kernels"), params.get("gabor"), base_dir=base_dir)
        elif name == "match_template":
            t = params["template"]
            if isinstance(t, dict) and "crop" in t:
                return math.prod(b - a for a, b in (v for v in t["crop"].values() if isinstance(v, list))) > 121
            ks = [kernel_array(t, base_dir)]
        else:
            ks = [kernel_array(params["kernel"], base_dir)]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return builtins.any(k.size >= (122 if name == "match_template" else 64) for k in ks)


def uses_fft(steps: list, base_dir: Path | None = None) -> bool:
    return builtins.any(fft_based(*step_parts(s), base_dir=base_dir) for s in steps)


# --------------------------------------------------------------------------- comparing


def tolerance(ref: np.ndarray, precision: str = "float64", fft: bool = False) -> float:
    finite = np.asarray(ref, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    m = float(np.max(np.abs(finite))) if finite.size else 0.0
    return (TOL_FFT if fft else TOL)[precision] * max(1.0, m)


def max_error(out: np.ndarray, ref: np.ndarray) -> float:
    o = np.asarray(out, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    both = np.isfinite(o) & np.isfinite(r)
    return float(np.max(np.abs(o[both] - r[both]))) if both.any() else 0.0


def assert_conforms(out: np.ndarray, ref: np.ndarray, precision: str = "float64", fft: bool = False,
                    what: str = "", circular: bool = False, ignore: np.ndarray | None = None) -> None:
    """The contract's tolerance; NaN/inf must sit where the oracle has them. ``circular`` compares angles
    modulo 2*pi (on the branch cut, where -pi and pi are the same direction); ``ignore`` masks voxels whose
    value is numerically undefined (the orientation of a gradient within rounding of 0)."""
    out = np.asarray(out)
    ref = np.asarray(ref)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != oracle {ref.shape}"
    o = out.astype(np.float64)
    r = ref.astype(np.float64)
    assert np.array_equal(np.isnan(o), np.isnan(r)), f"{what}: NaN positions differ from the oracle"
    assert np.array_equal(np.isinf(o), np.isinf(r)), f"{what}: inf positions differ from the oracle"
    both = np.isfinite(o) & np.isfinite(r)
    if ignore is not None:
        both &= ~ignore
    if not both.any():
        return
    d = o[both] - r[both]
    if circular:
        d = np.angle(np.exp(1j * d))
    err = float(np.max(np.abs(d)))
    tol = tolerance(r, precision, fft)
    if err > tol:
        i = np.unravel_index(np.argmax(np.where(both, np.abs(o - r), -1)), o.shape)
        raise AssertionError(f"{what}: max|out - oracle| = {err:.3g} > {tol:.3g} ({precision}); worst at "
                             f"{tuple(int(v) for v in i)}: out {o[i]!r} vs oracle {r[i]!r}")


def undefined_orientation(steps: list, x: np.ndarray, dims: str | None = None) -> np.ndarray | None:
    """Where the last step's orientation is numerically undefined: a gradient that is not exactly 0 but
    within rounding of it (its direction is noise). None when the last step is not an orientation."""
    name, p = step_parts(steps[-1])
    if name not in EDGE_SMOOTH or p.get("output") != "orientation":
        return None
    mag, _ = oracle(steps[:-1] + [{name: dict(p, output="magnitude")}], x, dims)
    return (mag > 0) & (mag <= 1e-12 * max(1.0, float(np.abs(mag).max())))


from . import oracles_objects  # noqa: E402,F401  (registers the object ops' references in OPS)
