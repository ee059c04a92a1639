"""Spectral ops, per plane over ``axes`` (default ``yx``): ``fft_filter``, ``butterworth``, ``log_spectrum``.

Every one is of kind ``full`` with ``full_axes()`` = its axes and no halo: the planner gives each task whole
extents along those axes (tiles only cut the other axes), so the FFT of a task's block *is* the FFT of
the whole plane and the result equals the whole-array oracle to FFT round-off. Nothing is ever padded to a
"fast" length: a filter defined on the plane's own frequency grid (circular) changes when the grid does.

Engine: ``scipy.fft`` with ``workers=1`` (dask already runs one task per core). The masks are real and even
(they depend on f_i² only), so the real part of ``ifftn(fftn(x) * mask)`` equals
``irfftn(rfftn(x) * mask_half)``: half the work and half the memory. ``log_spectrum`` rebuilds the
negative-frequency half of ``|fftn(x)|`` from ``rfftn`` by Hermitian symmetry (|X(-k)| = |X(k)| for real x).

Masks are computed in float64 from the plane shape (cached per shape) and cast to the compute dtype.

Non-finite input: every output of a plane's FFT depends on every input of the plane, so a NaN or inf anywhere in
a plane makes that whole plane NaN (numpy's FFT gives NaN or inf there, depending on its butterflies); the
other planes are untouched, whatever the chunking.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..params.spectral import ButterworthParams, FFTFilterParams, LogSpectrumParams
from .base import NO_CONTEXT, Context, Op


def _fft():
    import scipy.fft

    return scipy.fft


class _Spectral(Op):
    """Base: whole planes along ``axes``, the FFT taken over those axes of the block."""

    kind = "full"
    linear = True

    def setup(self) -> None:
        self.axes = self.resolve_axes(self.params.axes)
        if "c" in self.axes:
            raise self.error("spectral ops do not act along the channel axis 'c'", "axes")

    def full_axes(self) -> str:
        return self.axes

    def fft_axes(self) -> tuple[int, ...]:
        return tuple(self.in_axes.index(a) for a in self.axes)

    def method(self) -> str:
        return "fft"

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The op on each plane over ``axes`` (see :meth:`_planes`), NaN over every plane holding a NaN or inf.

        One ``apply`` for every spectral op: each output of a plane's FFT depends on every input of the plane,
        so the non-finite rule (the module docstring) is the same for all of them and is kept here, once; the
        ops differ only in :meth:`_planes`, which sees finite planes.

        Parameters
        ----------
        x : array, axes ``in_axes``, whole along ``axes``; float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape, ``x``'s dtype; NaN over every plane that holds a NaN or inf
        """
        x, bad = self._finite_planes(x)
        return self._nan_planes(self._planes(x), bad)

    def _planes(self, x: np.ndarray) -> np.ndarray:
        """The op on a block whose planes are all finite: ``x``'s shape and dtype."""
        raise NotImplementedError

    def _finite_planes(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``x`` with the planes holding NaN/inf zeroed, and the mask of those planes (None: all finite)."""
        from .. import engines

        if engines.all_finite(x):
            return x, None
        bad = ~np.isfinite(x).all(axis=self.fft_axes(), keepdims=True)
        return np.where(bad, x.dtype.type(0), x), bad

    @staticmethod
    def _nan_planes(y: np.ndarray, bad: np.ndarray | None) -> np.ndarray:
        return y if bad is None else np.where(bad, y.dtype.type(np.nan), y)

    def _broadcast(self, mask: np.ndarray, ndim: int) -> np.ndarray:
        """Reshape a mask over the op's axes so it broadcasts against a block of ``ndim`` dims."""
        shape = [1] * ndim
        for i, n in zip(self.fft_axes(), mask.shape):
            shape[i] = n
        return mask.reshape(shape)

    def _filter(self, x: np.ndarray, half_mask: np.ndarray) -> np.ndarray:
        """``irfftn(rfftn(x) * mask)`` over the op's axes, in x's precision."""
        fft = _fft()
        idx = self.fft_axes()
        shape = [x.shape[i] for i in idx]
        spec = fft.rfftn(x, axes=idx, workers=1)
        spec *= self._broadcast(half_mask.astype(x.dtype, copy=False), x.ndim)
        return fft.irfftn(spec, s=shape, axes=idx, workers=1).astype(x.dtype, copy=False)


def _frozen(mask: np.ndarray) -> np.ndarray:
    """``mask`` contiguous and read-only, as the cached mask builders hand it out.

    Shared by :func:`fft_filter_mask` and :func:`butterworth_mask`: ``lru_cache`` gives every caller the same
    array, so a write into it by one task would change the filter of every later one.
    """
    mask = np.ascontiguousarray(mask)
    mask.flags.writeable = False
    return mask


# --------------------------------------------------------------------------- fft_filter


def _radius_half(shape: tuple[int, ...]) -> np.ndarray:
    """r = sqrt(sum_i (f_i / 0.5)^2) on the rfftn grid of ``shape`` (last axis halved), float64."""
    r2 = np.zeros((1,) * len(shape))
    for k, n in enumerate(shape):
        f = np.fft.fftfreq(n)
        if k == len(shape) - 1:
            f = f[: n // 2 + 1]
        term = (f / 0.5) ** 2
        term = term.reshape([-1 if j == k else 1 for j in range(len(shape))])
        r2 = r2 + term
    return np.sqrt(r2)


def _lowpass(r: np.ndarray, cutoff: float, shape: str, order: float) -> np.ndarray:
    if shape == "ideal":
        return (r <= cutoff).astype(np.float64)
    if shape == "gaussian":
        return np.exp(-(r * r) / (2.0 * cutoff * cutoff))
    return 1.0 / (1.0 + (r / cutoff) ** (2.0 * order))


@functools.lru_cache(maxsize=8)
def fft_filter_mask(shape: tuple[int, ...], kind: str, cutoff: tuple[float, ...], fshape: str,
                    order: float) -> np.ndarray:
    """The fft_filter mask on the rfftn grid of a plane of ``shape`` (float64, read-only)."""
    r = _radius_half(shape)
    if kind == "lowpass":
        m = _lowpass(r, cutoff[0], fshape, order)
    elif kind == "highpass":
        m = 1.0 - _lowpass(r, cutoff[0], fshape, order)
    else:
        low, high = cutoff
        m = _lowpass(r, high, fshape, order) * (1.0 - _lowpass(r, low, fshape, order))
    return _frozen(m)


class FFTFilter(_Spectral):
    name = "fft_filter"
    Params = FFTFilterParams

    def setup(self) -> None:
        super().setup()
        c = self.params.cutoff
        self.cutoff = tuple(float(v) for v in (c if isinstance(c, list) else [c]))

    def shift_gain(self) -> float:  # the mask at frequency 0 (1 low-pass, 0 high- and band-pass)
        p = self.params
        return float(fft_filter_mask((1,) * len(self.axes), p.kind, self.cutoff, p.shape, float(p.order)).flat[0])

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        p = self.params
        return fft_filter_mask(tuple(int(n) for n in shape), p.kind, self.cutoff, p.shape, float(p.order))

    def _planes(self, x: np.ndarray) -> np.ndarray:
        """Each plane times the radial mask, by rfftn / irfftn over ``axes``."""
        shape = tuple(x.shape[i] for i in self.fft_axes())
        return self._filter(x, self.mask(shape))

    def describe(self) -> str:
        p = self.params
        cut = self.cutoff[0] if len(self.cutoff) == 1 else list(self.cutoff)
        extra = f", order {p.order:g}" if p.shape == "butterworth" else ""
        return f"fft_filter({p.kind} {p.shape}, cutoff {cut}{extra} over {self.axes})"


# --------------------------------------------------------------------------- butterworth (scikit-image)


@functools.lru_cache(maxsize=8)
def butterworth_mask(shape: tuple[int, ...], factor: float, order: float, high_pass: bool,
                     squared: bool) -> np.ndarray:
    """skimage.filters._fft_based._get_nd_butterworth_filter(real=True) in float64."""
    ranges = []
    for d in shape:
        axis = np.arange(-(d - 1) // 2, (d - 1) // 2 + 1) / (d * factor)
        ranges.append(np.fft.ifftshift(axis ** 2))
    d = shape[-1]
    ranges[-1] = ranges[-1][: d // 2 + 1]
    q2 = functools.reduce(np.add, np.meshgrid(*ranges, indexing="ij", sparse=True)).astype(np.float64)
    q2 = np.power(q2, order)
    w = 1 / (1 + q2)
    if high_pass:
        w *= q2
    if not squared:
        np.sqrt(w, out=w)
    return _frozen(w)


class Butterworth(_Spectral):
    name = "butterworth"
    Params = ButterworthParams

    def shift_gain(self) -> float:  # the mask at frequency 0 (edge padding moves with the shift)
        p = self.params
        return float(butterworth_mask((1,) * len(self.axes), float(p.cutoff_frequency_ratio), float(p.order),
                                      bool(p.high_pass), bool(p.squared_butterworth)).flat[0])

    def _planes(self, x: np.ndarray) -> np.ndarray:
        """skimage.filters.butterworth of each plane (edge-padded by ``npad``)."""
        p = self.params
        idx = self.fft_axes()
        if p.npad:
            pad = [(p.npad, p.npad) if i in idx else (0, 0) for i in range(x.ndim)]
            x = np.pad(x, pad, mode="edge")
        shape = tuple(int(x.shape[i]) for i in idx)
        w = butterworth_mask(shape, float(p.cutoff_frequency_ratio), float(p.order), bool(p.high_pass),
                             bool(p.squared_butterworth))
        y = self._filter(x, w)
        if p.npad:
            y = y[tuple(slice(p.npad, y.shape[i] - p.npad) if i in idx else slice(None) for i in range(y.ndim))]
        return y

    def describe(self) -> str:
        p = self.params
        return (f"butterworth({'high' if p.high_pass else 'low'}-pass, ratio {p.cutoff_frequency_ratio:g}, "
                f"order {p.order:g}{f', npad {p.npad}' if p.npad else ''} over {self.axes})")


# --------------------------------------------------------------------------- log_spectrum


class LogSpectrum(_Spectral):
    name = "log_spectrum"
    Params = LogSpectrumParams
    linear = False

    def _planes(self, x: np.ndarray) -> np.ndarray:
        """log1p(abs(fftshift(fftn(plane)))), the FFT in float64."""
        fft = _fft()
        idx = self.fft_axes()
        last = idx[-1]
        n = x.shape[last]
        h = n // 2 + 1
        # The FFT in float64 whatever the compute dtype: a float32 FFT's error is relative to the plane's
        # largest coefficient, and log1p shows it at the small ones (0.0033 on camera/moon/coins, against a
        # bound of 0.0017); float64 costs ~2.5x the FFT time and meets it by 8 orders of magnitude.
        a = np.abs(fft.rfftn(x.astype(np.float64, copy=False), axes=idx, workers=1))
        if a.dtype != x.dtype:
            a = a.astype(x.dtype)
        # |X(k)| for the missing columns j = h .. n-1 of the last axis is |X(-k)| = |R((-k') mod n, n - j)|
        neg = a
        for i in idx[:-1]:
            neg = np.roll(np.flip(neg, axis=i), 1, axis=i)
        full = np.empty(x.shape, dtype=a.dtype)
        sl = [slice(None)] * x.ndim
        sl[last] = slice(0, h)
        full[tuple(sl)] = a
        if n > h:
            src = [slice(None)] * x.ndim
            src[last] = slice(n - h, 0, -1)
            sl[last] = slice(h, n)
            full[tuple(sl)] = neg[tuple(src)]
        out = np.fft.fftshift(full, axes=idx)
        return np.log1p(out, out=out)

    def describe(self) -> str:
        return f"log_spectrum(over {self.axes})"
