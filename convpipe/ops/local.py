"""Local filters: every output voxel depends on a bounded neighbourhood (the halo).

Each op's oracle is the scipy.ndimage / scikit-image function named in SPEC.md, applied to the whole
array in float64. ``apply`` receives a block padded by exactly ``halo()`` (boundary modes already
applied by the tiling machinery) and returns the valid part.

Dtype rule: local ops compute in the pipeline's precision (float32 by default, float64 on request);
integer inputs are cast before the first op.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from .. import engines
from .. import limits
from ..finite import is_finite
from ..kernels import kernel_from_source, kernel_or_none, normalize, separable_factors
from .base import AxesParam, Mode, Op, OpParams, PerAxis, PerAxisInt, insert_axis
from .layers.params import ExtentParams
from .layers.window import Windowed
from .registry import register

try:
    from scipy.ndimage._filters import _gaussian_kernel1d as _scipy_gauss1d
except ImportError:  # pragma: no cover - private in scipy; keep our copy of its formula
    _scipy_gauss1d = None


def gaussian_kernel1d(sigma: float, order: int, radius: int) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian (derivative) weights, reversed as gaussian_filter1d uses them."""
    if _scipy_gauss1d is not None:
        w = _scipy_gauss1d(sigma, order, radius)
    else:  # pragma: no cover
        x = np.arange(-radius, radius + 1)
        phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
        phi /= phi.sum()
        if order == 0:
            w = phi
        else:
            exp_range = np.arange(order + 1)
            q = np.zeros(order + 1)
            q[0] = 1
            d = np.diag(exp_range[1:], 1)
            p = np.diag(np.ones(order) / -(sigma * sigma), -1)
            for _ in range(order):
                q = (d + p).dot(q)
            w = (x[:, None] ** exp_range).dot(q) * phi
    return np.ascontiguousarray(w[::-1], dtype=np.float64)


def gaussian_radius(sigma: float, truncate: float) -> int:
    return int(truncate * float(sigma) + 0.5)


class _ModeParams(OpParams):
    mode: Mode = "reflect"
    cval: float = 0.0


class _LocalOp(Op):
    kind = "local"

    def crop(self, y: np.ndarray) -> np.ndarray:
        """Drop the halo: the valid region of a result computed on the padded block."""
        sl = [slice(None)] * y.ndim
        for a, (lo, hi) in self.halo().items():
            i = self.in_axes.index(a)
            sl[i] = slice(lo, y.shape[i] - hi)
        return y[tuple(sl)]

    def ax(self, letter: str) -> int:
        return self.in_axes.index(letter)

    wants_outside = False

    def fill(self, outside: dict[int, np.ndarray] | None) -> tuple | None:
        """scipy's per-pass cval padding, needed for kernels that do not sum to one (see engines)."""
        if not outside:
            return None
        mode, cval = self.boundary(self.in_axes[0])
        return (outside, cval) if mode == "constant" and cval != 0 else None


def _check_positive(v, name):
    vals = v.values() if isinstance(v, dict) else [v]
    for x in vals:
        if x is None or not (x >= 0) or not math.isfinite(limits.as_float(x)):
            raise ValueError(f"{name} must be >= 0 and finite, got {x!r}"[:200])
    return v


def _check_size(v, name="size"):
    vals = v.values() if isinstance(v, dict) else [v]
    for x in vals:
        if int(x) != x or x < 1:
            raise ValueError(f"{name} must be a positive integer, got {x!r}"[:200])
    return v


# --------------------------------------------------------------------------- convolve / correlate


class KernelParams(_ModeParams, AxesParam, ExtentParams):
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


class _Correlate(Windowed, _LocalOp):
    Params = KernelParams
    linear = True
    flip = False

    def setup(self) -> None:
        p = self.params
        base = self.step.spec.base_dir if (self.step is not None and self.step.spec is not None) else None
        k = normalize(kernel_from_source(p.kernel, base), p.normalize, p.temperature)
        default = {1: "x", 2: "yx", 3: "zyx"}.get(k.ndim, "yx")
        self.axes = self.resolve_axes(p.axes, default=default)
        if k.ndim == 1 and len(self.axes) > 1:
            k = k.reshape((1,) * (len(self.axes) - 1) + (-1,))
        if k.ndim != len(self.axes):
            raise self.error(f"a {k.ndim}-D kernel needs {k.ndim} axes, but the op acts on {self.axes!r}", "kernel")
        origins = [p.origin] * k.ndim if isinstance(p.origin, int) else list(p.origin)
        if len(origins) != k.ndim:
            raise self.error(f"origin needs {k.ndim} values", "origin")
        if self.flip:  # scipy.ndimage.convolve == correlate with the flipped kernel and mirrored origin
            k = np.ascontiguousarray(k[(slice(None, None, -1),) * k.ndim])
            origins = [-o - (0 if s & 1 else 1) for o, s in zip(origins, k.shape)]
        self.centers = []
        for o, s in zip(origins, k.shape):
            c = s // 2 + o
            if not 0 <= c < s:
                raise self.error(f"origin {o} is outside the kernel (size {s})", "origin")
            self.centers.append(c)
        self.kernel = k
        extent = getattr(p, "extent", "same")
        if extent != "same" and any(o != 0 for o in ([p.origin] if isinstance(p.origin, int) else p.origin)):
            raise self.error("origin applies to extent: same only", "origin")
        self.set_window(k.shape, tuple(self.centers), extent, getattr(p, "stride", 1))
        self.factors = separable_factors(k)
        if p.method == "separable" and self.factors is None:
            raise self.error("method separable: this kernel is not separable (rank > 1)", "method")

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

    def apply(self, x, xp=np):
        # the block holds each output window (extent, stride: see ops.layers.window); the engines compute the
        # valid correlation, then positions 0, s, 2s, ... are kept
        return self.subsample(self._valid(x, xp), self.ax)

    def _valid(self, x, xp=np):
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
        from ..backends import for_array

        shape = [1] * x.ndim
        for i, s in zip(idx, self.kernel.shape):
            shape[i] = s
        k = self.kernel[(slice(None, None, -1),) * self.kernel.ndim].reshape(shape)
        return for_array(x).fftconvolve(x, k.astype(x.dtype), mode="valid", axes=idx).astype(x.dtype, copy=False)



@register
class Correlate(_Correlate):
    name = "correlate"
    summary = "scipy.ndimage.correlate with an inline, .npy or named kernel"


@register
class Convolve(_Correlate):
    name = "convolve"
    flip = True
    summary = "scipy.ndimage.convolve with an inline, .npy or named kernel"


# --------------------------------------------------------------------------- gaussian family


class GaussianParams(_ModeParams, AxesParam):
    sigma: PerAxis
    order: PerAxisInt = 0
    truncate: float = Field(4.0, gt=0)
    axes: str | None = None

    _s = field_validator("sigma")(lambda v: _check_positive(v, "sigma"))

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


@register
class Gaussian(_LocalOp):
    name = "gaussian"
    linear = True
    Params = GaussianParams
    summary = "scipy.ndimage.gaussian_filter"

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes, sigma=p.sigma, order=p.order)
        self.sigma = self.per_axis(p.sigma, self.axes, "sigma")
        self.order = self.per_axis(p.order, self.axes, "order")
        if any(o < 0 or int(o) != o for o in self.order.values()):
            raise self.error("order must be a non-negative integer", "order")
        # scipy skips axes whose sigma is ~0 (order ignored there too)
        self.active = {a: s for a, s in self.sigma.items() if s > 1e-15}
        self.radius = {a: gaussian_radius(s, p.truncate) for a, s in self.active.items()}

    def halo(self):
        return {a: (r, r) for a, r in self.radius.items()}

    def weights(self, x_axes_index):
        return {x_axes_index(a): (gaussian_kernel1d(s, int(self.order[a]), self.radius[a]), self.radius[a])
                for a, s in self.active.items()}

    wants_outside = True

    def apply(self, x, xp=np, outside=None):
        w = self.weights(self.ax)
        fill = self.fill(outside) if any(int(o) for o in self.order.values()) else None
        return self.crop(engines.sep_correlate(x, w, fill=fill, order=sorted(w)))

    def method(self):
        return "separable"


class SigmaParams(_ModeParams, AxesParam):
    sigma: PerAxis
    truncate: float = Field(4.0, gt=0)
    axes: str | None = None

    _s = field_validator("sigma")(lambda v: _check_positive(v, "sigma"))

    @model_validator(mode="after")
    def _halo_ok(self):
        limits.gaussian_ok(self.sigma, self.truncate)
        return self


class _GaussDerivs(_LocalOp):
    """Sum over axes of Gaussian derivative filters of one input (one padding, one halo)."""

    Params = SigmaParams
    deriv_order = 2

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes, sigma=p.sigma)
        self.sigma = self.per_axis(p.sigma, self.axes, "sigma")
        self.radius = {a: gaussian_radius(s, p.truncate) if s > 1e-15 else 0 for a, s in self.sigma.items()}

    def halo(self):
        return {a: (r, r) for a, r in self.radius.items()}

    wants_outside = True

    def derivative(self, x, along: str, outside=None):
        w = {}
        for a, s in self.sigma.items():
            if s > 1e-15:
                order = self.deriv_order if a == along else 0
                w[self.ax(a)] = (gaussian_kernel1d(s, order, self.radius[a]), self.radius[a])
        return engines.sep_correlate(x, w, fill=self.fill(outside), order=sorted(w))

    def method(self):
        return "separable"


@register
class GaussianLaplace(_GaussDerivs):
    name = "gaussian_laplace"
    linear = True
    summary = "scipy.ndimage.gaussian_laplace"

    def apply(self, x, xp=np, outside=None):
        out = None
        for a in self.axes:
            d = self.crop(self.derivative(x, a, outside))
            out = d.copy() if out is None else np.add(out, d, out=out)
        return out


@register
class GaussianGradientMagnitude(_GaussDerivs):
    name = "gaussian_gradient_magnitude"
    deriv_order = 1
    summary = "scipy.ndimage.gaussian_gradient_magnitude"

    def apply(self, x, xp=np, outside=None):
        out = None
        for a in self.axes:
            d = self.crop(self.derivative(x, a, outside))
            out = d * d if out is None else out + d * d
        return np.sqrt(out, out=out)


class DogParams(OpParams, AxesParam):
    low_sigma: PerAxis
    high_sigma: PerAxis | None = None
    mode: Mode = "nearest"
    cval: float = 0.0
    truncate: float = Field(4.0, gt=0)
    axes: str | None = None

    _s = field_validator("low_sigma", "high_sigma")(lambda v: v if v is None else _check_positive(v, "sigma"))

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


@register
class DifferenceOfGaussians(_LocalOp):
    name = "difference_of_gaussians"
    linear = True
    Params = DogParams
    summary = "skimage.filters.difference_of_gaussians (float input)"

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes, low_sigma=p.low_sigma, high_sigma=p.high_sigma)
        self.low = self.per_axis(p.low_sigma, self.axes, "low_sigma")
        hs = p.high_sigma if p.high_sigma is not None else {a: 1.6 * s for a, s in self.low.items()}
        self.high = self.per_axis(hs, self.axes, "high_sigma")
        if any(self.high[a] < self.low[a] for a in self.axes):
            raise self.error("high_sigma must be >= low_sigma on every axis", "high_sigma")
        self.radius = {a: max(gaussian_radius(self.high[a], p.truncate), gaussian_radius(self.low[a], p.truncate))
                       for a in self.axes}

    def halo(self):
        return {a: (r, r) for a, r in self.radius.items()}

    def _blur(self, x, sig):
        """The gaussian of ``sig`` on the part of the block its own radius needs (the block is padded by the
        larger radius), cropped to the op's output. Zero taps would turn an inf into NaN (0 * inf), where
        skimage's blur with the smaller radius never reads it."""
        w, sl = {}, [slice(None)] * x.ndim
        for a, R in self.radius.items():
            s = sig[a]
            r = gaussian_radius(s, self.params.truncate) if s > 1e-15 else 0
            sl[self.ax(a)] = slice(R - r, x.shape[self.ax(a)] - (R - r))
            if s > 1e-15:
                w[self.ax(a)] = (gaussian_kernel1d(s, 0, r), r)
        sub = x[tuple(sl)]
        y = engines.sep_correlate(sub, w)
        crop = [slice(None)] * x.ndim
        for ax, (_, r) in w.items():
            crop[ax] = slice(r, y.shape[ax] - r)
        return y[tuple(crop)]

    def apply(self, x, xp=np):
        return self._blur(x, self.low) - self._blur(x, self.high)

    def method(self):
        return "separable"


class UnsharpParams(OpParams, AxesParam):
    radius: PerAxis = 1.0
    amount: float = 1.0
    axes: str | None = None

    _s = field_validator("radius")(lambda v: _check_positive(v, "radius"))

    @model_validator(mode="after")
    def _halo_ok(self):
        limits.gaussian_ok(self.radius, 4.0, "radius")
        return self


@register
class UnsharpMask(_LocalOp):
    name = "unsharp_mask"
    linear = True
    Params = UnsharpParams
    summary = "skimage.filters.unsharp_mask on float input, preserve_range=True"

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes, radius=self.params.radius)
        self.sigma = self.per_axis(self.params.radius, self.axes, "radius")
        self.radius = {a: gaussian_radius(s, 4.0) if s > 1e-15 else 0 for a, s in self.sigma.items()}

    def boundary(self, axis):
        return "reflect", 0.0  # skimage's unsharp_mask blurs with mode='reflect'

    def halo(self):
        return {a: (r, r) for a, r in self.radius.items()}

    def apply(self, x, xp=np):
        w = {self.ax(a): (gaussian_kernel1d(s, 0, self.radius[a]), self.radius[a])
             for a, s in self.sigma.items() if s > 1e-15}
        blurred = self.crop(engines.sep_correlate(x, w))
        core = self.crop(x)
        return core + (core - blurred) * x.dtype.type(self.params.amount)  # CuPy refuses 0-d numpy arrays

    def method(self):
        return "separable"


# --------------------------------------------------------------------------- uniform and rank filters


class SizeParams(_ModeParams, AxesParam):
    size: PerAxisInt
    axes: str | None = None

    _s = field_validator("size")(lambda v: limits.size_ok(_check_size(v)) or v)


class _SizeOp(_LocalOp):
    Params = SizeParams

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes, size=self.params.size)
        self.size = {a: int(v) for a, v in self.per_axis(self.params.size, self.axes, "size").items()}

    def halo(self):
        return {a: (s // 2, s - 1 - s // 2) for a, s in self.size.items()}


@register
class Uniform(_SizeOp):
    name = "uniform"
    linear = True
    summary = "scipy.ndimage.uniform_filter"

    def apply(self, x, xp=np):
        w = {self.ax(a): (np.full(s, 1.0 / s), s // 2) for a, s in self.size.items() if s > 1}
        return self.crop(engines.sep_correlate(x, w))

    def method(self):
        return "separable"


class _Rank(_SizeOp):
    def apply(self, x, xp=np):
        return self.crop(engines.rank_filter(x, self.name, {self.ax(a): s for a, s in self.size.items()}))


@register
class Median(_Rank):
    name = "median"
    summary = "scipy.ndimage.median_filter"


@register
class Minimum(_Rank):
    name = "minimum"
    summary = "scipy.ndimage.minimum_filter"


@register
class Maximum(_Rank):
    name = "maximum"
    summary = "scipy.ndimage.maximum_filter"


# --------------------------------------------------------------------------- edges


class EdgeParams(_ModeParams, AxesParam):
    axes: str | None = None
    output: Literal["magnitude", "components", "orientation"] = "magnitude"


def orientation(dy, dx):
    """arctan2(dy, dx) in (-pi, pi], 0 where both are 0, whatever the sign of a zero (SPEC.md).

    Engines disagree on the sign of an exactly zero derivative (OpenCV gives +0, scipy -0), and arctan2
    turns that sign into 0, pi or -pi. Adding +0.0 maps -0 to +0 (IEEE 754) and changes nothing else, so
    arctan2 then gives 0 for a zero gradient and never -pi. In place: the components are temporaries.
    """
    np.add(dy, 0.0, out=dy)
    np.add(dx, 0.0, out=dx)
    return np.arctan2(dy, dx)


class _Edge(_LocalOp):
    Params = EdgeParams
    smooth: np.ndarray
    deriv = np.array([-1.0, 0.0, 1.0])

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes)
        if self.params.output == "orientation" and len(self.axes) != 2:
            raise self.error(f"orientation needs exactly 2 axes, got {self.axes!r}", "output")
        if self.params.output == "components" and "c" in self.in_axes:
            raise self.error("components would add a 'c' axis, but the input already has one", "output")
        self.linear = self.params.output == "components"

    @property
    def out_axes(self):
        return insert_axis(self.in_axes, "c") if self.params.output == "components" else self.in_axes

    def out_extent(self, axis, n):
        return len(self.axes)

    @property
    def hides_nonfinite(self):  # arctan2(inf, x) is finite (convpipe.finite)
        return self.params.output == "orientation"

    def halo(self):
        return {a: (1, 1) for a in self.axes}

    wants_outside = True

    def component(self, x, along, outside=None):
        w = {self.ax(a): ((self.deriv if a == along else self.smooth), 1) for a in self.axes}
        # scipy.ndimage.sobel: the derivative pass first, then smoothing along the other axes in order
        order = [self.ax(along)] + [self.ax(a) for a in self.axes if a != along]
        return self.crop(engines.sep_correlate(x, w, fill=self.fill(outside), order=order))

    def apply(self, x, xp=np, outside=None):
        comps = [self.component(x, a, outside) for a in self.axes]
        out = self.params.output
        if out == "magnitude":
            acc = comps[0] * comps[0]
            for c in comps[1:]:
                acc += c * c
            return np.sqrt(acc, out=acc)
        if out == "orientation":
            dy, dx = comps  # axes in tczyx order: the first plays y, the second x
            if x.dtype.itemsize < 8 and not (is_finite(dy) and is_finite(dx)) and engines.all_finite(x):
                # components of finite values overflowed: arctan2(inf, inf) would be a finite, wrong angle
                dy, dx = (self.component(x.astype(np.float64), a, outside) for a in self.axes)
            return orientation(dy, dx).astype(x.dtype, copy=False)
        cpos = self.out_axes.index("c")
        return np.stack(comps, axis=cpos)

    def method(self):
        return "separable"


@register
class Sobel(_Edge):
    name = "sobel"
    smooth = np.array([1.0, 2.0, 1.0])
    summary = "scipy.ndimage.sobel along each axis; magnitude / components / orientation"


@register
class Prewitt(_Edge):
    name = "prewitt"
    smooth = np.array([1.0, 1.0, 1.0])
    summary = "scipy.ndimage.prewitt along each axis; magnitude / components / orientation"


@register
class Scharr(_Edge):
    name = "scharr"
    smooth = np.array([3.0, 10.0, 3.0]) / 16.0
    summary = "scikit-image scharr weights ([3,10,3]/16 smoothing, [-1,0,1] derivative) along each axis"


class LaplaceParams(_ModeParams, AxesParam):
    axes: str | None = None


@register
class Laplace(_LocalOp):
    name = "laplace"
    linear = True
    Params = LaplaceParams
    summary = "scipy.ndimage.laplace"

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes)

    def halo(self):
        return {a: (1, 1) for a in self.axes}

    def apply(self, x, xp=np):
        out = None
        w = np.array([1.0, -2.0, 1.0])
        for a in self.axes:
            d = self.crop(engines.sep_correlate(x, {self.ax(a): (w, 1)}))
            out = d.copy() if out is None else np.add(out, d, out=out)
        return out

    def method(self):
        return "separable"


# --------------------------------------------------------------------------- diffusion


class DiffusionParams(_ModeParams, AxesParam):
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


class HeatStep(_LocalOp):
    """One explicit step u <- u + dt * laplace(u); internal (diffusion with steps expands into these)."""

    name = "heat_step"
    linear = True

    def __init__(self, params, axes, *, step=None, dt=0.1, over="yx"):
        self.dt = dt
        self.axes = over
        super().__init__(params, axes, step=step)

    def halo(self):
        return {a: (1, 1) for a in self.axes}

    def apply(self, x, xp=np):
        w = np.array([1.0, -2.0, 1.0])
        core = self.crop(x)
        lap = None
        for a in self.axes:
            d = self.crop(engines.sep_correlate(x, {self.ax(a): (w, 1)}))
            lap = d.copy() if lap is None else np.add(lap, d, out=lap)
        return core + x.dtype.type(self.dt) * lap


@register
class Diffusion(_LocalOp):
    name = "diffusion"
    linear = True
    Params = DiffusionParams
    summary = "heat equation: gaussian with sigma=sqrt(2*D*t), or explicit steps of u += dt*laplace(u)"

    @staticmethod
    def expanded_count(params: DiffusionParams) -> int:
        """How many ops this step runs as (each explicit step is one), known from the parameters alone."""
        return int(params.steps or 1)

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes)
        if p.steps is not None:
            limit = 1.0 / (2 * len(self.axes))
            if p.dt > limit:
                raise self.error(f"dt {p.dt} is above the stability limit {limit:g} for {len(self.axes)} axes "
                                 "(explicit scheme: dt <= 1 / (2 * number of axes))", "dt")
            self.sub = [HeatStep(p, self.in_axes, step=self.step, dt=p.dt, over=self.axes) for _ in range(p.steps)]
        else:
            sigma = math.sqrt(2.0 * p.diffusivity * p.time)
            gp = GaussianParams(sigma={a: sigma for a in self.axes}, mode=p.mode, cval=p.cval)
            self.sub = [Gaussian(gp, self.in_axes, step=self.step)]

    def expand(self):
        return self.sub

    def halo(self):
        h = {}
        for s in self.sub:
            for a, (lo, hi) in s.halo().items():
                plo, phi = h.get(a, (0, 0))
                h[a] = (plo + lo, phi + hi)
        return h


# --------------------------------------------------------------------------- merged linear filters


class MergedSeparable(_LocalOp):
    """Consecutive symmetric linear filters run as one sum of separable terms (the planner builds these).

    Correlation is associative and distributes over sums, and for ``wrap`` (periodic extension) or
    ``reflect`` / ``mirror`` (symmetric extensions) with *symmetric* kernels the extension of a filtered
    signal equals the filtered extension. Filtering in sequence with the array-edge mode is therefore
    exactly filtering once with the composed kernels: gaussian -> gaussian_laplace -> uniform becomes two
    separable terms. ``nearest`` and ``constant`` lack that property and are never merged.

    ``terms`` is a list of ``{axis: 1-D weights}``; an axis missing from a term is the identity there.
    Axes whose kernel is the same in every term are filtered once, before the terms split.
    """

    name = "merged"
    linear = True

    def __init__(self, parts: list[Any], terms: list[dict[str, np.ndarray]], mode: str):
        self.parts = parts
        self.terms = [{a: np.ascontiguousarray(v) for a, v in t.items()} for t in terms]
        self._mode = mode
        axes = {a for t in self.terms for a in t}
        self.common = {a: self.terms[0][a] for a in sorted(axes)
                       if all(a in t and t[a].shape == self.terms[0][a].shape and np.array_equal(t[a], self.terms[0][a])
                              for t in self.terms)}
        self.rad = {a: max(len(t[a]) // 2 for t in self.terms if a in t) for a in axes}
        super().__init__(parts[0].params, parts[0].in_axes, step=parts[0].step)

    def boundary(self, axis):
        return self._mode, 0.0

    def halo(self):
        return {a: (r, r) for a, r in self.rad.items()}

    def _w(self, a, v):
        r = self.rad[a]
        if len(v) // 2 < r:  # centre a shorter kernel in the axis' common halo
            v = np.pad(v, r - len(v) // 2)
        return (v, r)

    def apply(self, x, xp=np):
        if not engines.all_finite(x):
            # NaN/inf: the steps one after the other, as written. A composed kernel has the same NaN footprint
            # but other inf arithmetic (gaussian -> gaussian_laplace: +inf where the steps give inf - inf = NaN).
            # The block holds the sum of the parts' halos, and for these modes and symmetric kernels filtering
            # the padded block equals padding the filtered one (see the class docstring).
            for p in self.parts:
                x = p.apply(x, xp)
            return x
        base = engines.sep_correlate(x, {self.ax(a): self._w(a, v) for a, v in self.common.items()})
        out = None
        for t in self.terms:
            rest = {self.ax(a): self._w(a, v) for a, v in t.items() if a not in self.common}
            y = self.crop(engines.sep_correlate(base, rest))
            out = y.copy() if out is None else np.add(out, y, out=out)
        return out

    def method(self):
        return f"separable (merged, {len(self.terms)} term{'s' if len(self.terms) > 1 else ''})"

    def describe(self):
        return " * ".join(p.describe() for p in self.parts) + f" (merged: {self.method()})"


def symmetric_terms(op: Op) -> tuple[str, list[dict[str, np.ndarray]]] | None:
    """(mode, separable terms with symmetric 1-D weights) when ``op`` is mergeable, else None."""
    mode = op.boundary(op.in_axes[0])[0] if op.kind == "local" else None
    if mode not in ("wrap", "reflect", "mirror"):
        return None
    if isinstance(op, Gaussian) and all(int(o) == 0 for o in op.order.values()):
        terms = [{a: gaussian_kernel1d(s, 0, op.radius[a]) for a, s in op.active.items()}]
    elif isinstance(op, Uniform) and all(s % 2 == 1 for s in op.size.values()):
        terms = [{a: np.full(s, 1.0 / s) for a, s in op.size.items() if s > 1}]
    elif isinstance(op, GaussianLaplace):
        terms = []
        for along in op.axes:
            terms.append({a: gaussian_kernel1d(s, 2 if a == along else 0, op.radius[a])
                          for a, s in op.sigma.items() if s > 1e-15})
    elif isinstance(op, MergedSeparable):
        terms = [dict(t) for t in op.terms]
    else:
        return None
    if not all(np.allclose(v, v[::-1], rtol=1e-12, atol=1e-15) for t in terms for v in t.values()):
        return None
    return mode, terms


# One 1-D pass costs its taps plus about this many taps' worth of memory traffic (measured with OpenCV on
# float32 planes here: a 5-tap pass takes ~1.6x a 1-tap pass, a 45-tap one ~6x).
_PASS_COST = 8


def _terms_cost(terms: list[dict[str, np.ndarray]]) -> int:
    common = {a for a in terms[0] if all(a in t and np.array_equal(t[a], terms[0][a]) for t in terms)}
    cost = sum(len(terms[0][a]) + _PASS_COST for a in common)
    return cost + sum(len(v) + _PASS_COST for t in terms for a, v in t.items() if a not in common)


def merge_linear(ops: list[Op], *, only_if_cheaper: bool = True) -> list[Op]:
    """Merge runs of consecutive mergeable filters that share a boundary mode.

    Composed kernels are longer (taps add up) and terms multiply, so a merge saves memory passes but can
    cost arithmetic: it is made only when the tap-count model says the merged op is cheaper (two
    Gaussians: yes; gaussian -> gaussian_laplace -> uniform: no), and never past 4 terms.
    """
    out: list[Op] = []
    for op in ops:
        cur = symmetric_terms(op)
        prev = symmetric_terms(out[-1]) if out else None
        if (cur is not None and prev is not None and cur[0] == prev[0] and out[-1].in_axes == op.in_axes
                and len(cur[1]) * len(prev[1]) <= 4):
            terms = []
            for t1 in prev[1]:
                for t2 in cur[1]:
                    t = dict(t1)
                    for a, v in t2.items():
                        t[a] = np.convolve(t[a], v) if a in t else v
                    terms.append(t)
            if only_if_cheaper and _terms_cost(terms) >= _terms_cost(prev[1]) + _terms_cost(cur[1]):
                out.append(op)
                continue
            parts = (out[-1].parts if isinstance(out[-1], MergedSeparable) else [out[-1]]) + [op]
            out[-1] = MergedSeparable(parts, terms, cur[0])
        else:
            out.append(op)
    return out
