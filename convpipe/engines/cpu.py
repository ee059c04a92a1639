"""The CPU engines: numpy arrays through OpenCV where it is exact, else scipy.ndimage.

Every function works on a block that was already padded by the caller (the halo machinery in
:mod:`convpipe.tiles` does the boundary modes), so the engine's own border handling never matters: the
caller crops it away. That is what lets OpenCV stand in for scipy exactly.

Measured on a 2048x2048 float32 plane, one core: scipy gaussian sigma=2 84 ms vs ``cv2.sepFilter2D``
with scipy's weights 8 ms; Sobel magnitude 136 ms vs 5 ms; max relative difference 3e-7.

OpenCV's thread pool. Dask already runs one task per core, so OpenCV's own pool would oversubscribe the
machine: our calls run with one OpenCV thread (:func:`opencv_threads`), and the count the process had is
restored as soon as no call of ours is running. Importing this module changes nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from ..centring import pass_cvals

try:  # OpenCV is a hard dependency, but keep the scipy path alive if a wheel is broken
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

_CV_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_CV_LOCK = threading.Lock()
_CV_STATE = {"users": 0, "saved": 0}


@contextlib.contextmanager
def opencv_threads(n: int = 1) -> Iterator[None]:
    """Run the enclosed OpenCV calls with ``n`` OpenCV threads, then give the process its own count back.

    Reference-counted: dask runs our calls on several threads at once, so the count the process had is saved
    by the first of them to enter and restored by the last to leave (a save/restore per call would let two
    overlapping calls restore each other's setting and leave ``n`` behind).
    """
    if cv2 is None:
        yield
        return
    with _CV_LOCK:
        if _CV_STATE["users"] == 0:
            _CV_STATE["saved"] = cv2.getNumThreads()
            cv2.setNumThreads(n)
        _CV_STATE["users"] += 1
    try:
        yield
    finally:
        with _CV_LOCK:
            _CV_STATE["users"] -= 1
            if _CV_STATE["users"] == 0:
                cv2.setNumThreads(_CV_STATE["saved"])


def _finite(x: np.ndarray) -> bool:
    from .dispatch import all_finite

    return all_finite(x)


def _cv_layout(x: np.ndarray) -> bool:
    return cv2 is not None and x.dtype in _CV_DTYPES and x.ndim >= 1 and x.strides[-1] == x.itemsize


def _cv_ok(x: np.ndarray) -> bool:
    # OpenCV skips zero taps (0 * NaN never happens) and filter2D switches to a DFT from 11x11 kernels, which
    # spreads one NaN over the whole block: blocks with NaN/inf take scipy's path, which is the oracle's own
    return _cv_layout(x) and _finite(x)


def _planes(x: np.ndarray):
    """Iterate 2-D views over the last two axes."""
    lead = x.shape[:-2]
    for idx in np.ndindex(*lead):
        yield idx


def sep_correlate(x: np.ndarray, weights: dict[int, tuple[np.ndarray, int]], *,
                  fill: tuple[dict[int, np.ndarray], float] | None = None,
                  order: list[int] | None = None) -> np.ndarray:
    """Correlate ``x`` with a separable kernel: ``weights[axis] = (w, center)``.

    Returns an array of x's shape whose values are exact where the whole kernel footprint lies inside
    ``x`` (the caller crops the rest). Output dtype = x.dtype (float32 or float64).

    ``fill = (outside, cval)`` reproduces scipy's sequence of 1-D passes in ``constant`` mode: scipy pads
    each pass's *input* (an intermediate result) with cval, so before the pass along an axis the voxels
    outside the array along that axis (``outside[axis]``, a boolean mask) are reset to cval. The passes
    then run in ``order`` (scipy's order for the op). Needed only when the kernel does not sum to one.
    ``fill = (outside, cval, shift)``: ``x`` is centred by ``shift`` (convpipe.centring), each pass pads with
    the true cval as the centred intermediate holds it (:func:`convpipe.centring.pass_cvals`).
    """
    if not weights:
        return x
    cv = _cv_ok(x)  # once per call: each pass of finite weights over finite data stays finite
    if fill is not None:
        outside, cval, *shift = fill
        passes = [a for a in (order or sorted(weights)) if a in weights]
        cvals = pass_cvals(cval, shift[0] if shift else 0.0, weights, passes)
        out = x
        for k, a in enumerate(passes):
            mask = outside.get(a)
            if k > 0 and mask is not None and mask.any():
                out = out.copy() if out is x else out
                sl = [slice(None)] * out.ndim
                sl[a] = mask
                out[tuple(sl)] = cvals[k]
            w, c = weights[a]
            out = _correlate1d_any(out, w, c, a, cv=cv)
        return out
    out = x
    nd = x.ndim
    axes = sorted(weights)
    last2 = [a for a in axes if a >= nd - 2]
    rest = [a for a in axes if a < nd - 2]
    for a in rest:
        w, c = weights[a]
        out = _correlate1d_any(out, w, c, a, cv=cv)
    if last2:
        if cv and _cv_layout(out) and nd >= 2:
            ky = weights.get(nd - 2, (np.ones(1), 0))
            kx = weights.get(nd - 1, (np.ones(1), 0))
            out = _cv_sep2d(out, kx, ky)
        else:
            for a in last2:
                w, c = weights[a]
                out = _correlate1d_any(out, w, c, a, cv=cv)
    return out


def _cv_sep2d(x: np.ndarray, kx: tuple[np.ndarray, int], ky: tuple[np.ndarray, int]) -> np.ndarray:
    res = np.empty(x.shape, dtype=x.dtype)
    wx = np.asarray(kx[0], dtype=x.dtype)
    wy = np.asarray(ky[0], dtype=x.dtype)
    anchor = (int(kx[1]), int(ky[1]))
    depth = cv2.CV_32F if x.dtype == np.float32 else cv2.CV_64F
    with opencv_threads():
        for idx in _planes(x):
            src = x[idx]
            if src.shape[0] == 0 or src.shape[1] == 0:
                continue
            cv2.sepFilter2D(src, depth, wx, wy, dst=res[idx], anchor=anchor, borderType=cv2.BORDER_REFLECT)
    return res


def _correlate1d_any(x: np.ndarray, w: np.ndarray, center: int, axis: int, *, cv: bool | None = None) -> np.ndarray:
    """1-D correlation along any axis; OpenCV on a (rows, cols) view when the layout allows."""
    nd = x.ndim
    cv = (_cv_ok(x) if cv is None else cv) and _cv_layout(x)
    if cv and axis == nd - 1:
        return _cv_sep2d(x if nd >= 2 else x[None], (w, center), (np.ones(1), 0)).reshape(x.shape)
    if cv and x.flags.c_contiguous and x.shape[axis] > 0:
        # Collapse to 2-D (rows = this axis) for each leading index: a vertical 1-D filter in OpenCV.
        lead = x.shape[:axis]
        n = x.shape[axis]
        m = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
        if 0 < m < (1 << 30):
            v = x.reshape(lead + (n, m))
            return _cv_sep2d(v, (np.ones(1), 0), (w, center)).reshape(x.shape)
    origin = int(center) - len(w) // 2
    return ndi.correlate1d(x, w, axis=axis, mode="reflect", origin=origin, output=x.dtype)


def correlate_nd(x: np.ndarray, k: np.ndarray, centers: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """Direct (non-separable) correlation of ``x`` with ``k`` over ``axes``."""
    if len(axes) == 2 and axes == (x.ndim - 2, x.ndim - 1) and _cv_ok(x):
        res = np.empty(x.shape, dtype=x.dtype)
        kk = np.asarray(k, dtype=x.dtype)
        depth = cv2.CV_32F if x.dtype == np.float32 else cv2.CV_64F
        anchor = (int(centers[1]), int(centers[0]))
        with opencv_threads():
            for idx in _planes(x):
                if x[idx].size:
                    cv2.filter2D(x[idx], depth, kk, dst=res[idx], anchor=anchor, borderType=cv2.BORDER_REFLECT)
        return res
    full = np.ones(x.ndim, dtype=int)
    shape = list(full)
    for a, s in zip(axes, k.shape):
        shape[a] = s
    kk = k.reshape(shape)
    origins = [0] * x.ndim
    for a, c, s in zip(axes, centers, k.shape):
        origins[a] = int(c) - s // 2
    return ndi.correlate(x, kk, mode="reflect", origin=origins, output=x.dtype)


def rank_filter(x: np.ndarray, kind: str, sizes: dict[int, int]) -> np.ndarray:
    """median / minimum / maximum over a box of ``sizes`` (centred as scipy), min/max as exact 1-D passes."""
    size = [sizes.get(a, 1) for a in range(x.ndim)]
    if kind in ("minimum", "maximum"):
        # Box min/max is separable and exact: one 1-D pass per axis.
        f = ndi.minimum_filter1d if kind == "minimum" else ndi.maximum_filter1d
        out = x
        for a, s in sizes.items():
            if s > 1:
                out = f(out, s, axis=a, mode="reflect")
        return out
    if kind != "median":
        raise ValueError(f"unknown rank filter {kind!r}")
    return ndi.median_filter(x, size=size, mode="reflect")


def conv_channels(xc: np.ndarray, w: np.ndarray, stride: tuple[int, ...], bias: Any = None, *,
                  check_finite: bool = False) -> np.ndarray | None:
    """Valid multi-channel correlation plus bias by BLAS matrix products (:func:`.gemm.conv_channels`), with
    one BLAS thread (:func:`blas_threads`): dask already runs one tile per core."""
    from .gemm import conv_channels as gemm

    with blas_threads(1):
        return gemm(xc, w, stride, np, bias=bias, check_finite=check_finite)


_BLAS_LOCK = threading.Lock()
_BLAS_STATE: dict = {"users": 0, "saved": 0, "lib": None}


def _openblas() -> tuple[Any, Any] | None:
    """(get, set) of the thread count of numpy's own OpenBLAS (the scipy-openblas of numpy's wheels), or None
    where numpy was built against another BLAS (then nothing is changed)."""
    if _BLAS_STATE["lib"] is None:
        import ctypes
        import glob
        import os

        found: Any = False
        base = os.path.dirname(os.path.abspath(np.__file__))
        pats = [os.path.join(base + ".libs", "*openblas*"), os.path.join(base, ".dylibs", "*openblas*")]
        for path in sorted(p for pat in pats for p in glob.glob(pat)):
            try:
                lib = ctypes.CDLL(path)  # already loaded by numpy: the same library, not a second copy
            except OSError:
                continue
            for name in ("scipy_openblas_{}_num_threads64_", "scipy_openblas_{}_num_threads", "openblas_{}_num_threads64_",
                         "openblas_{}_num_threads"):
                get, put = getattr(lib, name.format("get"), None), getattr(lib, name.format("set"), None)
                if get is not None and put is not None:
                    found = (get, put)
                    break
            if found:
                break
        _BLAS_STATE["lib"] = found
    return _BLAS_STATE["lib"] or None


@contextlib.contextmanager
def blas_threads(n: int = 1) -> Iterator[None]:
    """Run the enclosed matrix products with ``n`` threads of numpy's OpenBLAS, then give the process its count
    back (reference-counted like :func:`opencv_threads`).

    OpenBLAS's own threads on top of dask's one task per core oversubscribe the cores, and concurrent callers
    of a threaded OpenBLAS wait for each other: measured on conv_layer 16 -> 32 channels (2 cores), 0.71 s
    per tile's products with OpenBLAS's 2 threads under 2 dask threads, against 0.13 s with one.
    """
    lib = _openblas()
    if lib is None:
        yield
        return
    get, put = lib
    with _BLAS_LOCK:
        if _BLAS_STATE["users"] == 0:
            _BLAS_STATE["saved"] = int(get())
            put(int(n))
        _BLAS_STATE["users"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_STATE["users"] -= 1
            if _BLAS_STATE["users"] == 0:
                put(_BLAS_STATE["saved"])


def fftconvolve(x: np.ndarray, k: np.ndarray, mode: str = "full", axes: Any = None) -> np.ndarray:
    """scipy.signal.fftconvolve."""
    from scipy.signal import fftconvolve as fc

    return fc(x, np.asarray(k), mode=mode, axes=axes)


_CV_TRANSPOSE = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)}


def transposed_copy(a: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    """``numpy.ascontiguousarray(a.transpose(perm))`` for a C-contiguous ``a``, fast.

    numpy copies a transposed view element by element with a large stride (16x512x512 uint16, swapping the
    last two axes: 8.9 ms here); OpenCV's blocked 2-D transpose takes 1.4 ms. So: one 2-D transpose per
    leading index moves the axis that becomes last to the end, then the remaining order of the leading axes
    is a copy of whole contiguous rows.
    """
    a = np.ascontiguousarray(a)
    n = a.ndim
    k = perm[-1] if perm else 0
    if n < 2 or k == n - 1 or cv2 is None or a.dtype not in _CV_TRANSPOSE or not a.size:
        return np.ascontiguousarray(a.transpose(perm))
    lead, nk = int(np.prod(a.shape[:k], dtype=np.int64)), a.shape[k]
    rest = int(np.prod(a.shape[k + 1:], dtype=np.int64))
    if nk >= 1 << 31 or rest >= 1 << 31:
        return np.ascontiguousarray(a.transpose(perm))
    src = a.reshape(lead, nk, rest)
    moved = np.empty((lead, rest, nk), dtype=a.dtype)
    with opencv_threads():
        for i in range(lead):
            cv2.transpose(src[i], dst=moved[i])
    order = [d for d in range(n) if d != k] + [k]  # the axes of `moved`, reshaped back
    moved = moved.reshape(tuple(a.shape[d] for d in order))
    return np.ascontiguousarray(moved.transpose([order.index(p) for p in perm]))


def contiguous(v: np.ndarray) -> np.ndarray:
    """``v`` C-contiguous; a transposed view of a contiguous array is copied by :func:`transposed_copy`."""
    if v.flags.c_contiguous or not isinstance(v, np.ndarray):
        return v if v.flags.c_contiguous else v.copy()  # CuPy: its own copy (C order)
    order = sorted(range(v.ndim), key=lambda i: -v.strides[i])  # the axes in memory order
    base = np.ascontiguousarray(v.transpose(order))  # a slice of a larger array: copied in memory order (fast)
    return transposed_copy(base, tuple(order.index(i) for i in range(v.ndim)))
