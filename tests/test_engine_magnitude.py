"""engines.magnitude: sqrt of the summed squares, OpenCV on the host where its rule is numpy's, numpy otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from convpipe import engines
from convpipe.engines import dispatch


def _terms(n, shape, dtype, rng, view):
    big = tuple(s + 2 for s in shape)
    ts = [(rng.standard_normal(big) * 1e3).astype(dtype) for _ in range(n)]
    return [t[(slice(1, -1),) * len(shape)] if view else t[(slice(1, -1),) * len(shape)].copy() for t in ts]


@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("shape", [(7,), (6, 9), (3, 5, 8), (2, 2, 4, 6)])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_magnitude_is_sqrt_of_summed_squares(dtype, n, shape, view):
    rng = np.random.default_rng(n * 10 + len(shape))
    terms = _terms(n, shape, dtype, rng, view)
    ref = np.sqrt(sum(t.astype(np.float64) ** 2 for t in terms))
    got = engines.magnitude(*[t.copy() for t in terms])
    assert got.shape == ref.shape and got.dtype == dtype
    ulp = np.finfo(dtype).eps
    np.testing.assert_allclose(got, ref, rtol=4 * ulp, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_magnitude_keeps_numpys_rule_for_nan_and_inf(dtype):
    vals = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 3.0, 3e38 if dtype == np.float32 else 1e308], dtype)
    a, b = (np.tile(v.reshape(1, -1), (2, 1)) for v in np.meshgrid(vals, vals))  # every pair, in 2 planes
    with np.errstate(over="ignore", invalid="ignore"):
        ref = np.sqrt(a * a + b * b)
        got = engines.magnitude(a.copy(), b.copy())
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.array_equal(got[~np.isnan(ref)], ref[~np.isnan(ref)])


def test_magnitude_trusts_the_chain_only_for_finite_blocks():
    """Under ASSUME_FINITE (the op's input is finite) OpenCV runs; a term that overflowed there is the tile
    engine's to catch (it reruns the op in float64), never a wrong finite value."""
    a = np.full((2, 3), np.inf, np.float32)
    b = np.ones((2, 3), np.float32)
    token = dispatch.ASSUME_FINITE.set(True)
    try:
        got = engines.magnitude(a.copy(), b.copy())
    finally:
        dispatch.ASSUME_FINITE.reset(token)
    assert np.all(np.isinf(got))
