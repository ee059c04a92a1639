"""``distance_transform`` against scipy.ndimage.distance_transform_edt(x != 0, sampling) on the whole array.

Separable passes over whole lines along one axis at a time, tiles far smaller than the objects along the
other axes; per sub-array (``axes: yx`` on a stack) and 3-D; sampling as a number, a map, a list in the order
of ``axes``, and from OME metadata; real masks (coins, camera, a 3-D volume of blobs) and random ones. The
contract: float32 within 1e-5 relative, float64 within 1e-10.
"""

from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr
from harness import make_spec

import convpipe
from convpipe.errors import ExecutionError
from convpipe.oracles import assert_conforms, oracle

skimage = pytest.importorskip("skimage")
from skimage import data  # noqa: E402


def _run(steps, x, dims, chunks, precision="float64", tile=None):
    p = convpipe.load(make_spec(steps, precision))
    return np.asarray(p.apply(da.from_array(x, chunks=chunks), axes=dims, tile=tile).compute())


def _coins():
    return (data.coins() > 110).astype(np.uint8)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("sampling", [None, 0.7, {"y": 2.0, "x": 0.5}])
def test_coins_equals_scipy_on_small_tiles(sampling, precision):
    x = _coins()
    steps = [{"distance_transform": {} if sampling is None else {"sampling": sampling}}]
    s = None if sampling is None else ((sampling["y"], sampling["x"]) if isinstance(sampling, dict) else sampling)
    ref = ndi.distance_transform_edt(x != 0, sampling=s)
    oref, _ = oracle(steps, x, "yx")
    assert np.array_equal(oref, ref)  # the oracle is scipy's own call
    assert ref.max() > 20  # objects far larger than the tiles below
    for chunks in ((21, 25), (303, 384), (40, 7)):
        out = _run(steps, x, "yx", chunks, precision)
        assert out.dtype == np.dtype(precision)
        assert_conforms(out, ref, precision, what=f"sampling={sampling} chunks={chunks}")


def test_sampling_list_follows_the_axes_as_written():
    x = _coins()[:120, :150]
    out = _run([{"distance_transform": {"axes": "xy", "sampling": [0.25, 3.0]}}], x, "yx", (30, 40))
    ref = ndi.distance_transform_edt(x != 0, sampling=(3.0, 0.25))  # y: 3, x: 0.25
    assert_conforms(out, ref, "float64")
    wrong = ndi.distance_transform_edt(x != 0, sampling=(0.25, 3.0))
    assert np.abs(out - wrong).max() > 1


@pytest.mark.parametrize("sampling", [None, {"z": 3.0, "y": 1.0, "x": 0.5}])
def test_3d_volume_and_per_plane(sampling):
    v = data.binary_blobs(length=32, n_dim=3, volume_fraction=0.6, rng=2)[:9].astype(np.uint8)
    steps = [{"distance_transform": {} if sampling is None else {"sampling": sampling}}]
    s = None if sampling is None else (3.0, 1.0, 0.5)
    ref = ndi.distance_transform_edt(v != 0, sampling=s)
    assert_conforms(_run(steps, v, "zyx", (4, 5, 6), "float32"), ref, "float32", what="3-D")
    # per plane: each z plane's own 2-D transform
    steps = [{"distance_transform": {"axes": "yx"}}]
    refp = np.stack([ndi.distance_transform_edt(p != 0) for p in v])
    assert_conforms(_run(steps, v, "zyx", (2, 7, 5)), refp, "float64", what="per plane")
    assert np.abs(refp - ndi.distance_transform_edt(v != 0)).max() > 0.5


def test_axis_orders_and_a_zx_transform():
    rng = np.random.default_rng(3)
    x = (rng.random((6, 10, 14)) > 0.2).astype(np.float32)
    steps = [{"distance_transform": {"axes": "zx", "sampling": {"z": 2.0, "x": 1.0}}}]
    ref, _ = oracle(steps, x, "zyx")
    assert_conforms(_run(steps, x, "zyx", (3, 4, 5)), ref, "float64")
    xs = np.ascontiguousarray(np.transpose(x, (2, 0, 1)))  # stored x z y
    ref2, dims = oracle(steps, xs, "xzy")
    assert dims == "xzy" and np.allclose(ref2, np.transpose(ref, (2, 0, 1)))
    assert_conforms(_run(steps, xs, "xzy", (5, 3, 4)), ref2, "float64")


def test_random_masks_and_real_camera():
    rng = np.random.default_rng(8)
    for k in range(4):
        x = (rng.random((23 + k, 31)) > 0.05 + 0.2 * k).astype(np.uint8)
        x[0, 0] = 0
        ref = ndi.distance_transform_edt(x != 0, sampling=(1 + k, 1.5))
        out = _run([{"distance_transform": {"sampling": {"y": 1 + k, "x": 1.5}}}], x, "yx", (4, 5))
        assert_conforms(out, ref, "float64", what=f"random {k}")
    cam = data.camera()[::2, ::2]
    steps = [{"threshold": {"value": 60}}, {"distance_transform": {}}]
    ref, _ = oracle(steps, cam, "yx")
    assert_conforms(_run(steps, cam, "yx", (32, 48), "float32"), ref, "float32")


def test_passes_are_whole_lines_along_one_axis_each():
    from convpipe.plan import ArrayInfo, make_plan

    p = convpipe.load(make_spec([{"gaussian": {"sigma": 1}}, {"distance_transform": {}},
                                 {"threshold": {"value": 3}}]))
    shape = (256, 4096, 4096)  # 4 GiB of uint8: no pass may hold it whole
    plan = make_plan(p.spec.steps, ArrayInfo(shape, np.dtype(np.uint8), (16, 256, 256), "zyx"),
                     memory_per_worker=2 << 30)
    assert len(plan.passes) == 3
    assert [pp.full_axes for pp in plan.passes] == ["x", "y", "z"]
    for pp in plan.passes:  # only the pass's own axis is whole: memory bounded by tiles
        assert pp.tile[pp.full_axes] == shape["zyx".index(pp.full_axes)]
        assert np.prod(list(pp.tile.values())) * 8 < (1 << 30), pp.tile
        assert pp.mem_per_task < (1 << 30)
    assert plan.output.dtype == np.uint8
    assert "whole lines along y" in str(plan)


def test_all_foreground_sub_array_is_an_error_naming_it(tmp_path):
    x = np.ones((4, 10, 12), dtype=np.uint8)
    x[0, 3, 3] = x[1, 5, 9] = x[3, 0, 0] = 0  # plane z=2 has no background
    steps = [{"distance_transform": {"axes": "yx"}}]
    with pytest.raises(ExecutionError, match="z=2.*no background"):
        _run(steps, x, "zyx", (1, 3, 4))
    # the whole volume has background: fine in 3-D
    ref = ndi.distance_transform_edt(x != 0)
    assert_conforms(_run([{"distance_transform": {}}], x, "zyx", (2, 3, 4)), ref, "float64")
    # through the CLI: refused before anything is written (exit 1, one line)
    from convpipe.cli import main

    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(1, 5, 6), dtype=x.dtype)
    z[...] = x
    import yaml

    spec = make_spec(steps, "float32", input={"url": str(tmp_path / "in.zarr")},
                     output={"url": str(tmp_path / "out.zarr")})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp_path / "s.yaml")]) == 1
    assert not (tmp_path / "out.zarr").exists()


# a spec as written: distance_transform on line 7
NO_BACKGROUND = """# distances inside the cells
convpipe: 1
input: in.zarr
output:
  url: out.zarr
steps:
  - distance_transform: {axes: yx}
"""


def _stack(tmp_path, x, chunks):
    zarr.create_array(str(tmp_path / "in.zarr"), data=x, chunks=chunks)
    (tmp_path / "d.yaml").write_text(NO_BACKGROUND)
    return tmp_path / "d.yaml"


@pytest.mark.parametrize("case", ["2d-all-foreground", "one-plane", "nan-is-foreground"])
def test_no_background_is_refused_before_any_tile_is_written(tmp_path, cli, case):
    """An input (or one sub-array of it) without a voxel x == 0: InputError naming the step, its line and the
    sub-array, from the API and the CLI (exit 1, one line), before anything is written (no output, so the
    fixed input's run needs no --overwrite); the other planes would have been written first before."""
    from convpipe.errors import InputError

    if case == "2d-all-foreground":
        x = np.ones((1, 40, 36), np.uint8)
        where = "z=0"
    elif case == "one-plane":
        x = np.ones((6, 20, 24), np.uint16)
        x[:, 3, 4] = 0
        x[4, 3, 4] = 7  # plane z=4 has no background; planes 0-3 come first
        where = "z=4"
    else:
        x = np.full((3, 16, 16), np.nan, np.float32)
        x[:, 0, 0] = 0
        x[1, 0, 0] = np.nan  # NaN != 0: foreground
        where = "z=1"
    path = _stack(tmp_path, x, (1, 8, 12))
    want = rf"steps\[0\]\.distance_transform \(line 7\): the sub-array {where} \(over axes yx\) holds no background"
    with pytest.raises(InputError, match=want):
        convpipe.load(path).run()
    assert not (tmp_path / "out.zarr").exists()
    code, _, err = cli("run", str(path))
    assert code == 1 and len(err.strip().splitlines()[-1:]) == 1, err
    assert [ln for ln in err.splitlines() if ln.startswith("error")] == [err.strip().splitlines()[-1]], err
    assert re.search(want, err), err
    assert not (tmp_path / "out.zarr").exists()
    # the input fixed: the same spec runs (nothing to overwrite) and meets the oracle
    y = x.copy()
    y[np.isnan(y)] = 1
    y[:, -1, -1] = 0
    zarr.create_array(str(tmp_path / "in.zarr"), data=y, chunks=(1, 8, 12), overwrite=True)
    convpipe.load(path).run()
    got = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...]
    ref = np.stack([ndi.distance_transform_edt(p != 0) for p in y])
    assert_conforms(got, ref, "float32")


def test_default_sampling_from_ome_metadata(tmp_path):
    from convpipe.ome import write_multiscales
    from convpipe.verify import verify

    v = data.binary_blobs(length=24, n_dim=3, volume_fraction=0.6, rng=5)[:6].astype(np.uint8)
    g = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=3)
    g.create_array("0", shape=v.shape, chunks=(3, 8, 8), dtype=v.dtype, dimension_names=tuple("zyx"))[...] = v
    g.create_array("1", shape=(6, 12, 12), chunks=(3, 8, 8), dtype=v.dtype,
                   dimension_names=tuple("zyx"))[...] = v[:, ::2, ::2]
    write_multiscales(g, "zyx", ["0", "1"], [[2.5, 0.5, 0.5], [2.5, 1.0, 1.0]])
    spec = make_spec([{"distance_transform": {}}], "float64", input={"url": str(tmp_path / "img.zarr")},
                     output={"url": str(tmp_path / "out.zarr"), "ome": False})
    p = convpipe.load(spec)
    text = str(p.explain())
    assert "whole lines along z, sampling 2.5" in text and "whole lines along x, sampling 0.5" in text
    p.run()
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...]
    assert_conforms(out, ndi.distance_transform_edt(v != 0, sampling=(2.5, 0.5, 0.5)), "float64")
    res = verify(str(tmp_path / "out.zarr"), all=True)
    assert res.ok, res.summary()
    # an explicit sampling wins; level 1 reads its own voxel sizes
    spec1 = make_spec([{"distance_transform": {}}], "float64", input={"url": str(tmp_path / "img.zarr"), "level": 1},
                      output={"url": str(tmp_path / "out1.zarr"), "ome": False})
    convpipe.load(spec1).run()
    out1 = zarr.open_array(str(tmp_path / "out1.zarr"), mode="r")[...]
    assert_conforms(out1, ndi.distance_transform_edt(v[:, ::2, ::2] != 0, sampling=(2.5, 1.0, 1.0)), "float64")


def test_spec_errors():
    from convpipe.errors import SpecError

    for params, msg in (({"sampling": [1.0, 2.0, 3.0], "axes": "yx"}, "sampling has 3 values"),
                        ({"sampling": -1}, "sampling must be > 0"),
                        ({"sampling": {"q": 1}}, "axis 'q'")):
        with pytest.raises(SpecError, match=msg):
            convpipe.load(make_spec([{"distance_transform": params}])).apply(np.ones((3, 3)), "yx")
