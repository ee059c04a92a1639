"""OME-Zarr run outputs (convpipe.outputs): the group, level 0, the pyramid and its NGFF metadata.

Pyramid levels are checked against a numpy reference (each level from the one before: 2x2 mean in
float64 over edge-replicated pixels cast back to the level dtype, or every other pixel for
``nearest``), the metadata against the NGFF models (ome-zarr-models), and every level must open with
``convpipe.ome.open_level``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

import convpipe
from convpipe.errors import InputError, OutputExistsError
from convpipe.io import output_state
from convpipe.ome import (
    OmeInfo,
    OmeLevel,
    open_level,
    read_multiscales,
    write_multiscales,
)
from convpipe.outputs import (
    create_ome_output,
    finish_ome_output,
    is_ome_output,
    open_sink,
    output_physical,
    provenance_node,
    pyramid_method,
)

INFO = OmeInfo(
    version="0.5", axes="zyx", axis_names=("z", "y", "x"), axis_types=("space",) * 3,
    units=("micrometer",) * 3,
    levels=(OmeLevel("0", (2.0, 0.25, 0.25), (10.0, 1.0, 2.0)), OmeLevel("1", (2.0, 0.5, 0.5), (10.0, 1.125, 2.125))),
    name="cells",
)


def validate_ngff(url: str | Path, fmt: int) -> None:
    """Validate with ome-zarr-models (warnings are errors: a warning means not-quite-valid metadata)."""
    group = zarr.open_group(str(url), mode="r")
    try:
        from ome_zarr_models.v04.image import Image as Image04
        from ome_zarr_models.v05.image import Image as Image05
    except ImportError:  # pragma: no cover - the models are a test dependency
        attrs = group.attrs.asdict()
        assert ("multiscales" in attrs) if fmt == 2 else (attrs["ome"]["version"] == "0.5")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (Image04 if fmt == 2 else Image05).from_zarr(group)


def ref_mean(a: np.ndarray) -> np.ndarray:
    """2x2 mean over the last two axes, odd edges edge-replicated, float64, cast back to a's dtype."""
    pad = [(0, 0)] * (a.ndim - 2) + [(0, a.shape[-2] % 2), (0, a.shape[-1] % 2)]
    p = np.pad(a.astype(np.float64), pad, mode="edge")
    rows = p[..., 0::2, :] + p[..., 1::2, :]
    m = (rows[..., 0::2] + rows[..., 1::2]) / 4.0
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return np.clip(np.rint(m), info.min, info.max).astype(a.dtype)
    return m.astype(a.dtype)


def ref_nearest(a: np.ndarray) -> np.ndarray:
    return a[..., ::2, ::2]


def _make(url: Path, data: np.ndarray, chunks, fmt: int, *, axes="zyx", info=INFO, level=0, overwrite=False,
          attrs=None) -> zarr.Array:
    arr = create_ome_output(str(url), shape=data.shape, chunks=chunks, dtype=data.dtype, axes=axes, zarr_format=fmt,
                            attrs=attrs if attrs is not None else {"convpipe": {"complete": False, "spec_hash": "x"}},
                            overwrite=overwrite, input_ome=info, input_level=level)
    arr[...] = data
    return arr


# --------------------------------------------------------------------------- pyramid values and metadata


@pytest.mark.parametrize("fmt", [2, 3])
def test_mean_pyramid_equals_numpy_reference_and_validates(tmp_path: Path, fmt: int) -> None:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((3, 45, 38)).astype(np.float32)  # odd sizes at every level
    url = tmp_path / "out.zarr"
    # odd chunks: downsampling must re-align them so no 2x2 block straddles two tasks
    _make(url, data, (2, 15, 13), fmt)
    shapes = finish_ome_output(str(url), levels=3, method="mean", axes="zyx", input_ome=INFO)
    assert shapes == [(3, 45, 38), (3, 23, 19), (3, 12, 10), (3, 6, 5)]
    validate_ngff(url, fmt)

    ref = data
    for k in range(4):
        arr, axes, info = open_level(str(url), k)
        assert axes == "zyx" and arr.shape == shapes[k] and arr.dtype == np.float32
        # every level has level 0's chunks (clipped), so writes were chunk-aligned
        assert tuple(arr.chunks) == tuple(min(c, n) for c, n in zip((2, 15, 13), arr.shape))
        np.testing.assert_allclose(arr[...], ref, rtol=1e-6, atol=0)
        ref = ref_mean(ref)

    info = read_multiscales(zarr.open_group(str(url), mode="r"))
    assert info is not None and info.version == ("0.4" if fmt == 2 else "0.5")
    assert info.units == ("micrometer",) * 3
    assert info.method == "mean"
    assert info.name == "cells"
    for k, lv in enumerate(info.levels):
        # scale of level k = input scale x 2^k on y and x; z untouched
        assert lv.scale == pytest.approx((2.0, 0.25 * 2**k, 0.25 * 2**k))
        # a 2x2 mean moves voxel 0's centre by half the added voxel size
        shift = (0.25 * 2**k - 0.25) / 2
        assert lv.translation == pytest.approx((10.0, 1.0 + shift, 2.0 + shift))


@pytest.mark.parametrize("fmt", [2, 3])
def test_nearest_pyramid_for_masks_and_labels(tmp_path: Path, fmt: int) -> None:
    rng = np.random.default_rng(4)
    mask = (rng.random((2, 33, 40)) > 0.7).astype(np.uint8)  # what `threshold` writes
    assert pyramid_method(mask.dtype) == "nearest"
    url = tmp_path / "mask.zarr"
    _make(url, mask, (1, 16, 16), fmt)
    finish_ome_output(str(url), levels=2, axes="zyx", input_ome=INFO)  # method from the dtype
    validate_ngff(url, fmt)
    ref = mask
    for k in range(3):
        got = open_level(str(url), k)[0][...]
        np.testing.assert_array_equal(got, ref)
        assert set(np.unique(got)) <= {0, 1}  # never a mean's 0.25 / 0.5
        ref = ref_nearest(ref)
    info = read_multiscales(zarr.open_group(str(url), mode="r"))
    assert info.method == "nearest"
    assert [lv.translation for lv in info.levels] == [(10.0, 1.0, 2.0)] * 3  # nearest keeps voxel 0 in place


def test_pyramid_method_rule() -> None:
    assert pyramid_method("float32") == pyramid_method(np.float64) == "mean"
    for dt in ("uint8", "uint16", "int32", "bool"):
        assert pyramid_method(dt) == "nearest"


def test_integer_mean_rounds_half_to_even(tmp_path: Path) -> None:
    data = np.array([[[0, 1, 2, 2], [0, 2, 3, 3]]], dtype=np.uint16)  # means 0.75 -> 1, 2.5 -> 2
    url = tmp_path / "u16.zarr"
    _make(url, data, (1, 2, 4), 3)
    finish_ome_output(str(url), levels=1, method="mean", axes="zyx")
    np.testing.assert_array_equal(open_level(str(url), 1)[0][...], ref_mean(data))
    np.testing.assert_array_equal(open_level(str(url), 1)[0][...], [[[1, 2]]])


# --------------------------------------------------------------------------- provenance and layout


def test_provenance_on_the_group_only(tmp_path: Path) -> None:
    url = tmp_path / "out.zarr"
    prov = {"complete": False, "spec_hash": "abc", "version": convpipe.__version__}
    arr = _make(url, np.zeros((2, 8, 8), np.float32), (1, 8, 8), 3, attrs={"convpipe": prov})
    assert "convpipe" not in arr.attrs
    assert output_state(str(url)) == prov  # io.output_state reads zarr.open(url): the group
    assert is_ome_output(str(url))
    assert not is_ome_output(str(tmp_path / "nothing.zarr"))
    # resuming writes into level 0
    sink = open_sink(str(url))
    assert isinstance(sink, zarr.Array) and sink.path == "0"
    # a half-written output is already valid single-level NGFF that says it is partial
    validate_ngff(url, 3)
    assert open_level(str(url), 0)[0].shape == (2, 8, 8)
    node = provenance_node(str(url))
    node.attrs.update({"convpipe": {**prov, "complete": True}})
    assert output_state(str(url))["complete"] is True
    assert "ome" in zarr.open_group(str(url), mode="r").attrs  # NGFF metadata kept beside it


def test_plain_array_sink_and_provenance(tmp_path: Path) -> None:
    url = tmp_path / "plain.zarr"
    a = zarr.create_array(str(url), shape=(4, 4), chunks=(2, 2), dtype="f4", attributes={"convpipe": {"x": 1}})
    assert not is_ome_output(str(url))
    assert open_sink(str(url)).shape == a.shape
    assert dict(provenance_node(str(url)).attrs)["convpipe"] == {"x": 1}


def test_existing_output_refused_unless_overwrite(tmp_path: Path) -> None:
    url = tmp_path / "out.zarr"
    _make(url, np.ones((1, 4, 4), np.float32), (1, 4, 4), 3)
    with pytest.raises(OutputExistsError, match="exists"):
        _make(url, np.ones((1, 4, 4), np.float32), (1, 4, 4), 3)
    _make(url, np.full((1, 6, 6), 2, np.float32), (1, 4, 4), 2, overwrite=True)  # v3 -> v2 replaced
    arr, _, info = open_level(str(url), 0)
    assert arr.shape == (1, 6, 6) and info.version == "0.4"


def test_axes_ngff_cannot_express_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="OME-Zarr"):
        create_ome_output(str(tmp_path / "o.zarr"), shape=(4, 4, 4), chunks=(4, 4, 4), dtype="f4", axes="zxy",
                          zarr_format=3, attrs={}, overwrite=False)
    with pytest.raises(InputError, match="y' and 'x'"):
        create_ome_output(str(tmp_path / "o2.zarr"), shape=(4, 4), chunks=(4, 4), dtype="f4", axes="zy",
                          zarr_format=3, attrs={}, overwrite=False)


def test_finish_is_idempotent_and_drops_stale_levels(tmp_path: Path) -> None:
    url = tmp_path / "out.zarr"
    data = np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32)
    _make(url, data, (1, 8, 8), 3)
    finish_ome_output(str(url), levels=3, axes="zyx")
    first = [open_level(str(url), k)[0][...] for k in range(4)]
    finish_ome_output(str(url), levels=3, axes="zyx")  # a resumed run finishes again
    for k in range(4):
        np.testing.assert_array_equal(open_level(str(url), k)[0][...], first[k])
    finish_ome_output(str(url), levels=1, axes="zyx")
    g = zarr.open_group(str(url), mode="r")
    assert "1" in g and "2" not in g and "3" not in g
    assert len(read_multiscales(g).levels) == 2
    validate_ngff(url, 3)


def test_physical_metadata_follows_axes_and_input_level(tmp_path: Path) -> None:
    # the pipeline added a channel axis (filter_bank): c gets scale 1 and no unit
    scale, trans, units = output_physical("czyx", INFO, input_level=1)
    assert scale == [1.0, 2.0, 0.5, 0.5] and trans == [0.0, 10.0, 1.125, 2.125]
    assert units == {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
    assert output_physical("zyx", None) == ([1.0] * 3, [0.0] * 3, {})

    url = tmp_path / "fb.zarr"
    data = np.random.default_rng(5).random((3, 2, 20, 18)).astype(np.float32)
    _make(url, data, (1, 1, 10, 9), 3, axes="czyx", level=1)
    finish_ome_output(str(url), levels=1, axes="czyx", input_ome=INFO, input_level=1)
    validate_ngff(url, 3)
    info = read_multiscales(zarr.open_group(str(url), mode="r"))
    assert info.axes == "czyx"
    assert info.levels[1].scale == pytest.approx((1.0, 2.0, 1.0, 1.0))
    np.testing.assert_allclose(open_level(str(url), 1)[0][...], ref_mean(data), rtol=1e-6)


def test_remote_store_via_fsspec_memory() -> None:
    url = "memory://convpipe-ome-output-test/out.zarr"
    data = np.random.default_rng(6).random((1, 12, 10)).astype(np.float32)
    arr = create_ome_output(url, shape=data.shape, chunks=(1, 6, 6), dtype=data.dtype, axes="zyx", zarr_format=3,
                            attrs={"convpipe": {"complete": False}}, overwrite=True, storage_options={})
    arr[...] = data
    finish_ome_output(url, levels=1, axes="zyx", storage_options={})
    np.testing.assert_allclose(open_level(url, 1)[0][...], ref_mean(data), rtol=1e-6)


# --------------------------------------------------------------------------- through Pipeline.run

@pytest.mark.parametrize("fmt", [2, 3])
def test_run_writes_ome_output_with_pyramid(tmp_path: Path, fmt: int) -> None:
    rng = np.random.default_rng(8)
    x = rng.random((4, 40, 36)).astype(np.float32)
    g = zarr.open_group(str(tmp_path / "in.zarr"), mode="w", zarr_format=3)
    a = g.create_array("0", shape=x.shape, chunks=(2, 20, 18), dtype=x.dtype, dimension_names=tuple("zyx"))
    a[...] = x
    write_multiscales(g, "zyx", ["0"], [[3.0, 0.5, 0.5]], units={"z": "µm", "y": "µm", "x": "µm"}, name="in")
    spec = {"convpipe": 1, "name": "ome-run", "input": {"url": str(tmp_path / "in.zarr")},
            "output": {"url": str(tmp_path / "out.zarr"), "pyramid": 2, "zarr_format": fmt},
            "steps": [{"gaussian": {"sigma": 1}}]}
    res = convpipe.load(spec).run()
    url = str(tmp_path / "out.zarr")
    validate_ngff(url, fmt)
    state = output_state(url)
    assert state["complete"] is True and state["version"] == convpipe.__version__
    lv0 = open_level(url, 0)[0][...]
    from scipy.ndimage import gaussian_filter

    ref = np.stack([gaussian_filter(p.astype(np.float64), 1) for p in x]).astype(np.float32)
    np.testing.assert_allclose(lv0, ref, atol=1e-5)
    r = lv0
    for k in range(1, 3):
        r = ref_mean(r)
        np.testing.assert_allclose(open_level(url, k)[0][...], r, rtol=1e-6)
    info = read_multiscales(zarr.open_group(url, mode="r"))
    assert info.levels[2].scale == pytest.approx((3.0, 2.0, 2.0))
    assert info.units == ("micrometer",) * 3
    assert res.outputs.get("ome", {}).get("levels") == 3
