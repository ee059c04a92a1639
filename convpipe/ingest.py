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

Sources are read with ``tifffile``: an uncompressed, contiguous series is memory-mapped (slicing
reads just the bytes needed); anything else (compressed, tiled, big-endian) goes through
tifffile's Zarr store (``series.aszarr()``), which decodes only the strips/tiles a region touches.
A glob of files is a virtual stack: a block reads only the files (and regions) it covers.

Files are validated before any output is written: a truncated IFD chain, a page whose data runs past
the end of the file, or a file whose pages disagree with the others raises :class:`InputError`
naming the file and page; a segment that fails to decode during the copy is traced back to its
page the same way.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re
import struct
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Annotated, Any

import dask
import dask.array as da
import numpy as np
import tifffile
import typer
import zarr
from dask.callbacks import Callback

from .errors import ConvpipeError, ExecutionError, InputError, OutputExistsError
from .ome import (
    AXES_ORDER,
    downsample_level,
    ngff_axes_problem,
    normalize_unit,
    pyramid_transforms,
    write_multiscales,
    zarr_storage_options,
)

__all__ = ["expand_paths", "ingest", "parse_chunks", "register"]

# A copy block is widened to cover whole source segments only while it stays under this size;
# past it, plain output chunks are read (more decoding, but memory stays bounded).
_MAX_BLOCK_BYTES = 64 * 2**20

# tifffile's axis codes -> convpipe letters. S (samples, e.g. RGB) is a channel axis; the generic
# page-sequence codes I and Q become the stack axis (z, or t when z is taken).
_TIFF_AXES = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}
_GENERIC = "IQ"


# --------------------------------------------------------------------------- paths


def _natural_key(text: str) -> list[Any]:
    # "img2.tif" sorts before "img10.tif": numbered planes of a series are rarely zero-padded
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def expand_paths(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Expand globs and check that every file exists.

    Parameters
    ----------
    paths : sequence of str
        File names and/or glob patterns (``"planes/*.tif"``), in stack order.

    Returns
    -------
    list of str
        The files: each pattern's matches in natural order (``2`` before ``10``), patterns and
        plain names kept in the order given.

    Raises
    ------
    InputError
        A pattern that matches nothing, or a name that is not a file.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if glob.has_magic(p):
            matches = sorted((m for m in glob.glob(p) if os.path.isfile(m)), key=_natural_key)
            if not matches:
                raise InputError(f"{p}: no file matches this pattern")
            files.extend(matches)
        elif not os.path.isfile(p):
            raise InputError(f"{p}: no such file")
        else:
            files.append(p)
    if not files:
        raise InputError("ingest: no input files given")
    return files


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


# --------------------------------------------------------------------------- TIFF metadata


@dataclass(frozen=True)
class _Physical:
    """Voxel size and unit per convpipe axis letter, as found in the TIFF metadata."""

    scale: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)


def _ome_physical(xml: str) -> _Physical:
    """PhysicalSize{X,Y,Z} and TimeIncrement of the first OME Image (series 0)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return _Physical()
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return _Physical()
    scale: dict[str, float] = {}
    units: dict[str, str] = {}
    for letter, key, default_unit in (
        ("x", "PhysicalSizeX", "µm"),
        ("y", "PhysicalSizeY", "µm"),
        ("z", "PhysicalSizeZ", "µm"),
        ("t", "TimeIncrement", "s"),
    ):
        val = pixels.get(key)
        try:
            num = float(val) if val is not None else math.nan
        except ValueError:
            num = math.nan
        if math.isfinite(num) and num > 0:
            scale[letter] = num
            unit = normalize_unit(pixels.get(key + "Unit", default_unit))
            if unit:
                units[letter] = unit
    return _Physical(scale, units)


def _imagej_physical(tif: tifffile.TiffFile) -> _Physical:
    """Pixel size from X/YResolution (pixels per unit), z from ``spacing``, t from ``finterval``."""
    meta = tif.imagej_metadata or {}
    page = tif.pages.first
    scale: dict[str, float] = {}
    units: dict[str, str] = {}
    unit = normalize_unit(meta.get("unit"))
    for letter, tag in (("x", "XResolution"), ("y", "YResolution")):
        t = page.tags.get(tag)
        if t is None:
            continue
        try:
            num, den = t.value
            size = den / num
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        # ImageJ writes resolution 1 with unit "pixel" when uncalibrated: keep scale 1, no unit
        if math.isfinite(size) and size > 0:
            scale[letter] = float(size)
            if unit:
                units[letter] = unit
    spacing = meta.get("spacing")
    if isinstance(spacing, (int, float)) and spacing > 0:
        scale["z"] = float(spacing)
        if unit:
            units["z"] = unit
    finterval = meta.get("finterval")
    if isinstance(finterval, (int, float)) and finterval > 0:
        scale["t"] = float(finterval)
        units["t"] = normalize_unit(meta.get("tunit")) or "second"
    return _Physical(scale, units)


def _physical(tif: tifffile.TiffFile) -> _Physical:
    # OME-XML first (it is the richer and the more precise), then ImageJ; plain TIFF resolution
    # tags are print DPI far more often than a microscope calibration, so they are ignored
    if tif.is_ome and tif.ome_metadata:
        phys = _ome_physical(tif.ome_metadata)
        if phys.scale:
            return phys
    if tif.is_imagej:
        return _imagej_physical(tif)
    return _Physical()


def _map_tiff_axes(tiff_axes: str, path: str) -> str:
    """tifffile axis codes (``"QYX"``, ``"TZCYX"``, ``"YXS"``) -> convpipe letters."""
    letters: list[str | None] = [_TIFF_AXES.get(a) for a in tiff_axes]
    for i, a in enumerate(tiff_axes):
        if a in _GENERIC:
            free = next((c for c in "zt" if c not in letters), None)
            letters[i] = free
    if any(c is None for c in letters) or len(set(letters)) != len(letters):
        raise InputError(
            f"{path}: cannot map the TIFF axes {tiff_axes!r} onto 'tczyx'; "
            f"give axes explicitly (one letter per TIFF axis, e.g. --axes)"
        )
    return "".join(letters)  # type: ignore[arg-type]


def _check_axes_arg(axes: str, ndim: int, what: str) -> str:
    axes = axes.strip().lower()
    if len(axes) != ndim or len(set(axes)) != ndim or any(a not in AXES_ORDER for a in axes):
        raise InputError(f"axes {axes!r}: need {ndim} distinct letters from {AXES_ORDER!r} for {what}")
    return axes


# --------------------------------------------------------------------------- one TIFF file


def _next_ifd_offset(tif: tifffile.TiffFile, ifd_offset: int) -> int:
    """Offset of the IFD after the one at ``ifd_offset`` (0 at the end of a sound chain)."""
    fmt = tif.tiff
    fh = tif.filehandle
    with fh.lock:
        fh.seek(ifd_offset)
        (tagno,) = struct.unpack(fmt.tagnoformat, fh.read(fmt.tagnosize))
        fh.seek(ifd_offset + fmt.tagnosize + tagno * fmt.tagsize)
        raw = fh.read(fmt.offsetsize)
    if len(raw) != fmt.offsetsize:
        return -1
    return int(struct.unpack(fmt.offsetformat, raw)[0])


def _validate_series(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, path: str) -> None:
    """Refuse a truncated or inconsistent file before anything is copied.

    tifffile is forgiving by design: a broken IFD chain is logged and the series silently shrinks
    to the pages it could find (a 10-page stack comes back as one ``YX`` plane), and missing data
    reads as zeros. Copying that would pass a damaged archive off as complete, so the checks here
    are strict: the IFD chain must end with offset 0, and every page's data must lie in the file.
    """
    size = tif.filehandle.size
    page_shape = tuple(series.keyframe.shape)
    npages = max(1, math.prod(series.shape) // max(1, math.prod(page_shape)))
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
        if end > size:
            page_bytes = max(1, series.nbytes // npages)
            bad = max(0, (size - series.dataoffset) // page_bytes)
            raise InputError(
                f"{path}: page {bad} of {npages} is truncated (the data needs {end} bytes, "
                f"the file has {size})"
            )
    # checked even for contiguous data: a plain multi-page TIFF with a broken chain comes back
    # from tifffile as a shorter, still contiguous, series
    n = len(tif.pages)  # indexes the whole IFD chain
    last = tif.pages[n - 1]
    nxt = _next_ifd_offset(tif, last.offset)
    if nxt != 0:
        raise InputError(
            f"{path}: page {n}: the IFD chain points to offset {nxt}, beyond the end of the file "
            f"({size} bytes); the file is truncated or corrupt"
        )
    if series.dataoffset is not None:
        return
    pages = series.pages
    if len(pages) != npages:
        raise InputError(f"{path}: series 0 lists {len(pages)} pages but its shape needs {npages}")
    for i, page in enumerate(pages):
        if page is None:
            raise InputError(f"{path}: page {i} of series 0 is missing")
        fsize = page.parent.filehandle.size  # multi-file OME series keep pages in other files
        for off, cnt in zip(page.dataoffsets, page.databytecounts, strict=False):
            if off + cnt > fsize:
                where = getattr(page, "index", i)
                raise InputError(
                    f"{path}: page {where} is truncated (a segment ends at byte {off + cnt}, "
                    f"the file has {fsize})"
                )


class _TiffReader:
    """Series 0 (level 0) of one TIFF file, read by region.

    Holds the file open; thread-safe (memmap slices are read-only, tifffile's store locks its
    file handle around each read).
    """

    def __init__(self, path: str):
        self.path = path
        try:
            self.tif = tifffile.TiffFile(path)
        except Exception as err:  # noqa: BLE001 - tifffile raises several types for a bad header
            raise InputError(f"{path}: page 0: not a readable TIFF ({type(err).__name__}: {err})") from err
        try:
            if not self.tif.series:
                raise InputError(f"{path}: no image series in this TIFF")
            self.series = self.tif.series[0]
            _validate_series(self.tif, self.series, path)
            self.shape: tuple[int, ...] = tuple(int(s) for s in self.series.shape)
            self.dtype = np.dtype(self.series.dtype)
            self.tiff_axes: str = self.series.axes
            self.page_ndim = len(self.series.keyframe.shape)
            self.physical = _physical(self.tif)
            self.array, self.native = self._open_data()
        except InputError:
            self.close()
            raise
        except Exception as err:  # noqa: BLE001 - corrupt tags/IFDs surface as assorted errors
            self.close()
            raise InputError(f"{path}: page 0: cannot read the TIFF structure ({type(err).__name__}: {err})") from err

    def _open_data(self) -> tuple[Any, tuple[int, ...]]:
        """(array-like to slice, its native read unit per axis)."""
        s = self.series
        if s.dataoffset is not None and s.keyframe.is_memmappable:
            # uncompressed and contiguous: a memmap reads only the bytes a slice needs. tifffile
            # reports the native dtype; the bytes on disk are in the file's byte order
            disk = self.dtype.newbyteorder(self.tif.byteorder)
            mm = np.memmap(self.path, dtype=disk, mode="r", offset=s.dataoffset, shape=self.shape)
            return mm, (1,) * len(self.shape)
        z = zarr.open_array(s.aszarr(), mode="r")
        return z, tuple(int(c) for c in z.chunks)

    @property
    def lead_shape(self) -> tuple[int, ...]:
        """Shape of the page index (the axes before a page's own axes)."""
        return self.shape[: len(self.shape) - self.page_ndim]

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """Read ``region`` (slices with step 1) as a new numpy array."""
        try:
            out = self.array[region]
            if isinstance(out, np.memmap) or out.dtype != self.dtype:
                # detach from the file mapping (and swap a foreign byte order) in one copy
                return np.array(out, dtype=self.dtype)
            return np.asarray(out)
        except Exception as err:  # noqa: BLE001 - decoders raise their own types
            raise self._locate_error(region, err) from err

    def _locate_error(self, region: tuple[slice, ...], err: Exception) -> InputError:
        """Find the first page of ``region`` that fails on its own, for a precise message."""
        lead = self.lead_shape
        ranges = [range(*sl.indices(n)) for sl, n in zip(region[: len(lead)], lead, strict=True)]
        pages = [int(np.ravel_multi_index(idx, lead)) if lead else 0 for idx in product(*ranges)]
        for p in pages:
            page = self.series.pages[p]
            if page is None:
                return InputError(f"{self.path}: page {p} of series 0 is missing")
            try:
                page.asarray()
            except Exception as perr:  # noqa: BLE001 - the same decoder errors, now per page
                where = getattr(page, "index", p)
                return InputError(f"{self.path}: page {where}: cannot decode ({type(perr).__name__}: {perr})")
        span = f"pages {pages[0]}-{pages[-1]}" if len(pages) > 1 else f"page {pages[0] if pages else 0}"
        return InputError(f"{self.path}: {span}: cannot read ({type(err).__name__}: {err})")

    def close(self) -> None:
        """Release the file (the memmap goes with the last reference)."""
        self.array = None
        tif = getattr(self, "tif", None)
        if tif is not None:
            tif.close()


# --------------------------------------------------------------------------- sources


class _FileSource:
    """One TIFF as an array-like for ``dask.array.from_array`` (shape, dtype, ndim, getitem)."""

    def __init__(self, reader: _TiffReader):
        self.reader = reader
        self.shape = reader.shape
        self.dtype = reader.dtype
        self.ndim = len(self.shape)
        self.native = reader.native

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        return self.reader.read(tuple(region))


class _StackSource:
    """A list of same-shaped TIFFs stacked along a new first axis.

    Each read opens just the files it covers and closes them again, so a thousand-file series
    never holds a thousand open files.
    """

    def __init__(self, files: Sequence[str], first: _TiffReader):
        self.files = list(files)
        self.shape = (len(self.files), *first.shape)
        self.dtype = first.dtype
        self.ndim = len(self.shape)
        self.native = (1, *first.native)

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        region = tuple(region)
        idx = range(*region[0].indices(self.shape[0]))
        sizes = [len(range(*s.indices(n))) for s, n in zip(region[1:], self.shape[1:], strict=True)]
        out = np.empty((len(idx), *sizes), self.dtype)
        for k, i in enumerate(idx):
            reader = _TiffReader(self.files[i])
            try:
                out[k] = reader.read(region[1:])
            finally:
                reader.close()
        return out


def _probe_stack(files: Sequence[str]) -> _TiffReader:
    """Open and validate every file of a stack; return the first (kept open for its metadata)."""
    first = _TiffReader(files[0])
    try:
        for f in files[1:]:
            r = _TiffReader(f)
            try:
                if r.shape != first.shape or r.dtype != first.dtype:
                    raise InputError(
                        f"{f}: shape {r.shape} {r.dtype} differs from the first file "
                        f"{files[0]} ({first.shape} {first.dtype}); a stack needs equal planes"
                    )
            finally:
                r.close()
    except InputError:
        first.close()
        raise
    return first


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


@contextlib.contextmanager
def _tifffile_notes() -> Any:
    """Hold back what tifffile logs or warns while the command runs (yields the messages).

    tifffile logs what it tolerates in a damaged file ("invalid page offset ...") through the ``logging``
    module, which prints it raw on stderr before convpipe's own one-line error about the same damage.
    Only the command line does this, for the duration of the command: a library caller's logging
    configuration is left alone.
    """
    import logging
    import warnings

    notes: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    lg = logging.getLogger("tifffile")
    handler, propagate = _Keep(logging.WARNING), lg.propagate
    lg.addHandler(handler)
    lg.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield notes
        notes.extend(str(w.message) for w in caught)
    finally:
        lg.removeHandler(handler)
        lg.propagate = propagate


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
    k, n = stage
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set(scheduler="threads"))
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
        reader = _TiffReader(files[0])
        src: _FileSource | _StackSource = _FileSource(reader)
        src_axes = (
            _check_axes_arg(axes, src.ndim, f"{files[0]} (TIFF axes {reader.tiff_axes!r})")
            if axes
            else _map_tiff_axes(reader.tiff_axes, files[0])
        )
    else:
        reader = _probe_stack(files)
        src = _StackSource(files, reader)
        if axes and len(axes.strip()) == 1:
            file_axes = _map_tiff_axes(reader.tiff_axes, files[0])
            src_axes = _check_axes_arg(axes.strip().lower() + file_axes, src.ndim, f"a stack of {len(files)} files")
        elif axes:
            src_axes = _check_axes_arg(axes, src.ndim, f"a stack of {len(files)} files")
        else:
            file_axes = _map_tiff_axes(reader.tiff_axes, files[0])
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
    src: _FileSource | _StackSource,
    reader: _TiffReader,
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
            _store(nxt.rechunk(arr.chunks), arr, progress, (lv, n_stages))
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


# --------------------------------------------------------------------------- CLI


def _terminal_progress(stream: Any) -> Callable[[float], None]:
    last = [-1]

    def report(frac: float) -> None:
        pct = int(frac * 100)
        if pct != last[0]:
            last[0] = pct
            stream.write(f"\ringest {pct:3d}%")
            stream.flush()
            if pct >= 100:
                stream.write("\n")

    return report


def register(app: typer.Typer) -> None:
    """Add the ``ingest`` command to ``app`` (errors propagate to the main CLI)."""

    @app.command("ingest")
    def ingest_command(
        tiff: Annotated[
            list[str], typer.Argument(metavar="TIFF...", help="TIFF files or globs (quote globs), in stack order")
        ],
        output: Annotated[str, typer.Option("--output", "-o", help="OME-Zarr group to create (path or fsspec URL)")],
        chunks: Annotated[
            str | None, typer.Option("--chunks", help="chunk per output axis, e.g. 16,512,512 or z=16,y=512,x=512")
        ] = None,
        zarr_format: Annotated[int, typer.Option("--zarr-format", help="2 (NGFF 0.4) or 3 (NGFF 0.5)")] = 3,
        axes: Annotated[
            str | None, typer.Option("--axes", help="letters from tczyx per source axis (or the stack axis)")
        ] = None,
        pyramid: Annotated[int, typer.Option("--pyramid", help="extra levels, each halving y and x")] = 0,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing zarr output")] = False,
    ) -> None:
        """Copy TIFF / multi-page TIFF / OME-TIFF, or a glob of TIFF planes, into chunked OME-Zarr."""
        report = _terminal_progress(sys.stderr) if sys.stderr.isatty() else None
        with _tifffile_notes() as notes:  # on an error, its one line says what the notes would
            arr = ingest(
                tiff,
                output,
                chunks=parse_chunks(chunks),
                zarr_format=zarr_format,
                axes=axes,
                overwrite=overwrite,
                progress=report,
                pyramid=pyramid,
            )
        for note in dict.fromkeys(notes):
            typer.echo(f"note: tifffile: {note}", err=True)
        typer.echo(
            f"wrote {output}: shape {list(arr.shape)} {arr.dtype} chunks {list(arr.chunks)}"
            + (f", {pyramid} extra level(s)" if pyramid else "")
        )

