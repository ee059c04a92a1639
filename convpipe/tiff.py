"""Reading TIFF for ``convpipe ingest``: series 0 of a TIFF / OME-TIFF, or a stack of TIFF files, by region.

tifffile does the reading. An uncompressed, contiguous series is memory-mapped: slicing reads just the
bytes a region needs. Anything else (compressed, tiled, big-endian strips) is read through tifffile's
Zarr store (``TiffFile.aszarr()``), which decodes only the strips / tiles a region touches. The memmap
stays for contiguous data because tifffile's store makes a whole strip one chunk, and tifffile (like
ImageJ) writes an uncompressed page as a single strip: a 30 000 x 30 000 uint16 page would be decoded whole
(1.8 GB) for every block that touches it. A stack of files is read file by file: a block opens only the
files (and regions) it covers, so a thousand-file series never holds a thousand open files.

Files are validated before anything is copied. tifffile is forgiving by design: a broken IFD chain is
logged and the series silently shrinks to the pages it could find (a 10-page stack comes back as one
``YX`` plane), and missing data reads as zeros. Copying that would pass a damaged archive off as complete,
so the checks here are strict: tifffile's own walk of the IFD chain must end cleanly (an error it logs
while walking is an :class:`InputError` naming the page), and every page's data must lie in the file.
tifffile's log records are held back while a file is opened and checked, so none reaches the terminal
ahead of the one-line error; when the file is sound they are passed on as before.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import tifffile
import zarr

from .errors import InputError
from .ome import AXES_ORDER, normalize_unit

__all__ = ["Physical", "TiffSeries", "TiffStack", "check_axes_arg", "expand_paths", "map_tiff_axes", "open_stack"]

# tifffile's axis codes -> convpipe letters. S (samples, e.g. RGB) is a channel axis; the generic
# page-sequence codes I and Q become the stack axis (z, or t when z is taken).
_TIFF_AXES = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}
_GENERIC = "IQ"

_TIFFFILE_LOG = logging.getLogger("tifffile")  # the logger tifffile reports through


# --------------------------------------------------------------------------- paths


def _natural_key(text: str) -> list[Any]:
    # "img2.tif" sorts before "img10.tif": numbered planes of a series are rarely zero-padded. (tifffile's
    # natural_sorted is case-sensitive: "P3" would come before "p1".)
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


# --------------------------------------------------------------------------- TIFF metadata


@dataclass(frozen=True)
class Physical:
    """Voxel size and unit per convpipe axis letter, as found in the TIFF metadata."""

    scale: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)


def _ome_physical(xml: str) -> Physical:
    """PhysicalSize{X,Y,Z} and TimeIncrement of the first OME Image (series 0)."""
    try:
        image = tifffile.xml2dict(xml)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
    except Exception:  # noqa: BLE001 - malformed or unexpected OME-XML: no calibration
        return Physical()
    scale: dict[str, float] = {}
    units: dict[str, str] = {}
    for letter, key, default_unit in (("x", "PhysicalSizeX", "µm"), ("y", "PhysicalSizeY", "µm"),
                                      ("z", "PhysicalSizeZ", "µm"), ("t", "TimeIncrement", "s")):
        try:
            num = float(pixels.get(key, math.nan))
        except (TypeError, ValueError):
            num = math.nan
        if math.isfinite(num) and num > 0:
            scale[letter] = num
            unit = normalize_unit(pixels.get(key + "Unit", default_unit))
            if unit:
                units[letter] = unit
    return Physical(scale, units)


def _imagej_physical(tif: tifffile.TiffFile) -> Physical:
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
    return Physical(scale, units)


def _physical(tif: tifffile.TiffFile) -> Physical:
    # OME-XML first (it is the richer and the more precise), then ImageJ; plain TIFF resolution
    # tags are print DPI far more often than a microscope calibration, so they are ignored
    if tif.is_ome and tif.ome_metadata:
        phys = _ome_physical(tif.ome_metadata)
        if phys.scale:
            return phys
    if tif.is_imagej:
        return _imagej_physical(tif)
    return Physical()


def map_tiff_axes(tiff_axes: str, path: str) -> str:
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


def check_axes_arg(axes: str, ndim: int, what: str) -> str:
    axes = axes.strip().lower()
    if len(axes) != ndim or len(set(axes)) != ndim or any(a not in AXES_ORDER for a in axes):
        raise InputError(f"axes {axes!r}: need {ndim} distinct letters from {AXES_ORDER!r} for {what}")
    return axes


# --------------------------------------------------------------------------- tifffile's log


_HOLD_LOCK = threading.Lock()
_HOLDERS: dict[int, list[logging.LogRecord]] = {}  # thread id -> the records held for it


def _hold(record: logging.LogRecord) -> bool:
    """The one filter on tifffile's logger while some thread holds its records."""
    held = _HOLDERS.get(record.thread)  # type: ignore[arg-type]
    if held is None:
        return True
    held.append(record)
    return False


@contextlib.contextmanager
def _held_tifffile_log() -> Iterator[list[logging.LogRecord]]:
    """Hold back what tifffile logs from this thread (other threads' records pass as usual).

    tifffile reports damage (a broken IFD chain, an unreadable tag) as log records, which Python prints
    to stderr when nobody configured logging. Held here, they become part of the verdict on the file
    instead of lines printed ahead of it; the caller passes them on with :func:`_release` when the file
    is sound. The filter is on tifffile's logger only while some thread holds.
    """
    me, held = threading.get_ident(), []
    with _HOLD_LOCK:
        outer = _HOLDERS.get(me)
        _HOLDERS[me] = held
        _TIFFFILE_LOG.addFilter(_hold)  # idempotent
    try:
        yield held
    finally:
        with _HOLD_LOCK:
            if outer is None:
                del _HOLDERS[me]
            else:
                _HOLDERS[me] = outer
            if not _HOLDERS:
                _TIFFFILE_LOG.removeFilter(_hold)


def _release(held: list[logging.LogRecord]) -> None:
    for record in held:
        _TIFFFILE_LOG.handle(record)


def _chain_errors(held: Sequence[logging.LogRecord]) -> list[str]:
    """What tifffile logged as an error while walking the IFD chain (``TiffPages._seek``)."""
    return [re.sub(r"^<[^>]*>\s*", "", r.getMessage()) for r in held
            if r.levelno >= logging.ERROR and r.funcName == "_seek"]


# --------------------------------------------------------------------------- one TIFF file


def _validate_series(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, path: str,
                     held: Sequence[logging.LogRecord]) -> None:
    """Refuse a truncated or inconsistent file before anything is copied (see the module docstring)."""
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
    n = len(tif.pages)  # tifffile walks the whole IFD chain
    broken = _chain_errors(held)
    if broken:
        raise InputError(f"{path}: page {n}: the IFD chain is broken (tifffile: {broken[0]}; the file has "
                         f"{size} bytes); the file is truncated or corrupt")
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


class TiffSeries:
    """Series 0 (level 0) of one TIFF file, validated, as an array-like (``shape``, ``dtype``, ``[region]``).

    Holds the file open until :meth:`close`; thread-safe (memmap slices are read-only, tifffile's store
    locks its file handle around each read).
    """

    def __init__(self, path: str):
        self.path = path
        self.tif: tifffile.TiffFile | None = None
        with _held_tifffile_log() as held:
            try:
                self.tif = tifffile.TiffFile(path)
            except Exception as err:  # noqa: BLE001 - tifffile raises several types for a bad header
                raise InputError(f"{path}: page 0: not a readable TIFF ({type(err).__name__}: {err})") from err
            try:
                if not self.tif.series:
                    raise InputError(f"{path}: no image series in this TIFF")
                self.series = self.tif.series[0]
                _validate_series(self.tif, self.series, path, held)
                self.shape: tuple[int, ...] = tuple(int(s) for s in self.series.shape)
                self.dtype = np.dtype(self.series.dtype)
                self.ndim = len(self.shape)
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
        _release(held)  # a sound file: tifffile's notes (if any) reach the log as they always did

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

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        """``region`` (slices with step 1) as a new numpy array in native byte order."""
        region = tuple(region)
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
        if self.tif is not None:
            self.tif.close()


class TiffStack:
    """Same-shaped TIFF files stacked along a new first axis, as an array-like.

    Each read opens just the files it covers and closes them again, so a thousand-file series never
    holds a thousand open files.
    """

    def __init__(self, files: Sequence[str], first: TiffSeries):
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
            part = TiffSeries(self.files[i])
            try:
                out[k] = part[region[1:]]
            finally:
                part.close()
        return out


def open_stack(files: Sequence[str]) -> tuple[TiffStack, TiffSeries]:
    """Validate every file of a stack; return the stack and its first file (kept open for its metadata)."""
    first = TiffSeries(files[0])
    try:
        for f in files[1:]:
            r = TiffSeries(f)
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
    return TiffStack(files, first), first
