"""Numbers for people: durations in h / min / s, byte sizes in Dask's notation. A leaf module.

:func:`format_bytes` and :func:`parse_bytes` are ``dask.utils``' own (tests/test_humanize.py checks them against
dask's), written here because importing ``dask.utils`` imports dask (~0.15 s): ``explain`` prints sizes
and reads ``execution.memory_limit`` and must start within twice the time of ``import numpy, yaml, pydantic``
(issue 17).
"""

from __future__ import annotations

import math

__all__ = ["duration", "format_bytes", "parse_bytes"]


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


_BINARY = (("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("ki", 2**10))
#: the units :func:`parse_bytes` reads (lower case), as ``dask.utils.byte_sizes``
BYTE_SIZES = {**{f"{p}b": 10 ** (3 * i) for i, p in enumerate("kmgtp", 1)},
              **{f"{p}ib": 2 ** (10 * i) for i, p in enumerate("kmgtp", 1)}, "b": 1}
BYTE_SIZES.update({k[:-1]: v for k, v in BYTE_SIZES.items() if k != "b"}, **{"": 1})


def format_bytes(n: int) -> str:
    """``dask.utils.format_bytes``: ``'1 B'``, ``'1.21 kiB'``, ``'11.77 MiB'``, ``'1.15 GiB'``."""
    for prefix, k in _BINARY:
        if n >= k * 0.9:
            return f"{n / k:.2f} {prefix}B"
    return f"{n} B"


def parse_bytes(s: float | str) -> int:
    """``dask.utils.parse_bytes``: ``'100 MB'`` -> 100000000, ``'1kiB'`` -> 1024, ``'1e6'``, ``'MB'``, 123.

    Raises
    ------
    ValueError
        A number or a unit it cannot read (dask's message).
    """
    if isinstance(s, (int, float)):
        return int(s)
    s = s.replace(" ", "")
    if not any(char.isdigit() for char in s):
        s = f"1{s}"
    for i in range(len(s) - 1, -1, -1):
        if not s[i].isalpha():
            break
    index = i + 1
    prefix, suffix = s[:index], s[index:]
    try:
        n = float(prefix)
    except ValueError as e:
        raise ValueError(f"Could not interpret '{prefix}' as a number") from e
    try:
        multiplier = BYTE_SIZES[suffix.lower()]
    except KeyError as e:
        raise ValueError(f"Could not interpret '{suffix}' as a byte unit") from e
    return int(n * multiplier)
