"""``convpipe preview``: PNG size and content, spectrum, overlay, levels, errors, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
import zarr
from matplotlib.image import imread
from typer.testing import CliRunner

from convpipe.errors import InputError
from convpipe.ome import write_multiscales
from convpipe.cli.preview import register
from convpipe.preview import parse_index, read_plane, render_preview


@pytest.fixture
def stack(tmp_path: Path) -> tuple[str, np.ndarray]:
    x = np.random.default_rng(0).normal(100, 10, size=(6, 37, 53)).astype(np.float32)
    url = str(tmp_path / "stack.zarr")
    zarr.create_array(store=url, data=x, chunks=(2, 16, 16), dimension_names=("z", "y", "x"))
    return url, x


def _gray(png: str) -> np.ndarray:
    return imread(png)[..., :3].mean(axis=-1)


def test_png_has_plane_size_and_content(tmp_path: Path, stack) -> None:
    url, x = stack
    png = str(tmp_path / "p" / "plane.png")
    res = render_preview(url, index={"z": 4}, png=png)
    img = imread(png)
    assert img.shape[:2] == (37, 53) == res.image_shape == res.plane_shape
    assert res.index == {"z": 4}
    g = _gray(png)
    assert g.std() > 0.1  # not blank
    # the displayed grey follows the data: brightest and darkest pixels of the plane agree
    plane = x[4]
    assert g[np.unravel_index(plane.argmax(), plane.shape)] == pytest.approx(1.0, abs=0.01)
    assert g[np.unravel_index(plane.argmin(), plane.shape)] == pytest.approx(0.0, abs=0.01)
    lo, hi = np.percentile(plane.astype(np.float64), [1, 99.8])
    assert (res.vmin, res.vmax) == pytest.approx((lo, hi))


def test_default_index_and_odd_shapes(tmp_path: Path) -> None:
    for shape in [(1, 1), (3, 500), (5, 2, 7)]:
        url = str(tmp_path / f"a{len(shape)}_{shape[-1]}.zarr")
        zarr.create_array(store=url, data=np.arange(np.prod(shape), dtype=np.uint8).reshape(shape))
        res = render_preview(url, png=str(tmp_path / "o.png"))
        assert imread(str(tmp_path / "o.png")).shape[:2] == shape[-2:]
        if len(shape) == 3:
            assert res.index == {"z": 2}  # the middle of the stack


def test_spectrum(tmp_path: Path, stack) -> None:
    url, x = stack
    png = str(tmp_path / "s.png")
    res = render_preview(url, index={"z": 1}, spectrum=True, png=png, percentiles=(0, 100))
    ref = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(x[1].astype(np.float64)))))
    assert (res.vmin, res.vmax) == pytest.approx((ref.min(), ref.max()))
    g = _gray(png)
    assert g.shape == ref.shape
    # the DC term of a positive image is the largest: white at the centre after fftshift
    assert g[37 // 2, 53 // 2] == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(g, (ref - ref.min()) / (ref.max() - ref.min()), atol=0.01)


def test_overlay_points_on_plane(tmp_path: Path, stack) -> None:
    url, _ = stack
    table = str(tmp_path / "peaks.parquet")
    pq.write_table(pa.table({"z": [2, 2, 3], "y": [10, 25, 5], "x": [12, 40, 5], "value": [1.0, 2.0, 3.0]}), table)
    png = str(tmp_path / "o.png")
    res = render_preview(url, index={"z": 2}, overlay_table=table, png=png, marker_color="red")
    assert res.points == 2  # the z=3 row is on another plane
    rgb = imread(png)[..., :3]
    redness = rgb[..., 0] - rgb[..., 1:].mean(axis=-1)
    assert redness.max() > 0.5
    ys, xs = np.nonzero(redness > 0.5)
    # red only around the two points, never around (5, 5)
    def dist(yy: float, xx: float) -> float:
        return float(np.hypot(ys - yy, xs - xx).min())

    assert dist(10, 12) < 4 and dist(25, 40) < 4
    assert dist(5, 5) > 3

    pq.write_table(pa.table({"row": [1], "col": [2]}), str(tmp_path / "bad.parquet"))
    with pytest.raises(InputError, match="needs columns 'y' and 'x'"):
        render_preview(url, overlay_table=str(tmp_path / "bad.parquet"), png=png)
    with pytest.raises(InputError, match="no such overlay table"):
        render_preview(url, overlay_table=str(tmp_path / "none.parquet"), png=png)
    with pytest.raises(InputError, match="spectrum"):
        render_preview(url, overlay_table=table, spectrum=True, png=png)


def test_ome_levels(tmp_path: Path) -> None:
    url = str(tmp_path / "img.zarr")
    g = zarr.open_group(url, mode="w")
    base = np.random.default_rng(1).integers(0, 1000, size=(2, 3, 40, 60), dtype=np.uint16)
    g.create_array("0", data=base, dimension_names=tuple("tzyx"))
    g.create_array("1", data=base[:, :, ::2, ::2], dimension_names=tuple("tzyx"))
    write_multiscales(g, "tzyx", ["0", "1"], [[1, 1, 1, 1], [1, 1, 2, 2]])
    table = str(tmp_path / "pts.parquet")
    pq.write_table(pa.table({"t": [1], "z": [2], "y": [20.0], "x": [30.0]}), table)

    view = read_plane(url, index={"t": 1, "z": -1}, level=1)
    assert view.axes == "tzyx" and view.index == {"t": 1, "z": 2} and view.stride == 1
    np.testing.assert_array_equal(view.data, base[1, 2, ::2, ::2])
    res = render_preview(url, level=1, index={"t": 1, "z": 2}, overlay_table=table, png=str(tmp_path / "l1.png"))
    assert res.image_shape == (20, 30) and res.points == 1
    rgb = imread(str(tmp_path / "l1.png"))[..., :3]
    ys, xs = np.nonzero(rgb[..., 0] - rgb[..., 1:].mean(axis=-1) > 0.5)
    # level-0 (20, 30) is level-1 (10, 15)
    assert np.hypot(ys - 10, xs - 15).min() < 3


def test_large_plane_is_read_at_a_stride(tmp_path: Path) -> None:
    x = np.random.default_rng(2).integers(0, 255, size=(2, 300, 501), dtype=np.uint8)
    url = str(tmp_path / "wide.zarr")
    zarr.create_array(store=url, data=x, chunks=(1, 64, 64))
    view = read_plane(url, index={"z": 1}, max_size=100)
    assert view.stride == 6 and view.shape == (300, 501)
    np.testing.assert_array_equal(view.data, x[1, ::6, ::6])
    table = str(tmp_path / "p.parquet")
    pq.write_table(pa.table({"z": [1], "y": [120], "x": [300]}), table)
    res = render_preview(url, index={"z": 1}, png=str(tmp_path / "w.png"), max_size=100, overlay_table=table)
    assert res.image_shape == (50, 84) == imread(str(tmp_path / "w.png")).shape[:2]
    assert res.plane_shape == (300, 501) and res.points == 1
    rgb = imread(str(tmp_path / "w.png"))[..., :3]
    ys, xs = np.nonzero(rgb[..., 0] - rgb[..., 1:].mean(axis=-1) > 0.5)
    assert np.hypot(ys - 20, xs - 50).min() < 3  # (120, 300) / 6


def test_errors(tmp_path: Path, stack) -> None:
    url, _ = stack
    png = str(tmp_path / "e.png")
    with pytest.raises(InputError, match=r"index z=6 is out of range; axis 'z' has 6 positions"):
        render_preview(url, index={"z": 6}, png=png)
    with pytest.raises(InputError, match="not one of its axes"):
        render_preview(url, index={"t": 0}, png=png)
    with pytest.raises(InputError, match="cannot fix 'y'"):
        render_preview(url, index={"y": 0}, png=png)
    with pytest.raises(InputError, match="unknown colormap"):
        render_preview(url, cmap="no-such-map", png=png)
    with pytest.raises(InputError, match="percentiles"):
        render_preview(url, percentiles=(50, 10), png=png)
    with pytest.raises(InputError, match="no zarr array or group there"):
        render_preview(str(tmp_path / "missing.zarr"), png=png)
    assert parse_index(["z=3,t=1", "c=0"]) == {"z": 3, "t": 1, "c": 0}
    for bad in ["z", "z=a", "q=1", "z=1,z=2"]:
        with pytest.raises(InputError):
            parse_index(bad)


def test_cli_preview(tmp_path: Path, stack) -> None:
    url, _ = stack
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """convpipe (test app)."""

    register(app)
    png = str(tmp_path / "cli.png")
    res = CliRunner().invoke(app, ["preview", url, "--index", "z=1", "--png", png, "--cmap", "magma", "--spectrum"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "53x37" in res.output
    assert imread(png).shape[:2] == (37, 53)
    res = CliRunner().invoke(app, ["preview", url, "--index", "z=99", "--png", png])
    assert isinstance(res.exception, InputError)  # propagated for the main CLI to report


# --------------------------------------------------------------------------- channels and blob circles


def _red_radius(png: str, cy: float, cx: float) -> float:
    """The median distance of the red ring's pixels from (cy, cx)."""
    rgb = imread(png)[..., :3]
    ys, xs = np.nonzero(rgb[..., 0] - rgb[..., 1:].mean(axis=-1) > 0.4)
    assert ys.size, "no red pixels"
    return float(np.median(np.hypot(ys - cy, xs - cx)))


def test_every_channel_of_a_multichannel_output(tmp_path: Path) -> None:
    """A plain Zarr output with a channel axis an op added: each channel is one --index c=N away."""
    import convpipe
    from skimage import data

    zarr.create_array(str(tmp_path / "coins.zarr"), data=data.coins(), chunks=(152, 192))
    res = convpipe.load({"convpipe": 1, "input": str(tmp_path / "coins.zarr"), "output": str(tmp_path / "bank.zarr"),
                         "steps": [{"filter_bank": {"gabor": {"orientations": 4, "frequencies": [0.1, 0.25],
                                                              "sigma": 3}}}]}).run()
    out = zarr.open_array(res.output_url, mode="r")
    assert out.shape[0] == 8 and out.attrs["convpipe"]["axes"] == "cyx"
    for c in range(8):
        png = str(tmp_path / f"c{c}.png")
        r = render_preview(res.output_url, index={"c": c}, png=png, percentiles=(0, 100))
        assert r.axes == "cyx" and r.index == {"c": c}
        plane = out[c].astype(np.float64)
        np.testing.assert_allclose(_gray(png), (plane - plane.min()) / (plane.max() - plane.min()), atol=0.01)
    with pytest.raises(InputError, match="index c=8 is out of range; axis 'c' has 8 positions"):
        render_preview(res.output_url, index={"c": 8}, png=str(tmp_path / "x.png"))

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """convpipe (test app)."""

    register(app)
    cli = CliRunner().invoke(app, ["preview", res.output_url, "--index", "c=3", "--png", str(tmp_path / "cli.png")])
    assert cli.exit_code == 0, cli.output
    assert "of c=3" in cli.output


def test_channels_of_a_stack_output(tmp_path: Path) -> None:
    x = np.random.default_rng(3).random((2, 5, 16, 24), dtype=np.float32)  # c, z, y, x as convpipe records it
    url = str(tmp_path / "czyx.zarr")
    arr = zarr.create_array(url, data=x, chunks=(1, 1, 16, 24))
    arr.attrs["convpipe"] = {"axes": "czyx"}
    view = read_plane(url, index={"c": 1, "z": 4})
    assert view.axes == "czyx" and view.index == {"c": 1, "z": 4}
    np.testing.assert_array_equal(view.data, x[1, 4])
    assert read_plane(url).index == {"c": 0, "z": 2}  # the first channel, the middle plane
    arr.attrs["convpipe"] = {"axes": "qzyx"}  # nonsense recorded: the default letters, as before
    assert read_plane(url).axes == "czyx"
    arr.attrs["convpipe"] = {"axes": "zyx"}  # the wrong length: ignored
    assert read_plane(url).axes == "czyx"


@pytest.mark.parametrize("sigma", [3.0, 6.0])
def test_blob_overlays_are_circles_of_radius_sigma_sqrt2(tmp_path: Path, sigma: float) -> None:
    """The blobs op's own table, drawn on the plane: a circle of radius sigma * sqrt(2) around each blob."""
    import pyarrow.parquet as pq_

    import convpipe

    yy, xx = np.mgrid[0:120, 0:140].astype(np.float64)
    img = np.exp(-((yy - 60) ** 2 + (xx - 70) ** 2) / (2 * sigma**2)).astype(np.float32)
    zarr.create_array(str(tmp_path / "blob.zarr"), data=img, chunks=(60, 70))
    table = str(tmp_path / "blobs.parquet")
    convpipe.load({"convpipe": 1, "input": str(tmp_path / "blob.zarr"), "output": str(tmp_path / "same.zarr"),
                   "steps": [{"blobs": {"min_sigma": 1, "max_sigma": 10, "num_sigma": 19, "threshold": 0.01,
                                        "table": table}}]}).run()
    t = pq_.read_table(table).to_pydict()
    assert len(t["sigma"]) == 1 and abs(t["y"][0] - 60) < 1 and abs(t["x"][0] - 70) < 1
    found = float(t["sigma"][0])
    assert abs(found - sigma) < 0.6
    png = str(tmp_path / "o.png")
    r = render_preview(str(tmp_path / "blob.zarr"), overlay_table=table, png=png, marker_color="red")
    assert r.points == 1
    assert _red_radius(png, t["y"][0], t["x"][0]) == pytest.approx(found * np.sqrt(2), abs=1.0)
    # read at a stride, the circle shrinks with the image
    png2 = str(tmp_path / "s.png")
    render_preview(str(tmp_path / "blob.zarr"), overlay_table=table, png=png2, max_size=70, marker_color="red")
    assert _red_radius(png2, t["y"][0] / 2, t["x"][0] / 2) == pytest.approx(found * np.sqrt(2) / 2, abs=1.0)


def test_3d_blobs_are_drawn_with_radius_sigma_sqrt3(tmp_path: Path, stack) -> None:
    import json

    url, _ = stack
    table = str(tmp_path / "b3.parquet")
    meta = {"step": "steps[0].blobs", "spec": {"steps": [{"blobs": {"axes": "zyx", "min_sigma": 1}}]}}
    t = pa.table({"z": [2.0], "y": [18.0], "x": [26.0], "sigma": [5.0]})
    pq.write_table(t.replace_schema_metadata({b"convpipe": json.dumps(meta).encode()}), table)
    png = str(tmp_path / "b3.png")
    render_preview(url, index={"z": 2}, overlay_table=table, png=png, marker_color="red")
    assert _red_radius(png, 18, 26) == pytest.approx(5 * np.sqrt(3), abs=1.0)
    pq.write_table(t, table)  # no metadata: a 2-D blob's radius
    render_preview(url, index={"z": 2}, overlay_table=table, png=png, marker_color="red")
    assert _red_radius(png, 18, 26) == pytest.approx(5 * np.sqrt(2), abs=1.0)
