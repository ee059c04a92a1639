"""OME-Zarr helpers: metadata round trips (validated against the NGFF models), open_level, pyramids."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from convpipe.errors import InputError
from convpipe.ome import (
    downsample_level,
    ngff_axes_problem,
    normalize_unit,
    open_level,
    pyramid_transforms,
    read_multiscales,
    write_multiscales,
)


def _level_kwargs(fmt: int, axes: str) -> dict:
    # what NGFF asks of the level arrays: "/" separators (0.4), dimension_names (0.5)
    if fmt == 2:
        return {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    return {"dimension_names": tuple(axes)}


def _make_image(path: Path, fmt: int, axes: str = "zyx", shapes=((4, 32, 30), (4, 16, 15))) -> zarr.Group:
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    for i, shape in enumerate(shapes):
        a = g.create_array(str(i), shape=shape, chunks=shape, dtype="u2", **_level_kwargs(fmt, axes))
        a[...] = np.full(shape, i, dtype="u2")
    return g


def validate_ngff(path: Path, fmt: int) -> None:
    """Validate with ome-zarr-models when installed, else check the required keys by hand."""
    group = zarr.open_group(str(path), mode="r")
    try:
        from ome_zarr_models.v04.image import Image as Image04
        from ome_zarr_models.v05.image import Image as Image05
    except ImportError:
        attrs = group.attrs.asdict()
        ms = attrs["multiscales"] if fmt == 2 else attrs["ome"]["multiscales"]
        if fmt == 3:
            assert attrs["ome"]["version"] == "0.5"
        else:
            assert ms[0]["version"] == "0.4"
        assert 2 <= len(ms[0]["axes"]) <= 5
        for d in ms[0]["datasets"]:
            assert d["coordinateTransformations"][0]["type"] == "scale"
            assert d["path"] in group
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning from the models means not-quite-valid metadata
        (Image04 if fmt == 2 else Image05).from_zarr(group)


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("fmt", [2, 3])
def test_write_then_read_multiscales_validates(tmp_path: Path, fmt: int) -> None:
    g = _make_image(tmp_path / "img.zarr", fmt)
    scales, trans = pyramid_transforms([2.0, 0.5, 0.5], "zyx", 2)
    written = write_multiscales(
        g, "zyx", ["0", "1"], scales, translations=trans, units={"z": "µm", "y": "um", "x": "micron"},
        name="cells", method="mean",
    )
    if fmt == 2:
        assert written["multiscales"][0]["version"] == "0.4"
        assert "ome" not in g.attrs
    else:
        assert written["ome"]["version"] == "0.5"
        assert "multiscales" not in g.attrs  # 0.5 keeps everything under "ome"
    validate_ngff(tmp_path / "img.zarr", fmt)

    info = read_multiscales(zarr.open_group(str(tmp_path / "img.zarr"), mode="r"))
    assert info is not None
    assert info.version == ("0.4" if fmt == 2 else "0.5")
    assert info.axes == "zyx"
    assert info.paths == ("0", "1")
    assert info.units == ("micrometer",) * 3
    assert info.unit("z") == "micrometer"
    assert info.levels[0].scale == (2.0, 0.5, 0.5)
    assert info.levels[1].scale == (2.0, 1.0, 1.0)
    # a 2x2 mean centres level-1 voxel 0 half a level-0 voxel further along y and x
    assert info.levels[1].translation == (0.0, 0.25, 0.25)
    assert info.name == "cells" and info.method == "mean"


def test_write_keeps_other_attributes(tmp_path: Path) -> None:
    g = _make_image(tmp_path / "img.zarr", 3)
    g.attrs["ome"] = {"omero": {"channels": []}}
    g.attrs["convpipe"] = {"spec": "x"}
    write_multiscales(g, "zyx", ["0", "1"], [[1, 1, 1], [1, 2, 2]])
    attrs = zarr.open_group(str(tmp_path / "img.zarr"), mode="r").attrs.asdict()
    assert attrs["convpipe"] == {"spec": "x"}
    assert attrs["ome"]["omero"] == {"channels": []}
    assert attrs["ome"]["multiscales"][0]["datasets"][1]["path"] == "1"


@pytest.mark.parametrize(
    ("axes", "levels", "scales", "units", "match"),
    [
        ("yxc", ["0"], [[1, 1, 1]], None, "OME-Zarr order"),
        ("zq", ["0"], [[1, 1]], None, "distinct letters"),
        ("cz", ["0"], [[1, 1]], None, "lack 'y' and 'x'"),
        ("yx", ["0", "1"], [[1, 1]], None, "2 levels but 1 scales"),
        ("yx", ["0"], [[1, 1, 1]], None, "scale has 3 values"),
        ("yx", ["0"], [[1, 0]], None, "positive"),
        ("yx", ["0"], [[1, 1]], {"y": "parsec-ish"}, "not an NGFF unit"),
        ("tyx", ["0"], [[1, 1, 1]], {"t": "micrometer"}, "not an NGFF unit"),
        ("yx", ["0"], [[1, 1]], {"z": "micrometer"}, "not in axes"),
    ],
)
def test_write_multiscales_refuses_invalid(tmp_path: Path, axes, levels, scales, units, match) -> None:
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    with pytest.raises(ValueError, match=match):
        write_multiscales(g, axes, levels, scales, units=units)


def test_ngff_axes_problem_and_units() -> None:
    assert ngff_axes_problem("tczyx") is None
    assert ngff_axes_problem("yx") is None
    assert "order" in ngff_axes_problem("zcyx")
    assert normalize_unit("µm") == "micrometer"
    assert normalize_unit("\\u00B5m") == "micrometer"  # ImageJ's escaped micro sign
    assert normalize_unit("nm") == "nanometer"
    assert normalize_unit("ms") == "millisecond"
    assert normalize_unit("second") == "second"
    assert normalize_unit("pixel") is None


def test_read_lenient_layouts(tmp_path: Path) -> None:
    g = _make_image(tmp_path / "old.zarr", 2, shapes=((1, 1, 4, 32, 30), (1, 1, 4, 16, 15)))
    # NGFF 0.3: axes as strings, no coordinate transformations (scales come from the shapes)
    g.attrs["multiscales"] = [{"version": "0.3", "axes": list("tczyx"), "datasets": [{"path": "0"}, {"path": "1"}]}]
    info = read_multiscales(g)
    assert info is not None and info.axes == "tczyx"
    assert info.levels[1].scale == (1.0, 1.0, 1.0, 2.0, 2.0)

    # a multiscale-wide transform is applied after each dataset's own
    g2 = _make_image(tmp_path / "glob.zarr", 3)
    g2.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{
            "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]},
                {"path": "1", "coordinateTransformations": [
                    {"type": "scale", "scale": [1, 2, 2]}, {"type": "translation", "translation": [0, 0.5, 0.5]}]},
            ],
            "coordinateTransformations": [{"type": "scale", "scale": [3, 0.1, 0.1]}],
        }],
    }
    info2 = read_multiscales(g2)
    assert info2 is not None
    assert info2.levels[1].scale == pytest.approx((3.0, 0.2, 0.2))
    assert info2.levels[1].translation == pytest.approx((0.0, 0.05, 0.05))

    # free-text axis names map by type when they can, else axes is None
    g2.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{
            "axes": [{"name": "time", "type": "time"}, {"name": "Y", "type": "space"}, {"name": "X", "type": "space"}],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}],
        }],
    }
    assert read_multiscales(g2).axes == "tyx"
    g2.attrs["ome"]["multiscales"][0]["axes"][0] = {"name": "angle", "type": "space"}
    g2.attrs["ome"] = dict(g2.attrs["ome"])
    info3 = read_multiscales(g2)
    assert info3.axes is None and info3.axis_names == ("angle", "Y", "X")

    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    assert read_multiscales(plain) is None
    plain.attrs["multiscales"] = "nonsense"
    with pytest.raises(InputError, match="non-empty list"):
        read_multiscales(plain)


# --------------------------------------------------------------------------- open_level


@pytest.mark.parametrize("fmt", [2, 3])
def test_open_level(tmp_path: Path, fmt: int) -> None:
    url = str(tmp_path / "img.zarr")
    g = _make_image(Path(url), fmt)
    write_multiscales(g, "zyx", ["0", "1"], [[1, 1, 1], [1, 2, 2]])
    arr, axes, info = open_level(url, 1)
    assert arr.shape == (4, 16, 15) and axes == "zyx" and info is not None
    assert int(arr[0, 0, 0]) == 1
    with pytest.raises(InputError, match=r"level 2 does not exist; this OME-Zarr has 2 level\(s\)") as e:
        open_level(url, 2)
    assert url in str(e.value)
    with pytest.raises(InputError, match="non-negative"):
        open_level(url, -1)

    # listed in the metadata, gone from the store
    write_multiscales(g, "zyx", ["0", "1", "2"], [[1, 1, 1], [1, 2, 2], [1, 4, 4]])
    with pytest.raises(InputError, match=r"level 2 \(path '2'\) is listed .* but missing"):
        open_level(url, 2)


def test_open_level_plain_arrays_and_errors(tmp_path: Path) -> None:
    url = str(tmp_path / "plain.zarr")
    zarr.create_array(store=url, shape=(3, 8, 8), dtype="f4", dimension_names=("c", "y", "x"))
    arr, axes, info = open_level(url)
    assert arr.shape == (3, 8, 8) and axes == "cyx" and info is None
    with pytest.raises(InputError, match=r"plain zarr array.*no level 1"):
        open_level(url, 1)

    url2 = str(tmp_path / "v2.zarr")
    zarr.create_array(store=url2, shape=(8, 8), dtype="f4", zarr_format=2)
    assert open_level(url2)[1] is None  # nothing says which axes: the caller decides

    missing = str(tmp_path / "nothing.zarr")
    with pytest.raises(InputError, match="no zarr array or group there") as e:
        open_level(missing)
    assert missing in str(e.value)

    grp = zarr.open_group(str(tmp_path / "grp.zarr"), mode="w")
    grp.create_array("raw", shape=(4, 4), dtype="u1")
    with pytest.raises(InputError, match=r"without OME-Zarr multiscales.*grp\.zarr/raw"):
        open_level(str(tmp_path / "grp.zarr"))

    with pytest.raises(InputError, match="storage_options given for a local path"):
        open_level(url, 0, {"anon": True})


def test_open_level_memory_url() -> None:
    # any fsspec URL works the same way; memory:// needs no server
    url = "memory://convpipe-test-ome/a.zarr"
    zarr.create_array(store=url, shape=(4, 5), dtype="i4", storage_options={}, overwrite=True)[...] = 7
    arr, _, _ = open_level(url, 0, {})
    assert int(arr[...].sum()) == 7 * 20


# --------------------------------------------------------------------------- pyramids


def _mean_reference(x: np.ndarray) -> np.ndarray:
    """2x2 mean over the last two axes by explicit loops: edge blocks average what they have."""
    ny, nx = x.shape[-2:]
    out = np.empty((*x.shape[:-2], (ny + 1) // 2, (nx + 1) // 2), dtype=np.float64)
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            out[..., i, j] = x[..., 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].astype(np.float64).mean(axis=(-2, -1))
    return out


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((3, 32, 48), (2, 16, 16)), ((2, 33, 47), (1, 7, 9)), ((1, 1, 5), (1, 1, 2)), ((5, 17), (5, 5))],
)
def test_downsample_mean_matches_reference(shape, chunks) -> None:
    x = np.random.default_rng(1).normal(size=shape)
    axes = "zyx"[-len(shape):]
    got = downsample_level(da.from_array(x, chunks=chunks), axes).compute()
    ref = _mean_reference(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    # the documented equivalence: edge replication, then a plain 2x2 mean
    pad = [(0, 0)] * (x.ndim - 2) + [(0, shape[-2] % 2), (0, shape[-1] % 2)]
    p = np.pad(x, pad, mode="edge")
    alt = p.reshape(*p.shape[:-2], p.shape[-2] // 2, 2, p.shape[-1] // 2, 2).mean(axis=(-3, -1))
    np.testing.assert_allclose(got, alt, rtol=0, atol=1e-12)


def test_downsample_axes_not_last_integer_dtype_and_nearest() -> None:
    x = np.random.default_rng(2).integers(0, 65535, size=(9, 2, 11), dtype=np.uint16)  # "yzx"
    d = da.from_array(x, chunks=(3, 1, 4))
    got = downsample_level(d, "yzx").compute()
    assert got.dtype == np.uint16
    ref = np.moveaxis(_mean_reference(np.moveaxis(x, 0, 1)), 1, 0)
    np.testing.assert_array_equal(got, np.rint(ref).astype(np.uint16))

    near = downsample_level(d, "yzx", method="nearest").compute()
    np.testing.assert_array_equal(near, x[::2, :, ::2])
    assert near.shape == got.shape  # both methods give ceil(n / 2)

    with pytest.raises(ValueError, match="nearest"):
        downsample_level(da.zeros((4, 4), dtype=bool), "yx")
    with pytest.raises(ValueError, match="'y' and 'x'"):
        downsample_level(da.zeros((4, 4)), "zx")


def test_downsample_names_differ_per_input() -> None:
    # two levels built from different arrays in one graph must never share keys
    a = downsample_level(da.ones((8, 8), chunks=4), "yx")
    b = downsample_level(da.zeros((8, 8), chunks=4), "yx")
    assert a.name != b.name
    assert float((a - b).sum().compute()) == 16.0


def test_pyramid_transforms() -> None:
    scales, trans = pyramid_transforms([3.0, 0.5, 0.5], "zyx", 3, translation=[10.0, 1.0, 2.0])
    assert scales == [[3, 0.5, 0.5], [3, 1, 1], [3, 2, 2]]
    assert trans == [[10, 1, 2], [10, 1.25, 2.25], [10, 1.75, 2.75]]
    _, tn = pyramid_transforms([1.0, 1.0], "yx", 2, method="nearest")
    assert tn == [[0, 0], [0, 0]]


# --------------------------------------------------------------------------- written with the models, read tolerantly

_SPACE_UNITS = ["micrometer", "nanometer", "millimeter", "µm", "um", "nm"]
_TIME_UNITS = ["second", "millisecond", "ms", "s", "minute"]


@st.composite
def _multiscales(draw):
    """Any metadata convpipe may write: NGFF axes, 1-4 levels growing coarser, optional translations/units."""
    axes = "".join(a for a in "tcz" if draw(st.booleans())) + "yx"
    n = draw(st.integers(1, 4))
    pos = st.floats(1e-3, 1e3, allow_nan=False)
    base = [draw(pos) for _ in axes]
    growth = [[draw(st.sampled_from([1.0, 2.0])) for _ in axes] for _ in range(n - 1)]
    scales = [base]
    for g in growth:
        scales.append([s * f for s, f in zip(scales[-1], g)])
    trans = None
    if draw(st.booleans()):
        trans = [[draw(st.floats(-1e3, 1e3, allow_nan=False)) for _ in axes] for _ in range(n)]
    units = {a: draw(st.sampled_from(_TIME_UNITS if a == "t" else _SPACE_UNITS))
             for a in axes if a != "c" and draw(st.booleans())}
    name = draw(st.none() | st.text(min_size=1, max_size=12))
    method = draw(st.none() | st.sampled_from(["mean", "nearest"]))
    return axes, scales, trans, units, name, method


@settings(max_examples=60, deadline=None)
@given(spec=_multiscales(), fmt=st.sampled_from([2, 3]))
def test_written_metadata_is_valid_ngff_and_reads_back(tmp_path_factory, spec, fmt) -> None:
    """For any input the writer accepts: the group validates with ome-zarr-models (warnings are errors), and
    read_multiscales gives back every level's scale and translation, the units (normalised), name, method."""
    axes, scales, trans, units, name, method = spec
    path = tmp_path_factory.mktemp("ms") / "img.zarr"
    shapes = [tuple(2 if a in "tcz" else 8 for a in axes)] * len(scales)
    g = _make_image(path, fmt, axes, shapes=shapes)
    write_multiscales(g, axes, [str(i) for i in range(len(scales))], scales, translations=trans, units=units,
                      name=name, method=method)
    validate_ngff(path, fmt)
    info = read_multiscales(zarr.open_group(str(path), mode="r"))
    assert info.axes == axes and info.paths == tuple(str(i) for i in range(len(scales)))
    for k, lv in enumerate(info.levels):
        assert lv.scale == pytest.approx(tuple(scales[k]), rel=1e-12)
        assert lv.translation == pytest.approx(tuple(trans[k]) if trans else (0.0,) * len(axes), abs=1e-9)
    assert info.units == tuple(normalize_unit(units[a]) if a in units else None for a in axes)
    assert info.name == name and info.method == method


def test_models_refuse_what_is_not_ngff(tmp_path: Path) -> None:
    """What the models check and the hand-written checks do not: levels must go from fine to coarse."""
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    with pytest.raises(ValueError, match="not valid NGFF 0.5.*lower resolution"):
        write_multiscales(g, "yx", ["0", "1"], [[2, 2], [1, 1]])
    assert "ome" not in g.attrs  # nothing written


@pytest.mark.parametrize(
    ("axes_md", "datasets", "expect_axes", "expect_scale1"),
    [
        # identity transforms (NGFF 0.4 allows none on datasets; seen in early converters)
        ([{"name": a, "type": "space"} for a in "zyx"], [{"path": "0", "coordinateTransformations": [{"type": "identity"}]},
                                                        {"path": "1", "coordinateTransformations": [{"type": "identity"}]}],
         "zyx", (1.0, 2.0, 2.0)),
        # channel last, as some writers store RGB
        ([{"name": "y", "type": "space"}, {"name": "x", "type": "space"}, {"name": "c", "type": "channel"}],
         [{"path": "0"}, {"path": "1"}], "yxc", (2.0, 2.0, 1.0)),
        # levels listed coarse to fine
        ([{"name": a, "type": "space"} for a in "zyx"],
         [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 2]}]},
          {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}], "zyx", (1.0, 1.0, 1.0)),
    ],
)
def test_reader_accepts_real_world_metadata_the_models_refuse(tmp_path: Path, axes_md, datasets, expect_axes,
                                                              expect_scale1) -> None:
    shapes = ((4, 32, 30), (4, 16, 15)) if expect_axes != "yxc" else ((32, 30, 3), (16, 15, 3))
    g = _make_image(tmp_path / "rw.zarr", 3, shapes=shapes)
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes_md, "datasets": datasets}]}
    info = read_multiscales(g)
    assert info.axes == expect_axes
    assert info.levels[1].scale == pytest.approx(expect_scale1)
    arr, axes, _ = open_level(str(tmp_path / "rw.zarr"), 1)
    assert axes == expect_axes and arr.shape == shapes[1]
