"""The contract's comparison: tolerance, ``assert_conforms``, undefined orientations."""

from __future__ import annotations

import numpy as np

from .base import TOL, TOL_FFT
from .kernels import EDGE_SMOOTH
from .chain import oracle, step_parts

def tolerance(ref: np.ndarray, precision: str = "float64", fft: bool = False) -> float:
    finite = np.asarray(ref, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    m = float(np.max(np.abs(finite))) if finite.size else 0.0
    return (TOL_FFT if fft else TOL)[precision] * max(1.0, m)

def max_error(out: np.ndarray, ref: np.ndarray) -> float:
    o = np.asarray(out, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    both = np.isfinite(o) & np.isfinite(r)
    return float(np.max(np.abs(o[both] - r[both]))) if both.any() else 0.0

def assert_conforms(out: np.ndarray, ref: np.ndarray, precision: str = "float64", fft: bool = False,
                    what: str = "", circular: bool = False, ignore: np.ndarray | None = None) -> None:
    """The contract's tolerance; NaN/inf must sit where the oracle has them. ``circular`` compares angles
    modulo 2*pi (on the branch cut, where -pi and pi are the same direction); ``ignore`` masks voxels whose
    value is numerically undefined (the orientation of a gradient within rounding of 0)."""
    out = np.asarray(out)
    ref = np.asarray(ref)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != oracle {ref.shape}"
    o = out.astype(np.float64)
    r = ref.astype(np.float64)
    assert np.array_equal(np.isnan(o), np.isnan(r)), f"{what}: NaN positions differ from the oracle"
    assert np.array_equal(np.isinf(o), np.isinf(r)), f"{what}: inf positions differ from the oracle"
    both = np.isfinite(o) & np.isfinite(r)
    if ignore is not None:
        both &= ~ignore
    if not both.any():
        return
    d = o[both] - r[both]
    if circular:
        d = np.angle(np.exp(1j * d))
    err = float(np.max(np.abs(d)))
    tol = tolerance(r, precision, fft)
    if err > tol:
        i = np.unravel_index(np.argmax(np.where(both, np.abs(o - r), -1)), o.shape)
        raise AssertionError(f"{what}: max|out - oracle| = {err:.3g} > {tol:.3g} ({precision}); worst at "
                             f"{tuple(int(v) for v in i)}: out {o[i]!r} vs oracle {r[i]!r}")

def undefined_orientation(steps: list, x: np.ndarray, dims: str | None = None) -> np.ndarray | None:
    """Where the last step's orientation is numerically undefined: a gradient that is not exactly 0 but
    within rounding of it (its direction is noise). None when the last step is not an orientation."""
    name, p = step_parts(steps[-1])
    if name not in EDGE_SMOOTH or p.get("output") != "orientation":
        return None
    mag, _ = oracle(steps[:-1] + [{name: dict(p, output="magnitude")}], x, dims)
    return (mag > 0) & (mag <= 1e-12 * max(1.0, float(np.abs(mag).max())))
