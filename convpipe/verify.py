"""``convpipe verify OUTPUT``: recompute a sample of an output's tiles with the oracle and compare.

An output written by ``convpipe run`` carries its provenance in the ``convpipe`` attribute (the canonical
spec, the resolved input URL, the input fingerprint, the work tile and the output axes). ``verify`` reads
it, opens the input, and for each sampled tile recomputes the pipeline's *oracle* (SPEC.md: the named
scipy.ndimage reference, float64) directly from the input, on a window around the tile wide enough that
the tile's values are the oracle's own:

* along an axis the window is the tile widened by the sum of the chain's radii (plus one) on each side,
  clipped to the array, so where the window meets the array's edge the boundary handling is the oracle's
  own ``mode``; where it stops inside the array, the error that the cut introduces cannot reach the tile;
* along an axis where any op uses ``mode: wrap`` the window is the whole extent.

The oracle table below is deliberately independent of the ops' implementations (scipy.ndimage calls
from the spec's parameters; only named kernels are built by :mod:`convpipe.kernels`, since they are part
of the spec's definition). An op without an entry is reported as *not verifiable*, never silently passed.

Tolerance (SPEC.md): ``max|out - oracle| <= rel * max(1, max|oracle|)`` with rel 1e-5 in float32
(1e-4 for FFT methods) and 1e-10 in float64 (1e-8 FFT); ``max|oracle|`` is taken over the checked tiles.
NaN and inf must sit where the oracle has them. When the chain ends in quantizing point ops (``threshold``,
``astype`` to an integer type, or an integer output dtype), a voxel whose pre-quantization oracle value lies
within the tolerance of a step boundary may land on either side of it; such voxels are accepted when the
output lies in the image of ``[v - tol, v + tol]`` under the (monotone) tail of point ops. (A quantizing op
*followed by* further filters is compared as is: a voxel that flipped at the step may show as a difference.)

Limits: the input fingerprint covers metadata, not chunk contents, so an input rewritten in place with the
same metadata makes the sampled tiles differ rather than being reported as "input changed"; tables written
by feature ops are not verified.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .ops.base import insert_axis
from .errors import ConvpipeError, InputError

TOL = {"float32": 1e-5, "float64": 1e-10}
TOL_FFT = {"float32": 1e-4, "float64": 1e-8}


# --------------------------------------------------------------------------- results


class VerificationFailed(ConvpipeError):
    """``convpipe verify`` found tiles that differ, or could not verify the output (exit 1)."""

    exit_code = 1


@dataclass
class TileCheck:
    """One recomputed tile."""

    key: str  # the manifest key of the tile, e.g. ``p0.1.0.3``
    index: tuple[int, ...]
    region: tuple[tuple[int, int], ...]  # output coordinates per output axis, [start, stop)
    max_error: float  # over voxels finite in both (after excusing quantization steps)
    max_ref: float  # max |oracle| over the tile's finite oracle values
    nonfinite_mismatch: int  # voxels where NaN / inf differ from the oracle
    worst: tuple[int, ...] | None = None  # global output coordinates of the largest error
    worst_out: float | None = None
    worst_ref: float | None = None
    tolerance: float = 0.0  # set once every tile is in

    @property
    def ok(self) -> bool:
        return self.nonfinite_mismatch == 0 and self.max_error <= self.tolerance

    def describe(self, axes: str) -> str:
        where = " ".join(f"{a}[{s}:{e}]" for a, (s, e) in zip(axes, self.region))
        if self.ok:
            return f"tile {self.key} {where}: ok (max error {self.max_error:.3g} <= {self.tolerance:.3g})"
        parts = []
        if self.nonfinite_mismatch:
            parts.append(f"{self.nonfinite_mismatch} voxel(s) with NaN/inf where the oracle differs")
        if self.max_error > self.tolerance:
            parts.append(f"max|out - oracle| = {self.max_error:.3g} > {self.tolerance:.3g}")
        if self.worst is not None:
            parts.append(f"worst at {self.worst}: out {self.worst_out!r} vs oracle {self.worst_ref!r}")
        return f"tile {self.key} {where}: DIFFERS: " + "; ".join(parts)


@dataclass
class VerifyResult:
    """What :func:`verify` found. ``ok`` only when every checked tile matches and nothing stood in the way."""

    output_url: str
    input_url: str
    axes: str
    shape: tuple[int, ...]
    tile: tuple[int, ...]
    n_tiles: int
    precision: str
    relative_tolerance: float
    complete: bool
    checked: list[TileCheck] = field(default_factory=list)
    not_verifiable: list[str] = field(default_factory=list)  # steps without an oracle, e.g. 'steps[2].fft_filter'
    problems: list[str] = field(default_factory=list)  # anything else that prevents a clean verdict
    notes: list[str] = field(default_factory=list)

    @property
    def differing(self) -> list[TileCheck]:
        return [t for t in self.checked if not t.ok]

    @property
    def verifiable(self) -> bool:
        return not self.not_verifiable

    @property
    def ok(self) -> bool:
        return bool(self.checked) and not self.differing and not self.not_verifiable and not self.problems

    def summary(self) -> str:
        lines = []
        for p in self.problems:
            lines.append(f"problem: {p}")
        if self.not_verifiable:
            lines.append("not verifiable: no oracle for " + ", ".join(self.not_verifiable))
        for t in self.differing:
            lines.append(t.describe(self.axes))
        for n in self.notes:
            lines.append(f"note: {n}")
        n_ok = len(self.checked) - len(self.differing)
        tol = f"relative tolerance {self.relative_tolerance:g}, {self.precision}"
        if self.ok:
            lines.append(f"ok: all {n_ok} checked tiles (of {self.n_tiles}) recomputed from the input match the "
                         f"oracle ({tol})")
        else:
            verdict = (f"{len(self.differing)} of {len(self.checked)} checked tiles differ from the oracle"
                       if self.checked else "no tile was checked")
            lines.append(f"FAILED: {verdict} ({tol})")
        return "\n".join(lines)


# --------------------------------------------------------------------------- oracle helpers


def _resolve_on(dims: str, axes: str | None, *per_axis: Any, default: str = "yx") -> str:
    """The axes an op acts on: ``axes``, else a per-axis map's keys, else ``default`` (or the trailing axes)."""
    if axes is None:
        for v in per_axis:
            if isinstance(v, dict):
                return "".join(a for a in dims if a in v)
        on = "".join(a for a in default if a in dims)
        return on or dims[-len(default):]
    return "".join(a for a in dims if a in axes)


def _per_axis(value: Any, on: str) -> tuple:
    if isinstance(value, dict):
        return tuple(float(value[a]) for a in on)
    return tuple(float(value) for _ in on)


def _per_plane(x: np.ndarray, dims: str, on: str, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` on every sub-array of ``x`` over the axes ``on``, independently (SPEC.md: Axes)."""
    idx = [dims.index(a) for a in on]
    k = len(idx)
    moved = np.moveaxis(x, idx, list(range(x.ndim - k, x.ndim)))
    out = np.empty(moved.shape, dtype=np.float64)
    for lead in np.ndindex(*moved.shape[: x.ndim - k]):
        out[lead] = fn(np.ascontiguousarray(moved[lead]))
    return np.moveaxis(out, list(range(x.ndim - k, x.ndim)), idx)


def _gauss_radius(sigma: float, truncate: float = 4.0) -> int:
    return int(truncate * float(sigma) + 0.5)


@dataclass
class _Ctx:
    base_dir: Path | None


@dataclass
class _Oracle:
    """``fn(x, dims, params, ctx) -> (y, out_dims)``; ``radius(dims, params, ctx) -> {axis: r}``."""

    fn: Callable[..., tuple[np.ndarray, str]]
    radius: Callable[..., dict[str, int]]
    point: bool = False
    monotone: Callable[[dict], int] | None = None  # point ops: +1 increasing, -1 decreasing, 0 neither


def _kernel(p: dict, ctx: _Ctx) -> np.ndarray:
    from .kernels import kernel_from_source, normalize

    try:
        k = kernel_from_source(p["kernel"], ctx.base_dir)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot rebuild the kernel {p['kernel']!r} from the provenance: {e}") from None
    return np.asarray(normalize(k, p.get("normalize", "none"), p.get("temperature", 1.0)), dtype=np.float64)


def _kernel_on(p: dict, dims: str, ctx: _Ctx) -> tuple[np.ndarray, str, list[int]]:
    k = _kernel(p, ctx)
    on = _resolve_on(dims, p.get("axes"), default={1: "x", 2: "yx", 3: "zyx"}.get(k.ndim, "yx"))
    if k.ndim == 1 and len(on) > 1:
        k = k.reshape((1,) * (len(on) - 1) + (-1,))
    o = p.get("origin", 0)
    origins = [int(o)] * k.ndim if isinstance(o, (int, float)) else [int(v) for v in o]
    return k, on, origins


def _mode(p: dict, default: str = "reflect") -> tuple[str, float]:
    return p.get("mode", default) or default, float(p.get("cval", 0.0) or 0.0)


def _o_correlate(flip: bool):
    def fn(x, dims, p, ctx):
        import scipy.ndimage as ndi

        k, on, origins = _kernel_on(p, dims, ctx)
        mode, cval = _mode(p)
        f = ndi.convolve if flip else ndi.correlate
        return _per_plane(x, dims, on, lambda a: f(a, k, mode=mode, cval=cval, origin=origins)), dims

    def radius(dims, p, ctx):
        k, on, origins = _kernel_on(p, dims, ctx)
        r = max(k.shape) + max((abs(o) for o in origins), default=0)
        return {a: r for a in on}

    return _Oracle(fn, radius)


def _o_gaussian(x, dims, p, ctx):
    import scipy.ndimage as ndi

    on = _resolve_on(dims, p.get("axes"), p["sigma"], p.get("order", 0))
    s = _per_axis(p["sigma"], on)
    o = tuple(int(v) for v in _per_axis(p.get("order", 0), on))
    mode, cval = _mode(p)
    t = float(p.get("truncate", 4.0))
    return _per_plane(x, dims, on, lambda a: ndi.gaussian_filter(a, s, order=o, mode=mode, cval=cval,
                                                                 truncate=t)), dims


def _r_sigma(key: str = "sigma"):
    def radius(dims, p, ctx):
        on = _resolve_on(dims, p.get("axes"), p[key], p.get("order", 0))
        t = float(p.get("truncate", 4.0))
        return {a: _gauss_radius(s, t) for a, s in zip(on, _per_axis(p[key], on))}

    return radius


def _o_sigma_fn(name: str):
    def fn(x, dims, p, ctx):
        import scipy.ndimage as ndi

        on = _resolve_on(dims, p.get("axes"), p["sigma"])
        s = _per_axis(p["sigma"], on)
        mode, cval = _mode(p)
        t = float(p.get("truncate", 4.0))
        f = getattr(ndi, name)
        return _per_plane(x, dims, on, lambda a: f(a, s, mode=mode, cval=cval, truncate=t)), dims

    return _Oracle(fn, _r_sigma())


def _dog_sigmas(dims, p):
    on = _resolve_on(dims, p.get("axes"), p["low_sigma"], p.get("high_sigma"))
    lo = _per_axis(p["low_sigma"], on)
    hi = tuple(1.6 * s for s in lo) if p.get("high_sigma") is None else _per_axis(p["high_sigma"], on)
    return on, lo, hi


def _o_dog(x, dims, p, ctx):
    # skimage.filters.difference_of_gaussians on float input: gaussian(low) - gaussian(high), same mode
    import scipy.ndimage as ndi

    on, lo, hi = _dog_sigmas(dims, p)
    mode, cval = _mode(p, "nearest")
    t = float(p.get("truncate", 4.0))

    def f(a):
        return (ndi.gaussian_filter(a, lo, mode=mode, cval=cval, truncate=t)
                - ndi.gaussian_filter(a, hi, mode=mode, cval=cval, truncate=t))

    return _per_plane(x, dims, on, f), dims


def _r_dog(dims, p, ctx):
    on, lo, hi = _dog_sigmas(dims, p)
    t = float(p.get("truncate", 4.0))
    return {a: _gauss_radius(max(l, h), t) for a, l, h in zip(on, lo, hi)}


def _o_unsharp(x, dims, p, ctx):
    # skimage.filters.unsharp_mask(preserve_range=True): x + (x - gaussian(x, radius, mode='reflect')) * amount
    import scipy.ndimage as ndi

    on = _resolve_on(dims, p.get("axes"), p.get("radius", 1.0))
    r = _per_axis(p.get("radius", 1.0), on)
    amount = float(p.get("amount", 1.0))
    return _per_plane(x, dims, on, lambda a: a + (a - ndi.gaussian_filter(a, r, mode="reflect")) * amount), dims


def _r_unsharp(dims, p, ctx):
    on = _resolve_on(dims, p.get("axes"), p.get("radius", 1.0))
    return {a: _gauss_radius(s) for a, s in zip(on, _per_axis(p.get("radius", 1.0), on))}


def _o_size_fn(name: str):
    def fn(x, dims, p, ctx):
        import scipy.ndimage as ndi

        on = _resolve_on(dims, p.get("axes"), p["size"])
        s = tuple(int(v) for v in _per_axis(p["size"], on))
        mode, cval = _mode(p)
        f = getattr(ndi, name)
        return _per_plane(x, dims, on, lambda a: f(a, size=s, mode=mode, cval=cval)), dims

    def radius(dims, p, ctx):
        on = _resolve_on(dims, p.get("axes"), p["size"])
        return {a: int(s) // 2 + 1 for a, s in zip(on, _per_axis(p["size"], on))}

    return _Oracle(fn, radius)


_EDGE_SMOOTH = {"sobel": [1.0, 2.0, 1.0], "prewitt": [1.0, 1.0, 1.0], "scharr": [3 / 16, 10 / 16, 3 / 16]}


def _o_edge(which: str):
    def fn(x, dims, p, ctx):
        import scipy.ndimage as ndi

        on = _resolve_on(dims, p.get("axes"))
        mode, cval = _mode(p)
        comps = []
        for i in range(len(on)):
            def f(a, i=i):  # scipy.ndimage.sobel's order: the derivative, then the smoothing on each other axis
                out = ndi.correlate1d(a, [-1.0, 0.0, 1.0], axis=i, mode=mode, cval=cval)
                for j in range(a.ndim):
                    if j != i:
                        out = ndi.correlate1d(out, _EDGE_SMOOTH[which], axis=j, mode=mode, cval=cval)
                return out
            comps.append(_per_plane(x, dims, on, f))
        output = p.get("output", "magnitude")
        if output == "magnitude":
            return np.sqrt(sum(c * c for c in comps)), dims
        if output == "orientation":
            return np.arctan2(comps[0], comps[1]), dims
        od = insert_axis(dims, "c")
        return np.stack(comps, axis=od.index("c")), od

    return _Oracle(fn, lambda dims, p, ctx: {a: 1 for a in _resolve_on(dims, p.get("axes"))})


def _o_laplace(x, dims, p, ctx):
    import scipy.ndimage as ndi

    on = _resolve_on(dims, p.get("axes"))
    mode, cval = _mode(p)
    return _per_plane(x, dims, on, lambda a: ndi.laplace(a, mode=mode, cval=cval)), dims


def _o_diffusion(x, dims, p, ctx):
    import scipy.ndimage as ndi

    on = _resolve_on(dims, p.get("axes"))
    mode, cval = _mode(p)
    if p.get("steps") is None:
        sigma = math.sqrt(2.0 * float(p["diffusivity"]) * float(p["time"]))
        return _per_plane(x, dims, on, lambda a: ndi.gaussian_filter(a, sigma, mode=mode, cval=cval)), dims
    steps, dt = int(p["steps"]), float(p["dt"])

    def heat(a):
        u = a.copy()
        for _ in range(steps):
            u = u + dt * ndi.laplace(u, mode=mode, cval=cval)
        return u

    return _per_plane(x, dims, on, heat), dims


def _r_diffusion(dims, p, ctx):
    on = _resolve_on(dims, p.get("axes"))
    if p.get("steps") is None:
        r = _gauss_radius(math.sqrt(2.0 * float(p["diffusivity"]) * float(p["time"])))
    else:
        r = int(p["steps"])
    return {a: r for a in on}


# ---- point ops (float64 throughout; integer results are kept as float64 values)


def _saturate(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A value cast to ``dtype`` as convpipe defines it: integers saturate (NaN -> 0) and truncate toward 0."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            y = np.clip(np.nan_to_num(x, nan=0.0, posinf=float(info.max), neginf=float(info.min)),
                        float(info.min), float(info.max))
        return np.trunc(y)
    if dtype.kind == "b":
        return (np.nan_to_num(x, nan=0.0) != 0).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(dtype).astype(np.float64)


def _point(fn: Callable[[np.ndarray, dict], np.ndarray], monotone: Callable[[dict], int]) -> _Oracle:
    def f(x, dims, p, ctx):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return fn(x, p), dims

    return _Oracle(f, lambda dims, p, ctx: {}, point=True, monotone=monotone)


def _clip_fn(x, p):
    return np.clip(x, p.get("min"), p.get("max"))


_ORACLES: dict[str, _Oracle] = {
    "correlate": _o_correlate(flip=False),
    "convolve": _o_correlate(flip=True),
    "gaussian": _Oracle(_o_gaussian, _r_sigma()),
    "gaussian_laplace": _o_sigma_fn("gaussian_laplace"),
    "gaussian_gradient_magnitude": _o_sigma_fn("gaussian_gradient_magnitude"),
    "difference_of_gaussians": _Oracle(_o_dog, _r_dog),
    "unsharp_mask": _Oracle(_o_unsharp, _r_unsharp),
    "uniform": _o_size_fn("uniform_filter"),
    "median": _o_size_fn("median_filter"),
    "minimum": _o_size_fn("minimum_filter"),
    "maximum": _o_size_fn("maximum_filter"),
    "sobel": _o_edge("sobel"),
    "prewitt": _o_edge("prewitt"),
    "scharr": _o_edge("scharr"),
    "laplace": _Oracle(_o_laplace, lambda dims, p, ctx: {a: 1 for a in _resolve_on(dims, p.get("axes"))}),
    "diffusion": _Oracle(_o_diffusion, _r_diffusion),
    "astype": _point(lambda x, p: _saturate(x, np.dtype(p["dtype"])), lambda p: 1),
    "scale": _point(lambda x, p: x * float(p.get("factor", 1.0)) + float(p.get("offset", 0.0)),
                    lambda p: 1 if float(p.get("factor", 1.0)) >= 0 else -1),
    "clip": _point(_clip_fn, lambda p: 1),
    "abs": _point(lambda x, p: np.abs(x), lambda p: 0),
    "log1p": _point(lambda x, p: np.log1p(x), lambda p: 1),
    "sqrt": _point(lambda x, p: np.sqrt(x), lambda p: 1),
    "threshold": _point(lambda x, p: (x > float(p["value"])).astype(np.float64), lambda p: 1),
}
#: ops whose image passes through unchanged (their tables are not verified)
_IDENTITY = {"peaks"}
#: ops that quantize: a float64 oracle may legitimately land on the other side of a step
_QUANTIZING = {"threshold"}


def oracle_ops() -> list[str]:
    """The op names :func:`verify` can recompute."""
    return sorted(set(_ORACLES) | _IDENTITY)


# --------------------------------------------------------------------------- provenance


def _open_output(url: str, storage_options: dict | None) -> tuple[Any, dict]:
    """The output array and its ``convpipe`` provenance (an OME-Zarr group: its level 0)."""
    import zarr

    from .io import _storage

    try:
        node = zarr.open(store=_storage(url, storage_options), mode="r")
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - zarr and fsspec raise many types for a missing or unreadable store
        msg = str(e)
        if isinstance(e, (FileNotFoundError, KeyError)) or "not found" in msg.lower():
            raise InputError(f"output not found: {url}") from None
        raise InputError(f"cannot open output {url}: {type(e).__name__}: {msg}") from None
    attrs: dict[str, Any] = dict(node.attrs)
    prov: dict[str, Any] = dict(attrs.get("convpipe") or {})
    if isinstance(node, zarr.Group):
        ms: Any = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
        if not ms:
            raise InputError(f"{url} is a Zarr group without OME-Zarr multiscales; point verify at the output array")
        node = node[str(ms[0]["datasets"][0]["path"])]
        prov = prov or dict(dict(node.attrs).get("convpipe") or {})  # type: ignore[arg-type]
    if not prov:
        raise InputError(f"{url} has no convpipe provenance (was it written by `convpipe run`?)")
    missing = [k for k in ("spec", "input_url", "tile", "axes") if k not in prov]
    if missing:
        raise InputError(f"{url}: the provenance lacks {', '.join(missing)}; it cannot be verified")
    return node, prov


def _base_dir(prov: dict) -> Path | None:
    """The spec's folder (relative kernel paths resolve against it).

    Recorded as ``spec_dir`` when the writer knows it; otherwise inferred from the relative ``input.url`` as
    written in the spec and the resolved ``input_url``.
    """
    if prov.get("spec_dir"):
        return Path(prov["spec_dir"])
    raw = ((prov.get("spec") or {}).get("input") or {}).get("url", "")
    full = str(prov.get("input_url", ""))
    if raw and "://" not in raw and not raw.startswith("/") and "://" not in full:
        parts = PurePosixPath(raw).parts
        if ".." not in parts:
            full_parts = PurePosixPath(full).parts
            n = len([q for q in parts if q != "."])
            if n and len(full_parts) > n:
                return Path(*full_parts[: len(full_parts) - n])
    return None


def _steps(prov: dict) -> list[tuple[str, dict]]:
    out = []
    for st in (prov.get("spec") or {}).get("steps") or []:
        if isinstance(st, str):
            st = {st: {}}
        (name, params), = st.items()
        out.append((str(name), dict(params or {})))
    return out


# --------------------------------------------------------------------------- verify


def _tiles(shape: tuple[int, ...], tile: tuple[int, ...]) -> list[tuple[int, ...]]:
    import itertools

    return list(itertools.product(*[range(max(1, -(-n // t))) for n, t in zip(shape, tile)]))


def _tail_interval(lo: np.ndarray, hi: np.ndarray, tail: list[tuple[_Oracle, dict]], dims: str,
                   out_dtype: np.dtype, ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    """The image of [lo, hi] under the trailing point ops and the output cast (all monotone or |x|)."""
    for orc, p in tail:
        m = orc.monotone(p) if orc.monotone else 0
        a, _ = orc.fn(lo, dims, p, ctx)
        b, _ = orc.fn(hi, dims, p, ctx)
        if m == 1:
            lo, hi = a, b
        elif m == -1:
            lo, hi = b, a
        else:  # |x|: the minimum is 0 when the interval straddles it
            straddle = (lo < 0) & (hi > 0)
            lo, hi = np.where(straddle, 0.0, np.minimum(a, b)), np.maximum(a, b)
    if out_dtype.kind in "iub":
        lo, hi = _saturate(lo, out_dtype), _saturate(hi, out_dtype)
    return lo, hi


def verify(output_url: str, *, sample: int = 8, all: bool = False, seed: int = 0,
           storage_options: dict | None = None) -> VerifyResult:
    """Recompute ``sample`` random tiles of ``output_url`` (every tile with ``all``) from the input with the
    oracle and compare within SPEC.md's tolerance.

    Raises :class:`~convpipe.errors.InputError` when the output or its input cannot be opened or the output
    carries no convpipe provenance. Everything else (tiles that differ, ops without an oracle, an
    incomplete output, an input that changed since the run) is reported in the result.
    """
    from .io import Manifest, fingerprint, open_input

    out, prov = _open_output(output_url, storage_options)
    spec = prov.get("spec") or {}
    in_spec = spec.get("input") or {}
    in_url = str(prov["input_url"])
    out_axes = str(prov["axes"])
    shape = tuple(int(n) for n in out.shape)
    tile = tuple(int(t) for t in prov["tile"])
    if len(out_axes) != len(shape) or len(tile) != len(shape):
        raise InputError(f"{output_url}: provenance axes {out_axes!r} / tile {list(tile)} do not fit the "
                         f"output's shape {shape}")
    # the compute dtype the run resolved (precision auto depends on the input's dtype)
    precision = str(prov.get("compute") or (spec.get("execution") or {}).get("precision", "float32"))
    out_dtype = np.dtype(out.dtype)
    grid = _tiles(shape, tile)
    res = VerifyResult(output_url, in_url, out_axes, shape, tile, len(grid), precision, 0.0,
                       bool(prov.get("complete")))

    arr, in_axes, _ = open_input(in_url, level=int(in_spec.get("level", 0) or 0), axes=in_spec.get("axes"),
                                 storage_options=in_spec.get("storage_options") or None)
    if prov.get("input_fingerprint") and fingerprint(arr, in_url) != prov["input_fingerprint"]:
        res.problems.append(f"the input {in_url} changed since the output was written (fingerprint differs)")

    # the oracle chain, and the window margin each axis needs
    ctx = _Ctx(_base_dir(prov))
    chain: list[tuple[str, _Oracle, dict]] = []
    unreadable = False
    dims = in_axes
    margin: dict[str, int] = {a: 0 for a in in_axes}
    whole: set[str] = set()
    fft = False
    circular = False
    for i, (name, p) in enumerate(_steps(prov)):
        if name in _IDENTITY:
            res.notes.append(f"steps[{i}].{name}: the image passes through; its table is not verified")
            continue
        orc = _ORACLES.get(name)
        if orc is None:
            res.not_verifiable.append(f"steps[{i}].{name}")
            continue
        if res.not_verifiable:
            continue
        try:
            rad = orc.radius(dims, p, ctx)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - a spec we cannot read back is a verdict, not a crash
            res.problems.append(f"steps[{i}].{name}: cannot rebuild the op from the provenance: "
                                f"{type(e).__name__}: {e}")
            unreadable = True
            continue
        for a, r in rad.items():
            if a in margin:
                margin[a] += int(r)
        if not orc.point and p.get("mode") == "wrap":
            whole.update(rad)
        if name in ("correlate", "convolve"):
            k = _kernel(p, ctx)
            fft = fft or p.get("method") == "fft" or (p.get("method", "auto") == "auto" and k.size >= 31 * 31)
        if not orc.point:
            circular = name in _EDGE_SMOOTH and p.get("output") == "orientation"
        chain.append((name, orc, p))
        # axes after this op (only the edge components add one, 'c')
        if name in _EDGE_SMOOTH and p.get("output") == "components":
            dims = insert_axis(dims, "c")
    eff = "float32" if (precision == "float32" or (out_dtype.kind == "f" and out_dtype.itemsize <= 4)) else "float64"
    rel = (TOL_FFT if fft else TOL)[eff]
    res.relative_tolerance = rel
    res.precision = eff
    if res.not_verifiable or unreadable:
        return res
    if dims != out_axes:
        res.problems.append(f"the oracle's axes {dims!r} are not the output's {out_axes!r}")
        return res

    # which tiles
    pass_index = 0
    done: set[str] | None = None
    if not res.complete:
        done = Manifest(output_url, storage_options).done()
        res.problems.append(f"the output is incomplete ({len(done)} of {len(grid)} tiles recorded); "
                            "only recorded tiles were checked (`convpipe run --resume` finishes it)")
        prefixes = {k.split(".", 1)[0] for k in done}
        if len(prefixes) == 1:
            pass_index = int(next(iter(prefixes))[1:] or 0)

    def key_of(idx):
        return f"p{pass_index}." + ".".join(map(str, idx))

    cands = [g for g in grid if done is None or key_of(g) in done]
    if not all and sample < len(cands):
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(cands), size=max(0, int(sample)), replace=False).tolist())
        cands = [cands[j] for j in pick]

    # the trailing point ops (for the quantization allowance)
    n_tail = 0
    for _, orc, _ in reversed(chain):
        if not orc.point:
            break
        n_tail += 1
    head = [(orc, p) for _, orc, p in chain[: len(chain) - n_tail]]
    tail = [(orc, p) for _, orc, p in chain[len(chain) - n_tail:]]
    quantizing = out_dtype.kind in "iub" or any(
        name in _QUANTIZING or (name == "astype" and np.dtype(p["dtype"]).kind in "iub")
        for name, _, p in chain[len(chain) - n_tail:])

    in_shape = dict(zip(in_axes, (int(n) for n in arr.shape)))
    for idx in cands:
        region = tuple((j * t, min((j + 1) * t, n)) for j, t, n in zip(idx, tile, shape))
        reg = dict(zip(out_axes, region))
        win = {}
        for a in in_axes:
            n = in_shape[a]
            lo, hi = reg.get(a, (0, n))
            if a in whole:
                win[a] = (0, n)
            else:
                m = margin[a] + 1 if margin[a] else 0
                win[a] = (max(0, lo - m), min(n, hi + m))
        x = np.asarray(arr[tuple(slice(*win[a]) for a in in_axes)]).astype(np.float64)
        d = in_axes
        for orc, p in head:
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                x, d = orc.fn(x, d, p, ctx)
        v = x  # the oracle before the trailing point ops
        for orc, p in tail:
            x, d = orc.fn(x, d, p, ctx)
        ref = _saturate(x, out_dtype) if out_dtype.kind in "iub" else x
        core = tuple(slice(reg[a][0] - (win[a][0] if a in win else 0), reg[a][1] - (win[a][0] if a in win else 0))
                     for a in out_axes)
        ref = ref[core]
        v = v[core]
        got = np.asarray(out[tuple(slice(lo, hi) for lo, hi in region)]).astype(np.float64)
        res.checked.append(_compare(key_of(idx), idx, region, got, ref, v, rel, circular,
                                    (tail, d, out_dtype, ctx) if quantizing else None))

    scale = max([1.0] + [t.max_ref for t in res.checked if math.isfinite(t.max_ref)])
    for t in res.checked:
        t.tolerance = rel * scale
    if quantizing:
        res.notes.append("the output is quantized (threshold / integer dtype): voxels whose oracle value lies "
                         "within the tolerance of a step were accepted on either side of it")
    return res


def _compare(key, idx, region, got, ref, v, rel, circular, quant) -> TileCheck:
    with np.errstate(invalid="ignore"):
        nan_mis = np.isnan(got) != np.isnan(ref)
        inf_mis = (np.isinf(got) | np.isinf(ref)) & ~(got == ref)
        mism = nan_mis | (inf_mis & ~np.isnan(got) & ~np.isnan(ref))
        both = np.isfinite(got) & np.isfinite(ref)
        err = np.where(both, np.abs(got - ref), 0.0)
        if circular:
            err = np.where(both, np.abs(np.angle(np.exp(1j * (got - ref)))), 0.0)
        finite_ref = np.abs(ref[np.isfinite(ref)])
        max_ref = float(finite_ref.max()) if finite_ref.size else 0.0
        if quant is not None:
            tail, d, out_dtype, ctx = quant
            fv = np.abs(v[np.isfinite(v)])
            t = rel * max(1.0, float(fv.max()) if fv.size else 0.0)
            lo, hi = _tail_interval(v - t, v + t, tail, d, out_dtype, ctx)
            excused = (got >= np.minimum(lo, hi)) & (got <= np.maximum(lo, hi))
            err = np.where(excused, 0.0, err)
            mism = mism & ~excused
    worst = None
    wo = wr = None
    bad = err + np.where(mism, np.inf, 0.0)
    if bad.size and (bad.max() > 0):
        i = np.unravel_index(int(np.argmax(bad)), bad.shape)
        worst = tuple(int(s + j) for (s, _), j in zip(region, i))
        wo, wr = float(got[i]), float(ref[i])
    return TileCheck(key, tuple(int(j) for j in idx), tuple(region), float(err.max()) if err.size else 0.0,
                     max_ref, int(mism.sum()), worst, wo, wr)


# --------------------------------------------------------------------------- command line


def register(app: Any) -> None:
    """Add ``convpipe verify OUTPUT [--sample N] [--all] [--seed S]`` to the typer app."""
    import typer

    @app.command("verify")
    def verify_cmd(
        output: str = typer.Argument(..., help="output Zarr written by `convpipe run` (path or URL)"),
        sample: int = typer.Option(8, "--sample", min=0, help="number of random tiles to recompute"),
        all_tiles: bool = typer.Option(False, "--all", help="recompute every tile"),
        seed: int = typer.Option(0, "--seed", help="seed of the tile sample"),
    ) -> None:
        """Recompute a sample of the output's tiles from its input with the oracle (scipy) and compare:
        exit 0 when all match, 1 when tiles differ or the output cannot be verified."""
        res = verify(output, sample=sample, all=all_tiles, seed=seed)
        lines = res.summary().splitlines()
        if res.ok:
            for line in lines:
                typer.echo(line)
            return
        for line in lines[:-1]:
            typer.echo(line, err=True)
        # an error, not typer.Exit: the CLI's main() turns it into 'error: ...' and exit code 1
        raise VerificationFailed(lines[-1].removeprefix("FAILED: "))
