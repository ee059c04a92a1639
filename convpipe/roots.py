"""Roots: the folders (or URL prefixes) a job may read and write, and the check made when a file is opened.

The job service checks every location a submitted spec names against its ``--root`` folders before it reads
anything (:mod:`convpipe.service.policy`). A folder can be swapped for a symlink after that check, so the job
process checks again at the moment it opens each location: the service hands its roots to the job in the
environment variable :data:`ROOTS_ENV`, and the I/O layer calls :func:`guard` right before it opens an input,
creates or reopens an output, starts a table or loads a kernel file. Outside a service job (no
:data:`ROOTS_ENV`) :func:`guard` does nothing.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError

#: The environment variable through which the job service passes its roots (a JSON list) to a job process.
ROOTS_ENV = "CONVPIPE_ROOTS"


def split_url(url: str) -> tuple[str | None, str]:
    """(scheme, rest) for ``scheme://rest``; (None, path) for a local path or a ``file://`` URL."""
    if "://" not in url:
        return None, url
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme in ("file", "local"):
        return None, rest
    return scheme, rest


class Roots:
    """The folders (or URL prefixes) jobs may read and write.

    Parameters
    ----------
    roots : list of str
        Local folders (must exist) and/or URL prefixes such as ``s3://bucket/data``.
    """

    def __init__(self, roots: Sequence[str | os.PathLike]):
        if not roots:
            raise InputError("the service needs at least one --root folder that jobs may read and write")
        self.given = [str(r) for r in roots]
        self.local: list[Path] = []
        self.remote: list[tuple[str, str]] = []
        for r in roots:
            scheme, rest = split_url(str(r))
            if scheme is None:
                p = Path(os.path.realpath(os.path.expanduser(rest)))
                if not p.is_dir():
                    raise InputError(f"--root {r}: no such folder")
                self.local.append(p)
            else:
                self.remote.append((scheme, posixpath.normpath("/" + rest).lstrip("/")))

    @property
    def base_dir(self) -> Path:
        """Where relative paths in a submitted spec resolve: the first local root."""
        return self.local[0] if self.local else Path.cwd()

    def __str__(self) -> str:
        return ", ".join([str(p) for p in self.local] + [f"{s}://{r}" for s, r in self.remote])

    def contains(self, url: str, *, strictly: bool = False) -> bool:
        """Whether ``url`` lies under a root once ``..`` and symlinks are resolved.

        ``strictly``: inside a root but never a root itself (where a job writes: an output that is a root
        would let ``overwrite`` replace everything in it).
        """
        if "::" in url:  # fsspec chained URLs (simplecache::s3://...) could hide where data really goes
            return False
        scheme, rest = split_url(url)
        if scheme is None:
            if not os.path.isabs(rest):
                return False
            # realpath resolves every symlink that exists, including one in a parent of a not-yet-written
            # output, and folds '..' after resolving what precedes it, as the OS does when opening it.
            real = Path(os.path.realpath(rest))
            return any((real != root or not strictly) and real.is_relative_to(root) for root in self.local)
        norm = posixpath.normpath("/" + rest).lstrip("/")
        for s, r in self.remote:
            if scheme != s:
                continue
            if norm == r or not r:
                if not strictly or norm != r:
                    return True
            elif norm.startswith(r.rstrip("/") + "/"):
                return True
        return False

    def env(self) -> dict[str, str]:
        """The environment entry that hands these roots to a job process (read by :func:`guard`).

        Local roots go as the absolute folders they resolved to here: a job process runs in another working
        directory, where ``--root demo-out`` would name another folder (or none).
        """
        remote = [g for g in self.given if split_url(g)[0] is not None]
        return {ROOTS_ENV: json.dumps([str(p) for p in self.local] + remote)}


def guard(url: str, *, what: str, write: bool = False) -> None:
    """Refuse ``url`` if this process runs a service job and ``url`` now lies outside the service's roots.

    The I/O layer calls this right before it opens ``url`` (``write``: creates or replaces something there,
    which must lie strictly inside a root). Without :data:`ROOTS_ENV` in the environment it does nothing.

    Raises
    ------
    InputError
        ``url`` lies outside every root (or is a root and ``write`` is set).
    """
    given = os.environ.get(ROOTS_ENV)
    if not given:
        return
    try:
        roots = Roots(json.loads(given))
    except (ValueError, TypeError):
        raise InputError(f"{ROOTS_ENV} is not a JSON list of folders; refusing to open {what}") from None
    if not roots.contains(str(url), strictly=write):
        where = "is a root itself, or lies outside the service's roots" if write else "lies outside the service's roots"
        raise InputError(f"{what} {url!r} {where} (checked when the job opened it)")
