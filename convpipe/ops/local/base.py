"""What the local filters share: the halo crop, scipy's Gaussian weights, constant-mode fills."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import Op


def gaussian_kernel1d(sigma: float, order: int, radius: int) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian (derivative) weights, reversed as gaussian_filter1d uses them.

    scipy's own formula (``scipy.ndimage._filters._gaussian_kernel1d``), operation for operation, so the
    weights are bit-identical (a test checks it against scipy's): computed here rather than imported, as
    planning a chain calls it and ``explain`` must not pay scipy.ndimage's import (about a quarter second).
    """
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    phi /= phi.sum()
    if order == 0:
        w = phi
    else:
        exp_range = np.arange(order + 1)
        q = np.zeros(order + 1)
        q[0] = 1
        d = np.diag(exp_range[1:], 1)  # d @ q: q'(x)
        p = np.diag(np.ones(order) / -(sigma * sigma), -1)  # p @ q: q(x) * p'(x), p(x) = -x^2 / (2 sigma^2)
        for _ in range(order):
            q = (d + p).dot(q)
        w = (x[:, None] ** exp_range).dot(q) * phi
    return np.ascontiguousarray(w[::-1], dtype=np.float64)


def gaussian_radius(sigma: float, truncate: float) -> int:
    return int(truncate * float(sigma) + 0.5)


class LocalOp(Op):
    """A filter with a halo that runs unchanged on CuPy blocks (every local filter here does)."""

    kind = "local"
    gpu_path = True

    def ax(self, letter: str) -> int:
        return self.in_axes.index(letter)

    def fill(self, outside: Any) -> tuple | None:
        """scipy's per-pass cval padding, needed for kernels that do not sum to one (see engines)."""
        if not outside:
            return None
        mode, cval = self.boundary(self.in_axes[0])
        return (outside, cval) if mode == "constant" and cval != 0 else None
