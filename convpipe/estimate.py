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
over the workers the tiles can keep busy (the compute over as many as the threads cluster overlaps, measured),
plus the fixed cost of a run. Peak memory per worker is the process's own footprint (measured) plus the plan's
memory per task for each task it runs at once (twice: the block read ahead for the next one).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

CACHE_ENV = "CONVPIPE_CACHE_DIR"
CACHE_FILE = "calibration.json"
#: Distributions whose versions change the costs measured (a cache from other versions is measured again).
_VERSIONED = ("convpipe", "numpy", "scipy", "zarr", "numcodecs", "dask", "distributed", "opencv-python-headless",
              "opencv-python", "scikit-image")
#: What measure_costs returns: a cache of another format is measured again.
CALIBRATION_FORMAT = 14


def cache_dir() -> Path:
    """Where the calibration is cached: ``$CONVPIPE_CACHE_DIR``, else the user's cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    if sys.platform.startswith("linux"):  # platformdirs' answer here, without its ~3 ms import in every explain
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "convpipe"
    try:  # the platform's convention (~/Library/Caches, %LOCALAPPDATA%); pooch brings it
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
        import tempfile  # only to write the cache: explain reads it

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


def estimate(plan: Any, costs: dict[str, float] | None = None, *, first_run: bool | None = None,
             loaded: Any = None) -> dict[str, float]:
    """Wall time and peak memory per worker of ``plan`` on this machine.

    Parameters
    ----------
    plan : convpipe.plan.Plan
    costs : dict, optional
        :func:`measure_costs`' numbers; default this machine's (:func:`calibration`, cached).
    first_run : bool, optional
        The run is its process's first, which loads the engines on its clock (``convpipe run`` always is);
        default: whether this process has not loaded them yet.
    loaded : collection of str, optional
        The modules the process had loaded when the run started (default: ``sys.modules`` now): a library the
        plan needs (scipy.signal for FFT correlation, pyarrow for tables) and the process lacks loads on the
        run's clock, at its measured cost (0.3-0.6 s: most of a small run's first time).

    Returns
    -------
    dict
        ``seconds`` and ``peak_memory_bytes`` (per worker), as ``explain --json`` reports them under
        ``"estimate"``.
    """
    if costs is None:
        costs = calibration()["costs"]
    workers = max(int(plan.workers), 1)
    seconds = float(costs.get("run_fixed_s", 0.0))
    have = sys.modules if loaded is None else loaded
    if first_run is None:
        first_run = FIRST_RUN_MODULE not in have
    if first_run:
        seconds += float(costs.get("first_run_s", 0.0))
    seconds += sum(float(costs.get(f"load_s:{m}", 0.0)) for m in plan_loads(plan) if m not in have)
    def par(plane: float) -> float:
        return compute_workers(plan, costs, plane)

    pass_s = [_pass_seconds(pp, costs, workers, par) for pp in plan.passes]
    seconds += sum(pass_s)
    read_s = (plan.input.nbytes / max(costs.get("read_bytes_per_s", 1e9), 1.0)
              + _chunks(plan.input) * costs.get("read_chunk_s", 0.0))
    io_s = (read_s + plan.output.nbytes / max(costs.get("write_bytes_per_s", 1e9), 1.0)
            + _chunks(plan.output) * costs.get("write_chunk_s", 0.0))
    last_tiles = max(plan.passes[-1].n_tiles if plan.passes else 1, 1)
    # each tile of the last pass is written and recorded by the run (its sink, the manifest): measured on a
    # real tiny run as the cost of one more tile beyond its task and chunks
    seconds += (io_s + last_tiles * costs.get("tile_s", 0.0)) / min(workers, last_tiles)
    seconds += _prepass_seconds(plan, costs, workers, pass_s, read_s, par)
    seconds += _tables_seconds(plan, costs)
    seconds += _pyramid_seconds(plan, costs, workers)
    # a worker is a process: the threads cluster runs every task in this one, the others one task at a time
    # per worker process; each running task also holds the next block its thread reads ahead: its input block,
    # not a second task (twice the task's memory was 2.1-2.6x the benchmark runs' own growth)
    concurrent = workers if plan.cluster in ("threads",) else 1
    peak = float(costs.get("process_bytes", 0.0)) + concurrent * (plan.peak_memory_per_worker
                                                                   + _input_block_bytes(plan))
    return {"seconds": round(seconds, 3), "peak_memory_bytes": int(peak)}


def _input_block_bytes(plan: Any) -> float:
    """Bytes of the first pass's input block (a tile with its halo, as stored): what a read ahead holds."""
    import math

    import numpy as np

    if not plan.passes:
        return 0.0
    pp = plan.passes[0]
    ext = pp.extents[0]
    vox = math.prod(min(int(pp.tile.get(a, n)) + sum(pp.halo.get(a, (0, 0))), int(n)) for a, n in ext.items())
    return float(vox * np.dtype(plan.input.dtype).itemsize)


def compute_workers(plan: Any, costs: dict[str, float], plane: float | None = None) -> float:
    """How many tiles' compute runs at once: the workers, except on the threads cluster, whose tiles share one
    process and overlap only as far as the engines let them.

    What decides that overlap is how much each engine call does, not how long a tile takes: a call on a small
    plane is mostly Python holding the GIL, whatever the number of calls (diffusion's 20 steps on 128 x 128
    planes: 24 ms a tile, no overlap). So the overlap was measured on tiles of two plane sizes
    (``thread_speedup`` on planes of ``thread_plane`` voxels, ``thread_speedup_large`` on ``thread_plane_large``),
    and a tile whose planes hold ``plane`` voxels gets the one between, in log size (the nearer one outside).
    Here on 2 cores: 1.0 on 128 x 128 planes (an estimate that spread the examples' compute over both cores was
    half their run), 2.0 on 1024 x 1024 (one overlap for both had made the benchmark's estimates 2.2x its runs).
    """
    workers = float(max(int(plan.workers), 1))
    if plan.cluster != "threads":
        return workers
    small = float(costs.get("thread_speedup", workers))
    large, p_small, p_large = (costs.get(k) for k in ("thread_speedup_large", "thread_plane", "thread_plane_large"))
    speed = small
    if plane is not None and None not in (large, p_small, p_large) and 0 < p_small < p_large:
        import math

        f = (math.log(max(plane, 1.0)) - math.log(p_small)) / (math.log(p_large) - math.log(p_small))
        speed = small + min(max(f, 0.0), 1.0) * (float(large) - small)
    return min(max(speed, 1.0), workers)


def tile_plane(pp: Any) -> float:
    """Voxels of one plane of a pass's tile: its last two axes (an engine call's work)."""
    import math

    return float(math.prod(list(pp.tile.values())[-2:])) if getattr(pp, "tile", None) else 1.0


def _pass_seconds(pp: Any, costs: dict[str, float], workers: int,
                  par: Callable[[float], float] | None = None) -> float:
    """One pass's compute and task costs, spread over the workers its tiles keep busy (the compute over
    ``par(voxels of a plane of its tile)`` of them at most, :func:`compute_workers`; default all).

    The planner's seconds per task are its model's nanoseconds per voxel times a tile's input voxels; the
    voxels are taken back out of it, and each op's measured nanoseconds are weighed by the voxels the op
    itself sees (``pool`` leaves a quarter for the ops after it, ``filter_bank`` multiplies them by its
    kernels): the planner charges every op of a pass the pass's input voxels.
    """
    from .tilechoice import ns_per_voxel, op_model_ns

    in_vox = pp.est_seconds_per_task * 1e9 / max(ns_per_voxel(pp.ops), 1e-9)
    vox0 = max(_voxels(pp.extents[0]), 1.0)
    ns = 2.0 * costs.get("factor_point", 1.0)  # the tile's own assembly and cast (the model's + 2.0)
    for i, op in enumerate(pp.ops):
        ratio = _voxels(pp.extents[i]) / vox0 if i < len(pp.extents) else 1.0
        ns += ratio * _measured_ns(op, op_model_ns(op), costs)
        # what a call costs whatever the block's size (FFT filters: plans, padding), once per tile
        work = _work(op)
        ns += work.get("fft", 0.0) * costs.get("fft_call_s", 0.0) * 1e9 / max(in_vox, 1.0)
        if work.get("envelope"):
            ns += ratio * work["envelope"] * _envelope_ns(op, pp, in_vox, costs)
    task_compute = in_vox * ns * 1e-9
    busy = min(workers, max(pp.n_tiles, 1))
    overlap = min(float(workers if par is None else par(tile_plane(pp))), busy)
    # each op past a tile's first costs its bookkeeping (task_s, measured on a one-op chain, has the first's)
    ops_s = pp.n_tiles * max(len(pp.ops) - 1, 0) * costs.get("op_s", 0.0) / overlap
    return pp.n_tiles * task_compute / overlap + ops_s + pp.tasks * costs.get("task_s", 5e-4) / busy


def _envelope_ns(op: Any, pp: Any, in_vox: float, costs: dict[str, float]) -> float:
    """Nanoseconds per voxel of a lower envelope along ``op.axis`` on a tile of ``in_vox`` voxels: a loop over
    the line's positions whose steps each cost a fixed part plus one per line (convpipe.calibrate's
    ``_envelope_costs``); ~400 ns without a calibration that has them."""
    step, line = costs.get("envelope_step_s"), costs.get("envelope_line_s")
    n = float((getattr(pp, "tile", None) or {}).get(getattr(op, "axis", ""), 0) or 0)
    if step is None or line is None or n <= 0:
        return 400.0
    lines = max(in_vox / n, 1.0)
    return (step / lines + line) * 1e9


def _voxels(extent: dict[str, int]) -> float:
    import math

    return float(math.prod(int(n) for n in extent.values()))


def _prepass_seconds(plan: Any, costs: dict[str, float], workers: int, pass_s: list[float],
                     read_s: float, par: Callable[[float], float] | None = None) -> float:
    """What the pre-passes of global ops cost: each one is a computation of its own (a graph, a schedule)
    that reads the input again and recomputes every pass before its own, once per reduction it needs
    (``threshold {method}``: the value range, then the histogram), plus its own work per voxel."""
    total = 0.0
    for k, pp in enumerate(plan.passes):
        first = pp.ops[0]
        if first.kind != "global":
            continue
        computes, point_units = _prepasses(first)
        if not computes:
            continue
        busy = min(workers, max(plan.passes[0].n_tiles if plan.passes else 1, 1))
        upstream = sum(pass_s[:k]) + read_s / busy
        # its blocks' work: compute, as a pass's (a block per tile of the first pass)
        overlap = min(float(workers if par is None else par(tile_plane(plan.passes[0]))), busy)
        work = _voxels(pp.extents[0]) * point_units * costs.get("factor_point", 1.0) * 1e-9 / overlap
        total += computes * (costs.get("compute_s", 0.0) + upstream) + work
    return total


def _prepasses(op: Any) -> tuple[int, float]:
    """(whole-input computations before the op's pass, their work per voxel in point-probe units)."""
    hook = getattr(op, "estimate_prepasses", None)
    if callable(hook):
        got = hook()
        if got is not None:
            return int(got[0]), float(got[1])
    return 1, 0.0  # one reduction (zscore's moments, label's tiles: its work is in its cost_ns)


def _tables_seconds(plan: Any, costs: dict[str, float]) -> float:
    """Parquet tables: a part written per tile of the op's pass (with the tile, on its worker), and the
    merge of the parts into one file at the end of the run (in this process, after the tiles)."""
    workers = max(int(plan.workers), 1)
    total = 0.0
    for pp in plan.passes:
        for op in pp.ops:
            if _writes_table(op):
                total += (pp.n_tiles * costs.get("table_part_s", 0.0) / min(workers, max(pp.n_tiles, 1))
                          + costs.get("table_fixed_s", 0.0) + pp.n_tiles * costs.get("table_merge_part_s", 0.0))
    return total


def _pyramid_seconds(plan: Any, costs: dict[str, float], workers: int) -> float:
    """An OME-Zarr output's lower levels: a computation per level that reads the level above and writes
    a quarter (2-D) of its voxels, plus the NGFF metadata (measured as one level of a tiny run)."""
    out = getattr(getattr(plan, "spec", None), "output", None)
    levels = int(getattr(out, "pyramid", 0) or 0)
    if not levels:
        return 0.0
    total, nbytes = 0.0, float(plan.output.nbytes)
    for _ in range(levels):
        io = nbytes / max(costs.get("read_bytes_per_s", 1e9), 1.0)
        nbytes /= 4.0
        io += nbytes / max(costs.get("write_bytes_per_s", 1e9), 1.0)
        total += costs.get("pyramid_level_s", costs.get("compute_s", 0.0)) + io / workers
    return total


#: loaded by a process's first run (the engines' host implementations): its absence means the next run pays that
FIRST_RUN_MODULE = "convpipe.engines.cpu"
#: libraries some plans load on their first use, each timed by the calibration (``load_s:<module>``)
LOADS = ("scipy.signal", "pyarrow.parquet", "pandas")


def plan_loads(plan: Any) -> set[str]:
    """Of :data:`LOADS`, the libraries ``plan``'s ops load: scipy.signal for FFT correlations (correlate and
    banks by FFT, match_template) and the recursive filter, pyarrow for Parquet tables (and pandas, which
    pyarrow loads when it builds a table from columns)."""
    need: set[str] = set()
    for pp in plan.passes:
        for op in pp.ops:
            for o in getattr(op, "parts", None) or [op]:  # a merged run: each filter it was made of
                if _work(o).get("fft") or getattr(o, "name", "") == "autoregressive":
                    need.add("scipy.signal")
            if _writes_table(op):
                need.update(("pyarrow.parquet", "pandas"))
    return need


def _writes_table(op: Any) -> bool:
    """The op writes Parquet rows in this run (it emits them and its step names a table)."""
    return bool(getattr(op, "emits_table", False) and getattr(getattr(op, "params", None), "table", None))


def _chunks(info: Any) -> int:
    import math

    return math.prod(-(-n // max(int(c), 1)) for n, c in zip(info.shape, info.chunks))


def _measured_ns(op: Any, model_ns: float, costs: dict[str, float]) -> float:
    """Nanoseconds per voxel of ``op``'s input on this machine.

    In order: an op made of sub-ops (``filter_bank``: one correlation per kernel) costs their sum; an op's
    own account of its work (:func:`_work_ns`: taps, multiply-adds, elementwise passes, FFTs), which the
    planner's model has no room for; the fitted separable line; an op's declared ``cost_ns`` as it is; else
    the model times its family's measured factor.
    """
    subs = getattr(op, "subs", None)
    if subs:
        from .tilechoice import op_model_ns

        return sum(_measured_ns(s, op_model_ns(s), costs) for s in subs)
    work = _work(op)
    if work:
        return _work_ns(work, costs)
    if op.kind == "local" and "separable_tap_ns" in costs and str(op.method()).startswith("separable"):
        halo = sum(lo + hi for lo, hi in op.halo().values())
        terms = len(getattr(op, "terms", None) or [1])  # a merged chain runs one separable pass per term
        return terms * (costs["separable_base_ns"] + costs["separable_tap_ns"] * halo)
    if op.cost_ns:
        return float(op.cost_ns)
    return model_ns * costs.get(f"factor_{op.kind}", 1.0)


def _work(op: Any) -> dict[str, float]:
    """``Op.estimate_work()``, summed over sub-ops ({} where the op gives none)."""
    subs = getattr(op, "subs", None)
    if subs:
        out: dict[str, float] = {}
        for s in subs:
            for k, v in _work(s).items():
                out[k] = out.get(k, 0.0) + v
        return out
    hook = getattr(op, "estimate_work", None)
    return (hook() if callable(hook) else None) or {}


def _work_ns(work: dict[str, float], costs: dict[str, float]) -> float:
    """Nanoseconds per voxel of an op's own account of its work (``Op.estimate_work``): ``point``
    elementwise passes in units of the point probe (``x * 2 + 1``), ``taps`` of a direct kernel (a base cost
    per voxel plus one per tap), ``macs`` multiply-adds of a matrix product, ``fft`` FFT correlations (their
    measured cost per voxel; the cost per call is added per tile by :func:`_pass_seconds`)."""
    from .tilechoice import _COST_NS

    ns = work.get("point", 0.0) * costs.get("factor_point", 1.0) * _COST_NS["point"]
    if work.get("taps"):
        ns += costs.get("direct_base_ns", 0.0) + work["taps"] * costs.get("direct_tap_ns", 0.3)
    ns += work.get("macs", 0.0) * costs.get("mac_ns", 0.1)
    fft_ns = costs.get("fft_ns", costs.get("factor_full", 1.0) * _COST_NS["full"])  # a measured correlation
    ns += work.get("fft", 0.0) * fft_ns
    return ns


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
        e = estimate(plan, loaded=getattr(res, "modules_before", None))  # the first run follows from it
    except Exception:  # an estimate never turns a finished run into a failure
        return ""
    from .humanize import format_bytes

    peak = (res.timings or {}).get("peak_rss")
    actual_mem = f", actual {format_bytes(int(peak))}" if peak else ""
    return (f"; estimate {e['seconds']:.2f} s vs actual {res.elapsed:.2f} s, peak memory per worker estimate "
            f"{format_bytes(int(e['peak_memory_bytes']))}{actual_mem}")
