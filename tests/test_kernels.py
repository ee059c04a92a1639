"""Kernels: named kernels against scipy / scikit-image, sources (inline, .npy, named), normalisation,
separability detection, and the errors a bad kernel gets — directly and through a pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from harness import check, make_spec, run

import convpipe
from convpipe.errors import ConvpipeError, SpecError
from convpipe.kernels import NAMED, kernel_from_source, normalize, separable_factors
from convpipe.oracles import assert_conforms, named_kernel, oracle

# --------------------------------------------------------------------------- named kernels


NAMED_CASES = [
    ("gaussian", {"sigma": 1.3}),
    ("gaussian", {"sigma": 0.8, "truncate": 2.0, "ndim": 3}),
    ("gaussian", {"sigma": 2.0, "radius": 3}),
    ("box", {"size": 4}),
    ("box", {"size": 3, "ndim": 3}),
    ("sobel", {"axis": "x"}), ("sobel", {"axis": "y"}), ("sobel", {"axis": "z", "ndim": 3}),
    ("prewitt", {"axis": "y"}), ("prewitt", {"axis": 0, "ndim": 3}),
    ("scharr", {"axis": "x"}), ("scharr", {"axis": "y", "ndim": 3}),
    ("laplace", {}), ("laplace", {"ndim": 3}), ("laplace", {"ndim": 1}),
    ("log", {"sigma": 1.0}), ("log", {"sigma": 1.5, "ndim": 3, "truncate": 2.0}),
    ("gabor", {"frequency": 0.2, "sigma": 1.5}),
    ("gabor", {"frequency": 0.1, "theta": 0.7, "sigma": 2.0, "offset": 0.3}),
    ("sharpen", {}), ("emboss", {}),
    ("disk", {"radius": 2}), ("disk", {"radius": 3}), ("disk", {"radius": 2, "ndim": 3}),
]


def _id(case):
    name, p = case
    return name + "-" + "-".join(f"{k}{v}" for k, v in p.items())


def test_every_named_kernel_is_covered():
    assert {c[0] for c in NAMED_CASES} == set(NAMED)


@pytest.mark.parametrize("name,params", NAMED_CASES, ids=[_id(c) for c in NAMED_CASES])
def test_named_kernel_matches_reference(name, params):
    k = kernel_from_source({"name": name, **params})
    ref = named_kernel(name, **params)
    assert k.dtype == np.float64 and k.flags.c_contiguous
    assert k.shape == ref.shape
    np.testing.assert_allclose(k, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("axis,ndim", [(-1, 2), (0, 2), (2, 3), (1, 3), (0, 3)])
@pytest.mark.parametrize("name", ["sobel", "prewitt"])
def test_named_edge_kernels_are_scipy_filters(name, axis, ndim):
    """correlate with the named kernel == scipy.ndimage.sobel / prewitt along that axis (every mode)."""
    letter = "zyx"[3 - ndim:][axis]
    x = np.random.default_rng(0).standard_normal((4, 7, 6)[3 - ndim:])
    fn = {"sobel": ndi.sobel, "prewitt": ndi.prewitt}[name]
    for mode in ("reflect", "wrap", "nearest", "mirror", "constant"):
        k = {"name": name, "axis": letter, "ndim": ndim}
        out = run([{"correlate": {"kernel": k, "mode": mode}}], x, None, tuple(2 for _ in x.shape))
        assert_conforms(out, fn(x, axis=axis, mode=mode), what=f"{name} {letter} {mode}")


def test_named_smoothing_kernels_are_scipy_filters():
    x = np.random.default_rng(1).standard_normal((11, 12))
    for mode in ("reflect", "wrap", "constant"):
        out = run([{"correlate": {"kernel": {"name": "gaussian", "sigma": 1.4, "truncate": 3.0}, "mode": mode}}],
                  x, "yx", (3, 4))
        assert_conforms(out, ndi.gaussian_filter(x, 1.4, truncate=3.0, mode=mode), what=f"gaussian {mode}")
        out = run([{"correlate": {"kernel": {"name": "box", "size": 3}, "mode": mode}}], x, "yx", (3, 4))
        assert_conforms(out, ndi.uniform_filter(x, 3, mode=mode), what=f"box {mode}")
        out = run([{"correlate": {"kernel": {"name": "laplace"}, "mode": mode}}], x, "yx", (3, 4))
        assert_conforms(out, ndi.laplace(x, mode=mode), what=f"laplace {mode}")


def test_gabor_matches_skimage():
    from skimage.filters import gabor_kernel

    k = kernel_from_source({"name": "gabor", "frequency": 0.15, "sigma": 2.0, "offset": 0.5})
    ref = gabor_kernel(0.15, theta=0.0, sigma_x=2.0, sigma_y=2.0, offset=0.5).real
    np.testing.assert_allclose(k, ref, rtol=1e-12, atol=1e-15)
    # rotated: scikit-image's grid is smaller; the common centre agrees
    k = kernel_from_source({"name": "gabor", "frequency": 0.15, "theta": np.pi / 4, "sigma": 2.0})
    ref = gabor_kernel(0.15, theta=np.pi / 4, sigma_x=2.0, sigma_y=2.0).real
    cy, cx = (k.shape[0] - ref.shape[0]) // 2, (k.shape[1] - ref.shape[1]) // 2
    np.testing.assert_allclose(k[cy:cy + ref.shape[0], cx:cx + ref.shape[1]], ref, rtol=1e-12, atol=1e-15)


def test_log_kernel_properties():
    k = kernel_from_source({"name": "log", "sigma": 1.5})
    assert abs(k.sum()) < 1e-12  # zero DC: flat regions give zero
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1, ::-1])
    c = k.shape[0] // 2
    assert k[c, c] == k.min() < 0
    x = np.full((9, 10), 3.0)
    out = run([{"correlate": {"kernel": {"name": "log", "sigma": 1.0}}}], x, "yx", (2, 3))
    assert np.abs(out).max() < 1e-10


def test_disk_is_normalised_footprint():
    import skimage.morphology as morph

    k = kernel_from_source({"name": "disk", "radius": 3})
    fp = morph.disk(3).astype(bool)
    assert np.array_equal(k > 0, fp) and abs(k.sum() - 1) < 1e-12


def test_named_kernel_errors():
    with pytest.raises(ValueError, match="did you mean 'gaussian'"):
        kernel_from_source({"name": "gausian", "sigma": 1})
    with pytest.raises(ValueError, match="needs 'name'"):
        kernel_from_source({"sigma": 1})
    with pytest.raises(ValueError, match="gaussian"):
        kernel_from_source({"name": "gaussian", "sigmaa": 1})
    with pytest.raises(ValueError, match="axis"):
        kernel_from_source({"name": "sobel", "axis": "z", "ndim": 2})


# --------------------------------------------------------------------------- sources


def test_inline_sources():
    assert kernel_from_source([[1, 2], [3, 4]]).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert kernel_from_source((1, 2, 3)).shape == (3,)
    assert kernel_from_source(2.5).tolist() == [2.5]
    a = np.arange(6.0).reshape(2, 3)
    k = kernel_from_source(a.T)  # a transposed view comes back as its own C-contiguous copy
    assert k.flags.c_contiguous and k.flags.owndata and np.array_equal(k, a.T)
    k = kernel_from_source(np.arange(4, dtype=np.int16))
    assert k.dtype == np.float64


@pytest.mark.parametrize("src,match", [
    ([[1, 2, 3], [4, 5]], "ragged"),
    ([[1, 2], [3, [4]]], "ragged"),
    ([["a", "b"]], "ragged or not numeric"),
    ([], "empty"),
    ([[]], "empty"),
    ([[1.0, float("nan")]], "NaN or infinite"),
    ([float("inf")], "NaN or infinite"),
    ({"x": 1}, "needs 'name'"),
    (None, "a kernel is"),
    (np.array(["a"]), "numeric"),
])
def test_bad_inline_kernels(src, match):
    with pytest.raises(ValueError, match=match):
        kernel_from_source(src)


def test_npy_sources(tmp_path):
    k = np.random.default_rng(2).standard_normal((3, 4))
    np.save(tmp_path / "k.npy", k)
    assert np.array_equal(kernel_from_source(str(tmp_path / "k.npy")), k)
    assert np.array_equal(kernel_from_source("k.npy", base_dir=tmp_path), k)
    np.save(tmp_path / "kt.npy", k.T)  # Fortran-ordered on disk
    got = kernel_from_source("kt.npy", base_dir=tmp_path)
    assert np.array_equal(got, k.T) and got.flags.c_contiguous
    with pytest.raises(ValueError, match="not found"):
        kernel_from_source("missing.npy", base_dir=tmp_path)
    with pytest.raises(ValueError, match=".npy"):
        kernel_from_source("k.txt", base_dir=tmp_path)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        kernel_from_source("obj.npy", base_dir=tmp_path)


def test_npy_kernel_through_a_spec_file(tmp_path):
    import yaml

    k = np.random.default_rng(3).standard_normal((2, 3, 3))
    (tmp_path / "kernels").mkdir()
    np.save(tmp_path / "kernels" / "k3.npy", k)
    steps = [{"correlate": {"kernel": "kernels/k3.npy", "mode": "wrap", "origin": [-1, 0, 1]}}]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(make_spec(steps)))
    p = convpipe.load(tmp_path / "spec.yaml")
    x = np.random.default_rng(4).standard_normal((5, 8, 7))
    import dask.array as da

    out = p.apply(da.from_array(x, chunks=(1, 3, 2)), axes="zyx").compute()
    ref, _ = oracle(steps, x, "zyx", base_dir=tmp_path)
    assert_conforms(out, ref, what=".npy kernel from the spec's folder")


# --------------------------------------------------------------------------- normalize


def test_normalize_none_sum_l1():
    k = np.array([[1.0, -2.0], [3.0, 4.0]])
    assert normalize(k, "none") is k
    np.testing.assert_allclose(normalize(k, "sum"), k / 6.0, rtol=1e-15)
    np.testing.assert_allclose(normalize(k, "l1"), k / 10.0, rtol=1e-15)
    assert normalize(k, "sum").flags.c_contiguous


@pytest.mark.parametrize("k", [[[1.0, -1.0]], [[1.0, -2.0, 1.0]], [[0.0, 0.0]], [[1e-20, -1e-20]]])
def test_normalize_sum_refuses_zero_sum(k):
    with pytest.raises(ValueError, match="sum"):
        normalize(np.array(k), "sum")


def test_normalize_l1_refuses_all_zero():
    with pytest.raises(ValueError, match="l1"):
        normalize(np.zeros((3, 3)), "l1")


@pytest.mark.parametrize("temperature", [0.1, 1.0, 3.0, 1e3])
def test_normalize_softmax(temperature):
    from scipy.special import softmax

    k = np.random.default_rng(5).standard_normal((3, 4)) * 5
    got = normalize(k, "softmax", temperature)
    np.testing.assert_allclose(got, softmax(k / temperature), rtol=1e-12)
    assert abs(got.sum() - 1) < 1e-12 and got.shape == k.shape


def test_normalize_softmax_is_overflow_safe():
    got = normalize(np.array([1000.0, 999.0, -1000.0]), "softmax")
    assert np.all(np.isfinite(got)) and abs(got.sum() - 1) < 1e-12 and got[0] > got[1] > got[2]


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_normalize_softmax_refuses_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        normalize(np.ones(3), "softmax", temperature)


def test_normalize_unknown():
    with pytest.raises(ValueError, match="normalize"):
        normalize(np.ones(3), "max")


@pytest.mark.parametrize("how,extra", [("sum", {}), ("l1", {}), ("softmax", {"temperature": 0.5}),
                                       ("softmax", {})])
def test_normalize_through_the_pipeline(how, extra):
    k = np.random.default_rng(6).standard_normal((3, 3)).round(3).tolist()
    x = np.random.default_rng(7).standard_normal((10, 11))
    for mode in ("reflect", "wrap", "constant"):
        check([{"correlate": {"kernel": k, "normalize": how, "mode": mode, **extra}}], x, "yx", (2, 3))
        check([{"convolve": {"kernel": k, "normalize": how, "mode": mode, **extra}}], x, "yx", (3, 2), None,
              "float32")


# --------------------------------------------------------------------------- separability


def test_separable_factors_rank_one():
    rng = np.random.default_rng(8)
    for shape in [(3,), (3, 4), (1, 5), (4, 1), (2, 3, 4), (1, 3, 3), (5, 1, 2)]:
        fs = [rng.standard_normal(s) for s in shape]
        k = fs[0]
        for f in fs[1:]:
            k = np.multiply.outer(k, f)
        got = separable_factors(k)
        assert got is not None and len(got) == len(shape), shape
        recon = got[0]
        for f in got[1:]:
            recon = np.multiply.outer(recon, f)
        np.testing.assert_allclose(recon, k, rtol=1e-12, atol=1e-14 * np.abs(k).max())


def test_separable_factors_rejects_rank_two_and_zero():
    assert separable_factors(np.array([[1.0, 2.0], [3.0, 4.0]])) is None
    assert separable_factors(np.eye(3)) is None
    assert separable_factors(np.zeros((3, 3))) is None
    k = np.outer([1.0, 2.0, 1.0], [1.0, 0.0, -1.0])
    k[0, 0] += 1e-6  # nearly, but not exactly, rank one
    assert separable_factors(k) is None
    k3 = np.zeros((2, 2, 2))
    k3[0, 0, 0] = k3[1, 1, 1] = 1.0
    assert separable_factors(k3) is None


def test_separable_one_d_is_a_copy():
    k = np.array([1.0, 2.0, 3.0])
    (f,) = separable_factors(k)
    assert np.array_equal(f, k) and f is not k


def _bound_op(name, **params):
    from convpipe.ops import registry

    cls = registry.get(name)
    return cls(cls.Params(**params), "yx")


def test_auto_method_choice():
    assert _bound_op("correlate", kernel=np.outer([1, 2, 1], [1, 0, -1]).tolist()).method() == "separable"
    assert _bound_op("correlate", kernel=[[1.0, 2.0], [3.0, 4.0]]).method() == "direct"
    big = np.random.default_rng(9).standard_normal((31, 31)).tolist()
    assert _bound_op("correlate", kernel=big).method() == "fft"
    assert _bound_op("correlate", kernel={"name": "gaussian", "sigma": 2}).method() == "separable"
    assert _bound_op("correlate", kernel={"name": "disk", "radius": 2}).method() == "direct"
    assert _bound_op("correlate", kernel=[[5.0]]).method() != "separable"  # 1x1: nothing to split


def test_separable_detection_keeps_results_exact():
    """A rank-one kernel run as separable, direct and fft gives the same correct answer."""
    k = np.outer([1.0, -2.0, 0.5], [3.0, 1.0, 0.0, -1.0]).tolist()
    x = np.random.default_rng(10).standard_normal((9, 13))
    for method in ("auto", "separable", "direct", "fft"):
        check([{"correlate": {"kernel": k, "method": method, "mode": "mirror"}}], x, "yx", (2, 5))


# --------------------------------------------------------------------------- errors through a spec


@pytest.mark.parametrize("step,match", [
    ({"correlate": {"kernel": [[1, 2, 3], [4, 5]]}}, "ragged"),
    ({"correlate": {"kernel": [[1.0, -1.0]], "normalize": "sum"}}, "sum"),
    ({"convolve": {"kernel": {"name": "laplace"}, "normalize": "sum"}}, "sum"),
    ({"correlate": {"kernel": [[1.0, 2.0], [3.0, 4.0]], "method": "separable"}}, "not separable"),
    ({"correlate": {"kernel": {"name": "sobell"}}}, "did you mean 'sobel'"),
    ({"correlate": {"kernel": [[[1.0]]], "axes": "yx"}}, "3-D kernel needs 3 axes"),
    ({"correlate": {"kernel": [[1.0, 2.0]], "normalize": "softmax", "temperature": 0}}, "temperature"),
    ({"correlate": {"kernel": "nope.npy"}}, "not found"),
    ({"correlate": {"kernel": [[1.0, 2.0, 3.0]], "origin": [0, 2]}}, "origin"),
])
def test_kernel_errors_in_a_spec(step, match):
    with pytest.raises(SpecError, match=match) as ei:
        p = convpipe.load(make_spec([step]))
        p.apply(np.zeros((6, 6)), axes="yx")
    assert "steps[0]" in str(ei.value)


def test_kernel_error_is_a_convpipe_error():
    with pytest.raises(ConvpipeError):
        convpipe.load(make_spec([{"correlate": {"kernel": [[1, 2], [3]]}}]))
