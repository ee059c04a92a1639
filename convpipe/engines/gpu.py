"""The CuPy engines: device blocks through cupyx.scipy.ndimage, and the copies between host and device.

Importing this module never imports CuPy: every function imports it when it runs. The kernels have the
contract of :mod:`convpipe.engines`: the block was already padded by the halo machinery, so the border mode
of the kernel never matters (``reflect`` is passed) and the caller crops. Weights arrive as host arrays;
they are cast to the block's dtype (as the CPU engines do: OpenCV filters float32 with float32 taps) and
cached on the device. cupyx.scipy.ndimage accumulates in float32 for float32 input, like OpenCV.

Transfers: :func:`to_device` (through a pinned staging buffer for blocks of 1 MiB or more) and
:func:`to_host` count the copies (:func:`transfer_counts`), which is how the tests check "once each way".
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import numpy as np

from ..centring import pass_cvals
from .dispatch import on_device

# --------------------------------------------------------------------------- modules (imported lazily)


def _cp() -> Any:
    import cupy

    return cupy


def _ndi() -> Any:
    import cupyx.scipy.ndimage as ndi

    return ndi


# --------------------------------------------------------------------------- transfers

_COUNT_LOCK = threading.Lock()
_COUNTS = {"h2d": 0, "h2d_bytes": 0, "d2h": 0, "d2h_bytes": 0}
_PINNED_MIN = 1 << 20  # blocks from this size on go through a pinned staging buffer


def transfer_counts() -> dict[str, int]:
    """Host-to-device and device-to-host copies made by :func:`to_device` / :func:`to_host` so far."""
    with _COUNT_LOCK:
        return dict(_COUNTS)


def reset_transfer_counts() -> None:
    with _COUNT_LOCK:
        for k in _COUNTS:
            _COUNTS[k] = 0


def _count(kind: str, nbytes: int) -> None:
    with _COUNT_LOCK:
        _COUNTS[kind] += 1
        _COUNTS[kind + "_bytes"] += int(nbytes)


def _pinned_enabled() -> bool:
    return os.environ.get("CONVPIPE_PINNED", "1") not in ("0", "false", "no", "")


_PINNED_LOCK = threading.Lock()
_PINNED_FREE: list[np.ndarray] = []  # idle pinned staging buffers; at most one per concurrent copy


@contextlib.contextmanager
def _pinned_buffer(nbytes: int):
    """A pinned (page-locked) staging buffer of at least ``nbytes``, borrowed from a small pool (as many
    buffers as copies ever ran at once, each a power of two of at least 1 MiB)."""
    with _PINNED_LOCK:
        fit = [i for i, b in enumerate(_PINNED_FREE) if b.nbytes >= nbytes]
        buf = _PINNED_FREE.pop(min(fit, key=lambda i: _PINNED_FREE[i].nbytes)) if fit else None
    if buf is None:
        import cupyx

        buf = cupyx.empty_pinned((1 << max(20, int(nbytes - 1).bit_length()),), dtype=np.uint8)
    try:
        yield buf
    finally:
        with _PINNED_LOCK:
            _PINNED_FREE.append(buf)
            if len(_PINNED_FREE) > 16:  # keep the largest ones
                _PINNED_FREE.sort(key=lambda b: b.nbytes)
                del _PINNED_FREE[0]


def to_device(x: Any, *, pinned: bool | None = None, count: bool = True) -> Any:
    """``x`` on the current device: one host-to-device copy (none when it already is a CuPy array)."""
    if on_device(x):
        return x
    cp = _cp()
    x = np.asarray(x)
    if count:
        _count("h2d", x.nbytes)
    if pinned is None:
        pinned = _pinned_enabled() and x.nbytes >= _PINNED_MIN
    if not pinned or x.size == 0:
        return cp.asarray(x)
    out = cp.empty(x.shape, dtype=x.dtype)
    with _pinned_buffer(x.nbytes) as buf:
        staged = buf[: x.nbytes].view(x.dtype).reshape(x.shape)
        np.copyto(staged, x)  # also makes a strided host view contiguous
        out.set(staged)  # asynchronous on the current stream ...
        cp.cuda.get_current_stream().synchronize()  # ... and the buffer goes back to the pool
    return out


def to_host(x: Any, *, count: bool = True) -> np.ndarray:
    """``x`` as a numpy array: one device-to-host copy for a CuPy array."""
    if not on_device(x):
        return np.asarray(x)
    if count:
        _count("d2h", x.nbytes)
    return x.get()


_WEIGHTS: dict = {}
_WEIGHTS_LOCK = threading.Lock()


def _dev_const(w: Any, dtype: Any) -> Any:
    """A small host constant (kernel taps) as a device array of ``dtype``, cached per device."""
    cp = _cp()
    w = np.ascontiguousarray(np.asarray(w), dtype=np.dtype(dtype))
    key = (cp.cuda.runtime.getDevice(), w.dtype.str, w.shape, w.tobytes())
    d = _WEIGHTS.get(key)
    if d is None:
        d = cp.asarray(w)
        cp.cuda.get_current_stream().synchronize()  # usable from any thread's stream from now on
        with _WEIGHTS_LOCK:
            if len(_WEIGHTS) > 512:
                _WEIGHTS.clear()
            _WEIGHTS[key] = d
    return d


# --------------------------------------------------------------------------- engines


def sep_correlate(x: Any, weights: dict[int, tuple[np.ndarray, int]], *,
                  fill: tuple[dict[int, np.ndarray], float] | None = None,
                  order: list[int] | None = None) -> Any:
    """Separable correlation of a device block: one ``correlate1d`` per axis (``weights[axis] = (w, center)``).

    ``fill`` and ``order`` as in :func:`convpipe.engines.sep_correlate`: before each pass but the first, the
    voxels outside the array along that pass's axis (a host boolean mask) are reset to cval, as scipy's
    ``constant`` mode pads every pass's input (``fill = (outside, cval, shift)``: centred by ``shift``, the
    true cval centred, :func:`convpipe.centring.pass_cvals`).
    """
    if not weights:
        return x
    ndi = _ndi()
    out = x
    passes = [a for a in (order or sorted(weights)) if a in weights]
    if fill is not None:
        outside, cval, *shift = fill
        cvals = pass_cvals(cval, shift[0] if shift else 0.0, weights, passes)
    for k, a in enumerate(passes):
        if fill is not None:
            mask = outside.get(a)
            if k > 0 and mask is not None and np.any(mask):
                out = out.copy() if out is x else out
                sl = [slice(None)] * out.ndim
                sl[a] = mask  # a host mask: CuPy copies it over
                out[tuple(sl)] = cvals[k]
        w, c = weights[a]
        w = np.asarray(w)
        origin = int(c) - len(w) // 2
        out = ndi.correlate1d(out, _dev_const(w, x.dtype), axis=int(a), output=x.dtype, mode="reflect",
                              origin=origin)
    return out


def correlate_nd(x: Any, k: np.ndarray, centers: tuple[int, ...], axes: tuple[int, ...]) -> Any:
    """Direct correlation with ``k`` over ``axes`` (cupyx.scipy.ndimage.correlate)."""
    k = np.asarray(k)
    shape = [1] * x.ndim
    origins = [0] * x.ndim
    for a, s, c in zip(axes, k.shape, centers):
        shape[a] = s
        origins[a] = int(c) - s // 2
    kk = _dev_const(k.reshape(shape), x.dtype)
    return _ndi().correlate(x, kk, output=x.dtype, mode="reflect", origin=origins)


def rank_filter(x: Any, kind: str, sizes: dict[int, int]) -> Any:
    """median / minimum / maximum over a box (centred as scipy); min/max as exact 1-D passes."""
    ndi = _ndi()
    if kind in ("minimum", "maximum"):
        f = ndi.minimum_filter1d if kind == "minimum" else ndi.maximum_filter1d
        out = x
        for a, s in sorted(sizes.items()):
            if s > 1:
                out = f(out, int(s), axis=int(a), mode="reflect")
        return out
    if kind != "median":
        raise ValueError(f"unknown rank filter {kind!r}")
    size = [int(sizes.get(a, 1)) for a in range(x.ndim)]
    return ndi.median_filter(x, size=size, mode="reflect")


def conv_channels(xc: Any, w: np.ndarray, stride: tuple[int, ...], bias: Any = None, *,
                  check_finite: bool = False) -> Any:
    """Valid multi-channel correlation plus bias by matrix products on the device (:func:`.gemm.conv_channels`)."""
    from .gemm import conv_channels as gemm

    return gemm(xc, w, stride, _cp(), bias=bias, put=lambda a: _dev_const(a, a.dtype), check_finite=check_finite)


def fftconvolve(x: Any, k: Any, mode: str = "full", axes: Any = None) -> Any:
    """cupyx.scipy.signal.fftconvolve with a host (or device) kernel."""
    from cupyx.scipy.signal import fftconvolve as fc

    kd = k if on_device(k) else _dev_const(k, np.asarray(k).dtype)
    return fc(to_device(x), kd, mode=mode, axes=axes)

