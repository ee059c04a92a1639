"""The automatic tile: the candidate that obeys the planner's own warnings, scored over every legal tile.

A tile is made of whole output chunks along each axis (whole extents along the axes an op needs whole). Its
cost terms -- read amplification (tile + halo over tile), memory per task and seconds per task -- factor by
axis: the halo an axis needs depends only on that axis (:func:`convpipe.tiles.backward` runs axis by axis),
so the voxels a tile reads, and the largest intermediate block of the chain, are products of per-axis run
lengths. The chooser measures each axis's options once and scores every combination with numpy, which keeps
an 8 TB plan (hundreds of candidates) and a 5-D one (tens of thousands) within milliseconds.

The choice, in order of what matters most:

1. legal: the task fits a worker's memory (otherwise the plan is refused, as before);
2. as few of the planner's warnings as any legal tile allows (read amplification > 1.5, tasks < 20 ms);
3. half a worker's memory or less (headroom for the estimate's error), where a tile with as few warnings has it;
4. enough tiles to keep the workers busy (4 per worker -- 2 where every task is tiny -- or as many as any
   candidate gives);
5. the least estimated wall time of the pass (rounds of tasks over the workers, each task's compute on its
   tile and halo plus a fixed overhead), and among tiles within 5% of it the least memory.
"""

from __future__ import annotations

import itertools
import math
import numpy as np

from .tiles import backward, runs_len

#: The planner's warning thresholds (plan.make_plan words the warnings; the chooser avoids them).
MAX_READ_AMPLIFICATION = 1.5
MIN_TASK_SECONDS = 0.02
#: Most combinations scored; beyond it the axes with most options keep every other option.
MAX_CANDIDATES = 40_000
#: Below this many whole-chunk multiples along an axis, every multiple is a candidate; above, powers of two.
ALL_MULTIPLES_UP_TO = 24


# Rough single-core costs in ns per voxel, measured on this project's CI machine class (2 cores).
# They only steer the tile size and the time estimate in explain; nothing depends on them for exactness.
_COST_NS = {"point": 1.0, "local": 3.0, "full": 40.0, "global": 2.0}


def op_model_ns(op) -> float:
    """The planner's model of one op's nanoseconds per input voxel: its declared ``cost_ns`` (label: two
    scipy.ndimage.label passes), else its kind's cost times its kernel's weight."""
    return op.cost_ns or _COST_NS.get(op.kind, 3.0) * _op_weight(op)


def ns_per_voxel(ops) -> float:
    """The planner's model of a pass's nanoseconds per input voxel (it steers the tile; the estimate corrects it)."""
    return sum(op_model_ns(op) for op in ops) + 2.0


def _op_weight(op) -> float:
    h = op.halo()
    if not h:
        return 1.0
    if op.method() in ("separable", "fft"):
        return 1.0 + sum(lo + hi for lo, hi in h.values()) / 8.0
    return float(np.prod([lo + hi + 1 for lo, hi in h.values()])) / 4.0


def tile_costs(ops, t, ext, halo, full, inp, compute, out_axes, ns_per_voxel):
    """(read amplification, memory per task in bytes, seconds per task) of tile ``t`` (a middle tile)."""
    core = {a: ((0, min(t[a], ext[-1][a])),) for a in out_axes}
    mid = {}
    for a in out_axes:  # a tile in the middle of the array: shift the core away from the edges when it can
        n = ext[-1][a]
        s = max(0, min(n - t[a], (n // 2 // t[a]) * t[a])) if a not in full else 0
        mid[a] = ((s, min(s + t[a], n)),)
    targets = backward(ops, mid, ext)
    need = targets[0]
    core_vox = np.prod([runs_len(core[a]) for a in out_axes], dtype=np.float64)
    in_vox = np.prod([runs_len(need[a]) for a in inp.axes], dtype=np.float64)
    # the input voxels a tile stands for: its own size, scaled where the pass changes an axis' length (strides)
    core_in = np.prod([min(t[a] * ext[0][a] / ext[-1][a] if a in t and a in ext[-1] else ext[0][a], ext[0][a])
                       for a in inp.axes], dtype=np.float64)
    amp = float(in_vox / max(core_in, 1))
    biggest = max((np.prod([runs_len(tg.get(a, ((0, 1),))) for a in tg], dtype=np.float64) for tg in targets),
                  default=in_vox)
    mem = int(in_vox * inp.dtype.itemsize + biggest * compute.itemsize * 4 + core_vox * 8)
    return amp, mem, float(in_vox * ns_per_voxel * 1e-9)


def axis_options(n: int, chunk: int) -> list[int]:
    """Tile sizes along an axis of ``n`` in chunks of ``chunk``: whole-chunk multiples, capped at ``n``."""
    chunk = max(1, min(chunk, n))
    k = -(-n // chunk)
    if k <= ALL_MULTIPLES_UP_TO:
        mult = range(1, k + 1)
    else:
        mult = sorted({2 ** i for i in range(k.bit_length() + 1) if 2 ** i < k} | {3 * 2 ** i for i in range(k.bit_length())
                                                                                 if 3 * 2 ** i < k} | {k})
    return sorted({min(m * chunk, n) for m in mult})


def _per_axis(ops, a, size, ext, full, n_levels):
    """Run lengths of axis ``a`` at every level of the chain (1 where the level lacks the axis) for a middle tile."""
    n = ext[-1][a]
    s = max(0, min(n - size, (n // 2 // size) * size)) if a not in full else 0
    targets = backward(ops, {a: ((s, min(s + size, n)),)}, ext)
    return [runs_len(tg[a]) if a in tg else 1 for tg in targets[:n_levels]]


def choose_tile(ops, out_axes, exts, chunks, halo, full, compute, workers, mem_budget, inp, ns_per_voxel,
                task_overhead_s) -> dict[str, int]:
    """The automatic tile of one pass (see the module's docstring for the order of preferences)."""
    ext = exts[-1]
    opts = {a: [ext[a]] if a in full else axis_options(ext[a], chunks[a]) for a in out_axes}
    while math.prod(len(v) for v in opts.values()) > MAX_CANDIDATES:
        a = max(opts, key=lambda a: len(opts[a]))
        v = opts[a]
        opts[a] = sorted(set(v[::2]) | {v[-1]})
    g = score_grid(ops, opts, exts, full, compute, inp, ns_per_voxel)
    amp, mem, secs, n_tiles = g["amp"], g["mem"], g["secs"], g["n_tiles"]
    axes = list(opts)
    legal = mem <= mem_budget
    if not legal.any():  # nothing fits: the smallest tile, which the plan then refuses with its own message
        return {a: opts[a][0] for a in axes}
    warn = (amp > MAX_READ_AMPLIFICATION).astype(int) + (secs < MIN_TASK_SECONDS).astype(int)
    key_warn = np.where(legal, warn, 10 ** 6)
    ok = legal & (key_warn == key_warn.min())
    roomy = ok & (mem <= mem_budget / 2)
    if roomy.any():
        ok = roomy
    # 4 tiles per worker keep them busy and reading while others compute; where every task is tiny anyway
    # (a small array) per-task overhead dominates, and two per worker (one computing while another reads or
    # writes) are enough
    per_worker = 2 if (secs[ok] < MIN_TASK_SECONDS).all() else 4
    busy = ok & (n_tiles >= min(per_worker * max(workers, 1), n_tiles[ok].max()))
    if busy.any():
        ok = busy
    # among what is left: the least wall time of the pass, rounds of tasks over the workers (fewer, larger
    # tasks read less halo and pay less overhead; too few leave workers idle at the end), and among tiles
    # within 5% of that, the least memory (smaller tasks stream better and lose less to a failure)
    wall = np.ceil(n_tiles / max(workers, 1)) * (secs + task_overhead_s)
    near = ok & (wall <= 1.05 * wall[ok].min())
    order = np.lexsort((np.where(near, amp, np.inf).ravel(), np.where(near, mem, np.inf).ravel()))
    idx = np.unravel_index(order[0], amp.shape)
    return {a: opts[a][j] for a, j in zip(axes, idx)}


def score_grid(ops, opts: dict[str, list[int]], exts, full, compute, inp, ns_per_voxel) -> dict[str, np.ndarray]:
    """Read amplification, memory, seconds per task and tile count of every combination of ``opts``.

    Arrays of shape ``[len(opts[a]) for a in opts]``; each entry equals :func:`tile_costs` of that tile.
    """
    ext = exts[-1]
    axes = list(opts)
    levels = len(ops) + 1
    # which axes each level of the chain has (the same for every tile): a level's block is their product
    probe = backward(ops, {a: ((0, 1),) for a in axes}, exts)
    present = [set(tg) for tg in probe]
    grids = [np.array([_per_axis(ops, a, s, exts, full, levels) for s in opts[a]], dtype=np.float64)
             for a in axes]
    shape = [len(opts[a]) for a in axes]

    def expand(v, i):  # a per-axis vector, broadcastable over the candidate grid
        sh = [1] * len(axes)
        sh[i] = shape[i]
        return np.asarray(v, dtype=np.float64).reshape(sh)

    in_vox, core_in, core_vox, n_tiles = (np.ones(shape) for _ in range(4))
    for i, a in enumerate(axes):
        sizes = np.array(opts[a], dtype=np.float64)
        core_vox = core_vox * expand(sizes, i)
        n_tiles = n_tiles * expand([math.ceil(ext[a] / s) for s in opts[a]], i)
        if a in inp.axes:
            in_vox = in_vox * expand(grids[i][:, 0], i)
            n0 = exts[0].get(a, ext[a])
            core_in = core_in * expand(np.minimum(sizes * n0 / ext[a], n0), i)  # scaled by a stride
    biggest = np.zeros(shape)
    for lv in range(levels):
        blk = np.ones(shape)
        for i, a in enumerate(axes):
            if a in present[lv]:
                blk = blk * expand(grids[i][:, lv], i)
        biggest = np.maximum(biggest, blk)
    return {"amp": in_vox / np.maximum(core_in, 1),
            "mem": in_vox * inp.dtype.itemsize + biggest * compute.itemsize * 4 + core_vox * 8,
            "secs": in_vox * ns_per_voxel * 1e-9, "n_tiles": n_tiles}


def candidates(out_axes, exts, chunks, full):
    """Every candidate tile the chooser scores (for tests and explain's diagnostics), as dicts."""
    ext = exts[-1]
    opts = [[ext[a]] if a in full else axis_options(ext[a], chunks[a]) for a in out_axes]
    for combo in itertools.product(*opts):
        yield dict(zip(out_axes, combo))


__all__ = ["choose_tile", "score_grid", "tile_costs", "axis_options", "candidates"]
