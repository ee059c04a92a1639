"""``label`` equals scipy.ndimage.label exactly (``np.array_equal``: the same numbers) on any tiling.

The oracle is :mod:`convpipe.oracles_objects` (scipy on each whole sub-array). Tiles are much smaller than
the objects: components snake across many tiles, join only far away in raster order (a U whose arms meet
at the bottom, a comb), or touch across a tile corner only diagonally; per plane and 3-D, every axis order,
real images and random data at several densities, and a hypothesis property over all of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convpipe
from convpipe import oracles as O
from convpipe.errors import SpecError


def pipeline(steps, precision="auto"):
    return convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
                          "execution": {"precision": precision}})


def plan_of(p, shape, chunks, dtype="u1", dims="zyx"):
    """The plan of pipeline ``p`` on an input of this shape (no data), as explain makes it."""
    from convpipe.plan import ArrayInfo, make_plan

    tile = p.spec.execution.tile
    return make_plan(p.spec.steps, ArrayInfo(tuple(shape), np.dtype(dtype), tuple(chunks), dims), spec=p.spec,
                     tile=tile, workers=2, memory_per_worker=4 << 30)


def labelled(x, chunks, dims=None, **params):
    import dask.array as da

    dims = dims or "tczyx"[-x.ndim:]
    return pipeline([{"label": params}]).apply(da.from_array(x, chunks=chunks), dims).compute()


def reference(x, dims=None, **params):
    dims = dims or "tczyx"[-x.ndim:]
    return O.OPS["label"](x, dims, **params)[0]


def check(x, chunks, dims=None, **params):
    got = labelled(x, chunks, dims, **params)
    want = reference(x, dims, **params)
    assert got.dtype == np.dtype(params.get("dtype", "int32"))
    assert np.array_equal(got, want), f"{int((got != want).sum())} voxels differ (chunks {chunks}, {params})"
    return got


def test_oracle_is_scipy():
    rng = np.random.default_rng(0)
    x = rng.random((6, 20, 30)) < 0.4
    assert np.array_equal(reference(x, connectivity=2), ndi.label(x, ndi.generate_binary_structure(3, 2))[0])
    per = reference(x, axes="yx")
    for z in range(6):
        assert np.array_equal(per[z], ndi.label(x[z])[0])


# --------------------------------------------------------------------------- shapes that cross many tiles


def snake(h: int, w: int) -> np.ndarray:
    """A serpentine path through the whole image: one component visiting every tile many times."""
    x = np.zeros((h, w), dtype=np.uint8)
    for i, r in enumerate(range(0, h, 2)):
        x[r, :] = 1
        if r + 1 < h:
            x[r + 1, w - 1 if i % 2 == 0 else 0] = 1
    return x


@pytest.mark.parametrize("chunks", [(3, 3), (2, 7), (5, 1), (1, 4), (13, 13)])
def test_snake_across_many_tiles(chunks):
    x = snake(31, 29)
    x[::4, 10] = 0  # cut it in places: several long components, each snaking through many tiles
    got = check(x, chunks)
    assert got.max() > 3


def test_u_whose_arms_meet_late_in_raster_order():
    # arms start in row 0 in tiles far apart; between them, small components that start in row 1; the arms
    # only meet in the last row: the U must be number 1 and the dots numbered after it, in raster order
    x = np.zeros((40, 40), dtype=np.uint8)
    x[:, 2] = 1
    x[:, 37] = 1
    x[39, 2:38] = 1
    x[1:30:3, 10:30:4] = 1
    x[0, 20] = 1  # a dot in row 0 between the arms: number 2 (the right arm belongs to 1)
    got = check(x, (4, 4))
    assert got[0, 2] == got[0, 37] == 1 and got[0, 20] == 2


def test_comb_of_teeth_joined_at_the_bottom():
    x = np.zeros((30, 60), dtype=np.uint8)
    x[:, ::3] = 1
    x[29, :] = 1
    x[5:20, 1:60:6] = 1  # spurs: join their teeth early
    for chunks in [(4, 5), (7, 2), (30, 1)]:
        check(x, chunks)


def test_3d_helix_through_a_grid_of_tiles():
    x = np.zeros((20, 24, 24), dtype=np.uint8)
    t = np.linspace(0, 6 * np.pi, 2000)
    z = np.round(np.linspace(0, 19, t.size)).astype(int)
    y = np.round(11.5 + 10 * np.sin(t)).astype(int)
    xx = np.round(11.5 + 10 * np.cos(t)).astype(int)
    x[z, y, xx] = 1
    for conn in (1, 2, 3):
        check(x, (3, 5, 4), connectivity=conn)


@pytest.mark.parametrize("ndim", [2, 3])
def test_touch_across_a_tile_corner_only_diagonally(ndim):
    k = 4
    x = np.zeros((8,) * ndim, dtype=np.uint8)
    x[(k - 1,) * ndim] = 1
    x[(k,) * ndim] = 1
    for conn in range(1, ndim + 1):
        got = check(x, (k,) * ndim, connectivity=conn)
        assert got.max() == (1 if conn == ndim else 2)
    # the other diagonal, and (3-D) an edge-diagonal touch between tiles that share only an edge
    x = np.zeros((8,) * ndim, dtype=np.uint8)
    x[(k - 1,) * (ndim - 1) + (k,)] = 1
    x[(k,) * (ndim - 1) + (k - 1,)] = 1
    got = check(x, (k,) * ndim, connectivity=ndim)
    assert got.max() == 1
    if ndim == 3:
        x = np.zeros((8, 8, 8), dtype=np.uint8)
        x[k - 1, k - 1, 1] = x[k, k, 1] = 1
        assert check(x, (k, k, k), connectivity=2).max() == 1
        assert check(x, (k, k, k), connectivity=1).max() == 2


def test_diagonal_chain_through_tile_corners():
    x = np.eye(30, dtype=np.uint8) | np.eye(30, k=7, dtype=np.uint8)
    x = x | x[::-1]
    for chunks in [(3, 3), (5, 2), (2, 1)]:
        assert check(x, chunks, connectivity=2).max() < check(x, chunks, connectivity=1).max()


# --------------------------------------------------------------------------- sub-arrays and axis orders


def test_per_plane_numbers_restart_in_every_plane():
    rng = np.random.default_rng(1)
    x = rng.random((5, 30, 26)) < 0.45
    got = check(x, (2, 7, 6), axes="yx")
    for z in range(5):
        assert np.array_equal(got[z], ndi.label(x[z])[0])
    check(x, (3, 4, 9), axes="yx", connectivity=2)
    check(x, (2, 6, 5), axes="zx", connectivity=2)  # sub-arrays over the middle axis
    check(x, (5, 30, 26), axes="zy")
    check(x, (1, 1, 26), axes="x")


@pytest.mark.parametrize("dims", ["xy", "yx", "xzy", "yxz", "zxy", "cyx", "xyc"])
def test_every_axis_order(dims):
    rng = np.random.default_rng(2)
    shape = {"x": 23, "y": 19, "z": 4, "c": 2}
    x = rng.random(tuple(shape[a] for a in dims)) < 0.5
    chunks = tuple({"x": 5, "y": 4, "z": 2, "c": 1}[a] for a in dims)
    for conn in (1, 2):
        check(x, chunks, dims, connectivity=conn)
    check(x, chunks, dims, axes="xy", connectivity=2)


def test_int64_and_nonzero_values_of_any_sign():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 33)).round(0)  # -2..2, zeros are background
    x[5, 5] = np.nan  # NaN != 0: foreground, as the oracle says
    got = check(x, (6, 7), dtype="int64")
    assert got.dtype == np.int64


# --------------------------------------------------------------------------- real images, random data


def test_coins_thresholded():
    from skimage.data import coins
    from skimage.filters import threshold_otsu

    img = coins()
    x = (img > threshold_otsu(img)).astype(np.uint8)
    for chunks, conn in [((17, 23), 1), ((64, 9), 2), ((303, 384), 1)]:
        got = check(x, chunks, connectivity=conn)
        assert got.max() > 20


def test_camera_above_a_threshold():
    from skimage.data import camera

    x = camera() > 140
    check(x, (37, 41), connectivity=2)
    check(x, (8, 512))


def test_thresholded_3d_volume():
    from skimage.data import binary_blobs

    vol = ndi.gaussian_filter(binary_blobs(48, n_dim=3, volume_fraction=0.2, rng=5).astype(float), 1.0) > 0.5
    for conn in (1, 3):
        got = check(vol, (7, 11, 16), connectivity=conn)
        assert got.max() > 5
    check(vol, (5, 48, 48), axes="yx")


@pytest.mark.parametrize("density", [0.02, 0.2, 0.32, 0.5, 0.7, 0.97])
def test_random_binary(density):
    rng = np.random.default_rng(int(density * 100))
    x = rng.random((9, 41, 37)) < density
    for chunks, conn in [((3, 8, 8), 1), ((9, 5, 13), 2), ((2, 41, 4), 3)]:
        check(x, chunks, connectivity=conn)
    check(x[0], (6, 5), connectivity=2)


def test_empty_and_full():
    check(np.zeros((10, 12), np.uint8), (3, 5))
    got = check(np.ones((10, 12), np.uint8), (3, 5))
    assert got.max() == 1
    check(np.ones((1, 1), np.uint8), (1, 1))


@st.composite
def label_cases(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    density = draw(st.sampled_from([0.05, 0.3, 0.5, 0.8]))
    seed = draw(st.integers(0, 2**16))
    dims = "zyx"[-ndim:]
    axes = draw(st.sampled_from([None] + [s for s in ("yx", "zx", "zy", "x", "y") if set(s) <= set(dims)]))
    n_axes = len(axes) if axes else ndim
    conn = draw(st.integers(1, n_axes))
    return shape, chunks, density, seed, axes, conn


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_cases())
def test_property_equals_scipy(case):
    shape, chunks, density, seed, axes, conn = case
    x = np.random.default_rng(seed).random(shape) < density
    params = {"connectivity": conn} | ({"axes": axes} if axes else {})
    check(x, chunks, **params)


# --------------------------------------------------------------------------- chains, runs, errors


def test_in_a_chain_with_filters_before_and_after():
    rng = np.random.default_rng(4)
    x = rng.random((3, 40, 44))
    steps = [{"gaussian": {"sigma": 1.0}}, {"threshold": {"value": 0.5}}, {"label": {"connectivity": 2}},
             {"scale": {"factor": 1.0}}, {"maximum": {"size": 3}}]
    import dask.array as da

    p = pipeline(steps, precision="float64")
    got = p.apply(da.from_array(x, chunks=(1, 9, 10)), "zyx").compute()
    want, _ = O.oracle(steps, x, "zyx")
    assert np.array_equal(got, want)
    plan = plan_of(p, x.shape, (1, 9, 10), x.dtype)
    # the label starts a pass; the maximum filter (a halo) may not share it, the point op may
    assert [[op.name for op in pp.ops] for pp in plan.passes] == [["gaussian", "threshold"], ["label", "scale"],
                                                                   ["maximum"]]


def _zarr(path, x, chunks):
    z = zarr.create_array(str(path), shape=x.shape, chunks=chunks, dtype=x.dtype, overwrite=True)
    z[...] = x
    return path


def test_run_to_zarr_through_the_cli(tmp_path, capsys):
    from convpipe.cli import main

    rng = np.random.default_rng(5)
    x = (rng.random((4, 60, 70)) < 0.4).astype(np.uint8)
    _zarr(tmp_path / "in.zarr", x, (2, 16, 16))
    (tmp_path / "spec.yaml").write_text(
        "convpipe: 1\ninput: {url: in.zarr}\noutput: {url: out.zarr}\nsteps:\n"
        "  - label: {connectivity: 3, dtype: int64}\nexecution: {tile: {z: 2, y: 16, x: 32}}\n")
    assert main(["explain", str(tmp_path / "spec.yaml")]) == 0
    out = capsys.readouterr().out
    assert "label pre-pass over the same tiles" in out and "border table" in out
    assert main(["run", str(tmp_path / "spec.yaml")]) == 0
    y = zarr.open_array(str(tmp_path / "out.zarr"))
    assert y.dtype == np.int64
    assert np.array_equal(y[...], ndi.label(x, ndi.generate_binary_structure(3, 3))[0])


def test_explain_counts_the_border_table():
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": [{"label": {}}],
                       "execution": {"tile": {"z": 64, "y": 256, "x": 256}}})
    plan = plan_of(p, (64, 1024, 1024), (64, 256, 256))
    note = " ".join(plan.passes[0].notes)
    # 3 boundaries along y and 3 along x, each 64 x 1024 voxels on both sides
    assert "16 tiles" in note and "6 boundaries" in note and f"{2 * 6 * 64 * 1024 / 1e3:.1f}k face voxels" in note
    assert plan.to_dict()["passes"][0]["notes"] == plan.passes[0].notes
    assert "label pre-pass over the same tiles first" in str(plan) and note in str(plan)


def test_too_many_components_for_the_dtype_is_refused_before_writing(tmp_path, monkeypatch):
    from convpipe.ops.objects import label as label_mod

    x = np.zeros((20, 20), np.uint8)
    x[::2, ::2] = 1  # 100 components
    _zarr(tmp_path / "in.zarr", x, (5, 5))
    monkeypatch.setattr(label_mod, "_max_label", lambda dt: 99 if dt == "int32" else 2**63 - 1)
    spec = {"convpipe": 1, "input": {"url": str(tmp_path / "in.zarr")},
            "output": {"url": str(tmp_path / "out.zarr")}, "steps": [{"label": {}}]}
    with pytest.raises(SpecError, match=r"steps\[0\]\.label\.dtype.*100 components.*dtype: int64"):
        convpipe.load(spec).run()
    z = zarr.open_array(str(tmp_path / "out.zarr")) if (tmp_path / "out.zarr").exists() else None
    assert z is None or z.nchunks_initialized == 0  # not one tile written
    x[0, 0] = 0  # 99 fit
    _zarr(tmp_path / "in.zarr", x, (5, 5))
    convpipe.load(dict(spec, output={"url": str(tmp_path / "out2.zarr")})).run()
    assert zarr.open_array(str(tmp_path / "out2.zarr"))[...].max() == 99


def test_spec_errors():
    with pytest.raises(SpecError, match=r"connectivity 3 is more than the number of axes.*'yx'"):
        plan_of(pipeline([{"label": {"connectivity": 3, "axes": "yx"}}]), (4, 8, 8), (4, 8, 8))
    with pytest.raises(SpecError, match="dtype"):
        pipeline([{"label": {"dtype": "uint8"}}])
    with pytest.raises(SpecError, match="connectivity"):
        pipeline([{"label": {"connectivity": 0}}])


def test_processes_scheduler_gets_the_lookups():
    import dask.array as da

    x = np.random.default_rng(6).random((30, 34)) < 0.5
    arr = pipeline([{"label": {"connectivity": 2}}]).apply(da.from_array(x, chunks=(7, 8)), "yx")
    got = arr.compute(scheduler="processes", num_workers=2)
    assert np.array_equal(got, reference(x, connectivity=2))


# ---------------------------------------------------------------- written in output.dtype


@pytest.mark.parametrize("steps, dtype, fits", [
    ([{"label": {}}], "uint8", False),
    ([{"label": {}}], "int8", False),
    ([{"label": {}}], "float16", False),            # integers exact only up to 2048
    ([{"label": {}}], "uint16", True),
    ([{"label": {}}], "float32", True),
    ([{"label": {}}, {"regionprops": {"properties": ["label", "area"], "table": "t.parquet"}}], "uint8", False),
    ([{"label": {}}, {"binary_dilation": {}}], "uint8", True),  # 0/1 reach the output, not the labels
])
def test_labels_never_saturate_into_a_narrower_output_dtype(tmp_path, steps, dtype, fits):
    """Saturating a label image into output.dtype would merge every object past the largest number: the
    count is checked against the dtype that is written, before anything is written."""
    x = (np.random.default_rng(0).random((128, 128)) > 0.7).astype(np.uint8)
    n = ndi.label(x)[1]
    assert 2048 < n < 65535
    zarr.create_array(str(tmp_path / "in.zarr"), data=x, chunks=(64, 64))
    for st_ in steps:
        if "table" in next(iter(st_.values())):
            next(iter(st_.values()))["table"] = str(tmp_path / "t.parquet")
    spec = {"convpipe": 1, "input": str(tmp_path / "in.zarr"),
            "output": {"url": str(tmp_path / "out.zarr"), "dtype": dtype}, "steps": steps}
    if not fits:
        with pytest.raises(SpecError, match=rf"^steps\[0\]\.label: {n} components .* written as output.dtype {dtype}"):
            convpipe.load(spec).run()
        assert not (tmp_path / "out.zarr").exists()  # no incomplete output for the fixed spec's run to refuse
        spec["output"]["dtype"] = "int32"
        convpipe.load(spec).run()
        np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"))[...], ndi.label(x)[0])
        return
    convpipe.load(spec).run()
    got = zarr.open_array(str(tmp_path / "out.zarr"))[...]
    ref = O.oracle(steps, x, "yx")[0]
    np.testing.assert_array_equal(got, ref.astype(dtype))


# ---------------------------------------------------------------- the refusal names its step and line


LABEL_SPEC = """# a label image of a thresholded image
convpipe: 1
input: in.zarr
output:
  url: out.zarr
  dtype: {dtype}
steps:
  - threshold: {{value: 0.5}}

  - label:
      connectivity: 1
"""


@pytest.mark.parametrize("dtype, want", [
    ("uint8", r"steps\[1\]\.label \(line 10\): 2165 components .* written as output.dtype uint8 \(line 6\)"),
    ("int32", r"steps\[1\]\.label\.dtype \(line 10\): 2165 components .* use dtype: int64"),
])
def test_a_label_count_refusal_names_its_step_and_line_on_api_and_cli(tmp_path, monkeypatch, cli, dtype, want):
    """Too many labels for the dtype written (output.dtype) or computed (label's dtype: int32, made small
    here): a SpecError at the label step's line, as any other refusal of a step, from a spec file through
    the API and the CLI (exit 1, one line), before any tile is written."""
    import re

    from convpipe.ops.objects import label as label_mod

    x = (np.random.default_rng(0).random((128, 128)) > 0.7).astype(np.uint8)
    assert ndi.label(x)[1] == 2165
    zarr.create_array(str(tmp_path / "in.zarr"), data=x, chunks=(64, 64))
    if dtype == "int32":  # int32 holds 2**31 - 1 labels: made to hold fewer
        monkeypatch.setattr(label_mod, "_max_label", lambda dt: 1000 if dt == "int32" else 2**63 - 1)
    path = tmp_path / "labels.yaml"
    path.write_text(LABEL_SPEC.format(dtype=dtype))
    with pytest.raises(SpecError, match=want) as e:
        convpipe.load(path).run()
    assert e.value.line == 10
    assert not (tmp_path / "out.zarr").exists()
    code, _, err = cli("run", str(path))
    assert code == 1 and re.search(want, err), err
    assert len([ln for ln in err.splitlines() if ln.startswith("error")]) == 1, err
    assert not (tmp_path / "out.zarr").exists()
