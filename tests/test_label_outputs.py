"""Label outputs as NGFF label images (SPEC.md "Objects", the paragraph after the table).

With ``output.ome: true`` an integer label output (int32 / int64 / uint32 / uint64) gets ``image-label``
metadata and pyramid levels by nearest (the top-left voxel of each 2x2 block, never a mean), NGFF 0.5 for
Zarr v3 and 0.4 for v2; ``output.labels_of`` + ``output.label_name`` writes it into that image's
``labels/NAME`` group, which ome-zarr-models (the NGFF models napari-ome-zarr's reader follows) must accept
with the image, and which leaves the image itself untouched. Safety rules hold: the labels of the input
image itself lie inside the input and are refused; an existing label image is replaced only with overwrite.
``convpipe preview --overlay LABELS`` draws the labels in colour; the HTML report shows them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from harness import make_spec

import convpipe
from convpipe.cli import main
from convpipe.errors import InputError, SpecError
from convpipe.ome import write_multiscales

skimage = pytest.importorskip("skimage")
from skimage import data  # noqa: E402

STEPS = [{"gaussian": {"sigma": 2}}, {"threshold": {"method": "otsu"}}, {"binary_opening": {"connectivity": 2}},
         {"astype": {"dtype": "int32"}}]


def _image(path: Path, fmt: int, x: np.ndarray, levels: int = 2) -> None:
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    kw = {"dimension_names": ("y", "x")} if fmt == 3 else {}
    for k in range(levels):
        lv = x[:: 2 ** k, :: 2 ** k]
        g.create_array(str(k), shape=lv.shape, chunks=(64, 64), dtype=lv.dtype, **kw)[...] = lv
    write_multiscales(g, "yx", [str(k) for k in range(levels)], [[0.5 * 2 ** k] * 2 for k in range(levels)],
                      units={"y": "micrometer", "x": "micrometer"})


def _plain(path: Path, fmt: int, x: np.ndarray) -> None:
    z = zarr.create_array(str(path), shape=x.shape, chunks=(64, 64), dtype=x.dtype, zarr_format=fmt)
    z[...] = x


def _digest(path: Path) -> str:
    """Every file of ``path`` except its labels/ folder (the image must stay as it was)."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and "labels" not in f.relative_to(path).parts:
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _models(fmt: int):
    if fmt == 3:
        from ome_zarr_models.v05 import Image, ImageLabel
    else:
        from ome_zarr_models.v04 import Image, ImageLabel
    return Image, ImageLabel


@pytest.mark.parametrize("fmt", [3, 2])
def test_labels_of_writes_a_label_image_napari_opens(tmp_path, fmt):
    x = data.coins()
    img, src = tmp_path / "coins.zarr", tmp_path / "src.zarr"
    _image(img, fmt, x, levels=3)
    _plain(src, fmt, x)
    before = _digest(img)
    spec = make_spec(STEPS, "float32", input={"url": str(src)},
                     output={"labels_of": str(img), "label_name": "coins", "zarr_format": fmt})
    res = convpipe.load(spec).run()
    assert res.outputs["ome"]["ngff"] == ("0.5" if fmt == 3 else "0.4") and res.outputs["ome"]["levels"] == 3
    assert _digest(img) == before  # nothing of the image itself changed
    Image, ImageLabel = _models(fmt)
    im = Image.from_zarr(zarr.open_group(str(img), mode="r"))  # validates the labels group and its images
    assert im is not None
    lab = zarr.open_group(str(img / "labels" / "coins"), mode="r")
    ImageLabel.from_zarr(lab)
    attrs = lab.attrs.asdict()
    meta = attrs["ome"] if fmt == 3 else attrs
    assert meta["image-label"]["source"] == {"image": "../../"}
    ms = meta["multiscales"][0]
    assert ms["type"] == "nearest"
    assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == [[0.5, 0.5], [1.0, 1.0],
                                                                                      [2.0, 2.0]]
    labels_attrs = zarr.open_group(str(img / "labels"), mode="r").attrs.asdict()
    assert (labels_attrs["ome"]["labels"] if fmt == 3 else labels_attrs["labels"]) == ["coins"]
    # level 0 is the pipeline's result, the others its top-left voxels of 2 x 2 blocks (never a mean)
    from convpipe.oracles import oracle

    ref, _ = oracle(STEPS[:1] + [{"threshold": {"value": 0}}], x, "yx")  # shape only
    l0 = lab["0"][...]
    assert l0.dtype == np.int32 and l0.shape == ref.shape and set(np.unique(l0)) == {0, 1}
    assert np.array_equal(lab["1"][...], l0[::2, ::2]) and np.array_equal(lab["2"][...], l0[::4, ::4])


def test_a_second_label_image_keeps_the_first_and_overwrite_replaces_only_its_own(tmp_path):
    x = data.coins()
    img, src = tmp_path / "coins.zarr", tmp_path / "src.zarr"
    _image(img, 3, x)
    _plain(src, 3, x)
    for name in ("a", "b"):
        convpipe.load(make_spec(STEPS, "float32", input={"url": str(src)},
                                output={"labels_of": str(img), "label_name": name})).run()
    names = zarr.open_group(str(img / "labels"), mode="r").attrs["ome"]["labels"]
    assert names == ["a", "b"]
    again = make_spec(STEPS, "float32", input={"url": str(src)}, output={"labels_of": str(img), "label_name": "a"})
    with pytest.raises(InputError, match="exists"):
        convpipe.load(again).run()
    (img / "labels" / "a" / "notes.txt").write_text("mine")  # a foreign file: overwrite must refuse
    again["output"]["overwrite"] = True
    with pytest.raises(InputError, match="notes.txt"):
        convpipe.load(again).run()
    (img / "labels" / "a" / "notes.txt").unlink()
    convpipe.load(again).run()
    assert zarr.open_group(str(img / "labels"), mode="r").attrs["ome"]["labels"] == ["a", "b"]
    assert np.array_equal(zarr.open_array(str(img / "0"), mode="r")[...], x)


def test_labels_of_the_input_itself_is_refused_and_touches_nothing(tmp_path):
    x = data.coins()
    img = tmp_path / "coins.zarr"
    _image(img, 3, x)
    before = _digest(img)
    spec = make_spec(STEPS, "float32", input={"url": str(img)}, output={"labels_of": str(img), "label_name": "c"})
    with pytest.raises(InputError):
        convpipe.load(spec).run()
    assert _digest(img) == before and not (img / "labels").exists()


def test_refusals_before_anything_is_written(tmp_path):
    x = data.coins()
    img, src, other = tmp_path / "coins.zarr", tmp_path / "src.zarr", tmp_path / "other.zarr"
    _image(img, 3, x)
    _plain(src, 3, x)
    _plain(other, 3, x)
    cases = [
        (dict(labels_of=str(img), label_name="f"), STEPS[:1], "holds integers"),  # float output
        (dict(labels_of=str(img), label_name="v2", zarr_format=2), STEPS, "zarr_format: 3"),
        (dict(labels_of=str(other), label_name="p"), STEPS, "not an OME-Zarr image|no NGFF"),
        (dict(labels_of=str(img), label_name="x", pyramid=4), STEPS, "as many levels"),
    ]
    for out, steps, msg in cases:
        with pytest.raises((InputError, SpecError), match=msg):
            convpipe.load(make_spec(steps, "float32", input={"url": str(src)}, output=out)).run()
    small = tmp_path / "small.zarr"
    _plain(small, 3, x[:100, :100])
    with pytest.raises(SpecError, match="would not lie on the image"):
        convpipe.load(make_spec(STEPS, "float32", input={"url": str(small)},
                                output={"labels_of": str(img), "label_name": "s"})).run()
    assert not (img / "labels").exists()
    for bad in ({"labels_of": str(img)}, {"labels_of": str(img), "label_name": "../up"},
                {"labels_of": str(img), "label_name": "n", "url": str(tmp_path / "o.zarr")},
                {"labels_of": str(img), "label_name": "n", "ome": False}):
        with pytest.raises(SpecError):
            convpipe.load(make_spec(STEPS, input={"url": str(src)}, output=bad))


@pytest.mark.parametrize("fmt", [3, 2])
def test_ome_output_of_a_label_dtype_is_an_image_label(tmp_path, fmt):
    x = data.coins()
    src = tmp_path / "src.zarr"
    _plain(src, fmt, x)
    spec = make_spec(STEPS, "float32", input={"url": str(src)},
                     output={"url": str(tmp_path / "lab.zarr"), "ome": True, "pyramid": 2, "zarr_format": fmt})
    convpipe.load(spec).run()
    g = zarr.open_group(str(tmp_path / "lab.zarr"), mode="r")
    _, ImageLabel = _models(fmt)
    ImageLabel.from_zarr(g)
    a = g.attrs.asdict()
    assert "image-label" in (a["ome"] if fmt == 3 else a)
    assert np.array_equal(g["2"][...], g["0"][...][::4, ::4])
    # an 8-bit mask is an image, not a label image
    spec["steps"] = STEPS[:3]
    spec["output"]["url"] = str(tmp_path / "mask.zarr")
    convpipe.load(spec).run()
    a = zarr.open_group(str(tmp_path / "mask.zarr"), mode="r").attrs.asdict()
    assert "image-label" not in a and "image-label" not in a.get("ome", {})


def test_preview_overlay_draws_labels_in_colour(tmp_path):
    from convpipe.preview import render_preview

    x = data.coins()
    img, src = tmp_path / "coins.zarr", tmp_path / "src.zarr"
    _image(img, 3, x)
    _plain(src, 3, x)
    convpipe.load(make_spec(STEPS + [{"astype": {"dtype": "int32"}}], "float32", input={"url": str(src)},
                            output={"labels_of": str(img), "label_name": "coins"})).run()
    plain = render_preview(str(img), png=tmp_path / "plain.png")
    res = render_preview(str(img), png=tmp_path / "over.png", overlay_labels=str(img / "labels" / "coins"))
    assert res.labels == 1 and plain.labels == 0
    import matplotlib.image as mpimg

    a, b = mpimg.imread(str(tmp_path / "plain.png")), mpimg.imread(str(tmp_path / "over.png"))
    mask = zarr.open_array(str(img / "labels" / "coins" / "0"), mode="r")[...] > 0
    colour = np.abs(b[..., 0] - b[..., 2]) + np.abs(b[..., 0] - b[..., 1])
    assert colour[mask].mean() > 0.1 and colour[~mask].mean() < 0.02  # grey where 0, coloured on labels
    assert np.allclose(a[~mask][:, :3], b[~mask][:, :3], atol=0.02)
    rc = main(["preview", str(img), "--png", str(tmp_path / "cli.png"), "--overlay", str(img / "labels" / "coins")])
    assert rc == 0 and (tmp_path / "cli.png").stat().st_size > 0
    with pytest.raises(InputError, match="shape"):
        small = tmp_path / "small.zarr"
        _plain(small, 3, np.ones((10, 10), np.int32))
        render_preview(str(img), png=tmp_path / "x.png", overlay_labels=str(small))


def test_report_shows_the_labels(tmp_path):
    from convpipe.report import write_report

    x = data.coins()
    src = tmp_path / "src.zarr"
    _plain(src, 3, x)
    p = convpipe.load(make_spec(STEPS, "float32", input={"url": str(src)},
                                output={"url": str(tmp_path / "lab.zarr"), "ome": True}))
    res = p.run()
    html = Path(write_report(p, res, tmp_path / "r.html")).read_text()
    assert "labels on this plane, drawn in colour over the input" in html
