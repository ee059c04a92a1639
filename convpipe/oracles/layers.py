"""Whole-array references of the convolutional-layer family (SPEC.md, "Convolutional layers").

numpy and scipy only, like the whole package; :mod:`.local` and :mod:`.features` call
:func:`kernel_extent` and :func:`bank_kernels` for correlate / convolve / filter_bank with ``extent``,
``stride`` or a bank in one ``.npy``.

- ``extent: valid`` = scipy.signal.correlate(x, k, mode="valid") (convolve: scipy.signal.convolve);
- ``extent: full`` = the input extended by k - 1 on each side by ``mode`` (numpy.pad), then the valid
  correlation (with ``constant``, cval 0: scipy.signal.correlate / convolve mode="full");
- ``extent: same`` = scipy.ndimage.correlate / convolve;
- ``stride`` s keeps positions 0, s, 2s, ... of that result along each axis;
- ``pool``: out[i] = reduce(x[i*s : i*s + size]) for i = 0 .. (n - size) // s;
- ``conv_layer``: out[o] = activation(bias[o] + sum_i correlate(x[i], weights[o, i])).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import scipy.signal as ss

from .base import insert_axis, op, per_axis, resolve_on
from .kernels import kernel_array

#: scipy.ndimage's boundary modes as numpy.pad names them
NP_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap", "constant": "constant"}
_DIRECT_LIMIT = 2e7  # multiply-adds up to which scipy.signal computes directly (beyond: its FFT, ~1e-13)


def per_sub(x: np.ndarray, dims: str, on: str, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` on every sub-array over ``on`` (the result may change the lengths of those axes)."""
    x = np.asarray(x, dtype=np.float64)
    idx = [dims.index(a) for a in on]
    k = len(idx)
    moved = np.moveaxis(x, idx, list(range(x.ndim - k, x.ndim)))
    lead = moved.shape[: x.ndim - k]
    outs = [fn(np.ascontiguousarray(moved[i])) for i in np.ndindex(*lead)]
    out = np.stack(outs).reshape(lead + outs[0].shape) if outs else np.zeros(lead + (0,) * k)
    return np.moveaxis(out, list(range(x.ndim - k, x.ndim)), idx)


def _method(s: np.ndarray, k: np.ndarray) -> str:
    return "direct" if s.size * k.size <= _DIRECT_LIMIT else "fft"


def correlate_extent(s: np.ndarray, k: np.ndarray, extent: str = "same", stride: tuple = (), mode: str = "reflect",
                     cval: float = 0.0, origin: Any = 0, flip: bool = False) -> np.ndarray:
    """One sub-array (``k.ndim`` axes) correlated (``flip``: convolved) with ``k`` for ``extent``, then strided."""
    if extent == "same":
        f = ndi.convolve if flip else ndi.correlate
        y = f(s, k, mode=mode, cval=cval, origin=origin)
    elif extent == "valid":
        f = ss.convolve if flip else ss.correlate
        y = f(s, k, mode="valid", method=_method(s, k))
    elif extent == "full":
        pads = [(n - 1, n - 1) for n in k.shape]
        kw = {"constant_values": cval} if mode == "constant" else {}
        ext = np.pad(s, pads, mode=NP_PAD[mode], **kw)
        f = ss.convolve if flip else ss.correlate
        y = f(ext, k, mode="valid", method=_method(ext, k))
    else:
        raise ValueError(f"unknown extent {extent!r}")
    stride = tuple(stride) or (1,) * k.ndim
    return y[tuple(slice(None, None, int(st)) for st in stride)]


def kernel_extent(x: np.ndarray, dims: str, on: str, k: np.ndarray, extent: str, stride: Any, mode: str,
                  cval: float, origin: Any = 0, flip: bool = False) -> np.ndarray:
    """correlate / convolve with ``extent`` and ``stride`` on every sub-array over ``on``."""
    st = tuple(stride.get(a, 1) for a in on) if isinstance(stride, dict) else (stride,) * len(on)
    return per_sub(x, dims, on, lambda s: correlate_extent(s, k, extent, st, mode, cval, origin, flip))


# --------------------------------------------------------------------------- pool

_REDUCE = {"max": np.max, "min": np.min, "mean": np.mean, "sum": np.sum}


def pool_sub(s: np.ndarray, size: tuple, stride: tuple, kind: str) -> np.ndarray:
    """out[i] = reduce(s[i*st : i*st + size]) per axis; the trailing remainder is dropped."""
    w = np.lib.stride_tricks.sliding_window_view(s, size)
    w = w[tuple(slice(None, None, int(t)) for t in stride)]
    return _REDUCE[kind](w, axis=tuple(range(s.ndim, 2 * s.ndim)))


@op
def pool(x, dims, size, stride=None, kind="max", axes=None):
    on = resolve_on(dims, axes, size, stride)
    sz = per_axis(size, on)
    st = sz if stride is None else per_axis(stride, on)
    return per_sub(x, dims, on, lambda s: pool_sub(s, sz, st, kind)), dims


# --------------------------------------------------------------------------- conv_layer

_ACT = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0.0), "tanh": np.tanh,
        "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v))}


@op
def conv_layer(x, dims, weights, bias=None, activation="none", extent="same", stride=1, mode="reflect", cval=0.0,
               axes=None, base_dir=None):
    """activation(bias[o] + sum_i correlate(x[i], weights[o, i])): input channels on ``c`` (none: one)."""
    w = kernel_array(weights, base_dir)
    out_c, in_c = w.shape[:2]
    nd = w.ndim - 2
    x = np.asarray(x, dtype=np.float64)
    if "c" not in dims:
        x, dims_in = x[None], "c" + dims
    else:
        dims_in = dims
    xc = np.moveaxis(x, dims_in.index("c"), 0)
    rest = dims_in.replace("c", "")
    on = resolve_on(rest, axes, default={1: "x", 2: "yx", 3: "zyx"}.get(nd, "yx"))
    b = np.zeros(out_c) if bias is None else np.broadcast_to(np.asarray(bias, dtype=float), (out_c,))
    outs = []
    for o in range(out_c):
        acc = None
        for i in range(in_c):
            y = kernel_extent(xc[i], rest, on, w[o, i], extent, stride, mode, cval)
            acc = y if acc is None else acc + y
        outs.append(_ACT[activation](acc + b[o]))
    out_dims = dims if "c" in dims else insert_axis(dims, "c")
    res = np.stack(outs, axis=0)  # c first, then `rest`
    return np.moveaxis(res, 0, out_dims.index("c")), out_dims


def bank_kernels(kernels: Any, base_dir: Path | None = None) -> list[np.ndarray] | None:
    """A bank given as one ``.npy`` of shape (N, *kernel): its N kernels; None for a list of sources."""
    if isinstance(kernels, (str, Path)):
        return list(kernel_array(kernels, base_dir))
    return None
