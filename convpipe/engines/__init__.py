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

import contextvars
import threading
from typing import Any

import numpy as np

#: Set by tiles.run_chain around each op whose input is known to be finite (convpipe.finite tracks it op by
#: op): then the engines need not check the op's blocks again. A ContextVar, because dask runs tasks on
#: several threads at once.
ASSUME_FINITE: contextvars.ContextVar[bool] = contextvars.ContextVar("convpipe_assume_finite", default=False)

_NAMES = ("sep_correlate", "correlate_nd", "rank_filter", "fftconvolve", "conv_channels", "array_module", "to_host",
          "on_device")
_TABLE: dict[str, Any] = {}
_TABLE_LOCK = threading.Lock()


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


def _register_cupy() -> None:
    import cupy

    register_device_type(cupy.ndarray)


def _dispatch(name: str) -> Any:
    d = _TABLE.get(name)
    if d is not None:
        return d
    with _TABLE_LOCK:
        if not _TABLE:
            from dask.utils import Dispatch

            table = {}
            for key, fn in _implementations("cpu").items():
                table[key] = Dispatch(f"convpipe.engines.{key}")
                table[key].register(object, fn)  # every host array type (numpy, memmap, 0-d, lists)
                table[key].register_lazy("cupy", _register_cupy)
            _TABLE.update(table)
    return _TABLE[name]


def register_device_type(array_type: type) -> None:
    """Send arrays of ``array_type`` (an array type with CuPy's API, like ``cupy.ndarray``) to the CuPy engines."""
    for key, fn in _implementations("gpu").items():
        _dispatch(key).register(array_type, fn)


# --------------------------------------------------------------------------- what is where


def on_device(x: Any) -> bool:
    """True for a device (CuPy) array. Never imports CuPy for anything else."""
    return bool(_dispatch("on_device")(x))


def array_module(x: Any) -> Any:
    """numpy, or cupy for a device array."""
    return _dispatch("array_module")(x)


def to_host(x: Any) -> np.ndarray:
    """``x`` as a numpy array (one counted device-to-host copy for a device array, none otherwise)."""
    return _dispatch("to_host")(x)


def all_finite(x: Any) -> bool:
    """True when ``x`` holds no NaN/inf: the exact check of :func:`convpipe.finite.is_finite`, skipped where
    the chain already knows the op's input is finite.

    Works on CuPy blocks too (``x.sum()`` stays on the device; one scalar comes back).
    """
    if not x.size or ASSUME_FINITE.get():
        return True
    from ..finite import is_finite

    return is_finite(x)


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
    """
    return _dispatch("sep_correlate")(x, weights, fill=fill, order=order)


def correlate_nd(x: Any, k: np.ndarray, centers: tuple[int, ...], axes: tuple[int, ...]) -> Any:
    """Direct (non-separable) correlation of ``x`` with the host kernel ``k`` over ``axes`` (``centers``: the
    kernel's centre per axis). Same shape and dtype as ``x``; exact where the footprint lies inside ``x``."""
    return _dispatch("correlate_nd")(x, k, centers, axes)


def fftconvolve(x: Any, k: Any, mode: str = "full", axes: Any = None) -> Any:
    """``scipy.signal.fftconvolve(x, k, mode, axes)`` (cupyx's on a device block; ``k`` may be on the host)."""
    return _dispatch("fftconvolve")(x, k, mode=mode, axes=axes)


def conv_channels(xc: Any, w: np.ndarray, stride: tuple[int, ...], bias: Any = None) -> Any:
    """conv_layer's valid multi-channel correlation: ``xc`` (in_c, *S) channel-major, ``w`` (out_c, in_c, *k)
    a host array (float64 keeps the exact offset term, :mod:`.gemm`) -> (out_c, *O), ``O = (S - k) // stride
    + 1``, ``xc``'s dtype; output channel o is bias[o] + sum_i correlate(xc[i], w[o, i]) strided (matrix
    products: :mod:`.gemm`). For finite blocks; the caller takes scipy's per-pair path where NaN/inf must
    reach only their footprint."""
    return _dispatch("conv_channels")(xc, w, stride, bias)


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
