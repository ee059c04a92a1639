"""The whole-array references of SPEC.md's object ops (morphology, distance transform) and of
``threshold {method}``: scipy.ndimage and scikit-image on the whole array, nothing of convpipe.

Registered into :data:`convpipe.oracles.OPS` by name (the package imports this module), with the same calling
convention: ``opname(x, dims, **spec params) -> (y, out_dims)`` in canonical order. The helpers at the end
serve :mod:`convpipe.verify` (how far an object op reads, which passes a run makes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi

from .base import OPS, canonical, op, per_axis, per_plane
from .kernels import kernel_array
from .point import GLOBAL_OPS, auto_threshold  # noqa: F401  (auto_threshold: also this module's)


class O:  # the names this module takes from the other oracle modules
    op = staticmethod(op)
    OPS = OPS
    per_axis = staticmethod(per_axis)
    per_plane = staticmethod(per_plane)
    canonical = staticmethod(canonical)
    kernel_array = staticmethod(kernel_array)
    GLOBAL_OPS = GLOBAL_OPS

SPATIAL = "zyx"
BINARY_OPS = ("binary_erosion", "binary_dilation", "binary_opening", "binary_closing")
GREY_OPS = ("grey_erosion", "grey_dilation", "grey_opening", "grey_closing", "white_tophat", "black_tophat")
MORPHOLOGY_OPS = BINARY_OPS + GREY_OPS
OBJECT_OPS = MORPHOLOGY_OPS + ("distance_transform",)


def object_axes(dims: str, axes: str | None) -> str:
    """Explicit ``axes`` (in the order of ``dims``), else every spatial axis of ``dims``."""
    if axes is not None:
        return "".join(a for a in dims if a in axes)
    return "".join(a for a in dims if a in SPATIAL)


def _sub_arrays(x: np.ndarray, dims: str, on: str, fn, out_dtype) -> np.ndarray:
    """``fn`` on every sub-array of ``x`` over ``on`` (``x`` not cast: masks stay masks)."""
    idx = [dims.index(a) for a in on]
    k = len(idx)
    moved = np.moveaxis(np.asarray(x), idx, list(range(x.ndim - k, x.ndim)))
    out = np.empty(moved.shape, dtype=out_dtype)
    for lead in np.ndindex(*moved.shape[: x.ndim - k]):
        out[lead] = fn(np.ascontiguousarray(moved[lead]))
    return np.moveaxis(out, list(range(x.ndim - k, x.ndim)), idx)


def _footprint(src: Any, base_dir=None) -> np.ndarray:
    return O.kernel_array(src, base_dir) != 0


def _binary(name: str):
    def ref(x, dims, connectivity=None, footprint=None, iterations=1, axes=None, base_dir=None):
        on = object_axes(dims, axes)
        st = (_footprint(footprint, base_dir) if footprint is not None
              else ndi.generate_binary_structure(len(on), 1 if connectivity is None else connectivity))
        fn = getattr(ndi, name)
        return _sub_arrays(np.asarray(x) != 0, dims, on,
                           lambda m: fn(m, structure=st, iterations=iterations, border_value=0), np.uint8), dims

    ref.__name__ = name
    ref.__doc__ = f"scipy.ndimage.{name}(x != 0, structure, iterations, border_value=0) per sub-array, uint8."
    return O.op(ref)


def _extremum(v: np.ndarray, kind: str, kw: dict) -> np.ndarray:
    """scipy.ndimage.grey_erosion / grey_dilation with SPEC.md's non-finite rule: a window holding a NaN is
    NaN (scipy's running extrema have no rule for NaN; for finite input this is scipy's result)."""
    fn = ndi.grey_erosion if kind == "erosion" else ndi.grey_dilation
    nan = np.isnan(v)
    if not nan.any():
        return fn(v, **kw)
    y = fn(np.where(nan, 0.0, v), **kw)
    m = {k: val for k, val in kw.items() if k in ("size", "footprint")}
    # the voxels whose window holds a NaN: the same window over the NaN mask (erosion: not reflected)
    spread = (ndi.maximum_filter if kind == "erosion" else ndi.grey_dilation)(nan.astype(np.uint8),
                                                                             mode="constant", **m)
    return np.where(spread.astype(bool), np.nan, y)


#: scipy's definitions: opening = dilation(erosion), closing = erosion(dilation), each with mode and cval;
#: white_tophat = x - opening, black_tophat = closing - x
_GREY_STAGES = {"grey_erosion": ("erosion",), "grey_dilation": ("dilation",),
                "grey_opening": ("erosion", "dilation"), "grey_closing": ("dilation", "erosion"),
                "white_tophat": ("erosion", "dilation"), "black_tophat": ("dilation", "erosion")}


def _grey(name: str):
    def ref(x, dims, size=None, footprint=None, mode="reflect", cval=0.0, axes=None, base_dir=None):
        on = object_axes(dims, axes) if not isinstance(size, dict) or axes is not None else \
            "".join(a for a in dims if a in size)
        kw: dict[str, Any] = {"mode": mode, "cval": cval}
        if footprint is not None:
            kw["footprint"] = _footprint(footprint, base_dir)
        else:
            kw["size"] = O.per_axis(size, on)

        def plane(v):
            u = v
            for kind in _GREY_STAGES[name]:
                u = _extremum(u, kind, kw)
            if name == "white_tophat":
                return v - u
            if name == "black_tophat":
                return u - v
            return u

        return O.per_plane(x, dims, on, plane), dims

    ref.__name__ = name
    ref.__doc__ = f"scipy.ndimage.{name} per sub-array over axes, float64."
    return O.op(ref)


for _n in BINARY_OPS:
    _binary(_n)
for _n in GREY_OPS:
    _grey(_n)


def sampling_of(sampling: Any, on: str) -> tuple[float, ...]:
    """A number, a per-axis map or a list in the order of ``on``: one voxel size per axis."""
    if sampling is None:
        return tuple(1.0 for _ in on)
    if isinstance(sampling, dict):
        return tuple(float(sampling.get(a, 1.0)) for a in on)
    if isinstance(sampling, (list, tuple)):
        return tuple(float(v) for v in sampling)
    return tuple(float(sampling) for _ in on)


@O.op
def distance_transform(x, dims, sampling=None, axes=None):
    """scipy.ndimage.distance_transform_edt(x != 0, sampling) on every sub-array over ``axes``, float64.

    ``sampling``: a number, a per-axis map, or a list in the order of ``axes`` as written (default z, y, x).
    """
    on = object_axes(dims, axes)
    if isinstance(sampling, (list, tuple)):  # in the order of axes as written (default z, y, x)
        sampling = dict(zip(axes if axes is not None else on, sampling))
    s = sampling_of(sampling, on)
    mask = np.asarray(x) != 0
    return _sub_arrays(mask, dims, on, lambda m: ndi.distance_transform_edt(m, sampling=s), np.float64), dims


# --------------------------------------------------------------------------- for convpipe.verify


def reach(name: str, p: dict, dims: str, base_dir=None) -> dict | None:
    """Per axis, how far an output voxel of an object op sees into its input (None: the whole extent);
    None when ``name`` is not an object op."""
    if name not in OBJECT_OPS:
        return None
    if name == "distance_transform":
        return {a: None for a in object_axes(dims, p.get("axes"))}
    size = p.get("size")
    on = (object_axes(dims, p.get("axes")) if not (isinstance(size, dict) and p.get("axes") is None)
          else "".join(a for a in dims if a in size))
    if p.get("footprint") is not None:
        shape = O.kernel_array(p["footprint"], base_dir).shape
    elif name in BINARY_OPS:
        shape = (3,) * len(on)
    else:
        shape = O.per_axis(size, on)
    reps = int(p.get("iterations", 1)) * (1 if name.endswith(("erosion", "dilation")) else 2)
    return {a: int(k) * reps + 1 for a, k in zip(on, shape)}


def whole_array(name: str, p: dict) -> bool:
    """Whether the op needs the whole array (a threshold computed from it)."""
    return name == "threshold" and p.get("method") is not None


def passes_before(steps: list, dims: str) -> int:
    """How many passes convpipe runs before the last one (global pre-passes cut, each distance transform
    axis after the first is a pass of its own)."""
    n = 0
    for i, (name, p) in enumerate(steps):
        if (name in O.GLOBAL_OPS or whole_array(name, p)) and i > 0:
            n += 1
        if name == "distance_transform":
            n += len(object_axes(O.canonical(dims), p.get("axes"))) - 1
    return n


def resolve_thresholds(tail: list, v: np.ndarray, dims: str) -> list:
    """Trailing point ops ``[(name, params)]`` with every ``threshold {method}`` replaced by its value on the
    values that reach it (``v``: the whole array entering the tail)."""
    out = []
    u = v
    for name, p in tail:
        if whole_array(name, p):
            p = {"value": float(auto_threshold(u, p["method"]))}
        out.append((name, p))
        u, dims = O.OPS[name](u, dims, **p)
    return out


def with_voxel_sizes(steps: list, info: Any, level: int) -> list:
    """``distance_transform`` steps without ``sampling`` get the voxel sizes of the OME level read (``info``:
    the input's multiscale metadata, with ``axes`` letters and per-level ``scale``), as convpipe's run does."""
    if info is None or not getattr(info, "axes", None):
        return steps
    try:
        sizes = dict(zip(info.axes, (float(v) for v in info.levels[level].scale)))
    except (IndexError, TypeError, ValueError):
        return steps
    out = []
    for name, p in steps:
        if name == "distance_transform" and p.get("sampling") is None:
            p = dict(p, sampling={a: v for a, v in sizes.items() if a in SPATIAL and v > 0})
        out.append((name, p))
    return out
