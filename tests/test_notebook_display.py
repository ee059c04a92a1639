"""How a Pipeline and a Plan show themselves (issue 18, item 4): Jupyter's HTML, a readable repr, and the
progress bar in a notebook."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import convpipe
from convpipe.cli.progress import ProgressBar

K = np.arange(25, dtype=np.float64).reshape(5, 5)


@pytest.fixture
def pipeline(tmp_path):
    zarr.create_array(str(tmp_path / "in.zarr"), shape=(8, 64, 64), chunks=(4, 32, 32), dtype="uint16")
    return convpipe.load({"convpipe": 1, "name": "nuclei", "input": str(tmp_path / "in.zarr"),
                          "output": str(tmp_path / "out.zarr"),
                          "steps": [{"gaussian": {"sigma": {"y": 2, "x": 2}}}, {"correlate": {"kernel": K, "axes": "yx"}},
                                    {"peaks": {"radius": 3, "threshold": 0.1, "table": "p.parquet"}},
                                    {"zscore": {}}]})


def test_pipeline_repr_is_the_chain_not_a_dump(pipeline):
    text = repr(pipeline)
    assert text.startswith("Pipeline 'nuclei' (4 steps): gaussian(sigma: {y: 2.0, x: 2.0}) -> correlate(")
    assert "array(5×5 float64)" in text  # a kernel by its shape, never its 25 values
    assert "peaks(radius: 3, threshold: 0.1, table: 'p.parquet')" in text
    assert "in.zarr" in text and "out.zarr" in text
    for dump in ("Params(", "model_", "Step(", "24.0", "mode:"):  # no pydantic dumps, no defaults
        assert dump not in text


def test_plan_repr_is_the_explain_text(pipeline):
    plan = pipeline.explain()
    assert repr(plan) == str(plan)
    assert repr(plan).startswith("plan for 'nuclei'") and "Plan(spec=" not in repr(plan)


def test_jupyter_renders_both_as_html(pipeline):
    from IPython.core.formatters import DisplayFormatter

    fmt = DisplayFormatter()
    for obj, must in ((pipeline, ["<table>", "steps[1]", "correlate", "array(5×5 float64)"]),
                      (pipeline.explain(), ["<table>", "pass", "memory / task", "zscore", "<details>"])):
        data, _ = fmt.format(obj)
        assert "text/html" in data and "text/plain" in data
        html = data["text/html"]
        for m in must:
            assert m in html, m
    plan = pipeline.explain()
    html = plan._repr_html_()
    assert len(plan.passes) == 2 and html.count("<tr><td>") >= 2  # one row per pass (zscore starts pass 1)


# a blank location is refused by the spec itself (SpecError), so every drawn name holds a visible character
HOSTILE = st.text(alphabet=st.sampled_from(list("<>&\"'/ab script=")), min_size=1, max_size=30).filter(str.strip)
TAGS = {"div", "style", "b", "code", "table", "tr", "th", "td", "details", "summary", "pre", "br"}


def _parse(page: str) -> tuple[set[str], str]:
    """(the tags of ``page``, its text) as a browser's parser reads them."""
    from html.parser import HTMLParser

    class P(HTMLParser):
        tags: set = set()
        text = ""

        def handle_starttag(self, tag, attrs):
            self.tags.add(tag)

        def handle_data(self, d):
            self.text += d

    parser = P(convert_charrefs=True)
    parser.tags = set()
    parser.feed(page)
    parser.close()
    return parser.tags, parser.text


@settings(max_examples=40, deadline=None)
@given(name=HOSTILE, url=HOSTILE)
def test_html_escapes_what_the_spec_says(name, url):
    """Names, URLs and parameters come from the spec: they are text in the HTML, never markup."""
    p = convpipe.load({"convpipe": 1, "name": name, "input": {"url": url + ".zarr"},
                       "steps": [{"peaks": {"radius": 1, "table": url}}]})
    tags, text = _parse(p._repr_html_())
    assert tags <= TAGS
    assert name in text and url + ".zarr" in text and repr(url) in text


def test_plan_html_escapes_the_name(tmp_path):
    zarr.create_array(str(tmp_path / "in.zarr"), shape=(32, 32), chunks=(16, 16), dtype="float32")
    p = convpipe.load({"convpipe": 1, "name": "<img src=x onerror=alert(1)>", "input": str(tmp_path / "in.zarr"),
                       "steps": [{"gaussian": {"sigma": 1}}]})
    html = p.explain()._repr_html_()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_pipeline_without_input_shows_how_to_give_one():
    p = convpipe.load({"convpipe": 1, "steps": [{"sobel": {}}]})
    assert "apply(array)" in repr(p) and "apply(array)" in p._repr_html_()


# --------------------------------------------------------------------------- progress in a notebook


def _capture_display(monkeypatch) -> list:
    """IPython's display() as a kernel would receive it (outside a kernel it prints, which rich redirects)."""
    import IPython.display as disp

    shown: list = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def display(*objs, display_id=False, **kw):
        shown.extend(("display", o) for o in objs)
        return Handle()

    monkeypatch.setattr(disp, "display", display)
    return shown


def test_progress_bar_in_jupyter_uses_rich_widgets(monkeypatch):
    """In Jupyter rich draws into an ipywidgets Output (its notebook support)."""
    ipywidgets = pytest.importorskip("ipywidgets")
    from rich.console import Console

    shown = _capture_display(monkeypatch)
    with ProgressBar("job", console=Console(force_jupyter=True)) as bar:
        bar(3, 10)
        bar(10, 10)
    assert bar.bar is not None and isinstance(bar.bar.live.ipy_widget, ipywidgets.Output)
    assert any(o is bar.bar.live.ipy_widget for _, o in shown)  # the widget went to the notebook
    assert bar.bar.tasks[0].completed == 10 and bar.bar.tasks[0].total == 10


def test_progress_bar_in_jupyter_without_widgets_updates_one_html_element(monkeypatch):
    from rich.console import Console

    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    shown = _capture_display(monkeypatch)
    with ProgressBar("a <b> job", console=Console(force_jupyter=True)) as bar:
        bar(5, 20)
        bar(20, 20)
    kinds = [k for k, _ in shown]
    assert kinds[0] == "display" and kinds.count("display") == 1 and kinds[1:] == ["update", "update"]
    first, last = shown[0][1].data, shown[-1][1].data
    assert "<progress value='0'" in first
    assert "<progress value='20' max='20'>" in last and "20/20 tiles" in last and "a &lt;b&gt; job" in last
