"""Parameters of the object ops (``label``, ``regionprops``): pure pydantic, no dask, zarr or ops.

Kept apart from the op implementations so that it can move to ``convpipe/params/objects.py`` unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..base import AxesParam, OpParams

#: regionprops properties: scikit-image 0.26 names, plus ``intensity_sum`` (ours: area * intensity_mean)
PROPERTIES = ("label", "area", "centroid", "bbox", "intensity_mean", "intensity_min", "intensity_max",
              "intensity_sum")
INTENSITY_PROPERTIES = ("intensity_mean", "intensity_min", "intensity_max", "intensity_sum")
Property = Literal["label", "area", "centroid", "bbox", "intensity_mean", "intensity_min", "intensity_max",
                   "intensity_sum"]


class LabelParams(OpParams, AxesParam):
    connectivity: int = Field(1, ge=1, description="1 ... number of axes: neighbours are the voxels at most "
                                                   "this many steps away along distinct axes (scipy's "
                                                   "generate_binary_structure)")
    axes: str | None = Field(None, description="axes the components extend over (default: the spatial "
                                               "axes z, y, x present); every sub-array over the other axes "
                                               "is labelled on its own")
    dtype: Literal["int32", "int64"] = "int32"


class RegionpropsParams(OpParams, AxesParam):
    properties: list[Property] | None = Field(
        None, description="columns as skimage.measure.regionprops_table names them; default label, area, "
                          "centroid, bbox, and with intensity: input also intensity_mean/min/max/sum")
    intensity: Literal["input", "none"] = Field("none", description="input: intensities are the pipeline's "
                                                                    "input values")
    axes: str | None = None
    table: str | None = None

    @field_validator("properties")
    @classmethod
    def _props(cls, v):
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("properties: a non-empty list naming each property once")
        return v

    @field_validator("table")
    @classmethod
    def _table(cls, v):
        if v is not None and (not v.strip() or "\x00" in v):
            raise ValueError("a table location is a non-empty path or URL")
        return v
