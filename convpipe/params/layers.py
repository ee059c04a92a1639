"""Parameters of the convolutional layers (:mod:`convpipe.ops.layers`; SPEC.md, "Convolutional layers").

``PoolParams`` and ``ConvLayerParams`` are the new ops' own; ``ExtentParams``, the mixin that gives ``extent``
and ``stride`` to correlate, convolve, filter_bank and conv_layer, lives in :mod:`.base`, so that a spec of
gaussians does not build these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ..kernels import kernel_or_none
from .base import MAX_STEP, AxesParam, Entry, Extent, ExtentParams, Mode, OpParams, _positive_ints  # noqa: F401


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
        w = kernel_or_none(v)  # a .npy path is read by convpipe.bind, not here
        if w is not None and w.ndim < 3:
            raise ValueError(f"weights need the shape (out_c, in_c, *kernel), got {w.ndim} dimension(s) "
                             f"{tuple(w.shape)}")
        return v


ENTRIES = [
    Entry("pool", PoolParams, "local", "max / mean / min / sum pooling: size and stride per axis, the remainder dropped",
          "out[i] = reduce(x[i*s : i*s + size]) for i = 0 .. (n - size) // s along each pooled axis (stride "
          "default: the size; the trailing remainder dropped, as torch's ceil_mode=False)."),
    Entry("conv_layer", ConvLayerParams, "local",
          "activation(bias + sum over input channels of correlate(x[i], weights[o, i])): a conv layer",
          "out[o] = activation(bias[o] + sum_i correlate(x[i], weights[o, i])) with correlate's extent and "
          "stride; the input's ``c`` holds in_c channels (none: one), the output's ``c`` out_c."),
]
