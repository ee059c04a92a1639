"""Where a path or URL really points, and how two such places relate (SPEC.md, Safety).

A run must never write where it reads: an output (or a table) that equals, contains or lies inside the
input would be deleted or overwritten over the data it is computed from. Comparing the strings a user
wrote is not enough: ``file:///abs/in.zarr``, ``/abs/link/in.zarr`` through a symlinked folder,
``out/../in.zarr/`` and an OME-Zarr group next to its own level ``img.zarr/0`` all name the same bytes.

:func:`locate` turns a path or URL into a :class:`Location`:

* local paths and ``file://`` / ``local://`` URLs: the real path (``os.path.realpath``: symlinks resolved
  component by component, ``..`` after them, trailing slashes dropped), and the device and inode of the
  path and of each existing folder above it, so that bind mounts and case-insensitive file systems, where
  two real paths differ but the folders are one, are caught too;
* fsspec URLs (``s3://``, ``gs://``, ``memory://``, ...): the file system's protocol (its first name:
  ``s3a://`` is ``s3``) and its path, both as written (object stores take keys literally) and with ``.``,
  ``..`` and repeated slashes folded; two locations are related when either form says so.

Relations are judged in the safe direction: when in doubt, two places are one.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InputError

Relation = Literal["equal", "inside", "contains"]

__all__ = ["Location", "Relation", "check_apart", "enclosing_image", "locate", "relation"]


@dataclass(frozen=True)
class Location:
    """A normalised place: ``protocol`` (``"file"`` for local paths) and ``path``."""

    url: str
    protocol: str
    path: str
    #: object stores: the path as written (keys are literal there); equal to ``path`` for local files
    literal: str = ""
    #: local files: (st_dev, st_ino) of the path itself when it exists
    ident: tuple[int, int] | None = None
    #: local files: (st_dev, st_ino) of each existing folder above the path
    above: frozenset = field(default_factory=frozenset)

    def __str__(self) -> str:
        return self.path if self.protocol == "file" else f"{self.protocol}://{self.path.lstrip('/')}"


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith(("file://", "local://"))


def _local_path(url: str) -> str:
    if url.startswith(("file://", "local://")):
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem._strip_protocol(url)
    return os.path.abspath(url)


def _stat_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def locate(url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> Location:
    """The normalised :class:`Location` of a local path or fsspec URL.

    Parameters
    ----------
    url : str or path
        A local path (absolute, or relative to the working directory), or an fsspec URL.
    storage_options : mapping, optional
        Handed to fsspec to find the URL's file system (nothing is read).

    Raises
    ------
    InputError
        An fsspec URL whose protocol is unknown or not installed.
    """
    url = os.fspath(url)
    if _is_local(url):
        real = os.path.realpath(_local_path(url))
        above = set()
        d = real
        while True:
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
            ident = _stat_id(d)
            if ident is not None:
                above.add(ident)
        return Location(url, "file", real, real, _stat_id(real), frozenset(above))
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except Exception as e:  # noqa: BLE001 - fsspec raises ImportError, ValueError, ... for a bad protocol
        raise InputError(f"cannot use {url}: {type(e).__name__}: {e}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    literal = path.rstrip("/") or "/"
    folded = posixpath.normpath(path) if path.strip("/") else "/"
    return Location(url, protocol, folded, literal)


def _within(inner: str, outer: str) -> bool:
    return outer == "/" or inner.startswith(outer.rstrip("/") + "/")


def relation(a: Location, b: Location) -> Relation | None:
    """How ``a`` relates to ``b``: ``"equal"``, ``"inside"`` (a lies in b), ``"contains"`` (b lies in a), or None."""
    if a.protocol != b.protocol:
        return None
    forms = [(a.path, b.path)] + ([(a.literal, b.literal)] if a.literal and b.literal else [])
    if a.ident is not None and a.ident == b.ident:
        return "equal"
    if any(x == y for x, y in forms):
        return "equal"
    if (b.ident is not None and b.ident in a.above) or any(_within(x, y) for x, y in forms):
        return "inside"
    if (a.ident is not None and a.ident in b.above) or any(_within(y, x) for x, y in forms):
        return "contains"
    return None


_WORDS = {"equal": "is", "inside": "lies inside", "contains": "contains"}


def check_apart(reads: Sequence[tuple[str, Location]], writes: Sequence[tuple[str, Location]]) -> None:
    """Refuse a run whose written places overlap what it reads, or one another.

    Parameters
    ----------
    reads : sequence of (what, Location)
        What the run reads (``"the input"``, ``"the OME-Zarr image of the input"``).
    writes : sequence of (what, Location)
        What the run writes or deletes (``"output.url"``, ``"steps[2].peaks.table"``); each must be apart
        from every read place and from every other written place.

    Raises
    ------
    InputError
        Naming both places and, when they are spelt differently, the real place they share.
    """
    for i, (w_what, w) in enumerate(writes):
        for r_what, r in reads:
            rel = relation(w, r)
            if rel is not None:
                raise InputError(f"{w_what} {w.url} {_WORDS[rel]} {r_what} {r.url}{_really(w, r)}: it would "
                                 "overwrite the data it reads; write somewhere else (the input is untouched)")
        for o_what, o in writes[:i]:
            rel = relation(w, o)
            if rel is not None:
                raise InputError(f"{w_what} {w.url} {_WORDS[rel]} {o_what} {o.url}{_really(w, o)}: one would "
                                 "overwrite the other; give them separate places")


def _really(a: Location, b: Location) -> str:
    """Where the two places really are, when that is not what was written."""
    if all(str(x) == x.url.rstrip("/") for x in (a, b)):
        return ""
    return f" (really {a})" if str(a) == str(b) else f" (really {a} and {b})"


def enclosing_image(url: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """The OME-Zarr image group whose level ``url`` is, or None.

    An input given as one level (``img.zarr/0``) belongs to its image: an output at another level of the
    same group (``img.zarr/1``) would replace part of that image, so the group is what a run must not
    touch. Reads one metadata document; anything unreadable means "no enclosing image".
    """
    url = str(url).rstrip("/")
    parent, _, name = url.rpartition("/")
    if not parent or not name or parent.endswith(":/") or parent.endswith(":"):
        return None
    try:
        import zarr

        from .ome import zarr_storage_options

        group = zarr.open_group(store=parent, mode="r", storage_options=zarr_storage_options(parent, storage_options))
        attrs = dict(group.attrs)
    except Exception:  # noqa: BLE001 - no group above: a plain array
        return None
    ms = (attrs.get("ome") or {}).get("multiscales") if isinstance(attrs.get("ome"), dict) else None
    ms = ms or attrs.get("multiscales") or []
    for m in ms if isinstance(ms, list) else []:
        paths = {str(d.get("path", "")).strip("/") for d in (m.get("datasets") or []) if isinstance(d, dict)}
        if name in paths:
            return parent
    return None

