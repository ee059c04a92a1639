"""Spectral ops, per plane: ``fft_filter``, ``butterworth``, ``log_spectrum`` (numpy.fft, full complex)."""

from __future__ import annotations

import functools

import numpy as np

from .base import op, per_plane, resolve_on

def radius_grid(shape: tuple[int, ...]) -> np.ndarray:
    """r = sqrt(sum_i (f_i / 0.5)^2), f_i from numpy.fft.fftfreq, on the full grid of ``shape``."""
    f = np.meshgrid(*[np.fft.fftfreq(n) / 0.5 for n in shape], indexing="ij")
    return np.sqrt(sum(g * g for g in f))

def _lowpass(r, c, shape, order):
    if shape == "ideal":
        return (r <= c).astype(float)
    if shape == "gaussian":
        return np.exp(-r ** 2 / (2 * c ** 2))
    return 1 / (1 + (r / c) ** (2 * order))

@op
def fft_filter(x, dims, cutoff, kind="lowpass", shape="ideal", order=2.0, axes=None):
    """numpy.fft.fftn of each plane x the radial mask, inverse, real part."""
    on = resolve_on(dims, axes)
    cut = cutoff if isinstance(cutoff, list) else [cutoff]

    def f(a):
        r = radius_grid(a.shape)
        if kind == "lowpass":
            m = _lowpass(r, cut[0], shape, order)
        elif kind == "highpass":
            m = 1 - _lowpass(r, cut[0], shape, order)
        else:
            m = _lowpass(r, cut[1], shape, order) * (1 - _lowpass(r, cut[0], shape, order))
        return np.real(np.fft.ifftn(np.fft.fftn(a) * m))

    return per_plane(x, dims, on, f), dims

@op
def butterworth(x, dims, cutoff_frequency_ratio=0.005, high_pass=True, order=2.0, squared_butterworth=True,
                npad=0, axes=None):
    """skimage.filters.butterworth of each plane (its formula: edge padding by npad, the n-D Butterworth
    weights of the unshifted frequency grid, the real part of the inverse FFT)."""
    on = resolve_on(dims, axes)

    def f(a):
        a = np.pad(a, npad, mode="edge") if npad else a
        ranges = [np.fft.ifftshift((np.arange(-(d - 1) // 2, (d - 1) // 2 + 1) / (d * cutoff_frequency_ratio))
                                   ** 2) for d in a.shape]
        q2 = np.power(functools.reduce(np.add, np.meshgrid(*ranges, indexing="ij", sparse=True)), order)
        w = 1 / (1 + q2)
        if high_pass:
            w = w * q2
        if not squared_butterworth:
            w = np.sqrt(w)
        y = np.real(np.fft.ifftn(np.fft.fftn(a) * w))
        return y[tuple(slice(npad, n - npad) for n in y.shape)] if npad else y

    return per_plane(x, dims, on, f), dims

@op
def log_spectrum(x, dims, axes=None):
    on = resolve_on(dims, axes)
    return per_plane(x, dims, on, lambda a: np.log1p(np.abs(np.fft.fftshift(np.fft.fftn(a))))), dims
