"""``convpipe run --report FILE.html``: one self-contained HTML page about a finished run.

The page holds the spec as run (YAML), the plan, timings (elapsed, voxels/s, tasks, tiles; per pass and
per task kind when the run was monitored), peak memory, histograms of input and output values, and
preview images: the middle plane of input and output, their log spectra, and the rows of every table
the run wrote that lie on that plane, drawn over the output plane. Figures are matplotlib Agg renders
(the object API, no pyplot state), embedded as ``data:image/png;base64`` URIs; the CSS is inline. No
script, no external resource: the file can be mailed, archived, or opened offline.

Data reads are bounded: histograms sample a few chunks (one plane of each), previews read one plane at a
stride that keeps it under ``max_preview`` pixels a side. Every section is built on its own; one that
fails (a table deleted since the run, an unreadable input) shows why, and the rest of the report is
still written.

:class:`RunMonitor` is what ``Pipeline.run`` can use to measure a run for this report: a dask callback
recording every task's start and end by key prefix (the task stream), named phases, and a thread
sampling the resident memory (RSS) of this process and its children. It is importable without matplotlib.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import html
import io
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunMonitor", "build_report", "task_prefix", "write_report"]

#: longest side of a preview plane, in pixels (planes larger than that are read at a stride)
MAX_PREVIEW = 640
#: chunks sampled for each histogram
HIST_CHUNKS = 8


# =========================================================================== measuring a run

_TOKEN = re.compile(r"-[0-9a-f]{32}(?=-|$)")


def task_prefix(key: Any) -> str:
    """The kind of a dask task: its key name without dask's 32-hex token.

    ``("convpipe-pass0-<token>", 3, 1)`` → ``"convpipe-pass0"``, ``"from-zarr-<token>"`` → ``"from-zarr"``.
    (``dask.utils.key_split`` would also drop ``pass0``, losing which pass a tile task belongs to.)
    """
    name = key[0] if isinstance(key, tuple) and key else key
    name = name.decode() if isinstance(name, bytes) else str(name)
    return _TOKEN.sub("", name)


class RunMonitor:
    """Measures a run: task stream by key prefix, named phases, peak RSS.

    Use it as a context manager around the run; inside, wrap local computes with :meth:`callback`
    (a dask callback) and name phases with :meth:`phase`. For a ``distributed`` client, feed
    ``distributed.get_task_stream``'s records to :meth:`add_task_stream` instead.

    Times are seconds since the monitor started. A local-scheduler task's start is when the scheduler
    handed it to a worker thread and its end when the result came back (the scheduler's view, which
    includes at most a little queueing). RSS is sampled every ``interval`` seconds (of this process
    plus its child processes, e.g. a ``processes`` pool or a ``local:N`` cluster); peaks shorter than
    the interval can be missed, so it is a lower bound of the true peak.
    """

    def __init__(self, interval: float = 0.02, max_tasks: int = 20000):
        self.interval = float(interval)
        self.max_tasks = int(max_tasks)
        self.t0 = time.perf_counter()
        self.tasks: list[tuple[str, float, float, int]] = []  # (prefix, start, end, worker)
        self.dropped = 0
        self.phases: list[tuple[str, float, float]] = []
        self.peak_rss: int | None = None
        self.baseline_rss: int | None = None
        self.samples = 0
        self._by_prefix: dict[str, list[float]] = {}  # prefix -> [count, busy seconds, first, last]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starts: dict[Any, float] = {}
        self._workers: dict[Any, int] = {}  # worker id (thread ident, address) -> 0, 1, 2, ... in order seen
        self._owner = threading.get_ident()

    # ------------------------------------------------------------ memory
    def _rss(self) -> int | None:
        try:
            import psutil
        except ImportError:
            return None
        try:
            proc = psutil.Process(os.getpid())
            rss = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(Exception):  # a child that just exited
                    rss += child.memory_info().rss
            return int(rss)
        except Exception:  # noqa: BLE001 - psutil.Error & co: memory is advisory
            return None

    def _sample(self) -> None:
        rss = self._rss()
        if rss is None:
            return
        self.samples += 1
        self.peak_rss = rss if self.peak_rss is None else max(self.peak_rss, rss)

    def _sampler(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RunMonitor:  # noqa: PYI034 - subclasses are not expected
        self.t0 = time.perf_counter()
        self._owner = threading.get_ident()
        self.baseline_rss = self._rss()
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sampler, name="convpipe-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._sample()

    # ------------------------------------------------------------ phases and tasks
    def now(self) -> float:
        return time.perf_counter() - self.t0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the wall time of a named phase (``"compute"``, ``"tables"``, ``"pyramid"``)."""
        start = self.now()
        try:
            yield
        finally:
            self.phases.append((str(name), start, self.now()))

    def record(self, prefix: str, start: float, end: float, worker: Any = 0) -> None:
        """Add one task (times relative to the monitor's start; ``worker`` any hashable worker id)."""
        with self._lock:
            worker = self._workers.setdefault(worker, len(self._workers))
            agg = self._by_prefix.setdefault(prefix, [0, 0.0, start, end])
            agg[0] += 1
            agg[1] += max(0.0, end - start)
            agg[2] = min(agg[2], start)
            agg[3] = max(agg[3], end)
            if len(self.tasks) < self.max_tasks:
                self.tasks.append((prefix, start, end, int(worker)))
            else:
                self.dropped += 1

    def callback(self) -> Any:
        """A ``dask.callbacks.Callback`` recording every task of local computes run inside it.

        dask callbacks are process-wide; the local scheduler calls them in the thread that called
        ``compute``, so only tasks scheduled from the thread that entered the monitor are recorded
        (other runs in the same process, e.g. jobs of ``convpipe serve``, are not mixed in).
        """
        from dask.callbacks import Callback

        mon = self

        class _TaskStream(Callback):
            def _pretask(self, key, dsk, state):
                if threading.get_ident() == mon._owner:
                    mon._starts[key] = mon.now()

            def _posttask(self, key, result, dsk, state, worker_id):
                if threading.get_ident() != mon._owner:
                    return
                end = mon.now()
                start = mon._starts.pop(key, end)
                mon.record(task_prefix(key), start, end, worker_id)

        return _TaskStream()

    def add_task_stream(self, records: list[Mapping[str, Any]]) -> None:
        """Add ``distributed`` task-stream records (``get_task_stream(client).data``)."""
        wall0 = time.time() - self.now()  # the monitor's start in epoch seconds
        for rec in records:
            for ss in rec.get("startstops", ()):
                if ss.get("action") != "compute":
                    continue
                self.record(task_prefix(rec.get("key", "?")), float(ss["start"]) - wall0,
                            float(ss["stop"]) - wall0, ("distributed", str(rec.get("worker", ""))))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (what ``RunResult.timings`` holds)."""
        prefixes = {
            p: {"tasks": int(c), "busy_s": round(b, 6), "first_start_s": round(f, 6), "last_end_s": round(last, 6)}
            for p, (c, b, f, last) in sorted(self._by_prefix.items(), key=lambda kv: kv[1][2])
        }
        return {
            "peak_rss": self.peak_rss,
            "baseline_rss": self.baseline_rss,
            "rss_samples": self.samples,
            "rss_interval_s": self.interval,
            "phases": [{"name": n, "start_s": round(s, 6), "end_s": round(e, 6)} for n, s, e in self.phases],
            "prefixes": prefixes,
            "tasks": [[p, round(s, 6), round(e, 6), w] for p, s, e, w in self.tasks],
            "tasks_dropped": self.dropped,
        }


# =========================================================================== small helpers


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "not measured"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _fmt_rate(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    for div, unit in ((1e9, "Gvoxel/s"), (1e6, "Mvoxel/s"), (1e3, "kvoxel/s")):
        if v >= div:
            return f"{v / div:.1f} {unit}"
    return f"{v:.0f} voxel/s"


def _fmt_s(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.0f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{int(s // 60)} min {s % 60:.0f} s"


def _png_uri(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float, h: float, layout: Any = None) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout=layout)


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">'


def _unavailable(what: str, err: BaseException | str) -> str:
    why = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return f'<p class="muted">{_esc(what)} unavailable: {_esc(why)}</p>'


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


# =========================================================================== reading data


def _provenance(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    import zarr

    from .ome import zarr_storage_options

    node = zarr.open(store=url, mode="r", storage_options=zarr_storage_options(url, storage_options))
    prov = node.attrs.get("convpipe")
    return dict(prov) if isinstance(prov, Mapping) else {}


def _sample_chunks(arr: Any, axes: str, n_chunks: int = HIST_CHUNKS) -> tuple[np.ndarray, int]:
    """Values of up to ``n_chunks`` chunks spread over the chunk grid (one y/x plane of each)."""
    grid = [math.ceil(s / c) for s, c in zip(arr.shape, arr.chunks, strict=True)]
    total = int(np.prod(grid, dtype=np.int64))
    if total == 0:
        return np.empty(0), 0
    picks = sorted({round(float(i)) for i in np.linspace(0, total - 1, min(n_chunks, total))})
    parts = []
    for flat in picks:
        idx = np.unravel_index(flat, grid)
        sel: list[Any] = []
        for a, i, c, s in zip(axes, idx, arr.chunks, arr.shape, strict=True):
            lo, hi = int(i) * c, min(int(i) * c + c, s)
            # one plane per chunk along every non-plane axis: the chunk is decoded once either way,
            # but the sample stays small for deep chunks
            sel.append(slice(lo, hi) if a in "yx" else (lo + hi - 1) // 2)
        parts.append(np.asarray(arr[tuple(sel)]).ravel())
    return np.concatenate(parts) if parts else np.empty(0), len(picks)


def _finite(v: np.ndarray) -> np.ndarray:
    v = np.abs(v) if np.iscomplexobj(v) else v
    v = v.astype(np.float64, copy=False)
    return v[np.isfinite(v)]


def _table_points(url: str, index: Mapping[str, int], storage_options: Mapping[str, Any] | None,
                  stride: int, factors: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray, int]:
    """(y, x) of the table rows on the plane (in the shown, strided pixel grid) and the table's row count."""
    from .preview import read_points

    y, x, n = read_points(url, index, factors, storage_options)
    return y / stride, x / stride, n


# =========================================================================== figures


def _show_plane(ax: Any, data: np.ndarray, title: str, cmap: str = "gray") -> None:
    shown = np.abs(data) if np.iscomplexobj(data) else data.astype(np.float64)
    fin = shown[np.isfinite(shown)]
    vmin, vmax = (float(v) for v in np.percentile(fin, [1, 99.8])) if fin.size else (0.0, 1.0)
    if not vmax > vmin:
        vmin, vmax = vmin - 0.5, vmin + 0.5
    im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.figure.colorbar(im, ax=ax, shrink=0.8, pad=0.01)


def _spectrum(data: np.ndarray) -> np.ndarray:
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(np.nan_to_num(data.astype(np.float64))))))


def _preview_figure(inp: Any, out: Any, points: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[str, int]:
    """2 x 2: input plane, output plane (+ table points), their log spectra. Returns (URI, points drawn)."""
    fig = _figure(10.5, 9.6, layout="constrained")
    axs = fig.subplots(2, 2)

    def where(p: Any) -> str:
        at = ", ".join(f"{a}={i}" for a, i in p.index.items())
        st = f", every {p.stride}th pixel" if p.stride > 1 else ""
        return f"{at or 'plane'} ({p.shape[0]}×{p.shape[1]}{st})"

    _show_plane(axs[0, 0], inp.data, f"input  {where(inp)}")
    _show_plane(axs[0, 1], out.data, f"output  {where(out)}")
    drawn = 0
    colors = ["#ff3b30", "#ffcc00", "#34c759", "#00c7ff", "#ff2d95"]
    h, w = out.data.shape
    for i, (label, py, px) in enumerate(points):
        if not py.size:
            continue
        size = 60.0  # points²: a circle ~9 pt across whatever the plane's size
        for ax in (axs[0, 0], axs[0, 1]):
            ax.scatter(px, py, s=size, facecolors="none", edgecolors=colors[i % len(colors)], linewidths=1.4,
                       label=f"{label} ({py.size})" if ax is axs[0, 1] else None)
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        drawn += int(py.size)
    if drawn:
        axs[0, 1].legend(loc="upper right", fontsize=8, framealpha=0.8)
    _show_plane(axs[1, 0], _spectrum(inp.data), "input  log spectrum  log1p|fftshift(fft2)|", cmap="magma")
    _show_plane(axs[1, 1], _spectrum(out.data), "output  log spectrum", cmap="magma")
    return _png_uri(fig), drawn


def _histogram_figure(samples: list[tuple[str, np.ndarray, str]]) -> str:
    fig = _figure(10.5, 3.2)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16, top=0.9, wspace=0.22)
    axs = fig.subplots(1, len(samples), squeeze=False)[0]
    for ax, (title, vals, color) in zip(axs, samples, strict=True):
        if vals.size:
            lo, hi = float(vals.min()), float(vals.max())
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            counts, edges = np.histogram(vals, bins=128, range=(lo, hi))
            ax.stairs(counts, edges, fill=True, color=color, alpha=0.85)
            ax.set_yscale("log")
            ax.axvline(float(np.mean(vals)), color="black", lw=1, ls="--", label=f"mean {np.mean(vals):.4g}")
            ax.legend(fontsize=8, loc="upper right")
        else:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("value", fontsize=9)
        ax.set_ylabel("voxels (log)", fontsize=9)
        ax.tick_params(labelsize=8)
    return _png_uri(fig)


_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac"]


def _friendly(prefix: str) -> str:
    """A reader's name for a task kind (the raw key prefix is shown beside it)."""
    m = re.fullmatch(r"convpipe-pass(\d+)(-program)?", prefix)
    if m:
        return f"pass {m.group(1)} tiles" if not m.group(2) else f"pass {m.group(1)} program"
    for start, name in (("convpipe-input", "read input"), ("from-zarr", "read chunks"),
                        ("original-array", "input array"),
                        ("downsample-mean", "pyramid: 2×2 mean"), ("getitem", "pyramid: subsample / slice"),
                        ("rechunk", "rechunk"), ("store", "store to zarr"), ("finalize", "finalize (dask)"),
                        ("zscore", "statistics pre-pass"), ("rescale", "statistics pre-pass")):
        if prefix.startswith(start):
            return name
    return prefix


def _timeline_figure(timings: Mapping[str, Any]) -> str | None:
    tasks = timings.get("tasks") or []
    if not tasks:
        return None
    prefixes = list(timings.get("prefixes") or {p for p, *_ in tasks})
    color = {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(prefixes)}
    workers = sorted({int(t[3]) for t in tasks})
    row = {w: i for i, w in enumerate(workers)}
    height = max(2.4, 1.4 + 0.26 * len(workers))
    fig = _figure(10.5, height)
    fig.subplots_adjust(left=0.09, right=0.98, top=1 - 0.35 / height, bottom=1.0 / height)
    ax = fig.add_subplot(1, 1, 1)
    by_prefix: dict[str, list[tuple[float, float, int]]] = {}
    for p, s, e, w in tasks:
        by_prefix.setdefault(p, []).append((float(s), max(float(e) - float(s), 1e-5), row[int(w)]))
    for p, items in by_prefix.items():
        for r in sorted({i[2] for i in items}):
            bars = [(s, d) for s, d, rr in items if rr == r]
            ax.broken_barh(bars, (r - 0.4, 0.8), facecolors=color.get(p, "#888888"),
                           label=_friendly(p) if r == min(i[2] for i in items) else None)
    for ph in timings.get("phases") or []:
        ax.axvspan(ph["start_s"], ph["end_s"], color="#000000", alpha=0.035, lw=0)
        ax.axvline(ph["start_s"], color="#999999", lw=0.6, ls=":")
        ax.annotate(ph["name"], (ph["start_s"], 0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                    textcoords="offset points", fontsize=7, color="#666666")
    ax.set_yticks(range(len(workers)))
    ax.set_yticklabels([f"worker {w}" for w in workers], fontsize=7)
    ends = [float(t[2]) for t in tasks] + [float(ph["end_s"]) for ph in timings.get("phases") or []]
    ax.set_xlim(0, max(ends) * 1.02)
    ax.set_xlabel("seconds since the run started", fontsize=9)
    ax.set_title("task stream (one row per worker thread / process)", fontsize=10)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.5 / (height - 1.35)),
              ncol=min(5, len(by_prefix)), frameon=False)
    ax.tick_params(labelsize=8)
    return _png_uri(fig)


# =========================================================================== sections


def _spec_section(pipeline: Any, prov: Mapping[str, Any]) -> str:
    import yaml

    spec = pipeline.spec
    as_run = prov.get("spec") or spec.canonical()
    parts = []
    src = getattr(spec, "source", None)
    text = None
    if src and not str(src).startswith("<"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = Path(src).read_text()
    if text is not None:
        parts.append(f'<p class="muted">from <code>{_esc(src)}</code></p><pre class="yaml">{_esc(text)}</pre>')
        parts.append('<details><summary>as run (canonical, with defaults and command-line overrides)</summary>'
                     f'<pre class="yaml">{_esc(yaml.safe_dump(as_run, sort_keys=False))}</pre></details>')
    else:
        parts.append(f'<pre class="yaml">{_esc(yaml.safe_dump(as_run, sort_keys=False))}</pre>')
    return "".join(parts)


def _plan_for_report(pipeline: Any, result: Any, prov: Mapping[str, Any], plan: Any) -> Any:
    if plan is not None:
        return plan
    plan = getattr(result, "plan", None)
    if plan is not None:
        return plan
    as_run = prov.get("spec") or {}
    overrides: dict[str, Any] = {}
    if prov.get("input_url"):
        overrides["input"] = prov["input_url"]
    cluster = (as_run.get("execution") or {}).get("cluster")
    if cluster:
        overrides["cluster"] = cluster
    return pipeline.explain(**overrides)


def _plan_section(plan: Any) -> str:
    d = plan.to_dict()
    rows = []
    for i, p in enumerate(d.get("passes", [])):
        ops = "<br>".join(_esc(o) for o in p.get("ops", []))
        halo = ", ".join(f"{a}: {lo}+{hi}" for a, (lo, hi) in (p.get("halo") or {}).items()) or "none"
        tile = " × ".join(f"{a}{n}" for a, n in (p.get("tile") or {}).items())
        rows.append(f"<tr><td>{i}</td><td>{ops}</td><td>{_esc(', '.join(map(str, p.get('methods', []))))}</td>"
                    f"<td>{_esc(halo)}</td><td>{_esc(tile)}</td><td class=num>{p.get('tiles')}</td>"
                    f"<td class=num>{p.get('tasks')}</td><td class=num>{_esc(_fmt_bytes(p.get('memory_per_task')))}</td>"
                    f"<td class=num>{p.get('read_amplification')}</td></tr>")
    table = ("<table class=grid><tr><th>pass</th><th>ops</th><th>method</th><th>halo</th><th>tile</th>"
             "<th>tiles</th><th>tasks</th><th>memory/task</th><th>read ampl.</th></tr>" + "".join(rows) + "</table>")
    return table + f"<details open><summary>convpipe explain</summary><pre>{_esc(str(plan))}</pre></details>"


def _timing_section(result: Any, timings: Mapping[str, Any] | None, prov: Mapping[str, Any]) -> str:
    parts = []
    if timings and timings.get("prefixes"):
        elapsed = max(float(result.elapsed), 1e-9)
        rows = []
        for p, agg in timings["prefixes"].items():
            span = float(agg["last_end_s"]) - float(agg["first_start_s"])
            rows.append(f"<tr><td>{_esc(_friendly(p))}</td><td><code>{_esc(p)}</code></td>"
                        f"<td class=num>{agg['tasks']}</td><td class=num>{_esc(_fmt_s(float(agg['busy_s'])))}</td>"
                        f"<td class=num>{_esc(_fmt_s(float(agg['busy_s']) / max(agg['tasks'], 1)))}</td>"
                        f"<td class=num>{_esc(_fmt_s(span))}</td>"
                        f"<td class=num>{100 * float(agg['busy_s']) / elapsed:.0f}%</td></tr>")
        parts.append("<table class=grid><tr><th>task kind</th><th>key prefix</th><th>tasks</th><th>busy</th>"
                     "<th>mean/task</th><th>first start → last end</th><th>busy / elapsed</th></tr>"
                     + "".join(rows) + "</table>")
        if timings.get("phases"):
            parts.append(_kv_table([(ph["name"], _esc(_fmt_s(float(ph["end_s"]) - float(ph["start_s"]))))
                                    for ph in timings["phases"]]))
        uri = _timeline_figure(timings)
        if uri:
            parts.append(_img(uri, "task stream"))
        if timings.get("tasks_dropped"):
            parts.append(f'<p class="muted">{timings["tasks_dropped"]} tasks beyond the first '
                         f'{len(timings["tasks"])} are counted above but not drawn.</p>')
    else:
        parts.append('<p class="muted">Per-pass timings were not recorded for this run '
                     "(the run was not monitored); totals only.</p>")
    return "".join(parts)


def _memory_text(timings: Mapping[str, Any] | None) -> tuple[str, str]:
    if timings and timings.get("peak_rss"):
        base = timings.get("baseline_rss")
        note = (f"RSS of this process and its children, sampled every {timings.get('rss_interval_s', 0) * 1e3:.0f} ms "
                f"({timings.get('rss_samples', 0)} samples)")
        if base:
            note += f"; {_fmt_bytes(base)} before the run"
        return _fmt_bytes(timings["peak_rss"]), note
    note = "RSS was not sampled during this run"
    try:
        import resource

        hw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        note += f"; this process's lifetime high-water mark is {_fmt_bytes(hw)} (getrusage, includes everything before the run)"
    except (ImportError, OSError, ValueError):
        pass
    return "not measured", note


def _output_section(out_arr: Any, out_axes: str, out_info: Any, result: Any) -> str:
    rows = [("URL", f"<code>{_esc(result.output_url)}</code>"),
            ("shape", _esc(" × ".join(f"{a} {n}" for a, n in zip(out_axes, out_arr.shape, strict=False)))),
            ("dtype", _esc(out_arr.dtype)), ("chunks", _esc(tuple(out_arr.chunks))),
            ("zarr format", _esc(out_arr.metadata.zarr_format))]
    html_ = _kv_table(rows)
    if out_info is not None:
        lv_rows = []
        for i, lv in enumerate(out_info.levels):
            units = [u or "" for u in out_info.units]
            sc = ", ".join(f"{s:g} {u}".strip() for s, u in zip(lv.scale, units, strict=False))
            lv_rows.append(f"<tr><td>{i}</td><td><code>{_esc(lv.path)}</code></td><td>{_esc(sc)}</td>"
                           f"<td>{_esc(', '.join(f'{t:g}' for t in lv.translation))}</td></tr>")
        html_ += (f"<p>OME-Zarr {_esc(out_info.version)}, {len(out_info.levels)} level(s)"
                  f"{', downsampled by ' + _esc(out_info.method) if out_info.method else ''}:</p>"
                  "<table class=grid><tr><th>level</th><th>path</th><th>scale</th><th>translation</th></tr>"
                  + "".join(lv_rows) + "</table>")
    tables = [(k, v) for k, v in (result.outputs or {}).items() if isinstance(v, Mapping) and "table" in v]
    if tables:
        html_ += ("<table class=grid><tr><th>step</th><th>table</th><th>rows</th></tr>"
                  + "".join(f"<tr><td>{_esc(k)}</td><td><code>{_esc(v['table'])}</code></td>"
                            f"<td class=num>{_esc(v.get('rows', '?'))}</td></tr>" for k, v in tables) + "</table>")
    return html_


# =========================================================================== the page

_CSS = """
:root{--fg:#1d2330;--muted:#6b7385;--line:#e3e6ee;--bg:#f6f7fb;--card:#fff;--accent:#3366cc}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
header{border-bottom:3px solid var(--accent);margin-bottom:18px;padding-bottom:10px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:10px;margin:14px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .v{font-size:19px;font-weight:600;white-space:nowrap}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
pre{background:#0f1420;color:#e8ecf4;padding:12px 14px;border-radius:8px;overflow-x:auto;font-size:12.5px;line-height:1.4}
pre.yaml{background:#fbfbfd;color:#1d2330;border:1px solid var(--line)}
code{font-size:12.5px}
table{border-collapse:collapse;margin:8px 0;background:var(--card)}
table.grid{width:100%}
table.grid th,table.grid td{border:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top;font-size:13px}
table.grid th{background:#eef1f7}
table.kv th{text-align:left;padding:3px 14px 3px 0;color:var(--muted);font-weight:500}
table.kv td{padding:3px 0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:10px 0;border:1px solid var(--line);border-radius:6px;background:#fff}
details summary{cursor:pointer;color:var(--accent);margin:6px 0}
footer{margin-top:36px;color:var(--muted);font-size:12px}
"""


def build_report(pipeline: Any, result: Any, *, plan: Any = None, timings: Mapping[str, Any] | None = None,
                 max_preview: int = MAX_PREVIEW) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    from . import __version__
    from .ome import open_level
    from .preview import read_plane

    spec = pipeline.spec
    out_so = spec.output.storage_options if spec.output is not None else {}
    in_so = spec.input.storage_options
    if timings is None:
        timings = getattr(result, "timings", None) or None
    if timings is not None and not isinstance(timings, Mapping):
        timings = timings.to_dict() if hasattr(timings, "to_dict") else None
    sections: list[tuple[str, str, str]] = []  # (id, title, html)

    try:
        prov = _provenance(result.output_url, out_so)
    except Exception:  # noqa: BLE001 - a report without provenance is still useful
        prov = {}
    in_url = prov.get("input_url") or spec.resolve(spec.input.url)
    in_level = int(((prov.get("spec") or {}).get("input") or {}).get("level", spec.input.level) or 0)

    # ------------------------------------------------------------ summary
    peak, peak_note = _memory_text(timings)
    vps = result.voxels_per_second if result.elapsed > 0 else float("nan")  # a resume: the voxels it computed
    cards = [("elapsed", _fmt_s(float(result.elapsed))), ("throughput", _fmt_rate(vps)),
             ("voxels", f"{result.voxels:,}"), ("tasks", f"{result.tasks:,}"),
             ("tiles", f"{result.tiles:,}" + (f" ({result.skipped_tiles} resumed)" if result.skipped_tiles else "")),
             ("peak memory", peak)]
    summary = ('<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_esc(k)}</div><div class="v">{_esc(v)}</div></div>' for k, v in cards)
        + "</div>")
    summary += _kv_table([
        ("input", f"<code>{_esc(in_url)}</code>" + (f" (level {in_level})" if in_level else "")),
        ("output", f"<code>{_esc(result.output_url)}</code>"),
        ("status", "complete" if prov.get("complete") else _esc("complete" if not prov else "not marked complete")),
        ("peak memory", _esc(peak + " — " + peak_note)),
        ("spec hash", f"<code>{_esc(prov.get('spec_hash', spec.hash()))}</code>"),
        ("input fingerprint", f"<code>{_esc(prov.get('input_fingerprint', '—'))}</code>"),
    ])
    sections.append(("summary", "Summary", summary))

    # ------------------------------------------------------------ timings
    try:
        sections.append(("timings", "Timings", _timing_section(result, timings, prov)))
    except Exception as e:  # noqa: BLE001
        sections.append(("timings", "Timings", _unavailable("timings", e)))

    # ------------------------------------------------------------ previews
    try:
        _, out_axes, _ = open_level(result.output_url, 0, out_so or None)
        out_axes = out_axes or prov.get("axes")
        inp = read_plane(in_url, level=in_level, axes=spec.input.axes, storage_options=in_so or None,
                         max_size=max_preview)
        idx = {a: i for a, i in inp.index.items() if a in (out_axes or "")}
        out = read_plane(result.output_url, index=idx, axes=out_axes, storage_options=out_so or None,
                         max_size=max_preview)
        points = []
        notes = []
        for key, v in (result.outputs or {}).items():
            if isinstance(v, Mapping) and v.get("table"):
                try:
                    # table rows are in level-0 voxels of the input; the output plane is at out.index
                    f = {a: 1.0 for a in out.axes}
                    py, px, n = _table_points(v["table"], out.index, out_so or None, out.stride, f)
                    points.append((key, py, px))
                    notes.append(f"<code>{_esc(key)}</code>: {py.size} of {n} rows on this plane")
                except Exception as e:  # noqa: BLE001
                    notes.append(f"<code>{_esc(key)}</code>: {_esc(type(e).__name__)}: {_esc(e)}")
        uri, _ = _preview_figure(inp, out, points)
        html_ = _img(uri, "input and output planes with log spectra")
        if notes:
            html_ += "<p>Table rows drawn over both planes: " + "; ".join(notes) + ".</p>"
        sections.append(("previews", "Previews", html_))
    except Exception as e:  # noqa: BLE001
        sections.append(("previews", "Previews", _unavailable("previews", e)))

    # ------------------------------------------------------------ histograms
    try:
        in_arr, found, _ = open_level(in_url, in_level, in_so or None)
        in_axes = spec.input.axes or found or "tczyx"[-in_arr.ndim:]
        o_arr, o_found, _ = open_level(result.output_url, 0, out_so or None)
        o_axes = o_found or prov.get("axes") or "tczyx"[-o_arr.ndim:]
        vi, ni = _sample_chunks(in_arr, in_axes)
        vo, no = _sample_chunks(o_arr, o_axes)
        vi, vo = _finite(vi), _finite(vo)
        uri = _histogram_figure([(f"input ({in_arr.dtype}): {vi.size:,} voxels from {ni} chunks", vi, "#4e79a7"),
                                 (f"output ({o_arr.dtype}): {vo.size:,} voxels from {no} chunks", vo, "#e15759")])
        stats = []
        for label, v in (("input", vi), ("output", vo)):
            if v.size:
                p1, p50, p99 = np.percentile(v, [1, 50, 99])
                stats.append(f"<tr><td>{label}</td><td class=num>{v.min():.5g}</td><td class=num>{p1:.5g}</td>"
                             f"<td class=num>{p50:.5g}</td><td class=num>{np.mean(v):.5g}</td>"
                             f"<td class=num>{p99:.5g}</td><td class=num>{v.max():.5g}</td></tr>")
        html_ = _img(uri, "histograms of input and output")
        html_ += ('<p class="muted">Sampled: one y/x plane of each of up to '
                  f"{HIST_CHUNKS} chunks spread over the chunk grid, not the whole array.</p>")
        if stats:
            html_ += ("<table class=grid><tr><th></th><th>min</th><th>1%</th><th>median</th><th>mean</th>"
                      "<th>99%</th><th>max</th></tr>" + "".join(stats) + "</table>")
        sections.append(("histograms", "Histograms", html_))
    except Exception as e:  # noqa: BLE001
        sections.append(("histograms", "Histograms", _unavailable("histograms", e)))

    # ------------------------------------------------------------ output
    try:
        o_arr, o_found, o_info = open_level(result.output_url, 0, out_so or None)
        sections.append(("output", "Output", _output_section(o_arr, o_found or prov.get("axes") or "", o_info,
                                                              result)))
    except Exception as e:  # noqa: BLE001
        sections.append(("output", "Output", _unavailable("output details", e)))

    # ------------------------------------------------------------ spec and plan
    try:
        sections.append(("spec", "Spec", _spec_section(pipeline, prov)))
    except Exception as e:  # noqa: BLE001
        sections.append(("spec", "Spec", _unavailable("spec", e)))
    try:
        sections.append(("plan", "Plan", _plan_section(_plan_for_report(pipeline, result, prov, plan))))
    except Exception as e:  # noqa: BLE001
        sections.append(("plan", "Plan", _unavailable("plan", e)))

    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    nav = " · ".join(f'<a href="#{sid}">{_esc(t)}</a>' for sid, t, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{_esc(t)}</h2>{h}</section>' for sid, t, h in sections)
    meta = json.dumps({"name": spec.name, "elapsed": result.elapsed, "voxels": result.voxels,
                       "tasks": result.tasks, "tiles": result.tiles}, default=str)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"generator\" content=\"convpipe {_esc(__version__)}\">"
            f"<title>convpipe report: {_esc(spec.name)}</title><style>{_CSS}</style></head><body><main>"
            f"<header><h1>{_esc(spec.name)}</h1><div class=\"muted\">convpipe {_esc(__version__)} run report · "
            f"{_esc(when)} · {nav}</div></header>{body}"
            f"<footer>Generated by <code>convpipe run --report</code>. Self-contained: no scripts, no external "
            f"resources.</footer>"
            f"<script type=\"application/json\" id=\"convpipe-run\">{_esc(meta)}</script>"
            "</main></body></html>\n")


def write_report(pipeline: Any, result: Any, path: str | os.PathLike[str], *, plan: Any = None,
                 timings: Mapping[str, Any] | None = None, max_preview: int = MAX_PREVIEW) -> Path:
    """Write the HTML report of a finished run to ``path`` (its folder is created); return the path.

    Parameters
    ----------
    pipeline : convpipe.Pipeline
        The pipeline that ran.
    result : convpipe.RunResult
        What its ``run`` returned. Its optional ``timings`` (a :meth:`RunMonitor.to_dict`) and ``plan``
        attributes are used when present.
    path : str or path
        The HTML file to write (written to a temporary name, then renamed: never half a report).
    plan : convpipe.plan.Plan, optional
        The plan the run used; default ``result.plan``, else ``pipeline.explain()`` on the run's input.
    timings : mapping, optional
        A :meth:`RunMonitor.to_dict`; default ``result.timings``.
    max_preview : int
        Longest side of a preview plane in pixels.
    """
    text = build_report(pipeline, result, plan=plan, timings=timings, max_preview=max_preview)
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out
