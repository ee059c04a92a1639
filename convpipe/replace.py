"""What ``overwrite`` may delete (SPEC.md, Safety): Zarr data, and nothing else.

Replacing an output deletes what is at its URL (zarr's ``overwrite`` removes the whole folder or prefix).
That is safe only for a Zarr array or group: one convpipe wrote, or one holding only Zarr data. Before
anything is deleted, :func:`foreign_entry` lists what is there and names the first thing Zarr would not
have put there; the run is then refused instead.

Zarr data, relative to a node folder (one holding ``zarr.json``, ``.zarray`` or ``.zgroup``):

* metadata documents: ``zarr.json``, ``.zarray``, ``.zgroup``, ``.zattrs``, ``.zmetadata``;
* in an array: chunk (or shard) objects, keyed ``c/1/2/3``, ``c.1.2.3`` (v3) or ``1.2.3``, ``1/2/3`` (v2),
  and zarr's own ``<key>.<hex>.partial`` files a write interrupted by a kill leaves behind;
* in a group: child nodes, each following the same rules;
* at the top: the run's ``.convpipe`` manifest folder.

Works on local folders (symlinks inside count as foreign: zarr never makes them; the output path itself
may be a link, judged by its target) and on every fsspec file
system (listing through ``fs.find``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import ConvpipeError, InputError, OutputExistsError

__all__ = ["check_replaceable", "check_table", "foreign_entry"]

_META = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
_NODE_META = ("zarr.json", ".zarray", ".zgroup")
_PARTIAL = r"\.[0-9a-f]{32}\.partial"
_CHUNK = re.compile(rf"(c|\d+)([./]\d+)*({_PARTIAL})?")
_META_PARTIAL = re.compile(rf"(zarr|\.zarray|\.zattrs|\.zgroup|\.zmetadata){_PARTIAL}")
_MANIFEST = ".convpipe"


def _fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str, bool]:
    """(fsspec file system, path, local?) of ``url``."""
    import fsspec

    if "://" not in url:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), os.path.abspath(url), True
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return fs, path, protocol in ("file", "local")


def _walk_local(root: str) -> list[tuple[str, bool]]:
    """(relative path, is a symlink) of every file below ``root``, not following symlinks."""
    out: list[tuple[str, bool]] = []
    stack = [(root, "")]
    while stack:
        d, rel = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                r = rel + e.name
                if e.is_symlink():
                    out.append((r, True))
                elif e.is_dir(follow_symlinks=False):
                    stack.append((e.path, r + "/"))
                else:
                    out.append((r, False))
    return out


def _listing(fs: Any, root: str, local: bool) -> list[tuple[str, bool]]:
    if local:
        return _walk_local(root)
    base = root.rstrip("/") + "/"
    names = fs.find(root, detail=False)
    return [(n[len(base):] if n.startswith(base) else n.rsplit("/", 1)[-1], False) for n in names]


def _node_kinds(fs: Any, root: str, files: set[str]) -> dict[str, str]:
    """Folder (relative, ``""`` for the top) -> ``"array"`` or ``"group"``, for every Zarr node below root."""
    kinds: dict[str, str] = {}
    for f in files:
        d, _, name = f.rpartition("/")
        if name == ".zarray":
            kinds[d] = "array"
        elif name == ".zgroup":
            kinds.setdefault(d, "group")
        elif name == "zarr.json":
            try:
                with fs.open(root.rstrip("/") + "/" + f, "rb") as fh:
                    doc = json.loads(fh.read(1 << 20))
                kind = doc.get("node_type") if isinstance(doc, dict) else None
            except (OSError, ValueError):
                kind = None
            if kind == "array":
                kinds[d] = "array"
            elif kind == "group":
                kinds.setdefault(d, "group")
    return kinds


def _nearest_node(path: str, kinds: dict[str, str]) -> str | None:
    d = path
    while True:
        d = d.rpartition("/")[0] if "/" in d else ""
        if d in kinds:
            return d
        if not d:
            return None


def foreign_entry(url: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """Why replacing ``url`` would delete something that is not Zarr data, or None when it would not.

    Returns None when nothing is there, for an empty folder, and for a folder holding only Zarr data;
    otherwise one phrase naming what is in the way (``"is a file, not a Zarr array or group"``,
    ``"holds notes.txt, which is not Zarr data"``), the first foreign file in sorted order.
    """
    fs, root, local = _fs(str(url), storage_options)
    if local:
        root = os.path.realpath(root)  # an output reached through a link is judged by what it points at
        if not os.path.lexists(root):
            return None
        if not os.path.isdir(root):
            return "is a file, not a Zarr array or group"
    else:
        if not fs.exists(root):
            return None
        if fs.isfile(root):
            return "is a file, not a Zarr array or group"
    entries = _listing(fs, root, local)
    for rel, link in sorted(entries):
        if link:
            return f"holds {rel}, a symbolic link, which is not Zarr data"
    files = {rel for rel, _ in entries}
    kinds = _node_kinds(fs, root, files)
    for f in sorted(files):
        if f == _MANIFEST or f.startswith(_MANIFEST + "/"):
            continue
        d, _, name = f.rpartition("/")
        if d in kinds and (name in _META or _META_PARTIAL.fullmatch(name)):
            continue
        node = _nearest_node(f, kinds)
        if node is not None and kinds[node] == "array":
            rel = f[len(node) + 1:] if node else f
            if _CHUNK.fullmatch(rel):
                continue
        return f"holds {f}, which is not Zarr data"
    return None


def check_replaceable(url: str, storage_options: Mapping[str, Any] | None = None, *,
                      what: str = "output") -> None:
    """Refuse (OutputExistsError) to replace ``url`` when that would delete anything but Zarr data.

    Call it before anything at ``url`` is deleted or written.
    """
    try:
        why = foreign_entry(url, storage_options)
    except ConvpipeError:
        raise
    except Exception as e:  # noqa: BLE001 - fsspec back ends' own errors (credentials, network)
        raise InputError(f"{what} {url}: cannot list what is there ({type(e).__name__}: {e})") from None
    if why:
        raise OutputExistsError(f"{what} {url} {why}; refusing to write there (overwrite replaces only a "
                                "Zarr array or group): move it away or write somewhere else")


def check_table(url: str, storage_options: Mapping[str, Any] | None = None, *, what: str = "table") -> None:
    """Refuse a table path whose replacement would delete anything but an earlier table.

    A run writes ``<table>`` (a Parquet file), its ``<table>.parts`` folder of Parquet parts and a
    ``<table>.tmp`` file; each may replace only what an earlier run of a table left there.
    """
    try:
        fs, path, _ = _fs(str(url), storage_options)
        base = path.rstrip("/")
        for p in (base, base + ".tmp"):
            if fs.exists(p):
                if fs.isdir(p):
                    raise OutputExistsError(f"{what} {url}: {p} is a folder, not a Parquet table; refusing to "
                                            "replace it: give the table a file name")
                with fs.open(p, "rb") as fh:
                    magic = fh.read(4)
                if magic != b"PAR1":
                    raise OutputExistsError(f"{what} {url}: {p} exists and is not a Parquet file; refusing to "
                                            "replace it: move it away or give the table another name")
        parts = base + ".parts"
        if fs.exists(parts):
            if not fs.isdir(parts):
                raise OutputExistsError(f"{what} {url}: {parts} is a file, not a folder of table parts; "
                                        "refusing to replace it")
            for n in sorted(fs.find(parts, detail=False)):
                name = n.rsplit("/", 1)[-1]
                if not (name.endswith(".parquet") or (name.startswith(".") and name.endswith(".tmp"))):
                    raise OutputExistsError(f"{what} {url}: {parts} holds {name}, which is not a table part; "
                                            "refusing to replace it")
    except ConvpipeError:
        raise
    except Exception as e:  # noqa: BLE001 - fsspec back ends' own errors
        raise InputError(f"{what} {url}: cannot check what is there ({type(e).__name__}: {e})") from None
