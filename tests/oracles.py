"""Whole-array float64 oracles for every convpipe op, and the helpers the conformance tests share.

Each op has one function ``opname(x, dims, **params)`` taking the *spec's* parameters (same names and
defaults) and returning ``(y, out_dims)``: the reference (scipy.ndimage / scikit-image) applied to the
whole array in float64, independently to every sub-array over the axes the op does not act on.
Nothing here imports convpipe: the oracle must not share code with what it checks.

``run(steps, x, dims, ...)`` runs a pipeline through ``convpipe.load(...).apply``; ``oracle(steps, x, dims)``
chains the oracles; ``assert_conforms`` applies the contract's tolerance:

    max|out - oracle| <= 1e-5 * max(1, max|oracle|)   in float32   (1e-4 for FFT methods)
    max|out - oracle| <= 1e-10 * max(1, max|oracle|)  in float64   (1e-8 for FFT methods)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi

AXES_ORDER = "tczyx"
MODES = ("reflect", "mirror", "nearest", "wrap", "constant")
TOL = {"float32": 1e-5, "float64": 1e-10}
TOL_FFT = {"float32": 1e-4, "float64": 1e-8}


# --------------------------------------------------------------------------- axis helpers


def default_dims(ndim: int) -> str:
    return AXES_ORDER[-ndim:]


def resolve_on(dims: str, axes: str | None = None, *per_axis: Any, default: str = "yx") -> str:
    """The axes an op acts on: explicit ``axes``, else the keys of a per-axis map, else ``default``
    (restricted to the input's axes; the trailing axes when none of ``default`` is present)."""
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


def insert_axis(dims: str, letter: str) -> str:
    rank = AXES_ORDER.index(letter)
    i = 0
    while i < len(dims) and AXES_ORDER.index(dims[i]) < rank:
        i += 1
    return dims[:i] + letter + dims[i:]


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


# --------------------------------------------------------------------------- kernels (independent)


def _sep_outer(factors: list[np.ndarray]) -> np.ndarray:
    k = np.asarray(factors[0], dtype=float)
    for f in factors[1:]:
        k = np.multiply.outer(k, np.asarray(f, dtype=float))
    return k


def named_kernel(name: str, **p: Any) -> np.ndarray:
    """Reference definitions of the named kernels (from scipy / scikit-image where they exist)."""
    if name == "gaussian":
        sigma = float(p.get("sigma", 1.0))
        ndim = int(p.get("ndim", 2))
        r = p.get("radius")
        r = int(float(p.get("truncate", 4.0)) * sigma + 0.5) if r is None else int(r)
        t = np.arange(-r, r + 1, dtype=float)
        g = np.exp(-0.5 * t * t / sigma**2)
        return _sep_outer([g / g.sum()] * ndim)
    if name == "box":
        s, ndim = int(p.get("size", 3)), int(p.get("ndim", 2))
        return np.full((s,) * ndim, 1.0 / s**ndim)
    if name in ("sobel", "prewitt", "scharr"):
        ndim = int(p.get("ndim", 2))
        axis = p.get("axis", "x")
        ax = {"x": ndim - 1, "y": ndim - 2, "z": ndim - 3}[axis] if isinstance(axis, str) else int(axis)
        smooth = {"sobel": [1, 2, 1], "prewitt": [1, 1, 1], "scharr": [3 / 16, 10 / 16, 3 / 16]}[name]
        return _sep_outer([[-1.0, 0.0, 1.0] if d == ax else smooth for d in range(ndim)])
    if name == "laplace":  # the response of scipy.ndimage.laplace to a unit impulse (symmetric kernel)
        ndim = int(p.get("ndim", 2))
        d = np.zeros((3,) * ndim)
        d[(1,) * ndim] = 1.0
        return ndi.laplace(d, mode="constant")
    if name == "log":
        sigma, ndim = float(p.get("sigma", 1.0)), int(p.get("ndim", 2))
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
    if name == "disk":
        import skimage.morphology as morph

        r, ndim = int(p.get("radius", 2)), int(p.get("ndim", 2))
        fp = {2: morph.disk, 3: morph.ball}[ndim](r).astype(float)
        return fp / fp.sum()
    raise KeyError(name)


def kernel_array(src: Any, base_dir: Path | None = None) -> np.ndarray:
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


# --------------------------------------------------------------------------- local ops


def _kernel_op(fn, x, dims, kernel, axes=None, mode="reflect", cval=0.0, origin=0, normalize="none",
               temperature=1.0, method="auto", base_dir=None):
    k = normalize_kernel(kernel_array(kernel, base_dir), normalize, temperature)
    on = resolve_on(dims, axes, default={1: "x", 2: "yx", 3: "zyx"}.get(k.ndim, "yx"))
    if k.ndim == 1 and len(on) > 1:
        k = k.reshape((1,) * (len(on) - 1) + (-1,))
    origins = [origin] * k.ndim if isinstance(origin, int) else list(origin)
    return per_plane(x, dims, on, lambda s: fn(s, k, mode=mode, cval=cval, origin=origins)), dims


def correlate(x, dims, **p):
    return _kernel_op(ndi.correlate, x, dims, **p)


def convolve(x, dims, **p):
    return _kernel_op(ndi.convolve, x, dims, **p)


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
        assert len(comps) == 2
        return np.arctan2(comps[0], comps[1]), dims
    od = insert_axis(dims, "c")
    return np.stack(comps, axis=od.index("c")), od


def sobel(x, dims, **p):
    return _edge("sobel", x, dims, **p)


def prewitt(x, dims, **p):
    return _edge("prewitt", x, dims, **p)


def scharr(x, dims, **p):
    return _edge("scharr", x, dims, **p)


def laplace(x, dims, axes=None, mode="reflect", cval=0.0):
    on = resolve_on(dims, axes)
    return per_plane(x, dims, on, lambda a: ndi.laplace(a, mode=mode, cval=cval)), dims


def gaussian_laplace(x, dims, sigma, truncate=4.0, mode="reflect", cval=0.0, axes=None):
    on = resolve_on(dims, axes, sigma)
    s = per_axis(sigma, on)
    return per_plane(x, dims, on, lambda a: ndi.gaussian_laplace(a, s, mode=mode, cval=cval,
                                                                 truncate=truncate)), dims


def gaussian_gradient_magnitude(x, dims, sigma, truncate=4.0, mode="reflect", cval=0.0, axes=None):
    on = resolve_on(dims, axes, sigma)
    s = per_axis(sigma, on)
    return per_plane(x, dims, on, lambda a: ndi.gaussian_gradient_magnitude(a, s, mode=mode, cval=cval,
                                                                            truncate=truncate)), dims


def difference_of_gaussians(x, dims, low_sigma, high_sigma=None, mode="nearest", cval=0.0, truncate=4.0,
                            axes=None):
    from skimage.filters import difference_of_gaussians as dog

    on = resolve_on(dims, axes, low_sigma, high_sigma)
    lo = per_axis(low_sigma, on)
    hi = None if high_sigma is None else per_axis(high_sigma, on)
    return per_plane(x, dims, on, lambda a: dog(a, lo, hi, mode=mode, cval=cval, channel_axis=None,
                                                truncate=truncate)), dims


def unsharp_mask(x, dims, radius=1.0, amount=1.0, axes=None):
    from skimage.filters import unsharp_mask as um

    on = resolve_on(dims, axes, radius)
    r = per_axis(radius, on)
    return per_plane(x, dims, on, lambda a: um(a, radius=r, amount=amount, preserve_range=True,
                                               channel_axis=None)), dims


NUMPY_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}


def rank_filter(a: np.ndarray, size: tuple, kind: str, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """scipy.ndimage.median_filter / minimum_filter / maximum_filter with a box footprint, by brute force:
    pad by scipy's mode (numpy.pad spells them symmetric/reflect/edge/wrap/constant), take every window,
    pick rank 0 / N // 2 / N - 1 of the N sorted values (scipy's median of an even window is the upper
    middle). Used instead of calling scipy because scipy 1.17's 1-D rank filter path returns garbage in
    mode 'mirror' on lines shorter than the window (``median_filter([0.5], 3, mode='mirror')`` is 1.6e-322);
    ``test_rank_oracle_agrees_with_scipy`` checks this against scipy where scipy is right."""
    size = tuple(int(s) for s in size)
    pads = [(s // 2, s - 1 - s // 2) for s in size]
    if mode == "constant":
        p = np.pad(a, pads, mode="constant", constant_values=cval)
    else:
        p = np.pad(a, pads, mode=NUMPY_PAD[mode])
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


def median(x, dims, **p):
    return _rank("median", x, dims, **p)


def minimum(x, dims, **p):
    return _rank("minimum", x, dims, **p)


def maximum(x, dims, **p):
    return _rank("maximum", x, dims, **p)


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


# --------------------------------------------------------------------------- point ops


def astype(x, dims, dtype):
    dt = np.dtype(dtype)
    x = np.asarray(x)
    if dt.kind in "iu" and x.dtype.kind == "f":
        info = np.iinfo(dt)
        x = np.clip(np.nan_to_num(x, nan=0.0), info.min, info.max)
    return x.astype(dt), dims


def scale(x, dims, factor=1.0, offset=0.0):
    return np.asarray(x, dtype=np.float64) * factor + offset, dims


def clip(x, dims, min=None, max=None):
    return np.clip(np.asarray(x, dtype=np.float64), min, max), dims


def abs(x, dims):
    return np.abs(np.asarray(x, dtype=np.float64)), dims


def log1p(x, dims):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log1p(np.asarray(x, dtype=np.float64)), dims


def sqrt(x, dims):
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.asarray(x, dtype=np.float64)), dims


def threshold(x, dims, value):
    return (np.asarray(x) > value).astype(np.uint8), dims


OPS: dict[str, Callable[..., tuple[np.ndarray, str]]] = {
    f.__name__: f for f in (
        correlate, convolve, gaussian, uniform, sobel, prewitt, scharr, laplace, gaussian_laplace,
        gaussian_gradient_magnitude, difference_of_gaussians, unsharp_mask, median, minimum, maximum,
        diffusion, astype, scale, clip, abs, log1p, sqrt, threshold,
    )
}
POINT_OPS = ("astype", "scale", "clip", "abs", "log1p", "sqrt", "threshold")
LOCAL_OPS = tuple(n for n in OPS if n not in POINT_OPS)


# --------------------------------------------------------------------------- chains, running, comparing


def step_parts(step: dict) -> tuple[str, dict]:
    (name, params), = step.items()
    return name, dict(params or {})


def oracle(steps: list[dict], x: np.ndarray, dims: str | None = None, base_dir: Path | None = None
           ) -> tuple[np.ndarray, str]:
    """The chain of oracles on the whole array (float64 throughout, integer inputs cast first)."""
    dims = dims or default_dims(np.ndim(x))
    u = np.asarray(x)
    if u.dtype.kind != "f" or u.dtype != np.float64:
        u = u.astype(np.float64) if u.dtype.kind in "biuf" else u
    for st in steps:
        name, params = step_parts(st)
        if name in ("correlate", "convolve") and base_dir is not None:
            params["base_dir"] = base_dir
        if name not in POINT_OPS and u.dtype != np.float64:
            u = u.astype(np.float64)
        u, dims = OPS[name](u, dims, **params)
    return u, dims


def uses_fft(steps: list[dict]) -> bool:
    return any(step_parts(s)[0] in ("correlate", "convolve") and step_parts(s)[1].get("method") == "fft"
               for s in steps)


def make_spec(steps: list[dict], precision: str = "float64", **extra: Any) -> dict:
    spec = {"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
            "execution": {"precision": precision}}
    for k, v in extra.items():
        if k in ("input", "output", "execution") and isinstance(v, dict):
            spec.setdefault(k, {}).update(v)
        else:
            spec[k] = v
    return spec


def run(steps: list[dict], x: np.ndarray, dims: str | None = None, chunks: Any = None, tile: Any = None,
        precision: str = "float64") -> np.ndarray:
    """``convpipe.load(spec).apply(dask array with `chunks`, dims, tile=tile).compute()``."""
    import dask.array as da

    import convpipe

    dims = dims or default_dims(np.ndim(x))
    arr = da.from_array(x, chunks=chunks if chunks is not None else x.shape)
    p = convpipe.load(make_spec(steps, precision))
    return np.asarray(p.apply(arr, axes=dims, tile=tile).compute())


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
    modulo 2*pi (arctan2 on the branch cut, where -pi and pi are the same direction); ``ignore`` masks
    voxels whose value is undefined (the orientation of an exactly zero gradient: arctan2(+-0, +-0))."""
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


def check(steps: list[dict], x: np.ndarray, dims: str | None = None, chunks: Any = None, tile: Any = None,
          precision: str = "float64", circular: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run ``steps`` and compare with the oracle; returns (out, ref)."""
    dims = dims or default_dims(np.ndim(x))
    out = run(steps, x, dims, chunks, tile, precision)
    ref, _ = oracle(steps, x, dims)
    ignore = None
    if circular:  # the last step is an orientation: its direction is undefined where the gradient is 0
        name, p = step_parts(steps[-1])
        mag, _ = oracle(steps[:-1] + [{name: dict(p, output="magnitude")}], x, dims)
        ignore = mag <= 1e-12 * max(1.0, float(np.abs(mag).max()))
    assert_conforms(out, ref, precision, fft=uses_fft(steps),
                    what=f"{steps} on {dims}{tuple(np.shape(x))} chunks={chunks} tile={tile}", circular=circular,
                    ignore=ignore)
    return out, ref
