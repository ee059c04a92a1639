"""How far each op reaches (the window a tile's oracle needs), and the allowance of quantizing point ops."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import oracles as O
from ..oracles import morphology as OO
from ..axes import canonical


def _kernel_reach(k: np.ndarray, on: str, origin: Any = 0) -> dict[str, int]:
    o = [int(origin)] * k.ndim if isinstance(origin, (int, float)) else [int(v) for v in origin]
    r = max(k.shape) + max((abs(v) for v in o), default=0)
    return {a: r for a in on}


def _gauss_radius(sigma: float, truncate: float = 4.0) -> int:
    return int(truncate * float(sigma) + 0.5)


def reach(name: str, p: dict, dims: str, base_dir: Path | None) -> dict[str, int | None]:
    """Per axis letter, how far an output voxel of the op sees into its input (None: the whole extent).

    Generous on purpose: the window only has to hold every input voxel the tile's oracle values depend on.
    """
    dims = canonical(dims)
    on = O.resolve_on
    obj = OO.reach(name, p, dims, base_dir)  # morphology, distance transform (convpipe.oracles.morphology)
    if obj is not None:
        return obj
    if name in O.POINT_OPS or name in O.GLOBAL_OPS or name in ("peaks", "blobs", "stats", "regionprops"):
        return {}  # value-wise here (global statistics and tables are computed on the whole array)
    if name in O.WHOLE_ARRAY_OPS:
        return {a: None for a in O.object_axes(dims, p.get("axes"))}
    if name in ("correlate", "convolve", "stochastic"):
        k = O.kernel_array(p["kernel"], base_dir)
        axes = on(dims, p.get("axes"), default={1: "x", 2: "yx", 3: "zyx"}.get(k.ndim, "yx"))
        return _kernel_reach(k, axes, p.get("origin", 0))
    if name == "filter_bank":
        ks = O.bank_kernels(p.get("kernels"), p.get("gabor"), base_dir=base_dir)
        axes = on(dims, p.get("axes"), default={1: "x", 2: "yx", 3: "zyx"}.get(ks[0].ndim, "yx"))
        return {a: max(max(k.shape) for k in ks) for a in axes}
    if name == "match_template":
        t = p["template"]
        if isinstance(t, dict) and "crop" in t:
            spans = {a: v[1] - v[0] for a, v in t["crop"].items() if isinstance(v, list)}
            return {a: int(n) + int(p.get("radius", 3)) for a, n in spans.items()}
        k = O.kernel_array(t, base_dir)
        return {a: max(k.shape) + int(p.get("radius", 3)) for a in on(dims, p.get("axes"),
                                                                       default={2: "yx", 3: "zyx"}[k.ndim])}
    if name in ("gaussian", "gaussian_laplace", "gaussian_gradient_magnitude"):
        axes = on(dims, p.get("axes"), p["sigma"], p.get("order", 0))
        t = float(p.get("truncate", 4.0))
        return {a: _gauss_radius(s, t) + 1 for a, s in zip(axes, O.per_axis(p["sigma"], axes))}
    if name == "difference_of_gaussians":
        axes = on(dims, p.get("axes"), p["low_sigma"], p.get("high_sigma"))
        lo = O.per_axis(p["low_sigma"], axes)
        hi = tuple(1.6 * s for s in lo) if p.get("high_sigma") is None else O.per_axis(p["high_sigma"], axes)
        return {a: _gauss_radius(max(a_, b_), float(p.get("truncate", 4.0))) + 1
                for a, a_, b_ in zip(axes, lo, hi)}
    if name == "unsharp_mask":
        axes = on(dims, p.get("axes"), p.get("radius", 1.0))
        return {a: _gauss_radius(s) + 1 for a, s in zip(axes, O.per_axis(p.get("radius", 1.0), axes))}
    if name in ("uniform", "median", "minimum", "maximum"):
        axes = on(dims, p.get("axes"), p["size"])
        return {a: int(s) // 2 + 1 for a, s in zip(axes, O.per_axis(p["size"], axes))}
    if name in ("sobel", "prewitt", "scharr", "laplace"):
        return {a: 1 for a in on(dims, p.get("axes"))}
    if name == "diffusion":
        axes = on(dims, p.get("axes"))
        if p.get("steps") is None:
            return {a: _gauss_radius(math.sqrt(2.0 * float(p["diffusivity"]) * float(p["time"]))) + 1 for a in axes}
        return {a: int(p["steps"]) for a in axes}
    if name == "moving_average":
        return {dims[O._along(dims, p.get("axis"))]: int(p["window"])}
    if name == "autoregressive":
        return {dims[O._along(dims, p.get("axis"))]: None}
    if name in O.SPECTRAL_OPS:
        return {a: None for a in on(dims, p.get("axes"))}
    if name in ("pool", "conv_layer"):
        return {}  # they change the output's extent: verified on the whole array (see changes_extent)
    raise KeyError(name)


def changes_extent(name: str, p: dict) -> bool:
    """Whether a step's output voxels are not its input's (extent, stride, pool, conv_layer's channels): a tile's
    window cannot be found by margins, so the oracle runs on the whole array."""
    return name in ("pool", "conv_layer") or p.get("extent", "same") != "same" or p.get("stride", 1) != 1


#: point ops: +1 increasing, -1 decreasing, 0 neither (|x|), for the quantization allowance
def _monotone(name: str, p: dict) -> int:
    if name == "abs":
        return 0
    if name == "scale":
        return 1 if float(p.get("factor", 1.0)) >= 0 else -1
    return 1


#: ops that quantize: a float64 oracle may legitimately land on the other side of a step
QUANTIZING = {"threshold"}


def oracle_ops() -> list[str]:
    """The op names :func:`verify` can recompute: every op of :mod:`convpipe.oracles`."""
    return sorted(O.OPS)


def saturate(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
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


def effective_precision(precision: str, in_dtype: np.dtype, out_dtype: np.dtype) -> str:
    """The precision the tolerance is taken at: float32 when the run computed in float32 (``auto``: when the
    input dtype is exact in float32) or wrote a float32 output."""
    if precision == "auto":
        d = np.dtype(in_dtype)
        exact32 = d.kind == "b" or (d.kind in "iu" and d.itemsize <= 2) or (d.kind == "f" and d.itemsize <= 4)
        precision = "float32" if exact32 else "float64"
    if precision == "float32" or (out_dtype.kind == "f" and out_dtype.itemsize <= 4):
        return "float32"
    return "float64"


def tail_interval(lo: np.ndarray, hi: np.ndarray, tail: list[tuple[str, dict]], dims: str,
                   out_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The image of [lo, hi] under the trailing point ops and the output cast (all monotone or |x|)."""
    for name, p in tail:
        m = _monotone(name, p)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            a = np.asarray(O.OPS[name](lo, dims, **p)[0], dtype=np.float64)
            b = np.asarray(O.OPS[name](hi, dims, **p)[0], dtype=np.float64)
        if m == 1:
            lo, hi = a, b
        elif m == -1:
            lo, hi = b, a
        else:  # |x|: the minimum is 0 when the interval straddles it
            straddle = (lo < 0) & (hi > 0)
            lo, hi = np.where(straddle, 0.0, np.minimum(a, b)), np.maximum(a, b)
    if out_dtype.kind in "iub":
        lo, hi = saturate(lo, out_dtype), saturate(hi, out_dtype)
    return lo, hi
