"""Parameters of the convolutional-layer family (SPEC.md, "Convolutional layers").

Pure pydantic models: no op, dask or zarr import, ready to move to ``convpipe/params/layers.py``.
``ExtentParams`` is the mixin that gives ``extent`` and ``stride`` to correlate, convolve, filter_bank and
conv_layer; ``PoolParams`` and ``ConvLayerParams`` are the new ops' own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from ..base import AxesParam, Mode, OpParams

Extent = Literal["same", "valid", "full"]

#: A stride or pool size beyond this is refused (a window wider than any halo convpipe allows).
MAX_STEP = 1 << 16


def _positive_ints(v: Any, name: str) -> Any:
    vals = v.values() if isinstance(v, dict) else [v]
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or int(x) != x or not 1 <= x <= MAX_STEP:
            raise ValueError(f"{name} must be a positive integer (at most {MAX_STEP}), got {x!r}"[:200])
    return {k: int(x) for k, x in v.items()} if isinstance(v, dict) else int(v)


class ExtentParams(BaseModel):
    """``extent``: same (default; the input's length) / valid (n - k + 1) / full (n + k - 1); ``stride``:
    keep positions 0, s, 2s, ... of that result along each axis (a number or a per-axis map)."""

    extent: Extent = "same"
    stride: int | dict[str, int] = 1

    @field_validator("stride", mode="before")
    @classmethod
    def _stride_ok(cls, v):
        return _positive_ints(v, "stride")


class PoolParams(OpParams, AxesParam):
    size: int | dict[str, int] = Field(description="window per axis (a number or a per-axis map)")
    stride: int | dict[str, int] | None = Field(None, description="default: the size (non-overlapping windows)")
    kind: Literal["max", "mean", "min", "sum"] = "max"
    axes: str | None = None

    @field_validator("size", mode="before")
    @classmethod
    def _size_ok(cls, v):
        return _positive_ints(v, "size")

    @field_validator("stride", mode="before")
    @classmethod
    def _stride_ok(cls, v):
        return v if v is None else _positive_ints(v, "stride")


class ConvLayerParams(OpParams, AxesParam, ExtentParams):
    weights: Any = Field(description="(out_c, in_c, *kernel): a .npy path or nested lists")
    bias: list[float] | float | None = None
    activation: Literal["none", "relu", "sigmoid", "tanh"] = "none"
    axes: str | None = None
    mode: Mode = "reflect"
    cval: float = 0.0

    @field_validator("weights")
    @classmethod
    def _weights_ok(cls, v):
        from ...kernels import kernel_or_none

        w = kernel_or_none(v)  # a .npy path is read by convpipe.bind, not here
        if w is not None and w.ndim < 3:
            raise ValueError(f"weights need the shape (out_c, in_c, *kernel), got {w.ndim} dimension(s) "
                             f"{tuple(w.shape)}")
        return v
