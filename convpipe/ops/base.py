"""What every op declares: parameters, kind, halo per axis, boundary mode, and apply().

Kinds:

``point``   value-wise, no halo, fused anywhere.
``local``   needs a halo of ``halo()[axis] = (lo, hi)`` voxels, padded at the whole array's edges by
            ``boundary(axis)``; ``apply`` receives the block padded by exactly that halo and returns the
            valid part (the block shrunk by ``lo + hi`` along each halo axis).
``full``    needs whole extents along ``full_axes()`` (FFT filters, sequential time filters).
``global``  point op that needs statistics of the whole input first (``zscore``, ``rescale``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from ..axes import insert_axis  # noqa: F401  (ops import it from here)
from ..errors import SpecError
from ..spec import AXES_ORDER

Mode = Literal["reflect", "mirror", "nearest", "wrap", "constant"]
PerAxis = float | dict[str, float]
PerAxisInt = int | dict[str, int]


class OpParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AxesParam(BaseModel):
    """Mixin for ops with an ``axes`` string."""

    @field_validator("axes", check_fields=False)
    @classmethod
    def _axes_letters(cls, v):
        if v is None:
            return v
        if not isinstance(v, str) or not v or len(set(v)) != len(v) or any(a not in AXES_ORDER for a in v):
            raise ValueError(f"axes {v!r} must be distinct letters from 'tczyx'")
        return v


class Op:
    """A step bound to the axes of its input. Subclasses set ``name``, ``kind``, ``Params``."""

    name: ClassVar[str]
    kind: ClassVar[str] = "local"
    Params: ClassVar[type[OpParams]] = OpParams
    linear: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    # Non-finite values (convpipe.finite): an op with ``domain_nonfinite`` gives NaN/inf for finite input outside
    # its domain (sqrt(-1), log1p(-2)), which is the reference's answer, not an overflow; an op with
    # ``hides_nonfinite`` can turn NaN/inf into finite values (threshold, integer casts, arctan2), so the
    # overflow check looks at its input. ``raw_input``: the op reads the stored values, not their rounding
    # to the compute dtype (tiles.stored_values).
    domain_nonfinite: ClassVar[bool] = False
    hides_nonfinite: ClassVar[bool] = False
    raw_input: ClassVar[bool | str] = False

    def __init__(self, params: Any, axes: str, *, step: Any = None):
        self.params = params
        self.in_axes = axes
        self.step = step
        self.setup()

    # ---- hooks for subclasses
    def setup(self) -> None:
        """Check parameters against the input axes and precompute (kernels, radii)."""

    @property
    def out_axes(self) -> str:
        return self.in_axes

    def halo(self) -> dict[str, tuple[int, int]]:
        return {}

    def boundary(self, axis: str) -> tuple[str, float]:
        mode = getattr(self.params, "mode", "reflect")
        return mode, float(getattr(self.params, "cval", 0.0) or 0.0)

    def full_axes(self) -> str:
        return ""

    def out_dtype(self, compute: np.dtype) -> np.dtype:
        return compute

    def out_extent(self, axis: str, n: int) -> int:
        """Length of a new output axis this op adds (only ops that add an axis, like ``c``)."""
        raise NotImplementedError

    # ---- output extents that change (convpipe.tiles): output voxel i along an axis of ``strides()`` reads
    # the input window [i*s - lo, i*s + hi] (``halo()`` = (lo, hi)); ``apply`` then returns the valid,
    # strided result: (length - lo - hi - 1) // s + 1 voxels along that axis of a block of ``length``.
    def strides(self) -> dict[str, int]:
        """Stride per axis where it is not 1."""
        return {}

    def out_length(self, axis: str, n: int) -> int:
        """Length of output axis ``axis`` for an input of length ``n`` along it (``n``: the extent is kept)."""
        return n

    def apply(self, x: np.ndarray, xp: Any = np) -> np.ndarray:
        raise NotImplementedError

    def method(self) -> str:
        return "direct"

    def expand(self) -> list["Op"]:
        """The ops that actually run (diffusion with steps becomes one op per step)."""
        return [self]

    def describe(self) -> str:
        p = self.params.model_dump(exclude_defaults=True)
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in p.items())})" if p else self.name

    # ---- helpers
    def error(self, message: str, field: str | None = None) -> SpecError:
        if self.step is not None:
            return self.step.error(message, field)
        return SpecError(message, path=self.name + (f".{field}" if field else ""))

    def axis_index(self, letter: str) -> int:
        return self.in_axes.index(letter)

    def resolve_axes(self, axes: str | None, *, field: str = "axes", default: str = "yx",
                     **per_axis: Any) -> str:
        """The axes an op acts on: explicit ``axes``, else the keys of a per-axis map, else ``default``.

        ``per_axis`` are the op's per-axis parameters by name (for error locations). The default ``yx``
        falls back to the input's trailing axes when it has no y/x (a 1-D signal).
        """
        if axes is None:
            for name, v in per_axis.items():
                if isinstance(v, dict):
                    axes = "".join(a for a in self.in_axes if a in v)
                    unknown = [a for a in v if a not in self.in_axes]
                    if unknown:
                        raise self.error(f"axis {unknown[0]!r} is not one of the input axes {self.in_axes!r}",
                                         name)
                    break
        if axes is None:
            axes = "".join(a for a in default if a in self.in_axes)
            if not axes:
                axes = self.in_axes[-len(default):]
            return axes
        for a in axes:
            if a not in self.in_axes:
                raise self.error(f"axis {a!r} is not one of the input axes {self.in_axes!r}", field)
        if "c" in axes and self.kind == "local":
            raise self.error("filters do not act along the channel axis 'c'", field)
        return "".join(a for a in self.in_axes if a in axes)

    def per_axis(self, value: Any, axes: str, field: str) -> dict[str, float]:
        """Expand a number or per-axis map into ``{axis: value}`` over ``axes``."""
        if isinstance(value, dict):
            for a in value:
                if a not in self.in_axes:
                    raise self.error(f"axis {a!r} is not one of the input axes {self.in_axes!r}", field)
                if a not in axes:
                    raise self.error(f"axis {a!r} is not among the op's axes {axes!r}", field)
            missing = [a for a in axes if a not in value]
            if missing:
                raise self.error(f"no value for axis {missing[0]!r} (the op acts on {axes!r})", field)
            return {a: value[a] for a in axes}
        return {a: value for a in axes}
