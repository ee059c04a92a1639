"""Numbers for people: durations in h / min / s (byte sizes are ``dask.utils.format_bytes``). A leaf module."""

from __future__ import annotations

import math

__all__ = ["duration"]


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: ``42.5 s``; ``12 min 05 s (725 s)``; ``5 h 33 min (20002 s)``.

    Up to 90 s in seconds with one decimal; longer in minutes (and hours past one hour), with the rounded
    seconds after it so a total can still be compared with another figure in seconds.
    """
    if not math.isfinite(seconds):
        return f"{seconds} s"
    if abs(seconds) < 90:
        return f"{seconds:.1f} s"
    total = round(seconds)
    sign, total = ("-" if total < 0 else ""), abs(total)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    text = f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"
    return f"{sign}{text} ({sign}{total} s)"
