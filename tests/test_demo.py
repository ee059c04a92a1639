"""``convpipe demo``: sample data, every example pipeline, a preview; and the example specs themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import convpipe
from convpipe.demo import make_image, make_stack, pipelines_dir, run_demo
from convpipe.errors import InputError
from convpipe.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
PIPELINES = sorted((REPO / "pipelines").glob("*.yaml"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    lines: list[str] = []
    run_demo(out, echo=lines.append)
    return out, lines


def test_pipelines_folder_is_found():
    """The package's folder is the repository's pipelines/ (one copy: convpipe/pipelines links to it)."""
    assert pipelines_dir() == Path(convpipe.__file__).resolve().parent / "pipelines"
    assert pipelines_dir().resolve() == (REPO / "pipelines").resolve()
    assert len(PIPELINES) >= 5


def test_demo_runs_every_pipeline(demo):
    out, lines = demo
    assert lines[0].startswith("sample data:")
    assert lines[-1] == f"preview: {out / 'preview.png'}"
    for path in PIPELINES:
        p = convpipe.load(path)
        url = out / Path(p.spec.output.url).name
        line = next((ln for ln in lines if ln.split()[0] == p.spec.name), None)
        assert line is not None, (p.spec.name, lines)
        assert line.endswith(str(url)) and " s " in line  # name, elapsed, output
        node = zarr.open(str(url), mode="r")  # an array, or an OME-Zarr group (a label image) with level 0
        arr = node["0"] if isinstance(node, zarr.Group) else node
        attrs = node.attrs if "convpipe" in node.attrs else arr.attrs
        assert attrs["convpipe"]["complete"] is True
        assert attrs["convpipe"]["spec"]["name"] == p.spec.name
        assert np.isfinite(arr[...]).all()


def test_demo_sample_data(demo):
    out, _ = demo
    stack = zarr.open_array(str(out / "stack.zarr"), mode="r")
    image = zarr.open_array(str(out / "image.zarr"), mode="r")
    assert (stack.shape, stack.chunks, stack.dtype) == ((16, 256, 256), (8, 128, 128), np.uint16)
    assert image.ndim == 2 and image.dtype == np.uint16
    assert stack.metadata.zarr_format == 3 and image.metadata.zarr_format == 3
    s = stack[...]
    assert s.std() > 1000 and s.min() < s.max() < 65535  # structure, not saturated
    np.testing.assert_array_equal(s, make_stack())  # deterministic
    np.testing.assert_array_equal(image[...], make_image())


def test_demo_preview_png(demo):
    out, _ = demo
    png = (out / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_demo_outputs_are_exact(demo):
    """Two demo outputs against their scipy oracles (float32 bound of SPEC.md)."""
    out, _ = demo
    img = zarr.open_array(str(out / "image.zarr"))[...].astype(np.float64)
    g = ndi.gaussian_filter(img, 2)
    ref = np.hypot(ndi.sobel(g, 0, mode="nearest"), ndi.sobel(g, 1, mode="nearest"))
    got = zarr.open_array(str(out / "edges.zarr"))[...]
    assert np.abs(got - ref).max() <= 1e-5 * max(1, np.abs(ref).max())
    stack = zarr.open_array(str(out / "stack.zarr"))[...].astype(np.float64)
    ref = ndi.gaussian_filter(stack, (1, 2, 2), mode="nearest")
    got = zarr.open_array(str(out / "smooth-3d.zarr"))[...]
    assert np.abs(got - ref).max() <= 1e-5 * max(1, np.abs(ref).max())


def test_demo_reruns_over_its_outputs(demo, tmp_path):
    """A second demo into the same folder replaces the outputs instead of refusing them."""
    out, _ = demo
    lines: list[str] = []
    run_demo(out, echo=lines.append, pipelines=REPO / "pipelines")
    assert len(lines) == len(PIPELINES) + 2


def test_demo_without_pipelines_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run_demo(tmp_path / "o", pipelines=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no"):
        run_demo(tmp_path / "o", pipelines=tmp_path / "empty")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- the example specs


def _ops(path: Path) -> dict[str, dict]:
    return {s.name: s.params.model_dump() for s in load_spec(path).steps}


def test_examples_cover_the_documented_cases():
    by_name = {p.stem: _ops(p) for p in PIPELINES}
    assert list(by_name["edges"]) == ["gaussian", "sobel"]
    assert by_name["edges"]["sobel"]["output"] == "magnitude"
    assert {"gaussian", "unsharp_mask"} <= set(by_name["blur-and-sharpen"])
    assert set(by_name["smooth-3d"]["gaussian"]["sigma"]) == {"z", "y", "x"}
    d = by_name["diffusion"]["diffusion"]
    assert d["steps"] and d["dt"]
    c = by_name["custom-kernel"]["correlate"]
    assert c["normalize"] == "softmax" and c["temperature"] != 1.0 and isinstance(c["kernel"], list)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_examples_are_commented_and_self_contained(path):
    text = path.read_text()
    assert text.lstrip().startswith("#")  # a header telling the user what it does
    assert "/work/" not in text and "shared" not in text
    spec = load_spec(path)
    assert spec.input.url.startswith("../demo-out/") and spec.output.url.startswith("../demo-out/")
    assert Path(spec.input.url).name in ("stack.zarr", "image.zarr", "plane.zarr", "nuclei.zarr", "coins.zarr",
                                         "hubble.zarr")  # what the demo writes
