"""The run report's figures: matplotlib Agg renders (the object API, no pyplot state) as PNG data URIs.

Every function returns a ``data:image/png;base64`` URI, so the page embeds its images and fetches nothing.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["every_nth", "friendly", "histogram_figure", "preview_figure", "timeline_figure"]


def every_nth(n: int) -> str:
    """``every 2nd pixel``, ``every 11th pixel``, ``every 23rd pixel``: English ordinals."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"every {n}{suffix} pixel"


def _png_uri(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float, h: float, layout: Any = None) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout=layout)


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


def _where(p: Any) -> str:
    """A plane's place and size on its own line: ``z=3 · 2048×1536 · every 4th pixel``."""
    parts = [", ".join(f"{a}={i}" for a, i in p.index.items()) or "the plane", f"{p.shape[0]}×{p.shape[1]}"]
    if p.stride > 1:
        parts.append(every_nth(p.stride))
    return " · ".join(parts)


def preview_figure(inp: Any, out: Any, points: list[tuple], labels: bool = False) -> tuple[str, int]:
    """2 x 2: input plane, output plane (+ table rows), their log spectra. Returns (URI, rows drawn).

    ``points``: ``(label, y, x)`` in the shown (strided) pixels, or ``(label, y, x, radius)`` for blobs, drawn
    as circles of that radius (pixels); titles take two lines, so a long index never runs into its neighbour.
    """
    fig, drawn = preview_fig(inp, out, points, labels=labels)
    return _png_uri(fig), drawn


def preview_fig(inp: Any, out: Any, points: list[tuple], labels: bool = False) -> tuple[Any, int]:
    """The :func:`preview_figure` as a matplotlib Figure (for checks of its layout). ``labels``: the output is
    a label image, drawn in colour over the input plane."""
    from matplotlib.collections import EllipseCollection

    fig = _figure(10.5, 9.6, layout="constrained")
    axs = fig.subplots(2, 2)
    _show_plane(axs[0, 0], inp.data, f"input\n{_where(inp)}")
    if labels:
        from ..ome.labels import label_rgba

        _show_plane(axs[0, 1], inp.data, f"output: labels over the input\n{_where(out)}")
        axs[0, 1].imshow(label_rgba(out.data), interpolation="nearest")
    else:
        _show_plane(axs[0, 1], out.data, f"output\n{_where(out)}")
    drawn = 0
    colors = ["#ff3b30", "#ffcc00", "#34c759", "#00c7ff", "#ff2d95"]
    h, w = out.data.shape
    handles = []
    for i, (label, py, px, *rest) in enumerate(points):
        if not py.size:
            continue
        color = colors[i % len(colors)]
        radius = rest[0] if rest and rest[0] is not None else None
        for ax in (axs[0, 0], axs[0, 1]):
            if radius is None:
                size = 60.0  # points²: a ring ~9 pt across whatever the plane's size
                ax.scatter(px, py, s=size, facecolors="none", edgecolors=color, linewidths=1.4)
            else:
                d = 2.0 * np.maximum(np.asarray(radius, dtype=np.float64), 1.0)
                ax.add_collection(EllipseCollection(d, d, np.zeros_like(d), units="xy",
                                                    offsets=np.column_stack([px, py]), offset_transform=ax.transData,
                                                    facecolors="none", edgecolors=color, linewidths=1.2))
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        handles.append(axs[0, 1].scatter([], [], s=60.0, facecolors="none", edgecolors=color, linewidths=1.4,
                                         label=f"{label} ({py.size})"))
        drawn += int(py.size)
    if handles:
        # above the panels, not over the image: a legend inside would hide the points it names
        fig.legend(handles=handles, loc="outside upper center", ncol=min(3, len(handles)), fontsize=8, frameon=False)
    _show_plane(axs[1, 0], _spectrum(inp.data), "input\nlog spectrum  log1p|fftshift(fft2)|", cmap="magma")
    _show_plane(axs[1, 1], _spectrum(out.data), "output\nlog spectrum", cmap="magma")
    return fig, drawn


def histogram_figure(samples: list[tuple[str, np.ndarray, str]]) -> str:
    """Histograms (log counts) of sampled values, one panel per ``(title, values, colour)``."""
    return _png_uri(histogram_fig(samples))


def histogram_fig(samples: list[tuple[str, np.ndarray, str]]) -> Any:
    """The :func:`histogram_figure` as a matplotlib Figure."""
    # constrained layout sizes the margins to the labels: long tick labels (1e+06, -3.2e-05) are never cut
    fig = _figure(10.5, 3.4, layout="constrained")
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
        ax.xaxis.get_major_locator().set_params(nbins=6)  # wide numbers (65,535) side by side stay apart
    return fig


_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac"]


def friendly(prefix: str) -> str:
    """A reader's name for a task kind (the raw key prefix is shown beside it)."""
    m = re.fullmatch(r"convpipe-pass(\d+)(-program)?", prefix)
    if m:
        return f"pass {m.group(1)} tiles" if not m.group(2) else f"pass {m.group(1)} program"
    for start, name in (("convpipe-input", "read input"), ("from-zarr", "read chunks"),
                        ("original-", "input array"),
                        ("downsample-mean", "pyramid: 2×2 mean"), ("getitem", "pyramid: subsample / slice"),
                        ("rechunk", "rechunk"), ("store", "store to zarr"), ("finalize", "finalize (dask)"),
                        ("zscore", "statistics pre-pass"), ("rescale", "statistics pre-pass")):
        if prefix.startswith(start):
            return name
    return prefix


def timeline_figure(timings: Mapping[str, Any]) -> str | None:
    """The task stream: one row per worker, a bar per task, phases shaded and named (None without tasks)."""
    fig = timeline_fig(timings)
    return None if fig is None else _png_uri(fig)


def timeline_fig(timings: Mapping[str, Any]) -> Any:
    """The :func:`timeline_figure` as a matplotlib Figure, or None."""
    tasks = timings.get("tasks") or []
    if not tasks:
        return None
    prefixes = list(timings.get("prefixes") or {p for p, *_ in tasks})
    color = {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(prefixes)}
    workers = sorted({int(t[3]) for t in tasks})
    row = {w: i for i, w in enumerate(workers)}
    phases = list(timings.get("phases") or [])
    height = max(2.6, 1.6 + 0.26 * len(workers))
    fig = _figure(10.5, height, layout="constrained")  # margins fit the labels and the legend below
    ax = fig.add_subplot(1, 1, 1)
    by_prefix: dict[str, list[tuple[float, float, int]]] = {}
    for p, s, e, w in tasks:
        by_prefix.setdefault(p, []).append((float(s), max(float(e) - float(s), 1e-5), row[int(w)]))
    for p, items in by_prefix.items():
        for r in sorted({i[2] for i in items}):
            bars = [(s, d) for s, d, rr in items if rr == r]
            ax.broken_barh(bars, (r - 0.4, 0.8), facecolors=color.get(p, "#888888"),
                           label=friendly(p) if r == min(i[2] for i in items) else None)
    for ph in phases:
        ax.axvspan(ph["start_s"], ph["end_s"], color="#000000", alpha=0.035, lw=0)
        ax.axvline(ph["start_s"], color="#999999", lw=0.6, ls=":")
    ax.set_yticks(range(len(workers)))
    ax.set_yticklabels([f"worker {w}" for w in workers], fontsize=7)
    ends = [float(t[2]) for t in tasks] + [float(ph["end_s"]) for ph in phases]
    ax.set_xlim(0, max(ends) * 1.02)
    ax.set_xlabel("seconds since the run started", fontsize=9)
    ax.set_title("task stream (one row per worker thread / process)", fontsize=10)
    ax.invert_yaxis()
    ax.tick_params(labelsize=8)
    _phase_labels(fig, ax, phases)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    return fig


def _phase_labels(fig: Any, ax: Any, phases: list[Mapping[str, Any]]) -> None:
    """Name each phase at its start, above the bars; a name that would touch the one before it moves up a row.

    Phases often start within a few milliseconds of each other (graph, then compute): written side by side
    at one place their names ran into each other ("gcompute").
    """
    if not phases:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lay out once, so that text extents are known
    renderer = canvas.get_renderer()
    rows_end: list[float] = []  # per row, the right edge (pixels) of the last name placed there
    for ph in sorted(phases, key=lambda p: float(p["start_s"])):
        text = ax.annotate(ph["name"], (float(ph["start_s"]), 1.0), xycoords=("data", "axes fraction"),
                           xytext=(2, 2), textcoords="offset points", fontsize=7, color="#555555",
                           va="bottom", annotation_clip=False)
        box = text.get_window_extent(renderer)
        for r, end in enumerate(rows_end):
            if box.x0 > end + 3:
                break
        else:
            r = len(rows_end)
            rows_end.append(float("-inf"))
        if r:
            text.set_position((2, 2 + 9 * r))
        rows_end[r] = box.x1
