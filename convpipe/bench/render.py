"""The benchmark's plain-text pieces: numbers, byte sizes (``dask.utils.format_bytes``), notes and the
extra rows' one-line summaries. The rich tables are drawn by the command, :mod:`convpipe.cli.bench_tables`."""

from __future__ import annotations

import re

__all__ = ["extra_summary", "fmt", "fmt_bytes", "markup_escape", "render_notes"]

_MARKUP_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def markup_escape(text: str) -> str:
    """``text`` inside a line of console markup: a bracket in a message (``convpipe[gpu]``) stays text.

    The same rule as ``rich.markup.escape`` (a tag-like ``[...]`` gets a backslash), without importing rich:
    the benchmark writes its progress lines as markup for the console the command hands it.
    """

    def _one(m: re.Match[str]) -> str:
        backslashes, tag = m.groups()
        return f"{backslashes}{backslashes}\\{tag}"

    out = _MARKUP_TAG.sub(_one, text)
    return out + "\\" if out.endswith("\\") and not out.endswith("\\\\") else out


def fmt_bytes(n: float | None) -> str:
    """``format_bytes``, with "—" for a number not measured and a sign for a negative one (an RSS delta)."""
    from dask.utils import format_bytes

    if n is None:
        return "—"
    return "-" + format_bytes(int(-n)) if n < 0 else format_bytes(int(n))


def fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def render_notes(report: dict) -> list[str]:
    """One line per skipped or failed row (the table has no room for reasons)."""
    notes = []
    for r in report["rows"]:
        if r["status"] != "ok":
            notes.append(f"{r['pipeline']}/{r['contender']} {r['status']}: {r['reason']}")
        elif r.get("check_ok") is False:
            notes.append(f"{r['pipeline']}/{r['contender']} check FAILED: max|Δ| {r['max_abs_diff']} "
                         f"(rel {r['rel_diff']}, tol {r['tol']}) {r.get('check_error', '')}".rstrip())
    return notes


def extra_summary(name: str, r: dict) -> str:
    if r.get("status") != "ok":
        return r.get("reason", "")
    f = fmt
    if name == "conv41":
        return "; ".join(
            f"{k}: convpipe {f(v['convpipe']['seconds'], '.2f')} s vs scipy direct {f(v['scipy_direct']['seconds'], '.2f')} s"
            f" = {f(v['speedup'], '.1f')}×, rel err {f(v['convpipe']['rel_diff'], '.1e')}" for k, v in r["sizes"].items())
    if name == "fft_filter":
        return (f"convpipe {f(r['convpipe']['seconds'], '.2f')} s, floor {f(r['floor_numpy_fft_zarr']['seconds'], '.2f')} s"
                f" = {f(r['ratio_vs_floor'], '.2f')}×; in-memory 1 thread {f(r['scipy_in_memory_1thread']['seconds'], '.2f')} s")
    if name == "resume":
        return (f"{r['tiles_done_at_kill']} of {r['tiles']} tiles at kill; best full {r['full_wall_s']:.1f} s, resume "
                f"{r['resume_wall_s']:.1f} s (wall ratio {r['ratio_wall']:.2f}, rounds "
                f"{', '.join(f'{x:.2f}' for x in r['ratio_wall_per_round'])}; run ratio {f(r['ratio_elapsed'], '.2f')}); "
                f"no-op resume {r['noop_resume_wall_s']:.1f} s; equal {r['resumed_equals_full_run']}")
    if name in ("rss_scale", "peaks"):
        parts = [f"{k} planes: {fmt_bytes(v['peak_rss'])}, {v['elapsed_s']:.1f} s" + (f", {v['rows']:,} rows" if v.get("rows") is not None else "")
                 for k, v in r["runs"].items()]
        return "; ".join(parts) + f"; ratio {r['ratio']:.2f}"
    if name == "archive":
        b = ", ".join(f"{v['tasks']}: {v['build_us_per_task']:.0f} µs" for v in r["build"].values())
        runs = "; ".join(cl + " " + ", ".join(
            (f"{k}: {v['run_ms_per_task']:.2f} ms" if v.get("measured") else f"{k}: ~{v.get('extrapolated_ms_per_task', float('nan')):.2f} ms (extrapolated)")
            for k, v in rows.items()) for cl, rows in r["run"].items())
        fit = "; ".join(f"{cl} fit {v['fixed_s']:.1f} s + {v['ms_per_task']:.2f} ms/task" for cl, v in r["run_fit"].items()
                        if v)
        return f"build/task {b}; run/task (elapsed/tasks) {runs}; {fit}"
    return r.get("summary", "")  # rows that say it themselves (bench.layers)
