"""Parameters of the ops along one axis (:mod:`convpipe.ops.axis`): ``moving_average``, ``autoregressive``."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from ..limits import MAX_HALO
from .base import Entry, Mode, OpParams, axis_letter


class MovingAverageParams(OpParams):
    axis: str | None = Field(None, description="the axis (default t, else z)")
    window: int = Field(ge=1, le=2 * MAX_HALO + 1, description="number of samples averaged")
    align: Literal["centered", "trailing"] = "centered"
    mode: Mode = "reflect"
    cval: float = 0.0

    _a = field_validator("axis")(lambda v: axis_letter(v))


class AutoregressiveParams(OpParams):
    axis: str | None = Field(None, description="the axis (default t, else z)")
    coefficients: list[float] = Field(description="[a1, ..., ak]: y[t] = x[t] + sum_i a_i * y[t - i]")

    _a = field_validator("axis")(lambda v: axis_letter(v))

    @field_validator("coefficients")
    @classmethod
    def _coef(cls, v):
        if not v:
            raise ValueError("coefficients needs at least one value [a1, ..., ak]")
        if not all(math.isfinite(c) for c in v):
            raise ValueError("coefficients must be finite numbers")
        if len(v) > MAX_HALO:
            raise ValueError(f"at most {MAX_HALO} coefficients")
        return v


ENTRIES = [
    Entry("moving_average", MovingAverageParams, "local",
          "scipy.ndimage.uniform_filter1d along one axis; centered or trailing window",
          "The mean over ``window`` samples along ``axis`` (default t, else z): scipy.ndimage.uniform_filter1d, "
          "origin 0 (``centered``) or (window - 1) // 2 (``trailing``: the window ends at the sample)."),
    Entry("autoregressive", AutoregressiveParams, "full",
          "scipy.signal.lfilter([1], [1, -a1, ..., -ak]) along one axis (whole axis per task)",
          "y[t] = x[t] + sum_i a_i y[t - i] along ``axis`` from zero initial state: "
          "scipy.signal.lfilter([1], [1, -a1, ..., -ak])."),
]
