"""Parameters of the feature ops (:mod:`convpipe.ops.features`): tables of detections and statistics
(Parquet), filter banks, template matching."""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .. import limits
from ..kernels import _gabor, kernel_or_none, normalize
from .base import AxesParam, Entry, Mode, OpParams, table_location
from .base import ExtentParams


class PeaksParams(OpParams, AxesParam):
    radius: int = Field(ge=0, le=limits.MAX_HALO)
    threshold: float = 0.0
    axes: str | None = None
    table: str | None = None

    _t = field_validator("table")(lambda v: table_location(v))


# --------------------------------------------------------------------------- filter_bank


class GaborBank(OpParams):
    orientations: int | list[float] = 4
    frequencies: float | list[float] = Field(default=[0.1, 0.2])
    sigma: float | None = Field(None, gt=0)
    radius: int | None = Field(None, ge=0)
    offset: float = 0.0

    @field_validator("orientations")
    @classmethod
    def _orient(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("orientations must be >= 1 (a count) or a list of angles in radians")
        if isinstance(v, list) and not v:
            raise ValueError("orientations is an empty list")
        return v

    @field_validator("frequencies")
    @classmethod
    def _freq(cls, v):
        vals = v if isinstance(v, list) else [v]
        if not vals or any(not (f > 0) or not math.isfinite(f) for f in vals):
            raise ValueError("frequencies must be positive numbers (cycles per voxel)")
        return v

    def thetas(self) -> list[float]:
        if isinstance(self.orientations, int):
            return [k * math.pi / self.orientations for k in range(self.orientations)]
        return [float(t) for t in self.orientations]

    def freqs(self) -> list[float]:
        return [float(f) for f in (self.frequencies if isinstance(self.frequencies, list) else [self.frequencies])]

    @model_validator(mode="after")
    def _sizes_ok(self):
        n_orient = self.orientations if isinstance(self.orientations, int) else len(self.orientations)
        limits.channels_ok(float(n_orient) * len(self.freqs()), "gabor (orientations x frequencies)")
        for f in self.freqs():
            sigma = float(self.sigma) if self.sigma is not None else 0.56 / f
            rad = float(self.radius) if self.radius is not None else 3 * sigma
            limits.taps_ok((2 * rad + 1, 2 * rad + 1), f"the gabor kernel of frequency {f:g}")
        return self

    def kernels(self) -> list[np.ndarray]:
        """Frequency-major: channel ``i_f * len(thetas) + i_theta``."""
        return [_gabor(frequency=f, theta=t, sigma=self.sigma, radius=self.radius, offset=self.offset)
                for f in self.freqs() for t in self.thetas()]


class FilterBankParams(OpParams, AxesParam, ExtentParams):
    kernels: list[Any] | str | None = Field(None, description="kernel sources: nested lists, .npy paths, named "
                                            "kernels; or one .npy of shape (N, *kernel)")
    gabor: GaborBank | None = None
    axes: str | None = None
    mode: Mode = "reflect"
    cval: float = 0.0
    normalize: Literal["none", "sum", "l1", "softmax"] = "none"
    temperature: float = 1.0
    method: Literal["auto", "direct", "separable", "fft"] = "auto"

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo):
        if (self.kernels is None) == (self.gabor is None):
            raise ValueError("give either kernels (a list of kernels) or gabor: {orientations, frequencies, sigma}")
        if isinstance(self.kernels, str):  # one .npy holding the bank (convpipe.bind reads it)
            k = kernel_or_none(self.kernels)
            if k is not None:
                if k.ndim < 2:
                    raise ValueError(f"kernels: a bank file holds (N, *kernel), got shape {tuple(k.shape)}")
                limits.channels_ok(k.shape[0], "kernels")
                for i in range(k.shape[0]):
                    normalize(k[i], self.normalize, self.temperature)
        elif self.kernels is not None:
            if not self.kernels:
                raise ValueError("kernels is an empty list")
            limits.channels_ok(len(self.kernels), "kernels")
            for i, src in enumerate(self.kernels):
                try:
                    k = kernel_or_none(src)  # a .npy path is read by convpipe.bind, not here
                    if k is not None:
                        normalize(k, self.normalize, self.temperature)
                except ValueError as e:
                    raise ValueError(f"kernels[{i}]: {e}") from None
        return self


# --------------------------------------------------------------------------- blobs


class BlobsParams(OpParams, AxesParam):
    min_sigma: float = Field(1.0, gt=0)
    max_sigma: float = Field(50.0, gt=0)
    num_sigma: int = Field(10, ge=1, le=limits.MAX_CHANNELS)
    threshold: float | None = 0.2
    overlap: float = Field(0.5, ge=0, le=1)
    log_scale: bool = False
    threshold_rel: float | None = Field(None, ge=0)
    exclude_border: bool | int | list[int] = False
    axes: str | None = None
    table: str | None = None

    @field_validator("threshold")
    @classmethod
    def _thr(cls, v):
        if v is None:
            raise ValueError("threshold: null (skimage's 'minimum of the LoG cube') needs a whole-plane "
                             "statistic before detection; give a number (skimage's default is 0.2)")
        if not math.isfinite(v):
            raise ValueError("threshold must be finite")
        return v

    @field_validator("exclude_border")
    @classmethod
    def _eb(cls, v):
        vals = v if isinstance(v, list) else [int(v)]
        if any(int(b) < 0 for b in vals):
            raise ValueError("exclude_border cannot be negative")
        if any(int(b) > limits.MAX_HALO for b in vals):
            raise ValueError(f"exclude_border must be at most {limits.MAX_HALO}")
        return v

    _t = field_validator("table")(lambda v: table_location(v))

    @model_validator(mode="after")
    def _halo_ok(self):
        limits.gaussian_ok(max(self.min_sigma, self.max_sigma), 4.0, "max_sigma")
        return self


# --------------------------------------------------------------------------- match_template


class CropParams(OpParams):
    """A crop of the pipeline's input: ``[start, stop)`` per axis the template spans, an index for the rest."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _check(self):
        for k, v in (self.model_extra or {}).items():
            if k not in "tczyx" or len(k) != 1:
                raise ValueError(f"crop key {k!r} is not an axis letter from 'tczyx'")
            if isinstance(v, list):
                if len(v) != 2 or not all(isinstance(i, int) for i in v) or not 0 <= v[0] < v[1]:
                    raise ValueError(f"crop {k}: [start, stop) with 0 <= start < stop, got {v!r}")
            elif not isinstance(v, int) or v < 0:
                raise ValueError(f"crop {k}: an index >= 0 or a [start, stop) pair, got {v!r}")
        return self

    def ranges(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MatchTemplateParams(OpParams, AxesParam):
    template: Any = Field(description="kernel source (nested list, .npy, named), or {crop: {y: [a, b], x: [c, d], z: k}}")
    axes: str | None = None
    table: str | None = None
    radius: int = Field(3, ge=0, le=limits.MAX_HALO)
    threshold: float = 0.5
    method: Literal["auto", "direct", "fft"] = "auto"

    @model_validator(mode="after")
    def _template_ok(self, info: ValidationInfo):
        t = self.template
        table_location(self.table)
        if isinstance(t, dict) and "crop" in t:
            if set(t) != {"crop"}:
                raise ValueError("template: {crop: {...}} takes no other keys")
            crop = CropParams.model_validate(t["crop"]).ranges()
            spans = [v[1] - v[0] for v in crop.values() if isinstance(v, list)]
            limits.taps_ok(tuple(float(n) for n in spans), "the template crop")
            return self
        try:
            k = kernel_or_none(t)  # a .npy path is read by convpipe.bind, not here
        except ValueError as e:
            raise ValueError(f"template: {e}") from None
        if k is None:
            return self
        if k.ndim not in (2, 3):
            raise ValueError(f"template must be 2-D or 3-D, got {k.ndim}-D")
        return self


# --------------------------------------------------------------------------- stats


METRICS = ("count", "mean", "std", "min", "max", "sum", "energy")


class OrientationHistogram(OpParams):
    bins: int = Field(8, ge=1, le=4096)
    weight: Literal["magnitude", "count"] = "magnitude"


class StatsParams(OpParams, AxesParam):
    per: Literal["plane", "tile", "all"] = "all"
    metrics: list[Literal["count", "mean", "std", "min", "max", "sum", "energy"]] = Field(default=list(METRICS))
    orientation_histogram: OrientationHistogram | None = None
    spectral_bands: list[float] | None = None
    axes: str | None = None
    mode: Mode = "reflect"
    cval: float = 0.0
    table: str | None = None

    _t = field_validator("table")(lambda v: table_location(v))

    @field_validator("spectral_bands")
    @classmethod
    def _bands(cls, v):
        if v is None:
            return v
        if len(v) < 2 or any(not math.isfinite(b) or b < 0 for b in v) or any(b >= c for b, c in itertools.pairwise(v)):
            raise ValueError("spectral_bands: at least two increasing edges >= 0 (fractions of Nyquist), "
                             "band i = [edge i, edge i+1)")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("metrics lists a metric twice")
        return v


ENTRIES = [
    Entry("peaks", PeaksParams, "local", "local maxima (plateaus included) above a threshold -> table",
          "Voxels equal to maximum_filter(size = 2 * radius + 1 over ``axes``, mode nearest) and above "
          "``threshold`` (every voxel of a flat maximum counts) -> table; the image passes through."),
    Entry("filter_bank", FilterBankParams, "local",
          "bank of kernels (list or gabor orientations x frequencies), one c channel each, by correlate",
          "One ``c`` channel per kernel: scipy.ndimage.correlate of the input with each (same mode and cval); "
          "gabor kernels frequency-major."),
    Entry("blobs", BlobsParams, "local", "skimage.feature.blob_log per plane -> table (axes..., sigma)",
          "skimage.feature.blob_log on every plane over ``axes`` (2-D or 3-D), overlap pruning included -> "
          "table (every input axis, sigma); the image passes through."),
    Entry("match_template", MatchTemplateParams, "local",
          "normalised cross-correlation with a template (skimage match_template, pad_input) [+ peaks table]",
          "skimage.feature.match_template(plane, template, pad_input=True) on every plane; with ``table`` its "
          "peaks as ``peaks`` finds them (radius, threshold)."),
    Entry("stats", StatsParams, "point",
          "count/mean/std/min/max/sum/energy, orientation histogram, spectral bands -> table",
          "Statistics of the image per plane, per tile or over the whole array -> table (float64, merged "
          "exactly); an orientation histogram of the sobel gradient and spectral band energies on request; "
          "the image passes through."),
]
