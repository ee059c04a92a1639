"""Writing OME-Zarr (NGFF) ``multiscales`` metadata with ome-zarr-models' models: valid by construction.

The attributes are built as the models' objects (``ImageAttrs`` > ``Multiscale`` > ``Axis``, ``Dataset``
with ``VectorScale`` / ``VectorTranslation``), so whatever the models check (2 to 5 axes, their types and
order, unique names, one scale per dataset then an optional translation, every transform as long as the
axes, levels from the highest resolution down) holds for what is written; their JSON is what lands in the
group. Checks the models do not make (NGFF units, positive finite scales, the convpipe axis letters) are
made here first, with messages naming the offending value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import zarr

from .names import AXIS_TYPE, NGFF_SPACE_UNITS, NGFF_TIME_UNITS, ngff_axes_problem, normalize_unit

__all__ = ["multiscales_attrs", "omero_attrs", "write_multiscales", "write_omero"]


def _checked_units(axes: str, units: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for a, raw in dict(units or {}).items():
        if a not in axes:
            raise ValueError(f"unit given for axis {a!r}, which is not in axes {axes!r}")
        if raw is None:
            continue
        u = normalize_unit(raw)
        allowed = NGFF_TIME_UNITS if a == "t" else NGFF_SPACE_UNITS if a in "zyx" else frozenset()
        if u is None or u not in allowed:
            raise ValueError(f"unit {raw!r} is not an NGFF unit for axis {a!r}")
        out[a] = u
    return out


def _checked_vectors(levels: Sequence[str], scales: Sequence[Sequence[float]],
                     translations: Sequence[Sequence[float]] | None, ndim: int, axes: str
                     ) -> tuple[list[list[float]], list[list[float]] | None]:
    if not levels:
        raise ValueError("at least one level is needed")
    if len(set(levels)) != len(levels):
        raise ValueError(f"level paths must be distinct, got {list(levels)}")
    if len(scales) != len(levels):
        raise ValueError(f"{len(levels)} levels but {len(scales)} scales")
    if translations is not None and len(translations) != len(levels):
        raise ValueError(f"{len(levels)} levels but {len(translations)} translations")
    sc_out, tr_out = [], []
    for i in range(len(levels)):
        sc = [float(v) for v in scales[i]]
        if len(sc) != ndim:
            raise ValueError(f"level {i}: scale has {len(sc)} values for {ndim} axes {axes!r}")
        if not all(math.isfinite(v) and v > 0 for v in sc):
            raise ValueError(f"level {i}: scale values must be positive and finite, got {sc}")
        sc_out.append(sc)
        if translations is not None:
            tr = [float(v) for v in translations[i]]
            if len(tr) != ndim or not all(math.isfinite(v) for v in tr):
                raise ValueError(f"level {i}: translation must be {ndim} finite numbers, got {tr}")
            tr_out.append(tr)
    return sc_out, (tr_out if translations is not None else None)


def multiscales_attrs(
    zarr_format: int,
    axes: str,
    levels: Sequence[str],
    scales: Sequence[Sequence[float]],
    *,
    translations: Sequence[Sequence[float]] | None = None,
    units: Mapping[str, str] | None = None,
    name: str | None = None,
    method: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The NGFF image attributes of a multiscale image, as ome-zarr-models builds and validates them.

    Zarr format 2 gets NGFF 0.4 (``{"multiscales": [{"version": "0.4", ...}]}``), Zarr format 3 gets NGFF
    0.5 (``{"version": "0.5", "multiscales": [...]}``, the content of the group's ``"ome"`` attribute).
    The arguments are those of :func:`write_multiscales`.

    Raises
    ------
    ValueError
        Axes not valid NGFF, a length mismatch, a non-positive scale, a unit NGFF does not know, or
        anything else the models refuse (e.g. a level of higher resolution than the one before).
    """
    from pydantic import ValidationError

    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    problem = ngff_axes_problem(axes)
    if problem:
        raise ValueError(problem)
    levels = [str(p) for p in levels]
    units_ = _checked_units(axes, units)
    sc, tr = _checked_vectors(levels, scales, translations, len(axes), axes)
    if zarr_format == 2:
        from ome_zarr_models.v04.axes import Axis
        from ome_zarr_models.v04.coordinate_transformations import VectorScale, VectorTranslation
        from ome_zarr_models.v04.image import ImageAttrs
        from ome_zarr_models.v04.multiscales import Dataset, Multiscale

        version: dict[str, Any] = {"version": "0.4"}  # 0.4 versions each multiscale
    else:
        from ome_zarr_models.v05.axes import Axis
        from ome_zarr_models.v05.coordinate_transformations import VectorScale, VectorTranslation
        from ome_zarr_models.v05.image import ImageAttrs
        from ome_zarr_models.v05.multiscales import Dataset, Multiscale

        version = {}  # 0.5 versions the whole "ome" attribute
    try:
        datasets = []
        for i, path in enumerate(levels):
            ct: list[Any] = [VectorScale(type="scale", scale=sc[i])]
            if tr is not None:
                ct.append(VectorTranslation(type="translation", translation=tr[i]))
            datasets.append(Dataset(path=path, coordinateTransformations=tuple(ct)))
        ms = Multiscale(
            axes=tuple(Axis(name=a, type=AXIS_TYPE[a], unit=units_.get(a)) for a in axes),
            datasets=tuple(datasets),
            name=None if name is None else str(name),
            type=None if method is None else str(method),
            metadata=None if metadata is None else dict(metadata),
            **version,
        )
        attrs = ImageAttrs(multiscales=[ms]) if zarr_format == 2 else ImageAttrs(version="0.5", multiscales=[ms])
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "multiscales"
        raise ValueError(f"not valid NGFF {'0.4' if zarr_format == 2 else '0.5'} metadata: {where}: "
                         f"{first.get('msg', err)}") from err
    # None means "absent" in the models (an axis without unit, a multiscale without name): not written
    out = attrs.model_dump(mode="json", by_alias=True, exclude_none=True)
    if zarr_format == 2:  # "version" first, as NGFF's examples (and convpipe before the models) write it
        out["multiscales"] = [{"version": m.pop("version"), **m} for m in out["multiscales"]]
    return out


def write_multiscales(
    group: zarr.Group,
    axes: str,
    levels: Sequence[str],
    scales: Sequence[Sequence[float]],
    *,
    translations: Sequence[Sequence[float]] | None = None,
    units: Mapping[str, str] | None = None,
    name: str | None = None,
    method: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write NGFF ``multiscales`` metadata into ``group``'s attributes.

    Zarr format 2 gets NGFF 0.4 (``"multiscales"`` at the top level); Zarr format 3 gets NGFF 0.5
    (``{"ome": {"version": "0.5", "multiscales": [...]}}``). Other attributes are kept (and other keys of
    ``"ome"``, e.g. ``omero``). The level arrays may be created before or after; for 0.5 they must carry
    ``dimension_names`` equal to the axis letters, and for 0.4 a ``"/"`` dimension separator, to be valid NGFF.

    Parameters
    ----------
    group : zarr.Group
        Writable group (zarr-python 3).
    axes : str
        Axis letters in NGFF order, a subsequence of ``"tczyx"`` with ``y`` and ``x``.
    levels : sequence of str
        Level array paths, highest resolution first.
    scales : sequence of sequence of float, shape (n_levels, ndim)
        Voxel size per level and axis; positive and finite, never smaller than the level before's.
    translations : sequence of sequence of float, shape (n_levels, ndim), optional
        Position of voxel 0 per level and axis; omitted from the metadata when None.
    units : mapping of str to str, optional
        Unit per axis letter, e.g. ``{"z": "micrometer", "t": "second"}``; common spellings
        (``"µm"``, ``"s"``) are normalised; space axes take length units, ``t`` time units.
    name : str, optional
        The multiscale's name.
    method : str, optional
        Downsampling method recorded as the multiscale ``type`` (``"mean"``, ``"nearest"``).
    metadata : mapping, optional
        Free-form ``metadata`` of the multiscale (e.g. the downsampling parameters).

    Returns
    -------
    dict
        The attributes written (``{"multiscales": [...]}`` or ``{"ome": {...}}``).

    Raises
    ------
    ValueError
        See :func:`multiscales_attrs`.
    """
    built = multiscales_attrs(group.metadata.zarr_format, axes, levels, scales, translations=translations,
                              units=units, name=name, method=method, metadata=metadata)
    if group.metadata.zarr_format == 2:
        group.attrs.update(built)
        return built
    return {"ome": _update_ome(group, built)}


# A viewer's colour per channel, cycled (napari's and OMERO's usual first channels).
_COLORS = ("FFFFFF", "00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF")


def omero_attrs(labels: Sequence[str], windows: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """An ``omero`` block naming every channel, as ome-zarr-models' ``Omero`` model validates it.

    Parameters
    ----------
    labels : sequence of str, shape (n_channels,)
        Each channel's label (napari-ome-zarr and OMERO show it as the channel's name).
    windows : sequence of (float, float), shape (n_channels, 2)
        Each channel's value range ``(min, max)``: the display window starts as the whole range.

    Raises
    ------
    ValueError
        Lengths that differ, or a range that is not two finite numbers.
    """
    from ome_zarr_models.common.omero import Omero
    from pydantic import ValidationError

    if len(labels) != len(windows):
        raise ValueError(f"{len(labels)} channel labels but {len(windows)} windows")
    channels = []
    for i, (label, (lo, hi)) in enumerate(zip(labels, windows, strict=True)):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"channel {i}: window must be finite, got ({lo}, {hi})")
        channels.append({"label": str(label), "color": _COLORS[i % len(_COLORS)], "active": True,
                         "window": {"min": float(lo), "max": float(hi), "start": float(lo), "end": float(hi)}})
    try:
        model = Omero(channels=channels)
    except ValidationError as err:
        raise ValueError(f"not valid omero metadata: {err.errors()[0].get('msg', err)}") from err
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def write_omero(group: zarr.Group, labels: Sequence[str], windows: Sequence[tuple[float, float]]) -> dict:
    """Write :func:`omero_attrs` beside the group's ``multiscales`` (top level on 0.4, under ``ome`` on 0.5)."""
    omero = omero_attrs(labels, windows)
    if group.metadata.zarr_format == 2:
        group.attrs.update({"omero": omero})
    else:
        _update_ome(group, {"omero": omero})
    return omero


def _update_ome(group: zarr.Group, entries: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``entries`` into the group's NGFF 0.5 ``"ome"`` attribute, keeping its other keys; the new ``"ome"``.

    Shared by :func:`write_multiscales` and :func:`write_omero`: 0.5 keeps both blocks under the one ``"ome"``
    key, so each writer must read what the other left there (in either order) rather than replace it.
    """
    ome = group.attrs.get("ome")
    ome = dict(ome) if isinstance(ome, Mapping) else {}
    ome.update(entries)
    group.attrs.update({"ome": ome})
    return ome
