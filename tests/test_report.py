"""``convpipe run --report``: the HTML run report (convpipe.report).

Without a browser: the page parses, every <img> is a decodable, non-blank PNG data URI, nothing is
fetched from outside the file, and every section is there. With Chromium (Debian's ``chromium``
package; skipped, saying so, when it is not installed): the page renders to a non-blank screenshot and
every image decodes in the browser.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

import convpipe
from convpipe.cli import main
from convpipe.demo import make_stack
from convpipe.ome import write_multiscales
from convpipe.report import RunMonitor, build_report, task_prefix, write_report

Image = pytest.importorskip("PIL.Image")  # pillow comes with matplotlib

SECTIONS = ("summary", "timings", "previews", "histograms", "output", "spec", "plan")


class _Page(HTMLParser):
    """Collects what the checks need: images, external references, section ids, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[dict[str, str | None]] = []
        self.external: list[str] = []
        self.ids: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in ("img", "meta", "br", "link", "input"):
            self.stack.append(tag)
        if tag == "img":
            self.imgs.append(a)
        if tag == "script":
            self.scripts.append(a)
        if tag in ("link", "iframe", "object", "embed") or (tag == "script" and a.get("src")):
            self.external.append(f"<{tag}>")
        for attr in ("src", "href"):
            v = a.get(attr)
            if v and not v.startswith(("data:", "#")):
                self.external.append(v)
        if a.get("id"):
            self.ids.append(a["id"])

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        self.text.append(data)


def parse(html_text: str) -> _Page:
    p = _Page()
    p.feed(html_text)
    p.close()
    return p


def decode_png(uri: str) -> np.ndarray:
    m = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", uri)
    assert m, uri[:60]
    raw = base64.b64decode(m.group(1), validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(raw))
    im.load()
    return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------- a run to report on


def _ome_input(path: Path) -> None:
    stack = make_stack((6, 96, 88), seed=1)
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    a = g.create_array("0", shape=stack.shape, chunks=(3, 48, 44), dtype=stack.dtype, dimension_names=tuple("zyx"))
    a[...] = stack
    write_multiscales(g, "zyx", ["0"], [[2.0, 0.5, 0.5]], units={"z": "µm", "y": "µm", "x": "µm"}, name="nuclei")


SPEC = """\
# find nuclei: blur, then local maxima
convpipe: 1
name: nuclei-peaks
input:
  url: in.zarr
output:
  url: out.zarr
  pyramid: 1
steps:
  - gaussian: {sigma: 1.5}
  - peaks: {radius: 4, threshold: 15000, table: peaks.parquet}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One monitored run (input OME-Zarr, peaks table) and its report; shared by the tests below."""
    d = tmp_path_factory.mktemp("report")
    _ome_input(d / "in.zarr")
    (d / "spec.yaml").write_text(SPEC)
    p = convpipe.load(d / "spec.yaml")
    mon = RunMonitor(interval=0.01)
    with mon, mon.callback():
        res = p.run()
    timings = mon.to_dict()
    path = write_report(p, res, d / "reports" / "run.html", timings=timings)
    return p, res, path, timings


def test_report_is_self_contained_and_every_image_decodes(run) -> None:
    _, res, path, _ = run
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert page.external == []  # no stylesheet, script src, iframe, or URL to fetch
    assert not [s for s in page.scripts if s.get("type") != "application/json"]  # no executable script
    for sid in SECTIONS:
        assert sid in page.ids, sid
    # previews (planes + spectra), histograms, task stream
    assert len(page.imgs) >= 3
    for img in page.imgs:
        assert img.get("alt")
        px = decode_png(img["src"])
        assert px.shape[0] > 100 and px.shape[1] > 300
        assert px.std() > 10  # drawn, not blank
    body = " ".join(page.text)
    assert "nuclei-peaks" in body
    assert "# find nuclei: blur, then local maxima" in body  # the spec as written, comments included
    assert "plan for 'nuclei-peaks'" in body  # convpipe explain
    assert "steps[1].peaks" in body  # the table, and the points drawn from it
    rows = res.outputs["steps[1].peaks"]["rows"]
    assert f"of {rows} rows on this plane" in body
    assert "Mvoxel/s" in body or "kvoxel/s" in body or "voxel/s" in body


def test_report_timings_and_memory_from_the_monitor(run) -> None:
    _, res, path, timings = run
    assert timings["peak_rss"] and timings["peak_rss"] > 10 * 2**20
    assert timings["rss_samples"] >= 2
    pre = timings["prefixes"]
    tile_prefix = next(k for k in pre if k.startswith("convpipe-pass0"))
    assert pre[tile_prefix]["tasks"] == res.tiles
    reads = next(k for k in pre if k.startswith("convpipe-input"))  # named by the input's fingerprint
    assert pre[reads]["tasks"] >= 1  # input reads (one task per tile-sized block)
    assert all(0 <= t[1] <= t[2] for t in timings["tasks"])
    body = " ".join(parse(path.read_text()).text)
    assert "task stream" in path.read_text()
    assert "pass 0 tiles" in body
    assert "not measured" not in body.split("Timings")[0]  # the summary shows the measured peak
    assert "MiB" in body


def test_report_without_measurements_says_so(run, tmp_path: Path) -> None:
    p, res, _, _ = run
    # a RunResult without timings (as an unmonitored run returns)
    bare = convpipe.RunResult(res.output_url, res.elapsed, res.voxels, res.tasks, res.tiles, res.skipped_tiles,
                              res.outputs)
    text = build_report(p, bare, timings={})
    body = " ".join(parse(text).text)
    assert "not measured" in body
    assert "Per-pass timings were not recorded" in body


def test_a_failing_section_does_not_lose_the_report(run, tmp_path: Path) -> None:
    p, res, _, _ = run
    broken = convpipe.RunResult(res.output_url, res.elapsed, res.voxels, res.tasks, res.tiles, 0,
                                {**res.outputs, "steps[9].gone": {"table": str(tmp_path / "missing.parquet"),
                                                                  "rows": 3}})
    out = write_report(p, broken, tmp_path / "r.html")
    page = parse(out.read_text())
    body = " ".join(page.text)
    assert "steps[9].gone" in body and "no such overlay table" in body  # named, with why
    for img in page.imgs:
        decode_png(img["src"])
    assert not list(tmp_path.glob(".r.html.*.tmp"))  # written atomically


def test_report_escapes_every_value_and_embeds_parseable_json(run, tmp_path: Path) -> None:
    """Templates autoescape: a spec name, a path or an error message is text on the page, never markup;
    the run's numbers ride along as JSON a script could parse (``tojson``, not HTML entities)."""
    import json

    p, res, _, _ = run
    evil = '<img src="https://example.invalid/x.png" onerror="alert(1)">&<script>x</script>'
    q = convpipe.load({**p.spec.canonical(), "name": evil})
    broken = convpipe.RunResult(res.output_url, res.elapsed, res.voxels, res.tasks, res.tiles, 0,
                                {**res.outputs, "<b>step</b>": {"table": str(tmp_path / "<i>gone</i>.parquet")}})
    text = build_report(q, broken, timings={})
    page = parse(text)
    assert page.external == []  # the name's <img src=...> never became an element
    assert not [s for s in page.scripts if s.get("type") != "application/json"]
    assert "<b>" not in text and "<i>" not in text
    body = " ".join(page.text)
    assert evil in body and "<b>step</b>" in body  # shown as text
    m = re.search(r'<script type="application/json" id="convpipe-run">(.*?)</script>', text, re.S)
    meta = json.loads(m.group(1))
    assert meta == {"name": evil, "elapsed": res.elapsed, "voxels": res.voxels, "tasks": res.tasks,
                    "tiles": res.tiles}


def test_templates_ship_as_package_data() -> None:
    """The page renders from files inside the package (``pyproject``'s package-data lists them)."""
    import tomllib
    from importlib.resources import files

    tpl = files("convpipe.report") / "templates"
    names = {t.name for t in tpl.iterdir()}
    assert {"report.html.j2", "sections.html.j2", "report.css"} <= names
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.exists():  # a source checkout: package-data must cover every template
        data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["convpipe"]
        from fnmatch import fnmatch

        for n in names:
            assert any(fnmatch(f"report/templates/{n}", pat) for pat in data), (n, data)


def test_task_prefix_keeps_the_pass() -> None:
    tok = "0123456789abcdef0123456789abcdef"
    assert task_prefix((f"convpipe-pass1-{tok}", 0, 2)) == "convpipe-pass1"
    assert task_prefix(f"convpipe-pass0-{tok}-program") == "convpipe-pass0-program"
    assert task_prefix((f"from-zarr-{tok}", 1)) == "from-zarr"
    assert task_prefix("plain") == "plain"


def test_monitor_ignores_other_threads() -> None:
    import threading

    import dask
    import dask.array as da

    other = da.ones(10, chunks=5).map_blocks(np.negative, name="other-thread-blocks").sum()
    mine = da.ones(8, chunks=4).map_blocks(np.negative, name="main-thread-blocks").sum()
    mon = RunMonitor(interval=0.01)
    with mon, mon.callback():
        t = threading.Thread(target=lambda: dask.compute(other, scheduler="threads", optimize_graph=False))
        t.start()
        t.join()
        dask.compute(mine, scheduler="sync", optimize_graph=False)
    d = mon.to_dict()
    assert d["prefixes"]["main-thread-blocks"]["tasks"] == 2
    assert "other-thread-blocks" not in d["prefixes"]  # dask callbacks are global; the monitor filters
    assert {t[3] for t in d["tasks"]} == {0}  # one worker (sync scheduler), numbered from 0


def test_cli_run_report(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((2, 40, 30)).astype(np.float32)
    zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(1, 20, 30), dtype=x.dtype)[...] = x
    (tmp_path / "s.yaml").write_text("convpipe: 1\nname: cli-report\ninput: {url: in.zarr}\n"
                                     "output: {url: out.zarr}\nsteps:\n  - uniform: {size: 3}\n")
    rc = main(["run", str(tmp_path / "s.yaml"), "--report", str(tmp_path / "rep" / "r.html")])
    assert rc == 0
    page = parse((tmp_path / "rep" / "r.html").read_text())
    assert "cli-report" in " ".join(page.text)
    assert len(page.imgs) >= 2
    for img in page.imgs:
        decode_png(img["src"])


# --------------------------------------------------------------------------- a real browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)

_PROBE = """<script>
addEventListener("load", () => {
  const imgs = [...document.images];
  document.body.dataset.imgs = imgs.length;
  document.body.dataset.decoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", f"--user-data-dir={profile}", *args],
        check=False, capture_output=True, text=True, timeout=90, env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": "disabled:"},
    )


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium); "
                                             "the browser-free checks above still run")
def test_report_renders_in_headless_chromium(run, tmp_path: Path) -> None:
    _, _, path, _ = run
    shot = tmp_path / "shot.png"
    r = _chromium(f"--screenshot={shot}", "--window-size=1200,2000", path.resolve().as_uri(), profile=tmp_path / "p1")
    assert shot.exists(), r.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert px.shape[:2] == (2000, 1200)
    assert px.std() > 20  # text, cards and figures, not a blank page
    # the preview figure's pixels reached the screen: many distinct colours (a blank or broken-image
    # page has a handful)
    assert len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 500

    # images decode in the browser: a copy of the page with a probe script, DOM dumped after load
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    r = _chromium("--dump-dom", "--virtual-time-budget=5000", probe.resolve().as_uri(), profile=tmp_path / "p2")
    n_img = len(parse(path.read_text()).imgs)
    m = re.search(r'<body data-imgs="(\d+)" data-decoded="(\d+)"', r.stdout)
    assert m, r.stdout[:500] + r.stderr[-1000:]
    assert int(m.group(1)) == n_img >= 3
    assert int(m.group(2)) == n_img
