"""A local Zarr input's shape, dtype, chunks and axes from its metadata documents, without importing zarr.

``explain`` reads no data, only an input's metadata; importing zarr (with numcodecs, fsspec and its codec
pipeline) was a third of its start-up (issue 17: ``explain`` must start within twice the time of
``import numpy, yaml, pydantic``). :func:`open_level_meta` answers what :func:`convpipe.ome.open_level`
answers -- the array's :class:`ArrayMeta` in place of the ``zarr.Array``, its axes, the OME info -- for the
plain cases, read from ``zarr.json`` (v3) or ``.zarray`` / ``.zattrs`` / ``.zgroup`` (v2) of a local path.

It returns None -- and the caller opens the input with zarr, which then also words any error -- for
everything else: a URL, storage options, a missing or unreadable document, both formats in one folder,
consolidated metadata, sharding or any codec, filter, data type, chunk grid or key this module does not
know, bioformats2raw containers, a level path leaving the group, a level whose format differs from its
group's, and multiscales metadata that :func:`convpipe.ome.multiscales.parse_multiscales` refuses. So on
what it answers it agrees with zarr (tests/test_ome_meta.py checks it against zarr on v2 and v3 arrays and
OME-Zarr groups), and on anything else zarr answers as before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .multiscales import OmeInfo, dimension_axes, parse_multiscales

__all__ = ["ArrayMeta", "open_level_meta", "read_array_meta"]

#: v3 codecs whose presence changes nothing this module reports (sharding changes the chunks: zarr reads it)
_V3_CODECS = frozenset({"bytes", "blosc", "zstd", "gzip", "crc32c", "transpose"})
#: v2 compressors (numcodecs ids) zarr opens with numcodecs' defaults
_V2_COMPRESSORS = frozenset({"blosc", "zstd", "gzip", "zlib", "lz4", "bz2", "lzma"})
_V3_ARRAY_KEYS = frozenset({"zarr_format", "node_type", "shape", "data_type", "chunk_grid", "chunk_key_encoding",
                            "fill_value", "codecs", "attributes", "dimension_names", "storage_transformers"})
_V2_ARRAY_KEYS = frozenset({"zarr_format", "shape", "chunks", "dtype", "compressor", "fill_value", "order",
                            "filters", "dimension_separator"})
#: the numeric data types of zarr v3's core (convpipe reads only numeric arrays; zarr words the rest)
_V2_DTYPES = frozenset({"b1", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8"})
_V3_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                        "float16", "float32", "float64"})


class _Unsupported(Exception):
    """Something zarr should judge: the caller opens the input with zarr."""


@dataclass(frozen=True)
class ArrayMeta:
    """What ``explain`` reads of an array: its metadata, as ``zarr.Array`` reports it (no data).

    Attributes
    ----------
    shape, chunks : tuple of int
    dtype : numpy.dtype
    fill_value : Any
        As the document writes it (JSON).
    dimension_names : tuple of (str or None) or None
        v3 ``dimension_names`` (None for v2, as ``zarr.Array.metadata`` has it).
    attrs : dict
    zarr_format : int
    """

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    fill_value: Any
    dimension_names: tuple[str | None, ...] | None
    attrs: dict
    zarr_format: int

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def axes(self) -> str | None:
        """The axis letters :func:`convpipe.ome.read._array_axes` reads off the same array: the dimension
        names, else xarray's ``_ARRAY_DIMENSIONS`` attribute."""
        return dimension_axes(self.dimension_names or self.attrs.get("_ARRAY_DIMENSIONS"), self.ndim)


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # unreadable or not JSON: zarr's error says which
        raise _Unsupported(str(e)) from None


def _ints(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise _Unsupported(f"not a list of sizes: {v!r}")
    return tuple(v)


def _fill_ok(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float)) or v in ("NaN", "Infinity", "-Infinity")


def _node(path: str) -> tuple[int, str, dict, dict]:
    """(zarr format, "array" or "group", the array document or {}, the attributes) of the node at ``path``."""
    v3 = _read_json(os.path.join(path, "zarr.json"))
    v2_names = [n for n in (".zarray", ".zgroup") if os.path.exists(os.path.join(path, n))]
    if v3 is not None and v2_names:
        raise _Unsupported("both Zarr formats in one folder")
    if v3 is not None:
        if not isinstance(v3, dict) or v3.get("zarr_format") != 3:
            raise _Unsupported("zarr.json of another format")
        kind = v3.get("node_type")
        attrs = v3.get("attributes", {})
        if not isinstance(attrs, dict):
            raise _Unsupported("attributes")
        if kind == "group":
            if v3.get("consolidated_metadata") is not None or set(v3) - {"zarr_format", "node_type", "attributes",
                                                                        "consolidated_metadata"}:
                raise _Unsupported("consolidated or extended group metadata")
            return 3, "group", {}, attrs
        if kind == "array":
            return 3, "array", v3, attrs
        raise _Unsupported(f"node_type {kind!r}")
    if len(v2_names) != 1 or os.path.exists(os.path.join(path, ".zmetadata")):
        raise _Unsupported("no node, two nodes, or consolidated metadata")
    doc = _read_json(os.path.join(path, v2_names[0]))
    attrs = _read_json(os.path.join(path, ".zattrs"))
    attrs = {} if attrs is None else attrs
    if not isinstance(doc, dict) or doc.get("zarr_format") != 2 or not isinstance(attrs, dict):
        raise _Unsupported("v2 document")
    return 2, ("array" if v2_names[0] == ".zarray" else "group"), doc, attrs


def _array(fmt: int, doc: dict, attrs: dict) -> ArrayMeta:
    if fmt == 3:
        if set(doc) - _V3_ARRAY_KEYS or doc.get("storage_transformers"):
            raise _Unsupported("v3 keys")
        shape = _ints(doc.get("shape"))
        grid = doc.get("chunk_grid")
        if not isinstance(grid, dict) or grid.get("name") != "regular":
            raise _Unsupported("chunk grid")
        chunks = _ints((grid.get("configuration") or {}).get("chunk_shape"))
        dt = doc.get("data_type")
        codecs = doc.get("codecs")
        keys = doc.get("chunk_key_encoding")
        if dt not in _V3_DTYPES or not isinstance(codecs, list) or not codecs or not isinstance(keys, dict) \
                or keys.get("name") not in ("default", "v2"):
            raise _Unsupported("data type, codecs or chunk key encoding")
        for c in codecs:
            name = c.get("name") if isinstance(c, dict) else c
            if name not in _V3_CODECS:
                raise _Unsupported(f"codec {name!r}")
            endian = ((c.get("configuration") or {}) if isinstance(c, dict) else {}).get("endian")
            if name == "bytes" and endian not in (None, "little"):
                raise _Unsupported("big-endian data")  # zarr reports the stored byte order: let it
        dtype = np.dtype(dt)
        names = doc.get("dimension_names")
        if names is not None and (not isinstance(names, list)
                                  or not all(n is None or isinstance(n, str) for n in names)):
            raise _Unsupported("dimension_names")
        dims = tuple(names) if names is not None else None
    else:
        if set(doc) - _V2_ARRAY_KEYS:
            raise _Unsupported("v2 keys")
        shape, chunks = _ints(doc.get("shape")), _ints(doc.get("chunks"))
        comp, dt = doc.get("compressor"), doc.get("dtype")
        if doc.get("filters") is not None or doc.get("order", "C") not in ("C", "F") or not isinstance(dt, str) \
                or not (comp is None or (isinstance(comp, dict) and comp.get("id") in _V2_COMPRESSORS)):
            raise _Unsupported("filters, order, structured dtype or compressor")
        try:
            dtype = np.dtype(dt)
        except TypeError:
            raise _Unsupported(f"dtype {dt!r}") from None
        if dtype.byteorder == ">" or dtype.str[1:] not in _V2_DTYPES:
            raise _Unsupported(f"dtype {dt!r}")  # big-endian, or not numeric: zarr reports it
        dims = None
    if len(chunks) != len(shape) or not _fill_ok(doc.get("fill_value")) or 0 in chunks:
        raise _Unsupported("chunks or fill value")
    return ArrayMeta(shape, chunks, dtype, doc.get("fill_value"), dims, attrs, fmt)


def read_array_meta(path: str) -> ArrayMeta | None:
    """The :class:`ArrayMeta` of the local array at ``path``, or None when zarr must read it (see the module)."""
    try:
        fmt, kind, doc, attrs = _node(path)
        return _array(fmt, doc, attrs) if kind == "array" else None
    except _Unsupported:
        return None


def open_level_meta(url: str, level: int = 0, storage_options: Any = None
                    ) -> tuple[ArrayMeta, str | None, OmeInfo | None] | None:
    """:func:`convpipe.ome.open_level` from the metadata documents of a local path, or None (zarr decides).

    Returns
    -------
    (ArrayMeta, axes or None, OmeInfo or None), or None
        The level's metadata, the axes the OME metadata or the dimension names give, the OME info of a group;
        None for anything :func:`convpipe.ome.open_level` should open (and word the errors of) itself.
    """
    url = str(url)
    if "://" in url or storage_options or isinstance(level, bool) or not isinstance(level, int) or level < 0:
        return None
    try:
        fmt, kind, doc, attrs = _node(url)
        if kind == "array":
            if level != 0:
                return None
            arr = _array(fmt, doc, attrs)
            return arr, arr.axes(), None
        if "bioformats2raw.layout" in attrs:
            return None

        def member(path: str) -> tuple[int, str, dict, dict]:
            if not path or path.startswith("/") or any(p in ("", ".", "..") for p in path.split("/")):
                raise _Unsupported(f"level path {path!r}")
            got = _node(os.path.join(url, *path.split("/")))
            if got[0] != fmt:
                raise _Unsupported("a member of another format")
            return got

        def member_shape(path: str) -> tuple[int, ...] | None:
            m_fmt, m_kind, m_doc, m_attrs = member(path)
            return _array(m_fmt, m_doc, m_attrs).shape if m_kind == "array" else None

        try:
            info = parse_multiscales(attrs, url, member_shape)
        except InputError:
            return None  # zarr's reading words it (naming the group as zarr names it)
        if info is None or level >= len(info.levels):
            return None
        m_fmt, m_kind, m_doc, m_attrs = member(info.levels[level].path)
        if m_kind != "array":
            return None
        arr = _array(m_fmt, m_doc, m_attrs)
        if arr.ndim != info.ndim:
            return None
        return arr, info.axes, info
    except _Unsupported:
        return None
