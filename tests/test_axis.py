"""Ops along one axis: moving_average (vs scipy.ndimage.uniform_filter1d) and autoregressive
(vs scipy.signal.lfilter), over several chunkings and tiles, every mode."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.data
from scipy.signal import lfilter

import convpipe
from convpipe.errors import SpecError
from convpipe.plan import ArrayInfo, make_plan

TOL = {"float32": 1e-5, "float64": 1e-10}
MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]


def run(steps, arr, axes, *, chunks, tile=None, precision="float64"):
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
                       "execution": {"precision": precision}})
    return p.apply(da.from_array(arr, chunks=chunks), axes=axes, tile=tile).compute()


def close(out, ref, precision, tol=None):
    assert out.shape == ref.shape
    assert out.dtype == np.dtype(precision)
    err = np.max(np.abs(out.astype(np.float64) - ref))
    assert err <= (tol or TOL[precision]) * max(1.0, float(np.max(np.abs(ref)))), err


@pytest.fixture(scope="module")
def movie():
    rng = np.random.default_rng(2)
    return rng.random((23, 9, 11)) * 10 - 3  # t y x


def plan_of(steps, shape, chunks, axes):
    p = convpipe.load({"convpipe": 1, "input": {"url": "u.zarr"}, "steps": steps})
    return make_plan(p.spec.steps, ArrayInfo(shape, np.dtype("float32"), chunks, axes))


# --------------------------------------------------------------------------- moving_average


def trailing_oracle(x, w, axis, mode, cval=0.0):
    return ndi.uniform_filter1d(x, w, axis=axis, mode=mode, cval=cval, origin=(w - 1) // 2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("window", [1, 2, 5, 8, 13, 30])
@pytest.mark.parametrize("align", ["centered", "trailing"])
def test_moving_average(movie, mode, window, align):
    origin = 0 if align == "centered" else (window - 1) // 2
    ref = ndi.uniform_filter1d(movie, window, axis=0, mode=mode, cval=1.5, origin=origin)
    step = {"moving_average": {"window": window, "align": align, "mode": mode, "cval": 1.5}}
    # halos larger than a chunk (window 13, 30 vs chunks of 4 and 3), wrap across many chunks
    for chunks, tile in [((4, 9, 11), None), ((3, 5, 6), {"t": 6}), ((23, 9, 11), None)]:
        close(run([step], movie, "tyx", chunks=chunks, tile=tile), ref, "float64")


def test_moving_average_trailing_window_ends_at_sample(movie):
    """The trailing oracle really is the mean of x[t-w+1 .. t] (checked where no boundary is involved)."""
    w = 5
    out = run([{"moving_average": {"window": w, "align": "trailing"}}], movie, "tyx", chunks=(4, 9, 11))
    manual = np.stack([movie[t - w + 1: t + 1].mean(axis=0) for t in range(w - 1, movie.shape[0])])
    np.testing.assert_allclose(out[w - 1:], manual, rtol=0, atol=1e-12)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_moving_average_float32_and_other_axes(precision):
    rng = np.random.default_rng(4)
    x = rng.random((2, 3, 30, 8, 8)).astype(np.float32) * 100  # t c z y x
    ref = ndi.uniform_filter1d(x.astype(np.float64), 3, axis=2, mode="nearest")
    out = run([{"moving_average": {"window": 3, "mode": "nearest"}}], x, "tczyx", chunks=(1, 1, 7, 8, 8),
              precision=precision)
    # default axis is t when present
    close(out, ndi.uniform_filter1d(x.astype(np.float64), 3, axis=0, mode="nearest"), precision)
    out = run([{"moving_average": {"window": 3, "axis": "z", "mode": "nearest"}}], x, "tczyx",
              chunks=(1, 1, 7, 8, 8), precision=precision)
    close(out, ref, precision)
    ref = trailing_oracle(x.astype(np.float64), 6, 4, "wrap")
    out = run([{"moving_average": {"window": 6, "axis": "x", "align": "trailing", "mode": "wrap"}}], x, "tczyx",
              chunks=(2, 3, 10, 8, 3), precision=precision)
    close(out, ref, precision)


def test_moving_average_real_image():
    img = skimage.data.camera().astype(np.float64)
    ref = trailing_oracle(img, 9, 0, "reflect")
    out = run([{"moving_average": {"window": 9, "axis": "y", "align": "trailing"}}], img, "yx", chunks=(64, 128))
    close(out, ref, "float64")
    out = run([{"moving_average": {"window": 9, "axis": "y", "align": "trailing"}}], img, "yx", chunks=(64, 128),
              precision="float32")
    close(out, ref, "float32")


def test_moving_average_plan_halo():
    for align, halo in [("centered", (3, 3)), ("trailing", (6, 0))]:
        pp = plan_of([{"moving_average": {"window": 7, "align": align}}], (100, 64, 64), (10, 64, 64), "tyx")
        assert pp.passes[0].halo == {"t": halo}
    pp = plan_of([{"moving_average": {"window": 8}}], (100, 64, 64), (10, 64, 64), "tyx")
    assert pp.passes[0].halo == {"t": (4, 3)}


@pytest.mark.parametrize("params,where,axes", [
    ({"window": 0}, "window", "tyx"), ({"window": 2.5}, "window", "tyx"), ({}, "window", "tyx"),
    ({"window": 3, "axis": "q"}, "axis", "tyx"), ({"window": 3, "axis": "z"}, "axis", "tyx"),
    ({"window": 3}, "axis", "yx"), ({"window": 3, "align": "leading"}, "align", "tyx"),
    ({"window": 3, "mode": "edge"}, "mode", "tyx"), ({"window": 3, "axis": "c"}, "axis", "cyx"),
])
def test_moving_average_validation(params, where, axes):
    with pytest.raises(SpecError) as e:
        convpipe.load({"convpipe": 1, "input": {"url": "u.zarr", "axes": axes},
                       "steps": [{"moving_average": params}]})
    assert f"moving_average.{where}" in str(e.value)


# --------------------------------------------------------------------------- autoregressive


@pytest.mark.parametrize("coefs", [[0.5], [0.9, -0.2], [1.0], [0.3, 0.2, 0.1, 0.05], [-0.7]])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_autoregressive(movie, coefs, precision):
    ref = lfilter([1.0], [1.0] + [-c for c in coefs], movie, axis=0)
    # tol for float32: a unit-root filter (a1 = 1, a running sum) grows the values; relative to max|oracle|
    for chunks, tile in [((4, 9, 11), None), ((5, 3, 4), {"y": 3, "x": 8}), ((23, 9, 11), None)]:
        close(run([{"autoregressive": {"coefficients": coefs}}], movie, "tyx", chunks=chunks, tile=tile,
                  precision=precision), ref, precision)


def test_autoregressive_equation(movie):
    """y[t] = x[t] + a1 y[t-1] + a2 y[t-2], zero before the start."""
    a1, a2 = 0.6, -0.3
    out = run([{"autoregressive": {"coefficients": [a1, a2]}}], movie, "tyx", chunks=(5, 9, 11))
    y = np.zeros_like(movie)
    for t in range(movie.shape[0]):
        y[t] = movie[t] + (a1 * y[t - 1] if t >= 1 else 0) + (a2 * y[t - 2] if t >= 2 else 0)
    np.testing.assert_allclose(out, y, rtol=1e-12, atol=1e-12)


def test_autoregressive_other_axis_and_chain(movie):
    ref = lfilter([1.0], [1.0, -0.4], ndi.uniform_filter1d(movie, 3, axis=0, mode="wrap"), axis=2)
    out = run([{"moving_average": {"window": 3, "mode": "wrap"}},
               {"autoregressive": {"axis": "x", "coefficients": [0.4]}}], movie, "tyx", chunks=(4, 4, 4))
    close(out, ref, "float64")


def test_autoregressive_whole_axis_per_task():
    plan = plan_of([{"autoregressive": {"coefficients": [0.5]}}], (500, 256, 256), (10, 64, 64), "tyx")
    pp = plan.passes[0]
    assert pp.full_axes == "t" and pp.tile["t"] == 500 and not pp.halo
    assert pp.tile["y"] < 256 or pp.tile["x"] < 256 or pp.n_tiles == 1  # the other axes stay tiled


@pytest.mark.parametrize("params,where", [
    ({"coefficients": []}, "coefficients"), ({}, "coefficients"),
    ({"coefficients": [0.5, float("nan")]}, "coefficients"), ({"coefficients": [0.5], "axis": "w"}, "axis"),
    ({"coefficients": [0.5], "mode": "wrap"}, "mode"),
])
def test_autoregressive_validation(params, where):
    with pytest.raises(SpecError) as e:
        convpipe.load({"convpipe": 1, "input": {"url": "u.zarr", "axes": "tyx"},
                       "steps": [{"autoregressive": params}]})
    assert f"autoregressive.{where}" in str(e.value)
