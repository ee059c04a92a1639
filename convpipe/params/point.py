"""Parameters of the point ops (:mod:`convpipe.ops.point`): value-wise, no halo."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from .base import Entry, OpParams, check_dtype


class AstypeParams(OpParams):
    dtype: str

    _d = field_validator("dtype")(lambda v: (check_dtype(v), v)[1])


class ScaleParams(OpParams):
    factor: float = 1.0
    offset: float = 0.0


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


class NoParams(OpParams):
    pass


class ThresholdParams(OpParams):
    value: float | None = None
    # a global pre-pass computes skimage.filters.threshold_<method> of the whole input (convpipe.ops.objects)
    method: Literal["otsu", "li", "yen", "mean"] | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.value is None) == (self.method is None):
            raise ValueError("threshold takes either value or method (otsu, li, yen, mean)")
        return self


ENTRIES = [
    Entry("astype", AstypeParams, "point", "cast to a dtype (saturating for integer types)",
          "numpy's astype of the stored values; an integer target saturates at the type's range (NaN -> 0) "
          "and truncates toward zero."),
    Entry("scale", ScaleParams, "point", "x * factor + offset"),
    Entry("clip", ClipParams, "point", "numpy.clip"),
    Entry("abs", NoParams, "point", "numpy.abs"),
    Entry("log1p", NoParams, "point", "numpy.log1p", "numpy.log1p; NaN outside its domain (x < -1), as numpy."),
    Entry("sqrt", NoParams, "point", "numpy.sqrt", "numpy.sqrt; NaN outside its domain (x < 0), as numpy."),
    Entry("threshold", ThresholdParams, "point", "x > value as uint8 0/1 (value, or method: otsu li yen mean)",
          "x > value of the stored values, as uint8 0/1. With method, value is "
          "skimage.filters.threshold_<method> of the whole input, exactly, histograms as skimage builds them "
          "(a statistics pre-pass)."),
]
