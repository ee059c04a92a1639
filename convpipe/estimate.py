"""Estimates users can plan with: wall time and peak memory per worker from costs measured on this machine.

The planner's per-voxel costs (``tilechoice._COST_NS``) are a fixed model that steers the tile; an estimate that
users plan archive runs with needs this machine's numbers. A short calibration times one small kernel per op
family (point, local, full, global) as the tiles run it, the read and write rate of a local Zarr array with
zarr's default codec, the cost of a task, and the fixed cost of a whole tiny run. It runs lazily -- never on
import, once when ``explain`` or a run's summary first asks -- and is cached per machine and library versions
in the user's cache directory (``CONVPIPE_CACHE_DIR`` overrides it); a cache written by other versions or on
another machine is measured again.

The estimate of a plan: each pass's compute (the planner's model scaled by the measured factor of each op's
family), reading the input and writing the output at the measured rates, and a measured cost per task, spread
over the workers the tiles can keep busy, plus the fixed cost of a run. Peak memory per worker is the
process's own footprint (measured) plus the plan's memory per task for each task it runs at once (twice:
the block read ahead for the next one).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

CACHE_ENV = "CONVPIPE_CACHE_DIR"
CACHE_FILE = "calibration.json"
#: Distributions whose versions change the costs measured (a cache from other versions is measured again).
_VERSIONED = ("convpipe", "numpy", "scipy", "zarr", "numcodecs", "dask", "distributed", "opencv-python-headless",
              "opencv-python", "scikit-image")
#: What measure_costs returns: a cache of another format is measured again.
CALIBRATION_FORMAT = 3


def cache_dir() -> Path:
    """Where the calibration is cached: ``$CONVPIPE_CACHE_DIR``, else the user's cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    try:  # the platform's convention (~/.cache, ~/Library/Caches, %LOCALAPPDATA%); pooch brings it
        import platformdirs
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "convpipe"
    return Path(platformdirs.user_cache_dir("convpipe", appauthor=False))


def _version(name: str) -> str:
    """``importlib.metadata.version(name)``, read off the top of its METADATA: ``version()`` parses the whole file
    with the email parser (numpy's carries its licences), ~1 ms a distribution of explain's start-up."""
    from importlib.metadata import distribution

    dist = distribution(name)
    text = dist.read_text("METADATA")
    for line in (text or "").splitlines():
        if not line:
            break  # the headers end here
        if line.startswith("Version:"):
            return line[len("Version:"):].strip()
    return dist.version


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _processor() -> str:
    """``platform.processor()``, which on Linux runs ``uname -p`` (a subprocess: ~12 ms of explain's start-up).

    It cannot change while the machine runs, so the cached calibration's key, measured since this boot
    (``boot_id`` in the entry), says it; otherwise the subprocess runs as before."""
    boot = _boot_id()
    if boot is not None:
        try:
            cached = json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
            if cached.get("boot_id") == boot and isinstance(cached["key"]["processor"], str):
                return cached["key"]["processor"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return platform.processor()


def machine_key() -> dict[str, Any]:
    """What a calibration is valid for: this machine (host, CPU, cores) and the library versions."""
    from importlib.metadata import PackageNotFoundError

    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = _version(name)
        except PackageNotFoundError:
            continue
    return {"format": CALIBRATION_FORMAT, "node": platform.node(), "machine": platform.machine(), "processor": _processor(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "versions": versions}


def calibration(*, refresh: bool = False, measure: Callable[[], dict] | None = None) -> dict[str, Any]:
    """This machine's measured costs: from the cache when it matches :func:`machine_key`, else measured now.

    Parameters
    ----------
    refresh : bool
        Measure again even when the cache matches.
    measure : callable, optional
        What measures (default :func:`measure_costs`; tests pass a fake).

    Returns
    -------
    dict
        ``key`` (:func:`machine_key`), ``costs`` (see :func:`measure_costs`), ``measured_at`` (epoch seconds).
    """
    key = machine_key()
    path = cache_dir() / CACHE_FILE
    if not refresh:
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("key") == key and isinstance(cached.get("costs"), dict):
                boot = _boot_id()
                if boot is not None and cached.get("boot_id") != boot:  # once a boot: see _processor
                    _store(path, {**cached, "boot_id": boot})
                return cached
        except (OSError, ValueError):
            pass  # none yet, unreadable or torn: measure
    costs = (measure or measure_costs)()
    entry = {"key": key, "costs": costs, "measured_at": time.time(), "boot_id": _boot_id()}
    _store(path, entry)
    return entry


def _store(path: Path, entry: dict) -> None:
    try:  # written whole or not at all: a concurrent reader never sees half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".calibration-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache directory: the estimate still holds for this process


#: What :func:`calibration` runs when no cache matches: :func:`convpipe.calibrate.measure_costs`, which times
#: small pipelines, so it lives a layer above plans; that module hands itself in when imported (the API
#: imports it). Tests replace it with a fake.
def measure_costs(side: int = 512) -> dict[str, float]:
    """Stands for :func:`convpipe.calibrate.measure_costs` until that module is imported (it replaces this)."""
    raise RuntimeError("no calibration is cached and convpipe.calibrate is not loaded: import convpipe.calibrate "
                       "(convpipe.load does) or pass costs= to estimate()")


def estimate(plan: Any, costs: dict[str, float] | None = None) -> dict[str, float]:
    """Wall time and peak memory per worker of ``plan`` on this machine.

    Parameters
    ----------
    plan : convpipe.plan.Plan
    costs : dict, optional
        :func:`measure_costs`' numbers; default this machine's (:func:`calibration`, cached).

    Returns
    -------
    dict
        ``seconds`` and ``peak_memory_bytes`` (per worker), as ``explain --json`` reports them under
        ``"estimate"``.
    """
    from .tilechoice import _COST_NS, _op_weight

    if costs is None:
        costs = calibration()["costs"]
    workers = max(int(plan.workers), 1)
    seconds = float(costs.get("run_fixed_s", 0.0))
    for pp in plan.passes:
        model_ns = [_COST_NS.get(op.kind, 3.0) * _op_weight(op) for op in pp.ops]
        total_ns = sum(model_ns) + 2.0
        scaled = sum(_measured_ns(op, ns, costs) for ns, op in zip(model_ns, pp.ops))
        scaled += 2.0 * costs.get("factor_point", 1.0)
        task_compute = pp.est_seconds_per_task * scaled / total_ns
        busy = min(workers, max(pp.n_tiles, 1))
        cpu = pp.n_tiles * task_compute + pp.tasks * costs.get("task_s", 5e-4)
        seconds += cpu / busy
    io_s = (plan.input.nbytes / max(costs.get("read_bytes_per_s", 1e9), 1.0)
            + _chunks(plan.input) * costs.get("read_chunk_s", 0.0)
            + plan.output.nbytes / max(costs.get("write_bytes_per_s", 1e9), 1.0)
            + _chunks(plan.output) * costs.get("write_chunk_s", 0.0))
    seconds += io_s / min(workers, max(plan.passes[-1].n_tiles if plan.passes else 1, 1))
    # a worker is a process: the threads cluster runs every task in this one, the others one task at a time
    # per worker process; each running task also holds the next block its thread reads ahead
    concurrent = workers if plan.cluster in ("threads",) else 1
    peak = float(costs.get("process_bytes", 0.0)) + 2 * concurrent * plan.peak_memory_per_worker
    return {"seconds": round(seconds, 3), "peak_memory_bytes": int(peak)}


def _chunks(info: Any) -> int:
    import math

    return math.prod(-(-n // max(int(c), 1)) for n, c in zip(info.shape, info.chunks))


def _measured_ns(op: Any, model_ns: float, costs: dict[str, float]) -> float:
    """Nanoseconds per voxel of ``op`` on this machine: the fitted separable line, else the model times its family's factor."""
    if op.kind == "local" and "separable_tap_ns" in costs and str(op.method()).startswith("separable"):
        halo = sum(lo + hi for lo, hi in op.halo().values())
        terms = len(getattr(op, "terms", None) or [1])  # a merged chain runs one separable pass per term
        return terms * (costs["separable_base_ns"] + costs["separable_tap_ns"] * halo)
    return model_ns * costs.get(f"factor_{op.kind}", 1.0)


def explain_json(plan: Any) -> dict[str, Any]:
    """The plan as ``explain --json`` prints it: :meth:`Plan.to_dict` plus ``"estimate"``."""
    d = plan.to_dict()
    d["estimate"] = estimate(plan)
    return d


def explain_text(plan: Any) -> str:
    """The plan as ``explain`` prints it, with this machine's estimate as its last line."""
    from .humanize import duration, format_bytes as _fmt_bytes

    e = estimate(plan)
    return (str(plan) + f"\n  estimate  {duration(e['seconds'])}, peak {_fmt_bytes(e['peak_memory_bytes'])} per worker "
            "(costs measured on this machine)")


def summary_suffix(res: Any) -> str:
    """Estimate and actual side by side, for the end of ``run``'s summary line ('' without a plan)."""
    plan = getattr(res, "plan", None)
    if plan is None or not getattr(plan, "passes", None):
        return ""
    try:
        e = estimate(plan)
    except Exception:  # an estimate never turns a finished run into a failure
        return ""
    from .humanize import format_bytes

    peak = (res.timings or {}).get("peak_rss")
    actual_mem = f", actual {format_bytes(int(peak))}" if peak else ""
    return (f"; estimate {e['seconds']:.2f} s vs actual {res.elapsed:.2f} s, peak memory per worker estimate "
            f"{format_bytes(int(e['peak_memory_bytes']))}{actual_mem}")
