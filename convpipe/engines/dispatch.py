"""The dispatch tables behind :mod:`convpipe.engines`: one :class:`dask.utils.Dispatch` per name, on the type of
the first argument; and what every engine asks of a block (on the device? finite?).

The implementations live in :mod:`.cpu` and :mod:`.gpu`, which use this module; so this module does not
import them: the package hands them in (:func:`provide`) when it is imported, which is always before any
of its modules runs. Importing this module imports numpy only.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

#: Set by tiles.run_chain around each op whose input is known to be finite (convpipe.finite tracks it op by
#: op): then the engines need not check the op's blocks again. A ContextVar, because dask runs tasks on
#: several threads at once.
ASSUME_FINITE: contextvars.ContextVar[bool] = contextvars.ContextVar("convpipe_assume_finite", default=False)

_NAMES = ("sep_correlate", "correlate_nd", "rank_filter", "fftconvolve", "conv_channels", "array_module", "to_host",
          "on_device")
_TABLE: dict[str, Any] = {}
_TABLE_LOCK = threading.Lock()


def _register_cupy() -> None:
    import cupy

    register_device_type(cupy.ndarray)


#: ``where -> {name: function}`` for ``cpu`` and ``gpu``: :func:`convpipe.engines._implementations`.
_IMPLEMENTATIONS: list[Callable[[str], dict[str, Any]]] = []


def provide(implementations: Callable[[str], dict[str, Any]]) -> None:
    """Hand in the functions behind each name (``implementations("cpu")``, ``implementations("gpu")``)."""
    _IMPLEMENTATIONS[:] = [implementations]


def _implementations(where: str) -> dict[str, Any]:
    return _IMPLEMENTATIONS[0](where)


def _dispatch(name: str) -> Any:
    d = _TABLE.get(name)
    if d is not None:
        return d
    with _TABLE_LOCK:
        if not _TABLE:
            from dask.utils import Dispatch

            table = {}
            for key, fn in _implementations("cpu").items():
                table[key] = Dispatch(f"convpipe.engines.{key}")
                table[key].register(object, fn)  # every host array type (numpy, memmap, 0-d, lists)
                table[key].register_lazy("cupy", _register_cupy)
            _TABLE.update(table)
    return _TABLE[name]


def register_device_type(array_type: type) -> None:
    """Send arrays of ``array_type`` (an array type with CuPy's API, like ``cupy.ndarray``) to the CuPy engines."""
    for key, fn in _implementations("gpu").items():
        _dispatch(key).register(array_type, fn)


# --------------------------------------------------------------------------- what is where


def on_device(x: Any) -> bool:
    """True for a device (CuPy) array. Never imports CuPy for anything else."""
    return bool(_dispatch("on_device")(x))


def array_module(x: Any) -> Any:
    """numpy, or cupy for a device array."""
    return _dispatch("array_module")(x)


def to_host(x: Any) -> np.ndarray:
    """``x`` as a numpy array (one counted device-to-host copy for a device array, none otherwise)."""
    return _dispatch("to_host")(x)


def all_finite(x: Any) -> bool:
    """True when ``x`` holds no NaN/inf: the exact check of :func:`convpipe.finite.is_finite`, skipped where
    the chain already knows the op's input is finite.

    Works on CuPy blocks too (``x.sum()`` stays on the device; one scalar comes back).
    """
    if not x.size or ASSUME_FINITE.get():
        return True
    from ..finite import is_finite

    return is_finite(x)
