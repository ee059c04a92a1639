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

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import zarr

from ..errors import InputError
from .multiscales import OmeInfo, OmeLevel, dimension_axes, parse_multiscales

__all__ = ["OmeInfo", "OmeLevel", "open_level", "open_node", "read_multiscales", "zarr_storage_options"]


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


def _where(group: zarr.Group) -> str:
    try:
        return str(group.store_path) or "zarr group"
    except Exception:  # noqa: BLE001 - only used to name the group in a message
        return "zarr group"


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
    return parse_multiscales(group.attrs.asdict(), _where(group), lambda path: _member_shape(group, path))


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
    return dimension_axes(names, arr.ndim)


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


