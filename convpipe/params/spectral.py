"""Parameters of the spectral ops (:mod:`convpipe.ops.spectral`): per plane over ``axes`` (default ``yx``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ..limits import MAX_HALO
from .base import AxesParam, Entry, OpParams, positive_order


class _SpectralParams(OpParams, AxesParam):
    axes: str | None = None


class FFTFilterParams(_SpectralParams):
    kind: Literal["lowpass", "highpass", "bandpass"] = "lowpass"
    cutoff: float | list[float] = Field(
        description="fraction of Nyquist in (0, 1] (radial); [low, high] for bandpass")
    shape: Literal["ideal", "gaussian", "butterworth"] = "ideal"
    order: float = Field(2.0, description="butterworth order (> 0)")

    _order = field_validator("order")(lambda v: positive_order(v))

    @field_validator("cutoff")
    @classmethod
    def _cutoffs(cls, c, info: ValidationInfo):
        kind = info.data.get("kind", "lowpass")
        if kind == "bandpass":
            if not isinstance(c, list) or len(c) != 2:
                raise ValueError("bandpass needs cutoff: [low, high] (fractions of Nyquist)")
            low, high = c
            for v in c:
                if not (0 < v <= 1):
                    raise ValueError(f"cutoff {v!r} must be in (0, 1] (a fraction of Nyquist)")
            if not low < high:
                raise ValueError(f"bandpass needs low < high, got cutoff [{low}, {high}]")
            return c
        if isinstance(c, list):
            if len(c) != 1:
                raise ValueError(f"{kind} takes one cutoff (a list [low, high] is for bandpass)")
            c = c[0]
        if not (0 < c <= 1):
            raise ValueError(f"cutoff {c!r} must be in (0, 1] (a fraction of Nyquist)")
        return c


class ButterworthParams(_SpectralParams):
    cutoff_frequency_ratio: float = Field(0.005, description="cutoff as a fraction of the sampling frequency, "
                                                             "in (0, 0.5]")
    high_pass: bool = True
    order: float = 2.0
    squared_butterworth: bool = True
    npad: int = Field(0, description="edge-pad each side of the plane by npad voxels (numpy.pad mode 'edge')")

    @field_validator("cutoff_frequency_ratio")
    @classmethod
    def _cut(cls, v):
        if not (0 < v <= 0.5):
            raise ValueError(f"cutoff_frequency_ratio must be in (0, 0.5] (a fraction of the sampling "
                             f"frequency), got {v!r}")
        return v

    _order = field_validator("order")(lambda v: positive_order(v))

    @field_validator("npad")
    @classmethod
    def _npad(cls, v):
        if v < 0:
            raise ValueError(f"npad must be >= 0, got {v}")
        if v > MAX_HALO:
            raise ValueError(f"npad must be at most {MAX_HALO}, got {v}")
        return v


class LogSpectrumParams(_SpectralParams):
    pass


_PLANE = " A NaN or inf anywhere in a plane makes that whole plane NaN."

ENTRIES = [
    Entry("fft_filter", FFTFilterParams, "full",
          "radial low/high/band-pass in the Fourier domain (ideal, gaussian or butterworth), per plane",
          "Each plane over ``axes`` times a real radial mask of r = sqrt(sum (f_i / 0.5)^2) (fractions of "
          "Nyquist) in the Fourier domain, on the plane's own frequency grid." + _PLANE),
    Entry("butterworth", ButterworthParams, "full", "skimage.filters.butterworth, per plane",
          "skimage.filters.butterworth of each plane over ``axes``." + _PLANE),
    Entry("log_spectrum", LogSpectrumParams, "full", "log1p(abs(fftshift(fftn(plane)))), per plane",
          "log1p(abs(fftshift(fftn(plane)))) of each plane over ``axes``, the FFT in float64." + _PLANE),
]
