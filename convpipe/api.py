"""The Python API: ``convpipe.load(spec) -> Pipeline`` with ``apply``, ``explain`` and ``run``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import __version__
from .cluster import describe, open_cluster
from .errors import ConvpipeError, ExecutionError, InputError, RunInterrupted, SpecError
from .io import Manifest, create_output, data_digest, fingerprint, open_input, output_state
from .outputs import (create_ome_output, finish_ome_output, is_ome_output, ome_output_problem, open_sink,
                      provenance_node)
from .outputs import pyramid_method as pyramid_method_for
from .plan import ArrayInfo, Plan, make_plan, parse_bytes
from .replace import check_replaceable, check_table
from .report import RunMonitor
from .spec import AXES_ORDER, Spec, load_spec


@dataclass
class RunResult:
    """What a finished run reports."""

    output_url: str
    elapsed: float
    voxels: int
    tasks: int
    tiles: int
    skipped_tiles: int = 0
    outputs: dict = field(default_factory=dict)
    #: RunMonitor.to_dict(): task stream by key prefix, phases, peak RSS (empty when not measured)
    timings: dict = field(default_factory=dict, repr=False)
    #: the Plan the run executed (for reports); None for a resume that found nothing to do
    plan: Any = field(default=None, repr=False, compare=False)
    #: output voxels this run computed (a resume skips the recorded tiles); None: all of ``voxels``
    computed_voxels: int | None = None

    @property
    def voxels_per_second(self) -> float:
        """Throughput of this run: the voxels it computed (not those a resume found done) per second."""
        n = self.voxels if self.computed_voxels is None else self.computed_voxels
        return n / self.elapsed if self.elapsed > 0 else float("inf")


def load(source: str | os.PathLike | dict | Spec) -> "Pipeline":
    """Load a spec (YAML/JSON path, or a dict) into a :class:`Pipeline`.

    Examples
    --------
    >>> import numpy as np, convpipe
    >>> p = convpipe.load({"convpipe": 1, "input": {"url": "in.zarr"}, "steps": [{"gaussian": {"sigma": 1}}]})
    >>> p.apply(np.ones((8, 8)), axes="yx").compute().shape
    (8, 8)
    """
    return Pipeline(source if isinstance(source, Spec) else load_spec(source))


class Pipeline:
    """A validated spec, ready to plan and run."""

    def __init__(self, spec: Spec):
        self.spec = spec

    def __repr__(self) -> str:
        return f"Pipeline({self.spec.name!r}, {len(self.spec.steps)} steps)"

    # ------------------------------------------------------------------ planning
    def _cluster_resources(self, spec: Spec) -> tuple[int, int]:
        _, workers, mem = describe(spec.execution.cluster)
        limit = parse_bytes(spec.execution.memory_limit)
        if limit is not None:
            mem = limit
        elif spec.execution.cluster == "threads":
            mem = mem // max(workers, 1)
        return workers, mem

    def _plan_for(self, spec: Spec, info: ArrayInfo, backend: str) -> Plan:
        workers, mem = self._cluster_resources(spec)
        out = spec.output
        return make_plan(spec.steps, info, spec=spec, out_chunks=out.chunks if out else None,
                         out_dtype=out.dtype if out else None, tile=spec.execution.tile,
                         precision=spec.execution.precision, workers=workers, memory_per_worker=mem,
                         cluster=spec.execution.cluster, backend=backend)

    def _open(self, spec: Spec):
        i = spec.input
        url = spec.resolve(i.url)
        try:
            arr, axes, ome = open_input(url, level=i.level, axes=i.axes, storage_options=i.storage_options)
        except InputError as e:
            line = spec.line_of(("input", "url"))
            rel = "" if url == i.url else f" (relative paths resolve against the spec's folder, {spec.base_dir})"
            raise InputError(f"input.url{f' (line {line})' if line else ''}: {e}{rel}") from None
        return url, arr, axes, ome

    def explain(self, **overrides: Any) -> Plan:
        """The plan on the spec's input (reads metadata only, never chunk data)."""
        spec = self.spec.with_overrides(**overrides) if overrides else self.spec
        _, arr, axes, ome = self._open(spec)
        info = ArrayInfo(tuple(arr.shape), np.dtype(arr.dtype), tuple(arr.chunks), axes)
        from .backends import backend_note, resolve

        choice = resolve(spec.execution.backend, strict=False)  # gpu without a GPU: explain still plans
        plan = self._plan_for(spec, info, choice.name)
        _bind_voxel_sizes(plan, ome, spec.input.level)
        plan.backend_note = backend_note(choice, plan)  # "auto chose gpu: <device>", passes left on the CPU
        return plan

    # ------------------------------------------------------------------ apply
    def apply(self, array: Any, axes: str | None = None, *, tile: Any = None) -> Any:
        """Apply the steps to an in-memory or dask array; returns a lazy dask array.

        Parameters
        ----------
        array : numpy.ndarray or dask.array.Array, shape (..., y, x)
        axes : str, optional
            One letter per axis from 'tczyx'; default the last ``array.ndim`` letters.
        tile : dict or list, optional
            Work tile; default the array's chunks.

        Returns
        -------
        dask.array.Array
            Same axes (plus ``c`` for ops that add channels), dtype by the pipeline's dtype rule.
        """
        import dask.array as da

        from .execute import execute

        if axes is None:
            axes = AXES_ORDER[-array.ndim:]
        if len(axes) != array.ndim:
            raise InputError(f"axes {axes!r} has {len(axes)} letters but the array has {array.ndim} axes")
        from .backends import meta_on_device, on_device, resolve

        if not isinstance(array, da.Array):
            array = da.from_array(array if on_device(array) else np.asarray(array), chunks="auto")
        device = meta_on_device(array)  # CuPy in (chunks on the device): GPU backend, CuPy out
        info = ArrayInfo(tuple(array.shape), np.dtype(array.dtype), tuple(c[0] for c in array.chunks), axes)
        spec = self.spec
        workers, mem = self._cluster_resources(spec)
        out = spec.output
        t = tile if tile is not None else (spec.execution.tile if spec.execution.tile != "auto" else None)
        if t is None:
            t = dict(zip(axes, info.chunks))
        elif not isinstance(t, dict) and len(t) == len(axes):
            t = dict(zip(axes, t))  # a list follows the input's axes; axes an op adds (c) stay whole
        plan = make_plan(spec.steps, info, spec=None, out_chunks=t, out_dtype=out.dtype if out else None,
                         tile=t,
                         precision=spec.execution.precision, workers=workers, memory_per_worker=mem,
                         backend="gpu" if device else resolve(spec.execution.backend).name)
        _bind_input(plan, array, axes)
        return execute(plan, array, device_out=device)

    # ------------------------------------------------------------------ run
    def run(self, *, input: str | None = None, output: str | None = None, cluster: str | None = None,
            backend: str | None = None, overwrite: bool | None = None, resume: bool = False,
            tile: Any = None, progress: Callable[[int, int], None] | None = None,
            log: Callable[[str], None] | None = None) -> RunResult:
        """Run the pipeline from the input to the output Zarr.

        An existing output is refused unless ``overwrite`` (which replaces only Zarr data); an output left
        incomplete by an interrupted run is refused unless ``resume`` (finish it, recomputing only unrecorded
        tiles) or ``overwrite``. ``resume`` wins over ``overwrite`` for an output of the same spec and input.
        An output or table that equals, contains or lies inside the input, by any name, is refused. Nothing
        is written before these checks pass and the cluster answers.

        Raises
        ------
        RunInterrupted
            On Ctrl-C (a ``KeyboardInterrupt``), saying how many tiles were written.
        """
        import contextlib

        from .execute import ProgressCounter, execute
        from .resume import decide

        spec = self.spec.with_overrides(input=input, output=output, cluster=cluster, backend=backend,
                                        overwrite=overwrite, tile=tile)
        if spec.output is None:
            raise SpecError("the spec has no output section: add output.url or pass --output", path="output")
        from .backends import resolve

        choice = resolve(spec.execution.backend)  # BackendError for gpu without a usable GPU
        be = choice.name
        in_url, arr, axes, ome = self._open(spec)
        info = ArrayInfo(tuple(arr.shape), np.dtype(arr.dtype), tuple(arr.chunks), axes)
        plan = self._plan_for(spec, info, be)
        _bind_voxel_sizes(plan, ome, spec.input.level)
        out_url = spec.resolve(spec.output.url)
        so = spec.output.storage_options
        tables = _table_sinks(plan, spec, so)
        _check_places(spec, in_url, bool(ome), out_url, tables)  # before anything is opened for writing
        want_ome = _want_ome(spec, ome, plan.output.axes, log)
        fp = fingerprint(arr, in_url)
        manifest = Manifest(out_url, so)
        tile_list = [plan.passes[-1].tile[a] for a in plan.output.axes]
        prov = {"complete": False, "spec": spec.canonical(),
                "spec_hash": spec.hash(compute=str(plan.compute_dtype), dtype=str(plan.output.dtype)),
                "version": __version__, "input_fingerprint": fp,
                "input_data": data_digest(arr, in_url, spec.input.storage_options), "input_url": in_url,
                "tile": tile_list, "axes": plan.output.axes, "spec_dir": str(spec.base_dir),
                "compute": str(plan.compute_dtype)}
        state = output_state(out_url, so)
        decision = decide(state, prov, out_url=out_url, resume=resume, overwrite=bool(spec.output.overwrite))
        if decision.action == "complete":
            if log:
                log(f"output {out_url} is already complete; nothing to resume")
            n = plan.passes[-1].n_tiles
            return RunResult(out_url, 0.0, int(np.prod(plan.output.shape, dtype=np.int64)), 0, n, n,
                             computed_voxels=0)
        if decision.note and log:
            log(decision.note)
        skip: set[str] = set()
        if decision.action == "resume":
            if list(state.get("tile", [])) != tile_list:
                plan = self._plan_for(spec.with_overrides(tile=dict(zip(plan.output.axes, state["tile"]))), info, be)
                _bind_voxel_sizes(plan, ome, spec.input.level)
                tables = _table_sinks(plan, spec, so)  # the same places, keyed by the new plan's ops
            want_ome = is_ome_output(out_url, so)  # finish in the layout the interrupted run started
            skip = manifest.done()
        else:  # create or replace: refused here, before anything is deleted, unless only Zarr data is there
            check_replaceable(out_url, so)
            for op, ts in tables.values():
                check_table(ts.url, so, what=f"{op.step.path if op.step is not None else op.name}.table")
        _bind_input(plan, arr, axes)
        source = _input_source(plan, arr, in_url, fp)
        t0 = time.perf_counter()
        n_tiles = plan.passes[-1].n_tiles
        monitor = RunMonitor()
        pyramid_method = pyramid_method_for(plan.output.dtype)
        created = decision.action == "resume"
        try:
            with contextlib.ExitStack() as stack:
                # the cluster first: one that does not answer must leave nothing behind
                cl = stack.enter_context(open_cluster(spec.execution.cluster, log=log))
                stack.enter_context(monitor)
                stack.enter_context(monitor.callback())
                if decision.action == "resume":
                    sink = open_sink(out_url, so)
                else:
                    make = create_ome_output if want_ome else create_output
                    extra = ({"axes": plan.output.axes, "input_ome": ome.get("info"),
                              "input_level": spec.input.level, "name": spec.name} if want_ome else {})
                    sink = make(out_url, shape=plan.output.shape, chunks=plan.output.chunks,
                                dtype=plan.output.dtype, zarr_format=spec.output.zarr_format,
                                attrs={"convpipe": prov}, overwrite=decision.action == "replace",
                                storage_options=so, **extra)
                    created = True
                    manifest.clear()
                    for _, ts in tables.values():
                        ts.clear()
                if log:
                    log(f"running {spec.name!r}: {n_tiles} tiles ({len(skip)} already done), "
                        f"{plan.tasks} tasks on {spec.execution.cluster}")
                from .backends import pass_annotations, warmup, worker_resources

                if log and choice.requested != "cpu":
                    log(choice.reason)  # "backend auto chose gpu: <device>"
                if be == "gpu":  # compile the kernels before the first task: here, or on every worker
                    if cl.client is not None:
                        from .gpu import register_warmup

                        register_warmup(cl.client, plan)
                    elif cl.compute_kwargs.get("scheduler") != "processes":  # worker processes warm
                        warmup(plan, log=log)                                  # up in their first task
                ann = pass_annotations(plan, worker_resources(cl.client))  # GPU passes -> GPU workers
                with monitor.phase("graph"):  # includes the statistics pre-pass of zscore / rescale
                    result = execute(plan, source, sink=sink, manifest=manifest, skip=skip,
                                     tables={k: v[1] for k, v in tables.items()}, compute=cl.compute,
                                     annotations=ann, canonical_source=True)
                    todo = n_tiles - len(skip & _all_keys(plan))
                    counter = ProgressCounter(todo, progress, result.name)
                with monitor.phase("compute"):
                    if cl.client is not None:
                        from distributed import get_task_stream

                        with get_task_stream(cl.client) as stream:
                            _run_distributed(cl.client, result, counter, optimize=not any(ann))
                        monitor.add_task_stream(stream.data)
                    else:
                        import dask

                        with counter.callback():
                            dask.compute(result, **cl.compute_kwargs)
                if want_ome:
                    with monitor.phase("pyramid"):
                        if log and spec.output.pyramid:
                            log(f"building {spec.output.pyramid} pyramid level(s) ({pyramid_method})")
                        finish_ome_output(out_url, levels=spec.output.pyramid, method=pyramid_method,
                                          axes=plan.output.axes, input_ome=ome.get("info"),
                                          input_level=spec.input.level, storage_options=so,
                                          compute=cl.compute, name=spec.name)
            # still in the try: a Ctrl-C while tables are merged leaves an incomplete output to resume
            _check_input_unchanged(prov["input_data"], arr, in_url, spec.input.storage_options, out_url)
            outputs = {"image": out_url}
            if want_ome:
                outputs["ome"] = {"levels": 1 + spec.output.pyramid, "method": pyramid_method,
                                  "ngff": "0.4" if spec.output.zarr_format == 2 else "0.5"}
            for op, ts in tables.values():
                rows = ts.finalize({"spec": prov["spec"], "input_fingerprint": fp, "version": __version__,
                                    "step": op.step.path if op.step is not None else op.name},
                                   merge=getattr(op, "merge_rows", None))
                outputs[op.step.path if op.step is not None else op.name] = {"table": ts.url, "rows": rows}
            elapsed = time.perf_counter() - t0
            prov["complete"] = True
            prov["outputs"] = outputs
            prov["elapsed_s"] = round(elapsed, 3)
            # the completeness mark is the last write (on the group of an OME output, else on the array)
            (provenance_node(out_url, so) if want_ome else sink).attrs.update({"convpipe": prov})
            if want_ome:
                # a complete OME group keeps only NGFF members: zarr warns about the foreign ".convpipe" folder
                # whenever a viewer lists the group, and a complete output never needs its manifest again
                manifest.clear()
        except ConvpipeError:
            raise
        except KeyboardInterrupt:
            written = len(manifest.done() & _all_keys(plan)) if created else None
            raise RunInterrupted(out_url, written, n_tiles) from None
        except MemoryError as e:
            raise ExecutionError(_memory_message(e, plan)) from None
        except Exception as e:
            raise ExecutionError(f"failed while running {spec.name!r} (output left incomplete; --resume "
                                 f"finishes it): {type(e).__name__}: {e}") from e
        total = int(np.prod(plan.output.shape, dtype=np.int64))
        return RunResult(out_url, elapsed, total, plan.tasks, n_tiles, len(skip), outputs,
                         timings=monitor.to_dict(), plan=plan, computed_voxels=total - _tile_voxels(plan, skip))


def _table_sinks(plan: Plan, spec: Spec, storage_options: dict) -> dict:
    """id(op) -> (op, TableSink) for every op writing a table (nothing is touched yet)."""
    from .tables import TableSink

    tables = {}
    for pp in plan.passes:
        for op in pp.ops:
            if getattr(op, "emits_table", False) and getattr(op.params, "table", None):
                tables[id(op)] = (op, TableSink(spec.resolve(op.params.table), storage_options))
    return tables


def _check_places(spec: Spec, in_url: str, in_is_group: bool, out_url: str, tables: dict) -> None:
    """Refuse (InputError) an output or table that equals, contains or lies inside the input, or another one.

    The input is its whole OME-Zarr image when it names one level of one (``img.zarr/0``): writing
    another level of that group would replace part of the image. A table also owns its ``.parts`` folder
    and ``.tmp`` file.
    """
    from .locations import check_apart, enclosing_image, locate

    iso, oso = spec.input.storage_options, spec.output.storage_options
    reads = [("the input", locate(in_url, iso))]
    if not in_is_group:
        image = enclosing_image(in_url, iso)
        if image is not None:
            reads.append(("the OME-Zarr image of the input", locate(image, iso)))
    writes = [("output.url", locate(out_url, oso))]
    for op, ts in tables.values():
        where = f"{op.step.path}.table" if op.step is not None else f"{op.name}.table"
        base = ts.url.rstrip("/")
        writes += [(where, locate(u, oso)) for u in (ts.url, base + ".parts", base + ".tmp")]
    check_apart(reads, writes)


def _check_input_unchanged(started: dict, arr: Any, url: str, storage_options: dict, out_url: str) -> None:
    """The input must hold the same data at the end of the run as at its start, or nothing is marked done."""
    now = data_digest(arr, url, storage_options)
    if now.get("digest") != started.get("digest"):
        raise ExecutionError(f"the input {url} changed while the run read it (its chunk objects were rewritten, "
                             f"added or deleted); output {out_url} is left incomplete: run again with "
                             "--overwrite once the input is settled")


def _tile_voxels(plan: Plan, keys: set[str]) -> int:
    """Voxels of the last pass's tiles named by ``keys`` (resumed tiles, for the throughput line)."""
    pp = plan.passes[-1]
    grid = pp.tile_grid()
    total = 0
    for key in keys:
        parts = key.split(".")
        if parts[0] != f"p{pp.index}" or len(parts) != len(grid) + 1:
            continue
        try:
            idx = [int(p) for p in parts[1:]]
            total += int(np.prod([grid[a][i][1] - grid[a][i][0] for a, i in enumerate(idx)], dtype=np.int64))
        except (ValueError, IndexError):
            continue
    return total


def _memory_message(e: MemoryError, plan: Plan) -> str:
    """What ran out of memory, on what, and what to change: a MemoryError alone often says nothing."""
    from .ops.base import Op
    from .plan import _fmt_bytes

    op = None
    tb = e.__traceback__
    while tb is not None:  # the innermost op on the stack (in-process schedulers keep the frames)
        s = tb.tb_frame.f_locals.get("self")
        if isinstance(s, Op):
            op = s
        tb = tb.tb_next
    pp = next((p for p in plan.passes if op is not None and op in p.ops),
              max(plan.passes, key=lambda p: p.mem_per_task))
    if op is None:
        op = max(pp.ops, key=lambda o: int(np.prod([lo + hi + 1 for lo, hi in o.halo().values()] or [1])))
    step = op.step
    where = step.path if step is not None else op.name
    line = step.spec.line_of(("steps", step.index, step.name)) if step is not None and step.spec is not None \
        else None
    tile = ", ".join(f"{a}: {n}" for a, n in pp.tile.items())
    halo = {a: lo + hi + 1 for a, (lo, hi) in op.halo().items() if lo or hi}
    what = (f"with a window of {', '.join(f'{a}: {n}' for a, n in halo.items())} "
            f"({int(np.prod(list(halo.values()))):,} voxels per output voxel)") if halo else op.describe()
    detail = f" ({e})" if str(e) else ""
    return (f"out of memory in {where}{f' (line {line})' if line else ''} on tiles of {{{tile}}}, {what}: the "
            f"plan estimated {_fmt_bytes(pp.mem_per_task)} per task and {_fmt_bytes(plan.memory_per_worker)} per "
            f"worker, the step needed more{detail}. Use a smaller window or a smaller execution.tile, or give "
            "each worker more memory (fewer workers, execution.memory_limit); the output is left incomplete "
            "(--resume finishes it)")


def _bind_voxel_sizes(plan: Plan, ome: dict, level: int | None) -> None:
    """Ops whose defaults come from the input's OME metadata (distance_transform's sampling: the voxel sizes
    of the level read) get them here; metadata only, so explain does this too."""
    info = ome.get("info") if ome else None
    if info is None or not info.axes:
        return
    try:
        scale = info.levels[int(level or 0)].scale
    except (IndexError, TypeError, ValueError):
        return
    sizes = dict(zip(info.axes, (float(v) for v in scale)))
    for pp in plan.passes:
        for op in pp.ops:
            bind = getattr(op, "bind_voxel_sizes", None)
            if bind is not None:
                bind(sizes)


def _bind_input(plan: Plan, array: Any, axes: str) -> None:
    """Ops that read part of the pipeline's input at plan time (match_template's crop template) read it here,
    from the array actually being processed (explain never calls this: it reads no data)."""
    for pp in plan.passes:
        for op in pp.ops:
            bind = getattr(op, "bind_input", None)
            if bind is not None:
                bind(array, axes)


def _want_ome(spec: Spec, ome: dict, axes: str, log: Callable[[str], None] | None) -> bool:
    """Whether the output is an OME-Zarr group: ``output.ome``, default true for OME input or a pyramid."""
    out = spec.output
    if out.ome is False:
        if out.pyramid:
            raise SpecError("output.pyramid needs an OME-Zarr output; drop output.ome: false",
                            path="output.pyramid", line=spec.line_of(("output", "pyramid")))
        return False
    problem = ome_output_problem(axes)
    if out.ome is None:
        if not (ome or out.pyramid):
            return False
        if problem:
            if out.pyramid:
                raise SpecError(f"output.pyramid needs an OME-Zarr output, but {problem}", path="output.pyramid",
                                line=spec.line_of(("output", "pyramid")))
            if log:
                log(f"note: writing a plain Zarr array, not OME-Zarr: {problem}")
            return False
    elif problem:
        raise SpecError(f"output.ome: {problem}", path="output.ome", line=spec.line_of(("output", "ome")))
    return True


def _input_source(plan: Plan, arr: Any, url: str, fingerprint: str) -> Any:
    """The input as a dask array in the plan's compute order, read in the blocks the first pass wants."""
    import dask.array as da

    from .plan import read_chunks

    rc = read_chunks(plan.input, plan.passes[0].tile)
    perm = plan.in_perm
    reader = _ChunkReader(arr, url, perm)
    name = f"convpipe-input-{fingerprint}" + ("-t" + "".join(map(str, perm)) if perm else "")
    return da.from_array(reader, chunks=tuple(rc[a] for a in plan.compute_axes), name=name, inline_array=False,
                         lock=False, meta=np.empty((0,) * arr.ndim, dtype=arr.dtype))


class _ChunkReader:
    """The input as dask reads it, naming the stored chunk(s) that cannot be read or decoded.

    With ``perm`` it presents the input transposed (``numpy.transpose(stored, perm)``): selections come in
    the transposed order, and each block read is copied to that order once, C-contiguous
    (:func:`convpipe.engines.transposed_copy`): every tile that shares the chunk then assembles from plain
    memory (assembling tiles from transposed views measured 5x the cost of that one copy), and OpenCV's
    fast paths see the last axis in memory order.
    """

    def __init__(self, arr: Any, url: str, perm: tuple[int, ...] | None = None):
        self.arr, self.url, self.perm = arr, url, perm
        self.dtype, self.ndim = arr.dtype, arr.ndim
        self.shape = tuple(arr.shape[i] for i in perm) if perm else arr.shape

    def __getitem__(self, sel: Any) -> np.ndarray:
        if self.perm is not None:
            sel = sel if isinstance(sel, tuple) else (sel,)
            sel = sel + (slice(None),) * (self.ndim - len(sel))
            stored = [slice(None)] * self.ndim
            for j, i in enumerate(self.perm):
                stored[i] = sel[j]
            from .engines import transposed_copy

            return transposed_copy(np.asarray(self._read(tuple(stored))), self.perm)
        return self._read(sel)

    def _read(self, sel: Any) -> np.ndarray:
        try:
            return self.arr[sel]
        except Exception as e:
            bad = self._bad_chunks(sel)
            what = (f"chunk {bad[0]}" if len(bad) == 1 else f"chunks {', '.join(bad[:5])}") if bad else \
                f"the region {sel!r}"
            raise ExecutionError(f"cannot read {what} of the input {self.url} ({type(e).__name__}: {e}); "
                                 "output left incomplete: restore the input, then --resume finishes it") from None

    def _bad_chunks(self, sel: Any) -> list[str]:
        """The keys of the stored chunks under ``sel`` that fail on their own (reads them one by one)."""
        import itertools

        sel = sel if isinstance(sel, tuple) else (sel,)
        if len(sel) != self.ndim or not all(isinstance(s, slice) and s.step in (None, 1) for s in sel):
            return []
        ranges = []
        for s, n, c in zip(sel, self.shape, self.arr.chunks):
            start, stop = s.start or 0, n if s.stop is None else s.stop
            ranges.append(range(start // c, -(-stop // c)))
        bad = []
        for idx in itertools.product(*ranges):
            region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, self.arr.chunks, self.shape))
            try:
                self.arr[region]
            except Exception:  # noqa: BLE001 - this one is damaged
                try:
                    bad.append(str(self.arr.metadata.encode_chunk_key(idx)))
                except Exception:  # noqa: BLE001 - the key is advisory
                    bad.append(".".join(map(str, idx)))
        return bad

    def __reduce__(self):
        return (_ChunkReader, (self.arr, self.url, self.perm))


def _all_keys(plan: Plan) -> set[str]:
    import itertools

    from .execute import tile_key

    pp = plan.passes[-1]
    return {tile_key(i, pp.index) for i in itertools.product(*[range(len(g)) for g in pp.tile_grid()])}


def _run_distributed(client: Any, result: Any, counter: Any, optimize: bool = True) -> None:
    from distributed import as_completed

    # dask's array optimization drops layer annotations (a GPU pass's resources): skip it when annotated
    futures = client.compute(result.to_delayed(optimize_graph=optimize).ravel().tolist())
    for fut in as_completed(futures):
        fut.result()
        counter.tick()
