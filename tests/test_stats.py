"""Whole-array statistics (moments, exact percentiles) and the global ops zscore / rescale."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import skimage.data
from skimage.exposure import rescale_intensity

import convpipe
from convpipe import stats
from convpipe.errors import SpecError

CHUNKINGS = [(7, 13), (64, 64), (1, 100), (25, 3)]


def counting_compute():
    calls = []

    def compute(*args, **kw):
        calls.append(1)
        return dask.compute(*args, scheduler="sync", **kw)

    return compute, calls


# --------------------------------------------------------------------------- moments


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint16", "int32", "uint8"])
def test_moments_match_numpy(dtype):
    rng = np.random.default_rng(1)
    x = (rng.random((64, 100)) * 200 - (0 if dtype.startswith("u") else 100)).astype(dtype)
    x64 = x.astype(np.float64)
    for ch in CHUNKINGS:
        n, mean, std = stats.moments(da.from_array(x, chunks=ch))
        assert n == x.size
        assert abs(mean - x64.mean()) <= 1e-13 * max(1.0, abs(x64.mean()))
        assert abs(std - x64.std()) <= 1e-13 * x64.std()


def test_moments_stable_with_large_offset():
    """Naive sum / sum-of-squares would lose every digit here; Chan's merge keeps them."""
    rng = np.random.default_rng(2)
    x = 1e9 + rng.standard_normal((200, 300))
    ref_mean, ref_std = np.mean(x), np.std(x)
    _, mean, std = stats.moments(da.from_array(x, chunks=(17, 23)))
    assert abs(mean - ref_mean) <= 1e-15 * ref_mean
    assert abs(std - ref_std) <= 1e-9 * ref_std


def test_moment_summary_min_max_nan_and_numpy_input():
    x = np.arange(20.0).reshape(4, 5)
    s = stats.moment_summary(x)
    assert s == {"count": 20, "mean": 9.5, "std": float(np.std(x)), "min": 0.0, "max": 19.0}
    x[2, 3] = np.nan
    s = stats.moment_summary(da.from_array(x, chunks=2))
    assert np.isnan(s["mean"]) and np.isnan(s["std"]) and np.isnan(s["min"]) and np.isnan(s["max"])


def test_summary_independent_of_chunking_bitwise():
    x = np.random.default_rng(3).random((50, 60)).astype(np.float32)
    a = stats.moments(da.from_array(x, chunks=(10, 10)))
    b = stats.moments(da.from_array(x, chunks=(10, 10)))
    assert a == b  # deterministic: a fixed reduction tree


# --------------------------------------------------------------------------- percentiles

QS = [0, 0.5, 1, 2, 25, 33.3, 50, 66.7, 98, 99.9, 100]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "uint8", "uint16", "int16", "int32",
                                   "int64", "uint64", "bool"])
def test_percentiles_exact(dtype):
    rng = np.random.default_rng(4)
    if dtype == "bool":
        x = rng.random((33, 41)) > 0.3
    elif np.dtype(dtype).kind == "f":
        x = (rng.standard_normal((33, 41)) * 50).astype(dtype)
        x[0, :5] = [0.0, -0.0, np.inf, -np.inf, 1e-30]
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, (33, 41), dtype=dtype, endpoint=True)
        x[:, 3] = x[0, 0]  # ties
    with np.errstate(invalid="ignore"):  # numpy warns on inf - inf at the infinite ends
        ref = np.percentile(x.astype(np.float64), QS)
    for ch in [(5, 7), (33, 41), (1, 41)]:
        got = stats.percentiles(da.from_array(x, chunks=ch), QS)
        np.testing.assert_array_equal(got, ref)
    if dtype in ("uint8", "uint16", "int16"):
        np.testing.assert_array_equal(got, np.percentile(x, QS))


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint16", "int32"])
def test_percentiles_exact_through_histogram_levels(monkeypatch, dtype):
    """Force the radix passes (no bucket is small enough to pull out) and count them."""
    monkeypatch.setattr(stats, "EXTRACT_LIMIT", 3)
    rng = np.random.default_rng(5)
    if dtype.startswith("float"):
        x = np.concatenate([rng.standard_normal(3000), np.full(500, 0.25), rng.random(100) * 1e-6])
    else:
        x = rng.integers(0, 60000, 3600)
    x = x.astype(dtype).reshape(60, -1)
    compute, calls = counting_compute()
    got = stats.percentiles(da.from_array(x, chunks=(7, 9)), QS, compute=compute)
    np.testing.assert_array_equal(got, np.percentile(x.astype(np.float64), QS))
    assert len(calls) <= {"float32": 2, "float64": 4, "uint16": 1, "int32": 2}[dtype]


def test_percentiles_passes_and_camera():
    img = skimage.data.camera()
    compute, calls = counting_compute()
    got = stats.percentiles(da.from_array(img, chunks=(100, 128)), [1, 50, 99.5], compute=compute)
    np.testing.assert_array_equal(got, np.percentile(img, [1, 50, 99.5]))
    assert len(calls) == 1  # uint8: one histogram pass is exact
    f = img.astype(np.float32) / 7.0
    compute, calls = counting_compute()
    got = stats.percentiles(da.from_array(f, chunks=(100, 128)), [1, 50, 99.5], compute=compute)
    np.testing.assert_array_equal(got, np.percentile(f.astype(np.float64), [1, 50, 99.5]))
    assert len(calls) <= 2


def test_percentiles_nan_small_and_errors():
    x = np.array([[3.0, np.nan], [1.0, 2.0]])
    assert np.all(np.isnan(stats.percentiles(da.from_array(x, chunks=1), [10, 90])))
    np.testing.assert_array_equal(stats.percentiles(np.array([7.5]), [0, 50, 100]), [7.5, 7.5, 7.5])
    with pytest.raises(ValueError, match="outside"):
        stats.percentiles(np.arange(4.0), [101])
    with pytest.raises(ValueError, match="unknown statistic"):
        stats.summarize(np.arange(4.0), ["median"])


def test_summarize_one_pass_for_moments_and_uint_percentiles():
    x = np.random.default_rng(6).integers(0, 4000, (40, 50)).astype(np.uint16)
    compute, calls = counting_compute()
    keys = ["mean", "std", "min", "max", "count", stats.percentile_key(2), stats.percentile_key(98)]
    s = stats.summarize(da.from_array(x, chunks=(9, 9)), keys, compute=compute)
    assert len(calls) == 1
    x64 = x.astype(np.float64)
    assert s["count"] == x.size and s["min"] == x.min() and s["max"] == x.max()
    assert abs(s["mean"] - x64.mean()) < 1e-12 * x64.mean() and abs(s["std"] - x64.std()) < 1e-12 * x64.std()
    assert [s[keys[5]], s[keys[6]]] == list(np.percentile(x, [2, 98]))


# --------------------------------------------------------------------------- zscore / rescale through the pipeline


def run(steps, arr, axes, *, chunks, tile=None, precision="float64"):
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
                       "execution": {"precision": precision}})
    return p.apply(da.from_array(arr, chunks=chunks), axes=axes, tile=tile).compute()


def close(out, ref, precision):
    tol = {"float32": 1e-5, "float64": 1e-10}[precision]
    assert out.dtype == np.dtype(precision)
    assert np.max(np.abs(out.astype(np.float64) - ref)) <= tol * max(1.0, float(np.max(np.abs(ref))))


@pytest.fixture(scope="module")
def moon():
    return skimage.data.moon()


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_zscore(moon, precision):
    x = moon.astype(np.float64)
    ref = (x - x.mean()) / x.std()
    for ch in [(64, 64), (512, 512), (100, 37)]:
        close(run(["zscore"], moon, "yx", chunks=ch, precision=precision), ref, precision)
    # offset >> spread: float32 accumulation would fail here, float64 statistics do not (the data are
    # float32 values, so the float32 pipeline sees exactly the oracle's input)
    big = (1e4 + np.random.default_rng(0).random((30, 40))).astype(np.float32)
    b64 = big.astype(np.float64)
    ref = (b64 - b64.mean()) / b64.std()
    close(run([{"zscore": {}}], big, "yx", chunks=(7, 9), precision=precision), ref, precision)


def test_zscore_after_a_filter_uses_the_filtered_statistics(moon):
    import scipy.ndimage as ndi

    g = ndi.gaussian_filter(moon.astype(np.float64), 2)
    ref = (g - g.mean()) / g.std()
    close(run([{"gaussian": {"sigma": 2}}, "zscore", {"scale": {"factor": 2}}], moon, "yx", chunks=(128, 100)),
          2 * ref, "float64")


def test_zscore_constant_input_gives_zero():
    out = run(["zscore"], np.full((10, 10), 3.0), "yx", chunks=(5, 5))
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("params", [
    {"percentiles": [2, 98]}, {"percentiles": [0.5, 99.5], "out_range": [-1, 1]}, {"in_range": [50, 150]},
    {}, {"percentiles": [0, 100], "out_range": [0, 255]}, {"percentiles": [40, 40]},
])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_rescale(moon, params, precision):
    x = moon.astype(np.float64)
    if "percentiles" in params:
        in_range = tuple(np.percentile(x, params["percentiles"]))
    elif "in_range" in params:
        in_range = tuple(float(v) for v in params["in_range"])
    else:
        in_range = "image"
    ref = rescale_intensity(x, in_range=in_range, out_range=tuple(params.get("out_range", [0.0, 1.0])))
    for ch in [(64, 64), (512, 30)]:
        close(run([{"rescale": params}], moon, "yx", chunks=ch, precision=precision), ref, precision)


def test_rescale_float_percentiles_on_a_stack():
    rng = np.random.default_rng(8)
    x = rng.gamma(2.0, 3.0, (6, 40, 50))
    ref = rescale_intensity(x, in_range=tuple(np.percentile(x, [1, 99])), out_range=(0.0, 1.0))
    close(run([{"rescale": {"percentiles": [1, 99]}}], x, "zyx", chunks=(2, 13, 17)), ref, "float64")


def test_op_prepare_contract():
    from convpipe.ops import registry

    p = convpipe.load({"convpipe": 1, "input": {"url": "u.zarr"}, "steps": [{"rescale": {"percentiles": [5, 95]}}]})
    op = registry.get("rescale")(p.spec.steps[0].params, "yx")
    assert op.kind == "global" and op.needs() == [stats.percentile_key(5), stats.percentile_key(95)]
    with pytest.raises(RuntimeError, match="pre-pass"):
        op.apply(np.zeros((2, 2)))
    x = np.arange(100.0).reshape(10, 10)
    op.prepare_from(da.from_array(x, chunks=3))
    np.testing.assert_allclose(op.apply(x), rescale_intensity(x, in_range=tuple(np.percentile(x, [5, 95])),
                                                              out_range=(0.0, 1.0)), rtol=0, atol=1e-15)
    z = registry.get("zscore")(registry.get("zscore").Params(), "yx")
    assert z.needs() == ["mean", "std"]
    z.prepare({"mean": 2.0, "std": 4.0})
    np.testing.assert_array_equal(z.apply(np.array([2.0, 6.0])), [0.0, 1.0])
    fixed = registry.get("rescale")(registry.get("rescale").Params(in_range=[0, 10]), "yx")
    assert fixed.needs() == []
    np.testing.assert_array_equal(fixed.apply(np.array([-1.0, 5.0, 11.0])), [0.0, 0.5, 1.0])


@pytest.mark.parametrize("params,match", [
    ({"in_range": [1, 2], "percentiles": [1, 99]}, "not both"),
    ({"in_range": [3, 2]}, "above"), ({"percentiles": [1, 101]}, r"\[0, 100\]"),
    ({"percentiles": [60, 40]}, "above"), ({"percentiles": [1]}, "two values"),
    ({"out_range": [0, 1, 2]}, "two values"),
])
def test_rescale_validation(params, match):
    with pytest.raises(SpecError, match=match):
        convpipe.load({"convpipe": 1, "input": {"url": "u.zarr"}, "steps": [{"rescale": params}]})
