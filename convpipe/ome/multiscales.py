"""OME-Zarr ``multiscales`` metadata as data: :class:`OmeInfo` and :class:`OmeLevel`, parsed from a group's
attributes (a mapping), without zarr.

:mod:`.read` reads a zarr group's attributes with zarr and hands them here; :mod:`.meta` reads them from a
local group's metadata document (``explain`` plans without importing zarr, issue 17). The rules of reading
(tolerant: NGFF 0.1-0.5, both layouts on either Zarr format) are written in :mod:`.read`'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .names import AXES_ORDER, AXIS_TYPE

__all__ = ["OmeInfo", "OmeLevel", "dimension_axes", "parse_multiscales"]


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class OmeLevel:
    """One resolution level of a multiscale image.

    Attributes
    ----------
    path : str
        Path of the level's array inside the group (``"0"``, ``"1"``, ...).
    scale : tuple of float, shape (ndim,)
        Physical size of one voxel per axis, with the multiscale-wide transform folded in.
    translation : tuple of float, shape (ndim,)
        Physical position of voxel 0 per axis (zeros when the metadata has none).
    """

    path: str
    scale: tuple[float, ...]
    translation: tuple[float, ...]


@dataclass(frozen=True)
class OmeInfo:
    """The first multiscale of an OME-Zarr image group.

    Attributes
    ----------
    version : str
        NGFF version as written (``"0.4"``, ``"0.5"``, ...).
    axes : str or None
        One convpipe letter per axis (``"zyx"``), or None when an axis name cannot be mapped
        onto ``"tczyx"``.
    axis_names : tuple of str, shape (ndim,)
        The axis names as written in the metadata.
    axis_types : tuple of (str or None), shape (ndim,)
        ``"space"``, ``"time"``, ``"channel"`` or None.
    units : tuple of (str or None), shape (ndim,)
        Unit per axis, as written (None when absent).
    levels : tuple of OmeLevel
        Resolution levels, highest resolution first.
    name : str or None
        The multiscale's ``name``.
    method : str or None
        The multiscale's ``type`` (the downsampling method), when recorded.
    channel_labels : tuple of str or None
        ``omero.channels[i].label`` of every channel, when the group records one for each.
    """

    version: str
    axes: str | None
    axis_names: tuple[str, ...]
    axis_types: tuple[str | None, ...]
    units: tuple[str | None, ...]
    levels: tuple[OmeLevel, ...]
    name: str | None = None
    method: str | None = None
    channel_labels: tuple[str, ...] | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        """Level paths, highest resolution first."""
        return tuple(lv.path for lv in self.levels)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.axis_names)

    def unit(self, axis: str) -> str | None:
        """Unit of the axis named ``axis`` (a convpipe letter or an NGFF name), or None."""
        names = list(self.axes) if self.axes else list(self.axis_names)
        if axis in names:
            return self.units[names.index(axis)]
        return None



def _axis_letters(names: Sequence[str], types: Sequence[str | None]) -> str | None:
    letters: list[str | None] = []
    for name, typ in zip(names, types, strict=True):
        n = name.strip().lower()
        if len(n) == 1 and n in AXES_ORDER:
            letters.append(n)
        elif typ == "time":
            letters.append("t")
        elif typ == "channel":
            letters.append("c")
        else:
            letters.append(None)
    if any(x is None for x in letters) or len(set(letters)) != len(letters):
        return None
    return "".join(letters)  # type: ignore[arg-type]


def _transforms(
    items: Any, ndim: int, where: str
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(scale, translation) from a coordinateTransformations list (None where absent)."""
    scale: tuple[float, ...] | None = None
    trans: tuple[float, ...] | None = None
    if items is None:
        return None, None
    if not isinstance(items, list):
        raise InputError(f"{where}: coordinateTransformations must be a list")
    for t in items:
        if not isinstance(t, Mapping):
            raise InputError(f"{where}: a coordinate transformation must be a mapping, got {t!r}")
        kind = t.get("type")
        if kind == "identity":
            continue
        if kind in ("scale", "translation"):
            if "path" in t and kind not in t:
                raise InputError(f"{where}: {kind} stored in a separate file ('path') is not supported")
            vals = t.get(kind)
            if not isinstance(vals, list) or len(vals) != ndim:
                raise InputError(f"{where}: {kind} must list {ndim} numbers, got {vals!r}")
            try:
                num = tuple(float(v) for v in vals)
            except (TypeError, ValueError) as err:
                raise InputError(f"{where}: {kind} must be numbers, got {vals!r}") from err
            if kind == "scale":
                scale = num
            else:
                trans = num
        else:
            raise InputError(f"{where}: unsupported coordinate transformation type {kind!r}")
    return scale, trans


def parse_multiscales(attrs: Mapping[str, Any], where: str,
                      member_shape: Callable[[str], tuple[int, ...] | None]) -> OmeInfo | None:
    """:func:`convpipe.ome.read_multiscales` on a group's attributes: ``where`` names the group in errors,
    ``member_shape(path)`` is the shape of the array at ``path`` in the group (None: no array there); it is
    asked only for NGFF 0.1-0.3 metadata, which derives the axes or the scales from the level shapes."""
    ome = attrs.get("ome")
    if isinstance(ome, Mapping) and "multiscales" in ome:
        multiscales = ome["multiscales"]
        version = str(ome.get("version", "0.5"))
    elif "multiscales" in attrs:
        multiscales = attrs["multiscales"]
        version = ""
    else:
        return None
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], Mapping):
        raise InputError(f"{where}: 'multiscales' must be a non-empty list of mappings")
    ms = multiscales[0]
    version = version or str(ms.get("version", "0.4"))

    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InputError(f"{where}: multiscales[0].datasets must be a non-empty list")
    paths: list[str] = []
    for d in datasets:
        if not isinstance(d, Mapping) or not isinstance(d.get("path"), str):
            raise InputError(f"{where}: every multiscales[0].datasets item needs a string 'path'")
        paths.append(d["path"])

    raw_axes = ms.get("axes")
    if raw_axes is None:
        # NGFF 0.1/0.2 had no axes: the arrays were always 5-D tczyx
        shape_first = member_shape(paths[0])
        if shape_first is None:
            raise InputError(f"{where}: level 0 (path {paths[0]!r}) is missing")
        ndim = len(shape_first)
        names = tuple(AXES_ORDER[5 - ndim :])
        types: tuple[str | None, ...] = tuple(AXIS_TYPE[a] for a in names)
        units: tuple[str | None, ...] = (None,) * ndim
    elif isinstance(raw_axes, list):
        n_list: list[str] = []
        t_list: list[str | None] = []
        u_list: list[str | None] = []
        for a in raw_axes:
            if isinstance(a, str):  # NGFF 0.3: a list of names
                n_list.append(a)
                t_list.append(AXIS_TYPE.get(a.lower()))
                u_list.append(None)
            elif isinstance(a, Mapping) and isinstance(a.get("name"), str):
                n_list.append(a["name"])
                t_list.append(a.get("type") if isinstance(a.get("type"), str) else None)
                u_list.append(a.get("unit") if isinstance(a.get("unit"), str) else None)
            else:
                raise InputError(f"{where}: multiscales[0].axes items need a 'name', got {a!r}")
        names, types, units = tuple(n_list), tuple(t_list), tuple(u_list)
        ndim = len(names)
    else:
        raise InputError(f"{where}: multiscales[0].axes must be a list")

    g_scale, g_trans = _transforms(ms.get("coordinateTransformations"), ndim, where)
    levels: list[OmeLevel] = []
    shape0: tuple[int, ...] | None = None
    for i, (d, path) in enumerate(zip(datasets, paths, strict=True)):
        scale, trans = _transforms(d.get("coordinateTransformations"), ndim, f"{where} level {i}")
        if scale is None:
            # pre-0.4 data: no transforms, so the level's scale is the shape ratio to level 0
            shape = member_shape(path) or (1,) * ndim
            shape0 = shape0 or member_shape(paths[0]) or (1,) * ndim
            scale = tuple(s0 / max(s, 1) for s0, s in zip(shape0, shape, strict=False))
        trans = trans or (0.0,) * ndim
        if g_scale is not None:
            scale = tuple(a * b for a, b in zip(scale, g_scale, strict=True))
            trans = tuple(a * b for a, b in zip(trans, g_scale, strict=True))
        if g_trans is not None:
            trans = tuple(a + b for a, b in zip(trans, g_trans, strict=True))
        levels.append(OmeLevel(path=path, scale=scale, translation=trans))

    name = ms.get("name") if isinstance(ms.get("name"), str) else None
    method = ms.get("type") if isinstance(ms.get("type"), str) else None
    omero = ome.get("omero") if isinstance(ome, Mapping) else attrs.get("omero")
    return OmeInfo(
        version=version,
        axes=_axis_letters(names, types),
        axis_names=names,
        axis_types=types,
        units=units,
        levels=tuple(levels),
        name=name,
        method=method,
        channel_labels=_omero_labels(omero),
    )


def _omero_labels(omero: Any) -> tuple[str, ...] | None:
    """Every channel's ``label`` of an ``omero`` block, or None unless each channel has a string one."""
    channels = omero.get("channels") if isinstance(omero, Mapping) else None
    if not isinstance(channels, list) or not channels:
        return None
    labels = [c.get("label") if isinstance(c, Mapping) else None for c in channels]
    return tuple(labels) if all(isinstance(x, str) for x in labels) else None


def dimension_axes(names: Any, ndim: int) -> str | None:
    """Axis letters from a plain array's dimension names (v3 ``dimension_names`` or xarray's v2
    ``_ARRAY_DIMENSIONS``), or None unless they are ``ndim`` distinct letters of ``"tczyx"`` (any case)."""
    if not names or len(names) != ndim:
        return None
    letters = [str(n).lower() if n is not None else "" for n in names]
    if all(len(n) == 1 and n in AXES_ORDER for n in letters) and len(set(letters)) == len(letters):
        return "".join(letters)
    return None
