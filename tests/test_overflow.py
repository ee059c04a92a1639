"""Overflow of the compute dtype (issue 13, item 6; SPEC.md "Axes, boundaries, exactness").

A finite input whose result overflows the compute dtype is an error (exit 2) naming the step and
``execution.precision: float64``, never a silent NaN/inf. Where only an intermediate of the engine overflowed
(OpenCV adds the two taps of a symmetric kernel before weighting them: 3e38 + 3e38 = inf), the op is computed
again in float64 and the result, which fits, is kept. Ops that leave their domain (sqrt of a negative value,
log1p of a value <= -1) give numpy's NaN / -inf without an error; zscore of a constant is 0.
"""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import convpipe
from convpipe.errors import ExecutionError

BIG = np.float32(3e38)


def pipeline(steps, precision="auto"):
    return convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
                          "execution": {"precision": precision}})


def apply(steps, x, chunks=(16, 16), precision="auto", axes=None):
    return np.asarray(pipeline(steps, precision).apply(da.from_array(x, chunks=chunks), axes=axes).compute())


def sobel_mag(x):
    x = np.asarray(x, np.float64)
    return np.hypot(ndi.sobel(x, axis=0), ndi.sobel(x, axis=1))


def near_max(shape=(40, 48), seed=0):
    """float32 values near 3e38 whose signs alternate at random: any derivative of them overflows float32."""
    rng = np.random.default_rng(seed)
    return (np.where(rng.random(shape) > 0.5, 1.0, -1.0) * (2.0 + rng.random(shape)) * 1e38).astype(np.float32)


def within32(out, ref):
    assert np.isfinite(out).all()
    assert np.max(np.abs(out - ref)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))


# --------------------------------------------------------------------------- what fits is computed, exactly


def test_issue_example_gaussian_then_sobel_near_3e38_is_exact():
    """The issue's case: float32 data near 3e38 -> gaussian -> sobel was NaN everywhere with exit 0. The float64
    reference is finite and fits float32: now that is the result."""
    x = (2e38 + 1e38 * np.random.default_rng(1).random((40, 48))).astype(np.float32)
    ref = sobel_mag(ndi.gaussian_filter(x.astype(np.float64), 1.0))
    for chunks in [(40, 48), (16, 16), (7, 9)]:
        out = apply([{"gaussian": {"sigma": 1}}, {"sobel": {}}], x, chunks)
        assert out.dtype == np.float32
        within32(out, ref)


@pytest.mark.parametrize("steps", [
    [{"gaussian": {"sigma": 1.5}}], [{"uniform": {"size": 3}}], [{"correlate": {"kernel": [[1, 2, 1]],
                                                                              "normalize": "sum"}}],
    [{"gaussian": {"sigma": 1.0}}, {"gaussian": {"sigma": 1.0}}],  # merged into one composed kernel
], ids=["gaussian", "uniform", "correlate-121", "merged"])
def test_averages_of_huge_values_do_not_overflow(steps):
    x = np.full((24, 30), BIG, dtype=np.float32)
    x[::3] = np.float32(2.5e38)
    from convpipe.oracles import oracle

    ref, _ = oracle(steps, x.astype(np.float64), "yx")
    within32(apply(steps, x), ref)


# --------------------------------------------------------------------------- what does not fit is an error


@pytest.mark.parametrize("steps,culprit", [
    ([{"sobel": {}}], "steps[0].sobel"),
    ([{"gaussian": {"sigma": 0.5}}, {"laplace": {}}], "steps[1].laplace"),
    ([{"scale": {"factor": 10.0}}], "steps[0].scale"),
    ([{"abs": {}}, {"scale": {"factor": 4.0}}, {"gaussian": {"sigma": 1}}], "steps[1].scale"),
    # an op that turns inf into finite values follows the overflow: still an error, at the overflow
    ([{"scale": {"factor": 10.0}}, {"threshold": {"value": 0.0}}], "steps[0].scale"),
    ([{"scale": {"factor": 10.0}}, {"astype": {"dtype": "int16"}}], "steps[0].scale"),
    # sqrt of an overflowed inf is inf: not a domain error of sqrt's
    ([{"abs": {}}, {"scale": {"factor": 10.0}}, {"sqrt": {}}], "steps[1].scale"),
    ([{"sobel": {"output": "orientation"}}], None),  # computed in float64: the angles fit
    ([{"sobel": {"output": "components"}}], "steps[0].sobel"),
    ([{"correlate": {"kernel": [[0, 3, 0], [3, 3, 3], [0, 3, 0]], "method": "direct"}}], "steps[0].correlate"),
    ([{"correlate": {"kernel": np.full((13, 13), 2.0).tolist()}}], "steps[0].correlate"),  # FFT
    ([{"fft_filter": {"kind": "highpass", "cutoff": 0.2}}], "steps[0].fft_filter"),
    ([{"log_spectrum": {}}], None),  # its FFT is float64: |X| ~ 1e41 fits after log1p
    ([{"moving_average": {"axis": "y", "window": 3}}, {"scale": {"factor": 8.0}}], "steps[1].scale"),
    ([{"diffusion": {"steps": 2, "dt": 0.2}}], None),  # u + dt * laplace(u) stays within 3.4e38 here
    ([{"diffusion": {"steps": 2, "dt": 0.2}}, {"scale": {"factor": 3}}], "steps[1].scale"),
    ([{"rescale": {"in_range": [0, 1], "out_range": [0, 1e38]}}, {"scale": {"factor": 10.0}}], "steps[1].scale"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_overflow_is_an_error_naming_the_step(steps, culprit):
    """The oracle decides: the first step whose float64 result does not fit float32 is named; when every step's
    result fits, the float32 run gives the float64 result (rounded)."""
    x = near_max()
    first = None
    for k in range(1, len(steps) + 1):
        ref = apply(steps[:k], x, precision="float64")
        if np.max(np.abs(ref)) > np.finfo(np.float32).max:
            first = f"steps[{k - 1}].{next(iter(steps[k - 1]))}"
            break
    assert first == culprit  # the case list says which overflow (keeps this test from passing vacuously)
    if culprit is None:
        out = apply(steps, x)
        assert np.isfinite(out).all()
        assert np.max(np.abs(out - ref)) <= 1e-4 * max(1.0, float(np.max(np.abs(ref)))) or "orientation" in str(steps)
        return
    with pytest.raises(ExecutionError) as e:
        apply(steps, x)
    msg = str(e.value)
    assert msg.startswith(culprit + ":") and "overflows float32" in msg and "execution.precision: float64" in msg
    assert np.isfinite(apply(steps, x, precision="float64")).all()  # what the message suggests works


def test_sobel_orientation_of_overflowing_components_is_the_float64_angle():
    x = near_max()
    x64 = x.astype(np.float64)
    ref = np.arctan2(ndi.sobel(x64, axis=0), ndi.sobel(x64, axis=1))
    out = apply([{"sobel": {"output": "orientation"}}], x)
    d = np.angle(np.exp(1j * (out.astype(np.float64) - ref)))
    assert np.max(np.abs(d)) <= 1e-5 * np.pi


def test_overflow_before_a_global_op_fails_in_its_statistics_pass():
    with pytest.raises(ExecutionError, match=r"steps\[0\]\.scale: .*execution\.precision: float64"):
        apply([{"scale": {"factor": 10.0}}, {"zscore": {}}], near_max())


def test_overflow_in_float64_says_float64_cannot_hold_it():
    x = np.ones((1200, 3, 4))
    with pytest.raises(ExecutionError, match=r"steps\[0\]\.autoregressive: the result overflows float64.*"
                                             r"beyond what float64 can hold"):
        apply([{"autoregressive": {"axis": "z", "coefficients": [2.0]}}], x, chunks=(1200, 3, 4), axes="zyx")


def test_output_dtype_narrower_than_the_values_is_an_error():
    x = np.full((8, 8), 1e5, dtype=np.float32)
    p = convpipe.load({"convpipe": 1, "input": {"url": "u.zarr"}, "output": {"url": "o.zarr", "dtype": "float16"},
                       "steps": [{"abs": {}}]})
    with pytest.raises(ExecutionError, match="output.dtype float16"):
        p.apply(x).compute()


def test_astype_to_a_narrow_float_names_the_type():
    with pytest.raises(ExecutionError, match=r"steps\[1\]\.astype: the values exceed what float16 can hold"):
        apply([{"abs": {}}, {"astype": {"dtype": "float16"}}], np.full((8, 8), 1e5, np.float32), (4, 4))


def test_apply_raises_when_computed_not_before():
    y = pipeline([{"sobel": {}}]).apply(near_max())  # building the graph reads nothing
    with pytest.raises(ExecutionError, match="steps.0..sobel"):
        y.compute()


# --------------------------------------------------------------------------- legitimate NaN / inf


def test_domain_errors_follow_numpy_without_an_error():
    x = np.array([[-1.0, -2.0, 0.5, 4.0], [-0.5, 1.0, -3.0, 9.0]], dtype=np.float32)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(apply([{"sqrt": {}}], x, (2, 2)), np.sqrt(x))
        np.testing.assert_array_equal(apply([{"log1p": {}}], x, (2, 2)), np.log1p(x))
        # and what follows a domain error runs on, NaN staying within its footprint
        y = np.random.default_rng(2).random((20, 24)).astype(np.float32)
        y[10, 12] = -1.0
        out = apply([{"sqrt": {}}, {"gaussian": {"sigma": 0.5}}], y, (8, 8))
        ref = ndi.gaussian_filter(np.sqrt(y.astype(np.float64)), 0.5)
        assert np.array_equal(np.isnan(out), np.isnan(ref)) and np.isnan(out).sum() == 25  # the 5x5 footprint
    np.testing.assert_array_equal(apply([{"zscore": {}}], np.full((6, 6), 7.0, np.float32)), 0.0)


def test_nan_input_is_never_an_overflow():
    x = near_max()
    x[3, 4] = np.nan
    out = apply([{"gaussian": {"sigma": 1}}], x)  # the user's NaN: no check, no error
    assert np.isnan(out[3, 4]) and np.isfinite(out[20:, 20:]).all()


# --------------------------------------------------------------------------- the command line


def test_cli_exit_2_one_line_output_incomplete(tmp_path):
    zarr.create_array(str(tmp_path / "in.zarr"), shape=(40, 48), chunks=(16, 16), dtype="float32")[...] = near_max()
    (tmp_path / "spec.yaml").write_text(
        "convpipe: 1\ninput: {url: in.zarr}\noutput: {url: out.zarr}\nsteps:\n  - gaussian: {sigma: 0.5}\n  - sobel: {}\n")
    r = subprocess.run([sys.executable, "-m", "convpipe", "run", str(tmp_path / "spec.yaml")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and "RuntimeWarning" not in r.stderr
    assert any("steps[1].sobel" in ln and "execution.precision: float64" in ln for ln in lines), r.stderr
    assert zarr.open_array(str(tmp_path / "out.zarr")).attrs["convpipe"]["complete"] is False
