"""Statistics tables (``stats``) against numpy in float64, and what every table promises.

``stats`` tiles write float64 partials that ``merge_rows`` combines at the end: the merged statistics must
be within 1e-9 relative of numpy float64 on the whole array (or plane, or tile), whatever the tiling.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.ndimage as ndi
import zarr

import convpipe

pytest.importorskip("skimage")
import skimage.color
import skimage.data

METRICS = ["count", "mean", "std", "min", "max", "sum", "energy"]
RTOL = 1e-9


def run(tmp: Path, x: np.ndarray, steps: list[dict], tile, *, chunks=None, precision="float64", name="t"):
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    ch = chunks or (list(tile.values()) if isinstance(tile, dict) else tile)
    z = zarr.create_array(str(d / "in.zarr"), shape=x.shape, chunks=tuple(ch), dtype=x.dtype, overwrite=True)
    z[...] = x
    steps = [{op: dict(prm, table=str(d / prm["table"])) if prm.get("table") else prm for op, prm in st.items()}
             for st in steps]  # tables next to the data, never in the working directory
    spec = {"convpipe": 1, "input": {"url": str(d / "in.zarr")},
            "output": {"url": str(d / "out.zarr"), "overwrite": True},
            "steps": steps, "execution": {"tile": tile, "precision": precision}}
    res = convpipe.load(spec).run()
    tables = {}
    for k, v in res.outputs.items():
        if k != "image":
            t = pq.read_table(v["table"])
            assert t.num_rows == v["rows"]
            tables[k] = t
    return zarr.open_array(str(d / "out.zarr"), mode="r")[...], tables, res


def cols(t) -> dict:
    return {c: t.column(c).to_numpy() for c in t.column_names}


def only(tables: dict):
    (t,) = tables.values()
    return cols(t)


def np_stats(v: np.ndarray) -> dict:
    v = np.asarray(v, dtype=np.float64)
    return {"count": v.size, "mean": np.mean(v), "std": np.std(v), "min": np.min(v), "max": np.max(v),
            "sum": np.sum(v), "energy": np.sum(v * v)}


def assert_stats(row: dict, v: np.ndarray, metrics=METRICS):
    ref = np_stats(v)
    scale = float(np.sum(np.abs(np.asarray(v, np.float64))))
    for m in metrics:
        got, want = float(row[m]), float(ref[m])
        if m == "count":
            assert got == want
        elif m in ("sum", "mean"):  # a sum near 0 (cancellation) is judged against sum |x|
            s = scale if m == "sum" else scale / max(v.size, 1)
            assert abs(got - want) <= RTOL * max(abs(want), 1e-6 * s), (m, got, want)
        else:
            assert abs(got - want) <= RTOL * abs(want), (m, got, want)


def orientation_oracle(plane: np.ndarray, bins: int, weight="magnitude", mode="reflect") -> np.ndarray:
    dy = ndi.sobel(plane, axis=0, mode=mode)
    dx = ndi.sobel(plane, axis=1, mode=mode)
    w = np.hypot(dy, dx) if weight == "magnitude" else None
    return np.histogram(np.arctan2(dy, dx), bins=bins, range=(-np.pi, np.pi), weights=w)[0].astype(float)


def bands_oracle(plane: np.ndarray, edges: list[float]) -> np.ndarray:
    F = np.fft.fftn(plane)
    power = np.abs(F) ** 2 / plane.size
    f = np.meshgrid(*[np.fft.fftfreq(n) / 0.5 for n in plane.shape], indexing="ij")
    r = np.sqrt(sum(g * g for g in f))
    return np.array([power[(r >= lo) & (r < hi)].sum() for lo, hi in itertools.pairwise(edges)])


# --------------------------------------------------------------------------- per all / plane / tile


@pytest.mark.parametrize("tile", [[2, 7, 9], [3, 32, 32], [1, 50, 1]])
def test_stats_all_random_many_tilings(tmp_path, tile):
    x = np.random.default_rng(1).normal(5.0, 2.0, (3, 50, 61))
    out, tb, _ = run(tmp_path, x, [{"stats": {"per": "all", "table": "s.parquet"}}], tile)
    np.testing.assert_array_equal(out, x)  # the image passes through
    c = only(tb)
    assert list(c) == METRICS and len(c["count"]) == 1
    assert c["count"].dtype == np.int64
    assert_stats({k: v[0] for k, v in c.items()}, x)


def test_stats_cancelling_sum_and_large_offset(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, (64, 64))
    x -= x.mean()  # sum ~ 0: judged against sum |x|
    y = 1e6 + rng.normal(0.0, 1e-3, (64, 64))  # std tiny against the mean: needs the pairwise merge
    for name, v in (("zero", x), ("offset", y)):
        _, tb, _ = run(tmp_path, v, [{"stats": {"table": "s.parquet"}}], [8, 8], name=name)
        assert_stats({k: a[0] for k, a in only(tb).items()}, v)


def test_stats_per_plane_on_a_stack_and_uint8_camera(tmp_path):
    cam = skimage.data.camera()
    x = np.stack([cam, cam[::-1] // 2, np.zeros_like(cam)])
    _, tb, _ = run(tmp_path, x, [{"stats": {"per": "plane", "table": "s.parquet"}}], [2, 96, 128])
    c = only(tb)
    assert list(c) == ["z"] + METRICS
    assert c["z"].tolist() == [0, 1, 2]
    for i in range(3):
        assert_stats({k: v[i] for k, v in c.items()}, x[i])
    # a 2-D image per plane: one row and no axis column
    _, tb, _ = run(tmp_path, cam, [{"stats": {"per": "plane", "table": "s.parquet"}}], [100, 100], name="2d")
    c = only(tb)
    assert list(c) == METRICS
    assert_stats({k: v[0] for k, v in c.items()}, cam)


def test_stats_per_tile_rows_and_extents(tmp_path):
    x = np.random.default_rng(3).random((45, 70))
    _, tb, res = run(tmp_path, x, [{"stats": {"per": "tile", "metrics": ["mean", "max", "count"],
                                              "table": "s.parquet"}}], [16, 32])
    c = only(tb)
    assert list(c) == ["y", "x", "y_stop", "x_stop", "mean", "max", "count"]
    assert len(c["y"]) == 3 * 3 == res.tiles
    seen = set()
    for i in range(len(c["y"])):
        y0, y1, x0, x1 = int(c["y"][i]), int(c["y_stop"][i]), int(c["x"][i]), int(c["x_stop"][i])
        assert y0 % 16 == 0 and x0 % 32 == 0 and y1 == min(y0 + 16, 45) and x1 == min(x0 + 32, 70)
        seen.add((y0, x0))
        assert_stats({k: v[i] for k, v in c.items()}, x[y0:y1, x0:x1], ["mean", "max", "count"])
    assert len(seen) == 9


def test_stats_stays_float64_under_float32_precision(tmp_path):
    # stats is a point op: as the first step it reads the input's own float64 values
    x = np.random.default_rng(4).random((40, 40)) * 1e3 + np.pi
    out, tb, _ = run(tmp_path, x, [{"stats": {"table": "s.parquet"}}], [16, 16], precision="float32")
    assert out.dtype == np.float32
    assert_stats({k: v[0] for k, v in only(tb).items()}, x)


def test_stats_after_a_filter(tmp_path):
    x = skimage.data.coins().astype(np.float64)
    _, tb, _ = run(tmp_path, x, [{"gaussian": {"sigma": 2}}, {"stats": {"per": "all", "table": "s.parquet"}}],
                   [64, 64])
    assert_stats({k: v[0] for k, v in only(tb).items()}, ndi.gaussian_filter(x, 2))


# --------------------------------------------------------------------------- orientation and bands


@pytest.mark.parametrize("weight,mode", [("magnitude", "reflect"), ("count", "nearest"), ("magnitude", "wrap")])
def test_stats_orientation_histogram_per_plane(tmp_path, weight, mode):
    cam = skimage.data.camera().astype(np.float64)
    x = np.stack([cam[:300, :260], cam.T[:300, :260]])
    steps = [{"stats": {"per": "plane", "metrics": ["mean"], "mode": mode,
                        "orientation_histogram": {"bins": 12, "weight": weight}, "table": "s.parquet"}}]
    out, tb, _ = run(tmp_path, x, steps, [1, 64, 48])
    np.testing.assert_array_equal(out, x)
    c = only(tb)
    for i in range(2):
        ref = orientation_oracle(x[i], 12, weight, mode)
        got = np.array([c[f"orientation_{j}"][i] for j in range(12)])
        if weight == "count":
            np.testing.assert_array_equal(got, ref)  # counts are exact
        else:
            np.testing.assert_allclose(got, ref, rtol=RTOL)


def test_stats_orientation_all_sums_the_planes(tmp_path):
    x = np.random.default_rng(5).random((2, 40, 50))
    _, tb, _ = run(tmp_path, x, [{"stats": {"orientation_histogram": {"bins": 6}, "table": "s.parquet"}}],
                   [1, 16, 16])
    c = only(tb)
    ref = orientation_oracle(x[0], 6) + orientation_oracle(x[1], 6)
    np.testing.assert_allclose([c[f"orientation_{j}"][0] for j in range(6)], ref, rtol=RTOL)


def test_stats_spectral_bands_per_plane_hubble_and_parseval(tmp_path):
    g = skimage.color.rgb2gray(skimage.data.hubble_deep_field())[:256, :300]
    x = np.stack([g, g[::-1, ::-1] ** 2])
    edges = [0.0, 0.1, 0.25, 0.5, 1.0, 1.5]  # 1.5 > sqrt(2): every frequency is in a band
    _, tb, _ = run(tmp_path, x, [{"stats": {"per": "plane", "spectral_bands": edges, "table": "s.parquet",
                                            "orientation_histogram": {"bins": 8}}}], [1, 64, 64])
    c = only(tb)
    for i in range(2):
        np.testing.assert_allclose([c[f"orientation_{j}"][i] for j in range(8)], orientation_oracle(x[i], 8),
                                   rtol=RTOL)
        got = np.array([c[f"band_{j}"][i] for j in range(5)])
        np.testing.assert_allclose(got, bands_oracle(x[i], edges), rtol=RTOL)
        assert abs(got.sum() - c["energy"][i]) <= 1e-9 * c["energy"][i]  # Parseval
        assert_stats({k: v[i] for k, v in c.items()}, x[i])


def test_stats_spectral_bands_per_tile_and_all(tmp_path):
    x = np.random.default_rng(6).random((64, 96))
    edges = [0.0, 0.3, 0.7, 2.0]
    _, tb, _ = run(tmp_path, x, [{"stats": {"per": "tile", "metrics": ["energy"], "spectral_bands": edges,
                                            "table": "s.parquet"}}], [32, 32])
    c = only(tb)
    assert len(c["y"]) == 6
    for i in range(6):
        part = x[c["y"][i]:c["y_stop"][i], c["x"][i]:c["x_stop"][i]]
        np.testing.assert_allclose([c[f"band_{j}"][i] for j in range(3)], bands_oracle(part, edges), rtol=RTOL)
    _, tb, _ = run(tmp_path, x, [{"stats": {"spectral_bands": edges, "table": "s.parquet"}}], [32, 32],
                   name="all")
    c = only(tb)
    np.testing.assert_allclose([c[f"band_{j}"][0] for j in range(3)], bands_oracle(x, edges), rtol=RTOL)


# --------------------------------------------------------------------------- stats followed by a halo op


def test_stats_then_a_halo_op_with_the_row_context(tmp_path):
    """The engine tells stats which part of its (halo-enlarged) output the tile owns (``Context.core``)."""
    x = np.random.default_rng(7).random((60, 70))
    out, tb, _ = run(tmp_path, x, [{"stats": {"per": "all", "orientation_histogram": {"bins": 4},
                                              "table": "s.parquet"}},
                                   {"gaussian": {"sigma": 2, "mode": "wrap"}}], [16, 16])
    np.testing.assert_allclose(out, ndi.gaussian_filter(x, 2, mode="wrap"), atol=1e-10)
    c = only(tb)
    assert_stats({k: v[0] for k, v in c.items()}, x)
    np.testing.assert_allclose([c[f"orientation_{j}"][0] for j in range(4)], orientation_oracle(x, 4), rtol=RTOL)


def test_stats_then_a_halo_op_is_exact_or_fails_loudly(tmp_path):
    """A later halo makes the stats block larger than the tile's core: with the owned part from the engine the
    merge is exact; rows of overlapping regions (an engine that does not say what a tile owns) are refused,
    never double-counted."""
    from convpipe.errors import ExecutionError
    from convpipe.ops.base import Context
    from convpipe.ops.features.stats import Stats
    from convpipe.params.features import StatsParams

    x = np.random.default_rng(9).random((50, 40))
    steps = [{"stats": {"per": "plane", "table": "s.parquet"}}, {"uniform": {"size": 5}}]
    _, tb, _ = run(tmp_path, x, steps, [16, 16])
    assert_stats({k: v[0] for k, v in only(tb).items()}, x)
    op = Stats(StatsParams(per="all"), "yx")
    parts = []
    for y0 in (0, 20):  # two blocks of 30 rows overlapping on rows 20..29, no ctx.core
        _, rows = op.apply_rows(x[y0:y0 + 30], Context(coords={"y": np.arange(y0, y0 + 30), "x": np.arange(40)}))
        parts.append(pa.table(rows))
    with pytest.raises(ExecutionError, match="count twice"):
        op.merge_rows(pa.concat_tables(parts))


# --------------------------------------------------------------------------- every table


def test_tables_carry_provenance_and_counts(tmp_path):
    x = np.random.default_rng(8).random((30, 40))
    _, tb, res = run(tmp_path, x, [{"peaks": {"radius": 1, "threshold": 0.9, "table": "p.parquet"}},
                                   {"stats": {"metrics": ["sum"], "table": "s.parquet"}}], [16, 16])
    assert set(res.outputs) == {"image", "steps[0].peaks", "steps[1].stats"}
    for key, t in tb.items():
        meta = json.loads(t.schema.metadata[b"convpipe"])
        assert meta["step"] == key and "spec" in meta and "input_fingerprint" in meta
        assert res.outputs[key]["rows"] == t.num_rows
        assert not Path(res.outputs[key]["table"] + ".parts").exists()  # parts are merged and removed
    assert math.isclose(cols(tb["steps[1].stats"])["sum"][0], x.sum(), rel_tol=RTOL)


def test_empty_tables_keep_their_columns(tmp_path):
    x = np.zeros((20, 24))
    _, tb, _ = run(tmp_path, x, [{"peaks": {"radius": 1, "threshold": 1.0, "table": "p.parquet"}}], [8, 8])
    c = only(tb)
    assert set(c) == {"y", "x", "value"} and all(len(v) == 0 for v in c.values())
    _, tb, _ = run(tmp_path, x, [{"match_template": {"template": [[0, 1], [1, 0]], "table": "m.parquet"}}],
                   [8, 8], name="mt")
    c = only(tb)
    assert set(c) == {"y", "x", "value"} and len(c["y"]) == 0
