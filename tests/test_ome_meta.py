"""convpipe.ome.meta (explain's zarr-free reader) agrees with zarr's own answer, or leaves the answer to zarr.

Every case is written with zarr itself and read both ways: :func:`convpipe.ome.open_level` (zarr) and
:func:`convpipe.ome.meta.open_level_meta` (the metadata documents). Where the light reader answers, shape,
dtype, chunks, axes and the OME info must equal zarr's; the cases it must leave to zarr (sharding, big-endian
data, consolidated metadata, URLs, missing paths, malformed multiscales) must give None, so that zarr opens
them (and words their errors) as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from convpipe.errors import InputError
from convpipe.ome import open_level, write_multiscales
from convpipe.ome.meta import ArrayMeta, open_level_meta, read_array_meta


def _agree(url: str, level: int = 0) -> ArrayMeta:
    arr, axes, info = open_level(url, level)
    got = open_level_meta(url, level)
    assert got is not None, f"{url}: the light reader left a plain case to zarr"
    meta, m_axes, m_info = got
    assert meta.shape == tuple(arr.shape)
    assert meta.chunks == tuple(arr.chunks)
    assert meta.dtype == arr.dtype and str(meta.dtype) == str(arr.dtype)
    assert meta.ndim == arr.ndim
    assert m_axes == axes
    assert m_info == info
    return meta


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("dtype", ["u1", "u2", "i4", "f4", "f8", "bool", "u8", "f2"])
def test_plain_arrays_agree(tmp_path: Path, fmt: int, dtype: str) -> None:
    url = str(tmp_path / "a.zarr")
    zarr.create_array(store=url, shape=(5, 33, 20), chunks=(2, 16, 7), dtype=dtype, zarr_format=fmt)
    meta = _agree(url)
    assert meta.zarr_format == fmt and meta.shape == (5, 33, 20) and meta.chunks == (2, 16, 7)


@pytest.mark.parametrize("compressors", [None, "default", "zstd"])
def test_codecs_agree(tmp_path: Path, compressors) -> None:
    from zarr.codecs import ZstdCodec

    url = str(tmp_path / "c.zarr")
    kw = {} if compressors == "default" else {"compressors": None if compressors is None else ZstdCodec(level=3)}
    zarr.create_array(store=url, shape=(40, 40), chunks=(10, 40), dtype="u2", fill_value=7, **kw)
    assert _agree(url).fill_value == 7


def test_dimension_names_give_axes_as_zarr_does(tmp_path: Path) -> None:
    v3 = str(tmp_path / "v3.zarr")
    zarr.create_array(store=v3, shape=(3, 8, 8), dtype="f4", dimension_names=("c", "y", "x"))
    assert _agree(v3) and open_level_meta(v3)[1] == "cyx"
    v3b = str(tmp_path / "v3b.zarr")  # names that are not axis letters: no axes, as zarr's reading says
    zarr.create_array(store=v3b, shape=(3, 8, 8), dtype="f4", dimension_names=("channel", None, "x"))
    assert open_level_meta(v3b)[1] is None and _agree(v3b)
    v2 = str(tmp_path / "v2.zarr")  # xarray's attribute on a v2 array
    a = zarr.create_array(store=v2, shape=(4, 8), dtype="u2", zarr_format=2)
    a.attrs["_ARRAY_DIMENSIONS"] = ["Z", "X"]
    assert _agree(v2) and open_level_meta(v2)[1] == "zx"


@pytest.mark.parametrize("fmt", [2, 3])
def test_ome_zarr_levels_agree(tmp_path: Path, fmt: int) -> None:
    url = str(tmp_path / "img.zarr")
    g = zarr.open_group(url, mode="w", zarr_format=fmt)
    extra = {"chunk_key_encoding": {"name": "v2", "separator": "/"}} if fmt == 2 else {"dimension_names": tuple("czyx")}
    for i, (shape, chunks) in enumerate([((2, 4, 64, 60), (1, 2, 32, 32)), ((2, 4, 32, 30), (1, 4, 32, 30))]):
        g.create_array(str(i), shape=shape, chunks=chunks, dtype="u2", **extra)
    write_multiscales(g, "czyx", ["0", "1"], [[1, 2, 0.5, 0.5], [1, 2, 1, 1]], units={"z": "micrometer", "x": "micrometer",
                                                                                    "y": "micrometer"}, name="img")
    attrs = g.attrs.asdict()
    omero = {"channels": [{"label": "DNA"}, {"label": "actin"}]}
    if fmt == 3:
        g.attrs["ome"] = {**attrs["ome"], "omero": omero}
    else:
        g.attrs["omero"] = omero
    for level in (0, 1):
        meta = _agree(url, level)
        assert meta.shape[-1] == (60, 30)[level]
    info = open_level_meta(url, 1)[2]
    assert info.axes == "czyx" and info.channel_labels == ("DNA", "actin")
    assert info.levels[1].scale == (1.0, 2.0, 1.0, 1.0)
    assert open_level_meta(url, 2) is None  # no such level: zarr's reading words it
    with pytest.raises(InputError, match="level 2 does not exist"):
        open_level(url, 2)


def test_old_ngff_without_transforms_agrees(tmp_path: Path) -> None:
    url = str(tmp_path / "old.zarr")
    g = zarr.open_group(url, mode="w", zarr_format=2)
    for i, shape in enumerate([(1, 1, 4, 32, 30), (1, 1, 4, 16, 15)]):
        g.create_array(str(i), shape=shape, chunks=shape, dtype="u2")
    g.attrs["multiscales"] = [{"version": "0.3", "axes": list("tczyx"), "datasets": [{"path": "0"}, {"path": "1"}]}]
    assert _agree(url, 1).shape == (1, 1, 4, 16, 15)
    g.attrs["multiscales"] = [{"version": "0.1", "datasets": [{"path": "0"}]}]  # no axes: 5-D tczyx from the shape
    _agree(url)


def test_left_to_zarr(tmp_path: Path) -> None:
    sharded = str(tmp_path / "sharded.zarr")
    zarr.create_array(store=sharded, shape=(64, 64), chunks=(16, 16), shards=(32, 32), dtype="u2")
    assert open_level_meta(sharded) is None  # zarr's chunks of a sharded array: zarr says
    big = str(tmp_path / "big.zarr")
    zarr.create_array(store=big, shape=(8, 8), dtype=">u2", zarr_format=2)
    assert open_level_meta(big) is None
    consolidated = str(tmp_path / "cons.zarr")
    g = zarr.open_group(consolidated, mode="w", zarr_format=2)
    g.create_array("0", shape=(8, 8), dtype="u2")
    write_multiscales(g, "yx", ["0"], [[1, 1]])
    zarr.consolidate_metadata(consolidated)
    assert open_level_meta(consolidated) is None
    assert open_level_meta(str(tmp_path / "missing.zarr")) is None
    assert open_level_meta("memory://x.zarr") is None
    assert open_level_meta(sharded, storage_options={"anon": True}) is None
    plain = str(tmp_path / "plain.zarr")
    zarr.create_array(store=plain, shape=(8, 8), dtype="u2")
    assert open_level_meta(plain, level=1) is None  # a plain array has no level 1: zarr's error
    grp = str(tmp_path / "grp.zarr")
    zarr.open_group(grp, mode="w").attrs["multiscales"] = "nonsense"
    assert open_level_meta(grp) is None
    with pytest.raises(InputError, match="non-empty list"):
        open_level(grp)
    # a level path leaving the group is never followed
    esc = str(tmp_path / "esc.zarr")
    g = zarr.open_group(esc, mode="w", zarr_format=3)
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": [{"name": "y"}, {"name": "x"}],
                                                         "datasets": [{"path": "../plain.zarr"}]}]}
    assert open_level_meta(esc) is None
    # a document zarr would refuse (unknown codec) is zarr's to judge
    odd = str(tmp_path / "odd.zarr")
    zarr.create_array(store=odd, shape=(8, 8), dtype="u2")
    doc = json.loads((Path(odd) / "zarr.json").read_text())
    doc["codecs"].append({"name": "not-a-codec"})
    (Path(odd) / "zarr.json").write_text(json.dumps(doc))
    assert read_array_meta(odd) is None


def test_explain_reads_the_same_plan_either_way(tmp_path: Path, monkeypatch) -> None:
    """explain on the light reader prints what it printed when it opened the input with zarr."""
    import convpipe
    from convpipe.ome import meta

    url = str(tmp_path / "in.zarr")
    zarr.create_array(store=url, shape=(6, 200, 180), chunks=(3, 64, 64), dtype="u2", dimension_names=tuple("zyx"))
    p = convpipe.load({"convpipe": 1, "input": {"url": url}, "output": {"url": str(tmp_path / "o.zarr")},
                       "steps": [{"gaussian": {"sigma": 1.5}}, {"sobel": {"axes": "yx"}}]})
    light = p.explain()
    monkeypatch.setattr(meta, "open_level_meta", lambda *a, **k: None)  # what zarr's opening gives
    heavy = p.explain()
    assert str(light) == str(heavy) and light.to_dict() == heavy.to_dict()
    assert np.dtype(light.input.dtype) == np.dtype("u2")
