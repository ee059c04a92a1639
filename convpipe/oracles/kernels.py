"""Kernels, independently: named kernels (scipy / scikit-image formulas), kernel sources, normalization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi

#: the smoothing each edge operator applies across the axis it differentiates
EDGE_SMOOTH = {"sobel": [1.0, 2.0, 1.0], "prewitt": [1.0, 1.0, 1.0], "scharr": [3 / 16, 10 / 16, 3 / 16]}

def _sep_outer(factors: list[np.ndarray]) -> np.ndarray:
    k = np.asarray(factors[0], dtype=float)
    for f in factors[1:]:
        k = np.multiply.outer(k, np.asarray(f, dtype=float))
    return k

def named_kernel(name: str, **p: Any) -> np.ndarray:
    """Reference definitions of the named kernels (scipy / scikit-image's formulas)."""
    ndim = int(p.get("ndim", 2))
    if name == "gaussian":
        sigma = float(p.get("sigma", 1.0))
        r = p.get("radius")
        r = int(float(p.get("truncate", 4.0)) * sigma + 0.5) if r is None else int(r)
        t = np.arange(-r, r + 1, dtype=float)
        g = np.exp(-0.5 * t * t / sigma**2)
        return _sep_outer([g / g.sum()] * ndim)
    if name == "box":
        s = int(p.get("size", 3))
        return np.full((s,) * ndim, 1.0 / s**ndim)
    if name in ("sobel", "prewitt", "scharr"):
        axis = p.get("axis", "x")
        ax = {"x": ndim - 1, "y": ndim - 2, "z": ndim - 3}[axis] if isinstance(axis, str) else int(axis)
        return _sep_outer([[-1.0, 0.0, 1.0] if d == ax else EDGE_SMOOTH[name] for d in range(ndim)])
    if name == "laplace":  # the response of scipy.ndimage.laplace to a unit impulse (symmetric kernel)
        d = np.zeros((3,) * ndim)
        d[(1,) * ndim] = 1.0
        return ndi.laplace(d, mode="constant")
    if name == "log":
        sigma = float(p.get("sigma", 1.0))
        r = int(float(p.get("truncate", 4.0)) * sigma + 0.5)
        g = np.meshgrid(*([np.arange(-r, r + 1, dtype=float)] * ndim), indexing="ij")
        r2 = sum(v * v for v in g)
        k = (r2 - ndim * sigma**2) / sigma**4 * np.exp(-r2 / (2 * sigma**2))
        return k - k.mean()
    if name == "gabor":  # the real part of skimage.filters.gabor_kernel, on a square grid of radius ceil(3 sigma)
        f = float(p.get("frequency", 0.1))
        theta = float(p.get("theta", 0.0))
        sigma = float(p["sigma"]) if p.get("sigma") is not None else 0.56 / f
        r = int(np.ceil(3 * sigma)) if p.get("radius") is None else int(p["radius"])
        y, x = np.meshgrid(np.arange(-r, r + 1.0), np.arange(-r, r + 1.0), indexing="ij")
        rotx = x * np.cos(theta) + y * np.sin(theta)
        roty = -x * np.sin(theta) + y * np.cos(theta)
        g = np.exp(-0.5 * (rotx**2 / sigma**2 + roty**2 / sigma**2)) / (2 * np.pi * sigma * sigma)
        return g * np.cos(2 * np.pi * f * rotx + float(p.get("offset", 0.0)))
    if name == "sharpen":
        return np.array([[0.0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    if name == "emboss":
        return np.array([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]])
    if name == "disk":  # skimage.morphology.disk / ball: the grid points within the radius
        r = int(p.get("radius", 2))
        g = np.meshgrid(*([np.arange(-r, r + 1)] * ndim), indexing="ij")
        fp = (sum(v * v for v in g) <= r * r).astype(float)
        return fp / fp.sum()
    raise KeyError(name)

def kernel_array(src: Any, base_dir: Path | None = None) -> np.ndarray:
    """A kernel source of a spec (inline list, ``.npy`` path, named kernel) as a float64 array."""
    if isinstance(src, dict):
        src = dict(src)
        return named_kernel(src.pop("name"), **src)
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return np.load(path).astype(float)
    return np.array(src, dtype=float)

def normalize_kernel(k: np.ndarray, how: str = "none", temperature: float = 1.0) -> np.ndarray:
    if how == "none":
        return k
    if how == "sum":
        return k / k.sum()
    if how == "l1":
        return k / np.abs(k).sum()
    if how == "softmax":
        z = k / temperature
        e = np.exp(z - z.max())
        return e / e.sum()
    raise ValueError(how)

def orientation(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """SPEC.md: arctan2(dy, dx) in (-pi, pi], and 0 where both are 0."""
    t = np.arctan2(dy, dx)
    t = np.where(t <= -np.pi, np.pi, t)
    return np.where((dy == 0) & (dx == 0), 0.0, t)
