"""Calibration: time this machine on small pipelines, for the estimates of :mod:`convpipe.estimate`.

One small kernel per op family (point, local, full, global) as the tiles run it, two Gaussians for the
separable line, the cost of one more task, the read and write rate of a local Zarr array with zarr's
default codec, and a whole tiny run. It runs pipelines, so it sits above the plans whose estimates it feeds:
importing this module hands :func:`measure_costs` to :mod:`convpipe.estimate` (the API imports it), which
runs it lazily, once, and caches what it measured.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

from . import estimate as _estimate
from .spec import load_spec

# The run machinery (apply_tables, run.core: dask, zarr, the engines) is imported inside measure_costs: this
# module is imported by the API only to hand measure_costs in, and explain with a cached calibration must not
# pay for it (issue 17: zarr alone was a third of explain's start-up).


def load(source: dict) -> Any:
    """The spec of a probe (as :func:`convpipe.load` reads it: ``input`` may be left out)."""
    return load_spec(source, input_required=False)


_PROBES = {  # one step per op family, on a float32 plane (local ops: two Gaussians, below)
    "point": {"scale": {"factor": 2.0, "offset": 1.0}},
    "full": {"butterworth": {"cutoff_frequency_ratio": 0.1}},
    "global": {"zscore": {}},
}


def _best(fn: Callable[[], Any], repeat: int = 3, clock: Callable[[], float] = time.process_time) -> float:
    """The least CPU time of this process (all its threads) over ``repeat`` calls of ``fn``.

    CPU time, not wall time: the probes are CPU-bound (the probe arrays live in the page cache), and wall time
    measured while other processes held the cores (load 6 on 2 cores) cached costs 10x too high, so every
    later ``explain`` on the machine overestimated 5x. A run's wall time on a busy machine is then longer than
    its estimate, which is what the estimate should say about a machine that is the user's own.
    """
    best = math.inf
    for _ in range(repeat):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def _own(fn: Callable[[], Any], repeat: int = 3) -> float:
    """:func:`_best` on this thread's CPU clock, for probes that compute in this thread only (the synchronous
    scheduler, engines on one thread). The process's clock also counts its other threads, and OpenBLAS's
    worker threads spin-wait beside the caller for a while after start-up and after a BLAS call: a lower
    envelope of 21 ms took 42-45 ms of process CPU (1.0x with ``OPENBLAS_NUM_THREADS=1``), a Gaussian probe
    2.1 -> 5.9 ns a voxel after the global probe, and the separable fit's base came out 2-5x a run's."""
    return _best(fn, repeat, time.thread_time)


def measure_costs(side: int = 512) -> dict[str, float]:
    """Time this machine: each op family on a ``side`` x ``side`` plane, Zarr I/O, tasks and a tiny run.

    Returns
    -------
    dict
        ``factor_<family>``: measured seconds over the planner's model for that family's probe (1.0 is
        the model); ``read_bytes_per_s`` and ``write_bytes_per_s`` of a local Zarr array (default codec,
        decoded/encoded bytes) beside ``read_chunk_s`` and ``write_chunk_s``, zarr's cost per chunk;
        ``separable_base_ns`` and ``separable_tap_ns``: nanoseconds per voxel of a separable local op, fitted
        as a base plus a cost per voxel of halo; ``task_s``: the cost of one more tile task; ``op_s``: of one
        more op in a tile's chain; ``run_fixed_s``: a whole tiny run (open, plan, create the output, write,
        record); ``first_run_s``: what a process's first run pays beyond a later one (imports on the run's
        clock), ``load_s:<module>`` what loading each library of ``convpipe.estimate.LOADS`` costs;
        ``thread_speedup[_large]``: how many tiles the threads cluster computes at once, on planes of
        ``thread_plane[_large]`` voxels (small and large tiles; :func:`_thread_speedup`); ``process_bytes``: the
        RSS of a process that ran (a child: the interpreter and what a run loads); ``seconds``: how long
        calibrating took.
    """
    import dask.array as da
    import numpy as np

    from .apply_tables import apply_array
    from .run.core import run_pipeline
    from .run.events import EventBus

    from . import heap

    heap.warm()  # the probes' temporaries as a run's tiles get them (convpipe.heap): half the CPU of a cold heap
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    plane = _probe_plane(side, rng)
    # the op probes run on a plane of 4x the voxels: on a side^2 plane a one-tile graph's own cost (~3 ms of
    # Python) was most of what the probe timed, and the fit's slope came out as noise
    arr = np.tile(plane, (2, 2)).astype(np.float32)
    bside = arr.shape[0]

    def apply(p, a, tile):
        # name=False: no sha1 of the probe array (dask's token for a numpy input), which a run from Zarr never
        # computes and which was a sixth of the probe's time
        d = da.from_array(a, chunks=a.shape, name=False)
        return lambda: apply_array(p, d, axes="yx", tile=tile).compute(scheduler="sync")

    # what one call of a one-tile graph costs beyond its arithmetic (build, schedule, gather), taken out below
    point = load({"convpipe": 1, "input": {"url": "calibration.zarr"}, "steps": [_PROBES["point"]]})
    tiny = arr[:8, :8].copy()
    apply(point, tiny, [8, 8])()
    call = _own(apply(point, tiny, [8, 8]))
    out: dict[str, float] = {"compute_s": call}  # what each pre-pass computation costs beyond its work
    for fam, step in _PROBES.items():
        p = point if fam == "point" else load({"convpipe": 1, "input": {"url": "calibration.zarr"}, "steps": [step]})
        run = apply(p, arr, [bside, bside])
        run()  # warm: imports, kernel tables, FFT plans
        # a global op's statistics pre-pass may compute on dask's threads: the process's clock for it
        secs = _best(run, 3) if fam == "global" else _own(run, 3)
        model = _bound(p, bside)
        model_s = sum(pp.est_seconds_per_task * pp.n_tiles for pp in model.passes)
        out[f"factor_{fam}"] = max(secs - call, 0.1 * secs) / max(model_s, 1e-9)
    # separable local ops (most of them): seconds per voxel = a base + a cost per tap of the halo, fitted
    # from two Gaussians; the planner's model is linear in the halo too, but its slope is not this machine's
    fit = []
    for sigma in (1, 4):
        p = load({"convpipe": 1, "input": {"url": "calibration.zarr"}, "steps": [{"gaussian": {"sigma": sigma}}]})
        run = apply(p, arr, [bside, bside])
        run()
        halo = sum(lo + hi for lo, hi in _bound(p, bside).passes[0].halo.values())
        secs = max(_own(run, 3) - call, 0.0)
        fit.append((halo, secs / arr.size * 1e9))
        if sigma == 1:  # other local ops (direct kernels, rank filters): the model times this factor
            model = _bound(p, bside)
            out["factor_local"] = max(secs, 1e-9) / max(sum(pp.est_seconds_per_task for pp in model.passes), 1e-9)
    (h1, n1), (h2, n2) = fit
    out["separable_tap_ns"] = max((n2 - n1) / (h2 - h1), 0.0)
    out["separable_base_ns"] = max(n1 - out["separable_tap_ns"] * h1, 0.0)
    # on the side^2 plane: a direct 9x9 on 4x the voxels was a tenth of the calibration's time
    out.update(_direct_and_gemm(apply, np.ascontiguousarray(arr[:side, :side]), side, call, rng))
    out.update(_thread_speedup(arr))
    out.update(_envelope_costs(rng))
    # one more task: the point op on 16 tiles of a quarter plane against one tile of it
    quarter = arr[: side // 2, : side // 2].copy()
    q = side // 2
    many = _own(apply(point, quarter, [q // 4, q // 4]), 2)
    one = _own(apply(point, quarter, [q, q]), 2)
    out["task_s"] = max((many - one) / 15, 1e-5)
    # one more op in a tile's chain: its gathers, index plans and checks, whatever its arithmetic (a
    # diffusion of 20 explicit steps on 128 x 128 tiles spent 2/3 of its run there, and its estimate was 0.45x)
    small = arr[:16, :16].copy()
    chains = [load({"convpipe": 1, "input": {"url": "calibration.zarr"},
                    "steps": [{"diffusion": {"steps": n, "dt": 0.2, "axes": "yx"}}]}) for n in (2, 20)]
    t2, t20 = (_own(apply(c, small, [16, 16]), 3) for c in chains)
    out["op_s"] = max((t20 - t2) / 18, 0.0)
    import tempfile  # only to calibrate: explain need not load it (shutil, random, bz2, ...)

    with tempfile.TemporaryDirectory(prefix="convpipe-calibration-") as tmp:
        import zarr

        # a quarter plane in one chunk: what every run pays whatever its size. On a 1024^2 array in 16
        # chunks, the one task's serial reads and writes (which the I/O rates, measured on whole-array
        # assignments, do not model) were most of what was left, and every small run's estimate paid them
        big = plane[: side // 2, : side // 2].copy()
        url = os.path.join(tmp, "io.zarr")
        out.update(_io_costs(zarr, tmp))
        z = zarr.create_array(url, shape=big.shape, chunks=big.shape, dtype=big.dtype)
        z[...] = big
        # a whole tiny run: what every run pays whatever its size (threads, one tile)
        spec = {"convpipe": 1, "input": {"url": url}, "output": {"url": os.path.join(tmp, "o.zarr"), "overwrite": True},
                "steps": [_PROBES["point"]], "execution": {"cluster": "threads", "tile": list(big.shape)}}
        # warmed first: a process's first run imports the run machinery (0.03 s of CPU here), which a
        # later run and the benchmark's timed runs do not pay; best of two after it
        tiny_run = lambda: run_pipeline(load(spec), bus=EventBus([]))  # noqa: E731
        tiny_run()
        fixed = _best(tiny_run, 2)
        compute = big.size * 1e-9 * 3.0 * out["factor_point"]  # the probe's own work, taken out again
        io = (big.nbytes / out["read_bytes_per_s"] + 4 * big.size / out["write_bytes_per_s"]  # float32 out
              + out["read_chunk_s"] + out["write_chunk_s"])
        out["run_fixed_s"] = max(fixed - compute - io, 0.0)
        out.update(_first_run_costs({**spec, "steps": [{"gaussian": {"sigma": 1}}],
                                     "output": {**spec["output"], "url": os.path.join(tmp, "first.zarr")}}))
        # one more tile of a run: its task, its chunk read and written, its record in the manifest; the
        # same plane in 16 tiles of 16 chunks against the one tile above (what the task and chunk costs
        # measured on bare graphs and arrays leave out)
        q = side // 8
        url16 = os.path.join(tmp, "io16.zarr")
        zarr.create_array(url16, shape=big.shape, chunks=(q, q), dtype=big.dtype)[...] = big
        spec16 = {**spec, "input": {"url": url16}, "output": {**spec["output"], "url": os.path.join(tmp, "o16.zarr")},
                  "execution": {"cluster": "threads", "tile": [q, q]}}
        sixteen = _best(lambda: run_pipeline(load(spec16), bus=EventBus([])), 2)
        out["tile_s"] = max((sixteen - fixed) / 15 - out["read_chunk_s"] - out["write_chunk_s"] - 2 * out["task_s"], 0.0)
        # an OME output with one pyramid level, the same tiny run: what a level and its metadata cost
        ome = {**spec, "output": {**spec["output"], "url": os.path.join(tmp, "p.zarr"), "ome": True, "pyramid": 1}}
        ome_run = lambda: run_pipeline(load(ome), bus=EventBus([]))  # noqa: E731
        ome_run()  # warm: the OME writer's imports
        out["pyramid_level_s"] = max(_best(ome_run, 1) - fixed, 0.0)
        out.update(_table_costs(tmp, rng))
    if "process_bytes" not in out:  # the child could not tell: this process, which may hold more than a run's
        try:
            import psutil

            out["process_bytes"] = float(psutil.Process().memory_info().rss)
        except Exception:  # noqa: BLE001 - no psutil, or a platform without RSS
            out["process_bytes"] = 0.0
    out["seconds"] = time.perf_counter() - start
    return out


def _direct_and_gemm(apply: Callable, arr: Any, bside: int, call: float, rng: Any) -> dict[str, float]:
    """A direct kernel as a base plus a cost per tap (3x3 and 9x9 correlations, fitted), and the cost of a
    multiply-add of the matrix products ``conv_layer`` runs (its im2col shape: many rows, few columns)."""
    import numpy as np

    fit = []
    for k in (3, 9):
        kern = rng.normal(0, 1, (k, k)).round(3).tolist()
        p = load({"convpipe": 1, "input": {"url": "calibration.zarr"},
                  "steps": [{"correlate": {"kernel": kern, "method": "direct"}}]})
        run = apply(p, arr, [bside, bside])
        run()
        fit.append((k * k, max(_own(run, 2) - call, 0.0) / arr.size * 1e9))
    (t1, n1), (t2, n2) = fit
    tap = max((n2 - n1) / (t2 - t1), 0.0)
    # an FFT correlation as a cost per call (plans, padding to a fast length, the kernel's transform, crops)
    # plus one per voxel, fitted from a 16x16 kernel on blocks of 128^2 and bside^2: on blocks as small as
    # the examples' tiles (143^2) the call was 4x the voxels' cost, and the butterworth probe's cost per
    # voxel (one rfft2 pair of a plane) was a third of a correlation's on a stack of planes
    kern = rng.normal(0, 1, (16, 16)).round(3).tolist()
    p = load({"convpipe": 1, "input": {"url": "calibration.zarr"},
              "steps": [{"correlate": {"kernel": kern, "method": "fft"}}]})
    # the op itself on blocks padded by its halo, not a one-tile graph: the graph's halo padding and assembly
    # (~0.7 ms at 128^2, beyond the 8x8 graph's `call`) came out as a cost per FFT call, which a bank pays
    # once per kernel: cnn-bank's 32 kernels on 143^2 blocks took 0.21 ms each, estimated 0.98
    pts = []
    for s in (bside // 4, bside):  # 128^2 and 512^2 at the default side
        op = _bound(p, s).passes[0].ops[0]
        block = np.ascontiguousarray(np.pad(arr[:s, :s], [op.halo()[a] for a in "yx"], mode="reflect"))
        op.apply(block)
        pts.append((s * s, _own(lambda op=op, block=block: op.apply(block), 3)))
    (v1, s1), (v2, s2) = pts
    fft_ns = max((s2 - s1) / (v2 - v1), 0.0) * 1e9
    fft_call = max(s1 - fft_ns * 1e-9 * v1, 0.0)
    a = rng.random((bside * bside // 4, 72), dtype=np.float32)
    w = rng.random((72, 8), dtype=np.float32)
    a @ w
    mac = _best(lambda: a @ w, 3) / (a.shape[0] * 72 * 8) * 1e9
    return {"direct_tap_ns": tap, "direct_base_ns": max(n1 - tap * t1, 0.0), "mac_ns": mac, "fft_call_s": fft_call,
            "fft_ns": fft_ns}


def _envelope_costs(rng: Any) -> dict[str, float]:
    """``distance_transform``'s lower envelope (every pass after the first): a Python loop over a line's
    positions, vectorised across the block's lines, so a tile costs ``positions x (envelope_step_s +
    lines x envelope_line_s)``, fitted from 16 and 256 lines of 256 positions. Priced as elementwise passes
    it was 4x too cheap on the coins' 192-line tiles (770 ns a voxel) and 2x too dear on 512 lines (280)."""
    import numpy as np

    from .ops.objects.distance import envelope_sq

    f = np.round(rng.random((256, 256)) * 100.0)
    t16 = _own(lambda: envelope_sq(f[:16], 1.0), 3)
    t256 = _own(lambda: envelope_sq(f, 1.0), 3)
    line = max((t256 - t16) / (240 * 256), 0.0)
    return {"envelope_line_s": line, "envelope_step_s": max(t16 / 256 - 16 * line, 0.0)}


def _thread_speedup(arr: Any, repeat: int = 5) -> dict[str, float]:
    """How many tiles' compute the threads cluster gets done at once, on small tiles and on large ones: a chain
    of the engines' filters (gaussian, then Sobel), wall time on one thread over wall time on every core, in
    [1, cores], with the voxels of each probe's planes (what decides the overlap: :func:`convpipe.estimate.
    compute_workers`).

    Wall time, unlike the other probes: what is measured is the overlap. The estimate had assumed the workers'
    tiles overlap fully; on this 2-core machine tiles of a millisecond did not overlap at all (OpenCV's calls on
    small planes and the engines' finiteness checks ran one at a time: 2 workers took 1.0-1.4x the wall time of
    1), so every threads estimate of a compute-bound example was half the run (diffusion, coins-distance:
    0.44); tiles of tens of milliseconds (the benchmark's) overlapped 1.7x, and one overlap for both made their
    estimates 2.2x the run.

    One thread and every thread take turns, ``repeat`` rounds, and each keeps its best: measured one after the
    other (best of 3 each, 4 planes), a burst of load on the second half (the kernel writing back a run's
    output) cached an overlap of 1.2 where the quiet machine gives 1.8-2.0, and every threads estimate of
    this boot was 2.6x its run. A quiet 2-core machine gave 1.49-2.07 that way, 1.83-1.93 interleaved with
    8 planes; a machine with one core busy elsewhere 1.1-1.4 (what a run there gets).

    Returns
    -------
    dict
        ``thread_speedup`` and ``thread_plane`` (``arr`` in tiles of 128 x 128), ``thread_speedup_large`` and
        ``thread_plane_large`` (a stack of copies of ``arr``, a plane a tile).
    """
    import dask.array as da
    import numpy as np

    from .apply_tables import apply_array

    cores = max(os.cpu_count() or 1, 1)
    p = load({"convpipe": 1, "input": {"url": "calibration.zarr"},
              "steps": [{"gaussian": {"sigma": 2}}, {"sobel": {}}]})
    a = np.ascontiguousarray(arr)
    # the small probe's planes are the examples' (128 x 128), the large one's a megavoxel
    big = np.ascontiguousarray(np.broadcast_to(a, (max(8, min(2 * cores, 16)),) + a.shape))
    out: dict[str, float] = {}
    for suffix, x, axes, tile in (("", a, "yx", [min(a.shape[0], 128), min(a.shape[1], 128)]),
                                  ("_large", big, "zyx", [1, big.shape[1], big.shape[2]])):
        graph = apply_array(p, da.from_array(x, chunks=tuple(tile), name=False), axes=axes, tile=tile)

        def wall(n: int, graph: Any = graph) -> float:
            t0 = time.perf_counter()
            graph.compute(scheduler="threads", num_workers=n)
            return time.perf_counter() - t0

        wall(cores)  # warm: kernel tables, the pool's threads
        one = every = math.inf
        for _ in range(repeat):
            one = min(one, wall(1))
            every = min(every, wall(cores)) if cores > 1 else one
        out[f"thread_speedup{suffix}"] = float(min(max(one / max(every, 1e-9), 1.0), cores))
        out[f"thread_plane{suffix}"] = float(tile[-1] * tile[-2])
    return out


def _table_costs(tmp: str, rng: Any) -> dict[str, float]:
    """Parquet tables as runs write them (:class:`convpipe.tables.TableSink`): a part of 50 rows per tile,
    and the merge at the end as a fixed cost plus one per part (fitted from 1 and 5 parts)."""
    from .tables import TableSink

    cols = {"y": rng.integers(0, 1000, 50), "x": rng.integers(0, 1000, 50), "value": rng.random(50)}
    times = {}
    for n in (1, 5):
        sink = TableSink(os.path.join(tmp, f"t{n}.parquet"))
        t = time.process_time()
        for i in range(n):
            sink.write_part(f"tile-{i}", cols)
        part = (time.process_time() - t) / n
        times[n] = _best(lambda sink=sink: sink.finalize({"calibration": True}), 1)
    per = max((times[5] - times[1]) / 4, 0.0)
    return {"table_part_s": part, "table_merge_part_s": per, "table_fixed_s": max(times[1] - per, 0.0)}


# A fresh process's first run against its second, on the clock a run reports (``elapsed``: from the plan's
# execution on, after the input is opened and planned): the engines, OpenCV, scipy.ndimage and dask's threaded
# scheduler load on a first run's clock. One process, so one sample: wall time, as the run's own clock is.
_FIRST_RUN = """
import importlib, json, sys, time
from convpipe.calibrate import load
from convpipe.run.core import run_pipeline
from convpipe.run.events import EventBus
spec, loads = json.loads(sys.argv[1]), sys.argv[2:]
first, second = (run_pipeline(load(spec), bus=EventBus([])).elapsed for _ in range(2))
out = {"first_run_s": max(first - second, 0.0)}
try:  # a run's process: the interpreter and what a run loads (not the calibrating process's own data)
    import psutil
    out["process_bytes"] = float(psutil.Process().memory_info().rss)
except Exception:
    pass
for m in loads:  # what a plan that needs it pays on its first use (0 if a run above loaded it already)
    t = time.perf_counter()
    importlib.import_module(m)
    out["load_s:" + m] = time.perf_counter() - t
print(json.dumps(out))
"""


def _first_run_costs(spec: dict) -> dict[str, float]:
    """What the first run in a process pays that later runs do not (``convpipe run`` is always a first run:
    0.2 s of a 0.22 s run of the edges example, against an estimate of 0.03 s without it), and what loading
    each library of ``estimate.LOADS`` costs a plan that needs it (scipy.signal ~0.6 s); zeros when the probe
    cannot run."""
    import json
    import subprocess
    import sys

    zeros = {"first_run_s": 0.0, **{f"load_s:{m}": 0.0 for m in _estimate.LOADS}}
    try:
        r = subprocess.run([sys.executable, "-c", _FIRST_RUN, json.dumps(spec), *_estimate.LOADS],
                           capture_output=True, text=True, timeout=120, check=True)
        got = json.loads(r.stdout.strip().splitlines()[-1])
        out = {k: max(float(got.get(k, 0.0)), 0.0) for k in zeros}
        if float(got.get("process_bytes", 0.0)) > 0:
            out["process_bytes"] = float(got["process_bytes"])
        return out
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return zeros


def _io_costs(zarr: Any, tmp: str) -> dict[str, float]:
    """Zarr's read and write cost as a cost per chunk plus a rate, fitted from two chunkings of one array.

    One rate from a small array in small chunks was 4x too slow for the benchmark's 16 MiB chunks (zarr's
    cost per chunk dominated it). Written: a float32 image like a filter's output (the probe image under a
    Gaussian); read: the uint16 probe image as an input. Both 1024 x 1024 in chunks of 128^2 and 512^2, and
    made at that size, not tiled from the probes' plane: zstd found the tiles' repeats, and the writes it timed (a
    uniform filter of 2 x 2 copies, ~125 MB/s, the geometric mean with a noisy image's ~260) were a third
    as fast as a filter output of the same values without repeats (~390 MB/s, the benchmark's light output
    330-400 in its 16 MiB chunks): the light job's estimate was 2.3x its run, most of it the writes.
    """
    import numpy as np

    from scipy import ndimage

    n = 1024
    img = _probe_plane(n, np.random.default_rng(0))
    values = {"write": ndimage.gaussian_filter(img.astype(np.float32), 2), "read": img}
    fit: dict[str, list[tuple[int, float]]] = {"write": [], "read": []}
    for c in (128, 512):
        for what, v in values.items():
            url = os.path.join(tmp, f"{what}-{c}.zarr")
            z = zarr.create_array(url, shape=v.shape, chunks=(c, c), dtype=v.dtype)

            def write(z=z, v=v):
                z[...] = v

            secs = _best(write, 2)
            if what == "read":
                secs = _best(lambda url=url: zarr.open_array(url, mode="r")[...], 2)
            fit[what].append(((n // c) ** 2, secs))
    out = {}
    for what, [(n1, t1), (n2, t2)] in fit.items():
        per_chunk = max((t1 - t2) / (n1 - n2), 0.0)
        out[f"{what}_chunk_s"] = per_chunk
        out[f"{what}_bytes_per_s"] = values[what].nbytes / max(t2 - per_chunk * n2, 1e-3 * t2)
    return out


def _probe_plane(n: int, rng: Any) -> Any:
    """The probes' uint16 image: a smooth pattern near 1000 with noise, ``n`` x ``n``."""
    import numpy as np

    yy, xx = np.mgrid[0:n, 0:n]
    return (1000 + 300 * np.sin(yy / 37.0) * np.cos(xx / 23.0) + rng.normal(0, 20, (n, n))).astype(np.uint16)


def _bound(p: Any, side: int) -> Any:
    import numpy as np

    from .plan import ArrayInfo, make_plan

    return make_plan(p.steps, ArrayInfo((side, side), np.dtype("float32"), (side, side), "yx"),
                     tile={"y": side, "x": side})


# --------------------------------------------------------------------------- estimating


_estimate.measure_costs = measure_costs  # what convpipe.estimate.calibration() runs when no cache matches
