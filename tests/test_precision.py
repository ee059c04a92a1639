"""Precision: ``execution.precision: auto`` and the stored values (SPEC.md, "Axes, boundaries, exactness").

Global statistics (zscore, rescale, threshold) and table ops (peaks, stats, blobs, match_template) compare the
stored values, never values first rounded to float32. The class is tested on data whose digits float32 cannot
hold: int32 near 2**28, uint32 near 2**31, int64 near 2**40 and float64 1e4 + 1e-6 noise, with precision float32
and auto. The oracles are numpy / scipy / scikit-image on the stored values in float64; nothing is shared with
convpipe.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import dask.array as da
import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.ndimage as ndi
import zarr

import convpipe

skimage = pytest.importorskip("skimage")
import skimage.exposure  # noqa: E402
import skimage.feature  # noqa: E402

SHAPE = (48, 56)
# (dtype, offset, amplitude of the structure): float32 cannot tell the structure's values apart
CLASSES = {
    "int32@2^28": (np.int32, 2**28, 1000),
    "uint32@2^31": (np.uint32, 2**31, 1000),
    "int64@2^40": (np.int64, 2**40, 1000),
    "float64@1e4+1e-6": (np.float64, 1e4, 1e-6),
}


def data(kind: str, shape=SHAPE, seed=0) -> np.ndarray:
    """offset + amplitude * a smooth random field in [0, 1] (with spots: peaks and blobs to find)."""
    dt, off, amp = CLASSES[kind]
    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.standard_normal(shape), 2.0)
    f = (f - f.min()) / (f.max() - f.min())
    v = amp * f
    if np.dtype(dt).kind in "iu":
        return (np.asarray(off, dtype=dt) + np.round(v).astype(dt)).astype(dt)
    return off + v


def stored(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def apply(steps, x, precision, chunks=(16, 20), tile=None):
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
                       "execution": {"precision": precision}})
    return p.apply(da.from_array(x, chunks=chunks), axes="yx", tile=tile).compute()


def run_tables(tmp: Path, x: np.ndarray, steps, precision, tile=(16, 24)):
    """Run through Zarr (tables need ``run``); returns (image, {op name: columns})."""
    z = zarr.create_array(str(tmp / "in.zarr"), shape=x.shape, chunks=(8, 12), dtype=x.dtype, overwrite=True)
    z[...] = x
    steps = [{op: dict(prm, table=str(tmp / f"{op}.parquet")) for op, prm in st.items()} for st in steps]
    spec = {"convpipe": 1, "input": {"url": str(tmp / "in.zarr")},
            "output": {"url": str(tmp / "out.zarr"), "overwrite": True}, "steps": steps,
            "execution": {"tile": list(tile), "precision": precision}}
    convpipe.load(spec).run()
    tables = {}
    for st in steps:
        (op,) = st
        t = pq.read_table(str(tmp / f"{op}.parquet"))
        tables[op] = {c: t.column(c).to_numpy() for c in t.column_names}
    return zarr.open_array(str(tmp / "out.zarr"), mode="r")[...], tables


def within(out, ref, precision, fft=False):
    tol = {"float32": 1e-4 if fft else 1e-5, "float64": 1e-8 if fft else 1e-10}[precision]
    err = float(np.max(np.abs(np.asarray(out, np.float64) - ref)))
    assert err <= tol * max(1.0, float(np.max(np.abs(ref)))), err


def effective(precision: str, x: np.ndarray) -> str:
    """The precision whose tolerance applies: auto computes every class here in float64."""
    return "float64" if precision == "auto" else precision


KINDS = list(CLASSES)
PRECISIONS = ["float32", "auto"]


# --------------------------------------------------------------------------- precision auto


@pytest.mark.parametrize("dtype,want", [
    ("bool", "float32"), ("uint8", "float32"), ("int8", "float32"), ("uint16", "float32"), ("int16", "float32"),
    ("float16", "float32"), ("float32", "float32"), ("int32", "float64"), ("uint32", "float64"),
    ("int64", "float64"), ("uint64", "float64"), ("float64", "float64"),
])
def test_auto_resolves_by_input_dtype_and_explain_says_so(tmp_path, dtype, want):
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=(8, 8), chunks=(4, 4), dtype=dtype)
    spec = {"convpipe": 1, "input": {"url": str(tmp_path / "in.zarr")}, "output": {"url": str(tmp_path / "o.zarr")},
            "steps": [{"gaussian": {"sigma": 1}}]}
    plan = convpipe.load(spec).explain()
    assert plan.compute_dtype == np.dtype(want)
    assert plan.output.dtype == np.dtype(want)  # the output dtype follows the compute dtype by default
    text = str(plan)
    assert f"compute {want} (precision auto: input {np.dtype(dtype)} is " in text
    assert ("not exact in float32" in text) == (want == "float64")
    assert plan.to_dict()["precision"] == "auto"
    del z


def test_explicit_precision_wins_and_is_shown(tmp_path):
    zarr.create_array(str(tmp_path / "in.zarr"), shape=(8, 8), chunks=(4, 4), dtype="int32")
    spec = {"convpipe": 1, "input": {"url": str(tmp_path / "in.zarr")}, "steps": [{"gaussian": {"sigma": 1}}],
            "execution": {"precision": "float32"}}
    plan = convpipe.load(spec).explain()
    assert plan.compute_dtype == np.float32 and "compute float32 (execution.precision: float32)" in str(plan)


def test_default_precision_is_auto_and_validated():
    p = convpipe.load({"convpipe": 1, "input": {"url": "x.zarr"}, "steps": [{"abs": {}}]})
    assert p.spec.execution.precision == "auto"
    with pytest.raises(convpipe.SpecError, match="precision"):
        convpipe.load({"convpipe": 1, "input": {"url": "x.zarr"}, "steps": [{"abs": {}}],
                       "execution": {"precision": "float16"}})


def test_auto_keeps_int32_digits_through_a_filter():
    x = data("int32@2^28")
    out = apply([{"gaussian": {"sigma": 1.5}}], x, "auto")
    assert out.dtype == np.float64
    within(out, ndi.gaussian_filter(stored(x), 1.5), "float64")


def _resume_spec(tmp_path, precision):
    return {"convpipe": 1, "input": {"url": str(tmp_path / "in.zarr")},
            "output": {"url": str(tmp_path / "out.zarr")}, "steps": [{"gaussian": {"sigma": 1}}],
            "execution": {"precision": precision, "tile": [8, 8]}}


def test_hash_holds_the_resolved_precision(tmp_path):
    """auto is hashed as what it resolved to: the same arithmetic resumes, other arithmetic never mixes in."""
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=(16, 16), chunks=(8, 8), dtype="float32")
    z[...] = np.random.default_rng(0).random((16, 16))
    convpipe.load(_resume_spec(tmp_path, "auto")).run()
    prov = zarr.open_array(str(tmp_path / "out.zarr")).attrs["convpipe"]
    assert prov["compute"] == "float32"
    prov["complete"] = False  # pretend the run was interrupted
    zarr.open_array(str(tmp_path / "out.zarr"), mode="r+").attrs["convpipe"] = prov
    # precision: float32 is the arithmetic auto chose: the resume is accepted
    convpipe.load(_resume_spec(tmp_path, "float32")).run(resume=True)
    prov["complete"] = False
    zarr.open_array(str(tmp_path / "out.zarr"), mode="r+").attrs["convpipe"] = prov
    # float64 is other arithmetic: refused
    with pytest.raises(convpipe.InputError, match="spec changed"):
        convpipe.load(_resume_spec(tmp_path, "float64")).run(resume=True)


# --------------------------------------------------------------------------- global statistics


def zscore_exact(v: np.ndarray) -> np.ndarray:
    """(v - mean) / std with the mean and the variance in exact rational arithmetic: numpy's float64 mean of an
    int64 near 2**40 is itself off by half an ulp (1e-4), which is 1e-6 of a z-score when the spread is 150."""
    fr = [Fraction(float(a)) for a in v.ravel()]
    mean = sum(fr) / len(fr)
    std = math.sqrt(sum((a - mean) ** 2 for a in fr) / len(fr))
    return np.array([float(a - mean) for a in fr]).reshape(v.shape) / std


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_zscore_uses_the_stored_values(kind, precision):
    x = data(kind)
    v = stored(x)
    out = apply([{"zscore": {}}], x, precision)
    within(out, zscore_exact(v), effective(precision, x))


RESCALES = [{"percentiles": [2, 98]}, {}, {"percentiles": [10, 90], "out_range": [-1, 1]}]


@pytest.mark.parametrize("params", RESCALES, ids=["p2-98", "minmax", "p10-90"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_rescale_uses_the_stored_values(kind, precision, params):
    x = data(kind)
    v = stored(x)
    if "percentiles" in params:
        rng = tuple(np.percentile(v, params["percentiles"]))
    else:
        rng = (v.min(), v.max())
    ref = skimage.exposure.rescale_intensity(v, in_range=rng, out_range=tuple(params.get("out_range", (0, 1))))
    within(apply([{"rescale": params}], x, precision), ref, effective(precision, x))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_threshold_compares_the_stored_values(kind, precision):
    x = data(kind)
    v = stored(x)
    value = float(np.median(v))  # a stored value: float32 rounding would flip its neighbours
    out = apply([{"threshold": {"value": value}}], x, precision)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, (v > value).astype(np.uint8))
    assert 0 < out.sum() < out.size


# --------------------------------------------------------------------------- table ops


def rows(cols: dict, names) -> set:
    return set(zip(*[cols[n].tolist() for n in names]))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_peaks_compare_the_stored_values(tmp_path, kind, precision):
    x = data(kind)
    v = stored(x)
    dt, off, amp = CLASSES[kind]
    thr = float(off) + 0.3 * amp
    img, tb = run_tables(tmp_path, x, [{"peaks": {"radius": 2, "threshold": thr}}], precision)
    mx = ndi.maximum_filter(v, size=5, mode="nearest")
    hit = (v == mx) & (v > thr)
    want = set(zip(*[i.tolist() for i in np.nonzero(hit)], v[hit].tolist()))
    got = rows(tb["peaks"], ["y", "x", "value"])
    assert len(got) == len(tb["peaks"]["y"])
    assert got == want and 3 <= len(want) < 200
    within(img, v, effective(precision, x))  # the image passes through, in the compute dtype


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_stats_use_the_stored_values(tmp_path, kind, precision):
    x = data(kind)
    v = stored(x)
    _, tb = run_tables(tmp_path, x, [{"stats": {"per": "all"}}], precision)
    s = tb["stats"]
    ref = {"count": v.size, "mean": v.mean(), "std": v.std(), "min": v.min(), "max": v.max(), "sum": v.sum(),
           "energy": float(np.sum(v * v))}
    for k, r in ref.items():
        assert abs(float(s[k][0]) - r) <= 1e-9 * abs(r), (k, float(s[k][0]), r)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_blobs_use_the_stored_values(tmp_path, kind, precision):
    x = data(kind, shape=(64, 64), seed=3)
    v = stored(x)
    amp = CLASSES[kind][2]
    params = {"min_sigma": 2, "max_sigma": 5, "num_sigma": 4, "threshold": 0.02 * amp}
    _, tb = run_tables(tmp_path, x, [{"blobs": params}], precision, tile=(32, 32))
    want = {(int(round(b[0])), int(round(b[1])), float(b[2])) for b in skimage.feature.blob_log(v, **params)}
    got = rows(tb["blobs"], ["y", "x", "sigma"])
    assert got == want and len(want) >= 3


def ncc_oracle(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """skimage.feature.match_template(v, t, pad_input=True), each window centred before its sums: skimage's
    running sums of squares lose every digit of the structure on an offset of 2**40 (or 1e4 with 1e-6 noise),
    so its formula is evaluated window by window, on the same zero padding, after an exact shift."""
    th, tw = t.shape
    shift = float(v.flat[0])  # v - shift is exact (integers; floats within a factor 2): windows centre exactly
    p = np.pad(v - shift, ((th // 2, th - 1 - th // 2), (tw // 2, tw - 1 - tw // 2)), constant_values=-shift)
    w = np.lib.stride_tricks.sliding_window_view(p, t.shape)
    wc = w - w.mean(axis=(-2, -1), keepdims=True)
    tc = t - t.mean()
    num = np.einsum("ijkl,kl->ij", wc, tc)
    den = np.sqrt(np.sum(wc * wc, axis=(-2, -1)) * np.sum(tc * tc))
    out = np.zeros_like(num)
    ok = den > np.finfo(np.float64).eps
    out[ok] = num[ok] / den[ok]
    return out


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_match_template_uses_the_stored_values(tmp_path, kind, precision):
    x = data(kind, seed=5)
    v = stored(x)
    t = v[20:29, 30:37].copy()
    img, tb = run_tables(tmp_path, x, [{"match_template": {"template": t.tolist(), "radius": 3,
                                                            "threshold": 0.5}}], precision)
    ref = ncc_oracle(v, t)
    within(img, ref, "float32", fft=True)  # skimage's own formula is good to ~1e-6 on such data
    assert img.dtype == np.dtype("float32" if precision == "float32" else "float64")
    got = rows(tb["match_template"], ["y", "x"])
    mx = ndi.maximum_filter(ref, size=7, mode="nearest")
    assert (24, 33) in got and got == set(zip(*[i.tolist() for i in np.nonzero((ref == mx) & (ref > 0.5))]))


@pytest.mark.parametrize("dtype", ["float16", "uint8", "bool", "int16"])
def test_table_ops_read_small_types(tmp_path, dtype):
    """Types float32 holds exactly reach the table ops widened (scipy has no float16 or bool filters)."""
    r = np.random.default_rng(6).random((24, 30))
    x = (r > 0.5) if dtype == "bool" else (r * 4).astype(dtype)
    v = stored(x)
    _, tb = run_tables(tmp_path, x, [{"peaks": {"radius": 1, "threshold": 0.5}}], "auto")
    mx = ndi.maximum_filter(v, size=3, mode="nearest")
    hit = (v == mx) & (v > 0.5)
    assert rows(tb["peaks"], ["y", "x", "value"]) == set(zip(*[i.tolist() for i in np.nonzero(hit)], v[hit].tolist()))
    within(apply([{"zscore": {}}], x, "auto"), zscore_exact(v), "float32")
