"""One way to name what convpipe identifies by content: SHA-256 of canonical JSON.

The spec's hash (``spec_hash`` in an output's provenance, which decides whether a resume may continue), the
input's fingerprint and the graph token of an op's computation all use :func:`digest`; the first two are
stored in outputs, so their digests must never change for the same content.
"""

from __future__ import annotations

import json
from typing import Any


def _jsonable(v: Any) -> Any:
    """What JSON lacks: a numpy array by its contiguous bytes, shape and dtype; anything else by its repr."""
    import numpy as np

    if isinstance(v, np.ndarray):
        c = np.ascontiguousarray(v)
        import hashlib  # here, not at the top: importing it is ~4 ms of the commands' start-up (issue 17)

        return {"ndarray": hashlib.sha256(c.tobytes()).hexdigest(), "shape": c.shape, "dtype": str(c.dtype)}
    return repr(v)


def digest(obj: Any, length: int | None = None) -> str:
    """The SHA-256 hex digest of ``obj`` as JSON with sorted keys, cut to ``length`` characters.

    Parameters
    ----------
    obj
        JSON data; numpy arrays (by content, shape and dtype) and other objects (by ``repr``) may sit in it.
    length : int, optional
        Keep this many hex digits (default all 64).
    """
    text = json.dumps(obj, sort_keys=True, default=_jsonable)
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:length]
