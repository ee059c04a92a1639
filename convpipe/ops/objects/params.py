"""Parameters of the object ops (SPEC.md "Objects"), pure pydantic: ready to move to ``convpipe/params``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from ... import limits
from ...kernels import kernel_or_none
from ..base import AxesParam, Mode, OpParams, PerAxisInt

#: most iterations of a binary op (its halo is iterations x the footprint's radius)
MAX_ITERATIONS = 4096


def _footprint_ok(v: Any) -> Any:
    if v is not None:
        kernel_or_none(v)  # ValueError names the cause; a .npy path is read by convpipe.bind
    return v


class BinaryParams(OpParams, AxesParam):
    connectivity: int | None = Field(None, description="1 ... number of axes (default 1): "
                                                       "scipy.ndimage.generate_binary_structure")
    footprint: Any = Field(None, description="structuring element (nonzero = in): nested list, .npy path or "
                                             "named kernel; instead of connectivity")
    iterations: int = 1
    axes: str | None = None

    _f = field_validator("footprint")(lambda v: _footprint_ok(v))

    @field_validator("iterations")
    @classmethod
    def _iterations_ok(cls, v):
        if not 1 <= v <= MAX_ITERATIONS:
            raise ValueError(f"iterations must be 1 ... {MAX_ITERATIONS} (scipy's 'until nothing changes', "
                             "iterations < 1, has no bounded halo)")
        return v

    @field_validator("connectivity")
    @classmethod
    def _connectivity_ok(cls, v):
        if v is not None and v < 1:
            raise ValueError("connectivity must be >= 1")
        return v

    @model_validator(mode="after")
    def _one_structure(self):
        if self.connectivity is not None and self.footprint is not None:
            raise ValueError("give connectivity or footprint, not both")
        return self


class GreyParams(OpParams, AxesParam):
    size: PerAxisInt | None = Field(None, description="box size, a number or a per-axis map")
    footprint: Any = Field(None, description="flat structuring element (nonzero = in), a kernel source")
    mode: Mode = "reflect"
    cval: float = 0.0
    axes: str | None = None

    _f = field_validator("footprint")(lambda v: _footprint_ok(v))

    @field_validator("size")
    @classmethod
    def _size_ok(cls, v):
        if v is None:
            return v
        vals = v.values() if isinstance(v, dict) else [v]
        for s in vals:
            if int(s) != s or s < 1:
                raise ValueError(f"size must be a positive integer, got {s!r}"[:200])
        limits.size_ok(v)
        return v

    @model_validator(mode="after")
    def _one_structure(self):
        if (self.size is None) == (self.footprint is None):
            raise ValueError("give size or footprint (one of them)")
        return self


class DistanceParams(OpParams, AxesParam):
    sampling: float | dict[str, float] | list[float] | None = Field(
        None, description="voxel size: a number, a per-axis map or a list in the order of axes; default the "
                          "OME metadata's voxel sizes of the level read, else 1")
    axes: str | None = None

    @field_validator("sampling")
    @classmethod
    def _sampling_ok(cls, v):
        if v is None:
            return v
        vals = v.values() if isinstance(v, dict) else (v if isinstance(v, list) else [v])
        for s in vals:
            if not (s > 0) or s != s or s == float("inf"):
                raise ValueError(f"sampling must be > 0 and finite, got {s!r}"[:200])
        return v
