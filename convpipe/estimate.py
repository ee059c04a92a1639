"""Estimates users can plan with: wall time and peak memory per worker from costs measured on this machine.

The planner's per-voxel costs (``plan._COST_NS``) are a fixed model that steers the tile; an estimate that
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
import math
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
CALIBRATION_FORMAT = 2


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


def machine_key() -> dict[str, Any]:
    """What a calibration is valid for: this machine (host, CPU, cores) and the library versions."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return {"format": CALIBRATION_FORMAT, "node": platform.node(), "machine": platform.machine(), "processor": platform.processor(),
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
                return cached
        except (OSError, ValueError):
            pass  # none yet, unreadable or torn: measure
    costs = (measure or measure_costs)()
    entry = {"key": key, "costs": costs, "measured_at": time.time()}
    try:  # written whole or not at all: a concurrent reader never sees half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".calibration-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache directory: the estimate still holds for this process
    return entry


# --------------------------------------------------------------------------- measuring

_PROBES = {  # one step per op family, on a float32 plane (local ops: two Gaussians, below)
    "point": {"scale": {"factor": 2.0, "offset": 1.0}},
    "full": {"butterworth": {"cutoff_frequency_ratio": 0.1}},
    "global": {"zscore": {}},
}


def _best(fn: Callable[[], Any], repeat: int = 3) -> float:
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure_costs(side: int = 512) -> dict[str, float]:
    """Time this machine: each op family on a ``side`` x ``side`` plane, Zarr I/O, tasks and a tiny run.

    Returns
    -------
    dict
        ``factor_<family>``: measured seconds over the planner's model for that family's probe (1.0 is
        the model); ``read_bytes_per_s`` and ``write_bytes_per_s`` of a local Zarr array (default codec,
        decoded/encoded bytes); ``separable_base_ns`` and ``separable_tap_ns``: nanoseconds per voxel of a
        separable local op, fitted as a base plus a cost per voxel of halo; ``task_s``: the cost of one more tile task; ``run_fixed_s``: a whole tiny run
        (open, plan, create the output, write, record); ``process_bytes``: this process's RSS with the
        libraries a run loads; ``seconds``: how long calibrating took.
    """
    import numpy as np

    from .api import load

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    plane = (1000 + 300 * np.sin(yy / 37.0) * np.cos(xx / 23.0) + rng.normal(0, 20, (side, side))).astype(np.uint16)
    arr = plane.astype(np.float32)

    def apply(p, a, tile):
        return lambda: p.apply(a, axes="yx", tile=tile).compute(scheduler="sync")

    # what one call of a one-tile graph costs beyond its arithmetic (build, schedule, gather), taken out below
    point = load({"convpipe": 1, "input": {"url": "calibration.zarr"}, "steps": [_PROBES["point"]]})
    tiny = arr[:8, :8].copy()
    apply(point, tiny, [8, 8])()
    call = _best(apply(point, tiny, [8, 8]))
    out: dict[str, float] = {}
    for fam, step in _PROBES.items():
        p = point if fam == "point" else load({"convpipe": 1, "input": {"url": "calibration.zarr"}, "steps": [step]})
        run = apply(p, arr, [side, side])
        run()  # warm: imports, kernel tables, FFT plans
        secs = _best(run, 2)
        model = _bound(p, side)
        model_s = sum(pp.est_seconds_per_task * pp.n_tiles for pp in model.passes)
        out[f"factor_{fam}"] = max(secs - call, 0.1 * secs) / max(model_s, 1e-9)
    # separable local ops (most of them): seconds per voxel = a base + a cost per tap of the halo, fitted
    # from two Gaussians; the planner's model is linear in the halo too, but its slope is not this machine's
    fit = []
    for sigma in (1, 4):
        p = load({"convpipe": 1, "input": {"url": "calibration.zarr"}, "steps": [{"gaussian": {"sigma": sigma}}]})
        run = apply(p, arr, [side, side])
        run()
        halo = sum(lo + hi for lo, hi in _bound(p, side).passes[0].halo.values())
        secs = max(_best(run, 2) - call, 0.0)
        fit.append((halo, secs / arr.size * 1e9))
        if sigma == 1:  # other local ops (direct kernels, rank filters): the model times this factor
            model = _bound(p, side)
            out["factor_local"] = max(secs, 1e-9) / max(sum(pp.est_seconds_per_task for pp in model.passes), 1e-9)
    (h1, n1), (h2, n2) = fit
    out["separable_tap_ns"] = max((n2 - n1) / (h2 - h1), 0.0)
    out["separable_base_ns"] = max(n1 - out["separable_tap_ns"] * h1, 0.0)
    # one more task: the point op on 16 tiles of a quarter plane against one tile of it
    quarter = arr[: side // 2, : side // 2].copy()
    q = side // 2
    many = _best(apply(point, quarter, [q // 4, q // 4]), 2)
    one = _best(apply(point, quarter, [q, q]), 2)
    out["task_s"] = max((many - one) / 15, 1e-5)
    with tempfile.TemporaryDirectory(prefix="convpipe-calibration-") as tmp:
        import zarr

        big = np.tile(plane, (2, 2))  # 1024 x 1024 uint16 (2 MiB) in 16 chunks, zarr's default codec
        url = os.path.join(tmp, "io.zarr")
        z = zarr.create_array(url, shape=big.shape, chunks=(side // 2, side // 2), dtype=big.dtype)

        def write():
            z[...] = big

        out["write_bytes_per_s"] = big.nbytes / _best(write, 2)
        out["read_bytes_per_s"] = big.nbytes / _best(lambda: zarr.open_array(url, mode="r")[...], 2)
        # a whole tiny run: what every run pays whatever its size (threads, one tile)
        spec = {"convpipe": 1, "input": {"url": url}, "output": {"url": os.path.join(tmp, "o.zarr"), "overwrite": True},
                "steps": [_PROBES["point"]], "execution": {"cluster": "threads", "tile": list(big.shape)}}
        fixed = _best(lambda: load(spec).run(), 1)
        compute = big.size * 1e-9 * 3.0 * out["factor_point"]  # the probe's own work, taken out again
        io = big.nbytes / out["read_bytes_per_s"] + big.nbytes / out["write_bytes_per_s"]
        out["run_fixed_s"] = max(fixed - compute - io, 0.0)
    try:  # a worker's own footprint: the interpreter and the libraries a run loads, before any tile
        import psutil

        out["process_bytes"] = float(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - no psutil, or a platform without RSS
        out["process_bytes"] = 0.0
    out["seconds"] = time.perf_counter() - start
    return out


def _bound(p: Any, side: int) -> Any:
    import numpy as np

    from .plan import ArrayInfo, make_plan

    return make_plan(p.spec.steps, ArrayInfo((side, side), np.dtype("float32"), (side, side), "yx"),
                     tile={"y": side, "x": side})


# --------------------------------------------------------------------------- estimating


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
    from .plan import _COST_NS, _op_weight

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
    io_bytes = plan.input.nbytes / max(costs.get("read_bytes_per_s", 1e9), 1.0)
    out_bytes = plan.output.nbytes / max(costs.get("write_bytes_per_s", 1e9), 1.0)
    seconds += (io_bytes + out_bytes) / min(workers, max(plan.passes[-1].n_tiles if plan.passes else 1, 1))
    # a worker is a process: the threads cluster runs every task in this one, the others one task at a time
    # per worker process; each running task also holds the next block its thread reads ahead
    concurrent = workers if plan.cluster in ("threads",) else 1
    peak = float(costs.get("process_bytes", 0.0)) + 2 * concurrent * plan.peak_memory_per_worker
    return {"seconds": round(seconds, 3), "peak_memory_bytes": int(peak)}


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
    from .humanize import duration
    from .plan import _fmt_bytes

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
    from .plan import _fmt_bytes

    peak = (res.timings or {}).get("peak_rss")
    actual_mem = f", actual {_fmt_bytes(peak)}" if peak else ""
    return (f"; estimate {e['seconds']:.2f} s vs actual {res.elapsed:.2f} s, peak memory per worker estimate "
            f"{_fmt_bytes(e['peak_memory_bytes'])}{actual_mem}")
