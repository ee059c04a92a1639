"""Reading OME-Zarr (NGFF): open a node or a level of an image group, read its ``multiscales`` metadata.

Reading is tolerant, and written here rather than with ome-zarr-models' models, which refuse files that
convpipe reads today: NGFF 0.1-0.3 metadata (no axes, or axes as plain names; no coordinate
transformations, whose scales are then derived from the level shapes), ``identity`` transforms, axes in a
non-NGFF order or more than five of them, and levels not ordered from the highest resolution down. It also
takes both layouts (0.4 top-level ``multiscales``, 0.5 under ``"ome"``) on either Zarr format, where the
models tie each to its format. Metadata that is present but malformed raises :class:`InputError`.

NGFF axis names are free text; a name is mapped to a convpipe letter when it is one of ``"tczyx"`` (any
case), or by its type (``time`` -> ``t``, ``channel`` -> ``c``). When some axis cannot be mapped,
:attr:`OmeInfo.axes` is ``None`` and the caller falls back to the axes of the spec.

Everything here is a pure function of its arguments: no module state, no caching.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr

from ..errors import InputError
from .names import AXES_ORDER, AXIS_TYPE

__all__ = ["OmeInfo", "OmeLevel", "open_level", "open_node", "read_multiscales", "zarr_storage_options"]


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



def zarr_storage_options(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``storage_options`` to hand zarr for ``url``.

    zarr refuses ``storage_options`` for a plain local path (``TypeError: 'storage_options' was
    provided but unused``), while specs always carry a (possibly empty) mapping; so they are
    dropped for local paths and passed on for fsspec URLs.
    """
    if "://" not in str(url):
        if storage_options:
            raise InputError(f"{url}: storage_options given for a local path (use an fsspec URL)")
        return None
    opts = dict(storage_options or {})
    if str(url).startswith("file://"):
        # fsspec's local filesystem does not create parent folders unless asked; zarr writes
        # "a.zarr/zarr.json" without making "a.zarr" first
        opts.setdefault("auto_mkdir", True)
    return opts


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _remote_hint(url: str, storage_options: Mapping[str, Any] | None, exc: BaseException) -> str:
    """A sharper reason for a failed remote open: rejected credentials, or no such bucket.

    fsspec backends report a missing bucket and a missing key alike (FileNotFoundError), and zarr
    turns both into "does not exist"; asking the filesystem about the bucket tells them apart.
    A refusal (PermissionError, HTTP 403) is about credentials, and then no probe is made: a
    forbidden bucket would look missing to it.
    """
    if "://" not in url or url.startswith("file://"):
        return ""
    if isinstance(exc, PermissionError):
        return " (access denied: check the credentials in storage_options)"
    if not isinstance(exc, FileNotFoundError):
        return ""
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        root = path.split("/", 1)[0]
        if root and not fs.exists(root):
            return f" (bucket {root!r} does not exist)"
    except Exception as err:  # noqa: BLE001 - fsspec backends raise their own client error types
        return f" ({_describe(err)})"
    return ""


# --------------------------------------------------------------------------- reading


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


def _where(group: zarr.Group) -> str:
    try:
        return str(group.store_path) or "zarr group"
    except Exception:  # noqa: BLE001 - only used to name the group in a message
        return "zarr group"


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


def _member_shape(group: zarr.Group, path: str) -> tuple[int, ...] | None:
    """Shape of the array at ``path`` in ``group``, or None when there is no array there."""
    try:
        node = group[path]
    except KeyError:
        return None
    return tuple(node.shape) if isinstance(node, zarr.Array) else None


def read_multiscales(group: zarr.Group) -> OmeInfo | None:
    """Read the first multiscale of an OME-Zarr image group.

    Parameters
    ----------
    group : zarr.Group
        A group opened with zarr-python 3 (Zarr format 2 or 3).

    Returns
    -------
    OmeInfo or None
        None when the group has no ``multiscales`` metadata (a plain group). Levels' scale and
        translation include the multiscale-wide transform (NGFF applies the dataset transform
        first, then the multiscale one); when a level has no scale, it is derived from the ratio
        of level-0 shape to the level's shape (translation 0).

    Raises
    ------
    InputError
        Multiscales metadata that is present but malformed.
    """
    attrs = group.attrs.asdict()
    where = _where(group)
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
        shape_first = _member_shape(group, paths[0])
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
            shape = _member_shape(group, path) or (1,) * ndim
            shape0 = shape0 or _member_shape(group, paths[0]) or (1,) * ndim
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


def open_node(
    url: str, storage_options: Mapping[str, Any] | None = None, *, mode: Literal["r", "r+"] = "r"
) -> zarr.Array | zarr.Group:
    """Open whatever zarr node (array or group) lies at ``url``.

    Parameters
    ----------
    url : str
        Local path or fsspec URL (``s3://bucket/x.zarr``, ``memory://x``, ``file:///...``).
    storage_options : mapping, optional
        Handed to fsspec (ignored for a plain local path, where it must be empty).
    mode : {"r", "r+"}
        Read only, or read/write of an existing node.

    Raises
    ------
    InputError
        Nothing there, no permission, bad credentials, missing bucket; the message names ``url``.
    """
    url = str(url)
    so = zarr_storage_options(url, storage_options)
    _preflight(url, storage_options)
    try:
        return zarr.open(store=url, mode=mode, storage_options=so)
    except FileNotFoundError as err:
        raise InputError(
            f"{url}: no zarr array or group there{_remote_hint(url, storage_options, err)}"
        ) from err
    except Exception as err:  # noqa: BLE001 - fsspec/zarr raise many types; all mean an unusable input
        hint = _remote_hint(url, storage_options, err)
        raise InputError(f"{url}: cannot open as zarr ({_describe(err)}){hint}") from err


def _preflight(url: str, storage_options: Mapping[str, Any] | None) -> None:
    """Refuse rejected credentials with one request before zarr starts its concurrent reads.

    zarr probes several metadata keys at once; when the store refuses them all, the abandoned
    s3fs coroutines later spill "Exception ignored" tracebacks onto stderr at interpreter exit,
    after the one-line error. A single synchronous ``info`` call surfaces the refusal cleanly.
    Only a PermissionError is decisive here: "not found" from ``info`` can be wrong for
    prefix-less stores (HTTP), so anything else is left for zarr to judge.
    """
    if "://" not in url or url.split("://", 1)[0] in ("file", "memory"):
        return
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        fs.info(path)
    except PermissionError as err:
        raise InputError(
            f"{url}: cannot open as zarr ({_describe(err)}) (access denied: check the credentials in storage_options)"
        ) from err
    except Exception:  # noqa: BLE001 - not decisive, see above
        return


def _array_axes(arr: zarr.Array) -> str | None:
    """Axis letters recorded on a plain array (v3 ``dimension_names`` or xarray's v2 attribute)."""
    names: Any = None
    try:
        names = getattr(arr.metadata, "dimension_names", None)
    except Exception:  # noqa: BLE001 - metadata without the field
        names = None
    if not names:
        names = arr.attrs.get("_ARRAY_DIMENSIONS")
    if not names or len(names) != arr.ndim:
        return None
    letters = [str(n).lower() if n is not None else "" for n in names]
    if all(len(n) == 1 and n in AXES_ORDER for n in letters) and len(set(letters)) == len(letters):
        return "".join(letters)
    return None


def open_level(
    url: str,
    level: int = 0,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[zarr.Array, str | None, OmeInfo | None]:
    """Open a plain zarr array, or level ``level`` of an OME-Zarr image group.

    Parameters
    ----------
    url : str
        Local path or fsspec URL of an array, an OME-Zarr image group, or a bioformats2raw
        container (its image ``0`` is used).
    level : int
        Multiscale level; must be 0 for a plain array.
    storage_options : mapping, optional
        Handed to fsspec.

    Returns
    -------
    array : zarr.Array
        The level's array, shape ``(n_0, ..., n_{ndim-1})``.
    axes : str or None
        Axis letters from the OME metadata, else from the array's dimension names, else None
        (the caller then uses the spec's axes or the last ``ndim`` letters of ``"tczyx"``).
    info : OmeInfo or None
        The multiscale metadata when ``url`` is an OME-Zarr group.

    Raises
    ------
    InputError
        Missing URL, group without multiscales, missing level, level listed but absent, or a
        level whose dimensionality disagrees with its axes; the message names ``url``.
    """
    url = str(url)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise InputError(f"{url}: level must be a non-negative integer, got {level!r}")
    node = open_node(url, storage_options)
    if isinstance(node, zarr.Array):
        if level != 0:
            raise InputError(f"{url}: a plain zarr array, not an OME-Zarr group; it has no level {level}")
        return node, _array_axes(node), None

    group: zarr.Group = node
    info = read_multiscales(group)
    where = url
    if info is None and "bioformats2raw.layout" in group.attrs:
        # bioformats2raw output: the first image is the group "0" inside the container
        try:
            inner = group["0"]
        except KeyError as err:
            raise InputError(f"{url}: bioformats2raw container without image '0'") from err
        if isinstance(inner, zarr.Group):
            group, where = inner, f"{url}/0"
            info = read_multiscales(group)
    if info is None:
        members = sorted(k for k, _ in group.arrays())[:5]
        tip = f"; point the URL at an array, e.g. {url.rstrip('/')}/{members[0]}" if members else ""
        raise InputError(f"{url}: a zarr group without OME-Zarr multiscales metadata{tip}")
    n = len(info.levels)
    if level >= n:
        raise InputError(
            f"{url}: level {level} does not exist; this OME-Zarr has {n} level(s), 0..{n - 1}"
        )
    path = info.levels[level].path
    try:
        arr = group[path]
    except KeyError as err:
        raise InputError(
            f"{where}: level {level} (path {path!r}) is listed in the multiscales metadata but missing"
        ) from err
    except Exception as err:  # noqa: BLE001 - a corrupt member's metadata
        raise InputError(f"{where}: level {level} (path {path!r}) cannot be opened ({_describe(err)})") from err
    if not isinstance(arr, zarr.Array):
        raise InputError(f"{where}: level {level} (path {path!r}) is a group, not an array")
    if arr.ndim != info.ndim:
        raise InputError(
            f"{where}: level {level} has {arr.ndim} dimensions but the metadata names "
            f"{info.ndim} axes {list(info.axis_names)}"
        )
    return arr, info.axes, info


