"""Orientation outputs lie in (-pi, pi] and are 0 where both derivatives are 0 (SPEC.md), on every engine.

The class: an exactly zero derivative is +0 from OpenCV and -0 from scipy (for a negative constant), and
arctan2 turns that sign into 0, pi or -pi. Flat images, constant regions beside edges, real images with
plateaus; sobel / prewitt / scharr orientation and the ``stats`` orientation histogram; the OpenCV and the
scipy engine; every mode; float32 and float64; chunkings that cut the planes.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from harness import check, make_spec

import convpipe
from convpipe.engines import cpu as cpu_engines
from convpipe.oracles import MODES, TABLES, edge_components

EDGES = ("sobel", "prewitt", "scharr")


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    step = np.zeros((12, 15))
    step[:, 7:] = 3.0  # constant regions left and right of a vertical edge
    step[8:, :] -= 1.5  # and a horizontal one: corners, T-junctions, flat quadrants
    blocks = np.kron(rng.integers(-3, 3, (3, 4)).astype(float), np.ones((5, 4)))  # plateaus of many levels
    return {
        "flat-negative": np.full((9, 11), -2.5),
        "flat-positive": np.full((9, 11), 0.75),
        "zeros": np.zeros((7, 8)),
        "step": step,
        "blocks": blocks,
    }


IMAGES = _images()


@pytest.fixture(params=["opencv", "scipy"])
def engine(request, monkeypatch):
    if request.param == "scipy":  # the same ops without OpenCV: scipy.ndimage's correlate1d everywhere
        monkeypatch.setattr(cpu_engines, "cv2", None)
    return request.param


def _orientation(op, x, mode, precision, chunks, dims="yx"):
    p = convpipe.load(make_spec([{op: {"output": "orientation", "mode": mode, "cval": 0.5}}], precision))
    return np.asarray(p.apply(da.from_array(x, chunks=chunks), axes=dims).compute())


def _zero_gradient(op, x, mode, dims="yx"):
    (dy, dx), _ = edge_components(x.astype(np.float64), dims, op, None, mode, 0.5)
    return (dy == 0) & (dx == 0)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", EDGES)
@pytest.mark.parametrize("image", list(IMAGES))
def test_orientation_range_and_zero_gradient(engine, image, op, mode, precision):
    x = IMAGES[image]
    for chunks in (x.shape, (4, 5)):
        out = _orientation(op, x, mode, precision, chunks)
        assert np.all(out > -np.pi) and np.all(out <= np.pi), (out.min(), out.max())
        zero = _zero_gradient(op, x, mode)
        assert not np.signbit(out[zero]).any() and np.all(out[zero] == 0), np.unique(out[zero])
        check([{op: {"output": "orientation", "mode": mode, "cval": 0.5}}], x, "yx", chunks, None, precision)


@pytest.mark.parametrize("op", EDGES)
def test_orientation_on_a_real_image_with_plateaus(engine, op):
    """camera (uint8): large saturated and flat areas give exactly zero gradients."""
    skimage_data = pytest.importorskip("skimage.data")
    x = skimage_data.camera()[::2, ::2]
    for precision in ("float32", "float64"):
        out = _orientation(op, x, "reflect", precision, (64, 96))
        zero = _zero_gradient(op, x, "reflect")
        assert zero.sum() > 100  # the case this test is about
        assert np.all(out[zero] == 0) and np.all(out > -np.pi) and np.all(out <= np.pi)
        check([{op: {"output": "orientation"}}], x, "yx", (64, 96), None, precision)


def test_orientation_on_the_branch_cut_is_pi():
    """A gradient pointing along -x with an exactly zero d/dy: pi, never -pi (whatever the sign of the 0)."""
    x = np.tile(np.arange(10.0)[::-1], (6, 1))  # decreasing along x, constant along y
    for neg in (False, True):
        xx = -x[:, ::-1] if neg else x  # the same direction from negative values (scipy's -0)
        out = _orientation("sobel", xx, "nearest", "float64", xx.shape)
        assert np.all(out == np.pi)


@pytest.mark.parametrize("weight", ["count", "magnitude"])
@pytest.mark.parametrize("image", ["flat-negative", "zeros", "step", "blocks"])
def test_stats_orientation_histogram_zero_gradient(tmp_path, image, weight):
    """stats' histogram: zero gradients count in the bin of 0 (weight count), never in the first or last."""
    import pyarrow.parquet as pq
    import zarr

    x = IMAGES[image]
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(4, 5), dtype=x.dtype)
    z[...] = x
    params = {"per": "all", "orientation_histogram": {"bins": 8, "weight": weight},
              "table": str(tmp_path / "s.parquet")}
    spec = make_spec([{"stats": params}], "float64", input={"url": str(tmp_path / "in.zarr")},
                     output={"url": str(tmp_path / "out.zarr")})
    convpipe.load(spec).run()
    t = pq.read_table(tmp_path / "s.parquet")
    got = np.array([t.column(f"orientation_{i}").to_numpy()[0] for i in range(8)])
    ref = TABLES["stats"](x, "yx", **params)
    want = np.array([ref[f"orientation_{i}"][0] for i in range(8)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if weight == "count" and image in ("flat-negative", "zeros"):
        assert got[4] == x.size and got.sum() == x.size  # [0, pi/4): the bin of 0
