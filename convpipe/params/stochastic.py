"""Parameters of ``stochastic`` (:mod:`convpipe.ops.stochastic`), and the kernel-to-probabilities rule."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, model_validator

from ..kernels import kernel_or_none, normalize
from .base import AxesParam, Entry, Mode, OpParams


def probabilities(k: np.ndarray, how: str, temperature: float) -> np.ndarray:
    """Kernel weights -> probabilities (float64, sum 1). Raises ValueError with the cause."""
    if how == "none":
        if np.any(k < 0):
            raise ValueError("normalize: none needs non-negative weights (they are probabilities); "
                             "this kernel has negative weights")
        s = float(k.sum())
        if abs(s - 1.0) > 1e-6:
            raise ValueError(f"normalize: none needs weights that sum to 1 (probabilities); these sum to {s:g}: "
                             "use normalize: sum, l1 or softmax")
        return np.ascontiguousarray(k / s)
    if how in ("sum", "l1") and np.any(k < 0):
        raise ValueError(f"normalize: {how} needs non-negative weights to make probabilities; this kernel has "
                         "negative weights (use normalize: softmax)")
    p = normalize(k, how, temperature)
    return np.ascontiguousarray(p / p.sum())


class StochasticParams(OpParams, AxesParam):
    kernel: Any = Field(description="nested list, .npy path, or {name: gaussian|box|disk|..., ...}")
    axes: str | None = None
    origin: int | list[int] = 0
    normalize: Literal["none", "sum", "l1", "softmax"] = "none"
    temperature: float = 1.0
    seed: int = 0
    mode: Mode = "reflect"
    cval: float = 0.0

    @model_validator(mode="after")
    def _kernel_ok(self, info: ValidationInfo):
        try:
            k = kernel_or_none(self.kernel)  # a .npy path is read by convpipe.bind, not here
            if k is not None:
                probabilities(k, self.normalize, self.temperature)
        except ValueError as e:
            raise ValueError(str(e)) from None
        return self


ENTRIES = [
    Entry("stochastic", StochasticParams, "local",
          "copy the input at a random offset drawn from the kernel (seeded, chunking-independent)",
          "Every output voxel copies the input voxel at an offset drawn from the kernel's weights made "
          "probabilities by ``normalize``; the draw is a pure function of (seed, global coordinates), so the "
          "result is the same for every chunking and tiling, and its mean over seeds tends to ``correlate``."),
]
