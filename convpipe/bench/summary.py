"""The main table's sections after the rows (issue 17): estimate vs actual, start-up, service jobs/s.

``convpipe bench`` (``BenchConfig.sections``) adds to the report, after the side-by-side rows:

- ``estimate_vs_actual``: for each convpipe row, the plan's estimate (:func:`convpipe.estimate.estimate`, the
  numbers ``explain`` prints, from this machine's cached calibration) beside the row's measured wall time and
  peak RSS; ratio = estimate / actual, target 0.5–2× (below 0.5: optimistic, above 2: pessimistic). The plan
  is built again from the row's own spec after the rows ran (so the calibration, should it run here, is in no
  row's time or RSS); ``same_plan`` says its task count equals the one the row ran. Its ``examples`` part
  (:func:`convpipe.bench.examples.example_estimates`; ``BenchConfig.examples``, off with ``--no-examples``):
  each example pipeline on the demo's sample data in the workdir, run once to warm up and three times timed
  (the median), estimate vs actual (``--quick``: three of them); an example that fails is a row with its reason.
- ``startup``: the median wall time of ``convpipe`` ``--help``, ``validate``, ``ops``, ``schema``
  and ``explain`` (on a spec of the benchmark's input) as subprocesses, over that of
  ``python -c "import numpy, yaml, pydantic"``; target ≤ 2×. The commands run round-robin, so a burst of
  load from elsewhere hits each alike; convpipe's modules are compiled to bytecode first, as an installed wheel
  has them.
- ``service``: :func:`convpipe.bench.service.throughput`, the extra row ``service`` with small counts: tiny
  jobs per second through a real job service, warm runner vs a fresh interpreter per job.

A section that fails is recorded (``status: error``) and turns the report's ``all_ok`` false; a missed
target does not (targets are reported, as the ratios of the table are).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .examples import QUICK_EXAMPLES, example_estimates
from .machine import loadavg
from .registry import CASES, Ctx

__all__ = ["SECTIONS", "STARTUP_BASELINE", "add_sections", "estimate_vs_actual", "parse_sections",
           "plan_estimate", "section_notes", "sections_ok", "startup", "startup_commands"]

#: The sections, in the order they run and print.
SECTIONS = ("estimate", "startup", "service")
#: Where each section goes in the report.
REPORT_KEYS = {"estimate": "estimate_vs_actual", "startup": "startup", "service": "service"}
#: What the commands' start-up is measured against.
STARTUP_BASELINE = "import numpy, yaml, pydantic"
ESTIMATE_TARGET = (0.5, 2.0)
STARTUP_TARGET = 2.0
#: (start-up runs per command, warm service jobs, fresh-interpreter service jobs) per preset
SIZES = {"default": (5, 20, 4), "quick": (3, 6, 2)}


def parse_sections(text: str | None) -> tuple[str, ...]:
    """``--sections``: comma-separated names of :data:`SECTIONS`, ``all`` (None: all) or ``none``."""
    if text is None or text.strip() == "all":
        return SECTIONS
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names == ("none",):
        return ()
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)} (or all, none)")
    return tuple(n for n in SECTIONS if n in names)


# --------------------------------------------------------------------------- estimate vs actual


def plan_estimate(ctx: Ctx, pipeline: str, costs: dict | None = None) -> dict:
    """The estimate of the plan the convpipe contender runs for ``pipeline`` (its spec, this machine)."""
    import convpipe

    from ..estimate import estimate
    from .contenders import convpipe_spec

    case = CASES[pipeline]
    plan = convpipe.load(convpipe_spec(ctx, case, ctx.out_url(case, "convpipe"))).explain()
    e = estimate(plan, costs)
    footprint = (costs or {}).get("process_bytes")
    return {**e, "plan_tasks": int(plan.tasks), "workers": int(plan.workers), "cluster": str(plan.cluster),
            "process_bytes": footprint}


def _ratio(est: float | None, actual: float | None) -> float | None:
    return est / actual if est is not None and actual else None


def _within(r: float | None, lo_hi: tuple[float, float]) -> bool:
    return r is not None and lo_hi[0] <= r <= lo_hi[1]


def estimate_vs_actual(rows: list[dict], estimator: Callable[[str], dict]) -> dict:
    """Estimate beside actual for every convpipe row that ran; ``estimator(pipeline)`` gives the estimate.

    Returns
    -------
    dict
        ``rows`` (per pipeline: ``estimate_s``, ``actual_s``, ``seconds_ratio``, ``estimate_peak_bytes``,
        ``actual_peak_rss`` (the row's RSS growth plus ``process_bytes``, the footprint of a process that ran,
        where both are known; else the benchmark process's peak, ``process_peak_rss``), ``memory_ratio``,
        ``met``; ``status`` error with ``reason`` where no estimate came), ``target`` and ``met`` (every row
        within the target, both ratios).
    """
    out: dict = {"ratio": "estimate / actual", "target": list(ESTIMATE_TARGET), "rows": []}
    for r in rows:
        if r["contender"] != "convpipe" or r["status"] != "ok":
            continue
        try:
            e = estimator(r["pipeline"])
        except Exception as ex:  # noqa: BLE001 - one plan failing to estimate must not sink the others
            out["rows"].append({"pipeline": r["pipeline"], "status": "error", "reason": f"{type(ex).__name__}: {ex}"})
            continue
        s_ratio = _ratio(e["seconds"], r["seconds"])
        # the benchmark's process holds the input, the floor's values and the oracle's besides the run: the
        # run's own growth (its peak over its start) on a process that ran and holds nothing else (the
        # calibration's child) is what a run's worker peaks at; the whole process was 1.4-2 GiB for a run
        # that added 0.3-0.8, and an estimate with the calibrating process's RSS in it looked right beside it
        footprint = e.get("process_bytes")
        actual_peak = (r["rss_delta"] + footprint if footprint and r.get("rss_delta") is not None
                       else r["peak_rss"])
        m_ratio = _ratio(e["peak_memory_bytes"], actual_peak)
        ran_tasks = (r.get("extra") or {}).get("plan_tasks")
        out["rows"].append({
            "pipeline": r["pipeline"], "status": "ok",
            "estimate_s": e["seconds"], "actual_s": r["seconds"], "seconds_ratio": s_ratio,
            "estimate_peak_bytes": e["peak_memory_bytes"], "actual_peak_rss": actual_peak,
            "process_peak_rss": r["peak_rss"], "process_bytes": footprint,
            "actual_rss_delta": r.get("rss_delta"), "memory_ratio": m_ratio,
            "plan_tasks": e.get("plan_tasks"), "workers": e.get("workers"), "cluster": e.get("cluster"),
            "same_plan": None if ran_tasks is None or e.get("plan_tasks") is None else e["plan_tasks"] == ran_tasks,
            "met": _within(s_ratio, ESTIMATE_TARGET) and _within(m_ratio, ESTIMATE_TARGET)})
    out["met"] = bool(out["rows"]) and all(x.get("met") for x in out["rows"])
    return out


def _calibrate() -> dict:
    """This machine's costs (cached; measured now when no cache matches), and whether they were cached."""
    from .. import calibrate  # noqa: F401 - hands the real measure_costs to convpipe.estimate
    from ..estimate import calibration

    t0 = time.time()
    entry = calibration()
    return {"costs": entry["costs"], "cached": float(entry.get("measured_at", t0)) < t0,
            "measured_at": entry.get("measured_at"), "calibration_s": entry["costs"].get("seconds")}


# --------------------------------------------------------------------------- start-up


def startup_commands(spec_path: Path) -> dict[str, list[str]]:
    """The commands timed (name → argv); the first is the baseline.

    convpipe's commands run as users type them, through the ``convpipe`` script installed beside this Python
    (``python -m convpipe`` where there is none: runpy costs it ~6 % more)."""
    script = Path(sys.executable).with_name("convpipe")
    m = [str(script)] if script.is_file() and os.access(script, os.X_OK) else [sys.executable, "-m", "convpipe"]
    return {STARTUP_BASELINE: [sys.executable, "-c", STARTUP_BASELINE], "--help": [*m, "--help"],
            "validate": [*m, "validate", str(spec_path)], "ops": [*m, "ops"], "schema": [*m, "schema"],
            "explain": [*m, "explain", str(spec_path)]}


def run_timed(argv: list[str], cwd: Path, timeout: float = 120.0) -> dict:
    """Wall time of one subprocess start to exit (its output discarded), its exit code, its error's tail."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, check=False)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, f"timed out after {timeout:g} s"
    return {"seconds": time.perf_counter() - t0, "rc": rc, "stderr_tail": (err or "")[-400:]}


def startup(commands: dict[str, list[str]], runs: int, cwd: Path,
            timer: Callable[[list[str], Path], dict] | None = None) -> dict:
    """Median wall time of each command over ``runs`` round-robin rounds, and its ratio to the first's.

    ``timer(argv, cwd)`` runs one (default :func:`run_timed`) and returns its ``seconds``, ``rc`` and
    ``stderr_tail``.

    Returns
    -------
    dict
        ``baseline`` and ``commands`` (name → ``argv``, ``times``, ``median_s``, ``ratio``, ``ok``, ``met``,
        ``error`` when a run failed), ``runs``, ``target`` and ``met`` (every command ≤ target × baseline).
    """
    timer = timer or run_timed
    res = {name: {"argv": argv, "times": [], "ok": True} for name, argv in commands.items()}
    for _ in range(runs):
        for name, argv in commands.items():
            t = timer(argv, cwd)
            res[name]["times"].append(t["seconds"])
            if t["rc"] != 0 and res[name]["ok"]:
                res[name].update(ok=False, error=f"exit {t['rc']}: {t['stderr_tail'].strip()[-300:]}")
    for r in res.values():
        r["median_s"] = statistics.median(r["times"]) if r["times"] else None
    base_name, *names = commands
    base = res[base_name]
    for name in names:
        r = res[name]
        r["ratio"] = _ratio(r["median_s"], base["median_s"]) if r["ok"] and base["ok"] else None
        r["met"] = r["ratio"] is not None and r["ratio"] <= STARTUP_TARGET
    return {"baseline": {"name": base_name, **base}, "commands": {n: res[n] for n in names}, "runs": runs,
            "target": STARTUP_TARGET, "all_ok": base["ok"] and all(res[n]["ok"] for n in names),
            "met": all(res[n]["met"] for n in names)}


def write_bytecode() -> int:
    """Compile convpipe's modules to bytecode, as pip does when it installs the wheel; how many files it found.

    An editable checkout under ``PYTHONDONTWRITEBYTECODE`` (set on some CI machines) otherwise compiles every
    convpipe module from source on every start: ~50 ms a command that no installed copy pays.
    """
    import compileall

    package = Path(__file__).resolve().parents[1]
    compileall.compile_dir(str(package), quiet=1, workers=1)
    return sum(1 for _ in package.rglob("*.py"))


def _startup_spec(ctx: Ctx) -> Path:
    """A spec of the benchmark's input (the first selected pipeline, else light) for validate and explain."""
    import yaml

    from .contenders import convpipe_spec

    name = next((n for n in ctx.config.pipelines if n in CASES and CASES[n].steps), "light")
    case = CASES[name]
    path = Path(ctx.config.workdir) / "startup-spec.yaml"
    spec = convpipe_spec(ctx, case, str((Path(ctx.config.workdir) / "startup-out.zarr").resolve()))
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --------------------------------------------------------------------------- all of them


def _section(name: str, fn: Callable[[], dict]) -> dict:
    t0 = time.perf_counter()
    load = loadavg()
    try:
        out = fn()
        out["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - one section failing must not sink the table
        out = {"status": "error", "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    out.update(section_s=time.perf_counter() - t0, loadavg_start=load, loadavg_end=loadavg())
    return out


def add_sections(ctx: Ctx, report: dict, say: Callable[..., Any] = lambda *a, **k: None) -> None:
    """Run ``ctx.config.sections`` after the rows; each goes into ``report`` under :data:`REPORT_KEYS`."""
    runs, n_warm, n_cold = SIZES.get(ctx.config.preset, SIZES["default"])
    workdir = Path(ctx.config.workdir)
    sections = ctx.config.sections
    calib: dict = {}

    def calibrated() -> dict:
        if not calib:
            calib.update(_calibrate())
        return calib

    def do_estimate() -> dict:
        costs = calibrated()["costs"]
        out = estimate_vs_actual(report["rows"], lambda name: plan_estimate(ctx, name, costs))
        out["calibration"] = {k: v for k, v in calibrated().items() if k != "costs"}
        if getattr(ctx.config, "examples", True):
            say("estimate vs actual: the example pipelines …")
            try:
                out["examples"] = example_estimates(workdir, costs, QUICK_EXAMPLES if ctx.config.preset == "quick"
                                                    else None)
            except Exception as e:  # noqa: BLE001 - the sample data failing must not sink the rows' estimates
                out["examples"] = {"status": "error", "reason": f"{type(e).__name__}: {e}", "rows": []}
        return out

    def do_startup() -> dict:
        calibrated()  # explain reads the cached calibration; it must not measure one in a timed run
        compiled = write_bytecode()
        return {**startup(startup_commands(_startup_spec(ctx)), runs, workdir), "bytecode_files": compiled}

    def do_service() -> dict:
        from .service import throughput

        return throughput(workdir / "service", n_warm, n_cold, say)

    steps = {"estimate": ("estimate vs actual: explain's estimate of each convpipe row", do_estimate),
             "startup": (f"start-up: {runs} rounds of {', '.join(startup_commands(Path('spec.yaml')))}", do_startup),
             "service": (f"service jobs/s: {n_warm} warm, {n_cold} in a fresh interpreter", do_service)}
    for name in SECTIONS:
        if name in sections:
            title, fn = steps[name]
            say(f"{title} …")
            report[REPORT_KEYS[name]] = _section(name, fn)


def sections_ok(report: dict) -> bool:
    """No section failed, no estimate failed, every start-up command exited 0, the service lost no job."""
    return not section_notes(report)


def section_notes(report: dict) -> list[str]:
    """One line per section that failed or found a failure (the tables have no room for reasons)."""
    notes = []
    for name, key in REPORT_KEYS.items():
        s = report.get(key)
        if s is None:
            continue
        if s.get("status") != "ok":
            notes.append(f"{name} {s.get('status')}: {s.get('reason')}")
            continue
        if name == "estimate":
            notes += [f"estimate {r['pipeline']} error: {r['reason']}" for r in s["rows"] if r["status"] != "ok"]
            ex = s.get("examples") or {}
            if ex.get("status") == "error":
                notes.append(f"estimate examples error: {ex.get('reason')}")
            notes += [f"estimate example {r['example']} error: {r['reason']}" for r in ex.get("rows", [])
                      if r["status"] == "error"]
        elif name == "startup":
            notes += [f"startup {n} failed: {c['error']}" for n, c in
                      [(s["baseline"]["name"], s["baseline"]), *s["commands"].items()] if not c["ok"]]
        elif name == "service" and not s.get("all_ok"):
            lost = [f"{m} {r['succeeded']}/{r['jobs']} succeeded, sample ok {r['sample_ok']}"
                    for m, r in (("warm", s.get("warm")), ("cold", s.get("cold"))) if r]
            notes.append("service failed: " + "; ".join(lost))
    return notes
