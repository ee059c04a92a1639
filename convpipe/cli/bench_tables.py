"""The benchmark's tables, drawn with rich for ``convpipe bench`` (the numbers come from the report dicts
of :mod:`convpipe.bench`; the plain-text pieces from :mod:`convpipe.bench.render`)."""

from __future__ import annotations

from typing import Any

from ..bench.render import extra_summary, fmt, fmt_bytes

__all__ = ["render_conv_layer_table", "render_extra_table", "render_gpu_table", "render_sections", "render_table"]


def render_table(report: dict) -> Any:
    from rich.table import Table

    cfg, m = report["config"], report["machine"]
    t = Table(title=(f"convpipe bench · {'×'.join(map(str, cfg['shape']))} uint16, chunks "
                     f"{'×'.join(map(str, cfg['chunks']))} · {m['cpus']} CPUs, {fmt_bytes(m['ram_bytes'])} RAM · "
                     f"backend {cfg['backend']} · best of {cfg['repeat']}"),
              caption=("time: best wall time of the rounds; cpu s: the least process CPU time (all threads) of "
                       "the rounds; tasks run: tasks the threaded scheduler executed (optimized graph); graph/plan: len of the "
                       "dask graph built, or convpipe's plan.tasks; × floor: over the job's own I/O floor (zarr reads the input, "
                       "then writes the job's output values from memory); Δ RSS: peak minus RSS at the start; max|Δ|, rel: "
                       "vs the float64 scipy oracle on the sub-volume "
                       + " × ".join(f"[{a}:{b}]" for a, b in report["check_region"])
                       + f"; load average at start/end {m.get('loadavg_start')} / {m.get('loadavg_end')}"))
    for col, just in (("pipeline", "left"), ("contender", "left"), ("time s", "right"), ("cpu s", "right"),
                      ("× roofline", "right"), ("× floor", "right"),
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
            t.add_row(r["pipeline"], r["contender"], f"[{style}]{r['status']}[/]", *["—"] * 11)
            continue
        ok = r.get("check_ok")
        t.add_row(r["pipeline"], r["contender"], fmt(r["seconds"], ".2f"), fmt(r["cpu_s"], ".2f"),
                  fmt(r["vs_roofline"], ".2f", "×"), fmt(r.get("vs_floor"), ".2f", "×"),
                  fmt(r["vs_dask_image"], ".2f", "×"), fmt(r["tasks"], ",d"), fmt(r["graph_tasks"], ",d"),
                  fmt_bytes(r["peak_rss"]), fmt_bytes(r["rss_delta"]), fmt(r["max_abs_diff"], ".2e"),
                  fmt(r["rel_diff"], ".1e"), "[green]ok[/]" if ok else "[red]FAIL[/]")
    return t


def _met(ok: bool | None) -> str:
    return "[green]met[/]" if ok else "[red]missed[/]"


def _load(s: dict) -> str:
    a, b = s.get("loadavg_start"), s.get("loadavg_end")
    return f"load average at start/end {a} / {b}; section {fmt(s.get('section_s'), '.1f')} s"


def _examples_table(ex: dict, lo: float, hi: float) -> Any:
    """The estimate section's examples part: each example pipeline's estimate beside its timed run."""
    from rich.table import Table

    t = Table(title="estimate vs actual · the example pipelines (pipelines/*.yaml) on the demo's data",
              caption=(f"ratio: estimate / actual, target {lo:g}–{hi:g}×; "
                       "actual: the median of 3 runs after a warm-up run; "
                       "load: the 1-minute load average as it started"
                       + (f"; [red]{ex.get('reason')}[/]" if ex.get("status") == "error" else "")))
    for col in ("example", "estimate s", "actual s", "ratio", "passes", "load", "target"):
        t.add_column(col, justify="left" if col == "example" else "right")
    for r in ex.get("rows", []):
        if r["status"] != "ok":
            colour = "red" if r["status"] == "error" else "yellow"
            t.add_row(r["example"], f"[{colour}]{r['status']}[/]", "—", "—", "—", "—", str(r.get("reason", ""))[:60])
            continue
        load = r.get("loadavg")
        t.add_row(r["example"], fmt(r["estimate_s"], ".3f"), fmt(r["actual_s"], ".3f"), fmt(r["ratio"], ".2f", "×"),
                  str(r.get("passes", "")), f"{load[0]:.1f}" if load else "—", _met(r["met"]))
    return t


def render_sections(report: dict) -> list[Any]:
    """The tables of the sections after the rows (:mod:`convpipe.bench.summary`), those the report has."""
    from rich.table import Table

    from ..bench.summary import REPORT_KEYS

    out = []
    e = report.get(REPORT_KEYS["estimate"])
    if e is not None and e.get("status") == "ok":
        lo, hi = e["target"]
        cal = e.get("calibration") or {}
        t = Table(title="estimate vs actual · explain's estimate of each convpipe row beside its measured run",
                  caption=(f"ratio: estimate / actual, target {lo:g}–{hi:g}×; actual: the row's best wall time, and "
                           "its RSS growth on a process that ran and holds nothing else (the calibration's child; "
                           "the benchmark's process holds its inputs besides); the estimate's peak is per worker: "
                           "the threads cluster's one process; calibration "
                           + ("cached" if cal.get("cached") else f"measured now ({fmt(cal.get('calibration_s'), '.1f')} s)")
                           + f"; {_load(e)}"))
        for col in ("pipeline", "estimate s", "actual s", "ratio", "estimate peak", "actual peak", "ratio",
                    "plan", "target"):
            t.add_column(col, justify="left" if col in ("pipeline", "plan") else "right")
        for r in e["rows"]:
            if r["status"] != "ok":
                t.add_row(r["pipeline"], "[red]error[/]", *["—"] * 7)
                continue
            plan = f"{fmt(r.get('plan_tasks'), ',d')} tasks, {r.get('cluster')}" + (
                "" if r.get("same_plan") is not False else " [red](not the plan run)[/]")
            t.add_row(r["pipeline"], fmt(r["estimate_s"], ".2f"), fmt(r["actual_s"], ".2f"),
                      fmt(r["seconds_ratio"], ".2f", "×"), fmt_bytes(r["estimate_peak_bytes"]),
                      fmt_bytes(r["actual_peak_rss"]), fmt(r["memory_ratio"], ".2f", "×"), plan, _met(r["met"]))
        out.append(t)
        ex = e.get("examples")
        if ex is not None:
            out.append(_examples_table(ex, lo, hi))
    s = report.get(REPORT_KEYS["startup"])
    if s is not None and s.get("status") == "ok":
        base = s["baseline"]
        t = Table(title=f"start-up · median of {s['runs']} runs of each command as a subprocess (round-robin)",
                  caption=f"ratio: median / the baseline's median, target ≤ {s['target']:g}×; {_load(s)}")
        for col in ("command", "median s", "runs s", "× baseline", "target"):
            t.add_column(col, justify="left" if col == "command" else "right")

        def runs(c: dict) -> str:
            return ", ".join(f"{x:.2f}" for x in c["times"]) + ("" if c["ok"] else " [red]failed[/]")

        t.add_row(f"python -c \"{base['name']}\" (baseline)", fmt(base["median_s"], ".2f"), runs(base), "1.00×", "")
        for name, c in s["commands"].items():
            t.add_row(f"convpipe {name}", fmt(c["median_s"], ".2f"), runs(c), fmt(c["ratio"], ".2f", "×"),
                      _met(c["met"]))
        out.append(t)
    v = report.get(REPORT_KEYS["service"])
    if v is not None and v.get("status") == "ok":
        t = Table(title="service jobs/s · tiny jobs (64×64 gaussian) submitted at once to a real job service, "
                        "submit → succeeded",
                  caption=(f"target: warm ≥ {v['target_jobs_per_s']:g} jobs/s, every job succeeded, sampled outputs "
                           f"equal the oracle; warm / fresh {fmt(v.get('speedup'), '.1f', '×')}; {_load(v)}"))
        for col in ("jobs start", "jobs", "succeeded", "seconds", "jobs/s", "first job s", "sample max|Δ|", "target"):
            t.add_column(col, justify="left" if col == "jobs start" else "right")
        for label, key in (("forked from the warm runner", "warm"), ("fresh interpreter each", "cold")):
            r = v.get(key)
            if r is None:
                t.add_row(label, *["—"] * 6, "[dim]not here (Linux only)[/]")
                continue
            t.add_row(label, str(r["jobs"]), str(r["succeeded"]), fmt(r["seconds"], ".2f"), fmt(r["jobs_per_s"], ".2f"),
                      fmt(r["service_start_to_first_job_s"], ".1f"), fmt(r["sample_max_abs_diff"], ".1e"),
                      _met(v["met"]) if key == "warm" else "")
        out.append(t)
    return out


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


def render_conv_layer_table(r: dict) -> Any:
    """The extra row ``conv_layer`` side by side: per contender its Zarr -> Zarr and in-memory seconds (best
    and median of the rounds), × the job's I/O floor, the ratios the targets name, peak RSS and error."""
    from rich.table import Table

    z, m = r.get("zarr", {}), r.get("memory", {})
    loads = ", ".join(f"{v[0]:.1f}" for v in r.get("loadavg", []))
    t = Table(title=f"conv_layer 16→32, 3×3, {'×'.join(map(str, r['shape']))} float32 · {r['threads']} threads · "
                    f"best / median of {r['rounds']} rounds",
              caption=(f"Zarr→Zarr: read the input, compute, write {r['output']['chunks']} chunks "
                       f"{', '.join(r['output']['compressors'])} (convpipe's output settings); in memory: the compute "
                       f"alone; floor: the job's own read + write; speed-up: scipy loop / contender, vs torch: "
                       f"contender / torch; rel err vs the float64 oracle; 1-min load average at the start and after "
                       f"each round: {loads}"))
    for col in ("contender", "Zarr→Zarr s", "× floor", "in memory s", "× scipy loop (Z / mem)",
                "/ torch (Z / mem)", "peak RSS", "rel err"):
        t.add_column(col, justify="left" if col == "contender" else "right")

    def bm(s: dict | None) -> str:
        return "—" if not s or s.get("min") is None else f"{s['min']:.2f} / {s['median']:.2f}"

    sp = {"convpipe": (z.get("speedup_vs_scipy_loop"), m.get("speedup_vs_scipy_loop"))}
    vt = {"convpipe": (z.get("ratio_vs_torch"), m.get("ratio_vs_torch"))}
    for name in ("floor", "convpipe", "convpipe-memory", "torch-conv2d", "scipy-loop"):
        row = r["rows"].get(name)
        if row is None or name == "convpipe-memory":  # its times are convpipe's in-memory column
            continue
        if row.get("status") != "ok":
            t.add_row(name, f"[dim]{row.get('status')}[/]", *["—"] * 5, "", str(row.get("reason", ""))[:60])
            continue
        peak = row.get("peak_rss")
        if name == "convpipe":
            peak_s = f"{fmt_bytes(peak)} / {fmt_bytes(r['rows'].get('convpipe-memory', {}).get('peak_rss'))}"
        else:
            peak_s = fmt_bytes(peak)
        pair = lambda v: " / ".join(fmt(x, ".2f", "×") for x in v) if v else ""  # noqa: E731
        xf = fmt(z.get("x_floor", {}).get(name), ".2f", "×") if name != "floor" else "1.00×"
        t.add_row(name, bm(row.get("zarr")), xf,
                  bm(row.get("memory")), pair(sp.get(name)), pair(vt.get(name)), peak_s, fmt(row.get("rel_err"), ".1e"))
    return t
