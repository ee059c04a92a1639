"""Channel names (issue #15 item 4): the channels an op makes are named, and the names reach the OME
``omero`` block of the output and a ``channel`` column of every table whose rows carry ``c``.

filter_bank names channel i after kernel i (its file, its name, ``kernel i`` inline, ``bank.npy[i]`` for
one bank file, ``gabor f=0.1 theta=60deg`` in the bank's frequency-major order), conv_layer after its filters,
sobel ``components`` after the derivative axes; an input's own ``omero`` labels pass through every op
that keeps ``c`` channel for channel, and are dropped by one that mixes channels. The omero block is
checked with ome-zarr-models, its windows against numpy's min/max of what was written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from harness import make_spec

import convpipe
from convpipe.ome import write_multiscales
from convpipe.ome.write import write_omero

skimage = pytest.importorskip("skimage")
from skimage import data  # noqa: E402


def _plain(path: Path, x: np.ndarray, fmt: int = 3, chunks=None) -> str:
    z = zarr.create_array(str(path), shape=x.shape, chunks=chunks or x.shape, dtype=x.dtype, zarr_format=fmt)
    z[...] = x
    return str(path)


def _omero(group: zarr.Group) -> dict:
    attrs = group.attrs.asdict()
    return attrs["ome"]["omero"] if "ome" in attrs else attrs["omero"]


def _validate(path: Path, fmt: int) -> None:
    if fmt == 3:
        from ome_zarr_models.v05 import Image
    else:
        from ome_zarr_models.v04 import Image
    Image.from_zarr(zarr.open_group(str(path), mode="r"))


@pytest.mark.parametrize("fmt", [3, 2])
@pytest.mark.parametrize("pyramid", [0, 1])
def test_filter_bank_names_its_channels_in_the_omero_block(tmp_path, fmt, pyramid):
    x = data.camera()[:128, :160].astype(np.float32)
    np.save(tmp_path / "vertical.npy", np.array([[1.0, 0, -1]] * 3))
    np.save(tmp_path / "horizontal.npy", np.array([[1.0, 0, -1]] * 3).T)
    src = _plain(tmp_path / "in.zarr", x, fmt, chunks=(64, 64))
    out = tmp_path / "out.zarr"
    kernels = [str(tmp_path / "vertical.npy"), str(tmp_path / "horizontal.npy"), [[0, 1, 0], [1, -4, 1], [0, 1, 0]]]
    spec = make_spec([{"filter_bank": {"kernels": kernels}}],
                     "float32", input={"url": src}, output={"url": str(out), "ome": True, "pyramid": pyramid,
                                                             "zarr_format": fmt})
    convpipe.load(spec).run()
    _validate(out, fmt)
    g = zarr.open_group(str(out), mode="r")
    channels = _omero(g)["channels"]
    assert [c["label"] for c in channels] == ["vertical.npy", "horizontal.npy", "kernel 2"]
    smallest = np.asarray(g[str(pyramid)][...], dtype=np.float64)  # output axes cyx
    for i, c in enumerate(channels):
        assert (c["window"]["min"], c["window"]["max"]) == (smallest[i].min(), smallest[i].max())
        assert c["window"]["start"] == c["window"]["min"] and c["window"]["end"] == c["window"]["max"]
    assert len({c["color"] for c in channels}) == 3


def _ops(steps: list, src: str) -> list:
    return convpipe.load(make_spec(steps, "float32", input={"url": src})).explain().passes[0].ops


def test_a_bank_file_and_a_gabor_bank_name_channels_in_channel_order(tmp_path):
    from convpipe.oracles import bank_kernels
    from convpipe.params.features import GaborBank, _gabor

    bank = np.random.default_rng(0).normal(size=(4, 3, 3))
    np.save(tmp_path / "bank.npy", bank)
    src = _plain(tmp_path / "in.zarr", np.zeros((32, 32), np.float32))
    ops = _ops([{"filter_bank": {"kernels": str(tmp_path / "bank.npy")}}], src)
    assert ops[0].channel_labels(None) == [f"bank.npy[{i}]" for i in range(4)]

    gabor = {"orientations": 3, "frequencies": [0.1, 0.25], "sigma": 2.0}
    ops = _ops([{"filter_bank": {"gabor": gabor}}], src)
    labels = ops[0].channel_labels(None)
    oracle = bank_kernels(gabor=gabor)
    assert len(labels) == len(oracle) == 6
    g = GaborBank(**gabor)
    for label, k in zip(labels, oracle, strict=True):  # the label's f and theta make the oracle's kernel i
        f, deg = (float(part.split("=")[1].removesuffix("deg")) for part in label.removeprefix("gabor ").split())
        made = _gabor(frequency=f, theta=np.radians(deg), sigma=g.sigma, radius=g.radius, offset=g.offset)
        np.testing.assert_allclose(made, k, rtol=1e-4, atol=1e-9)  # labels keep 6 significant digits


def _cyx_input(path: Path, x: np.ndarray, labels: list[str]) -> str:
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.create_array("0", shape=x.shape, chunks=(1, 64, 64), dtype=x.dtype, dimension_names=("c", "y", "x"))[...] = x
    write_multiscales(g, "cyx", ["0"], [[1.0, 0.5, 0.5]])
    write_omero(g, labels, [(float(x[i].min()), float(x[i].max())) for i in range(len(labels))])
    return str(path)  # the image group: its metadata comes with it


@pytest.mark.parametrize("steps, expect", [
    ([{"gaussian": {"sigma": 1.5}}], ["DAPI", "GFP"]),                       # per plane: names kept
    ([{"pool": {"size": 2, "kind": "max"}}], ["DAPI", "GFP"]),                # strided in y, x: names kept
    ([{"conv_layer": {"weights": np.ones((3, 2, 3, 3)).tolist()}}], ["conv_layer 0", "conv_layer 1", "conv_layer 2"]),
])
def test_input_labels_pass_through_ops_that_keep_channels(tmp_path, steps, expect):
    x = np.stack([data.camera()[:96, :96], data.coins()[:96, :96]]).astype(np.float32)
    src = _cyx_input(tmp_path / "in.zarr", x, ["DAPI", "GFP"])
    out = tmp_path / "out.zarr"
    convpipe.load(make_spec(steps, "float32", input={"url": src}, output={"url": str(out), "ome": True})).run()
    g = zarr.open_group(str(out), mode="r")
    attrs = g.attrs.asdict()["ome"]
    if expect is None:
        assert "omero" not in attrs
    else:
        assert [c["label"] for c in attrs["omero"]["channels"]] == expect
        _validate(out, 3)


def test_input_labels_that_do_not_fit_the_channels_are_dropped(tmp_path):
    x = np.stack([data.camera()[:64, :64]] * 2).astype(np.float32)
    src = _cyx_input(tmp_path / "in.zarr", x, ["DAPI", "GFP"])
    g = zarr.open_group(src, mode="r+")
    ome = g.attrs["ome"]
    ome["omero"]["channels"].append(dict(ome["omero"]["channels"][0], label="extra"))  # 3 names, 2 channels
    g.attrs["ome"] = ome
    out = tmp_path / "out.zarr"
    convpipe.load(make_spec([{"gaussian": {"sigma": 1}}], "float32", input={"url": src},
                            output={"url": str(out), "ome": True})).run()
    assert "omero" not in zarr.open_group(str(out), mode="r").attrs["ome"]


def test_sobel_components_are_named_by_axis(tmp_path):
    ops = _ops([{"sobel": {"output": "components"}}], _plain(tmp_path / "in.zarr", np.zeros((4, 32, 32), np.float32)))
    assert ops[0].channel_labels(None) == ["d/dy", "d/dx"]


def test_a_table_of_channels_gets_a_channel_column_on_run_and_apply(tmp_path):
    import dask.array as da
    import pyarrow.parquet as pq

    x = data.coins()[:128, :128].astype(np.float32)
    np.save(tmp_path / "blur.npy", np.full((5, 5), 1 / 25))
    src = _plain(tmp_path / "in.zarr", x, chunks=(64, 64))
    steps = [{"filter_bank": {"kernels": [str(tmp_path / "blur.npy"), [[0, 0, 0], [0, 1, 0], [0, 0, 0]]]}},
             {"peaks": {"radius": 6, "threshold": 150, "axes": "yx", "table": str(tmp_path / "peaks.parquet")}}]
    spec = make_spec(steps, "float32", input={"url": src}, output={"url": str(tmp_path / "out.zarr")})
    convpipe.load(spec).run()
    t = pq.read_table(tmp_path / "peaks.parquet").to_pandas()
    assert len(t) > 0 and set(t["c"]) == {0, 1}
    assert t.columns.tolist()[: t.columns.get_loc("c") + 2][-2:] == ["c", "channel"]
    names = np.array(["blur.npy", "kernel 1"])
    assert (t["channel"].to_numpy() == names[t["c"].to_numpy()]).all()

    _, tables = convpipe.load(spec).apply(da.from_array(x, chunks=64), axes="yx", tables=True)
    frame = tables["steps[1].peaks"]
    assert (frame["channel"].to_numpy() == names[frame["c"].to_numpy()]).all()
    assert frame.sort_values(["c", "y", "x"]).reset_index(drop=True).equals(
        t.sort_values(["c", "y", "x"]).reset_index(drop=True))


def test_a_table_without_named_channels_has_no_channel_column(tmp_path):
    import pyarrow.parquet as pq

    x = data.coins()[:64, :64].astype(np.float32)
    src = _plain(tmp_path / "in.zarr", np.stack([x, x[::-1]]), chunks=(1, 64, 64))
    steps = [{"peaks": {"radius": 4, "threshold": 150, "axes": "yx", "table": str(tmp_path / "p.parquet")}}]
    convpipe.load(make_spec(steps, "float32", input={"url": src, "axes": "cyx"},
                            output={"url": str(tmp_path / "o.zarr")})).run()
    assert "channel" not in pq.read_table(tmp_path / "p.parquet").column_names


def test_explain_names_the_channels(tmp_path):
    from convpipe.channels import summary

    src = _plain(tmp_path / "in.zarr", np.zeros((64, 64), np.float32))
    np.save(tmp_path / "bank.npy", np.ones((12, 3, 3)))
    plan = convpipe.load(make_spec([{"filter_bank": {"kernels": str(tmp_path / "bank.npy")}}], "float32",
                                   input={"url": src})).explain()
    assert "  channels bank.npy[0..11]" in str(plan).splitlines()
    assert summary(["a", "b"]) == "a, b"
    assert summary([f"k{i}" for i in range(8)]) == "k0, k1, k2, k3, ..., k7 (8 channels)"
    assert "channels" not in str(convpipe.load(make_spec([{"gaussian": {"sigma": 1}}], "float32",
                                                         input={"url": src})).explain())
