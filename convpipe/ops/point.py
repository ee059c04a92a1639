"""Point ops: value-wise, no halo, fused into any pass.

Dtypes follow the rule of :mod:`convpipe.ops.base`: the compute dtype, except ``threshold`` (uint8 0/1) and
``astype``. ``astype`` to an integer type saturates at the type's range (numpy would wrap around silently)
and truncates toward zero like numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..params.point import AstypeParams, ClipParams, NoParams, ScaleParams, ThresholdParams
from .base import NO_CONTEXT, Context, Op


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
    """Value-wise ops; every one runs unchanged on CuPy blocks."""

    kind = "point"
    gpu_path = True

    def method(self) -> str:
        return "elementwise"


_SHAPES = """
        Parameters
        ----------
        x : array, any shape; the compute dtype{raw}
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape, {dtype}
        """


class Astype(_Point):
    name = "astype"
    Params = AstypeParams
    raw_input = "exact"  # cast the stored values themselves (an int64 too), not their float32 rounding

    @property
    def hides_nonfinite(self):  # NaN -> 0 and inf -> the type's maximum in an integer target
        return np.dtype(self.params.dtype).kind not in "fc"

    def out_dtype(self, compute):
        return np.dtype(self.params.dtype)

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        return saturate(x, np.dtype(self.params.dtype))

    apply.__doc__ = "The block cast to ``dtype`` (:func:`saturate` for integer targets)." + _SHAPES.format(
        raw=" (raw_input exact: the stored values)", dtype="``params.dtype``")


class Scale(_Point):
    name = "scale"
    Params = ScaleParams
    linear = True

    def shift_gain(self):
        return float(self.params.factor)

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        f = x.dtype.type(self.params.factor)  # numpy scalars: CuPy refuses 0-d numpy arrays
        o = x.dtype.type(self.params.offset)
        return x * f + o if self.params.offset else x * f

    apply.__doc__ = "x * factor + offset." + _SHAPES.format(raw="", dtype="``x``'s dtype")


class Clip(_Point):
    name = "clip"
    Params = ClipParams

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        return np.clip(x, self.params.min, self.params.max)

    apply.__doc__ = "numpy.clip(x, min, max)." + _SHAPES.format(raw="", dtype="``x``'s dtype")


class _Unary(_Point):
    Params = NoParams
    fn: Any = None

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        return type(self).fn(x)

    apply.__doc__ = "The numpy function the op is named after, value by value." + _SHAPES.format(
        raw="", dtype="``x``'s dtype")


class Abs(_Unary):
    name = "abs"
    fn = np.abs


class Log1p(_Unary):
    name = "log1p"
    fn = np.log1p
    domain_nonfinite = True  # log1p(-2) is NaN


class Sqrt(_Unary):
    name = "sqrt"
    fn = np.sqrt
    domain_nonfinite = True  # sqrt(-1) is NaN


class Threshold(_Point):
    name = "threshold"
    Params = ThresholdParams
    raw_input = "exact"  # compare the stored values, not their float32 rounding (an int32 near 2**28)
    hides_nonfinite = True  # inf > value is 1, NaN > value is 0

    def out_dtype(self, compute):
        return np.dtype(np.uint8)

    def expand(self):
        if self.params.method is None:
            return [self]
        from .objects.autothreshold import AutoThreshold  # a global op: skimage's threshold of the whole input

        return [AutoThreshold(self.params, self.in_axes, step=self.step)]

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        return (x > self.params.value).astype(np.uint8)

    apply.__doc__ = "x > value as 0/1." + _SHAPES.format(raw=" (raw_input exact: the stored values)",
                                                         dtype="uint8")
