"""What the service accepts: bearer tokens, and specs whose every path lies under a ``--root``.

A submitted spec is data: it is parsed with :func:`convpipe.spec.load_spec_text` (safe YAML, no code),
then every location it reads or writes (input, output, tables, kernel and template files) is resolved,
``..`` and symlinks included, and must fall under one of the service's roots. The spec is then rewritten
with those absolute locations, so what was checked is exactly what the job process opens.
"""

from __future__ import annotations

import copy
import hmac
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConvpipeError, InputError


class Forbidden(ConvpipeError):
    """A request the service refuses on principle (a path outside every root): HTTP 403."""


def token_ok(header: bytes | str | None, token: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time comparison)."""
    if not header or not token:
        return False
    if isinstance(header, str):
        header = header.encode("latin-1", "replace")
    scheme, _, credentials = header.strip().partition(b" ")
    # compare_digest runs in time independent of where the strings differ, so the token cannot be
    # guessed byte by byte from response times.
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token)


def _split_url(url: str) -> tuple[str | None, str]:
    """(scheme, rest) for ``scheme://rest``; (None, path) for a local path or ``file://`` URL."""
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
        self.local: list[Path] = []
        self.remote: list[tuple[str, str]] = []
        for r in roots:
            scheme, rest = _split_url(str(r))
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

    def contains(self, url: str) -> bool:
        """Whether ``url`` lies under a root once ``..`` and symlinks are resolved."""
        if "::" in url:  # fsspec chained URLs (simplecache::s3://...) could hide where data really goes
            return False
        scheme, rest = _split_url(url)
        if scheme is None:
            if not os.path.isabs(rest):
                return False
            # realpath resolves every symlink that exists, including one in a parent of a not-yet-written
            # output, and folds '..' after resolving what precedes it, as the OS does when opening it.
            real = Path(os.path.realpath(rest))
            return any(real == root or real.is_relative_to(root) for root in self.local)
        norm = posixpath.normpath("/" + rest).lstrip("/")
        return any(scheme == s and (norm == r or norm.startswith(r.rstrip("/") + "/") or not r)
                   for s, r in self.remote)


@dataclass
class Submission:
    """A checked spec, ready to store and run."""

    name: str
    spec_text: str
    outputs: list[str]
    locations: dict[str, str]


_PATH_PARAMS = ("table", "kernel", "template")


def prepare_submission(text: str, roots: Roots, *, source: str = "<submitted spec>") -> Submission:
    """Validate a submitted spec, check its locations against the roots and pin them as absolute.

    Raises
    ------
    SpecError
        The spec is invalid (HTTP 422).
    Forbidden
        A location lies outside every root, or the spec sets storage options (HTTP 403).
    """
    from ..spec import load_spec_text

    spec = load_spec_text(text, base_dir=roots.base_dir, source=source)
    raw: dict[str, Any] = copy.deepcopy(spec.raw)
    locations: dict[str, str] = {}
    outputs: list[str] = []

    raw["input"]["url"] = locations["input.url"] = spec.resolve(spec.input.url)
    if spec.output is not None:
        raw["output"]["url"] = locations["output.url"] = spec.resolve(spec.output.url)
        outputs.append(locations["output.url"])
    for i, item in enumerate(raw.get("steps") or []):
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (op, params), = item.items()
        if not isinstance(params, dict):
            continue
        for key in _PATH_PARAMS:
            if isinstance(params.get(key), str):
                params[key] = locations[f"steps[{i}].{op}.{key}"] = spec.resolve(params[key])
                if key == "table":
                    outputs.append(params[key])
        if isinstance(params.get("kernels"), list):
            for j, k in enumerate(params["kernels"]):
                if isinstance(k, str):
                    params["kernels"][j] = locations[f"steps[{i}].{op}.kernels[{j}]"] = spec.resolve(k)

    for where, url in locations.items():
        if not roots.contains(url):
            raise Forbidden(f"{where} {url!r} lies outside the service's roots")
    for section in ("input", "output"):
        if (raw.get(section) or {}).get("storage_options"):
            # Storage options can point a URL at another endpoint; the operator configures storage.
            raise Forbidden(f"{section}.storage_options: submitted specs may not set storage options "
                            "(the service's operator configures storage access)")
    # The service runs every job on its own cluster (--cluster); a spec must not make it connect elsewhere.
    if isinstance(raw.get("execution"), dict):
        raw["execution"].pop("cluster", None)
    return Submission(name=spec.name, spec_text=yaml.safe_dump(raw, sort_keys=False),
                      outputs=outputs, locations=locations)
