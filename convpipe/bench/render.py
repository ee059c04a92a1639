"""The benchmark's tables (rich) and one-line summaries; byte sizes through ``dask.utils.format_bytes``."""

from __future__ import annotations

from typing import Any

__all__ = ["extra_summary", "fmt", "fmt_bytes", "render_extra_table", "render_notes", "render_table"]


def fmt_bytes(n: float | None) -> str:
    """``format_bytes``, with "—" for a number not measured and a sign for a negative one (an RSS delta)."""
    from dask.utils import format_bytes

    if n is None:
        return "—"
    return "-" + format_bytes(int(-n)) if n < 0 else format_bytes(int(n))


def fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


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
