"""What the service accepts: bearer tokens, and specs whose every location lies under a ``--root``.

A submitted spec is data. It is first *parsed* (:func:`convpipe.spec.parse_spec_text`: safe YAML, no code,
and no file read but the spec itself); every location it names (:meth:`convpipe.spec.Spec.locations`:
input, output, tables, kernel and template files, a profile file) is then resolved, ``..`` and symlinks
included, and must fall under one of the service's roots (an output strictly inside one). Only then is the
spec *bound* (:func:`convpipe.bind.bind`: kernel and template files read and checked), so a file outside
the roots is never read, and whether it exists is never told. The spec is finally rewritten with those
absolute locations, so what was checked is exactly what the job process opens; the job process checks
each again when it opens it (:func:`convpipe.roots.guard`).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import ConvpipeError
from ..roots import Roots, split_url

__all__ = ["Forbidden", "Roots", "Submission", "prepare_submission", "split_url", "token_ok"]


class Forbidden(ConvpipeError):
    """A request the service refuses on principle (a path outside every root): HTTP 403."""


def token_ok(header: bytes | str | None, token: bytes) -> bool:
    """Whether an ``Authorization`` header is exactly ``Bearer <token>`` (the scheme in any case).

    Nothing is stripped: a token with a character more or less is another token. The comparison takes the
    same time whatever the header holds: both sides are hashed first (SHA-256), so neither where they
    differ nor their lengths show in the response time.
    """
    if not header or not token:
        return False
    if isinstance(header, str):
        header = header.encode("latin-1", "replace")
    scheme, sep, credentials = header.partition(b" ")
    ok_scheme = hmac.compare_digest(scheme.lower(), b"bearer") and bool(sep)
    ok_token = hmac.compare_digest(hashlib.sha256(credentials).digest(), hashlib.sha256(token).digest())
    return ok_scheme and ok_token


@dataclass
class Submission:
    """A checked spec, ready to store and run."""

    name: str
    spec_text: str
    outputs: list[str]
    locations: dict[str, str]


def prepare_submission(text: str, roots: Roots, *, source: str = "<submitted spec>") -> Submission:
    """Parse a submitted spec, check its locations against the roots, bind it, and pin locations as absolute.

    Raises
    ------
    SpecError
        The spec is invalid (HTTP 422); raised for a file only once its location passed the roots.
    Forbidden
        A location lies outside every root (an output or table is a root itself), or the spec sets
        storage options (HTTP 403). Decided from the locations alone: nothing is read first.
    """
    from ..bind import bind
    from ..spec import parse_spec_text

    spec = parse_spec_text(text, base_dir=roots.base_dir, source=source)
    locs = spec.locations()
    for loc in locs:
        if roots.contains(loc.resolved, strictly=loc.writes):
            continue
        if loc.writes and roots.contains(loc.resolved):
            raise Forbidden(f"{loc.field} {loc.url!r} is one of the service's roots; an output lies strictly "
                            "inside a root (overwriting a root would delete everything in it)")
        raise Forbidden(f"{loc.field} {loc.url!r} lies outside the service's roots")
    raw: dict[str, Any] = copy.deepcopy(spec.raw)
    for section in ("input", "output"):
        if (raw.get(section) or {}).get("storage_options"):
            # Storage options can point a URL at another endpoint; the operator configures storage.
            raise Forbidden(f"{section}.storage_options: submitted specs may not set storage options "
                            "(the service's operator configures storage access)")
    # The service runs every job on its own cluster (--cluster): the spec's is dropped, its profile never read.
    bind(spec, cluster=False)
    locations: dict[str, str] = {}
    outputs: list[str] = []
    for loc in locs:
        if loc.kind == "profile":
            continue
        _set(raw, loc.loc, loc.resolved)
        locations[loc.field] = loc.resolved
        if loc.writes:
            outputs.append(loc.resolved)
    if isinstance(raw.get("execution"), dict):
        raw["execution"].pop("cluster", None)
    return Submission(name=spec.name, spec_text=yaml.safe_dump(raw, sort_keys=False),
                      outputs=outputs, locations=locations)


def _set(raw: Any, loc: tuple, value: str) -> None:
    """Set ``raw`` at the YAML path ``loc`` (``('steps', 2, 'correlate', 'kernel')``)."""
    node = raw
    for key in loc[:-1]:
        node = node[key]
    node[loc[-1]] = value
