"""``convpipe run --report FILE.html``: one self-contained HTML page about a finished run.

The page holds the spec as run (YAML), the plan, timings (elapsed, voxels/s, tasks, tiles; per pass and
per task kind when the run was monitored), peak memory, histograms of input and output values, and
preview images: the middle plane of input and output, their log spectra, and the rows of every table
the run wrote that lie on that plane, drawn over the output plane. Figures are matplotlib Agg renders
embedded as ``data:image/png;base64`` URIs (:mod:`.figures`); the page is rendered from jinja2 templates
with autoescape (``templates/``, shipped as package data), its CSS inline. No script, no external
resource: the file can be mailed, archived, or opened offline.

Data reads are bounded: histograms sample a few chunks (one plane of each), previews read one plane at a
stride that keeps it under ``max_preview`` pixels a side. Every section is gathered and rendered on its
own (:mod:`.page`); one that fails shows why, and the rest of the report is still written.

:class:`RunMonitor` (in :mod:`convpipe.monitor`, re-exported here) is what ``Pipeline.run`` uses to
measure a run for this report.
"""

from __future__ import annotations

from typing import Any

from ..monitor import RunMonitor, task_prefix

__all__ = ["HIST_CHUNKS", "MAX_PREVIEW", "RunMonitor", "build_report", "task_prefix", "write_report"]


def __getattr__(name: str) -> Any:
    # the page (dask, yaml, jinja2, matplotlib when it runs) loads on first use: ``Pipeline.run`` only
    # needs the monitor
    if name in ("HIST_CHUNKS", "MAX_PREVIEW", "build_report", "write_report"):
        from . import page

        return getattr(page, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
