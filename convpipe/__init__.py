"""convpipe: declarative image-processing pipelines over Zarr stacks larger than memory.

Every result equals the whole-array reference (scipy / scikit-image) on any chunking.

Importing the package is cheap: the public names load on first use (PEP 562), so ``import convpipe``
(and the command line's ``--help`` and ``validate``) does not load dask or zarr.
"""

from __future__ import annotations

from typing import Any

from .version import __version__

#: public name -> the module defining it
_LAZY = {
    "load": "api", "Pipeline": "api", "RunResult": "api",
    "ConvpipeError": "errors", "ExecutionError": "errors", "InputError": "errors", "PlanError": "errors",
    "SpecError": "errors",
}

__all__ = ["load", "Pipeline", "RunResult", "ConvpipeError", "SpecError", "InputError", "PlanError",
           "ExecutionError", "__version__"]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
