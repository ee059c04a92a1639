"""What every op's parameters share: the pydantic base model, per-axis values, boundary modes, and the checks
the parameter models of several families use.

Pure: pydantic, numpy, :mod:`convpipe.limits`. The ops (:mod:`convpipe.ops`) implement these parameters;
nothing here knows how.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from .. import limits
from ..axes import AXES_ORDER as AXES

Mode = Literal["reflect", "mirror", "nearest", "wrap", "constant"]
PerAxis = float | dict[str, float]
PerAxisInt = int | dict[str, int]
Kind = Literal["point", "local", "full", "global"]


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



class OpParams(BaseModel):
    """Base of every op's parameters: unknown keys are refused, validated values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class AxesParam(BaseModel):
    """Mixin for ops with an ``axes`` string."""

    @field_validator("axes", check_fields=False)
    @classmethod
    def _axes_letters(cls, v):
        if v is None:
            return v
        if not isinstance(v, str) or not v or len(set(v)) != len(v) or any(a not in AXES for a in v):
            raise ValueError(f"axes {v!r} must be distinct letters from 'tczyx'")
        return v


class ModeParams(OpParams):
    """A boundary ``mode`` at the whole array's edges (scipy.ndimage's modes) and the ``constant`` value."""

    mode: Mode = "reflect"
    cval: float = 0.0


@dataclass(frozen=True)
class Entry:
    """One op of the catalog: what a spec may write for it and what it means, not how it is computed.

    ``name`` is the spec's step key, ``Params`` the model that validates its parameters, ``kind`` how the
    planner schedules it (``point``, ``local``, ``full`` or ``global``; an op may change it for some
    parameters, e.g. ``stats`` with an orientation histogram is local), ``summary`` one line for
    ``convpipe ops``, ``doc`` the contract in a few sentences (the reference it equals), and
    ``expanded_count(params)`` how many ops the step runs as (``diffusion`` with ``steps``: one per step).
    """

    name: str
    Params: type[OpParams]
    kind: Kind
    summary: str
    doc: str = ""
    expanded_count: Callable[[Any], int] = field(default=lambda params: 1, compare=False)


# --------------------------------------------------------------------------- checks shared by families


def check_positive(v: Any, name: str) -> Any:
    """A number or per-axis map of numbers >= 0 and finite (sigmas, radii)."""
    vals = v.values() if isinstance(v, dict) else [v]
    for x in vals:
        if x is None or not (x >= 0) or not math.isfinite(limits.as_float(x)):
            raise ValueError(f"{name} must be >= 0 and finite, got {x!r}"[:200])
    return v


def check_size(v: Any, name: str = "size") -> Any:
    """A positive integer or per-axis map of them (window sizes)."""
    vals = v.values() if isinstance(v, dict) else [v]
    for x in vals:
        if int(x) != x or x < 1:
            raise ValueError(f"{name} must be a positive integer, got {x!r}"[:200])
    return v


def axis_letter(v: str | None) -> str | None:
    """One axis letter from 'tczyx' (or None)."""
    if v is None:
        return v
    if not isinstance(v, str) or len(v) != 1 or v not in AXES:
        raise ValueError(f"axis must be one letter from 'tczyx', got {v!r}")
    return v


def table_location(v: str | None) -> str | None:
    """A table location is a non-empty path or URL (only checked as a name here; nothing is opened)."""
    if v is not None and (not v.strip() or "\x00" in v):
        raise ValueError("a table location is a non-empty path or URL")
    return v


def positive_order(v: float) -> float:
    if not (v > 0) or not math.isfinite(v):
        raise ValueError(f"order must be > 0, got {v!r}")
    return v


NUMERIC_DTYPES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                  "float16", "float32", "float64"]


def suggest(name: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, else ``""``."""
    import difflib  # loaded for a mistake only: ~1 ms of every start-up
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_dtype(v: str) -> None:
    """A numeric numpy dtype name (ValueError naming the allowed ones otherwise)."""
    import numpy as np

    try:
        dt = np.dtype(v)
    except (TypeError, ValueError, SyntaxError):  # numpy parses ',' as a structured dtype: SyntaxError
        raise ValueError(f"unknown dtype {v!r}{suggest(str(v), NUMERIC_DTYPES)}; use one of "
                         f"{', '.join(NUMERIC_DTYPES[1:])}") from None
    if dt.kind not in "biuf":
        raise ValueError(f"dtype {v!r} is not a numeric type")
