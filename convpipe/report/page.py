"""The run report's page: what each section shows, gathered from the run, its output and its input.

Each section is gathered on its own and rendered by its own jinja2 macro (``templates/sections.html.j2``);
one that fails (a table deleted since the run, an unreadable input) shows why, and the rest of the page is
still written. Templates autoescape: every value reaches the page as text, never as markup.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from dask.utils import format_bytes

from . import figures

__all__ = ["HIST_CHUNKS", "MAX_PREVIEW", "build_report", "write_report"]

#: longest side of a preview plane, in pixels (planes larger than that are read at a stride)
MAX_PREVIEW = 640
#: chunks sampled for each histogram
HIST_CHUNKS = 8


# =========================================================================== formatting


def _fmt_bytes(n: float | None) -> str:
    return "not measured" if n is None else format_bytes(int(n))


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


def _fmt_cell(v: Any) -> str:
    return f"{v:.5g}" if isinstance(v, float) else str(v)


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


# =========================================================================== reading data


def _provenance(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    import zarr

    from ..ome import zarr_storage_options

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
                  stride: int, factors: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """(y, x, blob radius or None) of the table rows on the plane, in the shown (strided) pixel grid, and the
    table's row count."""
    from ..preview import read_marks

    m = read_marks(url, index, factors, storage_options)
    return m.y / stride, m.x / stride, None if m.radius is None else m.radius / stride, m.rows


#: rows of a table without coordinates (``stats``) the Output section shows
TABLE_ROWS = 20


def _read_table(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(url, "rb", **dict(storage_options or {})) as fh:
        return pq.read_table(fh)


def _schema(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    """The table's Parquet schema, or None where it cannot be read (the preview's note then says why)."""
    import fsspec
    import pyarrow.parquet as pq

    try:
        with fsspec.open(url, "rb", **dict(storage_options or {})) as fh:
            return pq.read_schema(fh)
    except Exception:  # noqa: BLE001 - pyarrow and fsspec raise many kinds; read_marks names the cause
        return None


def _is_places(key: str, schema: Any) -> bool:
    """Whether a table's rows are places to draw on the plane (peaks, blobs, matches).

    A ``stats`` table is not, even per tile, where its ``y``, ``x`` are where a tile starts: it is shown as a
    table under Output. A table without ``y`` and ``x`` is not either; one that cannot be read is tried (and
    its note says why it failed).
    """
    if key.rsplit(".", 1)[-1] == "stats":
        return False
    return schema is None or {"y", "x"} <= set(schema.names)


def _circles(schema: Any) -> str:
    from ..preview import _blob_dims

    n = _blob_dims(schema.metadata if schema is not None else None)
    return f", as circles of the blob radius sigma·√{n}"


# =========================================================================== sections (data for the macros)


class _Run:
    """What every section reads: the pipeline, the result, provenance, input/output locations."""

    def __init__(self, pipeline: Any, result: Any, plan: Any, timings: Mapping[str, Any] | None, max_preview: int):
        spec = pipeline.spec
        self.pipeline, self.result, self.plan, self.timings = pipeline, result, plan, timings
        self.max_preview = max_preview
        self.out_so = spec.output.storage_options if spec.output is not None else {}
        self.in_so = spec.input.storage_options
        try:
            self.prov = _provenance(result.output_url, self.out_so)
        except Exception:  # noqa: BLE001 - a report without provenance is still useful
            self.prov = {}
        self.in_url = self.prov.get("input_url") or spec.resolve(spec.input.url)
        self.in_level = int(((self.prov.get("spec") or {}).get("input") or {}).get("level", spec.input.level) or 0)


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


def _estimate_cards(plan: Any) -> list[tuple[str, str]]:
    """explain's estimate of this plan (costs measured on this machine), beside the actual cards above."""
    try:
        from ..estimate import estimate

        e = estimate(plan)
    except Exception:  # noqa: BLE001 - no plan, or no estimate: the report goes on without it
        return []
    return [("estimated time", _fmt_s(e["seconds"])), ("estimated peak", _fmt_bytes(e["peak_memory_bytes"]))]


def _summary(r: _Run) -> dict[str, Any]:
    res, prov = r.result, r.prov
    peak, peak_note = _memory_text(r.timings)
    vps = res.voxels_per_second if res.elapsed > 0 else float("nan")  # a resume: the voxels it computed
    cards = [("elapsed", _fmt_s(float(res.elapsed))), ("throughput", _fmt_rate(vps)),
             ("voxels", f"{res.voxels:,}"), ("tasks", f"{res.tasks:,}"),
             ("tiles", f"{res.tiles:,}" + (f" ({res.skipped_tiles} resumed)" if res.skipped_tiles else "")),
             ("peak memory", peak)] + _estimate_cards(r.plan or getattr(res, "plan", None))
    status = "complete" if prov.get("complete") else ("complete" if not prov else "not marked complete")
    return {"cards": cards, "in_url": r.in_url, "in_level": r.in_level, "output_url": res.output_url,
            "status": status, "peak": peak + " — " + peak_note,
            "spec_hash": prov.get("spec_hash", r.pipeline.spec.hash()),
            "fingerprint": prov.get("input_fingerprint", "—")}


def _timings(r: _Run) -> dict[str, Any]:
    timings = r.timings
    if not (timings and timings.get("prefixes")):
        return {"recorded": False}
    elapsed = max(float(r.result.elapsed), 1e-9)
    rows = []
    for p, agg in timings["prefixes"].items():
        span = float(agg["last_end_s"]) - float(agg["first_start_s"])
        busy = float(agg["busy_s"])
        rows.append({"kind": figures.friendly(p), "prefix": p, "tasks": agg["tasks"], "busy": _fmt_s(busy),
                     "mean": _fmt_s(busy / max(agg["tasks"], 1)), "span": _fmt_s(span),
                     "share": f"{100 * busy / elapsed:.0f}%"})
    phases = [(ph["name"], _fmt_s(float(ph["end_s"]) - float(ph["start_s"]))) for ph in timings.get("phases") or []]
    return {"recorded": True, "rows": rows, "phases": phases, "timeline": figures.timeline_figure(timings),
            "dropped": timings.get("tasks_dropped") or 0, "drawn": len(timings.get("tasks") or [])}


def _run_log(r: _Run) -> dict[str, Any]:
    """The run's events as its monitor recorded them: each pass's tiles, the log lines and warnings."""
    timings = r.timings
    if not (timings and ("passes" in timings or "messages" in timings)):
        return {"recorded": False}

    def at(v: Any) -> str:
        return "—" if v is None else f"{float(v):.3f} s"

    passes = [{"index": p["index"], "final": p.get("final"), "tiles": f"{p.get('done', 0)} of {p.get('tiles', 0)}",
               "started": at(p.get("started_s")), "first": at(p.get("first_done_s")), "last": at(p.get("last_done_s"))}
              for p in timings.get("passes") or []]
    plan = r.plan if r.plan is not None else getattr(r.result, "plan", None)
    partial = plan is not None and 0 < len(passes) < len(plan.passes)
    return {"recorded": True, "passes": passes, "partial": partial,
            "messages": [(m.get("level", "log"), m.get("text", "")) for m in timings.get("messages") or []]}


def _previews(r: _Run) -> dict[str, Any]:
    from ..ome import open_level
    from ..preview import read_plane

    res, spec = r.result, r.pipeline.spec
    _, out_axes, _ = open_level(res.output_url, 0, r.out_so or None)
    out_axes = out_axes or r.prov.get("axes")
    inp = read_plane(r.in_url, level=r.in_level, axes=spec.input.axes, storage_options=r.in_so or None,
                     max_size=r.max_preview)
    idx = {a: i for a, i in inp.index.items() if a in (out_axes or "")}
    out = read_plane(res.output_url, index=idx, axes=out_axes, storage_options=r.out_so or None,
                     max_size=r.max_preview)
    points, notes = [], []
    for key, v in (res.outputs or {}).items():
        if isinstance(v, Mapping) and v.get("table"):
            try:
                schema = _schema(v["table"], r.out_so or None)
                if not _is_places(key, schema):
                    continue  # statistics, not places: shown under Output
                # table rows are in level-0 voxels of the input; the output plane is at out.index
                f = {a: 1.0 for a in out.axes}
                py, px, radius, n = _table_points(v["table"], out.index, r.out_so or None, out.stride, f)
                points.append((key, py, px, radius))
                shape = _circles(schema) if radius is not None else ""
                notes.append((key, f"{py.size} of {n} rows on this plane{shape}"))
            except Exception as e:  # noqa: BLE001
                notes.append((key, _why(e)))
    from ..ome.labels import is_label_image

    labels = is_label_image(res.output_url, r.out_so or None) and out.data.shape == inp.data.shape
    if labels:
        notes.append(("labels", f"{int(np.count_nonzero(np.unique(out.data)))} labels on this plane, drawn in "
                                "colour over the input"))
    uri, _ = figures.preview_figure(inp, out, points, **({"labels": True} if labels else {}))
    return {"image": uri, "notes": notes}


def _histograms(r: _Run) -> dict[str, Any]:
    from ..ome import open_level

    res, spec = r.result, r.pipeline.spec
    in_arr, found, _ = open_level(r.in_url, r.in_level, r.in_so or None)
    in_axes = spec.input.axes or found or "tczyx"[-in_arr.ndim:]
    o_arr, o_found, _ = open_level(res.output_url, 0, r.out_so or None)
    o_axes = o_found or r.prov.get("axes") or "tczyx"[-o_arr.ndim:]
    vi, ni = _sample_chunks(in_arr, in_axes)
    vo, no = _sample_chunks(o_arr, o_axes)
    vi, vo = _finite(vi), _finite(vo)
    uri = figures.histogram_figure([(f"input ({in_arr.dtype}): {vi.size:,} voxels from {ni} chunks", vi, "#4e79a7"),
                                    (f"output ({o_arr.dtype}): {vo.size:,} voxels from {no} chunks", vo, "#e15759")])
    stats = []
    for label, v in (("input", vi), ("output", vo)):
        if v.size:
            p1, p50, p99 = np.percentile(v, [1, 50, 99])
            stats.append([label] + [f"{x:.5g}" for x in (v.min(), p1, p50, np.mean(v), p99, v.max())])
    return {"image": uri, "chunks": HIST_CHUNKS, "stats": stats}


def _output(r: _Run) -> dict[str, Any]:
    from ..ome import open_level

    res = r.result
    arr, found, info = open_level(res.output_url, 0, r.out_so or None)
    axes = found or r.prov.get("axes") or ""
    d: dict[str, Any] = {
        "url": res.output_url, "shape": " × ".join(f"{a} {n}" for a, n in zip(axes, arr.shape, strict=False)),
        "dtype": str(arr.dtype), "chunks": str(tuple(arr.chunks)), "zarr_format": arr.metadata.zarr_format,
        "ome": None,
        "tables": [(k, v["table"], v.get("rows", "?")) for k, v in (res.outputs or {}).items()
                   if isinstance(v, Mapping) and "table" in v],
        "contents": [],
    }
    for key, table, _ in d["tables"]:
        try:
            if _is_places(key, _schema(table, r.out_so or None)):
                continue
            t = _read_table(table, r.out_so or None)
        except Exception:  # noqa: BLE001 - the list above still names it
            continue
        cols = [c for c in t.column_names if not c.startswith("_")]
        rows = [[_fmt_cell(t.column(c)[i].as_py()) for c in cols] for i in range(min(t.num_rows, TABLE_ROWS))]
        d["contents"].append({"key": key, "columns": cols, "rows": rows, "more": max(0, t.num_rows - TABLE_ROWS)})
    if info is not None:
        units = [u or "" for u in info.units]
        levels = [(i, lv.path, ", ".join(f"{s:g} {u}".strip() for s, u in zip(lv.scale, units, strict=False)),
                   ", ".join(f"{t:g}" for t in lv.translation)) for i, lv in enumerate(info.levels)]
        d["ome"] = {"version": info.version, "method": info.method, "levels": levels}
    return d


def _spec(r: _Run) -> dict[str, Any]:
    import yaml

    spec = r.pipeline.spec
    as_run = yaml.safe_dump(r.prov.get("spec") or spec.canonical(), sort_keys=False)
    src = getattr(spec, "source", None)
    text = None
    if src and not str(src).startswith("<"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = Path(src).read_text()
    return {"source": src if text is not None else None, "text": text, "as_run": as_run}


def _plan_for_report(r: _Run) -> Any:
    if r.plan is not None:
        return r.plan
    plan = getattr(r.result, "plan", None)
    if plan is not None:
        return plan
    as_run = r.prov.get("spec") or {}
    overrides: dict[str, Any] = {}
    if r.prov.get("input_url"):
        overrides["input"] = r.prov["input_url"]
    cluster = (as_run.get("execution") or {}).get("cluster")
    if cluster:
        overrides["cluster"] = cluster
    return r.pipeline.explain(**overrides)


def _plan(r: _Run) -> dict[str, Any]:
    plan = _plan_for_report(r)
    rows = []
    for i, p in enumerate(plan.to_dict().get("passes", [])):
        rows.append({
            "index": i, "ops": [str(o) for o in p.get("ops", [])],
            "methods": ", ".join(map(str, p.get("methods", []))),
            "halo": ", ".join(f"{a}: {lo}+{hi}" for a, (lo, hi) in (p.get("halo") or {}).items()) or "none",
            "tile": " × ".join(f"{a}{n}" for a, n in (p.get("tile") or {}).items()),
            "tiles": p.get("tiles"), "tasks": p.get("tasks"), "memory": _fmt_bytes(p.get("memory_per_task")),
            "read_amplification": p.get("read_amplification"),
        })
    return {"rows": rows, "explain": str(plan)}


#: (id, title, what an error message calls it, gatherer) in page order
_SECTIONS: tuple[tuple[str, str, str, Callable[[_Run], dict[str, Any]]], ...] = (
    ("summary", "Summary", "summary", _summary),
    ("timings", "Timings", "timings", _timings),
    ("run", "Run log", "run log", _run_log),
    ("previews", "Previews", "previews", _previews),
    ("histograms", "Histograms", "histograms", _histograms),
    ("output", "Output", "output details", _output),
    ("spec", "Spec", "spec", _spec),
    ("plan", "Plan", "plan", _plan),
)


# =========================================================================== the page


def _environment() -> Any:
    import jinja2

    # autoescape everything: a spec name, a path or an error message is text, never markup
    env = jinja2.Environment(loader=jinja2.PackageLoader("convpipe.report", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}  # the run's fields in their natural order
    return env


def build_report(pipeline: Any, result: Any, *, plan: Any = None, timings: Mapping[str, Any] | None = None,
                 max_preview: int = MAX_PREVIEW) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    from .. import __version__

    if timings is None:
        timings = getattr(result, "timings", None) or None
    if timings is not None and not isinstance(timings, Mapping):
        timings = timings.to_dict() if hasattr(timings, "to_dict") else None
    run = _Run(pipeline, result, plan, timings, max_preview)
    env = _environment()
    macros = env.get_template("sections.html.j2").module
    sections = []
    for sid, title, what, gather in _SECTIONS:
        try:  # gathered and rendered on its own: one failing section never loses the report
            body = getattr(macros, sid)(gather(run))
        except Exception as e:  # noqa: BLE001
            body = macros.unavailable(what, _why(e))
        sections.append({"id": sid, "title": title, "body": body})
    spec = pipeline.spec
    meta = {"name": spec.name, "elapsed": result.elapsed, "voxels": result.voxels, "tasks": result.tasks,
            "tiles": result.tiles}
    return env.get_template("report.html.j2").render(
        name=spec.name, version=__version__, sections=sections, meta=meta,
        when=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))


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

    Returns
    -------
    pathlib.Path
        The file written.
    """
    text = build_report(pipeline, result, plan=plan, timings=timings, max_preview=max_preview)
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out
