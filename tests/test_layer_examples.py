"""The example specs of convolutional layers (pipelines/) and the numbers their ideas state (issue 15).

Each spec is loaded as shipped (its .npy files beside it) and run on data where the stated number can be
checked: 32 maps of 241 x 241, the softmax edge detector's weights, [2, 4, 5, 7] * itself, the dropped
ball's distribution of a sum, and a two-layer network against the oracle.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import convpipe
from convpipe.cli import app
from convpipe.oracles import assert_conforms, oracle

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def _load(name: str):
    return convpipe.load(PIPELINES / f"{name}.yaml")


def _steps(p) -> list[dict]:
    return [{s.name: s.params.model_dump(exclude_defaults=True)} for s in p.spec.steps]


def test_bank_of_32_kernels_gives_32_maps_of_241(tmp_path):
    p = _load("cnn-bank")
    bank = np.load(PIPELINES / "cnn-bank-32x16x16.npy")
    assert bank.shape == (32, 16, 16)
    x = (np.random.default_rng(0).random((256, 256)) * 65535).astype(np.uint16)
    out = np.asarray(p.apply(x, axes="yx").compute())
    assert out.shape == (32, 241, 241)
    steps = [{"scale": {"factor": 0.0000152590219}},
             {"filter_bank": {"kernels": str(PIPELINES / "cnn-bank-32x16x16.npy"), "extent": "valid"}}]
    # valid positions read no boundary, so the top-left 49 x 49 of every map is the oracle's maps of the
    # top-left 64 x 64 (scipy's correlate of 32 kernels of 16 x 16 on the whole plane takes ~17 s)
    ref, dims = oracle(steps, x[:64, :64], "yx")
    assert dims == "cyx" and ref.shape == (32, 49, 49)
    assert_conforms(out[:, :49, :49], ref, "float32", fft=True)
    # channel i is kernel i: map 5 at (0, 0) is the valid correlation of the top-left 16 x 16 with kernel 5
    np.testing.assert_allclose(out[5, 0, 0], (x[:16, :16] / 65535.0 * bank[5]).sum(), rtol=1e-4, atol=1e-6)


def test_explain_of_the_bank_shows_241(tmp_path):
    import zarr

    zarr.create_array(str(tmp_path / "plane.zarr"), data=np.zeros((256, 256), np.uint16), chunks=(128, 128))
    plan = _load("cnn-bank").explain(input=str(tmp_path / "plane.zarr"))
    assert "256y x 256x -> 32c x 241y x 241x" in str(plan)
    assert plan.output.shape == (32, 241, 241) and plan.output.chunks == (32, 128, 128)


def test_softmax_of_the_edge_detector_shown_by_convpipe_kernel():
    res = CliRunner().invoke(app, ["kernel", str(PIPELINES / "softmax-edge.yaml")])
    assert res.exit_code == 0, res.output
    rows = [[float(v) for v in line.split()] for line in res.output.splitlines()[2:5]]
    w = np.array(rows)
    assert w[1, 1] == pytest.approx(0.99901, abs=5e-6)
    neighbours = np.delete(w.ravel(), 4)
    assert np.allclose(neighbours, 1.2329e-4, rtol=1e-4)
    assert "sum 1," in res.output and "shape 3x3" in res.output
    # and the numbers are exp(w) / sum(exp(w)), not merely printed
    e = np.exp(np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], float))
    np.testing.assert_allclose(w, e / e.sum(), rtol=1e-4)


def test_full_self_convolution_of_2_4_5_7():
    p = _load("self-convolution")
    x = np.array([[2.0, 4, 5, 7]]) * 65535.0  # the spec first scales the uint16 range to [0, 1]
    out = np.asarray(p.apply(x, axes="yx").compute()).ravel()
    assert out.round(3).tolist() == [4, 16, 36, 68, 81, 70, 49]
    assert np.convolve([2, 4, 5, 7], [2, 4, 5, 7]).tolist() == [4, 16, 36, 68, 81, 70, 49]


def _offsets(p, n=1_000_000, width=2000):
    """Run the spec on a ramp along x: output - input is each voxel's total offset (away from the edges)."""
    x = np.tile(np.arange(width, dtype=np.float64), (n // width, 1))
    out = np.asarray(p.apply(x, axes="yx").compute())
    d = (out - x)[:, 8:-8]
    return np.rint(d).astype(int), d.size


def test_dropped_ball_sum_of_two_distributions():
    f, g = np.array([0.3, 0.7]), np.array([0.5, 0.25, 0.25])
    # the distribution of a + b, by enumeration ...
    dist = np.zeros(4)
    for (a, pa), (b, pb) in itertools.product(enumerate(f), enumerate(g)):
        dist[a + b] += pa * pb
    # ... is the full convolution of the two probability vectors (convpipe, extent: full)
    fg = np.asarray(convpipe.load({"convpipe": 1, "input": "unused.zarr", "steps": [
        {"convolve": {"kernel": g.tolist(), "axes": "x", "extent": "full", "mode": "constant"}}],
        "execution": {"precision": "float64"}}).apply(f[None], axes="yx").compute()).ravel()
    np.testing.assert_allclose(fg, dist, atol=1e-12)
    # ... and the two stochastic steps of the spec draw it: offsets (t1 - 1) + (t2 - 1), t = kernel index
    p = _load("dropped-ball")
    d, n = _offsets(p)
    assert n >= 1_000_000 - 20_000
    freq = np.array([(d == c - 2).mean() for c in range(4)])
    np.testing.assert_allclose(freq, dist, atol=0.01 * dist.max(), rtol=0.01)


def test_two_point_kernel_draws_30_70():
    p = convpipe.load({"convpipe": 1, "input": "unused.zarr", "execution": {"precision": "float64"},
                       "steps": [{"stochastic": {"kernel": [0.3, 0.7], "axes": "x", "seed": 7}}]})
    d, n = _offsets(p)
    assert n > 990_000
    assert abs((d == -1).mean() - 0.3) < 0.003 and abs((d == 0).mean() - 0.7) < 0.007
    assert set(np.unique(d)) == {-1, 0}


def test_two_layer_network_over_a_stack():
    p = _load("two-layer-net")
    x = (np.random.default_rng(3).random((3, 20, 22)) * 65535).astype(np.uint16)
    import dask.array as da

    out = np.asarray(p.apply(da.from_array(x, chunks=(2, 7, 8)), axes="zyx").compute())
    w1, w2 = np.load(PIPELINES / "two-layer-w1.npy"), np.load(PIPELINES / "two-layer-w2.npy")
    assert out.shape == (w2.shape[0], 3, 8, 9)  # (20 // 2 - 2, 22 // 2 - 2)
    steps = _steps(p)
    for st in steps:
        name, prm = next(iter(st.items()))
        if "weights" in prm:
            prm["weights"] = str(PIPELINES / prm["weights"])
    ref, dims = oracle(steps, x, "zyx")
    assert dims == "czyx"
    assert_conforms(out, ref, "float32")
    # the first layer alone, by hand: relu(bias + correlate(x, w1[o, 0])) for o = 3 at one voxel
    import scipy.ndimage as ndi

    v = ndi.correlate(x[1].astype(float) / 65535.0, w1[3, 0].astype(float), mode="reflect")[5, 6] + 0.05
    h = np.asarray(convpipe.load({"convpipe": 1, "input": "unused.zarr", "steps": _steps(p)[:2]}).apply(
        x, axes="zyx").compute())
    assert h[3, 1, 5, 6] == pytest.approx(max(v, 0.0), rel=1e-5, abs=1e-6)


def test_every_layer_example_validates():
    for name in ("cnn-bank", "softmax-edge", "self-convolution", "dropped-ball", "two-layer-net"):
        res = CliRunner().invoke(app, ["validate", str(PIPELINES / f"{name}.yaml")])
        assert res.exit_code == 0 and re.search("valid", res.output), res.output
