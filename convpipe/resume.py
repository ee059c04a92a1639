"""What a run does with what is already at its output: create, replace, resume, or nothing (SPEC.md).

``Pipeline.run`` reads the output's provenance (``io.output_state``) and asks :func:`decide`; nothing is
written before the answer. The rules:

* nothing there: create it;
* ``--resume`` on a convpipe output of the same spec and the same input (metadata *and* data): finish it
  when incomplete, nothing to do when complete — whether or not ``overwrite`` is set too (the job service
  re-runs a spec that says ``output.overwrite: true`` with ``--resume`` after a restart);
* the spec or the input differ: with ``overwrite`` start again, without it refuse and say what differs;
* no ``--resume``: ``overwrite`` replaces; otherwise an existing output is refused (an incomplete one
  pointing at ``--resume``).

Replacing is further limited to Zarr data by :mod:`convpipe.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import InputError, OutputExistsError
from .plan import _fmt_bytes

__all__ = ["Decision", "decide", "input_difference"]

Action = Literal["create", "replace", "resume", "complete"]


@dataclass(frozen=True)
class Decision:
    action: Action
    #: why (for the log): what differed when an output is replaced on a resume
    note: str = ""


def _sz(n: int | None) -> str:
    return "?" if n is None else _fmt_bytes(n)


def input_difference(recorded: dict, now: dict) -> str | None:
    """What differs between the input a run started on (``recorded`` provenance) and the input ``now``.

    Both are provenance dicts holding ``input_fingerprint`` (metadata) and ``input_data``
    (:func:`convpipe.io.data_digest`). Returns None when the input is the same.
    """
    if recorded.get("input_fingerprint") != now.get("input_fingerprint"):
        return ("the input changed since it was written (its URL, shape, dtype, chunks or attributes "
                "differ)")
    old, new = recorded.get("input_data"), now.get("input_data")
    if not isinstance(old, dict) or "digest" not in old:
        return (f"it was started by convpipe {recorded.get('version', '?')}, which did not record the input's "
                "data, so an unchanged input cannot be confirmed")
    if old.get("digest") is None or new.get("digest") is None:
        why = (new or {}).get("error") or old.get("error") or "the store cannot be listed"
        return f"the input's data cannot be compared with what the run started on ({why})"
    if old["digest"] != new["digest"]:
        n0, n1 = old.get("objects"), new.get("objects")
        b0, b1 = old.get("bytes"), new.get("bytes")
        if n0 == n1 and b0 == b1:
            detail = f"{n1} chunk objects of the same total size, some rewritten"
        else:
            detail = f"{n0} chunk objects ({_sz(b0)}) then, {n1} ({_sz(b1)}) now"
        return f"the input's data changed since the run started: {detail}"
    return None


def decide(state: dict | None, prov: dict, *, out_url: str, resume: bool, overwrite: bool) -> Decision:
    """The action for an output whose provenance is ``state`` (None: nothing there; ``{}``: not convpipe's).

    ``prov`` is the provenance this run would write (``spec_hash``, ``input_fingerprint``, ``input_data``).
    Raises OutputExistsError / InputError for a refusal (nothing has been written then).
    """
    if state is None:
        return Decision("create")
    if not state:
        if overwrite:
            return Decision("replace")
        if resume:
            raise OutputExistsError(f"output {out_url} exists and was not written by convpipe; "
                                    "refusing to resume into it (use --overwrite)")
        raise OutputExistsError(f"output {out_url} exists; use --overwrite to replace it")
    if resume:
        diff = ("the spec changed since it was written" if state.get("spec_hash") != prov["spec_hash"]
                else input_difference(state, prov))
        if diff is None:
            return Decision("complete" if state.get("complete") else "resume")
        if overwrite:
            return Decision("replace", note=f"starting {out_url} again: {diff}")
        raise InputError(f"cannot resume {out_url}: {diff} (use --overwrite to start again)")
    if overwrite:
        return Decision("replace")
    if state.get("complete") is False:
        raise OutputExistsError(f"output {out_url} is incomplete (an earlier run was interrupted): "
                                "use --resume to finish it or --overwrite to start again")
    raise OutputExistsError(f"output {out_url} exists; use --overwrite to replace it")
