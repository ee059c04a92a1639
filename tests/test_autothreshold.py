"""``threshold {method: otsu | li | yen | mean}`` against skimage.filters.threshold_<method> of the whole input.

The oracle is scikit-image itself on the whole array as stored (its histogram rules: integer bins for
integer input, 256 bins over [min, max] for floats), never convpipe's own output. Integer inputs and float
otsu / yen are exact (the same value, the same type); float li / mean equal skimage's up to the rounding of
its float sums (skimage sums in the input's type, pairwise, in raster order; convpipe in float64), checked
against a bound of that rounding. Then the mask: ``x > threshold`` as uint8 on every chunking.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest
import zarr
from harness import make_spec

import convpipe
from convpipe.errors import InputError
from convpipe.oracles import oracle
from convpipe.ops.objects import autothreshold as AT

skimage = pytest.importorskip("skimage")
from skimage import data, filters  # noqa: E402

METHODS = ("otsu", "li", "yen", "mean")


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    cam = data.camera()[::2, ::2]
    coins = data.coins()
    return {
        "camera-u8": cam,
        "coins-u8": coins,
        "camera-u16": (cam.astype(np.uint16) * 250 + rng.integers(0, 250, cam.shape)).astype(np.uint16),
        "coins-i16": (coins.astype(np.int16) - 120) * 3,
        "int8": rng.integers(-60, 60, (37, 45)).astype(np.int8),
        "camera-f32": (cam / 255.0).astype(np.float32),
        "coins-f64": coins / 255.0,
        "gamma-f64-3d": rng.gamma(2.0, size=(9, 31, 26)),
        "normal-f32": rng.standard_normal((64, 50)).astype(np.float32),
    }


IMAGES = _images()


def _chunks(x: np.ndarray) -> tuple[int, ...]:
    return tuple(max(1, n // 3 - 1) for n in x.shape)  # irregular: the last chunk is a remainder


def _rounding_bound(x: np.ndarray) -> float:
    """How far skimage's float mean may be from the exactly rounded one: pairwise summation in the input's
    type, error <= eps * log2(n) * mean|x| (plus the final rounding)."""
    eps = float(np.finfo(x.dtype).eps)
    return 2 * eps * max(1.0, math.log2(x.size)) * float(np.mean(np.abs(x.astype(np.float64)))) + eps


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(IMAGES))
def test_threshold_value_equals_skimage(name, method):
    x = IMAGES[name]
    ref = getattr(filters, f"threshold_{method}")(x)
    got = AT.compute_threshold(da.from_array(x, chunks=_chunks(x)), method)
    exact = x.dtype.kind in "iu" or method in ("otsu", "yen")
    if exact or method == "li":
        # li on floats: skimage's loop in the input's type on the same values; its means are float32 sums
        # that land on the exactly rounded value here (checked on every float image of this file)
        assert np.asarray(got).dtype == np.asarray(ref).dtype, (got, ref)
    if exact:
        assert float(got) == float(ref), (got, ref)
    else:
        assert abs(float(got) - float(ref)) <= _rounding_bound(x), (got, ref)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["coins-u8", "camera-u16", "camera-f32", "gamma-f64-3d"])
def test_threshold_mask_on_every_chunking(name, method):
    x = IMAGES[name]
    dims = "zyx"[-x.ndim:]
    steps = [{"threshold": {"method": method}}]
    ref, _ = oracle(steps, x, dims)
    t = getattr(filters, f"threshold_{method}")(x)
    exact = x.dtype.kind in "iu" or method in ("otsu", "yen")
    band = None if exact else np.abs(x.astype(np.float64) - float(t)) <= _rounding_bound(x)  # either side
    p = convpipe.load(make_spec(steps, "float32"))
    for chunks in (x.shape, _chunks(x), tuple(n // 7 + 1 for n in x.shape)):
        out = np.asarray(p.apply(da.from_array(x, chunks=chunks), axes=dims).compute())
        assert out.dtype == np.uint8
        bad = (out != ref) if exact else ((out != ref) & ~band)
        assert not bad.any(), f"{name} {method} chunks {chunks}: {int(bad.sum())} voxels differ"
    assert ref.any() and not ref.all()  # the case can fail: a threshold that splits the image


def test_threshold_after_a_filter_sees_the_filtered_values():
    """gaussian -> threshold otsu: the threshold of the gaussian's output (float64 here), not of the input."""
    x = data.coins()
    steps = [{"gaussian": {"sigma": 2.0}}, {"threshold": {"method": "otsu"}}]
    out = convpipe.load(make_spec(steps, "float64")).apply(da.from_array(x, chunks=(50, 64)), axes="yx").compute()
    ref, _ = oracle(steps, x, "yx")
    assert np.array_equal(out, ref)
    on_input = (x > filters.threshold_otsu(x)).astype(np.uint8)
    assert not np.array_equal(ref, on_input)


def test_threshold_runs_through_zarr_and_verify(tmp_path):
    from convpipe.verify import verify

    x = data.camera()
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(100, 128), dtype=x.dtype)
    z[...] = x
    spec = make_spec([{"gaussian": {"sigma": 1.0}}, {"threshold": {"method": "li"}}], "float32",
                     input={"url": str(tmp_path / "in.zarr")}, output={"url": str(tmp_path / "out.zarr")})
    res = convpipe.load(spec).run()
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert out.dtype == np.uint8 and res.plan.output.dtype == np.uint8
    assert len(res.plan.passes) == 2  # the threshold's pre-pass cuts the chain
    assert "li threshold pre-pass" in str(res.plan)
    v = verify(str(tmp_path / "out.zarr"), all=True)
    assert v.ok, v.summary()


def test_spec_takes_value_or_method_not_both():
    from convpipe.errors import SpecError

    for params in ({"value": 1, "method": "otsu"}, {}, {"method": "triangle"}):
        with pytest.raises(SpecError):
            convpipe.load(make_spec([{"threshold": params}]))


def test_non_finite_float_input_is_refused_for_histograms():
    x = np.random.default_rng(0).standard_normal((20, 20))
    x[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        AT.compute_threshold(da.from_array(x, chunks=7), "otsu")
    # li drops NaN as skimage does; mean is NaN, and x > NaN is 0 everywhere
    assert float(AT.compute_threshold(da.from_array(x, chunks=7), "li")) == pytest.approx(
        float(filters.threshold_li(x)), rel=1e-12)
    p = convpipe.load(make_spec([{"threshold": {"method": "mean"}}]))
    assert not p.apply(x, "yx").compute().any()


def test_li_on_too_many_distinct_floats_says_why(monkeypatch):
    monkeypatch.setattr(AT, "LI_DISTINCT_LIMIT", 100)
    x = np.random.default_rng(1).standard_normal((30, 30))
    with pytest.raises(InputError, match="distinct values"):
        AT.compute_threshold(da.from_array(x, chunks=10), "li")


def test_wide_integer_range_is_refused_before_a_huge_histogram():
    x = np.array([[0, 2 ** 30]], dtype=np.int32)
    with pytest.raises(InputError, match="histogram bins"):
        AT.compute_threshold(da.from_array(x), "otsu")


def test_constant_image():
    x = np.full((10, 12), 7, dtype=np.uint8)
    for m in METHODS:
        assert float(AT.compute_threshold(da.from_array(x, chunks=4), m)) == float(
            getattr(filters, f"threshold_{m}")(x))
