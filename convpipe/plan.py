"""Spec -> Plan: passes, halos, tiles, methods, task counts and memory, without touching data.

A plan is data: printable (``str(plan)`` is ``convpipe explain``), testable without running, and it refuses
an impossible plan (a task that cannot fit a worker's memory) before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .axes import canonical, is_canonical, output_order, permutation
from .errors import PlanError, SpecError
from .humanize import duration, format_bytes
from .limits import check_padded_blocks
from .channels import follow, summary
from .bind import bind_ops, check_step_axes  # noqa: F401  (bind_ops: also this module's name)
from .spec import Spec, Step
from .tilechoice import MAX_READ_AMPLIFICATION, MIN_TASK_SECONDS, choose_tile, ns_per_voxel, tile_costs

# Measured here (2 cores): building the graph costs ~9 us per task (1.05 M tasks of an 8 TB plan in
# 9.2 s); dask's distributed scheduler holds roughly 2 KiB per task and spends ~0.3-1 ms on each.
_GRAPH_S_PER_TASK = 9e-6
_SCHED_BYTES_PER_TASK = 2048
_SCHED_S_PER_TASK = 5e-4


@dataclass
class ArrayInfo:
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    axes: str

    def extent(self) -> dict[str, int]:
        return dict(zip(self.axes, self.shape))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def resolve_precision(precision: str, dtype: Any) -> np.dtype:
    """The compute dtype of ``execution.precision`` for an input of ``dtype``.

    ``auto`` computes in float32 when float32 holds every value of the input dtype exactly (bool, 8- and
    16-bit integers, float16, float32) and in float64 otherwise (32- and 64-bit integers, float64): an int32
    near 2**28 or a float64 with small noise on a large offset is not rounded before the first op.
    """
    if precision != "auto":
        return np.dtype(precision)
    dt = np.dtype(dtype)
    exact32 = dt.kind == "b" or (dt.kind in "iu" and dt.itemsize <= 2) or (dt.kind == "f" and dt.itemsize <= 4)
    return np.dtype(np.float32 if exact32 else np.float64)


def precision_note(precision: str, dtype: Any) -> str:
    """What explain says about the compute dtype: the choice of ``auto`` and why."""
    compute = resolve_precision(precision, dtype)
    if precision != "auto":
        return f"compute {compute} (execution.precision: {precision})"
    why = "exact in float32" if compute == np.float32 else "not exact in float32"
    return f"compute {compute} (precision auto: input {np.dtype(dtype)} is {why})"


@dataclass
class PassPlan:
    index: int
    ops: list[Any]
    steps: list[Step]
    in_axes: str
    out_axes: str
    extents: list[dict[str, int]]
    halo: dict[str, tuple[int, int]]
    full_axes: str
    tile: dict[str, int]
    n_tiles: int
    tasks: int
    mem_per_task: int
    read_amplification: float
    est_seconds_per_task: float
    notes: list[str] = field(default_factory=list)  # what ops say about this pass on its tiles (plan_notes)

    def tile_grid(self) -> list[list[tuple[int, int]]]:
        ext = self.extents[-1]
        return [[(s, min(s + self.tile[a], ext[a])) for s in range(0, ext[a], self.tile[a])] for a in self.out_axes]


@dataclass
class Plan:
    spec: Spec | None
    input: ArrayInfo
    output: ArrayInfo
    passes: list[PassPlan]
    compute_dtype: np.dtype
    workers: int
    memory_per_worker: int
    cluster: str
    backend: str
    warnings: list[str] = field(default_factory=list)
    backend_note: str = ""  # why this backend (auto: the GPU it found); passes that stay on the CPU
    precision: str = "float32"  # execution.precision as written (auto resolves to compute_dtype)

    @property
    def tasks(self) -> int:
        return sum(p.tasks for p in self.passes)

    @property
    def compute_axes(self) -> str:
        """The input's axes in the order the ops see them (canonical 'tczyx' order)."""
        return self.passes[0].in_axes if self.passes else canonical(self.input.axes)

    @property
    def in_perm(self) -> tuple[int, ...] | None:
        """``numpy.transpose`` axes from the stored input to compute order; None when they are the same."""
        perm = permutation(self.input.axes, self.compute_axes)
        return None if perm == tuple(range(len(perm))) else perm

    @property
    def out_perm(self) -> tuple[int, ...] | None:
        """``numpy.transpose`` axes from the last pass's result to the stored output; None when the same."""
        last = self.passes[-1].out_axes if self.passes else self.compute_axes
        perm = permutation(last, self.output.axes)
        return None if perm == tuple(range(len(perm))) else perm

    @property
    def peak_memory_per_worker(self) -> int:
        return max((p.mem_per_task for p in self.passes), default=0)

    def estimate(self) -> dict:
        """Wall time and peak memory per worker on this machine: ``{"seconds", "peak_memory_bytes"}``.

        From costs measured here (:mod:`convpipe.estimate`: a short calibration the first time, then cached
        per machine and library versions).
        """
        from .estimate import estimate

        return estimate(self)

    def to_dict(self) -> dict:
        return {
            "input": {"shape": list(self.input.shape), "dtype": str(self.input.dtype),
                      "chunks": list(self.input.chunks), "axes": self.input.axes},
            "output": {"shape": list(self.output.shape), "dtype": str(self.output.dtype),
                       "chunks": list(self.output.chunks), "axes": self.output.axes},
            "compute_dtype": str(self.compute_dtype), "precision": self.precision,
            "compute_axes": self.compute_axes,
            "cluster": self.cluster, "backend": self.backend, "backend_note": self.backend_note,
            "workers": self.workers,
            "memory_per_worker": self.memory_per_worker,
            "tasks": self.tasks,
            "passes": [{
                "ops": [op.describe() for op in p.ops],
                "methods": [op.method() for op in p.ops],
                "halo": {a: list(v) for a, v in p.halo.items()},
                "shape_in": [p.extents[0][a] for a in p.in_axes], "shape_out": [p.extents[-1][a] for a in p.out_axes],
                "axes_in": p.in_axes, "axes_out": p.out_axes, "stride": pass_strides(p),
                "full_axes": p.full_axes, "tile": p.tile, "tiles": p.n_tiles, "tasks": p.tasks,
                "memory_per_task": p.mem_per_task, "read_amplification": round(p.read_amplification, 4),
                "est_seconds_per_task": round(p.est_seconds_per_task, 4), "notes": list(p.notes),
            } for p in self.passes],
            "graph_build_seconds_est": self.tasks * _GRAPH_S_PER_TASK,
            "scheduler_memory_est": self.tasks * _SCHED_BYTES_PER_TASK,
            "warnings": self.warnings,
        }

    def __repr__(self) -> str:  # the explain text, not a dump of the dataclass's fields
        return str(self)

    def _repr_html_(self) -> str:  # Jupyter
        from .display import plan_html

        return plan_html(self)

    def __str__(self) -> str:
        lines = []
        name = self.spec.name if self.spec is not None else "pipeline"
        i, o = self.input, self.output
        lines.append(f"plan for {name!r}: {self.cluster} ({self.workers} workers, "
                     f"{_fmt_bytes(self.memory_per_worker)} each), backend {self.backend}, "
                     f"{precision_note(self.precision, self.input.dtype)}")
        if self.backend_note:
            lines.append(f"  backend {self.backend_note}")
        lines.append(f"  input   {_fmt_shape(i)}  {i.dtype}  chunks {_fmt_tuple(i.chunks)}")
        lines.append(f"  output  {_fmt_shape(o)}  {o.dtype}  chunks {_fmt_tuple(o.chunks)}")
        names = follow(self).output  # the channels the ops name (an OME input's own names are the run's)
        if names:
            lines.append(f"  channels {summary(names)}")
        if not is_canonical(i.axes) or not is_canonical(o.axes):
            last = self.passes[-1].out_axes if self.passes else self.compute_axes
            lines.append(f"  axes    the ops compute in tczyx order ({self.compute_axes} -> {last}): kernels, "
                         f"orientations and tiles below follow those letters; input and output keep their "
                         f"own order ({i.axes} -> {o.axes})")
        for p in self.passes:
            pre = ""
            if p.ops[0].kind == "global":
                pre = (f" ({p.ops[0].name} pre-pass over the same tiles first)" if p.ops[0].tiled_prepass
                       else " (statistics pre-pass over the previous pass first)")
            lines.append(f"  pass {p.index}: {len(p.steps)} step(s) fused{pre}")
            for step, ops in _group_ops(p):
                lines.append(f"    - {ops[0].describe() if len(ops) == 1 else f'{step.name} ({len(ops)} sub-steps)'}"
                             f"  [{ops[0].method()}]")
            lines.extend(f"    composite {note}" for note in _composites(p))
            halo = ", ".join(f"{a}: {lo}+{hi}" for a, (lo, hi) in p.halo.items()) or "none"
            lines.append(f"    halo      {halo}")
            strides = pass_strides(p)
            if strides:
                lines.append(f"    stride    {', '.join(f'{a}: {s}' for a, s in strides.items())}")
            lines.append(f"    shape     {_fmt_ext(p.in_axes, p.extents[0])} -> {_fmt_ext(p.out_axes, p.extents[-1])}")
            if p.full_axes:
                lines.append(f"    whole     {p.full_axes} per task (rechunk to whole extents)")
            lines.append(f"    tile      {_fmt_tuple(tuple(p.tile[a] for a in p.out_axes))} ({p.out_axes})"
                         f"  -> {p.n_tiles} tiles")
            n_chunks = int(np.prod([math.ceil(n / c) for n, c in zip(self.output.shape, self.output.chunks)]))
            lines.append(f"    tasks     {p.tasks} (input reads + tiles; {p.tasks / max(p.n_tiles, 1):.2f} per tile, "
                         f"{n_chunks} output chunks)")
            lines.append(f"    memory    {_fmt_bytes(p.mem_per_task)} per task (est.)")
            lines.append(f"    read amplification {p.read_amplification:.3f}  ((tile+halo)/tile)")
            for note in p.notes:
                lines.append(f"    {note}")
            lines.append(f"    est. time {p.est_seconds_per_task * 1e3:.0f} ms per task, "
                         f"{duration(p.est_seconds_per_task * p.n_tiles / max(self.workers, 1))} total")
        n = self.tasks
        work = sum(p.est_seconds_per_task * p.n_tiles for p in self.passes)
        lines.append(f"  graph     {n} tasks: ~{n * _GRAPH_S_PER_TASK:.1f} s to build, "
                     f"~{_fmt_bytes(n * _SCHED_BYTES_PER_TASK)} of scheduler memory")
        lines.append(f"  est. run  {duration(work / max(self.workers, 1) + n * _SCHED_S_PER_TASK / max(self.workers, 1))} "
                     f"on {self.workers} CPU workers ({work:.0f} CPU-seconds of work, "
                     f"{n * _SCHED_S_PER_TASK:.0f} s of scheduler overhead)")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)


def _group_ops(p: PassPlan):
    groups: list[tuple[Step, list]] = []
    for op in p.ops:
        st = op.step
        if groups and st is not None and groups[-1][0] is st:
            groups[-1][1].append(op)
        else:
            groups.append((st if st is not None else Step(op.name, op.params, -1), [op]))
    return groups


def _composites(p: "PassPlan") -> list[str]:
    """What each fused run of linear steps amounts to (convpipe.kernelview), for explain."""
    from .composite import composite_note, linear_runs

    try:
        return [composite_note(run) for run in linear_runs(p.ops)]
    except Exception as e:  # noqa: BLE001 - a note must never break explain
        return [f"(not computed: {type(e).__name__})"]


def _fmt_ext(axes: str, ext: dict[str, int]) -> str:
    return " x ".join(f"{ext[a]}{a}" for a in axes)


def pass_strides(p: "PassPlan") -> dict[str, int]:
    """Per axis, the product of the strides of a pass's ops (where it is not 1)."""
    out: dict[str, int] = {}
    for op in p.ops:
        for a, s in op.strides().items():
            out[a] = out.get(a, 1) * int(s)
    return {a: s for a, s in out.items() if s != 1}


def _fmt_tuple(t) -> str:
    return "(" + ", ".join(str(x) for x in t) + ")"


def _fmt_shape(a: ArrayInfo) -> str:
    return " x ".join(f"{n}{ax}" for n, ax in zip(a.shape, a.axes))


def _fmt_bytes(n: int) -> str:
    """Dask's notation ('1.50 GiB'), as in its dashboard and worker logs."""
    return format_bytes(int(n))


def parse_bytes(v: str | int | None) -> int | None:
    if v is None or isinstance(v, int):
        return v
    from .humanize import parse_bytes as _parse  # dask.utils.parse_bytes, without importing dask

    try:
        return int(_parse(v))
    except (ValueError, TypeError):
        raise SpecError(f"cannot read memory size {v!r} (try '4GiB')", path="execution.memory_limit") from None


# --------------------------------------------------------------------------- building a plan


def _extents(ops: list[Any], inp: dict[str, int]) -> list[dict[str, int]]:
    """Per op, the lengths of its input axes; the last entry those of the pass's output.

    An op may change an axis' length (``extent: valid|full``, ``stride``, ``pool``, conv_layer's channels):
    ``op.out_length`` says how; a result with no voxel along an axis is refused at the op's step.
    """
    ext = [dict(inp)]
    for op in ops:
        cur = dict(ext[-1])
        new = {}
        for a in op.out_axes:
            new[a] = op.out_length(a, cur[a]) if a in cur else op.out_extent(a, 0)
            if new[a] < 1:
                raise op.error(f"the result would have no voxel along {a!r}: the input has {cur.get(a, 0)} there, "
                               f"too few for this step's window (use extent: same, or a smaller kernel or size)")
        ext.append(new)
    return ext


def make_plan(spec_steps: list[Step], inp: ArrayInfo, *, spec: Spec | None = None,
              out_chunks: tuple[int, ...] | dict[str, int] | list[int] | None = None,
              out_dtype: str | None = None, tile: Any = "auto", precision: str = "auto",
              workers: int = 1, memory_per_worker: int = 4 << 30, cluster: str = "threads",
              backend: str = "cpu") -> Plan:
    """Build the plan of ``spec_steps`` on an input described by ``inp`` (no data is read)."""
    if spec is not None:
        check_step_axes(spec, inp.axes)  # errors name the input's axes as the user wrote them
    compute = resolve_precision(precision, inp.dtype)
    from .ops.local.merged import merge_linear

    # Every op computes on the input transposed to canonical 'tczyx' order (see convpipe.axes): a kernel's
    # dimensions and an orientation's (d/dy, d/dx) follow the axis letters, whatever the stored order.
    stored = inp
    inp = canonical_info(inp)
    ops = merge_linear(bind_ops(spec_steps, inp.axes))
    if any(n == 0 for n in inp.shape):
        raise PlanError(f"the input is empty (shape {stored.shape}); nothing to compute")

    # output dtype: explicit, else the last op's own type (threshold and binary morphology -> uint8, astype),
    # else compute dtype
    dt = compute
    for k, op in enumerate(ops):
        if op.passes_dtype:  # the image passes through (regionprops): it keeps its type
            op.in_dtype = dt if k else np.dtype(inp.dtype)
        dt = op.out_dtype(compute)
    odt = np.dtype(out_dtype) if out_dtype else dt

    # A global op (zscore, rescale) needs statistics of its whole input first: the chain is cut before
    # it, and that pass's result is reduced to statistics before the next pass runs (it is recomputed,
    # not stored: cheaper than writing an intermediate for archives larger than memory).
    # An op with ``new_pass`` (a distance transform's second and later axes: whole lines along another axis)
    # starts a pass of its own too, which reads the previous pass's tiles.
    segments: list[list[Any]] = [[]]
    for op in ops:
        # an isolated op (label) relabels exactly the tiles its pre-pass saw: only point ops may follow it
        isolated = any(o.isolated for o in segments[-1])
        if segments[-1] and (op.kind == "global" or op.new_pass or (isolated and op.kind != "point")):
            segments.append([])
        segments[-1].append(op)

    warnings: list[str] = []
    passes: list[PassPlan] = []
    cur = inp
    final_axes = ops[-1].out_axes if ops else inp.axes
    stored_out = output_order(stored.axes, final_axes)
    # a list of chunks or tile sizes follows the output's stored axes; the planner keys them by letter
    out_chunks = _by_letter(out_chunks, stored_out, "chunks", ("output", "chunks"), spec)
    if tile != "auto":
        tile = _by_letter(tile, stored_out, "tile", ("execution", "tile"), spec)
    for k, seg in enumerate(segments):
        last = k == len(segments) - 1
        ext = _extents(seg, cur.extent())
        out_axes = seg[-1].out_axes
        if last:  # the output's chunks default to the input's, whatever passes came before
            chunks = _out_chunks(out_chunks, inp, out_axes, ext[-1], spec)
        else:
            # a new_pass segment (whole lines along another axis) starts from the input's chunks, not from the
            # previous pass's tiles, which are whole along that pass's axis
            src = inp if seg[0].new_pass else cur
            chunks = {a: c for a, c in zip(src.axes, src.chunks)}
            chunks = {a: chunks.get(a, ext[-1][a]) for a in out_axes}
        full = "".join(a for a in out_axes if any(a in op.full_axes() for op in seg))
        halo = _total_halo(seg)
        t = _choose_tile(tile if last else "auto", out_axes, ext, chunks, halo, full, seg, compute, workers,
                         memory_per_worker, cur, spec, warnings)
        n_tiles = int(np.prod([math.ceil(ext[-1][a] / t[a]) for a in out_axes], dtype=np.int64))
        rc = read_chunks(cur, t) if k == 0 else dict(zip(cur.axes, cur.chunks))
        reads = int(np.prod([math.ceil(ext[0][a] / rc[a]) for a in cur.axes], dtype=np.int64))
        amp, mem, secs = _tile_costs(seg, t, ext, halo, full, cur, compute, out_axes)
        seg_steps = []
        for op in seg:
            if op.step is not None and (not seg_steps or seg_steps[-1] is not op.step):
                seg_steps.append(op.step)
        notes = [n for op in seg for n in op.plan_notes(t, ext[0])]
        pp = PassPlan(k, seg, seg_steps, cur.axes, out_axes, ext, halo, full, t, n_tiles,
                      n_tiles + (reads if k == 0 else 0), mem, amp, secs, notes)
        passes.append(pp)
        if mem > memory_per_worker:
            raise PlanError(f"pass {k}: a task needs about {_fmt_bytes(mem)} but a worker has "
                            f"{_fmt_bytes(memory_per_worker)}: use smaller tiles (execution.tile), more memory "
                            "per worker, or fewer whole axes")
        if amp > MAX_READ_AMPLIFICATION:
            warnings.append(f"pass {k}: read amplification {amp:.2f} > 1.5: tiles are small for this halo")
        # no tile can help an array whose whole pass is one short task (every example's small image said so)
        if secs < MIN_TASK_SECONDS and \
                _whole_pass_seconds(seg, ext, halo, full, cur, compute, out_axes) >= MIN_TASK_SECONDS:
            warnings.append(f"pass {k}: tasks take about {secs * 1e3:.0f} ms (< 20 ms): per-task overhead "
                            "will dominate; larger tiles help")
        cur = ArrayInfo(tuple(ext[-1][a] for a in out_axes), compute, tuple(t[a] for a in out_axes), out_axes)
    check_padded_blocks(passes, memory_per_worker, compute.itemsize)  # halos far wider than the array
    chunks = _out_chunks(out_chunks, inp, final_axes, passes[-1].extents[-1], spec)
    ext = passes[-1].extents[-1]
    out = ArrayInfo(tuple(ext[a] for a in stored_out), odt, tuple(chunks[a] for a in stored_out), stored_out)
    return Plan(spec, stored, out, passes, compute, workers, memory_per_worker, cluster, backend, warnings,
                precision=precision)


def canonical_info(info: ArrayInfo) -> ArrayInfo:
    """``info`` with its axes (shape, chunks) in canonical 'tczyx' order."""
    perm = permutation(info.axes, canonical(info.axes))
    return ArrayInfo(tuple(info.shape[i] for i in perm), info.dtype, tuple(info.chunks[i] for i in perm),
                     canonical(info.axes))


def _by_letter(v: Any, axes: str, what: str, loc: tuple, spec: Spec | None) -> Any:
    """A list of per-axis values (in the order of ``axes``) as a dict by axis letter; dicts pass through."""
    if v is None or isinstance(v, dict) or isinstance(v, str):
        return v
    v = list(v)
    if len(v) != len(axes):
        raise _err(spec, f"{what} has {len(v)} values but the output has {len(axes)} axes ({axes!r})", loc)
    return dict(zip(axes, v))


def read_chunks(inp: ArrayInfo, tile: dict[str, int]) -> dict[str, int]:
    """Blocks the input is read in: whole tiles where tiles are made of whole storage chunks.

    One read task per tile (each storage chunk still decoded once) keeps the graph at <= 2 tasks per
    tile; where a tile cuts storage chunks, reading by storage chunk avoids decoding one twice.
    """
    out = {}
    for a, c, n in zip(inp.axes, inp.chunks, inp.shape):
        t = tile.get(a, n)
        out[a] = t if (t % c == 0 or t >= n) else c
    return out


def _total_halo(ops) -> dict[str, tuple[int, int]]:
    h: dict[str, tuple[int, int]] = {}
    for op in ops:
        for a, (lo, hi) in op.halo().items():
            plo, phi = h.get(a, (0, 0))
            h[a] = (plo + lo, phi + hi)
    return h


def _out_chunks(out_chunks, inp: ArrayInfo, out_axes: str, ext: dict[str, int], spec: Spec | None) -> dict[str, int]:
    in_chunks = dict(zip(inp.axes, inp.chunks))
    if out_chunks is None:
        ch = {a: in_chunks.get(a, ext[a]) for a in out_axes}
    else:  # a dict by letter (make_plan turns a list, in the output's stored order, into one)
        bad = [a for a in out_chunks if a not in out_axes]
        if bad:
            raise _err(spec, f"chunks name axis {bad[0]!r}, not one of the output axes {out_axes!r}",
                       ("output", "chunks"))
        ch = {a: int(out_chunks.get(a, in_chunks.get(a, ext[a]))) for a in out_axes}
    return {a: max(1, min(c, ext[a])) for a, c in ch.items()}


def _err(spec: Spec | None, msg: str, loc: tuple) -> SpecError:
    return spec.error(msg, loc) if spec is not None else SpecError(msg, path=".".join(map(str, loc)))


def _tile_costs(ops, t, ext, halo, full, inp: ArrayInfo, compute, out_axes):
    return tile_costs(ops, t, ext, halo, full, inp, compute, out_axes, ns_per_voxel(ops))


def _whole_pass_seconds(ops, ext, halo, full, inp: ArrayInfo, compute, out_axes) -> float:
    """The planner's seconds of a pass run as one task (a tile of the whole output): the longest any task of it
    can take, so its tiny-task warning is worth giving only when this reaches MIN_TASK_SECONDS."""
    return _tile_costs(ops, {a: ext[-1][a] for a in out_axes}, ext, halo, full, inp, compute, out_axes)[2]



def _choose_tile(tile, out_axes, exts, chunks, halo, full, ops, compute, workers, mem_budget, inp, spec,
                 warnings) -> dict[str, int]:
    ext = exts[-1]
    if tile != "auto":  # a dict by letter (make_plan turns a list, in the output's stored order, into one)
        bad = [a for a in tile if a not in out_axes]
        if bad:
            raise _err(spec, f"tile names axis {bad[0]!r}, not one of the output axes {out_axes!r}",
                       ("execution", "tile"))
        t = {a: int(tile.get(a, chunks[a])) for a in out_axes}
        # a task owns whole output chunks: round up to a multiple of the chunk
        for a in out_axes:
            v = max(1, min(t[a], ext[a]))
            r = -(-v // chunks[a]) * chunks[a]
            if r != v and v < ext[a]:
                warnings.append(f"tile {a}={v} rounded up to {r}, a multiple of the output chunk {chunks[a]}")
            t[a] = min(r, ext[a]) if r < ext[a] else ext[a]
    else:  # the candidate that obeys this planner's own warnings (convpipe.tilechoice)
        t = choose_tile(ops, out_axes, exts, chunks, halo, full, compute, workers, mem_budget, inp,
                        ns_per_voxel(ops), _SCHED_S_PER_TASK)
    for a in full:
        if t[a] != ext[a]:
            t[a] = ext[a]
    return t
