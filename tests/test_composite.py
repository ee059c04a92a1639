"""The composite kernel of a fused linear run (issue #15 item 5): what ``explain`` and ``convpipe kernel`` say
a run of linear steps amounts to, checked against the oracle of the chain itself.

Away from the array's edges (where each step pads by its own mode) the chain equals one correlation with
the composite kernel; two gaussians are one gaussian of the summed variances. ``explain`` never hides a
failure to compute a composite behind "(not computed: ...)".
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr
from harness import make_spec

import convpipe
from convpipe.composite import composite, composite_note, linear_runs
from convpipe.oracles import oracle

CHAINS = [
    [{"gaussian": {"sigma": 3}}, {"gaussian": {"sigma": 4}}],
    [{"gaussian": {"sigma": {"z": 1, "y": 3, "x": 3}}}, {"gaussian_laplace": {"sigma": 2}}, {"uniform": {"size": 5}}],
    [{"correlate": {"kernel": [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]}}, {"gaussian": {"sigma": 1.5}}],
    [{"uniform": {"size": 3}}, {"sobel": {"axes": "yx", "output": "components"}}],
]


def _ops(steps, src):
    return convpipe.load(make_spec(steps, "float64", input={"url": src})).explain().passes[0].ops


@pytest.mark.parametrize("steps", CHAINS[:3], ids=["gauss-gauss", "heavy", "correlate-gauss"])
def test_the_composite_kernel_is_the_chain_away_from_the_edges(tmp_path, steps):
    x = np.random.default_rng(1).random((24, 96, 96))
    src = str(tmp_path / "in.zarr")
    zarr.create_array(src, data=x, chunks=(12, 48, 48))
    ops = _ops(steps, src)
    runs = linear_runs(ops)
    assert len(runs) == 1  # merged ops come apart into their steps
    k = composite(runs[0])
    assert k is not None
    w = k.weights.reshape([k.weights.shape[k.axes.index(a)] if a in k.axes else 1 for a in "zyx"])
    got = ndi.correlate(x, w, mode="constant")
    ref, _ = oracle(steps, x, "zyx")
    m = [s // 2 + 1 for s in w.shape]  # the composite's reach: the interior no padding touches
    inner = tuple(slice(a, n - a) for a, n in zip(m, x.shape))
    assert all(sl.start < sl.stop for sl in inner)
    np.testing.assert_allclose(got[inner], ref[inner], rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def test_two_gaussians_are_named_as_one(tmp_path):
    src = str(tmp_path / "in.zarr")
    zarr.create_array(src, data=np.zeros((64, 64)), chunks=(32, 32))
    ops = _ops(CHAINS[0], src)
    assert composite_note(linear_runs(ops)[0]) == "gaussian σ=3 then σ=4 = gaussian σ=5"


@pytest.mark.parametrize("steps", CHAINS, ids=["gauss-gauss", "heavy", "correlate-gauss", "uniform-sobel"])
def test_explain_never_hides_a_failed_composite(tmp_path, steps):
    src = str(tmp_path / "in.zarr")
    zarr.create_array(src, data=np.zeros((8, 64, 64)), chunks=(8, 32, 32))
    text = str(convpipe.load(make_spec(steps, "float32", input={"url": src})).explain())
    assert "not computed" not in text, text
