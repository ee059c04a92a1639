"""Exact halos for fused chains of local ops, on any tiling.

Positions along an axis are kept as *runs*: sorted, disjoint ``(start, stop)`` intervals of global
indices. For a tile, the planner walks the chain backwards: the last op must produce the tile's core; an
op needing a halo ``(lo, hi)`` needs its input at the core dilated by the halo, with positions outside the
array mapped *by that op's own boundary mode* (reflect, mirror, nearest, wrap; constant needs nothing).
Wrap therefore pulls in runs from the far end of the array, and a halo larger than a chunk or than the
array just yields longer runs. Walking forward, each op gets its input gathered into an exactly padded
block (a view when the padding is a plain slice), runs its engine, and keeps the valid part. The result
equals the whole-array computation for every mode and every chain, because every op sees exactly the
values the whole-array reference would see.

In float32, a run of ops that declare how they answer a constant shift (``Op.shift_gain``) computes on the
block minus its mid-range, the offset's contribution added back in float64 (:mod:`convpipe.centring`): on
offset data (a uint16 camera near 30 000) the float32 sums of derivative and zero-sum kernels would otherwise
lose the result's digits to cancellation.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

Runs = tuple[tuple[int, int], ...]


def merge_runs(runs: Iterable[tuple[int, int]]) -> Runs:
    out: list[list[int]] = []
    for s, e in sorted(r for r in runs if r[1] > r[0]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return tuple((s, e) for s, e in out)


def runs_to_array(runs: Runs) -> np.ndarray:
    if not runs:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in runs])


def runs_len(runs: Runs) -> int:
    return sum(e - s for s, e in runs)


def _array_to_runs(p: np.ndarray) -> Runs:
    # np.unique, written out: numpy 2.4's unique asks np.ma.is_masked, and importing numpy.ma on the first
    # plan cost explain ~15 ms of start-up (issue 17 item 5)
    p = np.sort(np.asarray(p).ravel())
    if p.size == 0:
        return ()
    p = p[np.concatenate(([True], p[1:] != p[:-1]))]
    breaks = np.nonzero(np.diff(p) != 1)[0]
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks + 1, [p.size]])
    return tuple((int(p[s]), int(p[e - 1]) + 1) for s, e in zip(starts, ends))


def map_index(p: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map global positions (possibly outside [0, n)) to in-array positions, as scipy.ndimage's modes.

    Returns -1 where the value is the constant ``cval`` (mode ``constant``).
    """
    p = np.asarray(p, dtype=np.int64)
    if n <= 0:
        return np.full(p.shape, -1, dtype=np.int64)
    inside = (p >= 0) & (p < n)
    if inside.all():
        return p
    if mode == "constant":
        return np.where(inside, p, -1)
    if mode == "nearest":
        return np.clip(p, 0, n - 1)
    if mode == "wrap":
        return np.mod(p, n)
    if mode == "reflect":  # d c b a | a b c d | d c b a   (half-sample symmetric, period 2n)
        q = np.mod(p, 2 * n)
        return np.where(q >= n, 2 * n - 1 - q, q)
    if mode == "mirror":  # d c b | a b c d | c b a      (whole-sample symmetric, period 2n - 2)
        if n == 1:
            return np.zeros_like(p)
        q = np.mod(p, 2 * n - 2)
        return np.where(q >= n, 2 * n - 2 - q, q)
    raise ValueError(f"unknown mode {mode!r}")


_PERIOD = {"wrap": 1, "reflect": 2, "mirror": 2}


def dilate(runs: Runs, lo: int, hi: int, n: int, mode: str) -> Runs:
    """Positions an op with halo (lo, hi) and boundary ``mode`` reads to produce ``runs``."""
    out: list[tuple[int, int]] = []
    for s, e in runs:
        a, b = s - lo, e + hi
        out.append((max(a, 0), min(b, n)))
        for u, v in ((a, min(b, 0)), (max(a, n), b)):
            if v <= u or mode == "constant":
                continue
            if mode == "nearest":
                out.append((0, 1) if u < 0 else (n - 1, n))
            # a face's reflection within one period is one interval: [u, v) mirrored about -1/2 or n - 1/2
            # (reflect), 0 or n - 1 (mirror); arithmetic, where the index arrays cost ~30 us a face, per op
            # and axis of every tile the graph plans
            elif mode == "reflect" and u >= -n and v <= 2 * n:
                out.append((-v, -u) if u < 0 else (2 * n - v, 2 * n - u))
            elif mode == "mirror" and n > 1 and u >= 1 - n and v <= 2 * n - 1:
                out.append((1 - v, 1 - u) if u < 0 else (2 * n - 1 - v, 2 * n - 1 - u))
            elif v - u >= 2 * n:
                out.append((0, n))  # the extension covers a whole period: everything is read
            else:
                out.extend(_array_to_runs(map_index(np.arange(u, v), n, mode)))
    return merge_runs(out)


def strided_need(runs: Runs, stride: int, lo: int, hi: int, n: int, mode: str) -> Runs:
    """Positions an op reads to produce ``runs`` when output voxel i reads the window [i*stride - lo,
    i*stride + hi] (outside [0, n) mapped by ``mode``). Windows shorter than the stride leave gaps, which
    are not read."""
    k = lo + hi + 1
    if k >= stride:  # consecutive windows touch or overlap: one interval per run
        return dilate(tuple((a * stride, (b - 1) * stride + 1) for a, b in runs), lo, hi, n, mode)
    pos = np.concatenate([(np.arange(a, b, dtype=np.int64)[:, None] * stride - lo + np.arange(k)).ravel()
                          for a, b in runs]) if runs else np.zeros(0, np.int64)
    m = map_index(pos, n, mode)
    return _array_to_runs(m[m >= 0])


def _gather_plan(runs: Runs, lo: int, hi: int, stride: int, n: int, mode: str):
    """What the forward walk gathers along one axis for output ``runs`` of an op with window (lo, hi) and
    ``stride``: global positions (mapped by ``mode``; -1 = cval), which of them a window reads (None: all),
    the indices of the op's output that are real (the rest lie between two runs), and the global
    coordinate of every output index (-1 between runs).

    Each run's input interval is gathered whole; between two runs it is padded to a multiple of the stride,
    so the op's output (the valid, strided result of the concatenation) starts every run on an output index.
    """
    k = lo + hi + 1
    pieces, used, vsel, coords, off = [], [], [], [], 0
    for j, (s, e) in enumerate(runs):
        cnt = e - s
        length = (cnt - 1) * stride + k
        plen = length if j == len(runs) - 1 else -(-length // stride) * stride
        pieces.append(map_index(np.arange(s * stride - lo, s * stride - lo + plen), n, mode))
        if stride > 1:
            u = np.zeros(plen, dtype=bool)
            u[(np.arange(cnt)[:, None] * stride + np.arange(k)).ravel()] = True
            used.append(u)
        o = off // stride
        vsel.append(np.arange(o, o + cnt))
        coords.append(np.full(plen // stride if j < len(runs) - 1 else cnt, -1, np.int64))
        coords[-1][:cnt] = np.arange(s, e)
        off += plen
    want = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    mask = np.concatenate(used) if used else None
    return want, mask, np.concatenate(vsel) if vsel else np.zeros(0, np.int64), \
        np.concatenate(coords) if coords else np.zeros(0, np.int64)


# --------------------------------------------------------------------------- the chain


def backward(ops: Sequence[Any], core: dict[str, Runs], extents: Sequence[dict[str, int]]) -> list[dict[str, Runs]]:
    """Runs per axis that each op must *produce*; element ``len(ops)`` is what must be read.

    ``extents[i]`` maps axis letters to lengths of op i's input (``extents[len(ops)]`` the final output).
    Returns ``need`` with ``need[i]`` = runs op i must output (``need[-1]`` = core) and ``need_in`` = input.
    """
    targets: list[dict[str, Runs]] = [dict() for _ in range(len(ops) + 1)]
    targets[len(ops)] = dict(core)
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        out_t = targets[i + 1]
        n_in = extents[i]
        halo = op.halo()
        strides = op.strides()
        full = op.full_axes()
        need: dict[str, Runs] = {}
        for a in op.in_axes:
            if a not in out_t:  # backward() may run one axis at a time: axes are independent
                continue
            if a in full:
                need[a] = ((0, n_in[a]),)
            elif a in strides:
                lo, hi = halo.get(a, (0, 0))
                need[a] = strided_need(out_t[a], strides[a], lo, hi, n_in[a], op.boundary(a)[0])
            elif a in halo:
                lo, hi = halo[a]
                need[a] = dilate(out_t[a], lo, hi, n_in[a], op.boundary(a)[0])
            else:
                need[a] = out_t[a]
        targets[i] = need
    # targets[i] is what op i needs as input == what op i-1 must output
    return targets


def _take(u: np.ndarray, axis: int, idx: np.ndarray) -> np.ndarray:
    """np.take that returns a view when ``idx`` is a contiguous increasing range.

    A range with a few other indices at its ends (the boundary mode's padding at an array edge) is copied
    as one slice plus the ends: np.take along the last axis measured 2.5x the cost of a slice copy (13 ms
    against 5 ms on a 24 x 556 x 556 float32 block, 22 reflected voxels), and every tile at an array edge
    paid it per op and axis.
    """
    n = idx.size
    if n and idx[0] >= 0 and idx[-1] - idx[0] == n - 1 and (n < 2 or np.all(np.diff(idx) == 1)):
        if idx[0] == 0 and n == u.shape[axis]:
            return u
        sl = [slice(None)] * u.ndim
        sl[axis] = slice(int(idx[0]), int(idx[-1]) + 1)
        return u[tuple(sl)]
    if n < 8 or not isinstance(u, np.ndarray):
        return np.take(u, idx, axis=axis)
    # the longest run of consecutive increasing indices: copied as a slice, the rest by take
    step = np.diff(idx) == 1
    brk = np.flatnonzero(~step)  # run boundaries: a run ends after each break
    starts = np.concatenate([[0], brk + 1])
    ends = np.concatenate([brk + 1, [n]])
    j = int(np.argmax(ends - starts))
    a, b = int(starts[j]), int(ends[j])
    if b - a < n // 2:
        return np.take(u, idx, axis=axis)
    shape = list(u.shape)
    shape[axis] = n
    out = np.empty(shape, dtype=u.dtype)
    dst = [slice(None)] * u.ndim
    src = [slice(None)] * u.ndim
    dst[axis], src[axis] = slice(a, b), slice(int(idx[a]), int(idx[a]) + b - a)
    out[tuple(dst)] = u[tuple(src)]
    for lo, hi in ((0, a), (b, n)):
        if hi > lo:
            dst[axis] = slice(lo, hi)
            out[tuple(dst)] = np.take(u, idx[lo:hi], axis=axis)
    return out


def _take_all(u: Any, takes: dict[int, np.ndarray], *, dtype: Any = None, subtract: float = 0.0) -> Any:
    """``u`` indexed by ``takes[axis]`` along each axis (np.take per axis), with one copy of the block.

    Per axis the longest run of consecutive indices is a slice; where every axis is a plain range the result
    is a view. Otherwise the block is allocated once, its middle (the runs of every axis) copied as one
    slice, and the few padded slabs at its faces (the boundary mode's voxels) filled from it: a take per axis
    copied the whole block once per axis (three copies of a 3-D tile at an array corner). ``dtype``: the
    copy is made in it (a view keeps ``u``'s dtype: the caller casts). ``subtract``: a copy holds ``u - subtract``
    (in ``dtype``: the cast and the centring of :mod:`convpipe.centring` in the one pass); a view is ``u`` as is.
    """
    if not takes:
        return u
    runs = {}
    for ax, idx in takes.items():
        n = idx.size
        if n == 0:
            return _take(u, ax, idx)
        if idx[0] >= 0 and idx[-1] - idx[0] == n - 1 and (n < 2 or np.all(np.diff(idx) == 1)):
            runs[ax] = (0, n)
            continue
        step = np.diff(idx) == 1
        brk = np.flatnonzero(~step)
        starts = np.concatenate([[0], brk + 1])
        ends = np.concatenate([brk + 1, [n]])
        j = int(np.argmax(ends - starts))
        runs[ax] = (int(starts[j]), int(ends[j]))
    if not isinstance(u, np.ndarray) or all(runs[ax] == (0, takes[ax].size) for ax in takes):
        for ax, idx in takes.items():  # a view per axis (CuPy: its own take)
            u = _take(u, ax, idx)
        return u
    shape = list(u.shape)
    for ax, idx in takes.items():
        shape[ax] = idx.size
    out = np.empty(shape, dtype=u.dtype if dtype is None else dtype)
    dst = [slice(None)] * u.ndim
    src = [slice(None)] * u.ndim
    for ax, (a, b) in runs.items():
        dst[ax] = slice(a, b)
        src[ax] = slice(int(takes[ax][a]), int(takes[ax][a]) + b - a)
    c = out.dtype.type(subtract) if subtract else None

    def put(d: tuple, v: Any) -> None:
        if c is None:
            out[d] = v
        else:  # v cast to out's dtype, then c subtracted, in one ufunc pass: float32(x) - c as the two passes gave
            np.subtract(v, c, out=out[d], casting="unsafe")

    put(tuple(dst), u[tuple(src)])
    # the faces, axis by axis as numpy.pad fills them: a face index that the axis' run holds is copied from
    # the block itself (over the whole extent of the axes done before, so corners come out right); others
    # (wrap across the tile) from ``u`` by fancy indexing
    full = [takes.get(ax, np.arange(u.shape[ax])) for ax in range(u.ndim)]
    for ax, (a, b) in runs.items():
        base = int(takes[ax][a])
        for lo, hi in ((0, a), (b, takes[ax].size)):
            if hi <= lo:
                continue
            v = takes[ax][lo:hi]
            d = [slice(None)] * u.ndim
            d[ax] = slice(lo, hi)
            if np.all((v >= base) & (v < base + b - a)):
                out[tuple(d)] = np.take(out, a + (v - base), axis=ax)
            else:
                sel = list(full)
                sel[ax] = v
                put(tuple(d), u[np.ix_(*sel)])
    return out


def _local_index(have: Runs, want: np.ndarray) -> np.ndarray:
    """Local indices (into the concatenation of ``have``) of global positions ``want``; -1 stays -1."""
    pos = runs_to_array(have)
    loc = np.searchsorted(pos, want)
    if want.size:
        bad = (want >= 0) & ((loc >= pos.size) | (pos[np.minimum(loc, max(pos.size - 1, 0))] != want))
        if bad.any():  # a planner bug, never a user error: fail loudly rather than compute garbage
            raise AssertionError(f"halo bookkeeping: position {int(want[bad][0])} was not read")
    return np.where(want < 0, -1, loc)


def run_chain(block: np.ndarray, ops: Sequence[Any], targets: list[dict[str, Runs]],
              extents: Sequence[dict[str, int]], compute: np.dtype, xp: Any = np,
              tables: dict[int, dict[str, np.ndarray]] | None = None, *, owned: bool = False) -> np.ndarray:
    """Run a fused chain on ``block`` (holding ``targets[0]`` of the input) and return the core.

    Each op runs as ``op.apply(block, ctx)`` (:class:`convpipe.ops.base.Context`: the array module and what
    the op declared it wants: coordinates, outside masks, the extent). With ``tables``, ops with
    ``emits_table`` run as ``op.apply_rows(block, ctx)`` and their rows go to ``tables[op_index]``, in global
    coordinates and only for voxels in the tile's core (``targets[-1]``): a tile reports just the rows it
    owns, so nothing is lost or doubled at tile borders.

    Float32 runs of ops that declare their response to a constant shift run on the tile minus a constant
    (:mod:`convpipe.centring`). ``owned``: ``block`` is the caller's fresh copy, which the chain may overwrite
    (centred in place).

    Raises :class:`~convpipe.errors.ExecutionError` naming the step when a finite block overflows the
    compute dtype (see :mod:`convpipe.finite`).
    """
    k = _slab_planes(block, ops, targets, compute, xp, tables)
    if k is None:
        return _run_chain_once(block, ops, targets, extents, compute, xp, tables, owned)
    # the chain slab by slab along the block's first axis (see SLAB_BYTES): each slab is a tile of its own, so
    # every op sees exactly what it sees on the whole tile; its targets are the slab's global positions
    a = ops[0].in_axes[0]
    pos = runs_to_array(targets[0][a])
    out = None
    memo: dict = {}
    for j0 in range(0, block.shape[0], k):
        j1 = min(block.shape[0], j0 + k)
        sub = _array_to_runs(pos[j0:j1])
        t = [{**tt, a: sub} for tt in targets]
        y = _run_chain_once(block[j0:j1], ops, t, extents, compute, xp, tables, owned, memo)
        if out is None:
            out = np.empty((block.shape[0],) + y.shape[1:], dtype=y.dtype)
        elif y.dtype != out.dtype:  # a slab that fell back to a wider dtype widens the whole result
            out = out.astype(np.result_type(out.dtype, y.dtype))
        out[j0:j1] = y
    return out


#: Bytes of one slab of planes (in the compute dtype) that a chain of plane-wise ops runs on at a time. A tile
#: of 16 x 530 x 1040 float32 (35 MB) makes every temporary a fresh mmap (glibc serves blocks over 32 MiB that
#: way) that page-faults on first touch and streams through memory; slabs of a plane or two keep the
#: temporaries in the cache and the allocator's free lists. The light benchmark chain (gaussian -> Sobel
#: magnitude) took 108 ms of CPU per 16 x 512 x 1024 tile in slabs of 1-2 MiB against 133 ms whole, and 127 ms
#: in slabs of 4 MiB (benchmarks/tile_cost.py on a quiet machine; benchmarks/README.md).
SLAB_BYTES = 2 << 20


def _slab_planes(block: Any, ops: Sequence[Any], targets: list[dict[str, Runs]], compute: np.dtype, xp: Any,
                 tables: dict | None) -> int | None:
    """Planes per slab when the chain may run slab by slab along the block's first axis, else None.

    Every op must read and write that axis one to one (no halo, stride, extent change or whole-axis need) and
    keep its voxels independent of the tile (no pre-pass relabelling, no rows that need the tile's core, no
    table rows: those are kept per tile). Host arrays only: a device chain is launched once per tile.
    """
    if xp is not np or not ops or not isinstance(block, np.ndarray) or block.ndim < 2 or block.shape[0] < 2:
        return None
    a = ops[0].in_axes[0]
    for op in ops:
        if op.in_axes[:1] != a or op.out_axes[:1] != a or a in op.full_axes():
            return None
        if op.halo().get(a, (0, 0)) != (0, 0) or op.strides().get(a, 1) != 1 or op.out_length(a, 7) != 7:
            return None
        if op.isolated or op.tiled_prepass or op.rows_context or op.new_pass:
            return None
        if tables is not None and op.emits_table:
            return None
    runs = targets[0].get(a)
    if runs is None or any(t.get(a) != runs for t in targets) or runs_len(runs) != block.shape[0]:
        return None
    plane = block[0].size * max(block.itemsize, np.dtype(compute).itemsize)
    k = max(1, SLAB_BYTES // max(plane, 1))
    return k if k < block.shape[0] else None


def _run_chain_once(block, ops, targets, extents, compute, xp, tables, owned, memo=None):
    from .finite import Attribute

    state = _BlockState(owned)
    try:
        return _run_chain(block, ops, targets, extents, compute, xp, tables, state, every=False, memo=memo)
    except Attribute:  # the result is not finite although the block was: run again, op by op
        return _run_chain(block, ops, targets, extents, compute, xp, tables, state, every=True, memo=memo)


class _BlockState:
    """What a chain did to its input block: centred in place (``owned`` blocks) by ``shift``; a second run of
    the chain (op by op, convpipe.finite) starts from the centred block, and adds ``shift`` back first."""

    def __init__(self, owned: bool):
        self.owned = owned
        self.shift = 0.0


def stored_values(u: Any, op: Any, compute: np.dtype) -> Any:
    """The block as op ``op`` reads it.

    Every op computes in the pipeline's precision, except ops that must see the stored values (``raw_input``:
    global statistics, table ops, ``threshold``): they get the block as stored, with integer and boolean
    types as a float type that holds them exactly (the compute dtype for <= 16-bit types, else float64: exact
    to 2**53, as the float64 oracle reads them), so a float32 compute never rounds what they compare.
    ``raw_input = "exact"`` (``astype``) gets the block untouched.
    """
    dt = stored_dtype(u.dtype, op, compute)
    return u if u.dtype == dt else u.astype(dt)


def stored_dtype(dtype: np.dtype, op: Any, compute: np.dtype) -> np.dtype:
    """The dtype :func:`stored_values` gives a block of ``dtype``."""
    raw = op.raw_input
    if not raw:
        return np.dtype(compute)
    if raw == "exact":
        return dtype
    if dtype.kind == "f":  # a float16 widens exactly (scipy has no float16 filters); a float64 stays
        return dtype if dtype.itemsize >= np.dtype(compute).itemsize else np.dtype(compute)
    small = dtype.kind == "b" or dtype.itemsize <= 2
    return np.dtype(compute if small else np.float64)


def _axis_plan(op: Any, a: str, out_t: dict, have: dict, n: dict, halo: dict, strides: dict, full: str,
               need_coords: bool) -> tuple:
    """Op ``op``'s gather along axis ``a``: (the block's local index of every voxel it reads, the mask of padded
    voxels outside the array or None, their cval, the valid output positions between runs or None, the global
    coordinates of its outputs or None). The arrays are shared by the slabs of a tile: read-only."""
    take = outside = vsel = crd = None
    cval = 0.0
    if a in strides and a not in full:
        lo, hi = halo.get(a, (0, 0))
        mode, cval = op.boundary(a)
        want, used, vsel_a, coords_a = _gather_plan(out_t[a], lo, hi, strides[a], n[a], mode)
        if need_coords:
            crd = coords_a
        if used is None:
            loc = _local_index(have[a], want)
        else:  # positions in the gaps between windows are never read: any voxel will do
            loc = np.zeros(want.size, dtype=np.int64)
            loc[used] = _local_index(have[a], want[used])
        out = loc < 0
        take = np.where(out, 0, loc)
        if out.any():
            outside = out
        if len(out_t[a]) > 1:
            vsel = vsel_a
    elif a in halo:
        lo, hi = halo[a]
        mode, cval = op.boundary(a)
        pieces, sel, off = [], [], 0
        for s, e in out_t[a]:
            pieces.append(map_index(np.arange(s - lo, e + hi), n[a], mode))
            sel.append(np.arange(off, off + e - s))
            off += e - s + lo + hi
        want = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        if need_coords:
            raw = np.concatenate([np.arange(s - lo, e + hi) for s, e in out_t[a]])
            crd = raw[lo: raw.size - hi]
        loc = _local_index(have[a], want)
        out = loc < 0
        take = np.where(out, 0, loc)
        if out.any():
            outside = out
        if len(out_t[a]) > 1:
            vsel = np.concatenate(sel)
    elif a not in full:
        take = _local_index(have[a], runs_to_array(out_t[a]))
        crd = runs_to_array(out_t[a])
    else:
        crd = np.arange(n[a])
    for v in (take, outside, vsel, crd):
        if v is not None:
            v.setflags(write=False)
    return take, outside, cval, vsel, crd


def _run_chain(block, ops, targets, extents, compute, xp, tables, state, *, every: bool, memo: dict | None = None):
    from . import centring, engines
    from .finite import Guard
    from .ops.base import Context

    guard = Guard(list(ops), block, compute, every=every)
    u = block
    have = targets[0]
    # float32 runs of ops that declare their response to a shift run on centred values (convpipe.centring):
    # u holds the true values minus ``shift`` (a float64 constant). Not in the run op by op, which names the
    # step whose result overflowed: a centred result hides its own overflow until the offset is added back
    gains = centring.gains(ops, compute) if not every else [None] * len(ops)
    worth = centring.worth(gains)
    shift = state.shift
    for i, op in enumerate(ops):
        out_t = targets[i + 1]
        n = extents[i]
        halo = op.halo()
        strides = op.strides()
        full = op.full_axes()
        rows_wanted = tables is not None and op.emits_table
        need_coords = op.wants_coords or rows_wanted
        valid: dict[int, np.ndarray] = {}
        coords: dict[str, np.ndarray] = {}
        masks: dict[int, np.ndarray] = {}  # padded voxels outside the array (constant mode)
        takes: dict[int, np.ndarray] = {}  # per axis: the block's local index of every voxel the op reads
        fills: list = []  # (axis, outside mask, cval): set after the gather
        for ax, a in enumerate(op.in_axes):
            # the slabs of one tile share every axis' index plan but the slab axis' (memo: one per tile)
            key = (i, a, out_t.get(a), have.get(a), n.get(a))
            got = memo.get(key) if memo is not None else None
            if got is None:
                got = _axis_plan(op, a, out_t, have, n, halo, strides, full, need_coords)
                if memo is not None:
                    memo[key] = got
            take, outside, cval, vsel, crd = got
            if take is not None:
                takes[ax] = take
            if outside is not None:
                fills.append((ax, outside, cval))
                masks[ax] = outside
            if vsel is not None:
                valid[ax] = vsel
            if crd is not None:
                coords[a] = crd
        centred = gains[i] is not None
        gathered = None
        if shift and not centred:  # this op must see the true values (on this tile)
            u, shift = centring.restore(u, shift), 0.0
        elif not shift and centred and worth[i]:  # a tile holding NaN/inf too: c from its finite values
            first = u is block
            if first and not state.owned and not op.raw_input and isinstance(u, np.ndarray):
                # the gather copies at an array edge: cast, pad and centre in that one pass, not in a fresh
                # centred block gathered again, nor a second pass over the copy (same values: float32(x) - c
                # either way, the padding copies of the block's values; a heavy tile's 89 MB: -28 ms)
                cdt = np.dtype(compute)
                fused = u.dtype == cdt or (u.dtype.kind in "iub" and u.dtype.itemsize <= 2)
                c = centring.centre_value(u, cdt, xp, known=guard.range) if fused else 0.0
                g = _take_all(u, takes, dtype=cdt, subtract=c)
                if g is not u and g.base is None:
                    if fused:
                        gathered, shift = g, c
                    else:
                        gathered, shift = centring.centre(g, compute, xp, known=guard.range, inplace=True)
            if gathered is None:
                u, shift = centring.centre(u, compute, xp, known=guard.range if first else None,
                                           inplace=first and state.owned)
                if first and state.owned and u is block:
                    state.owned, state.shift = False, shift
        # every axis' halo and boundary padding in one gather, cast on the way where the gather copies (a
        # tile at an array edge): one pass over the block instead of a cast and a copy
        u = gathered if gathered is not None else stored_values(
            _take_all(u, takes, dtype=stored_dtype(u.dtype, op, compute)), op, compute)
        # no other name may hold the op's input once it is done: a slab's buffers kept alive past their op
        # missed the allocator's free lists, and the page faults of fresh ones cost 20 of a light tile's 60 ms
        g = gathered = None
        guard.before(i, u)
        for ax, outside, cval in fills:
            if not getattr(u.flags, "writeable", True) or u.base is not None:  # a view (or CuPy: no writeable)
                u = u.copy()
            sl = [slice(None)] * u.ndim
            sl[ax] = outside
            u[tuple(sl)] = cval - shift  # centred: the padding moves with the values
        # ops whose values depend on where a voxel is (stochastic draws) get global coordinates of
        # every output index along each axis (entries between two runs are discarded afterwards)
        rows_ctx = rows_wanted and op.rows_context
        ctx = Context(xp=xp, coords=coords if need_coords else None,
                      outside=masks if masks and op.wants_outside else None,
                      extent=dict(n) if op.wants_extent or rows_ctx else None,
                      core=_owned_slices(op, coords, targets[-1], valid) if rows_ctx else None,
                      shift=shift)  # per-pass constant padding: the true cval, centred (centring.pass_cvals)
        rows = None
        token = engines.ASSUME_FINITE.set(guard.finite)  # the engines skip their own checks of finite blocks
        # NaN/inf are handled by rule (convpipe.finite), so numpy's floating-point warnings would only be noise
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                y, rows = op.apply_rows(u, ctx) if rows_wanted else (op.apply(u, ctx), None)
                if guard.overflowed(i, y):
                    # Finite values, non-finite result: an intermediate overflowed (OpenCV adds the two taps of
                    # a symmetric kernel before weighting them) or the result itself does not fit. The op once
                    # more in float64: kept when it fits the compute dtype, else guard.after names the step.
                    u64 = u.astype(np.float64)
                    y64, rows = op.apply_rows(u64, ctx) if rows_wanted else (op.apply(u64, ctx), None)
                    y = y64.astype(y.dtype)
        finally:
            engines.ASSUME_FINITE.reset(token)
        out_axes = op.out_axes
        if rows is not None:
            tables[i] = _owned_rows(op, rows, coords, out_t, targets[-1], valid)
        if op.raw_input and y.dtype != op.out_dtype(compute):
            y = y.astype(op.out_dtype(compute))  # rows saw the stored values; the chain goes on in compute
        for ax, sel in valid.items():
            oax = out_axes.index(op.in_axes[ax])
            y = np.take(y, sel, axis=oax)
        for a in full:
            oax = out_axes.index(a)
            if out_t[a] != ((0, y.shape[oax]),):  # an op may change a whole axis' length (conv_layer's c)
                y = np.take(y, runs_to_array(out_t[a]), axis=oax)
        if shift:
            shift *= gains[i]  # op(x - c) = op(x) - g * c
            if shift and i == len(ops) - 1:
                y, shift = centring.restore(y, shift), 0.0
        guard.after(i, y, last=i == len(ops) - 1)
        u = y
        have = {a: out_t.get(a, ((0, y.shape[out_axes.index(a)]),)) for a in out_axes}
    return u


def _owned_rows(op: Any, rows: dict[str, np.ndarray], coords: dict[str, np.ndarray], out_t: dict[str, Runs],
                core: dict[str, Runs], real: dict[int, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The op's rows (local indices into its output) mapped to global coordinates, kept where the tile owns them.

    ``real`` (axis index -> indices of the output that are real voxels, present when several runs were
    gathered into one block) drops rows from the seams between runs, whose coordinate labels may fall inside
    the core.
    """
    real = real or {}
    n = len(next(iter(rows.values()))) if rows else 0
    keep = np.ones(n, dtype=bool)
    for ax, a in enumerate(op.in_axes):
        if a not in rows:
            continue
        local = np.asarray(rows[a], dtype=np.int64)
        if ax in real:
            keep &= np.isin(local, real[ax])
        g = coords[a][local] if a in coords else local
        rows[a] = g
        if a in core:
            owned = np.zeros(n, dtype=bool)
            for s, e in core[a]:
                owned |= (g >= s) & (g < e)
            keep &= owned
        if a in out_t:  # positions between two runs are padding garbage, never real voxels
            valid = np.zeros(n, dtype=bool)
            for s, e in out_t[a]:
                valid |= (g >= s) & (g < e)
            keep &= valid
    return {k: np.asarray(v)[keep] for k, v in rows.items()}


def _owned_slices(op: Any, coords: dict[str, np.ndarray], core: dict[str, Runs],
                  real: dict[int, np.ndarray]) -> dict[str, slice]:
    """Per axis, the slice of the op's output that the tile owns (``Context.core``, for ops with rows_context)."""
    owned = {}
    for ax, a in enumerate(op.in_axes):
        if a not in core or a not in coords:
            continue
        g = np.asarray(coords[a])
        hit = np.zeros(g.size, dtype=bool)
        for s, e in core[a]:
            hit |= (g >= s) & (g < e)
        if ax in real:
            ok = np.zeros(g.size, dtype=bool)
            ok[real[ax]] = True
            hit &= ok
        idx = np.nonzero(hit)[0]
        owned[a] = slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)
    return owned
