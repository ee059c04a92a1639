"""The dashboard's parts without a service: sessions, the origin check, log tails, previews of outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from matplotlib.image import imread

from convpipe.ome import write_multiscales
from convpipe.roots import Roots
from convpipe.service import ui_session
from convpipe.service.store import JobStore
from convpipe.service.ui_session import Sessions, same_origin
from convpipe.service.ui_views import PreviewCache, elapsed, log_tail, render_middle_plane


def test_sessions_expire_end_and_bind_their_csrf_token(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(ui_session.time, "time", lambda: now[0])
    s = Sessions(lifetime=60, max_sessions=3)
    a, b = s.create(), s.create()
    assert a != b and s.valid(a) and s.valid(b) and not s.valid("made-up") and not s.valid(None)
    assert s.csrf_ok(a, s.csrf(a)) and not s.csrf_ok(a, s.csrf(b)) and not s.csrf_ok(a, None)
    assert s.csrf(a) != s.csrf(a)[::-1] and Sessions().csrf(a) != s.csrf(a)  # a per-service secret
    s.drop(b)
    assert not s.valid(b) and not s.csrf_ok(b, s.csrf(b))
    now[0] += 61
    assert not s.valid(a) and not s.csrf_ok(a, s.csrf(a))  # expired on the server, whatever the cookie says
    keep = [s.create() for _ in range(5)]
    assert [s.valid(k) for k in keep] == [False, False, True, True, True]  # the oldest go beyond the cap


@pytest.mark.parametrize(("headers", "ok"), [
    ({"host": "127.0.0.1:8765", "origin": "http://127.0.0.1:8765"}, True),
    ({"host": "127.0.0.1:8765", "referer": "http://127.0.0.1:8765/ui/jobs/x"}, True),
    ({"host": "jobs.example.org", "origin": "https://jobs.example.org"}, True),  # behind a TLS proxy
    ({"host": "jobs.example.org:443", "origin": "https://jobs.example.org"}, True),
    ({"host": "JOBS.example.org", "origin": "https://jobs.example.ORG"}, True),
    ({"host": "127.0.0.1:8765", "origin": "http://127.0.0.1:8766"}, False),
    ({"host": "127.0.0.1:8765", "origin": "http://localhost:8765"}, False),
    ({"host": "127.0.0.1:8765", "origin": "null"}, False),
    ({"host": "127.0.0.1:8765"}, False),
    ({"host": "127.0.0.1:8765", "referer": "http://evil.example/?http://127.0.0.1:8765"}, False),
    ({"host": "127.0.0.1:8765", "origin": "http://127.0.0.1:8765.evil.example"}, False),
    ({"host": "127.0.0.1:8765", "origin": "http://evil@127.0.0.1:8765"}, False),
    ({"host": "127.0.0.1:8765", "origin": "file://127.0.0.1:8765"}, False),
    ({"origin": "http://127.0.0.1:8765"}, False),
    ({"host": "127.0.0.1:8765", "origin": "http://evil.example", "referer": "http://127.0.0.1:8765/"}, False),
])
def test_same_origin(headers, ok):
    assert same_origin(headers) is ok


def test_log_tail_keeps_the_end_and_folds_progress_lines(tmp_path):
    log = tmp_path / "log.txt"
    assert log_tail(log) == ("", False)
    log.write_text("=== attempt 1\n" + "".join(f"progress: {i}/9\n" for i in range(10)) + "done: out.zarr\n"
                   + "progress: 1/2\nprogress: 2/2\n")
    text, cut = log_tail(log)
    assert not cut and text.splitlines() == ["=== attempt 1", "progress: 9/9", "done: out.zarr", "progress: 2/2"]
    log.write_text("x" * 100 + "\n" + "last line\n")
    text, cut = log_tail(log, limit=40)
    assert cut and text == "last line"  # never half a line at the start


def test_elapsed_reads_like_a_person_would_say_it(tmp_path):
    store = JobStore(tmp_path / "j.sqlite")
    job = store.add("j", "spec", [])
    assert elapsed(job) == ""
    for started, finished, text in ((0.0, 12.34, "12.3 s"), (0.0, 185.0, "3 min 05 s"),
                                    (0.0, 7500.0, "2 h 05 min")):
        job.started, job.finished = started, finished
        assert elapsed(job) == text
    store.close()


def test_the_preview_is_the_middle_plane(tmp_path):
    rng = np.random.default_rng(7)
    stack = rng.integers(0, 1000, size=(3, 5, 40, 50), dtype=np.uint16)  # c, z, y, x as convpipe records it
    url = str(tmp_path / "out.zarr")
    arr = zarr.create_array(url, data=stack, chunks=(1, 1, 40, 50))
    arr.attrs["convpipe"] = {"axes": "czyx", "complete": True}
    data, caption = render_middle_plane(url, tmp_path / "p.png")
    assert caption.startswith("c=1, z=2 of ") and "40×50" in caption
    shown = imread(str(tmp_path / "p.png"))[..., 0]
    plane = stack[1, 2].astype(float)
    assert shown.shape == plane.shape
    assert np.corrcoef(shown.ravel(), plane.ravel())[0, 1] > 0.99  # that plane, linearly stretched


def test_a_pyramid_is_previewed_at_a_level_that_fits(tmp_path):
    url = str(tmp_path / "img.zarr")
    g = zarr.open_group(url, mode="w")
    base = np.random.default_rng(1).integers(0, 1000, size=(4, 1600, 1200), dtype=np.uint16)
    levels = [base, base[:, ::2, ::2], base[:, ::4, ::4]]
    for i, lv in enumerate(levels):
        g.create_array(str(i), data=lv, chunks=(1, 400, 400), dimension_names=tuple("zyx"))
    write_multiscales(g, "zyx", ["0", "1", "2"], [[1, 1, 1], [1, 2, 2], [1, 4, 4]])
    data, caption = render_middle_plane(url, tmp_path / "p.png", size=800)
    assert "(level 1)" in caption and "z=2" in caption  # level 0 is too large to read for a glance
    assert imread(str(tmp_path / "p.png")).shape[:2] == (800, 600)
    render_middle_plane(url, tmp_path / "q.png", size=100)  # none fits: the smallest, at a stride
    assert imread(str(tmp_path / "q.png")).shape[:2] == (100, 75)


def test_preview_cache_checks_the_roots_again(tmp_path, monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    for d in (root / "real", outside):
        zarr.create_array(str(d / "o.zarr"), data=np.arange(64, dtype=np.float32).reshape(8, 8))
    (root / "link").symlink_to(root / "real")
    store = JobStore(tmp_path / "j.sqlite")
    spec = f'"convpipe": 1\n"input": {{"url":"{root}/in.zarr"}}\n"output": {{"url":"{root}/link/o.zarr"}}\n'
    job = store.add("p", spec, [f"{root}/link/o.zarr"])
    cache = PreviewCache(Roots([root]), tmp_path / "jobs")
    from convpipe.errors import InputError

    with pytest.raises(InputError, match="has not succeeded"):
        cache.png(job)
    job.state = "succeeded"
    (root / "link").unlink()
    (root / "link").symlink_to(outside)  # re-pointed outside since the job was submitted
    with pytest.raises(InputError, match="outside the service's roots"):
        cache.png(job)
    assert not cache.path(job).exists()
    (root / "link").unlink()
    (root / "link").symlink_to(root / "real")
    png, caption = cache.png(job)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and cache.path(job).exists()
    from convpipe.service import ui_views

    def boom(*args, **kwargs):
        raise AssertionError("rendered twice")

    monkeypatch.setattr(ui_views, "render_middle_plane", boom)
    assert cache.png(job) == (png, caption)  # cached beside the job's log: rendered once
    store.close()
