"""Point ops: value-wise, no halo, fused into any pass.

Dtype rule: point ops keep the compute dtype, except ``threshold`` (uint8 0/1) and ``astype``. ``astype``
to an integer type saturates at the type's range (numpy would wrap around silently) and truncates
toward zero like numpy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import field_validator, model_validator

from ..spec import check_dtype
from .base import Op, OpParams
from .registry import register


def saturate(x: np.ndarray, dt: np.dtype) -> np.ndarray:
    """Cast to ``dt``; integer targets saturate (NaN -> 0) from float and from integer sources alike."""
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if x.dtype.kind == "f":
            x = np.clip(np.nan_to_num(x, nan=0.0), info.min, info.max)
        elif x.dtype.kind in "iu":
            src = np.iinfo(x.dtype)
            lo, hi = max(info.min, src.min), min(info.max, src.max)
            if lo > src.min or hi < src.max:
                x = np.clip(x, lo, hi)
    return x.astype(dt)


class _Point(Op):
    kind = "point"

    def method(self) -> str:
        return "elementwise"


class AstypeParams(OpParams):
    dtype: str

    _d = field_validator("dtype")(lambda v: (check_dtype(v), v)[1])


@register
class Astype(_Point):
    name = "astype"
    Params = AstypeParams
    raw_input = "exact"  # cast the stored values themselves (an int64 too), not their float32 rounding

    @property
    def hides_nonfinite(self):  # NaN -> 0 and inf -> the type's maximum in an integer target
        return np.dtype(self.params.dtype).kind not in "fc"
    summary = "cast to a dtype (saturating for integer types)"

    def out_dtype(self, compute):
        return np.dtype(self.params.dtype)

    def apply(self, x, xp=np):
        return saturate(x, np.dtype(self.params.dtype))


class ScaleParams(OpParams):
    factor: float = 1.0
    offset: float = 0.0


@register
class Scale(_Point):
    name = "scale"
    Params = ScaleParams
    linear = True
    summary = "x * factor + offset"

    def apply(self, x, xp=np):
        f = x.dtype.type(self.params.factor)  # numpy scalars: CuPy refuses 0-d numpy arrays
        o = x.dtype.type(self.params.offset)
        return x * f + o if self.params.offset else x * f


class ClipParams(OpParams):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _order(self):
        if self.min is None and self.max is None:
            raise ValueError("clip needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"clip min {self.min} is above max {self.max}")
        return self


@register
class Clip(_Point):
    name = "clip"
    Params = ClipParams
    summary = "numpy.clip"

    def apply(self, x, xp=np):
        return np.clip(x, self.params.min, self.params.max)


class NoParams(OpParams):
    pass


def _unary(opname: str, fn, doc: str, nonfinite: bool = False):
    cls = type(opname.capitalize(), (_Point,), {
        "name": opname, "Params": NoParams, "summary": doc, "domain_nonfinite": nonfinite,
        "apply": lambda self, x, xp=np: fn(x),
    })
    return register(cls)


_unary("abs", np.abs, "numpy.abs")
_unary("log1p", np.log1p, "numpy.log1p", nonfinite=True)  # log1p(-2) is NaN
_unary("sqrt", np.sqrt, "numpy.sqrt", nonfinite=True)  # sqrt(-1) is NaN


class ThresholdParams(OpParams):
    value: float | None = None
    # a global pre-pass computes skimage.filters.threshold_<method> of the whole input (convpipe.ops.objects)
    method: Literal["otsu", "li", "yen", "mean"] | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.value is None) == (self.method is None):
            raise ValueError("threshold takes either value or method (otsu, li, yen, mean)")
        return self


@register
class Threshold(_Point):
    name = "threshold"
    Params = ThresholdParams
    raw_input = "exact"  # compare the stored values, not their float32 rounding (an int32 near 2**28)
    hides_nonfinite = True  # inf > value is 1, NaN > value is 0
    summary = "x > value as uint8 0/1"

    def out_dtype(self, compute):
        return np.dtype(np.uint8)

    def expand(self):
        if self.params.method is None:
            return [self]
        from .objects.autothreshold import AutoThreshold

        return [AutoThreshold(self.params, self.in_axes, step=self.step)]

    def apply(self, x, xp=np):
        return (x > self.params.value).astype(np.uint8)
