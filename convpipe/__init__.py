"""convpipe: declarative image-processing pipelines over Zarr stacks larger than memory.

Every result equals the whole-array reference (scipy / scikit-image) on any chunking.
"""

__version__ = "0.1.0"

from .api import Pipeline, RunResult, load  # noqa: E402
from .errors import (  # noqa: E402
    ConvpipeError,
    ExecutionError,
    InputError,
    PlanError,
    SpecError,
)

__all__ = ["load", "Pipeline", "RunResult", "ConvpipeError", "SpecError", "InputError", "PlanError",
           "ExecutionError", "__version__"]
