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

__all__ = ["friendly", "histogram_figure", "preview_figure", "timeline_figure"]


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


def preview_figure(inp: Any, out: Any, points: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[str, int]:
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


def histogram_figure(samples: list[tuple[str, np.ndarray, str]]) -> str:
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


def friendly(prefix: str) -> str:
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


def timeline_figure(timings: Mapping[str, Any]) -> str | None:
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
                           label=friendly(p) if r == min(i[2] for i in items) else None)
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
