"""The benchmark's tables, drawn with rich for ``convpipe bench`` (the numbers come from the report dicts
of :mod:`convpipe.bench`; the plain-text pieces from :mod:`convpipe.bench.render`)."""

from __future__ import annotations

from typing import Any

from ..bench.render import extra_summary, fmt, fmt_bytes

__all__ = ["render_extra_table", "render_gpu_table", "render_table"]


def render_table(report: dict) -> Any:
    from rich.table import Table

    cfg, m = report["config"], report["machine"]
    t = Table(title=(f"convpipe bench · {'×'.join(map(str, cfg['shape']))} uint16, chunks "
                     f"{'×'.join(map(str, cfg['chunks']))} · {m['cpus']} CPUs, {fmt_bytes(m['ram_bytes'])} RAM · "
                     f"backend {cfg['backend']} · best of {cfg['repeat']}"),
              caption=("time: best wall time of the rounds; cpu s: the least process CPU time (all threads) of "
                       "the rounds; tasks run: tasks the threaded scheduler executed (optimized graph); graph/plan: len of the "
                       "dask graph built, or convpipe's plan.tasks; Δ RSS: peak minus RSS at the start; max|Δ|, rel: "
                       "vs the float64 scipy oracle on the sub-volume "
                       + " × ".join(f"[{a}:{b}]" for a, b in report["check_region"])
                       + f"; load average at start/end {m.get('loadavg_start')} / {m.get('loadavg_end')}"))
    for col, just in (("pipeline", "left"), ("contender", "left"), ("time s", "right"), ("cpu s", "right"),
                      ("× roofline", "right"),
                      ("× dask-image", "right"), ("tasks run", "right"), ("graph/plan", "right"), ("peak RSS", "right"), ("Δ RSS", "right"),
                      ("max|Δ|", "right"), ("rel", "right"), ("check", "center")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for r in report["rows"]:
        if last is not None and r["pipeline"] != last:
            t.add_section()
        last = r["pipeline"]
        if r["status"] != "ok":
            style = "dim" if r["status"] == "skipped" else "red"
            t.add_row(r["pipeline"], r["contender"], f"[{style}]{r['status']}[/]", *["—"] * 10)
            continue
        ok = r.get("check_ok")
        t.add_row(r["pipeline"], r["contender"], fmt(r["seconds"], ".2f"), fmt(r["cpu_s"], ".2f"),
                  fmt(r["vs_roofline"], ".2f", "×"),
                  fmt(r["vs_dask_image"], ".2f", "×"), fmt(r["tasks"], ",d"), fmt(r["graph_tasks"], ",d"),
                  fmt_bytes(r["peak_rss"]), fmt_bytes(r["rss_delta"]), fmt(r["max_abs_diff"], ".2e"),
                  fmt(r["rel_diff"], ".1e"), "[green]ok[/]" if ok else "[red]FAIL[/]")
    return t


def render_extra_table(report: dict) -> Any:
    from rich.table import Table

    m = report["machine"]
    t = Table(title=f"convpipe bench --suite extra{' (quick)' if report.get('quick') else ''} · {m['cpus']} CPUs, "
                    f"{fmt_bytes(m['ram_bytes'])} RAM", show_lines=True)
    for col in ("row", "result", "target", "met"):
        t.add_column(col, overflow="fold")
    for name, r in report["rows"].items():
        met = "[green]met[/]" if r.get("met") else ("[red]error[/]" if r.get("status") != "ok" else "[red]missed[/]")
        t.add_row(name, extra_summary(name, r), r.get("target", ""), met)
    return t


def render_gpu_table(report: dict) -> Any:
    """``--suite gpu``: per backend, end-to-end cold and warm time and the device-resident kernel time."""
    from rich.table import Table

    e2e, kern = report.get("end_to_end", {}), report.get("kernel", {})
    caption = [f"{k.replace('_', ' ')} {report[k]:.2f}×" for k in ("speedup_end_to_end", "speedup_kernel")
               if report.get(k) is not None]
    if report.get("max_rel_diff_gpu_vs_cpu") is not None:
        caption.append(f"max |gpu - cpu| / max(1, max|cpu|) = {report['max_rel_diff_gpu_vs_cpu']:.2e}")
    t = Table(title=(f"convpipe bench --suite gpu · {'×'.join(map(str, report['shape']))}, chunks "
                     f"{'×'.join(map(str, report['chunks']))} · device {report.get('device') or 'none'}"),
              caption="; ".join(caption) or None)
    for col in ("backend", "cold s", "warm s", "Mvoxel/s", "tasks", "h2d / d2h", "kernel block", "kernel warm ms"):
        t.add_column(col, justify="left" if col in ("backend", "kernel block") else "right")
    for name in dict.fromkeys([*e2e, *kern]):
        r, k = e2e.get(name, {}), kern.get(name, {})
        moved = r.get("transfers") or {}
        t.add_row(name, fmt(r.get("cold_s"), ".2f"), fmt(r.get("warm_s"), ".2f"),
                  fmt(r["voxels_per_s"] / 1e6 if r.get("voxels_per_s") else None, ".1f"), fmt(r.get("tasks"), ",d"),
                  f"{moved.get('h2d', 0)} / {moved.get('d2h', 0)}" if name == "gpu" else "—",
                  "×".join(map(str, k.get("shape", []))) or "—",
                  fmt(k["warm_s"] * 1e3 if k.get("warm_s") is not None else None, ".1f"))
    return t
