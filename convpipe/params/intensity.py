"""Parameters of the global point ops (:mod:`convpipe.ops.intensity`): ``zscore`` and ``rescale``, which need
statistics of their whole input first."""

from __future__ import annotations

import math

from pydantic import Field, field_validator, model_validator

from .base import Entry, OpParams


class ZScoreParams(OpParams):
    pass


class RescaleParams(OpParams):
    in_range: list[float] | None = Field(None, description="[low, high] of the input mapped onto out_range")
    percentiles: list[float] | None = Field(None, description="[p_low, p_high]: in_range = these percentiles "
                                                              "(numpy.percentile, linear) of the whole input")
    out_range: list[float] = [0.0, 1.0]  # noqa: RUF012  (pydantic copies field defaults)

    @field_validator("in_range", "out_range", "percentiles")
    @classmethod
    def _pair(cls, v, info):
        if v is None:
            return v
        if len(v) != 2:
            raise ValueError(f"{info.field_name} takes two values [low, high], got {len(v)}")
        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"{info.field_name} must be finite numbers")
        return v

    @model_validator(mode="after")
    def _one_range(self):
        if self.in_range is not None and self.percentiles is not None:
            raise ValueError("give in_range or percentiles, not both")
        if self.in_range is not None and self.in_range[0] > self.in_range[1]:
            raise ValueError(f"in_range low {self.in_range[0]} is above high {self.in_range[1]}")
        if self.percentiles is not None:
            lo, hi = self.percentiles
            if not (0 <= lo <= 100 and 0 <= hi <= 100):
                raise ValueError("percentiles must be in [0, 100]")
            if lo > hi:
                raise ValueError(f"percentiles low {lo} is above high {hi}")
        return self


ENTRIES = [
    Entry("zscore", ZScoreParams, "global",
          "(x - mean) / std of the whole input (population std, float64; statistics pre-pass)",
          "(x - mean) / std over the whole input, population std, float64 statistics; a constant input "
          "(std 0) gives x - mean."),
    Entry("rescale", RescaleParams, "global",
          "skimage.exposure.rescale_intensity with in_range, percentiles or the min/max of the whole input",
          "skimage.exposure.rescale_intensity(x, in_range, out_range) on float input; in_range explicit, two "
          "percentiles of the whole input, or its min and max."),
]
