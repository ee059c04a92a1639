"""Feature ops against their oracles: peaks, filter_bank, blobs (skimage blob_log), match_template.

Every oracle here is scipy / scikit-image on the whole array in float64; nothing is shared with convpipe.
Tables must equal the oracle's set of rows exactly; images must agree within the contract's tolerance.
Tiles are much smaller than the images, and several cases put peaks / blobs / matches on tile borders.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.ndimage as ndi
import zarr

import convpipe
from convpipe.errors import ConvpipeError

pytest.importorskip("skimage")
import skimage.color
import skimage.data
import skimage.feature

# --------------------------------------------------------------------------- helpers


def run(tmp: Path, x: np.ndarray, steps: list[dict], tile, *, chunks=None, precision="float64",
        axes: str | None = None, name: str = "t"):
    """Write ``x`` to Zarr, run ``steps``, return (image, {step path: table as dict of numpy columns})."""
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    ch = chunks or (list(tile.values()) if isinstance(tile, dict) and len(tile) == x.ndim else tile)
    z = zarr.create_array(str(d / "in.zarr"), shape=x.shape, chunks=tuple(ch), dtype=x.dtype, overwrite=True)
    z[...] = x
    inp = {"url": str(d / "in.zarr")}
    if axes:
        inp["axes"] = axes
    steps = [{op: dict(prm, table=str(d / prm["table"])) if prm.get("table") else prm for op, prm in st.items()}
             for st in steps]  # tables next to the data, never in the working directory
    spec = {"convpipe": 1, "input": inp, "output": {"url": str(d / "out.zarr"), "overwrite": True},
            "steps": steps, "execution": {"tile": tile, "precision": precision}}
    res = convpipe.load(spec).run()
    tables = {}
    for k, v in res.outputs.items():
        if k != "image":
            t = pq.read_table(v["table"])
            assert t.num_rows == v["rows"]
            tables[k] = {c: t.column(c).to_numpy() for c in t.column_names}
    return zarr.open_array(str(d / "out.zarr"), mode="r")[...], tables


def table_of(tables: dict, op: str) -> dict:
    (key,) = [k for k in tables if k.endswith("." + op)]
    return tables[key]


def rowset(cols: dict, names: list[str]) -> set:
    return set(zip(*[cols[n].tolist() for n in names]))


def assert_close(out, ref, tol):
    err = float(np.max(np.abs(np.asarray(out, np.float64) - ref))) if np.size(ref) else 0.0
    assert err <= tol * max(1.0, float(np.max(np.abs(ref)))), err


def coins() -> np.ndarray:
    return skimage.data.coins().astype(np.float64) / 255.0


def hubble_gray() -> np.ndarray:
    return skimage.color.rgb2gray(skimage.data.hubble_deep_field())


def camera() -> np.ndarray:
    return skimage.data.camera().astype(np.float64)


# --------------------------------------------------------------------------- peaks


def peaks_oracle(x: np.ndarray, dims: str, on: str, radius: int, threshold: float) -> set:
    size = [2 * radius + 1 if a in on else 1 for a in dims]
    mx = ndi.maximum_filter(np.asarray(x, np.float64), size=size, mode="nearest")
    hit = (x == mx) & (x > threshold)
    idx = np.nonzero(hit)
    return set(zip(*[i.tolist() for i in idx], np.asarray(x, np.float64)[hit].tolist()))


@pytest.mark.parametrize("tile", [(7, 9), (16, 16), (33, 20), (1, 50), (60, 70)])
@pytest.mark.parametrize("radius", [1, 3])
def test_peaks_random_plateaus_many_tilings(tmp_path, tile, radius):
    rng = np.random.default_rng(1)
    x = np.round(rng.random((60, 70)) * 6) / 6  # 7 levels: plenty of ties and plateaus
    _, tb = run(tmp_path, x, [{"peaks": {"radius": radius, "threshold": 0.2, "table": "p.parquet"}}],
                list(tile), chunks=[7, 9])
    cols = table_of(tb, "peaks")
    got = rowset(cols, ["y", "x", "value"])
    assert len(got) == len(cols["y"])  # no row twice
    assert got == peaks_oracle(x, "yx", "yx", radius, 0.2)


def test_peaks_plateaus_and_peaks_on_tile_borders(tmp_path):
    x = np.zeros((48, 48))
    x[15:17, 15:17] = 5.0      # a 2x2 plateau straddling the corner of four 16x16 tiles
    x[31, 20] = 4.0            # on the last row of a tile
    x[32, 40] = 4.0            # on the first row of the next tile
    x[0, 0] = 3.0              # array corner
    x[47, 16] = 3.0            # last row, first column of a tile
    x[20, 31:34] = 2.5         # a 1x3 ridge across a vertical tile border
    x[40:44, 0] = 2.0          # plateau along the array edge
    x[8, 8] = x[8, 10] = 1.5   # two equal peaks within each other's window: both count
    for radius in (1, 2, 4):
        _, tb = run(tmp_path, x, [{"peaks": {"radius": radius, "threshold": 0.5, "table": "p.parquet"}}],
                    [16, 16], chunks=[8, 8], name=f"r{radius}")
        got = rowset(table_of(tb, "peaks"), ["y", "x", "value"])
        assert got == peaks_oracle(x, "yx", "yx", radius, 0.5)
        assert (15, 15, 5.0) in got and (16, 16, 5.0) in got and (31, 20, 4.0) in got


def test_peaks_real_image_uint8_plateaus(tmp_path):
    img = skimage.data.coins()  # uint8: large flat maxima
    _, tb = run(tmp_path, img, [{"peaks": {"radius": 2, "threshold": 150, "table": "p.parquet"}}], [40, 56],
                chunks=[20, 28])
    got = rowset(table_of(tb, "peaks"), ["y", "x", "value"])
    ref = peaks_oracle(img.astype(np.float64), "yx", "yx", 2, 150)
    assert got == ref and len(ref) > 50


def test_peaks_3d_and_yx_on_zyx(tmp_path):
    rng = np.random.default_rng(2)
    x = np.round(rng.random((9, 30, 34)) * 8) / 8
    _, tb = run(tmp_path, x, [{"peaks": {"radius": 1, "axes": "zyx", "threshold": 0.5, "table": "p.parquet"}}],
                [4, 11, 8], name="vol")
    assert rowset(table_of(tb, "peaks"), ["z", "y", "x", "value"]) == peaks_oracle(x, "zyx", "zyx", 1, 0.5)
    _, tb = run(tmp_path, x, [{"peaks": {"radius": 2, "threshold": 0.5, "table": "p.parquet"}}],
                [2, 7, 13], name="planes")
    assert rowset(table_of(tb, "peaks"), ["z", "y", "x", "value"]) == peaks_oracle(x, "zyx", "yx", 2, 0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_peaks_seams_between_runs(tmp_path, seed):
    """A later wrap filter makes the engine gather several runs into one block; with a large radius the seam
    between two padded runs carries coordinate labels inside the tile's core: no row may come from there."""
    x = np.random.default_rng(seed).random((4, 30))
    _, tb = run(tmp_path, x, [{"peaks": {"radius": 19, "axes": "x", "threshold": 0.0, "table": "p.parquet"}},
                              {"uniform": {"size": {"x": 5}, "mode": "wrap"}}], [4, 10])
    assert rowset(table_of(tb, "peaks"), ["y", "x", "value"]) == peaks_oracle(x, "yx", "x", 19, 0.0)


def test_peaks_after_a_filter_and_image_passes_through(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.random((50, 41))
    out, tb = run(tmp_path, x, [{"uniform": {"size": 3}},
                                {"peaks": {"radius": 2, "threshold": 0.55, "table": "p.parquet"}}], [16, 16])
    ref = ndi.uniform_filter(x, 3)
    assert_close(out, ref, 1e-10)
    got = rowset(table_of(tb, "peaks"), ["y", "x"])
    want = {k[:2] for k in peaks_oracle(ref, "yx", "yx", 2, 0.55)}
    assert got == want


# --------------------------------------------------------------------------- filter_bank


def gabor_oracle(frequency, theta, sigma=None, radius=None, offset=0.0):
    """The real part of skimage.filters.gabor_kernel on a square grid of radius ceil(3 sigma)."""
    sigma = 0.56 / frequency if sigma is None else sigma
    r = math.ceil(3 * sigma) if radius is None else radius
    y, x = np.mgrid[-r:r + 1, -r:r + 1].astype(float)
    rotx = x * np.cos(theta) + y * np.sin(theta)
    roty = -x * np.sin(theta) + y * np.cos(theta)
    g = np.exp(-0.5 * (rotx ** 2 + roty ** 2) / sigma ** 2) / (2 * np.pi * sigma ** 2)
    return g * np.cos(2 * np.pi * frequency * rotx + offset)


def bank_oracle(x, kernels, mode="reflect", cval=0.0):
    """Per plane (last two axes), a c axis in front of them (``zyx`` -> ``czyx``; ``yx`` -> ``cyx``)."""
    outs = []
    for k in kernels:
        planes = x.reshape((-1,) + x.shape[-2:])
        outs.append(np.stack([ndi.correlate(p, k, mode=mode, cval=cval) for p in planes]).reshape(x.shape))
    return np.stack(outs, axis=0)


KERNELS = [
    [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    [[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
    np.random.default_rng(5).standard_normal((4, 7)).round(3).tolist(),  # even size: off-centre halo
    [[2.0]],
]


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "wrap", "constant"])
def test_filter_bank_kernels_every_mode_on_a_stack(tmp_path, mode):
    rng = np.random.default_rng(4)
    x = rng.random((3, 37, 45))
    out, _ = run(tmp_path, x, [{"filter_bank": {"kernels": KERNELS, "mode": mode, "cval": 0.7}}],
                 {"z": 2, "y": 8, "x": 16}, chunks=[2, 8, 16])
    ref = bank_oracle(x, [np.array(k, float) for k in KERNELS], mode, 0.7)
    assert out.shape == (4, 3, 37, 45)
    assert_close(out, ref, 1e-10)


def test_filter_bank_named_and_npy_kernels(tmp_path):
    k = np.random.default_rng(6).random((9, 5))
    np.save(tmp_path / "k.npy", k)
    g = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2)
    g2 = np.outer(g / g.sum(), g / g.sum())
    img = camera()[100:300, 150:330]
    out, _ = run(tmp_path, img, [{"filter_bank": {"kernels": [str(tmp_path / "k.npy"), {"name": "gaussian", "sigma": 2},
                                                              {"name": "sobel", "axis": "x"}]}}],
                 {"y": 32, "x": 48})
    sob = np.outer([1.0, 2, 1], [-1.0, 0, 1])
    assert_close(out, bank_oracle(img, [k, g2, sob]), 1e-10)


def test_filter_bank_gabor_on_camera_float32(tmp_path):
    img = camera()
    spec = {"orientations": 4, "frequencies": [0.15, 0.3], "sigma": 2.5}
    out, _ = run(tmp_path, img, [{"filter_bank": {"gabor": spec}}], {"y": 96, "x": 128}, precision="float32")
    ks = [gabor_oracle(f, t, 2.5) for f in (0.15, 0.3) for t in np.arange(4) * np.pi / 4]
    assert out.shape == (8, 512, 512) and out.dtype == np.float32
    assert_close(out, bank_oracle(img, ks), 1e-5)


def test_filter_bank_apply_api_and_errors():
    rng = np.random.default_rng(7)
    x = rng.random((2, 40, 40))
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"},
                       "steps": [{"filter_bank": {"gabor": {"orientations": [0.0, 1.0], "frequencies": 0.2}}}],
                       "execution": {"precision": "float64"}})
    out = p.apply(x, axes="zyx", tile={"z": 1, "y": 16, "x": 16}).compute()
    ks = [gabor_oracle(0.2, t) for t in (0.0, 1.0)]
    assert_close(out, bank_oracle(x, ks), 1e-10)
    for bad in ({"kernels": [[1, 2]], "gabor": {"orientations": 2}}, {}, {"kernels": []},
                {"kernels": [[[1]], [[[1]]]]}, {"gabor": {"orientations": 0}}):
        with pytest.raises(ConvpipeError):
            convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"},
                           "steps": [{"filter_bank": bad}]}).apply(x, axes="zyx")


# --------------------------------------------------------------------------- blobs


def blobs_oracle(x: np.ndarray, dims: str, on: str, **params) -> set:
    """skimage.feature.blob_log on every sub-array over ``on``; rows (all axes..., sigma)."""
    x = np.asarray(x, np.float64)
    idx = [dims.index(a) for a in on]
    moved = np.moveaxis(x, idx, list(range(x.ndim - len(on), x.ndim)))
    rows = set()
    for lead in np.ndindex(*moved.shape[: x.ndim - len(on)]):
        for b in skimage.feature.blob_log(moved[lead], **params):
            coords = dict(zip([a for a in dims if a not in on], lead))
            coords.update({a: round(v) for a, v in zip(on, b[:-1])})
            rows.add(tuple(int(coords[a]) for a in dims) + (float(b[-1]),))
    return rows


def blob_rows(tables) -> tuple[set, dict]:
    cols = table_of(tables, "blobs")
    names = [c for c in cols if c != "sigma"] + ["sigma"]
    rows = rowset(cols, names)
    assert len(rows) == len(cols["sigma"])
    return rows, cols


BLOB_CASES = [
    ({"min_sigma": 2, "max_sigma": 8, "num_sigma": 5, "threshold": 0.05}, [64, 64]),
    ({"min_sigma": 1, "max_sigma": 10, "num_sigma": 10, "threshold": 0.02}, [48, 80]),  # order-dependent pruning
    ({"min_sigma": 3, "max_sigma": 12, "num_sigma": 4, "threshold": 0.03, "log_scale": True, "exclude_border": 5}, [50, 50]),
    ({"min_sigma": 2, "max_sigma": 8, "num_sigma": 5, "threshold": 0.02, "threshold_rel": 0.1, "exclude_border": 7},
     [64, 32]),
    ({"min_sigma": 1.5, "max_sigma": 6, "num_sigma": 7, "threshold": 0.04, "overlap": 0.1}, [32, 100]),
    ({"min_sigma": 4, "max_sigma": 4, "num_sigma": 1, "threshold": 0.01, "overlap": 1.0}, [40, 40]),
]


@pytest.mark.parametrize("params,tile", BLOB_CASES)
def test_blobs_coins_equal_blob_log(tmp_path, params, tile):
    img = coins()
    _, tb = run(tmp_path, img, [{"blobs": dict(params, table="b.parquet")}], tile)
    got, cols = blob_rows(tb)
    ref = blobs_oracle(img, "yx", "yx", **params)
    assert got == ref and len(ref) > 20
    assert cols["y"].dtype == np.int64 and cols["sigma"].dtype == np.float64
    assert set(cols) == {"y", "x", "sigma"}


def test_blobs_hubble_crop_equal_blob_log(tmp_path):
    img = hubble_gray()[200:500, 300:650]
    params = {"max_sigma": 12, "num_sigma": 6, "threshold": 0.05}
    _, tb = run(tmp_path, img, [{"blobs": dict(params, table="b.parquet")}], [64, 64])
    got, _ = blob_rows(tb)
    assert got == blobs_oracle(img, "yx", "yx", **params)


@pytest.mark.slow
def test_blobs_hubble_skimage_docs_example(tmp_path):
    img = hubble_gray()
    params = {"max_sigma": 30, "num_sigma": 10, "threshold": 0.1}
    _, tb = run(tmp_path, img, [{"blobs": dict(params, table="b.parquet")}], [128, 128])
    got, _ = blob_rows(tb)
    ref = blobs_oracle(img, "yx", "yx", **params)
    assert got == ref and len(ref) > 1000


def synthetic_spots(shape, centres, sigmas, amps, noise=0.0, seed=0):
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    x = np.zeros(shape)
    for c, s, a in zip(centres, sigmas, amps):
        r2 = sum((g - ci) ** 2 for g, ci in zip(grids, c))
        x += a * np.exp(-r2 / (2 * s * s))
    if noise:
        x += np.random.default_rng(seed).normal(0, noise, shape)
    return x


def test_blobs_on_tile_borders_and_overlapping_across_tiles(tmp_path):
    # spots centred on tile borders (multiples of 32), pairs that overlap across a border, one at a corner
    centres = [(32, 32), (31, 64), (64, 50), (64, 58), (96, 96), (0, 0), (127, 90), (40, 31), (40, 35),
               (100, 20), (104, 24)]
    sigmas = [3, 2, 4, 2.5, 5, 3, 2, 3, 3, 4, 3]
    x = synthetic_spots((128, 128), centres, sigmas, [1.0] * len(centres), noise=0.01)
    params = {"min_sigma": 1, "max_sigma": 8, "num_sigma": 8, "threshold": 0.05, "overlap": 0.3}
    _, tb = run(tmp_path, x, [{"blobs": dict(params, table="b.parquet")}], [32, 32])
    got, _ = blob_rows(tb)
    ref = blobs_oracle(x, "yx", "yx", **params)
    assert got == ref
    on_border = [r for r in ref if {r[0] % 32, r[1] % 32} & {0, 31}]
    assert len(on_border) >= 4, ref


@pytest.mark.parametrize("tile", [[16, 16], [33, 47], [128, 128]])
def test_blobs_random_data(tmp_path, tile):
    x = ndi.gaussian_filter(np.random.default_rng(8).random((96, 128)), 1.5)
    params = {"min_sigma": 1, "max_sigma": 4, "num_sigma": 4, "threshold": 0.002}
    _, tb = run(tmp_path, x, [{"blobs": dict(params, table="b.parquet")}], tile)
    got, _ = blob_rows(tb)
    ref = blobs_oracle(x, "yx", "yx", **params)
    assert got == ref and len(ref) > 30


def test_blobs_3d_volume(tmp_path):
    centres = [(8, 10, 12), (8, 24, 24), (15, 16, 8), (4, 28, 30), (12, 12, 16)]
    x = synthetic_spots((20, 36, 40), centres, [2, 3, 2, 2.5, 2], [1, 1, 0.8, 1, 0.9], noise=0.005, seed=1)
    params = {"min_sigma": 1.5, "max_sigma": 3.5, "num_sigma": 3, "threshold": 0.03}
    _, tb = run(tmp_path, x, [{"blobs": dict(params, axes="zyx", table="b.parquet")}], [8, 12, 16])
    got, _ = blob_rows(tb)
    ref = blobs_oracle(x, "zyx", "zyx", **params)
    assert got == ref and len(ref) >= 4


def test_blobs_per_plane_of_a_stack(tmp_path):
    img = coins()[:, :200]
    x = np.stack([img, img[::-1], np.zeros_like(img)])  # the zero plane has no blobs
    params = {"min_sigma": 2, "max_sigma": 6, "num_sigma": 5, "threshold": 0.05}
    _, tb = run(tmp_path, x, [{"blobs": dict(params, table="b.parquet")}], [1, 64, 64])
    got, cols = blob_rows(tb)
    assert set(cols) == {"z", "y", "x", "sigma"}
    ref = blobs_oracle(x, "zyx", "yx", **params)
    assert got == ref and {r[0] for r in ref} == {0, 1}


def test_blobs_float32_precision_is_exact_for_float32_data(tmp_path):
    img = coins().astype(np.float32)
    params = {"min_sigma": 2, "max_sigma": 7, "num_sigma": 6, "threshold": 0.04}
    out, tb = run(tmp_path, img, [{"blobs": dict(params, table="b.parquet")}], [50, 60], precision="float32")
    np.testing.assert_array_equal(out, img)  # the image passes through
    got, _ = blob_rows(tb)
    assert got == blobs_oracle(img.astype(np.float64), "yx", "yx", **params)


def test_blobs_no_blobs_and_spec_errors(tmp_path):
    x = np.zeros((40, 50))
    _, tb = run(tmp_path, x, [{"blobs": {"max_sigma": 3, "table": "b.parquet"}}], [16, 16])
    cols = table_of(tb, "blobs")
    assert set(cols) == {"y", "x", "sigma"} and len(cols["y"]) == 0
    for bad in ({"threshold": None}, {"axes": "x"}, {"min_sigma": 0}, {"exclude_border": [1, 2, 3]},
                {"overlap": 2}):
        with pytest.raises(ConvpipeError):
            convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"},
                           "steps": [{"blobs": bad}]}).apply(x, axes="yx")


# --------------------------------------------------------------------------- match_template


def mt_oracle(x, dims, on, template):
    x = np.asarray(x, np.float64)
    idx = [dims.index(a) for a in on]
    moved = np.moveaxis(x, idx, list(range(x.ndim - len(on), x.ndim)))
    out = np.empty_like(moved)
    for lead in np.ndindex(*moved.shape[: x.ndim - len(on)]):
        out[lead] = skimage.feature.match_template(moved[lead], template, pad_input=True)
    return np.moveaxis(out, list(range(x.ndim - len(on), x.ndim)), idx)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_match_template_coins_npy_template_fft_with_peaks_table(tmp_path, precision):
    img = coins() * 255
    tpl = img[170:220, 75:130].copy()  # a coin, 50x55: FFT
    np.save(tmp_path / "t.npy", tpl)
    out, tb = run(tmp_path, img, [{"match_template": {"template": str(tmp_path / "t.npy"), "table": "m.parquet",
                                                      "radius": 5, "threshold": 0.3}}],
                  [64, 64], precision=precision)
    ref = mt_oracle(img, "yx", "yx", tpl)
    assert_close(out, ref, 1e-4)
    got = rowset(table_of(tb, "match_template"), ["y", "x"])
    mx = ndi.maximum_filter(ref, size=11, mode="nearest")
    want = set(zip(*[i.tolist() for i in np.nonzero((ref == mx) & (ref > 0.3))]))
    assert got == want and (195, 102) in got


def test_match_template_small_inline_template_direct_camera(tmp_path):
    img = camera()
    tpl = img[200:207, 240:249]  # 7x9 inline: direct correlation
    out, _ = run(tmp_path, img, [{"match_template": {"template": tpl.tolist()}}], [48, 96])
    assert_close(out, mt_oracle(img, "yx", "yx", tpl), 1e-4)


@pytest.mark.parametrize("tile", [[16, 16], [23, 61]])
def test_match_template_random_match_on_tile_border(tmp_path, tile):
    rng = np.random.default_rng(9)
    x = rng.random((80, 96))
    tpl = x[28:36, 40:52].copy()  # centred at (32, 46): on a tile border for 16-tiles
    x[60:68, 10:22] = tpl * 2 + 1  # an affine copy: NCC 1 again
    out, tb = run(tmp_path, x, [{"match_template": {"template": tpl.tolist(), "table": "m.parquet", "radius": 3,
                                                    "threshold": 0.9}}], tile)
    ref = mt_oracle(x, "yx", "yx", tpl)
    assert_close(out, ref, 1e-4)
    assert rowset(table_of(tb, "match_template"), ["y", "x"]) == {(32, 46), (64, 16)}


def test_match_template_crop_of_input_on_a_stack(tmp_path):
    img = coins() * 255
    x = np.stack([img, np.roll(img, 17, axis=1)])
    out, tb = run(tmp_path, x, [{"match_template": {"template": {"crop": {"z": 0, "y": [40, 70], "x": [20, 60]}},
                                                    "table": "m.parquet", "radius": 4, "threshold": 0.8}}],
                  [1, 64, 64])
    tpl = img[40:70, 20:60]
    ref = mt_oracle(x, "zyx", "yx", tpl)
    assert_close(out, ref, 1e-4)
    assert rowset(table_of(tb, "match_template"), ["z", "y", "x"]) >= {(0, 55, 40), (1, 55, 57)}


def test_match_template_3d_template(tmp_path):
    rng = np.random.default_rng(10)
    x = ndi.gaussian_filter(rng.random((14, 30, 34)), 1)
    tpl = x[4:9, 10:17, 12:18].copy()
    out, _ = run(tmp_path, x, [{"match_template": {"template": tpl.tolist()}}], [5, 11, 16])
    assert_close(out, skimage.feature.match_template(x, tpl, pad_input=True), 1e-4)


def test_match_template_apply_api_and_errors():
    rng = np.random.default_rng(11)
    x = rng.random((50, 60))
    tpl = x[10:25, 30:41]
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"},
                       "steps": [{"match_template": {"template": tpl.tolist()}}],
                       "execution": {"precision": "float64"}})
    out = p.apply(x, axes="yx", tile=[16, 16]).compute()
    assert_close(out, mt_oracle(x, "yx", "yx", tpl), 1e-8)
    for bad in ({"template": [1, 2, 3]}, {"template": {"crop": {"y": [5, 2], "x": [0, 3]}}},
                {"template": {"crop": {"y": [0, 4]}}}, {"template": {"crop": {"q": [0, 4], "x": [0, 3]}}}):
        with pytest.raises(ConvpipeError):
            convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"},
                           "steps": [{"match_template": bad}]}).apply(x, axes="yx")


# --------------------------------------------------------------------------- followed by a wrap filter


def test_detections_followed_by_a_wrap_filter(tmp_path):
    """A later ``wrap`` filter makes the engine hand the feature op several runs per axis in one block."""
    img = coins()
    params = {"min_sigma": 2, "max_sigma": 6, "num_sigma": 5, "threshold": 0.03}
    out, tb = run(tmp_path, img, [{"blobs": dict(params, table="b.parquet")},
                                  {"gaussian": {"sigma": 3, "mode": "wrap"}}], [64, 64], name="blobs")
    assert_close(out, ndi.gaussian_filter(img, 3, mode="wrap"), 1e-10)
    assert blob_rows(tb)[0] == blobs_oracle(img, "yx", "yx", **params)

    img = img * 255
    tpl = img[100:115, 50:61]
    out, tb = run(tmp_path, img, [{"match_template": {"template": tpl.tolist(), "table": "m.parquet", "radius": 3,
                                                      "threshold": 0.6}},
                                  {"uniform": {"size": 5, "mode": "wrap"}}], [64, 64], name="mt")
    ref = mt_oracle(img, "yx", "yx", tpl)
    assert_close(out, ndi.uniform_filter(ref, 5, mode="wrap"), 1e-8)
    mx = ndi.maximum_filter(ref, size=7, mode="nearest")
    want = set(zip(*[i.tolist() for i in np.nonzero((ref == mx) & (ref > 0.6))]))
    assert rowset(table_of(tb, "match_template"), ["y", "x"]) == want and len(want) > 20


def test_match_template_seams_between_runs(tmp_path):
    x = np.random.default_rng(12).random((12, 30))
    tpl = np.random.default_rng(13).random((3, 25))
    _, tb = run(tmp_path, x, [{"match_template": {"template": tpl.tolist(), "radius": 3, "threshold": -1.0,
                                                  "table": "m.parquet"}},
                              {"uniform": {"size": {"x": 5}, "mode": "wrap"}}], [12, 10])
    ref = mt_oracle(x, "yx", "yx", tpl)
    mx = ndi.maximum_filter(ref, size=7, mode="nearest")
    want = set(zip(*[i.tolist() for i in np.nonzero(ref == mx)]))
    assert rowset(table_of(tb, "match_template"), ["y", "x"]) == want


def test_match_template_flat_windows_are_zero_like_skimage(tmp_path):
    img = np.minimum(camera(), 150.0)  # large saturated regions: windows with exactly zero variance
    tpl = img[300:311, 200:209]
    out, _ = run(tmp_path, img, [{"match_template": {"template": tpl.tolist()}}], [128, 128])
    ref = mt_oracle(img, "yx", "yx", tpl)
    assert_close(out, ref, 1e-9)
    assert np.count_nonzero(ref == 0) > 10000 and np.count_nonzero(out[ref == 0]) < 10


def test_match_template_crop_with_the_apply_api():
    """The crop is read from the array being processed (``convpipe.run.prepare.bind_input``), never from the
    spec's input, which need not exist (or be named at all)."""
    x = np.random.default_rng(14).random((40, 50))
    steps = [{"match_template": {"template": {"crop": {"y": [5, 14], "x": [20, 31]}}}}]
    for spec in ({"convpipe": 1, "input": {"url": "missing.zarr"}, "steps": steps, "execution": {"precision": "float64"}},
                 {"convpipe": 1, "steps": steps, "execution": {"precision": "float64"}}):
        out = convpipe.load(spec).apply(x, axes="yx", tile=[16, 16]).compute()
        assert_close(out, mt_oracle(x, "yx", "yx", x[5:14, 20:31]), 1e-8)
