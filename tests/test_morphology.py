"""Binary and grey morphology against scipy.ndimage on the whole array (SPEC.md "Objects").

Binary ops: scipy.ndimage.binary_* (x != 0, structure = connectivity or footprint, iterations, border_value
0) must be *equal* (uint8 0/1) on every tiling, with tiles much smaller than the structures and the
iterated halos; per plane (``axes: yx``) and 3-D; on scikit-image's coins and camera, a 3-D volume of
binary blobs, and random masks. Grey ops: scipy.ndimage.grey_* / white_tophat / black_tophat in every
mode, with anisotropic, even and asymmetric footprints. Never our own output as the reference.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
from harness import make_spec

import convpipe
from convpipe.oracles import assert_conforms, oracle

skimage = pytest.importorskip("skimage")
from skimage import data  # noqa: E402

BINARY = ("binary_erosion", "binary_dilation", "binary_opening", "binary_closing")
GREY = ("grey_erosion", "grey_dilation", "grey_opening", "grey_closing", "white_tophat", "black_tophat")
MODES = ("reflect", "mirror", "nearest", "wrap", "constant")
ASYM = [[0, 1, 1, 0], [1, 1, 0, 0], [0, 1, 0, 1]]  # 3 x 4: even along x, not symmetric
DISK = {"name": "disk", "radius": 2}


def _run(steps, x, dims, chunks, tile=None, precision="float64"):
    p = convpipe.load(make_spec(steps, precision))
    return np.asarray(p.apply(da.from_array(x, chunks=chunks), axes=dims, tile=tile).compute())


def _coins_mask():
    c = data.coins()[60:160, 40:160]
    return (c > 110).astype(np.uint8)


def _blobs3d():
    return data.binary_blobs(length=24, n_dim=3, volume_fraction=0.35, rng=3).astype(np.uint8)[:10]


STRUCTS = {"conn1": {}, "conn2": {"connectivity": 2}, "asym": {"footprint": ASYM}, "disk": {"footprint": DISK}}


@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize("struct", list(STRUCTS))
@pytest.mark.parametrize("name", BINARY)
def test_binary_2d_coins_equals_scipy(name, struct, iterations):
    x = _coins_mask()
    steps = [{name: dict(STRUCTS[struct], iterations=iterations)}]
    ref, _ = oracle(steps, x, "yx")
    st = (ndi.generate_binary_structure(2, STRUCTS[struct].get("connectivity", 1)) if "footprint" not in
          STRUCTS[struct] else None)
    if st is not None:  # the oracle is scipy's own call
        assert np.array_equal(ref, getattr(ndi, name)(x != 0, structure=st, iterations=iterations))
    # tiles of 6 x 7 voxels: far smaller than the iterated halo (up to 2 x 3 x 2 voxels each side)
    for chunks in ((6, 7), (37, 64)):
        out = _run(steps, x, "yx", chunks)
        assert out.dtype == np.uint8
        assert np.array_equal(out, ref), f"{name} {struct} it={iterations} chunks={chunks}: " \
                                         f"{int((out != ref).sum())} voxels differ"
    assert not np.array_equal(ref, x)  # the op did something


@pytest.mark.parametrize("name", BINARY)
def test_binary_border_value_zero_at_the_array_edge(name):
    """scipy's border_value 0: an all-foreground image erodes from its edges, a closing erodes there too,
    an iterated dilation never sees what it grew outside the array; every tiling agrees."""
    x = np.ones((9, 13), dtype=np.uint8)
    x[4, 6] = 0
    for it in (1, 2):
        steps = [{name: {"iterations": it, "connectivity": 2}}]
        ref = getattr(ndi, name)(x != 0, structure=np.ones((3, 3)), iterations=it).astype(np.uint8)
        for chunks in ((1, 1), (2, 3), (9, 13)):
            assert np.array_equal(_run(steps, x, "yx", chunks), ref), (name, it, chunks)


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("conn", [1, 2, 3])
def test_binary_3d_and_per_plane(name, conn):
    x = _blobs3d()
    steps = [{name: {"connectivity": conn, "iterations": 2}}]
    ref, _ = oracle(steps, x, "zyx")
    assert np.array_equal(ref, getattr(ndi, name)(x != 0, structure=ndi.generate_binary_structure(3, conn),
                                                  iterations=2))
    assert np.array_equal(_run(steps, x, "zyx", (3, 5, 4)), ref)
    if conn <= 2:  # per plane: a 2-D structure on every z plane
        steps = [{name: {"connectivity": conn, "axes": "yx"}}]
        ref2, _ = oracle(steps, x, "zyx")
        st = ndi.generate_binary_structure(2, conn)
        assert np.array_equal(ref2, np.stack([getattr(ndi, name)(p != 0, structure=st) for p in x]))
        assert np.array_equal(_run(steps, x, "zyx", (1, 4, 6)), ref2)
        assert not np.array_equal(ref, ref2)


def test_binary_reads_nonzero_of_the_stored_values():
    """x != 0 of the stored float64 values: 1e-50 is foreground (float32 would round it to 0), NaN too."""
    x = np.zeros((8, 9))
    x[2:6, 2:7] = 1e-50
    x[4, 4] = np.nan
    steps = [{"binary_erosion": {}}]
    ref = ndi.binary_erosion(x != 0).astype(np.uint8)
    assert ref.any()
    assert np.array_equal(_run(steps, x, "yx", (3, 4), precision="float32"), ref)


def test_random_masks_many_structures():
    rng = np.random.default_rng(5)
    for k in range(6):
        x = (rng.random((17, 23)) > 0.45).astype(np.float32)
        fp = (rng.random((1 + k % 3, 2 + k % 4)) > 0.4).astype(int)
        fp[0, 0] = 1
        name = BINARY[k % 4]
        steps = [{name: {"footprint": fp.tolist(), "iterations": 1 + k % 2}}]
        ref = getattr(ndi, name)(x != 0, structure=fp.astype(bool), iterations=1 + k % 2).astype(np.uint8)
        assert np.array_equal(_run(steps, x, "yx", (3, 5)), ref), (name, fp.tolist())


def test_iterations_multiply_the_halo_and_explain_shows_the_stages():
    p = convpipe.load(make_spec([{"binary_opening": {"footprint": DISK, "iterations": 3}}]))
    from convpipe.plan import ArrayInfo, make_plan

    plan = make_plan(p.spec.steps, ArrayInfo((64, 64), np.dtype(np.uint8), (16, 16), "yx"))
    assert plan.passes[0].halo == {"y": (12, 12), "x": (12, 12)}  # 2 stages x 3 iterations x radius 2
    assert "binary_opening (6 sub-steps)" in str(plan)
    assert plan.output.dtype == np.uint8


@pytest.mark.parametrize("name", GREY)
def test_grey_camera_every_mode(name):
    x = data.camera()[100:136, 200:245].astype(np.float64) / 255
    params = [{"size": {"y": 4, "x": 3}}, {"footprint": ASYM}, {"size": 5}]
    for k, mode in enumerate(MODES):
        p = dict(params[k % 3], mode=mode)
        if mode == "constant":
            p["cval"] = 0.3
        steps = [{name: p}]
        ref, _ = oracle(steps, x, "yx")
        kw = {"mode": mode, "cval": p.get("cval", 0.0)}
        if "size" in p:
            kw["size"] = (4, 3) if isinstance(p["size"], dict) else p["size"]
        else:
            kw["footprint"] = np.array(ASYM, bool)
        assert np.array_equal(ref, getattr(ndi, name)(x, **kw))  # the oracle is scipy's
        for chunks in ((4, 3), (13, 45)):
            out = _run(steps, x, "yx", chunks)
            assert_conforms(out, ref, "float64", what=f"{name} {p} chunks={chunks}")


@pytest.mark.parametrize("name", GREY)
def test_grey_wrap_across_many_chunks_and_a_short_axis(name):
    """A footprint longer than the axis with wrap / mirror (the halo is read around the array several times),
    tiles of one voxel: blocks made of several runs."""
    x = np.random.default_rng(2).standard_normal((4, 30))
    for mode in ("wrap", "mirror", "reflect"):
        steps = [{name: {"size": {"y": 7, "x": 2}, "mode": mode}}]
        ref, _ = oracle(steps, x, "yx")
        assert_conforms(_run(steps, x, "yx", (1, 3)), ref, "float64", what=f"{name} {mode}")


@pytest.mark.parametrize("name", GREY)
def test_grey_3d_float32_and_nan(name):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 11, 13)).astype(np.float32)
    fp = [[[1, 0], [1, 1]], [[0, 1], [0, 0]]]  # 2 x 2 x 2 over zyx
    steps = [{name: {"footprint": fp, "mode": "nearest"}}]
    ref, _ = oracle(steps, x, "zyx")
    assert_conforms(_run(steps, x, "zyx", (2, 3, 4), precision="float32"), ref, "float32", what=name)
    x[3, 5, 6] = np.nan  # a window holding the NaN is NaN; nothing else changes
    ref, _ = oracle(steps, x, "zyx")
    out = _run(steps, x, "zyx", (2, 3, 4), precision="float32")
    assert_conforms(out, ref, "float32", what=f"{name} with NaN")
    assert 0 < np.isnan(ref).sum() < 30


def test_grey_size_map_names_the_axes():
    x = np.random.default_rng(0).standard_normal((5, 8, 9))
    steps = [{"grey_dilation": {"size": {"z": 3, "x": 2}}}]
    ref, _ = oracle(steps, x, "zyx")
    assert np.array_equal(ref, ndi.grey_dilation(x, size=(3, 1, 2)))
    assert_conforms(_run(steps, x, "zyx", (2, 3, 3)), ref, "float64")


def test_real_camera_pipeline_tophat_then_threshold_then_opening():
    x = data.camera()[::2, ::2]
    steps = [{"white_tophat": {"footprint": DISK}}, {"threshold": {"value": 20}},
             {"binary_opening": {"connectivity": 2}}]
    ref, _ = oracle(steps, x, "yx")
    assert ref.sum() > 100
    out = _run(steps, x, "yx", (24, 40))
    assert out.dtype == np.uint8 and np.array_equal(out, ref)


def test_spec_errors_name_the_field():
    from convpipe.errors import SpecError

    bad = [({"binary_erosion": {"connectivity": 2, "footprint": ASYM}}, "not both"),
           ({"binary_dilation": {"iterations": 0}}, "iterations"),
           ({"grey_erosion": {}}, "size or footprint"),
           ({"grey_opening": {"size": 3, "footprint": ASYM}}, "size or footprint"),
           ({"binary_erosion": {"connectivity": 3, "axes": "yx"}}, "connectivity 3"),
           ({"grey_closing": {"footprint": [[[1]]], "axes": "yx"}}, "3-D footprint")]
    for step, msg in bad:
        with pytest.raises(SpecError, match=msg):
            p = convpipe.load(make_spec([step]))
            p.apply(np.zeros((4, 4)), "yx")
