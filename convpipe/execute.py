"""Plan -> Dask graph -> Zarr.

One task per tile per pass: it receives the input chunks its runs touch (each chunk is read once, by
its own read task, and shared by the tiles that need it), assembles the exactly padded block, runs the
fused chain, and either returns the core (``Pipeline.apply``) or writes it into the output chunks it owns
and records itself in the manifest (``run``). No two tasks write one chunk.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import heap
from .backends import array_module, get_backend, pass_backend
from .digest import digest
from .io import Manifest, cast_output
from .plan import PassPlan, Plan
from .tiles import backward, run_chain, runs_to_array


@dataclass(frozen=True)
class _AxisEntry:
    """One tile interval along one axis: what every stage needs there, and the source chunks it reads."""

    core: tuple[int, int]
    runs: tuple  # per stage (len(ops) + 1): runs along this axis, or None where the axis does not exist yet
    dep_ids: tuple  # source chunk indices along this axis (input axes only)
    ranges: tuple  # (start, stop) of those chunks


@dataclass(frozen=True)
class _Program:
    """What every tile task of a pass shares (put in the graph once, not once per task).

    Halos are independent per axis, so the backward walk runs once per tile interval per axis (a few
    hundred at most) instead of once per tile (millions for an archive); a task rebuilds its targets
    from these tables and its tile index.
    """

    ops: tuple
    extents: tuple
    compute: np.dtype
    out_dtype: np.dtype
    in_axes: str
    out_axes: str
    axes: tuple  # per output axis: tuple of _AxisEntry
    pass_index: int = 0
    sink: Any = None
    manifest: Any = None
    tables: tuple = ()  # (op index, TableSink) for ops that emit rows
    backend: str = "cpu"  # where this pass runs (backends.pass_backend)
    device_out: bool = False  # return CuPy arrays (Pipeline.apply on CuPy input)
    out_perm: tuple | None = None  # written tiles: transpose from compute order to the output's stored order
    collect_rows: bool = False  # return (tile, (tile key, rows)) for Pipeline.apply(tables=True)

    def meta(self, index: tuple[int, ...]) -> "_TileMeta":
        entries = {a: self.axes[i][j] for i, (a, j) in enumerate(zip(self.out_axes, index))}
        targets = tuple({a: e.runs[k] for a, e in entries.items() if e.runs[k] is not None}
                        for k in range(len(self.ops) + 1))
        return _TileMeta(tile_key(index, self.pass_index), targets,
                         tuple(entries[a].ranges for a in self.in_axes),
                         tuple(entries[a].core for a in self.out_axes))


@dataclass(frozen=True)
class _TileMeta:
    key: str
    targets: tuple  # per op stage: dict axis -> runs
    chunk_ranges: tuple  # per input axis: tuple of (chunk start, chunk stop) for the deps, in dep order
    core: tuple  # per output axis: (start, stop)


def _assemble(chunks: list[np.ndarray], meta: _TileMeta, in_axes: str) -> np.ndarray:
    """Build the block holding exactly the tile's input runs from the chunks it depends on."""
    need = meta.targets[0]
    pos = [runs_to_array(need[a]) for a in in_axes]
    if len(chunks) == 1:
        c = chunks[0]
        sel = []
        for p, (c0, c1) in zip(pos, (r[0] for r in meta.chunk_ranges)):
            off = p - c0
            if off.size and off[0] == 0 and off.size == c1 - c0 and off[-1] == off.size - 1:
                sel.append(slice(None))
            elif off.size and np.all(np.diff(off) == 1):
                sel.append(slice(int(off[0]), int(off[-1]) + 1))
            else:
                sel.append(off)
        if all(isinstance(s, slice) for s in sel):
            return c[tuple(sel)]
        return c[np.ix_(*[np.arange(c.shape[i])[s] if isinstance(s, slice) else s for i, s in enumerate(sel)])]
    out = array_module(chunks[0]).empty(tuple(p.size for p in pos), dtype=chunks[0].dtype)
    # per axis: for each dep chunk, which slice of `pos` falls in it and where inside the chunk
    per_axis = []
    for p, ranges in zip(pos, meta.chunk_ranges):
        parts = []
        for c0, c1 in ranges:
            i0, i1 = np.searchsorted(p, c0), np.searchsorted(p, c1)
            off = p[i0:i1] - c0
            contiguous = off.size and off[-1] - off[0] == off.size - 1
            parts.append((slice(int(i0), int(i1)),
                          slice(int(off[0]), int(off[-1]) + 1) if contiguous else off))
        per_axis.append(parts)
    for flat, combo in enumerate(itertools.product(*per_axis)):
        dst = tuple(c[0] for c in combo)
        src = tuple(c[1] for c in combo)
        if any((isinstance(s, slice) and s.stop <= s.start) or (not isinstance(s, slice) and s.size == 0)
               for s in dst):
            continue
        chunk = chunks[flat]
        if all(isinstance(s, slice) for s in src):
            out[dst] = chunk[src]
        else:
            out[dst] = chunk[np.ix_(*[np.arange(chunk.shape[i])[s] if isinstance(s, slice) else s
                                      for i, s in enumerate(src)])]
    return out


def _tile_task(prog: _Program, index: tuple[int, ...], *chunks: np.ndarray) -> np.ndarray:
    heap.warm()  # the slabs' temporaries from the heap, not a fresh mmap each (convpipe.heap)
    meta = prog.meta(index)
    be = get_backend(prog.backend, check=False)
    block = _assemble(be.gather(chunks), meta, prog.in_axes)  # on the host for host chunks
    if block.ndim and block.size and block.strides[-1] != block.itemsize:
        # a view of a transposed chunk (input not in tczyx order): one copy per tile puts the last axis
        # back in memory order, which OpenCV's fast paths (and every engine's locality) need; cast on the
        # way when the first op would cast anyway (one pass instead of two)
        first = prog.ops[0] if prog.ops else None
        cast = first is not None and not first.raw_input and prog.pass_index == 0
        block = block.astype(prog.compute, order="C") if cast else array_module(block).ascontiguousarray(block)
    rows: dict | None = {} if prog.tables else None
    # finiteness is tracked op by op (convpipe.finite); numpy's floating-point RuntimeWarnings ("invalid value
    # encountered in multiply") must not reach the user's terminal
    with np.errstate(all="ignore"):
        # a block made for this task (assembled from several chunks, or cast) may be centred in place
        owned = getattr(block, "base", True) is None and all(block is not c for c in chunks)
        res = _run_tile(prog, be, block, meta, rows, owned)
    for i, table in prog.tables:
        if table is not None:  # None: the rows go back with the tile (collect_rows)
            table.write_part(meta.key, rows.get(i, {}))
    if prog.collect_rows:
        return res, (meta.key, {i: rows.get(i, {}) for i, table in prog.tables if table is None})
    if prog.sink is None:
        return res
    region = tuple(slice(s, e) for s, e in meta.core)
    if prog.out_perm is not None:  # the output keeps the input's axis order (one fast copy, then plain writes)
        from .engines import transposed_copy

        res = transposed_copy(res, prog.out_perm) if isinstance(res, np.ndarray) else res.transpose(prog.out_perm)
        region = tuple(region[i] for i in prog.out_perm)
    prog.sink[region] = res
    if prog.manifest is not None:
        prog.manifest.mark(meta.key)
    return np.ones((1,) * res.ndim, dtype=bool)


def _run_tile(prog: _Program, be: Any, block: Any, meta: "_TileMeta", rows: dict | None,
              owned: bool = False) -> Any:
    with be.task(prog, block.dtype):  # GPU: warm-up once per process, bounded device concurrency
        dev = be.asarray(block)  # one host->device copy (a block of the task's own); the whole chain on the device
        res = run_chain(dev, prog.ops, list(meta.targets), prog.extents, prog.compute,
                        xp=be.xp, tables=rows, owned=owned or dev is not block)
        with np.errstate(over="ignore"):  # a float cast that overflows is reported just below, as an error
            out = cast_output(res, prog.out_dtype)
        if out.dtype.kind == "f" and out.dtype.itemsize < res.dtype.itemsize and res.dtype.kind == "f":
            from .finite import cast_overflow_error, is_finite

            if not is_finite(out) and is_finite(res):  # float16 output of float32 values beyond 65504
                raise cast_overflow_error(res.dtype, out.dtype)
        return be.output(out, prog.device_out)  # one device->host copy


def op_token(op: Any) -> str:
    """A name for what an op computes: its parameters *and* the arrays it resolved (kernels, weights).

    Two specs can name different kernels the same way (``kernel: k.npy`` in two folders), and dask once
    tokenized a kernel and its transposed view alike; hashing the resolved contiguous arrays avoids both.
    """
    arrays = [(f"{k}.{kk}", vv) for k, v in sorted(vars(op).items())
              for kk, vv in (v.items() if isinstance(v, dict) else [("", v)]) if isinstance(vv, np.ndarray)]
    return digest([op.params.model_dump(mode="python"), arrays])


def tile_key(index: tuple[int, ...], pass_index: int = 0) -> str:
    return f"p{pass_index}." + ".".join(map(str, index))


def build_pass(pp: PassPlan, plan: Plan, source: Any, *, sink: Any = None, manifest: Any = None,
               skip: set[str] | None = None, name: str | None = None, tables: tuple = (),
               device_out: bool = False, rows: list | None = None) -> Any:
    """The dask array of one pass: chunks = tiles (``sink`` None) or one marker per tile (writing).

    ``rows`` (a list; no ``sink``): the tasks also return the rows of the ops whose entry in ``tables`` is
    None: each such task returns ``(tile, (tile key, {op index: columns}))``, and its key is appended to ``rows``.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    skip = skip or set()
    bounds = [np.concatenate([[0], np.cumsum(c)]) for c in source.chunks]
    grid = pp.tile_grid()
    out_axes = pp.out_axes
    tables_axes = []
    for a, cells in zip(out_axes, grid):
        entries = []
        for s, e in cells:
            per_stage = backward(pp.ops, {a: ((s, e),)}, pp.extents)
            runs = tuple(t.get(a) for t in per_stage)
            ids: list[int] = []
            rng: tuple = ()
            if a in pp.in_axes:
                b = bounds[pp.in_axes.index(a)]
                idset: set[int] = set()
                for rs, re_ in runs[0]:
                    idset.update(range(int(np.searchsorted(b, rs, "right")) - 1, int(np.searchsorted(b, re_, "left"))))
                ids = sorted(idset)
                rng = tuple((int(b[i]), int(b[i + 1])) for i in ids)
            entries.append(_AxisEntry((s, e), runs, tuple(ids), rng))
        tables_axes.append(tuple(entries))
    prog = _Program(tuple(pp.ops), tuple(pp.extents), plan.compute_dtype,
                    plan.output.dtype if sink is not None or pp is plan.passes[-1] else plan.compute_dtype,
                    pp.in_axes, out_axes, tuple(tables_axes), pp.index, sink, manifest, tables,
                    pass_backend(plan, pp), device_out and sink is None,
                    plan.out_perm if sink is not None else None, rows is not None and sink is None)
    # Name from the canonical plan, never from kernel arrays: dask once tokenized a kernel and its
    # transposed view alike, silently merging two different correlations.
    canon = [(op.name, op_token(op), op.in_axes) for op in pp.ops]
    token = tokenize(canon, pp.tile, source.name, str(plan.compute_dtype), str(plan.output.dtype),
                     sink is not None, getattr(sink, "store_path", None) and str(sink.store_path), sorted(skip),
                     prog.backend, prog.device_out, prog.collect_rows)
    name = name or f"convpipe-pass{pp.index}-{token}"
    prog_key = f"{name}-program"
    dsk: dict = {prog_key: prog}
    chunks_out = []
    for a, cells in zip(out_axes, grid):
        chunks_out.append(tuple((1 if sink is not None else e - s) for s, e in cells))
    in_pos = [out_axes.index(a) for a in pp.in_axes]
    marker = np.ones((1,) * len(out_axes), dtype=bool)
    src = source.name
    for index in itertools.product(*[range(len(g)) for g in grid]):
        out_key = (name,) + index
        if skip and tile_key(index, pp.index) in skip:
            dsk[out_key] = marker
            continue
        dep_ids = [tables_axes[i][index[i]].dep_ids for i in in_pos]
        deps = [(src,) + combo for combo in itertools.product(*dep_ids)]
        if prog.collect_rows:  # one task computes both the tile and its rows; two keys pick them apart
            both = (f"{name}-both",) + index
            dsk[both] = (_tile_task, prog_key, index, *deps)
            dsk[out_key] = (operator.getitem, both, 0)
            rows.append(both)
        else:
            dsk[out_key] = (_tile_task, prog_key, index, *deps)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[source])
    dtype = bool if sink is not None else prog.out_dtype
    meta = get_backend("gpu", check=False).meta(len(out_axes), dtype) if prog.device_out else None
    return da.Array(graph, name, chunks=tuple(chunks_out), dtype=dtype, meta=meta)


def execute(plan: Plan, source: Any, *, sink: Any = None, manifest: Manifest | None = None,
            skip: set[str] | None = None, tables: dict | None = None,
            compute: Callable[..., Any] | None = None, device_out: bool = False,
            annotations: list[dict] | None = None, canonical_source: bool = False,
            rows: list | None = None) -> Any:
    """Build the whole plan's graph; returns the dask array of the result (or of tile markers).

    ``source`` is the input as stored (axes ``plan.input.axes``), or already in compute order
    (``plan.compute_axes``) with ``canonical_source``. The result is in the output's stored order
    (``plan.output.axes``); a ``sink`` (in that order too) receives each tile transposed back.

    ``tables`` maps an op (by identity) to the TableSink its rows go to. A pass that starts with a global
    op (zscore, rescale) first reduces the previous pass's result to the statistics the op needs, with
    ``compute`` (default: dask's own scheduler).

    ``rows`` (a list, no ``sink``): ops mapped to None in ``tables`` return their rows with their tiles
    instead of writing them: ``(pass index, key)`` of each tile task of those passes is appended to ``rows``,
    the task's value ``(tile, (tile key, {op index: columns}))`` (:func:`convpipe.apply_tables.apply_with_tables`).
    """
    import dask

    compute = compute or dask.compute
    arr = source
    if not canonical_source and plan.in_perm is not None:
        from .engines import contiguous

        # each chunk copied to tczyx order once (tiles sharing it then assemble from plain memory)
        t = source.transpose(plan.in_perm)
        arr = t.map_blocks(contiguous, dtype=t.dtype, meta=t._meta)
    for pp in plan.passes:
        first = pp.ops[0]
        if sink is not None and pp is plan.passes[0]:  # the input as stored: refused before a tile is written
            first.check_source(arr, compute)
        if first.kind == "global":
            if first.tiled_prepass:  # a pre-pass over this pass's own tiles (label)
                first.prepare_pass(arr, compute, pp)
            else:
                first.prepare_from(arr, compute)
        last = pp is plan.passes[-1]
        tb = tuple((i, tables[(pp.index, i)]) for i in range(len(pp.ops)) if tables and (pp.index, i) in tables)
        with dask.annotate(**(annotations[pp.index] if annotations else {})):  # GPU passes -> GPU workers
            mine: list | None = [] if rows is not None and any(t is None for _, t in tb) else None
            arr = build_pass(pp, plan, arr, sink=sink if last else None, manifest=manifest if last else None,
                             skip=skip if last else None, tables=tb, device_out=device_out and last, rows=mine)
            if mine is not None:
                rows.extend((pp.index, key) for key in mine)
    if sink is None and plan.out_perm is not None:  # back to the input's order, each chunk contiguous
        from .engines import contiguous

        t = arr.transpose(plan.out_perm)
        arr = t.map_blocks(contiguous, dtype=t.dtype, meta=t._meta)
    return arr
