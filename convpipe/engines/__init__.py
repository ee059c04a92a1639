"""Engines: the fastest exact kernels the ops are built from, chosen by the type of the block.

Every kernel works on a block the caller already padded (the halo machinery in :mod:`convpipe.tiles` does
the boundary modes), so the engine's own border handling never matters: the caller crops it away.

One dispatch mechanism
----------------------
Each function below is a :class:`dask.utils.Dispatch` on the type of its first argument, as dask-image
dispatches its filters: numpy arrays (and anything else on the host) go to :mod:`.cpu` (OpenCV, scipy),
CuPy arrays to :mod:`.gpu` (cupyx.scipy.ndimage). The CuPy implementations are registered with
``register_lazy("cupy")``: the first time a CuPy array arrives, never before, so the CPU path never imports
CuPy. :func:`register_device_type` sends another array type with CuPy's API to the CuPy engines (the test
suite's CuPy double). Ops call these functions and numpy's own (which reach CuPy through numpy's
``__array_function__`` / ``__array_ufunc__`` protocols); they never look at the array type themselves.

The dispatch tables are built on first use: importing this package imports numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dispatch
from .dispatch import (  # noqa: F401  (this package's interface)
    ASSUME_FINITE,
    _dispatch,
    all_finite,
    array_module,
    on_device,
    register_device_type,
    to_host,
)


def _implementations(where: str) -> dict[str, Any]:
    """The functions behind each dispatched name on the host (``cpu``) or on a CUDA device (``gpu``)."""
    if where == "cpu":
        from . import cpu

        return {"sep_correlate": cpu.sep_correlate, "correlate_nd": cpu.correlate_nd,
                "rank_filter": cpu.rank_filter, "fftconvolve": cpu.fftconvolve,
                "conv_channels": cpu.conv_channels, "array_module": lambda x: np, "to_host": lambda x, **kw: np.asarray(x),
                "on_device": lambda x: False}
    from . import gpu

    return {"sep_correlate": gpu.sep_correlate, "correlate_nd": gpu.correlate_nd,
            "rank_filter": gpu.rank_filter, "fftconvolve": gpu.fftconvolve,
            "conv_channels": gpu.conv_channels, "array_module": lambda x: gpu._cp(), "to_host": gpu.to_host, "on_device": lambda x: True}


dispatch.provide(_implementations)


# --------------------------------------------------------------------------- the kernels


def sep_correlate(x: Any, weights: dict[int, tuple[np.ndarray, int]], *,
                  fill: tuple[dict[int, np.ndarray], float] | None = None, order: list[int] | None = None) -> Any:
    """Correlate ``x`` with a separable kernel: ``weights[axis] = (w, center)``, ``w`` a 1-D host array.

    Returns an array of ``x``'s shape and dtype (float32 or float64) whose values are exact where the whole
    kernel footprint lies inside ``x`` (the caller crops the rest).

    ``fill = (outside, cval)`` reproduces scipy's sequence of 1-D passes in ``constant`` mode: scipy pads
    each pass's *input* (an intermediate result) with cval, so before the pass along an axis the voxels
    outside the array along that axis (``outside[axis]``, a boolean mask) are reset to cval. The passes
    then run in ``order`` (scipy's order for the op). Needed only when the kernel does not sum to one.
    ``fill = (outside, cval, shift)``: ``x`` holds values centred by ``shift`` (convpipe.centring); each pass
    pads with the true cval minus ``shift`` times the earlier passes' kernel sums (centring.pass_cvals).
    """
    return _dispatch("sep_correlate")(x, weights, fill=fill, order=order)


def correlate_nd(x: Any, k: np.ndarray, centers: tuple[int, ...], axes: tuple[int, ...]) -> Any:
    """Direct (non-separable) correlation of ``x`` with the host kernel ``k`` over ``axes`` (``centers``: the
    kernel's centre per axis). Same shape and dtype as ``x``; exact where the footprint lies inside ``x``."""
    return _dispatch("correlate_nd")(x, k, centers, axes)


def fftconvolve(x: Any, k: Any, mode: str = "full", axes: Any = None) -> Any:
    """``scipy.signal.fftconvolve(x, k, mode, axes)`` (cupyx's on a device block; ``k`` may be on the host)."""
    return _dispatch("fftconvolve")(x, k, mode=mode, axes=axes)


def conv_channels(xc: Any, w: np.ndarray, stride: tuple[int, ...], bias: Any = None, *,
                  check_finite: bool = False) -> Any:
    """conv_layer's valid multi-channel correlation: ``xc`` (in_c, *S) channel-major, ``w`` (out_c, in_c, *k)
    a host array (float64 keeps the exact offset term, :mod:`.gemm`) -> (out_c, *O), ``O = (S - k) // stride
    + 1``, ``xc``'s dtype; output channel o is bias[o] + sum_i correlate(xc[i], w[o, i]) strided (matrix
    products: :mod:`.gemm`). For finite blocks; the caller takes scipy's per-pair path where NaN/inf must
    reach only their footprint. ``check_finite``: return None for a block holding NaN/inf (known from the
    per-channel minimum and maximum the engine takes anyway: no separate pass over the block)."""
    return _dispatch("conv_channels")(xc, w, stride, bias, check_finite=check_finite)


def rank_filter(x: Any, kind: str, sizes: dict[int, int]) -> Any:
    """median / minimum / maximum over a box of ``sizes`` (centred as scipy: center = size // 2).

    A window holding a NaN gives NaN (numpy's rule for max / min / median; inf is an ordered value like any
    other). scipy's running extrema and selection have no rule for NaN: their result depends on where the
    line, and so the block, starts. So the NaN voxels take part as 0 and the windows holding one are set to
    NaN afterwards (a box maximum of the NaN mask): blocks without NaN pay one check.
    """
    rank = _dispatch("rank_filter")
    if x.dtype.kind == "f" and not all_finite(x):
        xp = array_module(x)
        nan = xp.isnan(x)
        if bool(nan.any()):
            out = rank(xp.where(nan, x.dtype.type(0), x), kind, sizes)
            spread = rank(nan.view(np.uint8), "maximum", sizes)
            return xp.where(spread.astype(bool), x.dtype.type(np.nan), out)
    return rank(x, kind, sizes)


def transposed_copy(a: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    """``numpy.ascontiguousarray(a.transpose(perm))`` for a host array, fast (:func:`.cpu.transposed_copy`)."""
    from .cpu import transposed_copy as t

    return t(a, perm)


def contiguous(v: Any) -> Any:
    """``v`` C-contiguous; a transposed host view is copied by :func:`transposed_copy` (:func:`.cpu.contiguous`)."""
    from .cpu import contiguous as c

    return c(v)
