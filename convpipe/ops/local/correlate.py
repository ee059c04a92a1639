"""``correlate`` and ``convolve``: scipy.ndimage.correlate / convolve with an inline, .npy or named kernel;
``extent`` and ``stride`` as SPEC.md's "Convolutional layers" says (:mod:`convpipe.ops.layers.window`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import engines
from ...kernels import kernel_from_source, normalize, separable_factors
from ...params.local import KernelParams
from ..base import NO_CONTEXT, Context
from ..layers.window import Windowed
from .base import LocalOp, place_kernel


class _Correlate(Windowed, LocalOp):
    Params = KernelParams
    linear = True
    flip = False

    def setup(self) -> None:
        p = self.params
        base = self.step.spec.base_dir if (self.step is not None and self.step.spec is not None) else None
        k = normalize(kernel_from_source(p.kernel, base), p.normalize, p.temperature)
        k, self.axes, self.centers = place_kernel(self, k, p.origin, flip=self.flip)
        self.kernel = k
        if p.extent != "same" and any(o != 0 for o in ([p.origin] if isinstance(p.origin, int) else p.origin)):
            raise self.error("origin applies to extent: same only", "origin")
        self.set_window(k.shape, tuple(self.centers), p.extent, p.stride)
        self.factors = separable_factors(k)
        if p.method == "separable" and self.factors is None:
            raise self.error("method separable: this kernel is not separable (rank > 1)", "method")

    def shift_gain(self) -> float:  # the kernel's sum (normalized, flipped for convolve), in float64
        return float(np.sum(self.kernel, dtype=np.float64))

    def estimate_work(self):  # estimate only: a direct kernel's taps, an FFT filter (separable: the fit)
        m = self.method()
        if m == "direct":
            return {"taps": float(self.kernel.size)}
        return {"fft": 1.0} if m == "fft" else None

    def method(self) -> str:
        m = self.params.method
        if m == "auto":
            if self.factors is not None and self.kernel.size > 1:
                return "separable"
            return "fft" if self.kernel.size >= self.fft_crossover() else "direct"
        return m

    def fft_crossover(self) -> int:
        """Kernel size (taps) from which ``auto`` picks the FFT, measured here on float32 blocks.

        2-D kernels over the last two axes run in OpenCV directly: 11x11 took 4.8 ms on a 4x522x522 block
        vs 9.4 ms by FFT, 13x13 14.9 ms vs 12.1 ms (OpenCV switches to its own DFT at 11x11). Other kernels
        run in scipy.ndimage directly: 3x3x3 4.6 ms vs 5.5 ms by FFT, 4x4x4 11.8 ms vs 5.2 ms (66^3 block).
        """
        cv_path = len(self.axes) == 2 and self.axes == self.in_axes[-2:]
        return 13 * 13 if cv_path else 64

    def describe(self) -> str:
        m = self.method()
        why = (f", auto: fft from {self.fft_crossover()} taps" if self.params.method == "auto" and m != "separable"
               else "")
        return (f"{self.name}(kernel {'x'.join(map(str, self.kernel.shape))} over {self.axes}{self.window_note()}, "
                f"{m}{why})")

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """Correlate the block with the kernel (flipped for ``convolve``) by ``method()``.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()``; float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape less the halo along ``axes`` (then strided), ``x``'s dtype
        """
        # the block holds each output's window (extent, stride: see ops.layers.window); the engines compute
        # the valid correlation, then positions 0, s, 2s, ... are kept
        return self.subsample(self._valid(x), self.ax)

    def _valid(self, x: Any) -> Any:
        m = self.method()
        idx = tuple(self.ax(a) for a in self.axes)
        if not engines.all_finite(x):
            # NaN/inf: scipy.ndimage.correlate itself (the oracle skips zero weights, so a NaN reaches exactly
            # the non-zero footprint); an FFT, OpenCV's DFT or separable 1-D passes would spread it further
            m = "direct"
        if m == "separable":
            y = engines.sep_correlate(x, {i: (f, c) for i, f, c in zip(idx, self.factors, self.centers)})
        elif m == "fft":
            return self._fft(x, idx)
        else:
            y = engines.correlate_nd(x, self.kernel, tuple(self.centers), idx)
        return self.crop_valid(y, self.ax)

    def _fft(self, x, idx):
        shape = [1] * x.ndim
        for i, s in zip(idx, self.kernel.shape):
            shape[i] = s
        k = self.kernel[(slice(None, None, -1),) * self.kernel.ndim].reshape(shape)
        return engines.fftconvolve(x, k.astype(x.dtype), mode="valid", axes=idx).astype(x.dtype, copy=False)


class Correlate(_Correlate):
    name = "correlate"


class Convolve(_Correlate):
    name = "convolve"
    flip = True
