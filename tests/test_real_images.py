"""Real images (scikit-image's bundled data) through several ops, with odd chunkings, against the oracle.

Real images have flat regions, saturated areas and sharp edges that random noise lacks (exact ties for
the rank filters, exactly zero gradients). ``cells3d`` needs a download: skipped when it cannot be had.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from harness import check

# sqrt / log1p of negative values give NaN, in the oracle as in the pipeline
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

skimage_data = pytest.importorskip("skimage.data")


@functools.cache
def _cells3d():
    """cells3d (z, c, y, x) uint16, fetched over the network once per process; the reason when it fails."""
    try:
        return skimage_data.cells3d()
    except Exception as e:  # no network, no pooch, a bad cache: all mean "not here"
        return f"{type(e).__name__}: {str(e)[:200]}"


@functools.cache
def image(name: str) -> np.ndarray:
    if name == "hubble_gray":
        from skimage.color import rgb2gray

        return rgb2gray(skimage_data.hubble_deep_field())  # float64 in [0, 1]
    if name == "cells3d_nuclei":
        cells = _cells3d()
        if isinstance(cells, str):
            pytest.skip(f"cells3d is not available: {cells}")
        return np.ascontiguousarray(cells[:, 1, 64:192, 64:192])  # nuclei, a 60 x 128 x 128 crop
    return getattr(skimage_data, name)()


IMAGES_2D = {  # name: odd chunks (never dividing the shape), odd tile
    "camera": ((37, 53), None),
    "coins": ((29, 41), [58, 82]),
    "moon": ((100, 7), None),
    "hubble_gray": ((97, 131), [194, 262]),
}

OPS_2D = {
    "gaussian-reflect": [{"gaussian": {"sigma": 2.5}}],
    "gaussian-aniso-wrap": [{"gaussian": {"sigma": {"y": 1.0, "x": 4.0}, "mode": "wrap"}}],
    "sobel-nearest": [{"sobel": {"mode": "nearest"}}],
    "scharr-components": [{"scharr": {"output": "components", "mode": "mirror"}}],
    "median-mirror": [{"median": {"size": 5, "mode": "mirror"}}],
    "min-max-constant": [{"minimum": {"size": 4, "mode": "constant", "cval": 0.0}},
                         {"maximum": {"size": 4, "mode": "wrap"}}],
    "dog": [{"difference_of_gaussians": {"low_sigma": 1.0, "high_sigma": 3.0}}],
    "unsharp": [{"unsharp_mask": {"radius": 2.0, "amount": 1.5}}],
    "log-wrap": [{"gaussian_laplace": {"sigma": 1.5, "mode": "wrap"}}],
    "ggm-reflect": [{"gaussian_gradient_magnitude": {"sigma": 2.0}}],
    "chain-gauss-wrap>sobel-constant>uniform-nearest": [
        {"gaussian": {"sigma": 1.0, "mode": "wrap"}}, {"sobel": {"mode": "constant"}},
        {"uniform": {"size": 3, "mode": "nearest"}}],
    "correlate-gabor": [{"correlate": {"kernel": {"name": "gabor", "frequency": 0.2, "theta": 0.5, "sigma": 2.0},
                                       "mode": "reflect"}}],
    "convolve-emboss>clip": [{"convolve": {"kernel": {"name": "emboss"}, "mode": "mirror"}},
                             {"clip": {"min": 0.0, "max": 200.0}}],
    "diffusion-steps": [{"diffusion": {"steps": 5, "dt": 0.2, "mode": "nearest"}}, {"log1p": {}}],
}

# image x op pairs run by default; the rest (every pair) are slow
DEFAULT_PAIRS = {
    "camera": ["gaussian-reflect", "sobel-nearest", "median-mirror", "chain-gauss-wrap>sobel-constant>uniform-nearest",
               "scharr-components", "diffusion-steps"],
    "coins": ["dog", "unsharp", "min-max-constant", "correlate-gabor"],
    "moon": ["log-wrap", "gaussian-aniso-wrap", "convolve-emboss>clip"],
    "hubble_gray": ["ggm-reflect", "median-mirror"],
}


def _run(name, case, precision):
    x = image(name)
    chunks, tile = IMAGES_2D[name]
    check(OPS_2D[case], x, "yx", chunks, tile, precision)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("name,case", [(n, c) for n, cs in DEFAULT_PAIRS.items() for c in cs])
def test_real_image(name, case, precision):
    _run(name, case, precision)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("case", list(OPS_2D))
@pytest.mark.parametrize("name", list(IMAGES_2D))
def test_real_image_every_op(name, case, precision):
    _run(name, case, precision)


def test_real_image_whole_rows_and_columns():
    """1-pixel-thick chunks along one axis and whole extents along the other."""
    x = image("coins")
    check([{"gaussian": {"sigma": 2.0, "mode": "mirror"}}, {"laplace": {}}], x, "yx", (1, x.shape[1]), None,
          "float64")
    check([{"median": {"size": 3, "mode": "wrap"}}], x[:64, :64], "yx", (64, 1), None, "float32")


def test_hubble_rgb_per_channel():
    """An RGB image as a (c, y, x) stack: the op runs per channel plane."""
    rgb = np.moveaxis(skimage_data.hubble_deep_field()[:300, :360], -1, 0)
    check([{"gaussian": {"sigma": 1.5, "mode": "reflect"}}, {"sobel": {"mode": "reflect"}}], rgb, "cyx",
          (1, 77, 91), None, "float32")


CELLS_OPS = {
    "gaussian-3d": [{"gaussian": {"sigma": {"z": 1.0, "y": 2.0, "x": 2.0}, "mode": "nearest"}}],
    "sobel-3d": [{"sobel": {"axes": "zyx", "mode": "reflect"}}],
    "median-planes>dog": [{"median": {"size": 3, "mode": "mirror"}},
                          {"difference_of_gaussians": {"low_sigma": 1.0, "high_sigma": 2.0}}],
}


@pytest.mark.parametrize("case", list(CELLS_OPS))
def test_cells3d(case):
    x = image("cells3d_nuclei")
    check(CELLS_OPS[case], x, "zyx", (7, 45, 37), None, "float32")
