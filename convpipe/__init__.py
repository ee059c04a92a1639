"""convpipe: declarative image-processing pipelines over Zarr stacks larger than memory.

Every result equals the whole-array reference (scipy / scikit-image) on any chunking.

Importing the package is cheap: the public names load on first use (PEP 562), so ``import convpipe``
(and the command line's ``--help`` and ``validate``) does not load dask or zarr.
"""

from __future__ import annotations

from .lazy_exports import lazy_exports
from .version import __version__

#: public name -> the module defining it
_LAZY = {
    "load": "api", "Pipeline": "api", "RunResult": "api",
    "ConvpipeError": "errors", "ExecutionError": "errors", "InputError": "errors", "PlanError": "errors",
    "SpecError": "errors",
}

__all__ = ["load", "Pipeline", "RunResult", "ConvpipeError", "SpecError", "InputError", "PlanError",
           "ExecutionError", "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, __package__, _LAZY, public=__all__)
