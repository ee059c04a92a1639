"""Constants, axis helpers and the registry of references (every family module registers into it)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

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
