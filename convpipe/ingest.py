"""``convpipe ingest``: TIFF, multi-page TIFF, OME-TIFF or a glob of TIFF planes -> chunked (OME-)Zarr.

The output is an OME-Zarr image group (NGFF 0.5 on Zarr v3, 0.4 on Zarr v2) whose level ``"0"``
holds the data, with axes, voxel size and units taken from the TIFF metadata where present
(OME-XML, else ImageJ tags; a plain TIFF gets scale 1 and no unit). ``open_level(output)`` opens it.

Memory stays bounded for archives larger than RAM: nothing reads a whole file. The copy is a dask
graph of independent tasks, each reading one *copy block* of the source and writing it to whole
output chunks (no two tasks touch one chunk). A block is one output chunk, widened along an axis
only as far as needed to cover the source's own storage unit (a page stored as one strip is
decoded whole, so reading it once per row of output chunks beats re-decoding it per chunk). So the
peak memory is about ``workers x (block + decoded source segments)``, independent of the input size.

Sources are read with tifffile (:mod:`convpipe.tiff`): a memmap for uncompressed contiguous data,
tifffile's Zarr store otherwise; a glob of files is a virtual stack whose blocks read only the files
(and regions) they cover. Files are validated before any output is written: a truncated IFD chain, a
page whose data runs past the end of the file, or a file whose pages disagree with the others raises
:class:`InputError` naming the file and page (and nothing tifffile logs about it is printed first); a
segment that fails to decode during the copy is traced back to its page the same way.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from dask.callbacks import Callback

from .errors import ConvpipeError, ExecutionError, InputError, OutputExistsError
from .ome import (
    AXES_ORDER,
    downsample_level,
    ngff_axes_problem,
    pyramid_transforms,
    write_multiscales,
    zarr_storage_options,
)
from .tiff import TiffSeries, TiffStack, check_axes_arg, expand_paths, map_tiff_axes, open_stack

__all__ = ["expand_paths", "ingest", "parse_chunks"]

# A copy block is widened to cover whole source segments only while it stays under this size;
# past it, plain output chunks are read (more decoding, but memory stays bounded).
_MAX_BLOCK_BYTES = 64 * 2**20


def parse_chunks(text: str | Sequence[int] | Mapping[str, int] | None) -> tuple[int, ...] | dict[str, int] | None:
    """Parse ``--chunks``: ``"16,512,512"`` (one per output axis) or ``"z=16,y=512,x=512"``.

    Raises
    ------
    InputError
        Not integers, or not positive.
    """
    if text is None or isinstance(text, Mapping):
        return None if text is None else {str(k): int(v) for k, v in text.items()}
    if not isinstance(text, str):
        vals = tuple(int(v) for v in text)
    else:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items and all("=" in t for t in items):
            out: dict[str, int] = {}
            for t in items:
                k, _, v = t.partition("=")
                try:
                    out[k.strip()] = int(v)
                except ValueError as err:
                    raise InputError(f"--chunks {text!r}: {v!r} is not an integer") from err
            if any(v < 1 for v in out.values()):
                raise InputError(f"--chunks {text!r}: chunk sizes must be >= 1")
            return out
        try:
            vals = tuple(int(t) for t in items)
        except ValueError as err:
            raise InputError(f"--chunks {text!r}: expected integers like 16,512,512") from err
    if not vals or any(v < 1 for v in vals):
        raise InputError(f"--chunks {text!r}: chunk sizes must be >= 1")
    return vals


# --------------------------------------------------------------------------- output


def _default_chunk(axis: str, n: int) -> int:
    if axis in "yx":
        return min(n, 512)
    if axis == "z":
        return min(n, 16)
    return 1  # t and c: one time point / channel per chunk, as the ops work per plane


def _resolve_chunks(
    chunks: tuple[int, ...] | dict[str, int] | None, axes: str, shape: tuple[int, ...]
) -> tuple[int, ...]:
    if chunks is None:
        return tuple(_default_chunk(a, n) for a, n in zip(axes, shape, strict=True))
    if isinstance(chunks, dict):
        unknown = set(chunks) - set(axes)
        if unknown:
            raise InputError(f"chunks name axes {sorted(unknown)} not in the output axes {axes!r}")
        return tuple(
            min(n, chunks[a]) if a in chunks else _default_chunk(a, n) for a, n in zip(axes, shape, strict=True)
        )
    if len(chunks) != len(axes):
        raise InputError(
            f"chunks {list(chunks)} have {len(chunks)} values; the output has {len(axes)} axes {axes!r} "
            f"(shape {list(shape)})"
        )
    return tuple(min(n, int(c)) for c, n in zip(chunks, shape, strict=True))


def _prepare_output(output: str, overwrite: bool, storage_options: Mapping[str, Any] | None) -> None:
    """Refuse an existing output unless ``overwrite``; never clear anything but Zarr data."""
    import fsspec

    from .replace import foreign_entry

    try:
        fs, path = fsspec.core.url_to_fs(output, **dict(storage_options or {}))
        exists = fs.exists(path)
        if not exists:
            return
        if not overwrite:
            raise OutputExistsError(f"{output}: already exists (use --overwrite to replace it)")
        why = foreign_entry(output, storage_options)
        if why:
            raise OutputExistsError(f"{output}: exists and is not a zarr store only (it {why}); refusing to "
                                    "overwrite it")
    except ConvpipeError:
        raise
    except Exception as err:  # noqa: BLE001 - fsspec backends' own errors (credentials, network)
        raise InputError(f"{output}: cannot check the output location ({type(err).__name__}: {err})") from err


class _ProgressCallback(Callback):
    """Report the finished fraction of a dask computation to ``report`` (one per compute)."""

    def __init__(self, report: Callable[[float], None]):
        super().__init__()
        self._report = report
        self._total = 1

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        self._total = max(1, sum(len(state[k]) for k in ("ready", "waiting", "running", "finished")))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: dict[str, Any], worker_id: Any) -> None:
        self._report(len(state["finished"]) / self._total)


def _store(
    arr: da.Array, target: zarr.Array, progress: Callable[[float], None] | None, stage: tuple[int, int]
) -> None:
    """Write ``arr`` into ``target`` with local threads.

    The sources hold open files, so the copy runs on the threaded scheduler even when a
    distributed client is active: it could not be pickled to workers, and ingest reads local files.
    """
    from concurrent.futures import ThreadPoolExecutor

    from dask.system import CPU_COUNT

    k, n = stage
    with contextlib.ExitStack() as stack:
        # a pool of our own, shut down (waiting) before the caller closes the sources: when one block fails,
        # dask raises at once while other blocks are still reading, and they must not find their file closed
        workers = dask.config.get("num_workers", None) or CPU_COUNT
        pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="convpipe-ingest"))
        stack.enter_context(dask.config.set(scheduler="threads", pool=pool))
        if progress is not None:
            stack.enter_context(_ProgressCallback(lambda f: progress((k + f) / n)))
        # dask's annotations do not list zarr arrays, which are valid store targets
        da.store(arr, target, lock=False, compute=True)  # type: ignore[arg-type]


def _copy_blocks(
    src_chunks: tuple[int, ...], native: tuple[int, ...], shape: tuple[int, ...], itemsize: int
) -> tuple[int, ...]:
    """Copy block per source axis: the output chunk, widened to cover a native segment."""
    wide = tuple(
        min(n, oc * math.ceil(nat / oc)) for oc, nat, n in zip(src_chunks, native, shape, strict=True)
    )
    if math.prod(wide) * itemsize > _MAX_BLOCK_BYTES:
        return src_chunks
    return wide


def ingest(
    paths: Sequence[str | os.PathLike[str]] | str,
    output: str,
    *,
    chunks: Sequence[int] | Mapping[str, int] | str | None = None,
    zarr_format: int = 3,
    axes: str | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
    pyramid: int = 0,
    pyramid_method: str = "mean",
    name: str | None = None,
) -> zarr.Array:
    """Copy TIFF data into a chunked OME-Zarr image, chunk by chunk.

    Parameters
    ----------
    paths : sequence of str
        One TIFF / multi-page TIFF / OME-TIFF (series 0, full resolution), or several files or
        globs (natural order) of equal-shaped TIFFs stacked along a new first axis.
    output : str
        Local path or fsspec URL of the OME-Zarr group to create; the data go to its array ``"0"``.
    chunks : sequence of int, mapping or str, optional
        Output chunk per output axis (``(16, 512, 512)``, ``{"z": 16}`` or ``"16,512,512"``);
        default: 1 per t/c, up to 16 along z, up to 512 along y/x.
    zarr_format : {2, 3}
        Zarr format; NGFF 0.4 metadata for 2, 0.5 for 3.
    axes : str, optional
        One letter from ``"tczyx"`` per source axis, overriding what the TIFF says. For one file:
        one letter per axis of its series 0 in file order. For a stack: the stack axis followed by
        the file's axes (``"tyx"``), or just the stack axis letter (``"t"``). Default: from the
        TIFF; generic page sequences become ``z`` (a stack axis ``z``, or ``t`` when files have z).
    overwrite : bool
        Replace an existing zarr output (anything else is never deleted).
    storage_options : mapping, optional
        fsspec options for ``output``.
    progress : callable, optional
        Called with the finished fraction (0..1) as the copy advances.
    pyramid : int
        Extra levels ``"1"``..``"pyramid"``, each halving y and x with :func:`downsample_level`.
    pyramid_method : {"mean", "nearest"}
        Downsampling method of the extra levels.
    name : str, optional
        The multiscale name (default: the first file's name).

    Returns
    -------
    zarr.Array
        Level ``"0"`` of the output, shape = the source's shape with axes reordered to NGFF
        order (``t, c, z, y, x``; e.g. an RGB ``YXS`` TIFF becomes ``cyx``).

    Raises
    ------
    InputError
        Missing/unreadable/truncated files (named, with the page), mismatched stack members,
        bad chunks or axes, an output that cannot be created.
    OutputExistsError
        The output exists and ``overwrite`` is false.
    ExecutionError
        Writing the output failed midway; it is left without multiscales metadata and with
        ``attrs["convpipe"]["complete"] == False``.
    """
    files = expand_paths(paths)
    if zarr_format not in (2, 3):
        raise InputError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if pyramid < 0:
        raise InputError(f"pyramid must be >= 0, got {pyramid}")
    if pyramid_method not in ("mean", "nearest"):
        raise InputError(f"pyramid_method must be 'mean' or 'nearest', got {pyramid_method!r}")
    chunk_req = parse_chunks(chunks) if isinstance(chunks, str) else (
        None if chunks is None else dict(chunks) if isinstance(chunks, Mapping) else tuple(int(c) for c in chunks)
    )
    output = os.fspath(output)

    if len(files) == 1:
        reader = TiffSeries(files[0])
        src: TiffSeries | TiffStack = reader
        src_axes = (
            check_axes_arg(axes, src.ndim, f"{files[0]} (TIFF axes {reader.tiff_axes!r})")
            if axes
            else map_tiff_axes(reader.tiff_axes, files[0])
        )
    else:
        src, reader = open_stack(files)
        if axes and len(axes.strip()) == 1:
            file_axes = map_tiff_axes(reader.tiff_axes, files[0])
            src_axes = check_axes_arg(axes.strip().lower() + file_axes, src.ndim, f"a stack of {len(files)} files")
        elif axes:
            src_axes = check_axes_arg(axes, src.ndim, f"a stack of {len(files)} files")
        else:
            file_axes = map_tiff_axes(reader.tiff_axes, files[0])
            stack = next((c for c in "zt" if c not in file_axes), None)
            if stack is None:
                reader.close()
                raise InputError(f"{files[0]}: files already have z and t axes; give axes for the stack")
            src_axes = stack + file_axes
    try:
        return _ingest_source(
            src, reader, src_axes, files, output,
            chunk_req=chunk_req, zarr_format=zarr_format, overwrite=overwrite,
            storage_options=storage_options, progress=progress, pyramid=pyramid,
            pyramid_method=pyramid_method, name=name,
        )
    finally:
        reader.close()


def _ingest_source(
    src: TiffSeries | TiffStack,
    reader: TiffSeries,
    src_axes: str,
    files: list[str],
    output: str,
    *,
    chunk_req: tuple[int, ...] | dict[str, int] | None,
    zarr_format: int,
    overwrite: bool,
    storage_options: Mapping[str, Any] | None,
    progress: Callable[[float], None] | None,
    pyramid: int,
    pyramid_method: str,
    name: str | None,
) -> zarr.Array:
    out_axes = "".join(a for a in AXES_ORDER if a in src_axes)
    problem = ngff_axes_problem(out_axes)
    if problem:
        raise InputError(f"{files[0]}: {problem}")
    perm = tuple(src_axes.index(a) for a in out_axes)
    out_shape = tuple(src.shape[p] for p in perm)
    out_chunks = _resolve_chunks(chunk_req, out_axes, out_shape)

    # read blocks in source order: output chunks permuted back, widened to native segments
    src_chunks = tuple(out_chunks[out_axes.index(a)] for a in src_axes)
    blocks = _copy_blocks(src_chunks, src.native, src.shape, src.dtype.itemsize)
    token = dask.base.tokenize(
        [(f, os.path.getsize(f), os.path.getmtime(f)) for f in files], src_axes, blocks
    )
    data = da.from_array(
        src, chunks=blocks, lock=False, asarray=False, fancy=False, name=f"ingest-read-{token}",
        meta=np.empty((0,) * src.ndim, dtype=src.dtype),
    ).transpose(perm)

    phys = reader.physical
    scale0 = [phys.scale.get(a, 1.0) if a != "c" else 1.0 for a in out_axes]
    units = {a: u for a, u in phys.units.items() if a in out_axes and a != "c"}
    if len(files) > 1:
        # the stack axis has no calibration in per-file metadata
        stack = src_axes[0]
        scale0[out_axes.index(stack)] = 1.0
        units.pop(stack, None)

    _prepare_output(output, overwrite, storage_options)
    so = zarr_storage_options(output, storage_options)
    try:
        root = zarr.open_group(
            store=output, mode="w", zarr_format=2 if zarr_format == 2 else 3, storage_options=so
        )
        # written first and flipped at the end: a crash leaves an output that says it is partial
        root.attrs["convpipe"] = {
            "complete": False,
            "ingest": {"files": len(files), "first": os.path.basename(files[0]), "axes": out_axes},
        }
        levels = [_create_level(root, "0", out_shape, out_chunks, src.dtype, out_axes, zarr_format)]
    except ConvpipeError:
        raise
    except Exception as err:  # noqa: BLE001 - zarr/fsspec errors when creating the output
        raise InputError(f"{output}: cannot create the output ({type(err).__name__}: {err})") from err

    n_stages = 1 + pyramid
    try:
        _store(data, levels[0], progress, (0, n_stages))
        for lv in range(1, pyramid + 1):
            prev = da.from_zarr(levels[-1])
            nxt = downsample_level(prev, out_axes, method=pyramid_method)  # type: ignore[arg-type]
            arr = _create_level(root, str(lv), nxt.shape, out_chunks, src.dtype, out_axes, zarr_format)
            # align the computed blocks to the level's chunks so no chunk has two writers
            _store(nxt.rechunk(arr.chunks, method="tasks"), arr, progress, (lv, n_stages))
            levels.append(arr)
    except ConvpipeError:
        raise
    except Exception as err:  # noqa: BLE001 - a write failing midway (disk full, network)
        raise ExecutionError(f"{output}: writing failed ({type(err).__name__}: {err}); output left incomplete") from err

    scales, trans = pyramid_transforms(scale0, out_axes, 1 + pyramid, method=pyramid_method)  # type: ignore[arg-type]
    write_multiscales(
        root,
        out_axes,
        [str(i) for i in range(1 + pyramid)],
        scales,
        translations=trans if pyramid else None,
        units=units or None,
        name=name or os.path.basename(files[0]),
        method=pyramid_method if pyramid else None,
    )
    meta = dict(root.attrs.asdict()["convpipe"])  # type: ignore[arg-type]  # written above as a dict
    meta["complete"] = True
    root.attrs["convpipe"] = meta
    if progress is not None:
        progress(1.0)
    result = root["0"]
    assert isinstance(result, zarr.Array)
    return result


def _create_level(
    root: zarr.Group,
    path: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype,
    axes: str,
    zarr_format: int,
) -> zarr.Array:
    chunks = tuple(max(1, min(c, n)) for c, n in zip(chunks, shape, strict=True))
    kwargs: dict[str, Any] = {}
    if zarr_format == 3:
        kwargs["dimension_names"] = tuple(axes)  # NGFF 0.5 requires them, equal to the axis names
    else:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}  # NGFF 0.4 requires "/"
    return root.create_array(path, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, **kwargs)
