"""What the dashboard's pages show, gathered from the job table, job folders and outputs.

Everything here is plain data for the templates (``service/templates``), which autoescape it. The plan
(``explain``) and the preview PNG are computed once per job and cached: the plan in memory, the preview beside
the job's log. Both check the job's locations against the service's roots again before opening anything,
since a symlink may have been re-pointed since the job was submitted.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .store import TERMINAL, Job, error_text

__all__ = ["PlanCache", "PreviewCache", "elapsed", "job_view", "log_tail", "when"]

#: The longest side of a dashboard preview, in pixels (larger planes are read at a stride or a coarser level).
PREVIEW_SIZE = 768
#: How much of the end of a log the job page shows.
LOG_TAIL_BYTES = 64 << 10

_PROGRESS_LINE = re.compile(r"^progress:\s*\d+\s*/\s*\d+\s*$")


def when(t: float | None) -> str:
    """A time as people read it on the page: ``2026-05-01 12:00:03 UTC``."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def elapsed(job: Job, now: float | None = None) -> str:
    """Time the job has run (so far, while it runs); empty before it started."""
    if job.started is None:
        return ""
    end = job.finished if job.finished is not None else (now or time.time())
    return _span(end - job.started)


def job_view(job: Job, now: float | None = None) -> dict[str, Any]:
    """One job as the templates show it."""
    percent = round(100.0 * min(1.0, max(0.0, job.progress)), 1)
    return {
        "id": job.id, "name": job.name or job.id, "state": job.state, "percent": percent,
        "percent_text": f"{percent:.0f}%", "submitted": when(job.submitted), "started": when(job.started),
        "finished": when(job.finished), "elapsed": elapsed(job, now), "error": error_text(job.error),
        "outputs": list(job.outputs), "attempts": job.attempts, "active": job.state not in TERMINAL,
        "succeeded": job.state == "succeeded",
    }


def log_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> tuple[str, bool]:
    """The end of a job's log, each run of progress lines shortened to its last; (text, whether cut)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except FileNotFoundError:
        return "", False
    cut = size > limit
    text = data.decode("utf-8", "replace")
    if cut:
        text = text.partition("\n")[2]  # the first line is probably a piece of one
    kept: list[str] = []
    for line in text.splitlines():
        if kept and _PROGRESS_LINE.match(line) and _PROGRESS_LINE.match(kept[-1]):
            kept[-1] = line
        else:
            kept.append(line)
    return "\n".join(kept), cut


def _bound_spec(job: Job, roots: Any) -> Any:
    """The job's spec, parsed, its locations checked against the roots again, then bound."""
    from ..bind import bind
    from ..spec import parse_spec_text
    from .policy import check_locations

    spec = parse_spec_text(job.spec, base_dir=roots.base_dir, source=f"job {job.id}")
    check_locations(spec, roots)
    return bind(spec, cluster=False)


class _Lru:
    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[str, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: str, value: Any) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


class PlanCache:
    """``explain`` of each job's spec on the service's cluster, computed once (metadata only)."""

    def __init__(self, roots: Any, cluster: str, size: int = 256):
        self.roots, self.cluster = roots, cluster
        self._cache = _Lru(size)

    def text(self, job: Job) -> str:
        """The plan as ``convpipe explain`` prints it, or one line saying why there is none."""
        hit = self._cache.get(job.id)
        if hit is not None:
            return hit
        from ..api import load
        from ..errors import ConvpipeError

        try:
            text = str(load(_bound_spec(job, self.roots)).explain(cluster=self.cluster))
        except ConvpipeError as e:  # e.g. the input is gone, or now lies outside the roots
            return f"no plan: {e}"
        except Exception as e:  # noqa: BLE001 - a page must render whatever the input holds
            return f"no plan: {type(e).__name__}: {e}"
        self._cache.put(job.id, text)
        return text


class PreviewCache:
    """A PNG of a middle plane of each succeeded job's output, rendered once into the job's folder."""

    def __init__(self, roots: Any, jobs_dir: Path):
        self.roots, self.jobs_dir = roots, Path(jobs_dir)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, job: Job) -> Path:
        return self.jobs_dir / job.id / "preview.png"

    def output_of(self, job: Job) -> str | None:
        """The job's image output (the spec's ``output.url``), or None for a job that writes only tables."""
        from .conflicts import pinned_output

        return pinned_output(job.spec)

    def png(self, job: Job) -> tuple[bytes, str]:
        """(PNG bytes, what it shows). Raises ConvpipeError when there is nothing to show."""
        from ..errors import InputError

        if job.state != "succeeded":
            raise InputError(f"job {job.id} has not succeeded; its output has no preview")
        with self._guard:
            lock = self._locks.setdefault(job.id, threading.Lock())
        with lock:  # two requests for one preview render it once
            path = self.path(job)
            caption = path.with_suffix(".txt")
            if path.exists() and caption.exists():
                return path.read_bytes(), caption.read_text()
            url = self.output_of(job)
            if url is None:
                raise InputError(f"job {job.id} writes no image output")
            if not self.roots.contains(url):
                raise InputError(f"{url} now lies outside the service's roots")
            data, text = render_middle_plane(url, path)
            caption.write_text(text)
            return data, text


def render_middle_plane(url: str, png: Path, size: int = PREVIEW_SIZE) -> tuple[bytes, str]:
    """Render the middle plane (the middle of every axis but y and x) of ``url`` to ``png``.

    An OME-Zarr output with a pyramid is read at its first level whose plane fits ``size``; a larger plane
    is read at a stride, so memory and time stay bounded for archive-sized outputs.
    """
    from ..ome import open_level
    from ..preview import array_axes, render_preview

    _, _, info = open_level(url, 0)
    level = 0
    if info is not None:
        for i in range(len(info.levels)):
            arr, found, _ = open_level(url, i)
            axes, shape = array_axes(url, arr, found)
            level = i
            if max(shape[axes.index("y")], shape[axes.index("x")]) <= size:
                break
    arr, found, _ = open_level(url, level)
    axes, shape = array_axes(url, arr, found)
    index = {a: n // 2 for a, n in zip(axes, shape, strict=True) if a not in "yx"}
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    res = render_preview(url, png=tmp, index=index, level=level, axes=axes, max_size=size)
    data = tmp.read_bytes()
    os.replace(tmp, png)
    where = ", ".join(f"{a}={i}" for a, i in res.index.items()) or "the only plane"
    text = (f"{where} of {url}" + (f" (level {level})" if level else "")
            + f", {res.plane_shape[0]}×{res.plane_shape[1]}")
    return data, text
