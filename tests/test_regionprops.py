"""``regionprops`` equals skimage.measure.regionprops_table on every sub-array, whatever the tiling.

Tables are written by ``run`` (Zarr in, Parquet out); the oracle is :mod:`convpipe.oracles_objects`.
Rows must be exactly the oracle's (one per label per sub-array: none lost or doubled where tiles cut an
object), integer columns equal, float columns within 1e-9 relative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.ndimage as ndi
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convpipe
from convpipe import oracles as O
from convpipe.errors import SpecError

REL = 1e-9


def run(tmp: Path, x: np.ndarray, steps: list[dict], chunks, *, axes: str | None = None, tile=None,
        precision: str = "float64"):
    z = zarr.create_array(str(tmp / "in.zarr"), shape=x.shape, chunks=chunks, dtype=x.dtype, overwrite=True)
    z[...] = x
    steps = [{op: dict(p, table=str(tmp / p["table"])) if p.get("table") else p for op, p in s.items()}
             for s in steps]
    spec = {"convpipe": 1, "input": {"url": str(tmp / "in.zarr")} | ({"axes": axes} if axes else {}),
            "output": {"url": str(tmp / "out.zarr"), "overwrite": True}, "steps": steps,
            "execution": {"precision": precision} | ({"tile": tile} if tile else {})}
    res = convpipe.load(spec).run()
    tables = {}
    for k, v in res.outputs.items():
        if k != "image":
            t = pq.read_table(v["table"])
            tables[int(k.split("]")[0].split("[")[1])] = {c: t.column(c).to_numpy() for c in t.column_names}
    return zarr.open_array(str(tmp / "out.zarr"), mode="r")[...], tables, res


def assert_same_rows(got: dict, want: dict, what: str = ""):
    assert set(got) == set(want), f"{what}: columns {sorted(got)} != {sorted(want)}"
    keys = [c for c in want if c in "tczyx"] + ["label"]
    n = len(want["label"])
    assert len(got["label"]) == n, f"{what}: {len(got['label'])} rows, the oracle has {n}"
    g = {tuple(int(got[k][i]) for k in keys): i for i in range(n)}
    w = {tuple(int(want[k][i]) for k in keys): i for i in range(n)}
    assert len(g) == n, f"{what}: a (sub-array, label) appears twice"
    assert set(g) == set(w), f"{what}: rows differ: {sorted(set(g) ^ set(w))[:5]}"
    for c in want:
        gv = np.array([got[c][g[k]] for k in w])
        wv = np.array([want[c][w[k]] for k in w])
        if c.startswith(("bbox", "label")) or c in "tczyx":
            assert np.array_equal(gv.astype(np.int64), wv.astype(np.int64)), f"{what}: column {c}"
        else:
            assert np.allclose(gv.astype(float), wv.astype(float), rtol=REL, atol=0), f"{what}: column {c}"


def check(tmp, x, steps, chunks, **kw):
    out, tables, res = run(tmp, x, steps, chunks, **kw)
    dims = kw.get("axes") or "tczyx"[-x.ndim:]
    want: dict = {}
    ref, _ = O.oracle(steps, x, dims, tables=want)
    assert np.array_equal(out, ref)
    i = next(i for i, s in enumerate(steps) if "regionprops" in s)
    assert_same_rows(tables[i], want[i], f"{steps[i]} chunks {chunks}")
    return out, tables[i], res


def blobs(shape, n, seed, r=(2, 6)):
    """Random balls (some overlapping, some cut by the array's edge) on a faint noisy background."""
    rng = np.random.default_rng(seed)
    g = np.indices(shape)
    img = rng.normal(0.0, 0.05, shape)
    for _ in range(n):
        c = [rng.uniform(0, s) for s in shape]
        rad = rng.uniform(*r)
        d2 = sum((gi - ci) ** 2 for gi, ci in zip(g, c))
        img += (d2 <= rad * rad) * rng.uniform(0.8, 1.5)
    return img


def test_objects_far_larger_than_tiles(tmp_path):
    x = blobs((40, 50), 8, 0, r=(3, 9))
    steps = [{"threshold": {"value": 0.5}}, {"label": {"connectivity": 2}},
             {"regionprops": {"intensity": "input", "table": "r.parquet"}}]
    _, t, _ = check(tmp_path, x, steps, (5, 6))
    assert len(t["label"]) > 3 and t["area"].max() > 90  # objects span many 5x6 tiles
    assert t["area"].sum() == (x > 0.5).sum()  # every voxel counted once


def test_3d_and_per_plane(tmp_path):
    x = blobs((6, 30, 34), 15, 1)
    for axes, chunks in [(None, (2, 8, 8)), ("yx", (1, 7, 9)), ("zx", (3, 5, 6))]:
        lp = {"axes": axes} if axes else {}
        steps = [{"threshold": {"value": 0.5}}, {"label": lp},
                 {"regionprops": dict(lp, intensity="input", table="r.parquet")}]
        _, t, _ = check(tmp_path, x, steps, chunks)
        if axes:
            assert set(t) >= {"label", "area", "centroid-1", "bbox-3"} and ({"y"} if axes == "zx" else {"z"}) <= set(t)
        else:
            assert {"centroid-2", "bbox-5"} <= set(t)


@pytest.mark.parametrize("order", ["xy", "xzy", "yxz"])
def test_axis_orders(tmp_path, order):
    shape = {"z": 4, "y": 26, "x": 31}
    canon = "".join(a for a in "zyx" if a in order)
    xc = blobs(tuple(shape[a] for a in canon), 10, 2)
    xs = np.ascontiguousarray(np.transpose(xc, [canon.index(a) for a in order]))
    steps = [{"threshold": {"value": 0.5}}, {"label": {}},
             {"regionprops": {"intensity": "input", "table": "r.parquet"}}]
    chunks = tuple({"z": 2, "y": 6, "x": 7}[a] for a in order)
    _, t, _ = check(tmp_path, xs, steps, chunks, axes=order)
    # centroid-0 is the first axis in tczyx order, whatever the stored order: the same table as canonical
    want: dict = {}
    O.oracle(steps, xc, canon, tables=want)
    assert_same_rows(t, want[2], "canonical")


def test_integer_label_input_passes_through_exactly(tmp_path):
    # labels beyond 2**24 are not float32 numbers: the image and the table must still be exact
    rng = np.random.default_rng(3)
    lab, n = ndi.label(rng.random((30, 40)) < 0.3)
    big = np.where(lab > 0, lab + 2**24 + 1, 0).astype(np.int32)
    steps = [{"regionprops": {"properties": ["label", "area", "bbox", "centroid"], "table": "r.parquet"}}]
    out, tables, res = run(tmp_path, big, steps, (7, 9), precision="float32")
    assert out.dtype == np.int32 and np.array_equal(out, big)
    t = tables[0]
    # skimage on the compact labels, label column shifted (its find_objects would list 2**24 empty slots)
    want = O.TABLES["regionprops"](lab, "yx", properties=["label", "area", "bbox", "centroid"])
    want["label"] = want["label"] + 2**24 + 1
    assert_same_rows(t, want, "labels beyond 2**24")
    assert set(t) == {"label", "area", "bbox-0", "bbox-1", "bbox-2", "bbox-3", "centroid-0", "centroid-1"}
    assert t["label"].dtype == np.int64 and t["bbox-0"].dtype == np.int64 and t["area"].dtype == np.float64
    assert len(t["label"]) == n


def test_uint16_intensities_and_a_subset_of_properties(tmp_path):
    x = (blobs((20, 36, 30), 20, 4) * 1000 + 200).clip(0, 65535).astype(np.uint16)
    steps = [{"threshold": {"value": 900}}, {"label": {"connectivity": 3, "dtype": "int64"}},
             {"regionprops": {"intensity": "input", "properties": ["label", "intensity_max", "intensity_sum"],
                              "table": "r.parquet"}}]
    _, t, _ = check(tmp_path, x, steps, (5, 9, 8), precision="float32")
    assert set(t) == {"label", "intensity_max", "intensity_sum"}


def test_coins_segmentation(tmp_path):
    from skimage.data import coins
    from skimage.filters import threshold_otsu

    img = coins()
    smooth = ndi.gaussian_filter(img.astype(float), 2.0)
    steps = [{"gaussian": {"sigma": 2.0}}, {"threshold": {"value": float(threshold_otsu(smooth))}},
             {"label": {}}, {"regionprops": {"intensity": "input", "table": "coins.parquet"}}]
    _, t, _ = check(tmp_path, img, steps, (32, 48))
    assert len(t["label"]) > 10


def test_no_objects_gives_an_empty_table_with_the_columns(tmp_path):
    x = np.zeros((12, 14), np.uint8)
    steps = [{"label": {}}, {"regionprops": {"intensity": "input", "table": "r.parquet"}}]
    _, t, _ = check(tmp_path, x, steps, (5, 5))
    assert len(t["label"]) == 0 and "intensity_mean" in t


@st.composite
def cases(draw):
    ndim = draw(st.integers(2, 3))
    shape = tuple(draw(st.lists(st.integers(2, 14), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    density = draw(st.sampled_from([0.1, 0.4, 0.7]))
    per_plane = ndim == 3 and draw(st.booleans())
    conn = draw(st.integers(1, 2 if per_plane else ndim))
    return shape, chunks, density, per_plane, conn, draw(st.integers(0, 2**16))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(cases())
def test_property_rows_equal_skimage(tmp_path, case):
    shape, chunks, density, per_plane, conn, seed = case
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(shape) < density, rng.normal(size=shape), 0.0)
    lp = {"axes": "yx", "connectivity": conn} if per_plane else {"connectivity": conn}
    steps = [{"label": lp}, {"regionprops": {"axes": "yx", "intensity": "input", "table": "r.parquet"}
                             if per_plane else {"intensity": "input", "table": "r.parquet"}}]
    check(tmp_path, x, steps, chunks)


def test_spec_errors(tmp_path):
    with pytest.raises(SpecError, match=r"regionprops.properties.*intensity_mean needs intensity values"):
        convpipe.load({"convpipe": 1, "input": {"url": "x.zarr"},
                       "steps": [{"regionprops": {"properties": ["label", "intensity_mean"]}}]}).apply(
            np.zeros((4, 4), np.int32))
    x = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    zarr.create_array(str(tmp_path / "f.zarr"), shape=x.shape, chunks=(5, 5), dtype="f4")[...] = x
    spec = {"convpipe": 1, "input": {"url": str(tmp_path / "f.zarr")}, "output": {"url": str(tmp_path / "o.zarr")},
            "steps": [{"gaussian": {"sigma": 1}}, {"regionprops": {}}]}
    with pytest.raises(SpecError, match=r"steps\[1\]\.regionprops.*integer label image.*float32"):
        convpipe.load(spec).run()
    assert not (tmp_path / "o.zarr").exists()
    with pytest.raises(SpecError, match="properties"):
        convpipe.load({"convpipe": 1, "input": {"url": "x.zarr"}, "steps": [{"regionprops": {"properties": []}}]})


def test_cli_run_writes_the_table(tmp_path, capsys):
    from convpipe.cli import main

    x = (blobs((4, 40, 40), 8, 6) > 0.5).astype(np.uint8)
    zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(2, 10, 10), dtype="u1")[...] = x
    (tmp_path / "s.yaml").write_text(
        "convpipe: 1\ninput: {url: in.zarr}\noutput: {url: labels.zarr}\nsteps:\n  - label: {axes: yx}\n"
        "  - regionprops: {axes: yx, table: objects.parquet}\n")
    assert main(["run", str(tmp_path / "s.yaml")]) == 0
    t = pq.read_table(tmp_path / "objects.parquet")
    want = O.TABLES["regionprops"](O.OPS["label"](x, "zyx", axes="yx")[0], "zyx", axes="yx")
    assert_same_rows({c: t.column(c).to_numpy() for c in t.column_names}, want, "cli")
    assert b"convpipe" in t.schema.metadata  # the spec and the input's fingerprint


def test_per_plane_tiles_with_and_without_objects(tmp_path):
    # a tile holding no object gives no rows: its (empty) part must have the columns in the same order as a
    # tile's with rows, or the parts do not concatenate (found by the hypothesis property above)
    x = np.zeros((2, 8, 8))
    x[1, 2:5, 5:8] = 1.0
    x[0, 6, 6] = 2.0
    steps = [{"label": {"axes": "yx"}}, {"regionprops": {"axes": "yx", "intensity": "input", "table": "r.parquet"}}]
    _, t, _ = check(tmp_path, x, steps, (1, 8, 4))
    assert sorted(zip(t["z"].tolist(), t["area"].tolist())) == [(0, 1.0), (1, 9.0)]
