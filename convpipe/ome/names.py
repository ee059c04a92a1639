"""NGFF names: convpipe's axis letters, the axis types and units NGFF knows, unit spellings found in the wild.

convpipe names axes with single letters from ``"tczyx"``. NGFF 0.4/0.5 ask for 2 to 5 axes ordered time,
channel, space, and list the units a ``space`` or ``time`` axis may carry (ome-zarr-models does not check
units, so the lists live here).
"""

from __future__ import annotations

__all__ = ["AXES_ORDER", "AXIS_TYPE", "NGFF_SPACE_UNITS", "NGFF_TIME_UNITS", "ngff_axes_problem", "normalize_unit"]

AXES_ORDER = "tczyx"

#: Units the NGFF specification lists for ``space`` axes.
NGFF_SPACE_UNITS = frozenset(
    {
        "angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot",
        "gigameter", "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer", "mile",
        "millimeter", "nanometer", "parsec", "petameter", "picometer", "terameter", "yard",
        "yoctometer", "yottameter", "zeptometer", "zettameter",
    }
)
#: Units the NGFF specification lists for ``time`` axes.
NGFF_TIME_UNITS = frozenset(
    {
        "attosecond", "centisecond", "day", "decisecond", "exasecond", "femtosecond", "gigasecond",
        "hectosecond", "hour", "kilosecond", "megasecond", "microsecond", "millisecond", "minute",
        "nanosecond", "petasecond", "picosecond", "second", "terasecond", "yoctosecond", "yottasecond",
        "zeptosecond", "zettasecond",
    }
)

# Spellings found in TIFF / ImageJ / OME-XML metadata -> the NGFF unit name.
_UNIT_ALIASES = {
    "µm": "micrometer", "μm": "micrometer", "um": "micrometer", "micron": "micrometer",
    "microns": "micrometer", "micrometre": "micrometer", "\\u00b5m": "micrometer",
    "nm": "nanometer", "nanometre": "nanometer", "mm": "millimeter", "millimetre": "millimeter",
    "cm": "centimeter", "centimetre": "centimeter", "m": "meter", "metre": "meter",
    "pm": "picometer", "å": "angstrom", "a": "angstrom", "km": "kilometer", "in": "inch",
    "s": "second", "sec": "second", "secs": "second", "seconds": "second",
    "ms": "millisecond", "msec": "millisecond", "milliseconds": "millisecond",
    "µs": "microsecond", "μs": "microsecond", "us": "microsecond", "microseconds": "microsecond",
    "ns": "nanosecond", "nanoseconds": "nanosecond", "ps": "picosecond",
    "min": "minute", "mins": "minute", "minutes": "minute", "h": "hour", "hr": "hour",
    "hours": "hour", "d": "day", "days": "day",
}

#: the NGFF axis type of each convpipe letter
AXIS_TYPE = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def normalize_unit(unit: str | None) -> str | None:
    """Map a unit spelling (``"µm"``, ``"micron"``, ``"s"``) onto its NGFF name.

    Parameters
    ----------
    unit : str or None
        A unit as found in TIFF, ImageJ or OME-XML metadata.

    Returns
    -------
    str or None
        The NGFF unit (``"micrometer"``, ``"second"``), or None when the spelling is unknown
        or means "no unit" (ImageJ's ``"pixel"``).
    """
    if unit is None:
        return None
    u = str(unit).strip()
    if u in NGFF_SPACE_UNITS or u in NGFF_TIME_UNITS:
        return u
    low = u.lower()
    if low in NGFF_SPACE_UNITS or low in NGFF_TIME_UNITS:
        return low
    # the exact spelling first: case can matter ("Å" vs "å" are both listed, "M" is not "m")
    return _UNIT_ALIASES.get(u, _UNIT_ALIASES.get(low))


def ngff_axes_problem(axes: str) -> str | None:
    """Why ``axes`` cannot be written as NGFF axes, or None when it can.

    NGFF 0.4/0.5 require 2 to 5 axes, 2 or 3 of them spatial, at most one time and one channel
    axis, ordered time, channel, space: exactly a subsequence of ``"tczyx"`` with ``y`` and ``x``.

    Parameters
    ----------
    axes : str
        convpipe axis letters, e.g. ``"czyx"``.

    Returns
    -------
    str or None
        A one-line reason, or None.
    """
    if not axes or any(a not in AXES_ORDER for a in axes) or len(set(axes)) != len(axes):
        return f"axes {axes!r} must be distinct letters from {AXES_ORDER!r}"
    if "y" not in axes or "x" not in axes:
        return f"axes {axes!r} lack 'y' and 'x'; OME-Zarr needs 2 or 3 spatial axes"
    canonical = "".join(a for a in AXES_ORDER if a in axes)
    if axes != canonical:
        return f"axes {axes!r} are not in OME-Zarr order; write them as {canonical!r}"
    return None

