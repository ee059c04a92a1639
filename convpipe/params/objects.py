"""Parameters of the object ops (:mod:`convpipe.ops.objects`): ``label`` (connected components, scipy's
numbering on any tiling) and ``regionprops`` (skimage's regionprops_table -> Parquet)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import AxesParam, Entry, OpParams, table_location

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

    _t = field_validator("table")(lambda v: table_location(v))


ENTRIES = [
    Entry("label", LabelParams, "global",
          "connected components of x != 0, numbered as scipy.ndimage.label (a pre-pass over the tiles)",
          "scipy.ndimage.label(x != 0, structure=generate_binary_structure(len(axes), connectivity)) on every "
          "sub-array over ``axes`` (default the spatial axes): the same numbers, components in raster order of "
          "their first voxel, whatever the tiling; a count beyond ``dtype`` is an error before writing."),
    Entry("regionprops", RegionpropsParams, "point",
          "skimage regionprops_table (label, area, centroid, bbox, intensity_*) -> table; labels pass through",
          "skimage.measure.regionprops_table on every sub-array over ``axes``: one row per label per sub-array, "
          "columns as skimage names them in global voxel coordinates, one column per other axis; "
          "``intensity: input`` measures the pipeline's input; intensity_sum = area * intensity_mean."),
]
