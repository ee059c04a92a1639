"""OME-Zarr (NGFF) run outputs: a multiscale image group the engine writes level 0 of, then a pyramid.

Layout of an OME output at ``url``::

    url/                 group; its attributes hold
                           "convpipe": the run's provenance (spec, version, input fingerprint, complete)
                           NGFF metadata (0.4 "multiscales" for Zarr v2, 0.5 "ome" for Zarr v3)
    url/0                level 0: the array the engine writes tile by tile
    url/1 .. url/N       pyramid levels, each halving y and x of the one before
    url/.convpipe/done   the run's manifest (as for a plain array output)

The provenance lives on the **group** only (not on the level arrays): the group is what a reader opens
(``convpipe.ome.open_level``, napari, ome-zarr-py), ``convpipe.io.output_state`` reads ``zarr.open(url)``
which is the group, and one completeness mark in one place cannot disagree with itself. The level
arrays carry only what NGFF asks of them (``dimension_names`` for 0.5, ``"/"`` chunk keys for 0.4).

Life cycle (called from ``Pipeline.run``):

1. :func:`create_ome_output` makes the group with ``convpipe.complete = False`` and level ``0``, and
   already writes valid single-level NGFF metadata (so a half-written output opens, and says it is
   partial).
2. The engine writes level 0 (the array returned by 1.).
3. :func:`finish_ome_output` computes the pyramid from level 0, level by level (each from the level
   before, read back from storage: memory stays bounded by a few chunks per worker), with every
   output chunk written by exactly one task, and rewrites the NGFF metadata for all levels.
4. The caller flips ``convpipe.complete`` on the group (:func:`provenance_node`): the last write.

Finishing is idempotent: a resumed run re-runs step 3 in full (the pyramid is cheap next to the
pipeline: each level is a quarter of the one before).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from .errors import ExecutionError, InputError, OutputExistsError
from .ome import (
    OmeInfo,
    downsample_level,
    ngff_axes_problem,
    normalize_unit,
    pyramid_transforms,
    write_multiscales,
    zarr_storage_options,
)

__all__ = [
    "create_ome_output",
    "finish_ome_output",
    "is_ome_output",
    "ome_output_problem",
    "open_sink",
    "output_physical",
    "provenance_node",
    "pyramid_method",
]


# --------------------------------------------------------------------------- decisions


def pyramid_method(dtype: Any) -> Literal["mean", "nearest"]:
    """The downsampling method for an output of ``dtype``.

    ``nearest`` for boolean and integer outputs (labels, ``threshold``'s uint8 0/1 masks, ``astype``
    to an integer type): a mean would invent values that are not labels / not 0 or 1. ``mean``
    (2x2, computed in float64) for floating-point outputs.
    """
    return "nearest" if np.dtype(dtype).kind in "biu" else "mean"


def ome_output_problem(axes: str) -> str | None:
    """Why an output with ``axes`` cannot be written as OME-Zarr, or None when it can."""
    return ngff_axes_problem(axes)


def output_physical(
    axes: str, input_ome: OmeInfo | None, input_level: int = 0
) -> tuple[list[float], list[float], dict[str, str]]:
    """Level-0 scale, translation and units of an output with ``axes``, from the input's OME metadata.

    Axes the output shares with the input (matched by letter) keep the input level's voxel size,
    position and unit; axes the pipeline added (``c`` from ``filter_bank`` / ``components``) get scale
    1 and no unit. Without OME input: scale 1, translation 0, no units.

    Returns
    -------
    scale, translation : list of float, shape (len(axes),)
    units : dict of axis letter to NGFF unit (only axes with a known, valid unit)
    """
    scale = [1.0] * len(axes)
    trans = [0.0] * len(axes)
    units: dict[str, str] = {}
    if input_ome is None or input_ome.axes is None or not input_ome.levels:
        return scale, trans, units
    lv = input_ome.levels[min(max(int(input_level), 0), len(input_ome.levels) - 1)]
    for i, a in enumerate(axes):
        if a not in input_ome.axes:
            continue
        j = input_ome.axes.index(a)
        if a != "c":
            scale[i] = float(lv.scale[j])
            trans[i] = float(lv.translation[j])
        u = normalize_unit(input_ome.units[j]) if j < len(input_ome.units) else None
        if u is not None and a != "c":
            units[a] = u
    return scale, trans, units


# --------------------------------------------------------------------------- storage helpers


def _group_kwargs(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"store": str(url), "storage_options": zarr_storage_options(str(url), storage_options)}


def _level_array(root: Any, path: str, shape: Sequence[int], chunks: Sequence[int], dtype: Any, axes: str,
                 zarr_format: int, *, overwrite: bool = False) -> Any:
    """A level array as NGFF wants it (``dimension_names`` on v3, ``"/"`` chunk keys on v2)."""
    chunks = tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, shape, strict=True))
    kwargs: dict[str, Any] = {}
    if zarr_format == 3:
        kwargs["dimension_names"] = tuple(axes)
    else:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    return root.create_array(path, shape=tuple(int(n) for n in shape), chunks=chunks, dtype=np.dtype(dtype),
                             fill_value=0, overwrite=overwrite, **kwargs)


def _has_member(root: Any, path: str) -> bool:
    try:
        root[path]
    except KeyError:
        return False
    return True


def is_ome_output(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when ``url`` holds a group (an OME output), False for an array or nothing."""
    import zarr

    try:
        node = zarr.open(mode="r", **_group_kwargs(url, storage_options))
    except Exception:  # noqa: BLE001 - nothing there, or not zarr
        return False
    return isinstance(node, zarr.Group)


def open_sink(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The array the engine writes into, for resuming: ``url`` itself, or level ``0`` of an OME group."""
    import zarr

    from .roots import guard

    guard(url, what="the output", write=True)
    node = zarr.open(mode="r+", **_group_kwargs(url, storage_options))
    if isinstance(node, zarr.Group):
        try:
            arr = node["0"]
        except KeyError:
            raise InputError(f"output {url} is a group without level '0'; refusing to resume into it "
                             "(use --overwrite)") from None
        return arr
    return node


def provenance_node(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The zarr node whose attributes hold ``convpipe`` provenance: the group of an OME output, else the array."""
    import zarr

    from .roots import guard

    guard(url, what="the output", write=True)
    return zarr.open(mode="r+", **_group_kwargs(url, storage_options))


# --------------------------------------------------------------------------- create / finish


def create_ome_output(
    url: str,
    *,
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: Any,
    axes: str,
    zarr_format: int,
    attrs: Mapping[str, Any],
    overwrite: bool,
    storage_options: Mapping[str, Any] | None = None,
    input_ome: OmeInfo | None = None,
    input_level: int = 0,
    name: str | None = None,
) -> Any:
    """Create an OME-Zarr image group at ``url`` with an empty level ``0``; return that level's array.

    Parameters
    ----------
    url : str
        Path or fsspec URL of the group to create.
    shape, chunks : sequence of int
        Level-0 shape and chunks (one per letter of ``axes``).
    dtype : dtype-like
        Output dtype.
    axes : str
        Output axis letters; must be valid NGFF (a subsequence of ``"tczyx"`` with ``y`` and ``x``).
    zarr_format : {2, 3}
        2 writes NGFF 0.4, 3 writes NGFF 0.5.
    attrs : mapping
        Group attributes, e.g. ``{"convpipe": provenance}`` (with ``complete: False``).
    overwrite : bool
        Replace whatever is at ``url``; otherwise an existing node is refused.
    storage_options : mapping, optional
        Handed to fsspec (must be empty for a plain local path).
    input_ome : OmeInfo, optional
        The input's multiscale metadata: units, voxel size and position are carried over.
    input_level : int
        Which level of the input was read (its scale is level 0's scale here).
    name : str, optional
        The multiscale's name (default: the input's, else the URL's base name).

    Returns
    -------
    zarr.Array
        Level ``0`` (``url/0``), writable; the provenance is on the group, not on this array.

    Raises
    ------
    InputError
        Axes that NGFF cannot express, or an unwritable location.
    OutputExistsError
        Something exists at ``url`` and ``overwrite`` is false.
    """
    import zarr

    from .roots import guard

    guard(url, what="the output", write=True)
    problem = ome_output_problem(axes)
    if problem:
        raise InputError(f"output {url}: cannot write OME-Zarr: {problem} (set output.ome: false)")
    if zarr_format not in (2, 3):
        raise InputError(f"output {url}: zarr_format must be 2 or 3, got {zarr_format!r}")
    try:
        root = zarr.open_group(mode="w" if overwrite else "w-", zarr_format=2 if zarr_format == 2 else 3,
                               **_group_kwargs(url, storage_options))
    except (FileExistsError, zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError):
        raise OutputExistsError(f"output {url} exists; use --overwrite (or output.overwrite: true)") from None
    except (PermissionError, OSError) as e:
        raise InputError(f"cannot write output {url}: {e}") from None
    # provenance first: from here on the group says it is partial
    root.attrs.update(dict(attrs))
    arr = _level_array(root, "0", shape, chunks, dtype, axes, zarr_format)
    scale, trans, units = output_physical(axes, input_ome, input_level)
    write_multiscales(root, axes, ["0"], [scale], translations=[trans] if any(trans) else None,
                      units=units or None, name=_ms_name(name, input_ome, url))
    return arr


def _ms_name(name: str | None, input_ome: OmeInfo | None, url: str) -> str:
    if name:
        return str(name)
    if input_ome is not None and input_ome.name:
        return input_ome.name
    return os.path.basename(str(url).rstrip("/")) or "image"


def finish_ome_output(
    url: str,
    *,
    levels: int,
    method: Literal["mean", "nearest"] | None = None,
    axes: str,
    input_ome: OmeInfo | None = None,
    input_level: int = 0,
    storage_options: Mapping[str, Any] | None = None,
    compute: Callable[..., Any] | None = None,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    channel_labels: Sequence[str] | None = None,
) -> list[tuple[int, ...]]:
    """Build ``levels`` extra pyramid levels from level ``0`` and write NGFF metadata for all of them.

    Level ``k`` is level ``k - 1`` with ``y`` and ``x`` halved (``ceil(n / 2)``) by
    :func:`convpipe.ome.downsample_level`: a 2x2 mean in float64 cast back to the level dtype
    (``mean``), or every other voxel (``nearest``). Level ``k`` has the chunks of level 0 (clipped to
    its shape) and the computed blocks are rechunked to exactly those, so no chunk has two writers.
    Its scale is the level-0 scale times ``2**k`` on ``y`` and ``x`` (translation moved by half the
    added voxel size for ``mean``), from the input's OME metadata when given.

    Parameters
    ----------
    url : str
        The group made by :func:`create_ome_output`, with level ``0`` written.
    levels : int
        Extra levels (the spec's ``output.pyramid``); 0 only rewrites the metadata.
    method : {"mean", "nearest"}, optional
        Default: :func:`pyramid_method` of the level-0 dtype.
    axes : str
        Output axis letters.
    input_ome, input_level : see :func:`create_ome_output`.
    storage_options : mapping, optional
        Handed to fsspec.
    compute : callable, optional
        ``compute(*collections)``, e.g. a cluster's; default ``dask.compute``.
    name : str, optional
        The multiscale's name.
    progress : callable, optional
        ``progress(done_levels, levels)`` after each level.
    channel_labels : sequence of str, optional
        The ``c`` channels' names (:mod:`convpipe.channels`): written as the group's ``omero`` block, each
        channel's window its value range over the smallest level.

    Returns
    -------
    list of tuple of int
        The shape of every level, level 0 first.
    """
    import dask
    import dask.array as da
    import zarr

    compute = compute or dask.compute
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    try:
        root = zarr.open_group(mode="r+", **_group_kwargs(url, storage_options))
        base = root["0"]
    except Exception as e:  # missing group / level: zarr and fsspec raise many types
        raise ExecutionError(f"output {url}: cannot open the OME group to build its pyramid ({e})") from e
    if not isinstance(base, zarr.Array):
        raise ExecutionError(f"output {url}: level '0' is a group, not an array")
    fmt = root.metadata.zarr_format
    method = method or pyramid_method(base.dtype)
    chunks0 = tuple(base.chunks)
    shapes = [tuple(base.shape)]
    prev = base
    for k in range(1, levels + 1):
        src = da.from_zarr(prev, inline_array=False)
        nxt = downsample_level(src, axes, method=method)
        arr = _level_array(root, str(k), nxt.shape, chunks0, base.dtype, axes, fmt, overwrite=True)
        # one writer per chunk: the computed blocks are exactly the level's chunks. method="tasks": without it
        # dask imports distributed to choose one (0.26 s of a small run's first pyramid, whatever the cluster)
        stored = da.store(nxt.rechunk(arr.chunks, method="tasks"), arr, lock=False, compute=False)
        try:
            compute(stored)
        except Exception as e:  # a write failing midway (disk full, network)
            raise ExecutionError(f"output {url}: building pyramid level {k} failed "
                                 f"({type(e).__name__}: {e}); output left incomplete") from e
        shapes.append(tuple(arr.shape))
        prev = arr
        if progress is not None:
            progress(k, levels)
    # stale deeper levels from an earlier run with a taller pyramid would be listed nowhere; drop them
    # (probed by name: listing the group would also meet the run's ".convpipe" manifest folder)
    k = levels + 1
    while _has_member(root, str(k)):
        del root[str(k)]
        k += 1
    scale, trans, units = output_physical(axes, input_ome, input_level)
    scales, translations = pyramid_transforms(scale, axes, levels + 1, translation=trans, method=method)
    write_multiscales(
        root, axes, [str(i) for i in range(levels + 1)], scales,
        translations=translations if (levels or any(trans)) else None,
        units=units or None, name=_ms_name(name, input_ome, url),
        method=method if levels else None,
    )
    if channel_labels is not None and "c" in axes and len(channel_labels) == shapes[0][axes.index("c")]:
        from .channels import windows
        from .ome.write import write_omero

        write_omero(root, list(channel_labels), windows(prev, axes, compute=compute))
    return shapes
