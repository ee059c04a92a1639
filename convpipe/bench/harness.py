"""The benchmark's harness: every selected (case, contender) pair, timed round-robin, measured and checked.

Each run gets a fresh output, its peak RSS (:class:`convpipe.monitor.RssSampler`, the run monitor's
sampler), the tasks the local scheduler ran, its CPU time, and its max difference from the float64 oracle
on the check sub-volume (:mod:`.data`).
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from ..monitor import RssSampler
from .contenders import compute_threads
from .data import check_output, check_region, describe_output, disk_usage, ensure_input, oracle_on_region, remove, to_zarr
from .render import fmt, fmt_bytes, markup_escape
from .machine import cpu_count, cpu_seconds, loadavg, release_memory, total_ram, versions
from .registry import CASES, CONTENDERS, NA, REPORT_VERSION, BenchConfig, Case, Contender, Ctx, Skip

__all__ = ["run_benchmark", "selected_cases", "selected_contenders", "validate_config"]


def _task_counter() -> Any:
    """A dask callback counting the tasks the (local) scheduler is handed, after graph optimization —
    the same measurement for every dask contender, whatever it builds internally."""
    from dask.callbacks import Callback

    class TaskCounter(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.tasks = 0
            self.computes = 0

        def _start(self, dsk: Any) -> None:
            self.tasks += len(dsk)
            self.computes += 1

    return TaskCounter()


def _warm_up(ctx: Ctx) -> None:
    """Imports and first-call costs (thread pool, zarr's event loop, codecs) before anything is timed."""
    import dask.array as da
    import scipy.ndimage as ndi

    for mod in ("dask_image.ndfilters", "convpipe.api"):
        with contextlib.suppress(Exception):
            __import__(mod)
    x = da.from_zarr(ctx.input_url)[: ctx.chunks[0], : min(64, ctx.shape[1]), : min(64, ctx.shape[2])]
    ndi.gaussian_filter(np.asarray(compute_threads(ctx, x.astype(np.float32))[0]), 1.0)
    url = str((ctx.config.workdir / "warm-up.zarr").resolve())
    compute_threads(ctx, to_zarr(x.astype(np.float32), url))
    remove(url)


def selected_cases(config: BenchConfig) -> list[Case]:
    names = list(dict.fromkeys(["io", *config.pipelines]))
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"unknown pipeline(s) {', '.join(unknown)}; known: {', '.join(c for c in CASES if c != 'io')}")
    return [CASES[n] for n in names]


def selected_contenders(config: BenchConfig) -> list[Contender]:
    if config.only is None:
        return list(CONTENDERS.values())
    unknown = [n for n in config.only if n not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(CONTENDERS)}")
    return [c for c in CONTENDERS.values() if c.name in config.only]


def validate_config(config: BenchConfig) -> None:
    if len(config.shape) != 3 or len(config.chunks) != 3:
        raise ValueError("--shape and --chunks take three numbers: z,y,x")
    if any(int(n) < 1 for n in (*config.shape, *config.chunks)):
        raise ValueError("--shape and --chunks must be positive")
    if config.repeat < 1:
        raise ValueError("--repeat must be >= 1")
    if config.backend not in ("cpu", "gpu"):
        raise ValueError("--backend is cpu or gpu")
    from .summary import SECTIONS

    unknown = [s for s in config.sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")


def run_benchmark(config: BenchConfig, console: Any = None, *, progress: bool = True) -> dict:
    """Run every selected (case, contender) pair; return the report (also written to ``config.json_path``)."""
    validate_config(config)
    cases = selected_cases(config)
    contenders = selected_contenders(config)
    config.workdir = Path(config.workdir)
    config.workdir.mkdir(parents=True, exist_ok=True)
    say = (console.print if (console is not None and progress) else (lambda *a, **k: None))

    url, gen_s, reused = ensure_input(config, console if progress else None)
    ctx = Ctx(config, url, tuple(config.shape), tuple(config.chunks), cpu_count(), total_ram())
    region = check_region(ctx.shape, ctx.chunks)
    _warm_up(ctx)
    report: dict = {
        "convpipe_bench": REPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"shape": list(ctx.shape), "chunks": list(ctx.chunks), "pipelines": list(config.pipelines),
                   "repeat": config.repeat, "backend": config.backend,
                   "only": list(config.only) if config.only else None, "workdir": str(config.workdir.resolve()),
                   "sections": list(config.sections), "preset": config.preset},
        "machine": {"cpus": ctx.ncpu, "ram_bytes": ctx.total_ram, "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "versions": versions(),
        "input": {"url": url, "shape": list(ctx.shape), "chunks": list(ctx.chunks), "dtype": "uint16",
                  "nbytes": ctx.nvox * 2, "stored_bytes": disk_usage(url), "generated_s": gen_s, "reused": reused},
        "check_region": [[s.start, s.stop] for s in region],
        "cases": {c.name: {"title": c.title, "steps": c.steps, "tol": c.tol} for c in cases},
        "contenders": {c.name: c.description for c in contenders},
        "rows": [],
    }

    # every row is a slot; rounds run all slots in turn (round-robin), so a burst of load from elsewhere on
    # the machine hits every contender alike rather than all the repeats of one
    slots: list[dict] = []
    for case in cases:
        for con in contenders:
            reason = con.applies(ctx, case)
            if reason is None:
                slots.append({"case": case, "con": con, "runs": [], "row": None})
            elif reason != NA:
                slots.append({"case": case, "con": con, "runs": [],
                              "row": _row(case, con, status="skipped", reason=reason)})
    oracles: dict[str, np.ndarray] = {}
    for case in cases:
        if any(sl["row"] is None and sl["case"] is case for sl in slots):
            say(f"[dim]{case.name}: float64 oracle on {' × '.join(f'[{r.start}:{r.stop}]' for r in region)}[/]")
            oracles[case.name] = oracle_on_region(ctx, case, region)
    report["machine"]["loadavg_start"] = loadavg()
    for k in range(config.repeat):
        last = k == config.repeat - 1
        for sl in slots:
            if sl["row"] is not None:
                continue
            case, con = sl["case"], sl["con"]
            say(f"{case.name} · {con.name}" + (f" (round {k + 1}/{config.repeat})" if config.repeat > 1 else "") + " …")
            sl["row"] = _measure(ctx, case, con, sl["runs"], region, oracles[case.name], last=last)
            r = sl["row"]
            if r is None:
                say(f"  {sl['runs'][-1]['seconds']:.2f} s")
            elif r["status"] == "ok":
                say(f"  {r['times'][-1]:.2f} s (best {r['seconds']:.2f}), tasks {fmt(r['tasks'], 'd')}, "
                    f"peak RSS {fmt_bytes(r['peak_rss'])}, max|Δ| {fmt(r['max_abs_diff'], '.3g')}")
            else:
                # a reason is text: "convpipe[gpu]" is no style tag
                say(f"  [red]{r['status']}: {markup_escape(str(r.get('reason')))}[/]")
    report["machine"]["loadavg_end"] = loadavg()
    report["rows"] = [sl["row"] for sl in slots]

    _ratios(report["rows"])
    report["all_ok"] = all(r["status"] in ("ok", "skipped") and r.get("check_ok", True) is not False
                           for r in report["rows"])
    if config.sections:  # estimate vs actual, start-up, service jobs/s (issue 17), after every row is measured
        from .summary import add_sections, sections_ok

        add_sections(ctx, report, say)
        report["all_ok"] = report["all_ok"] and sections_ok(report)
    if config.json_path is not None:
        p = Path(config.json_path)
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(report, indent=2, default=json_default) + "\n")
    return report


def json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _row(case: Case, con: Contender, **kw: Any) -> dict:
    row = {"pipeline": case.name, "contender": con.name, "status": "ok", "reason": None, "seconds": None,
           "times": [], "cpu_s": None, "tasks": None, "graph_tasks": None, "computes": None, "peak_rss": None,
           "rss_delta": None, "baseline_rss": None,
           "voxels_per_s": None, "max_abs_diff": None, "rel_diff": None, "check_ok": None, "tol": case.tol,
           "vs_roofline": None, "vs_floor": None, "vs_dask_image": None, "output": None, "extra": {}}
    row.update(kw)
    return row


def _measure(ctx: Ctx, case: Case, con: Contender, runs: list[dict], region: tuple[slice, ...],
             oracle: np.ndarray, *, last: bool) -> dict | None:
    """Run one contender once, appending to ``runs``; return its row after the last round or a failure,
    else None (more rounds to come)."""
    try:
        remove(ctx.out_url(case, con.name))  # every run writes a fresh output; removing the old one is not timed
        if con.prepare is not None:
            con.prepare(ctx, case)
        release_memory()
        with RssSampler() as rss, _task_counter() as counter:
            c0 = cpu_seconds()
            t0 = time.perf_counter()
            outcome = con.fn(ctx, case)
            wall = time.perf_counter() - t0
            cpu = cpu_seconds() - c0
    except Skip as e:
        return _row(case, con, status="skipped", reason=str(e))
    except Exception as e:  # noqa: BLE001 - one contender failing must not sink the benchmark
        return _row(case, con, status="error", reason=f"{type(e).__name__}: {e}",
                    extra={"traceback": traceback.format_exc()})
    finally:
        release_memory()
    run = {"seconds": outcome.seconds if outcome.seconds is not None else wall, "wall": wall, "cpu_s": cpu,
           "peak": rss.peak, "baseline": rss.baseline, "tasks": counter.tasks, "computes": counter.computes}
    try:  # every round's output is checked (cheap: a sub-volume), so a flaky result cannot hide
        run.update(check_output(ctx, case, outcome.out_url, region, oracle))
    except Exception as e:  # noqa: BLE001
        run.update(check_ok=False, check_error=f"{type(e).__name__}: {e}")
    runs.append(run)
    if not last:
        return None
    times = [r["seconds"] for r in runs]
    best = min(times)
    top = max(runs, key=lambda r: r["peak"])
    row = _row(case, con, seconds=best, times=times, cpu_s=min(r["cpu_s"] for r in runs), tasks=runs[-1]["tasks"] or None,
               graph_tasks=outcome.graph_tasks, computes=runs[-1]["computes"], peak_rss=top["peak"],
               rss_delta=max(r["peak"] - r["baseline"] for r in runs), baseline_rss=top["baseline"],
               voxels_per_s=ctx.nvox / best if best > 0 else None, extra=outcome.extra)
    def badness(r: dict) -> tuple:
        d = r.get("max_abs_diff")
        return (r.get("check_ok") is False, float("inf") if d is None else d)

    worst = max(runs, key=badness)  # the row reports the worst round
    row.update({k: worst[k] for k in ("max_abs_diff", "rel_diff", "oracle_scale", "check_ok", "check_error")
                if k in worst})
    row["runs"] = runs
    row["output"] = describe_output(outcome.out_url)
    if not ctx.config.keep_outputs:
        remove(outcome.out_url)
    return row


def _ratios(rows: list[dict]) -> None:
    roof = next((r["seconds"] for r in rows if r["contender"] == "roofline" and r["status"] == "ok"), None)
    di = {r["pipeline"]: r["seconds"] for r in rows if r["contender"] == "dask-image" and r["status"] == "ok"}
    floor = {r["pipeline"]: r["seconds"] for r in rows if r["contender"] == "floor" and r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok" or not r["seconds"]:
            continue
        if roof:
            r["vs_roofline"] = r["seconds"] / roof
        if floor.get(r["pipeline"]):
            r["vs_floor"] = r["seconds"] / floor[r["pipeline"]]
        if di.get(r["pipeline"]):
            r["vs_dask_image"] = r["seconds"] / di[r["pipeline"]]

