"""Parameters of the local filters (:mod:`convpipe.ops.local`): every output voxel depends on a bounded
neighbourhood of the input, padded at the whole array's edges by the op's ``mode``."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .. import limits
from ..kernels import kernel_or_none, normalize
from .base import AxesParam, Entry, Mode, ModeParams, OpParams, PerAxis, PerAxisInt, check_positive, check_size
from .base import ExtentParams


class KernelParams(ModeParams, AxesParam, ExtentParams):
    kernel: Any = Field(description="nested list, .npy path, or {name: gaussian|box|sobel|..., ...}")
    axes: str | None = None
    origin: int | list[int] = 0
    normalize: Literal["none", "sum", "l1", "softmax"] = "none"
    temperature: float = 1.0
    method: Literal["auto", "direct", "separable", "fft"] = "auto"

    @field_validator("temperature")
    @classmethod
    def _temperature_ok(cls, v):
        if not v > 0:
            raise ValueError("softmax temperature must be > 0")
        return v

    @field_validator("kernel")
    @classmethod
    def _kernel_ok(cls, v):
        kernel_or_none(v)  # ValueError names the cause; a .npy path is read by convpipe.bind, not here
        return v

    @field_validator("normalize")
    @classmethod
    def _normalize_ok(cls, v, info: ValidationInfo):
        if "kernel" in info.data:  # a bad kernel was already reported on its own field
            k = kernel_or_none(info.data["kernel"])
            if k is not None:
                normalize(k, v)
        return v


class GaussianParams(ModeParams, AxesParam):
    sigma: PerAxis
    order: PerAxisInt = 0
    truncate: float = Field(4.0, gt=0)
    axes: str | None = None

    _s = field_validator("sigma")(lambda v: check_positive(v, "sigma"))

    @field_validator("order")
    @classmethod
    def _order_ok(cls, v):
        for o in (v.values() if isinstance(v, dict) else [v]):
            if o > 16:  # scipy builds the derivative by o matrix products: a huge order would never end
                raise ValueError(f"order must be a derivative order of at most 16, got {o!r}")
        return v

    @model_validator(mode="after")
    def _halo_ok(self):
        limits.gaussian_ok(self.sigma, self.truncate)
        return self


class SigmaParams(ModeParams, AxesParam):
    sigma: PerAxis
    truncate: float = Field(4.0, gt=0)
    axes: str | None = None

    _s = field_validator("sigma")(lambda v: check_positive(v, "sigma"))

    @model_validator(mode="after")
    def _halo_ok(self):
        limits.gaussian_ok(self.sigma, self.truncate)
        return self


class DogParams(OpParams, AxesParam):
    low_sigma: PerAxis
    high_sigma: PerAxis | None = None
    mode: Mode = "nearest"
    cval: float = 0.0
    truncate: float = Field(4.0, gt=0)
    axes: str | None = None

    _s = field_validator("low_sigma", "high_sigma")(lambda v: v if v is None else check_positive(v, "sigma"))

    @model_validator(mode="after")
    def _halo_ok(self):
        limits.gaussian_ok(self.low_sigma, self.truncate, "low_sigma")
        if self.high_sigma is not None:
            limits.gaussian_ok(self.high_sigma, self.truncate, "high_sigma")
        else:  # skimage's default high_sigma is 1.6 x low_sigma
            low = self.low_sigma
            limits.gaussian_ok({a: 1.6 * v for a, v in low.items()} if isinstance(low, dict) else 1.6 * low,
                               self.truncate, "high_sigma (1.6 x low_sigma)")
        return self


class UnsharpParams(OpParams, AxesParam):
    radius: PerAxis = 1.0
    amount: float = 1.0
    axes: str | None = None

    _s = field_validator("radius")(lambda v: check_positive(v, "radius"))

    @model_validator(mode="after")
    def _halo_ok(self):
        limits.gaussian_ok(self.radius, 4.0, "radius")
        return self


class SizeParams(ModeParams, AxesParam):
    size: PerAxisInt
    axes: str | None = None

    _s = field_validator("size")(lambda v: limits.size_ok(check_size(v)) or v)


class EdgeParams(ModeParams, AxesParam):
    axes: str | None = None
    output: Literal["magnitude", "components", "orientation"] = "magnitude"


class LaplaceParams(ModeParams, AxesParam):
    axes: str | None = None


class DiffusionParams(ModeParams, AxesParam):
    diffusivity: float | None = Field(None, ge=0)
    time: float | None = Field(None, ge=0)
    steps: int | None = Field(None, ge=1, le=10000)
    dt: float | None = Field(None, gt=0)
    axes: str | None = None

    @model_validator(mode="after")
    def _one_form(self):
        a = self.diffusivity is not None or self.time is not None
        b = self.steps is not None or self.dt is not None
        if a == b:
            raise ValueError("give either diffusivity + time, or steps + dt")
        if a and (self.diffusivity is None or self.time is None):
            raise ValueError("diffusivity and time go together")
        if b and (self.steps is None or self.dt is None):
            raise ValueError("steps and dt go together")
        if a:
            limits.gaussian_ok(math.sqrt(min(2.0 * self.diffusivity * self.time, 1e300)), 4.0,
                               "sigma = sqrt(2 * diffusivity * time)")
        return self


def diffusion_count(params: DiffusionParams) -> int:
    """How many ops a diffusion step runs as (each explicit step is one), known from the parameters alone."""
    return int(params.steps or 1)


_EDGE = ("along each axis of ``axes``: ``magnitude`` sqrt(sum of squares), ``components`` one ``c`` channel "
         "per axis, ``orientation`` arctan2(d/dy, d/dx) in (-pi, pi] over exactly two axes")

ENTRIES = [
    Entry("correlate", KernelParams, "local", "scipy.ndimage.correlate with an inline, .npy or named kernel",
          "scipy.ndimage.correlate over ``axes`` (default: the kernel's trailing axes) with the kernel, "
          "normalised by ``normalize``; ``origin`` shifts it as scipy does."),
    Entry("convolve", KernelParams, "local", "scipy.ndimage.convolve with an inline, .npy or named kernel",
          "scipy.ndimage.convolve: correlate with the flipped kernel and mirrored origin."),
    Entry("gaussian", GaussianParams, "local", "scipy.ndimage.gaussian_filter",
          "scipy.ndimage.gaussian_filter with per-axis sigma and derivative order over ``axes``."),
    Entry("gaussian_laplace", SigmaParams, "local", "scipy.ndimage.gaussian_laplace",
          "scipy.ndimage.gaussian_laplace: the sum over ``axes`` of second Gaussian derivatives."),
    Entry("gaussian_gradient_magnitude", SigmaParams, "local", "scipy.ndimage.gaussian_gradient_magnitude",
          "scipy.ndimage.gaussian_gradient_magnitude: sqrt of the sum of squared first Gaussian derivatives."),
    Entry("difference_of_gaussians", DogParams, "local", "skimage.filters.difference_of_gaussians (float input)",
          "skimage.filters.difference_of_gaussians: the blur of low_sigma minus the blur of high_sigma "
          "(default 1.6 x low_sigma), each with its own radius."),
    Entry("unsharp_mask", UnsharpParams, "local", "skimage.filters.unsharp_mask on float input, preserve_range=True",
          "skimage.filters.unsharp_mask(preserve_range=True): x + amount * (x - gaussian(x, radius)), "
          "blurred with mode reflect."),
    Entry("uniform", SizeParams, "local", "scipy.ndimage.uniform_filter", "scipy.ndimage.uniform_filter."),
    Entry("median", SizeParams, "local", "scipy.ndimage.median_filter",
          "scipy.ndimage.median_filter; a window holding a NaN gives NaN."),
    Entry("minimum", SizeParams, "local", "scipy.ndimage.minimum_filter",
          "scipy.ndimage.minimum_filter; a window holding a NaN gives NaN."),
    Entry("maximum", SizeParams, "local", "scipy.ndimage.maximum_filter",
          "scipy.ndimage.maximum_filter; a window holding a NaN gives NaN."),
    Entry("sobel", EdgeParams, "local", "scipy.ndimage.sobel along each axis; magnitude / components / orientation",
          "scipy.ndimage.sobel " + _EDGE + "."),
    Entry("prewitt", EdgeParams, "local", "scipy.ndimage.prewitt along each axis; magnitude / components / orientation",
          "scipy.ndimage.prewitt " + _EDGE + "."),
    Entry("scharr", EdgeParams, "local",
          "scikit-image scharr weights ([3,10,3]/16 smoothing, [-1,0,1] derivative) along each axis",
          "scikit-image's scharr weights " + _EDGE + "."),
    Entry("laplace", LaplaceParams, "local", "scipy.ndimage.laplace", "scipy.ndimage.laplace over ``axes``."),
    Entry("diffusion", DiffusionParams, "local",
          "heat equation: gaussian with sigma=sqrt(2*D*t), or explicit steps of u += dt*laplace(u)",
          "The heat equation: a gaussian of sigma sqrt(2 * diffusivity * time), or ``steps`` explicit steps "
          "u <- u + dt * laplace(u) (dt <= 1 / (2 * number of axes)).", expanded_count=diffusion_count),
]
