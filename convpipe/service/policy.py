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
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConvpipeError, SpecError
from ..limits import MAX_SPEC_BYTES
from ..roots import Roots, split_url

__all__ = ["Forbidden", "Roots", "Submission", "check_locations", "prepare_submission", "split_url", "token_ok"]


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
    locs = check_locations(spec, roots)
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
    text = dump_spec(raw, spec.lines)  # the user's lines: the job's errors name them
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec with its locations made absolute is larger than {MAX_SPEC_BYTES} bytes "
                        "(put large kernels in a .npy file)", path=source)
    return Submission(name=spec.name, spec_text=text, outputs=outputs, locations=locations)


def check_locations(spec: Any, roots: Roots) -> list:
    """Every location of a parsed spec (:meth:`convpipe.spec.Spec.locations`), each checked against the roots.

    Raises
    ------
    Forbidden
        A location lies outside every root, or an output or table is a root itself.
    """
    locs = spec.locations()
    for loc in locs:
        if roots.contains(loc.resolved, strictly=loc.writes):
            continue
        if loc.writes and roots.contains(loc.resolved):
            raise Forbidden(f"{loc.field} {loc.url!r} is one of the service's roots; an output lies strictly "
                            "inside a root (overwriting a root would delete everything in it)")
        raise Forbidden(f"{loc.field} {loc.url!r} lies outside the service's roots")
    return locs


def dump_spec(raw: dict, lines: dict[tuple, int] | None = None) -> str:
    """A spec as compact YAML the job reads back: one line per top-level key and per step, each value in flow
    style with JSON strings (``nan``/``inf`` as YAML's ``.nan``/``.inf``). As large as the compact spec it came
    from, never the several-fold block YAML, and fast (PyYAML's emitter takes seconds for a large kernel).

    ``lines``: the spec's line map as parsed (YAML path tuple -> 1-based line, :attr:`convpipe.spec.Spec.lines`).
    Each key and item then starts on the line it had in the text as written (newlines between flow tokens
    are only whitespace to YAML), so the errors the job finds at run time (a label count, a kernel file)
    name the lines of the user's file, not of this rewrite. A path whose line lies behind the text written
    so far (an alias, a merge key) stays where it falls.
    """
    w = _Lines(lines or {})
    tops = [(lines or {}).get((k,)) for k in raw]
    if lines and not all(a is not None and b is not None and a < b for a, b in zip(tops, tops[1:])):
        # top-level keys that share a line (a JSON or flow spec) cannot each start one: one flow mapping,
        # as written (conflicts.pinned_input then reads the whole text)
        w.flow(raw, ())
        return "".join(w.parts) + "\n"
    for i, (key, value) in enumerate(raw.items()):
        if i:
            w.newline()
        w.goto((key,), 0)
        if key == "steps" and isinstance(value, list) and value:
            w.put(f"{_flow(key)}:")
            for j, item in enumerate(value):
                w.newline()
                w.goto((key, j), 0)
                w.put("- ")
                w.flow(item, (key, j))
        else:
            w.put(f"{_flow(key)}: ")
            w.flow(value, (key,))
    return "".join(w.parts) + "\n"


class _Lines:
    """The writer of :func:`dump_spec`: flow YAML whose paths fall on the lines of ``lines``."""

    #: continuation lines of a flow value: deeper than any block key or ``- `` of the dump (column 0)
    INDENT = "    "

    def __init__(self, lines: dict[tuple, int]):
        self.lines = lines
        self.parts: list[str] = []
        self.line = 1

    def put(self, text: str) -> None:
        self.parts.append(text)

    def newline(self) -> None:
        self.parts.append("\n")
        self.line += 1

    def goto(self, path: tuple, indent: int | None = None) -> None:
        """Move down to ``path``'s line (blank lines, then the indentation), when it lies ahead."""
        target = self.lines.get(path) if self.lines else None
        if target is not None and target > self.line:
            self.parts.append("\n" * (target - self.line) + (self.INDENT if indent is None else ""))
            self.line = target

    def flow(self, v: Any, path: tuple) -> None:
        if not self.lines or not isinstance(v, (dict, list, tuple)):
            self.put(_flow(v))
            return
        if isinstance(v, dict):
            self.put("{")
            for i, (k, x) in enumerate(v.items()):
                if i:
                    self.put(",")
                self.goto(path + (k,))
                self.put(f"{_flow(k)}:")
                self.flow(x, path + (k,))
            self.put("}")
            return
        self.put("[")
        for i, x in enumerate(v):
            if i:
                self.put(",")
            self.goto(path + (i,))
            self.flow(x, path + (i,))
        self.put("]")


def _flow(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return repr(v)
    if isinstance(v, str):
        return _quoted(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_flow(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{_flow(k)}:{_flow(x)}" for k, x in v.items()) + "}"
    return _quoted(str(v))  # a date YAML built: as text, as the spec validated it


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar holding exactly ``text``: escapes what YAML would fold or refuse raw
    (control characters, DEL and C1, NEL and the Unicode line separators, BOM, non-characters)."""
    out = ['"']
    for ch in text:
        c = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= c < 0x7F or (0xA0 <= c < 0xD800 and c not in (0x2028, 0x2029)) or 0xE000 <= c < 0xFEFF \
                or 0xFF00 <= c < 0xFFFE or 0x10000 <= c:
            out.append(ch)
        elif c <= 0xFF:
            out.append(f"\\x{c:02x}")
        else:
            out.append(f"\\u{c:04x}")
    out.append('"')
    return "".join(out)


def _set(raw: Any, loc: tuple, value: str) -> None:
    """Set ``raw`` at the YAML path ``loc`` (``('steps', 2, 'correlate', 'kernel')``)."""
    node = raw
    for key in loc[:-1]:
        node = node[key]
    node[loc[-1]] = value
