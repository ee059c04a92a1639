"""The run report's tables and figures (issue 18, item 5).

- a ``stats`` table is shown as a table under Output, never as an error among the previews, whether it has
  ``y``/``x`` columns (``per: tile``, where a tile starts) or none (``per: all``);
- blobs are drawn as circles of the blob radius scikit-image defines (``sigma * sqrt(2)`` in 2-D), scaled
  with a strided plane;
- no label of a figure is cut by its edge or runs into another one (titles, tick labels, legends, the task
  stream's phase names), on awkward inputs: long indices, wide numbers, phases that start together;
- "every 2nd pixel", not "every 2th pixel".
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

import convpipe
from convpipe.report import build_report, figures
from convpipe.report.page import TABLE_ROWS

from test_report import parse


@pytest.mark.parametrize(("n", "text"), [
    (1, "every 1st pixel"), (2, "every 2nd pixel"), (3, "every 3rd pixel"), (4, "every 4th pixel"),
    (11, "every 11th pixel"), (12, "every 12th pixel"), (13, "every 13th pixel"), (21, "every 21st pixel"),
    (22, "every 22nd pixel"), (23, "every 23rd pixel"), (101, "every 101st pixel"), (111, "every 111th pixel"),
    (112, "every 112th pixel"), (1000, "every 1000th pixel"),
])
def test_every_nth_pixel_is_an_english_ordinal(n: int, text: str) -> None:
    assert figures.every_nth(n) == text


# --------------------------------------------------------------------------- a run with stats and blobs


SPEC = """\
convpipe: 1
name: coins-stats-blobs
input: coins.zarr
output: out.zarr
steps:
  - gaussian: {{sigma: 1}}
  - stats: {{per: {per}, table: stats.parquet}}
  - blobs: {{min_sigma: 3, max_sigma: 10, threshold: 20, table: blobs.parquet}}
"""


@pytest.fixture(scope="module", params=["tile", "all"])
def stats_run(request, tmp_path_factory):
    from skimage import data

    d = tmp_path_factory.mktemp(f"stats-{request.param}")
    zarr.create_array(str(d / "coins.zarr"), data=data.coins().astype(np.float32), chunks=(152, 96))
    (d / "s.yaml").write_text(SPEC.format(per=request.param))
    p = convpipe.load(d / "s.yaml")
    return p, p.run(), request.param


def _captured_preview(monkeypatch) -> list:
    """Keep the preview figure the report draws (its Figure, for checks of what is on it)."""
    seen: list = []

    def keep(inp, out, points):
        fig, drawn = figures.preview_fig(inp, out, points)
        seen.append((fig, inp, out))
        return figures._png_uri(fig), drawn

    monkeypatch.setattr(figures, "preview_figure", keep)
    return seen


def test_stats_table_is_a_table_not_an_error(stats_run, monkeypatch) -> None:
    p, res, per = stats_run
    _captured_preview(monkeypatch)
    text = build_report(p, res, timings={})
    body = " ".join(parse(text).text)
    assert "Error" not in body and "cannot" not in body and "no y and x" not in body
    key = "steps[1].stats"
    assert f"{key}: " not in body.split("Output")[0]  # no note about it among the previews
    t = pq.read_table(res.outputs[key]["table"])
    assert t.num_rows == (res.tiles if per == "tile" else 1)  # a row per tile the plan chose; or the whole image
    # the table's cells are on the page, as the report formats them (the first rows, every column)
    cells = re.findall(r'<td class="num">([^<]*)</td>', text)
    for c in t.column_names:
        for v in t.column(c).to_pylist()[:TABLE_ROWS]:
            assert (f"{v:.5g}" if isinstance(v, float) else str(v)) in cells, (c, v)
    # and the statistic itself is right (the oracle: numpy over the stored gaussian output)
    if per == "all":
        out = np.asarray(zarr.open_array(res.output_url))
        assert t.column("mean")[0].as_py() == pytest.approx(float(out.astype(np.float64).mean()), rel=1e-6)
        assert f"{float(out.max()):.5g}" in cells
    # the blobs still are drawn
    assert f"of {res.outputs['steps[2].blobs']['rows']} rows on this plane" in body


def test_stats_table_longer_than_the_page_shows_says_so(tmp_path: Path) -> None:
    x = np.random.default_rng(3).random((30, 20, 20)).astype(np.float32)
    zarr.create_array(str(tmp_path / "in.zarr"), data=x, chunks=(5, 20, 20))
    p = convpipe.load({"convpipe": 1, "input": str(tmp_path / "in.zarr"), "output": str(tmp_path / "o.zarr"),
                       "steps": [{"stats": {"per": "plane", "table": str(tmp_path / "st.parquet")}}]})
    res = p.run()
    text = build_report(p, res, timings={})
    assert f"the first {TABLE_ROWS} rows of 30" in " ".join(parse(text).text)
    assert "Error" not in " ".join(parse(text).text)


def test_blobs_are_circles_of_radius_sigma_sqrt2_on_a_strided_plane(stats_run, monkeypatch) -> None:
    from matplotlib.collections import EllipseCollection
    from skimage import data
    from skimage.feature import blob_log

    p, res, _ = stats_run
    seen = _captured_preview(monkeypatch)
    build_report(p, res, timings={}, max_preview=200)  # coins are 303 x 384: every 2nd pixel
    fig, inp, out = seen[-1]
    assert out.stride == 2
    titles = [ax.get_title() for ax in fig.axes]
    assert any("every 2nd pixel" in t for t in titles) and not any("2th" in t for t in titles)
    circles = [c for ax in fig.axes[:4] for c in ax.collections if isinstance(c, EllipseCollection)]
    assert len(circles) == 2  # on the input and on the output plane
    # the oracle: scikit-image's blob_log on the smoothed image; the report draws its radius sigma*sqrt(2)
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(data.coins().astype(np.float32), 1, mode="reflect")
    blobs = blob_log(smooth, min_sigma=3, max_sigma=10, threshold=20)
    want = np.sort(2 * np.sqrt(2) * blobs[:, 2] / 2)  # diameters, in pixels of the shown (strided) plane
    for c in circles:
        got = np.sort(np.asarray(c.get_widths()))  # full widths: diameters
        assert got.size == blobs.shape[0]
        np.testing.assert_allclose(got, want, rtol=1e-3)


# --------------------------------------------------------------------------- labels: inside, apart


def _texts(fig) -> list:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    hidden = set()  # labels of ticks outside the view: matplotlib keeps them but does not draw them
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            eps = 1e-9 * max(abs(lo), abs(hi), 1.0)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - eps <= tick.get_loc() <= hi + eps:
                    hidden |= {id(tick.label1), id(tick.label2)}
    out = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and id(t) not in hidden:
            bb = t.get_window_extent(r)
            if bb.width > 0 and bb.height > 0:
                out.append((t.get_text(), bb))
    return out


def assert_labels_fit_and_apart(fig) -> None:
    texts = _texts(fig)
    assert texts
    W, H = fig.bbox.width, fig.bbox.height
    for s, bb in texts:
        assert bb.x0 >= -0.5 and bb.y0 >= -0.5 and bb.x1 <= W + 0.5 and bb.y1 <= H + 0.5, f"{s!r} is cut: {bb}"
    for (s1, a), (s2, b) in itertools.combinations(texts, 2):
        ox = min(a.x1, b.x1) - max(a.x0, b.x0)
        oy = min(a.y1, b.y1) - max(a.y0, b.y0)
        assert not (ox > 0.5 and oy > 0.5), f"{s1!r} and {s2!r} overlap"


def _plane(data, index, stride=1):
    from convpipe.preview import Plane

    return Plane(data=data, axes="tczyx", index=index, info=None,
                 shape=(data.shape[0] * stride, data.shape[1] * stride), stride=stride)


@pytest.mark.parametrize("stride", [1, 2, 23])
def test_preview_figure_labels_fit_and_stay_apart(stride: int) -> None:
    from skimage import data

    img = data.camera()[::4, ::4]
    idx = {"t": 12, "c": 3, "z": 1017}  # a long place: once it ran into the neighbouring title
    inp, out = _plane(img, idx, stride), _plane(img.astype(np.float32) * 1e6, idx, stride)
    pts = [(f"steps[{i}].peaks-with-a-long-name", np.array([10.0, 40.0]), np.array([5.0, 60.0]))
           for i in range(4)]
    pts.append(("steps[9].blobs", np.array([30.0]), np.array([30.0]), np.array([6.0])))
    fig, drawn = figures.preview_fig(inp, out, pts)
    assert drawn == 9
    assert any(figures.every_nth(stride) in ax.get_title() for ax in fig.axes) == (stride > 1)
    assert_labels_fit_and_apart(fig)


@pytest.mark.parametrize("scale", [1.0, 1e6, -3.2e-5, 65535.0])
def test_histogram_labels_fit_and_stay_apart(scale: float) -> None:
    rng = np.random.default_rng(0)
    fig = figures.histogram_fig([(f"input (uint16): {10**6:,} voxels from 16 chunks", rng.random(5000) * scale, "#4e79a7"),
                                 ("output (float64): 1,000,000 voxels from 16 chunks",
                                  rng.normal(size=5000) * scale, "#e15759")])
    assert_labels_fit_and_apart(fig)


@pytest.mark.parametrize("workers", [1, 3, 16])
def test_timeline_labels_fit_and_stay_apart(workers: int) -> None:
    tok = "0123456789abcdef0123456789abcdef"
    names = [f"convpipe-input-{tok}", "convpipe-pass0", "convpipe-pass1-program", "rechunk-merge", "store-map",
             "finalize-hlgfinalizecompute", f"original-array-{tok}"]
    tasks = [(n, 0.01 * i + 0.002 * w, 0.01 * i + 0.002 * w + 0.05, w) for i, n in enumerate(names) for w in range(workers)]
    # phases that start within milliseconds of each other: their names once overlapped ("gcompute")
    phases = [{"name": "graph", "start_s": 0.0, "end_s": 0.001}, {"name": "compute", "start_s": 0.001, "end_s": 0.2},
              {"name": "pyramid", "start_s": 0.2005, "end_s": 0.21}, {"name": "finalize", "start_s": 0.2007,
                                                                        "end_s": 0.22}]
    fig = figures.timeline_fig({"tasks": tasks, "phases": phases})
    labels = {s for s, _ in _texts(fig)}
    assert {"graph", "compute", "pyramid", "finalize"} <= labels
    assert {"read input", "pass 0 tiles", "pass 1 program", "input array"} <= labels
    assert_labels_fit_and_apart(fig)
    assert figures.timeline_fig({"tasks": []}) is None


def test_the_label_check_catches_cut_and_overlapping_labels() -> None:
    """The check above can fail: two names written at one place, a title past the edge."""
    fig = figures._figure(4, 3)
    ax = fig.add_subplot(1, 1, 1)
    ax.annotate("graph", (0.5, 0.5), xycoords="axes fraction")
    ax.annotate("compute", (0.5, 0.5), xycoords="axes fraction")
    with pytest.raises(AssertionError, match="overlap"):
        assert_labels_fit_and_apart(fig)
    fig = figures._figure(4, 3)
    fig.add_subplot(1, 1, 1).set_title("input  t=12, c=3, z=1017 (2048×2048, every 2nd pixel)" * 2, fontsize=10)
    with pytest.raises(AssertionError, match="is cut"):
        assert_labels_fit_and_apart(fig)
