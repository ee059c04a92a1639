"""Parameters of the object ops (SPEC.md "Objects"): morphology and the distance transform
(:mod:`convpipe.ops.objects`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from .. import limits
from ..kernels import kernel_or_none
from .base import AxesParam, Entry, Mode, OpParams, PerAxisInt

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


def _binary_count(stages: int):
    return lambda params: stages * int(params.iterations)


_BIN = ("scipy.ndimage.{f}(x != 0, structure, iterations) with border_value 0 on every sub-array over axes "
        "(default every spatial axis); structure = generate_binary_structure(len(axes), connectivity) or the "
        "footprint's nonzero elements; uint8 0/1.")
_GREY = ("scipy.ndimage.{f}(x, size or footprint, mode, cval) on every sub-array over axes (default every "
         "spatial axis, or the axes of a per-axis size); a window holding a NaN is NaN.")

ENTRIES = [
    Entry("binary_erosion", BinaryParams, "local", "scipy.ndimage.binary_erosion of x != 0 (border 0), uint8 0/1",
          _BIN.format(f="binary_erosion"), expanded_count=_binary_count(1)),
    Entry("binary_dilation", BinaryParams, "local", "scipy.ndimage.binary_dilation of x != 0 (border 0), uint8 0/1",
          _BIN.format(f="binary_dilation"), expanded_count=_binary_count(1)),
    Entry("binary_opening", BinaryParams, "local", "scipy.ndimage.binary_opening of x != 0 (border 0), uint8 0/1",
          _BIN.format(f="binary_opening"), expanded_count=_binary_count(2)),
    Entry("binary_closing", BinaryParams, "local", "scipy.ndimage.binary_closing of x != 0 (border 0), uint8 0/1",
          _BIN.format(f="binary_closing"), expanded_count=_binary_count(2)),
    Entry("grey_erosion", GreyParams, "local", "scipy.ndimage.grey_erosion (size or flat footprint)",
          _GREY.format(f="grey_erosion")),
    Entry("grey_dilation", GreyParams, "local", "scipy.ndimage.grey_dilation (size or flat footprint)",
          _GREY.format(f="grey_dilation")),
    Entry("grey_opening", GreyParams, "local", "scipy.ndimage.grey_opening (size or flat footprint)",
          _GREY.format(f="grey_opening"), expanded_count=lambda params: 2),
    Entry("grey_closing", GreyParams, "local", "scipy.ndimage.grey_closing (size or flat footprint)",
          _GREY.format(f="grey_closing"), expanded_count=lambda params: 2),
    Entry("white_tophat", GreyParams, "local", "scipy.ndimage.white_tophat: x - grey_opening(x)",
          _GREY.format(f="white_tophat")),
    Entry("black_tophat", GreyParams, "local", "scipy.ndimage.black_tophat: grey_closing(x) - x",
          _GREY.format(f="black_tophat")),
    Entry("distance_transform", DistanceParams, "full",
          "scipy.ndimage.distance_transform_edt(x != 0, sampling) per sub-array over axes (separable passes)",
          "The exact Euclidean distance of every voxel with x != 0 to the nearest voxel with x == 0 of its "
          "sub-array over axes (default every spatial axis), with voxel sizes sampling (default the OME "
          "metadata's of the level read, else 1): scipy.ndimage.distance_transform_edt. A sub-array without a "
          "background voxel is an error naming it.",
          expanded_count=lambda params: len(params.axes) if params.axes else 3),
]
