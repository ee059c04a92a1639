"""Spectral ops (fft_filter, butterworth, log_spectrum) and correlate with method fft vs their oracles.

Oracles run on the whole array in float64; tolerances are the FFT ones: 1e-4 (float32) / 1e-8 (float64)
relative to max(1, max|oracle|).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.data
from skimage.filters import butterworth as sk_butterworth

import convpipe
from convpipe.errors import SpecError

TOL = {"float32": 1e-4, "float64": 1e-8}
MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]


def run(steps, arr, axes, *, chunks, tile=None, precision="float64"):
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
                       "execution": {"precision": precision}})
    return p.apply(da.from_array(arr, chunks=chunks), axes=axes, tile=tile).compute()


def close(out, ref, precision):
    assert out.shape == ref.shape
    assert out.dtype == np.dtype(precision)
    err = np.max(np.abs(out.astype(np.float64) - ref))
    assert err <= TOL[precision] * max(1.0, float(np.max(np.abs(ref)))), err


# --------------------------------------------------------------------------- oracles (numpy.fft, full complex)


def radial(shape):
    r2 = 0.0
    for k, n in enumerate(shape):
        f = np.fft.fftfreq(n).reshape([-1 if j == k else 1 for j in range(len(shape))])
        r2 = r2 + (f / 0.5) ** 2
    return np.sqrt(r2)


def lowpass(r, c, shape, order):
    if shape == "ideal":
        return (r <= c).astype(float)
    if shape == "gaussian":
        return np.exp(-r ** 2 / (2 * c ** 2))
    return 1 / (1 + (r / c) ** (2 * order))


def fft_filter_oracle(x, nplane, kind, cutoff, shape="ideal", order=2.0):
    """numpy.fft.fftn of each plane (last ``nplane`` axes) x the mask, inverse, real part."""
    axes = tuple(range(x.ndim - nplane, x.ndim))
    r = radial(x.shape[-nplane:])
    if kind == "lowpass":
        m = lowpass(r, cutoff, shape, order)
    elif kind == "highpass":
        m = 1 - lowpass(r, cutoff, shape, order)
    else:
        m = lowpass(r, cutoff[1], shape, order) * (1 - lowpass(r, cutoff[0], shape, order))
    x = x.astype(np.float64)
    return np.real(np.fft.ifftn(np.fft.fftn(x, axes=axes) * m, axes=axes))


def log_spectrum_oracle(x, nplane):
    axes = tuple(range(x.ndim - nplane, x.ndim))
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fftn(x.astype(np.float64), axes=axes), axes=axes)))


@pytest.fixture(scope="module")
def stack():
    rng = np.random.default_rng(7)
    return rng.standard_normal((5, 37, 48)) * 3 + 1  # odd and even plane extents


@pytest.fixture(scope="module")
def camera():
    return skimage.data.camera().astype(np.float64) / 255.0


@pytest.fixture(scope="module")
def moon():
    return skimage.data.moon().astype(np.float64)


# --------------------------------------------------------------------------- fft_filter


@pytest.mark.parametrize("kind,cutoff", [("lowpass", 0.3), ("highpass", 0.25), ("bandpass", [0.1, 0.6]),
                                         ("lowpass", 1.0)])
@pytest.mark.parametrize("shape", ["ideal", "gaussian", "butterworth"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_fft_filter_stack(stack, kind, cutoff, shape, precision):
    ref = fft_filter_oracle(stack, 2, kind, cutoff, shape, order=3)
    step = {"fft_filter": {"kind": kind, "cutoff": cutoff, "shape": shape, "order": 3}}
    for chunks, tile in [((1, 16, 16), None), ((2, 37, 48), {"z": 2}), ((5, 10, 7), {"z": 3, "y": 20, "x": 14})]:
        close(run([step], stack, "zyx", chunks=chunks, tile=tile, precision=precision), ref, precision)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_fft_filter_camera(camera, precision):
    for kind, cutoff in [("lowpass", 0.2), ("highpass", 0.05), ("bandpass", [0.05, 0.3])]:
        ref = fft_filter_oracle(camera, 2, kind, cutoff, "butterworth", order=2)
        out = run([{"fft_filter": {"kind": kind, "cutoff": cutoff, "shape": "butterworth"}}], camera, "yx",
                  chunks=(128, 200), precision=precision)
        close(out, ref, precision)


def test_fft_filter_3d_axes_and_explain(stack):
    ref = fft_filter_oracle(stack, 3, "lowpass", 0.4, "gaussian")
    out = run([{"fft_filter": {"cutoff": 0.4, "shape": "gaussian", "axes": "zyx"}}], stack, "zyx",
              chunks=(2, 9, 9))
    close(out, ref, "float64")
    # a stack of planes: each task gets whole y and x, tiles only along z
    from convpipe.plan import ArrayInfo, make_plan

    p = convpipe.load({"convpipe": 1, "input": {"url": "u.zarr"},
                       "steps": [{"fft_filter": {"cutoff": 0.4}}]})
    plan = make_plan(p.spec.steps, ArrayInfo((16, 256, 256), np.dtype("uint16"), (4, 64, 64), "zyx"))
    pp = plan.passes[0]
    assert pp.full_axes == "yx" and pp.tile["y"] == 256 and pp.tile["x"] == 256 and not pp.halo


def test_fft_filter_tczyx_planes():
    rng = np.random.default_rng(3)
    x = rng.random((2, 2, 3, 20, 24))
    ref = fft_filter_oracle(x, 2, "highpass", 0.3, "ideal")
    out = run([{"fft_filter": {"kind": "highpass", "cutoff": 0.3}}], x, "tczyx", chunks=(1, 1, 2, 20, 24))
    close(out, ref, "float64")


@pytest.mark.parametrize("params,where", [
    ({"cutoff": 0}, "cutoff"), ({"cutoff": 1.5}, "cutoff"), ({"cutoff": -0.2}, "cutoff"),
    ({"kind": "bandpass", "cutoff": [0.5, 0.2]}, "cutoff"), ({"kind": "bandpass", "cutoff": [0.3, 0.3]}, "cutoff"),
    ({"kind": "bandpass", "cutoff": 0.3}, "cutoff"), ({"cutoff": [0.1, 0.2]}, "cutoff"),
    ({"cutoff": 0.3, "shape": "butterworth", "order": 0}, "order"), ({"cutoff": 0.3, "shape": "box"}, "shape"),
])
def test_fft_filter_validation(params, where):
    with pytest.raises(SpecError) as e:
        convpipe.load({"convpipe": 1, "input": {"url": "u.zarr"}, "steps": [{"fft_filter": params}]})
    assert f"fft_filter.{where}" in str(e.value)


def test_spectral_rejects_channel_axis():
    with pytest.raises(SpecError, match="channel"):
        convpipe.load({"convpipe": 1, "input": {"url": "u.zarr", "axes": "cyx"},
                       "steps": [{"log_spectrum": {"axes": "cyx"}}]})


# --------------------------------------------------------------------------- butterworth (scikit-image)


@pytest.mark.parametrize("params", [
    {},
    {"cutoff_frequency_ratio": 0.1, "high_pass": False, "order": 4},
    {"cutoff_frequency_ratio": 0.07, "high_pass": True, "order": 8, "squared_butterworth": False},
    {"cutoff_frequency_ratio": 0.2, "high_pass": False, "order": 1.5, "npad": 5},
    {"cutoff_frequency_ratio": 0.5, "high_pass": True, "order": 2, "npad": 32},
])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_butterworth_stack(stack, params, precision):
    kw = {"cutoff_frequency_ratio": 0.005, "high_pass": True, "order": 2.0} | params
    ref = np.stack([sk_butterworth(p, **kw) for p in stack])
    for chunks, tile in [((1, 16, 16), None), ((5, 37, 48), {"z": 2})]:
        close(run([{"butterworth": params}], stack, "zyx", chunks=chunks, tile=tile, precision=precision),
              ref, precision)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_butterworth_images(camera, moon, precision):
    for img in (camera, moon):
        for kw in ({"cutoff_frequency_ratio": 0.07, "high_pass": True, "order": 8},
                   {"cutoff_frequency_ratio": 0.02, "high_pass": False, "order": 3, "npad": 16}):
            ref = sk_butterworth(img, **kw)
            close(run([{"butterworth": kw}], img, "yx", chunks=(100, 512), precision=precision), ref, precision)


def test_butterworth_3d_matches_skimage_volume(stack):
    kw = {"cutoff_frequency_ratio": 0.15, "high_pass": False, "order": 3, "npad": 2}
    out = run([{"butterworth": kw | {"axes": "zyx"}}], stack, "zyx", chunks=(2, 10, 10))
    close(out, sk_butterworth(stack, **kw), "float64")


@pytest.mark.parametrize("params,where", [
    ({"cutoff_frequency_ratio": 0}, "cutoff_frequency_ratio"),
    ({"cutoff_frequency_ratio": 0.6}, "cutoff_frequency_ratio"),
    ({"order": 0}, "order"), ({"order": -1}, "order"), ({"npad": -1}, "npad"),
    ({"channel_axis": 0}, "channel_axis"),
])
def test_butterworth_validation(params, where):
    with pytest.raises(SpecError) as e:
        convpipe.load({"convpipe": 1, "input": {"url": "u.zarr"}, "steps": [{"butterworth": params}]})
    assert f"butterworth.{where}" in str(e.value)


# --------------------------------------------------------------------------- log_spectrum


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_log_spectrum(stack, camera, precision):
    close(run([{"log_spectrum": {}}], stack, "zyx", chunks=(2, 16, 16), precision=precision),
          log_spectrum_oracle(stack, 2), precision)
    close(run([{"log_spectrum": {"axes": "zyx"}}], stack, "zyx", chunks=(2, 16, 16), precision=precision),
          log_spectrum_oracle(stack, 3), precision)
    close(run([{"log_spectrum": {}}], camera, "yx", chunks=(64, 512), precision=precision),
          log_spectrum_oracle(camera, 2), precision)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2), (5, 6), (6, 5), (9, 11)])
def test_log_spectrum_small_shapes(shape):
    x = np.random.default_rng(1).standard_normal((3,) + shape)
    close(run([{"log_spectrum": {}}], x, "zyx", chunks=(1,) + shape), log_spectrum_oracle(x, 2), "float64")
    close(run([{"log_spectrum": {"axes": "zyx"}}], x, "zyx", chunks=(1,) + shape), log_spectrum_oracle(x, 3),
          "float64")


def test_spectral_in_a_chain(stack):
    """A spectral op fused after a local op and before a point op: the whole chain still matches."""
    g = ndi.gaussian_filter(stack, (0, 1.5, 1.5), mode="wrap")
    ref = np.abs(fft_filter_oracle(g, 2, "highpass", 0.2, "gaussian"))
    out = run([{"gaussian": {"sigma": 1.5, "mode": "wrap"}}, {"fft_filter": {"kind": "highpass", "cutoff": 0.2,
                                                                            "shape": "gaussian"}}, "abs"],
              stack, "zyx", chunks=(2, 8, 8))
    close(out, ref, "float64")


# --------------------------------------------------------------------------- correlate with method fft


@pytest.fixture(scope="module")
def kernel41():
    rng = np.random.default_rng(11)
    k = rng.random((41, 41)) + 0.5  # generic, non-separable, non-symmetric
    return k / k.sum()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_correlate_fft_41x41_all_modes(camera, kernel41, mode, precision):
    img = camera[100:230, 200:330]  # 130 x 130
    ref = ndi.correlate(img, kernel41, mode=mode, cval=0.25)
    step = {"correlate": {"kernel": kernel41.tolist(), "method": "fft", "mode": mode, "cval": 0.25}}
    # chunks smaller than the 20-voxel halo, wrap across many chunks, tiles of several chunks
    for chunks, tile in [((16, 16), None), ((50, 33), {"y": 100, "x": 66}), ((130, 130), None)]:
        close(run([step], img, "yx", chunks=chunks, tile=tile, precision=precision), ref, precision)


def test_correlate_fft_41x41_stack_and_origin(kernel41):
    rng = np.random.default_rng(5)
    x = rng.random((3, 70, 90))
    k = kernel41[:, :40]  # even width
    ref = ndi.correlate(x, k[None], mode="wrap", origin=(0, 3, -2))
    out = run([{"correlate": {"kernel": k.tolist(), "method": "fft", "mode": "wrap", "origin": [3, -2]}}], x,
              "zyx", chunks=(1, 32, 32))
    close(out, ref, "float64")
    refc = ndi.convolve(x, k[None], mode="mirror")
    outc = run([{"convolve": {"kernel": k.tolist(), "method": "fft", "mode": "mirror"}}], x, "zyx",
               chunks=(2, 25, 40))
    close(outc, refc, "float64")


# --------------------------------------------------------------------------- larger sizes (slow)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_correlate_fft_41x41_full_camera(camera, kernel41, mode):
    ref = ndi.correlate(camera, kernel41, mode=mode)
    step = {"correlate": {"kernel": kernel41.tolist(), "method": "fft", "mode": mode}}
    for chunks, tile in [((64, 64), {"y": 128, "x": 192}), ((512, 512), None)]:
        for precision in ("float32", "float64"):
            close(run([step], camera, "yx", chunks=chunks, tile=tile, precision=precision), ref, precision)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_spectral_large_stack(precision):
    rng = np.random.default_rng(9)
    x = rng.random((4, 1024, 768))
    for step, ref in [
        ({"fft_filter": {"kind": "bandpass", "cutoff": [0.05, 0.4], "shape": "gaussian"}},
         fft_filter_oracle(x, 2, "bandpass", [0.05, 0.4], "gaussian")),
        ({"butterworth": {"cutoff_frequency_ratio": 0.05, "npad": 8}},
         np.stack([sk_butterworth(p, 0.05, npad=8) for p in x])),
        ({"log_spectrum": {}}, log_spectrum_oracle(x, 2)),
    ]:
        close(run([step], x, "zyx", chunks=(1, 256, 256), tile={"z": 2}, precision=precision), ref, precision)


def _photographs(kind: str) -> np.ndarray:
    if kind == "uint8-crop":
        h, w = skimage.data.coins().shape
        return np.stack([skimage.data.camera()[:h, :w], skimage.data.moon()[:h, :w], skimage.data.coins()])
    from skimage.transform import resize

    coins = resize(skimage.data.coins(), (512, 512), preserve_range=True)
    return np.stack([skimage.data.camera(), skimage.data.moon(), coins]).astype(np.float32)


@pytest.mark.parametrize("kind", ["uint8-crop", "float32-resized"])
def test_log_spectrum_real_photographs_float32(kind):
    """camera, moon and coins as one stack (precision auto: float32). A float32 FFT's error is relative to the
    plane's largest coefficient and log1p shows it at the small ones: 0.0033 on the resized stack against
    1e-4 * max|oracle| = 0.0017. log_spectrum takes its FFT in float64."""
    x = _photographs(kind)
    out = run([{"log_spectrum": {}}], x, "zyx", chunks=(1, 128, 128), precision="auto")
    assert out.dtype == np.float32
    ref = log_spectrum_oracle(x, 2)
    err = np.max(np.abs(out.astype(np.float64) - ref))
    assert err <= 1e-4 * max(1.0, float(np.max(np.abs(ref)))), err
    assert err <= 1e-6 * float(np.max(np.abs(ref)))  # with room to spare: the float64 FFT, rounded once
