"""References of the object ops (SPEC.md "Objects"): ``label`` (scipy.ndimage.label) and ``regionprops``
(skimage.measure.regionprops_table, imported when it runs), on every whole sub-array over the op's axes."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi

from .base import AXES_ORDER, op, planes, table

SPATIAL = "zyx"
DEFAULT_PROPERTIES = ("label", "area", "centroid", "bbox")
INTENSITY_PROPERTIES = ("intensity_mean", "intensity_min", "intensity_max", "intensity_sum")
#: ops whose every output voxel depends on its whole sub-array (a label's number: every voxel before it)
WHOLE_ARRAY_OPS = ("label",)


def acted_axes(dims: str, axes: str | None) -> str:
    """The axes an object op acts on: ``axes`` in the order of ``dims``, default the spatial axes present."""
    if axes is None:
        return "".join(a for a in SPATIAL if a in dims) or dims[-1]
    return "".join(a for a in dims if a in axes)


def _canonical_source(source: tuple | None, dims: str, shape: tuple[int, ...]) -> np.ndarray:
    if source is None:
        raise ValueError("intensity: input needs the pipeline's input (source)")
    arr, sdims = source
    arr = np.asarray(arr)
    canon = "".join(a for a in AXES_ORDER if a in sdims)
    arr = np.transpose(arr, [sdims.index(a) for a in canon])
    if canon != dims or arr.shape != tuple(shape):
        raise ValueError(f"the input ({canon} {arr.shape}) does not match the label image ({dims} {shape})")
    return arr


@op
def label(x, dims, connectivity=1, axes=None, dtype="int32"):
    """scipy.ndimage.label(x != 0, generate_binary_structure(len(axes), connectivity)) per sub-array."""
    x = np.asarray(x)
    on = acted_axes(dims, axes)
    st = ndi.generate_binary_structure(len(on), int(connectivity))
    out = np.zeros(x.shape, dtype=np.dtype(dtype))
    for sl, _ in planes(dims, on, x.shape):
        out[sl] = ndi.label(x[sl] != 0, structure=st)[0]
    return out, dims


@op
def regionprops(x, dims, properties=None, intensity="none", axes=None, table=None, source=None):
    """The label image passes through."""
    return np.asarray(x), dims


@table("regionprops")
def regionprops_table(x, dims, properties=None, intensity="none", axes=None, table=None, source=None):
    """skimage.measure.regionprops_table on every sub-array; one column per other axis by its letter;
    intensity_sum = area * intensity_mean."""
    from skimage.measure import regionprops_table as rpt

    x = np.asarray(x)
    if x.dtype.kind == "f":  # the oracle chain hands over float64 of an integer label image
        if not np.all(x == np.round(x)):
            raise TypeError("regionprops needs integer labels")
        x = x.astype(np.int64)
    on = acted_axes(dims, axes)
    props = list(properties) if properties is not None else (
        list(DEFAULT_PROPERTIES) + (list(INTENSITY_PROPERTIES) if intensity == "input" else []))
    src = _canonical_source(source, dims, x.shape).astype(np.float64) if intensity == "input" else None
    ask = [p for p in props if p != "intensity_sum"]
    if "intensity_sum" in props:
        ask += [p for p in ("area", "intensity_mean") if p not in ask]
    others = [a for a in dims if a not in on]
    cols: dict[str, list] = {}
    for sl, where in planes(dims, on, x.shape):
        lab = x[sl]
        t = rpt(lab, intensity_image=None if src is None else src[sl], properties=ask)
        n = len(t["label"]) if "label" in t else len(next(iter(t.values())))
        for a in others:
            cols.setdefault(a, []).append(np.full(n, where[a], dtype=np.int64))
        if "intensity_sum" in props:
            t["intensity_sum"] = np.asarray(t["area"], dtype=np.float64) * np.asarray(t["intensity_mean"])
        keep = [k for k in t if k.split("-")[0] in props]
        for k in keep:
            cols.setdefault(k, []).append(np.asarray(t[k]))
    return {k: np.concatenate(v) for k, v in cols.items()}
