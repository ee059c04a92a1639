"""Whether a new job would write where a queued or running job writes or reads (HTTP 409).

Two jobs writing one output would interleave their chunks, and a job replacing (``overwrite``) the input of
a job still to finish would change what that job reads under it. Places are compared as the engine compares
them (:func:`convpipe.locations.locate` and :func:`~convpipe.locations.relation`): ``file://`` URLs, symlinked
folders, ``..`` and trailing slashes name one place, and an output inside (or around) another counts too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import yaml

from ..errors import ConvpipeError
from ..locations import Location, locate, relation
from .store import Job

__all__ = ["Conflict", "find_conflict", "pinned_input", "pinned_output"]

_WORDS = {"equal": "is", "inside": "lies inside", "contains": "contains"}


class Conflict(ConvpipeError):
    """A new job collides with a queued or running one: HTTP 409, naming that job."""

    http_status = 409

    def __init__(self, message: str, job: Job):
        super().__init__(message)
        self.job = job


@dataclass(frozen=True)
class _Place:
    what: str
    url: str
    location: Location


def _place(what: str, url: str) -> _Place | None:
    try:
        return _Place(what, url, locate(url))
    except ConvpipeError:  # an unknown protocol: the roots refused it already; nothing to compare
        return None


def _pinned_url(spec_text: str, key: str) -> str | None:
    lines = spec_text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f'"{key}":'):
            # the key's value: its line and the indented or blank lines after it (dump_spec keeps a value
            # on the lines it had in the user's file, always indented below its top-level key)
            end = i + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][0] == " "):
                end += 1
            with contextlib.suppress(yaml.YAMLError, AttributeError, TypeError):
                url = ((yaml.safe_load("\n".join(lines[i:end])) or {}).get(key) or {}).get("url")
                return url if isinstance(url, str) else None
            return None
    if not spec_text.startswith("{"):
        return None
    # a spec written as one flow mapping (a JSON spec keeps its lines so: dump_spec): the whole text
    with contextlib.suppress(yaml.YAMLError, AttributeError, TypeError):
        data = yaml.safe_load(spec_text)
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            url = data[key].get("url")
            return url if isinstance(url, str) else None
    return None


def pinned_input(spec_text: str) -> str | None:
    """The input URL of a stored job's spec.

    Stored specs are written by :func:`convpipe.service.policy.dump_spec`, each top-level key at the start of
    a line, so the input is read from its own lines without parsing the (possibly large) steps.
    """
    return _pinned_url(spec_text, "input")


def pinned_output(spec_text: str) -> str | None:
    """The ``output.url`` of a stored job's spec (None when it writes only tables); see :func:`pinned_input`."""
    return _pinned_url(spec_text, "output")


def find_conflict(writes: dict[str, str], active: list[Job]) -> Conflict | None:
    """The first collision of a new job's written places with the queued and running jobs, or None.

    Parameters
    ----------
    writes : dict of str to str
        What the new job writes: YAML field (``output.url``, ``steps[2].peaks.table``) to absolute location.
    active : list of Job
        The queued and running jobs.
    """
    mine = [p for p in (_place(what, url) for what, url in writes.items()) if p is not None]
    if not mine:
        return None
    for job in active:
        theirs = [(p, "writes") for p in (_place("an output", u) for u in job.outputs) if p is not None]
        inp = pinned_input(job.spec)
        if inp:
            place = _place("its input", inp)
            if place is not None:
                theirs.append((place, "reads"))
        for new in mine:
            for old, verb in theirs:
                rel = relation(new.location, old.location)
                if rel is None:
                    continue
                where = new.url if rel == "equal" else f"{new.url} ({_WORDS[rel]} {old.url})"
                return Conflict(f"{new.what} {where}: job {job.id} ({job.name!r}, {job.state}) {verb} it; "
                                f"wait until it ends, or cancel it (convpipe cancel {job.id})", job)
    return None
