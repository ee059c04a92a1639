"""The oracle module itself: where it spells out a scikit-image reference with numpy / scipy (so that verify
needs scikit-image only for blobs and match_template), it equals scikit-image; its axis-order rule is
SPEC's (transpose to tczyx, reference, transpose back)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from convpipe import oracles as O

skimage = pytest.importorskip("skimage")
import skimage.data  # noqa: E402
import skimage.exposure  # noqa: E402
import skimage.filters  # noqa: E402
import skimage.morphology  # noqa: E402

rng = np.random.default_rng(11)
IMAGES = {"random": rng.standard_normal((23, 30)), "camera": skimage.data.camera()[::8, ::6].astype(float) / 255}


@pytest.mark.parametrize("image", list(IMAGES))
@pytest.mark.parametrize("mode", O.MODES)
def test_difference_of_gaussians_is_skimages(image, mode):
    x = IMAGES[image]
    for lo, hi in ((1.0, None), ((0.7, 1.5), (2.0, 3.5))):
        got, _ = O.OPS["difference_of_gaussians"](x, "yx", low_sigma=dict(zip("yx", lo)) if isinstance(lo, tuple)
                                                  else lo, high_sigma=None if hi is None else dict(zip("yx", hi)),
                                                  mode=mode, cval=0.3, truncate=3.0)
        want = skimage.filters.difference_of_gaussians(x, lo, hi, mode=mode, cval=0.3, truncate=3.0)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("image", list(IMAGES))
def test_unsharp_mask_is_skimages(image):
    x = IMAGES[image]
    for radius, amount in ((1.0, 1.0), (2.5, 0.4)):
        got, _ = O.OPS["unsharp_mask"](x, "yx", radius=radius, amount=amount)
        want = skimage.filters.unsharp_mask(x, radius=radius, amount=amount, preserve_range=True)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("npad,high_pass,squared", list(itertools.product([0, 3], [True, False], [True, False])))
def test_butterworth_is_skimages(npad, high_pass, squared):
    for x in (IMAGES["camera"], rng.standard_normal((4, 17, 12))):
        got, _ = O.OPS["butterworth"](x, O.default_dims(x.ndim), cutoff_frequency_ratio=0.08, high_pass=high_pass,
                                      order=3.0, squared_butterworth=squared, npad=npad)
        want = np.stack([skimage.filters.butterworth(p, 0.08, high_pass, 3.0, squared_butterworth=squared,
                                                     npad=npad) for p in x.reshape((-1,) + x.shape[-2:])])
        np.testing.assert_allclose(got, want.reshape(x.shape), rtol=0, atol=1e-10)


@pytest.mark.parametrize("params", [{}, {"in_range": [0.2, 0.7]}, {"percentiles": [5, 90], "out_range": [-1, 3]},
                                    {"in_range": [0.5, 0.5]}])
def test_rescale_is_skimages(params):
    x = IMAGES["camera"]
    got, _ = O.OPS["rescale"](x, "yx", **params)
    if "percentiles" in params:
        rng_in = tuple(np.percentile(x, params["percentiles"]))
    else:
        rng_in = tuple(params.get("in_range", (x.min(), x.max())))
    want = skimage.exposure.rescale_intensity(x, in_range=rng_in, out_range=tuple(params.get("out_range", (0, 1))))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_named_kernels_are_skimages():
    for r in (1, 2, 4):
        np.testing.assert_array_equal(O.named_kernel("disk", radius=r) > 0, skimage.morphology.disk(r) > 0)
        np.testing.assert_array_equal(O.named_kernel("disk", radius=r, ndim=3) > 0, skimage.morphology.ball(r) > 0)
    for f, t, s in ((0.1, 0.0, 3.0), (0.25, 0.7, 2.0)):  # convpipe's default sigma is 0.56 / f, not skimage's
        want = np.real(skimage.filters.gabor_kernel(f, theta=t, sigma_x=s, sigma_y=s, offset=0.2))
        got = O.named_kernel("gabor", frequency=f, theta=t, sigma=s, offset=0.2)
        cy, cx = (got.shape[0] - want.shape[0]) // 2, (got.shape[1] - want.shape[1]) // 2  # skimage's grid
        np.testing.assert_allclose(got[cy:cy + want.shape[0], cx:cx + want.shape[1]], want, rtol=0, atol=1e-12)


def test_every_reference_follows_the_axis_letters():
    """An input stored as xzy: the reference is the canonical one transposed (SPEC.md: axis order)."""
    x = rng.standard_normal((3, 9, 11))  # z y x
    xs = np.transpose(x, (2, 0, 1))  # x z y
    cases = {"correlate": {"kernel": rng.standard_normal((2, 3)).tolist()},
             "sobel": {"output": "components"}, "scharr": {"output": "orientation"},
             "fft_filter": {"cutoff": 0.3, "axes": "zx"}, "moving_average": {"window": 3, "axis": "y"},
             "stochastic": {"kernel": [[1, 0, 2]], "normalize": "sum", "seed": 2},
             "filter_bank": {"kernels": [[[1, 2, 3]], [[1], [-1]]]}}
    for name, p in cases.items():
        ref, rd = O.OPS[name](x, "zyx", **p)
        got, gd = O.OPS[name](xs, "xzy", **p)
        assert gd == O.output_dims("xzy", rd)
        np.testing.assert_array_equal(got, O.transpose_to(ref, rd, gd))
