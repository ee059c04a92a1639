"""The Python API: ``convpipe.load(spec) -> Pipeline`` with ``apply``, ``explain`` and ``run``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import __version__
from .cluster import describe, open_cluster
from .errors import ConvpipeError, ExecutionError, InputError, OutputExistsError, SpecError
from .io import Manifest, create_output, fingerprint, open_input, output_state
from .outputs import (create_ome_output, finish_ome_output, is_ome_output, ome_output_problem, open_sink,
                      provenance_node)
from .outputs import pyramid_method as pyramid_method_for
from .plan import ArrayInfo, Plan, make_plan, parse_bytes
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

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.elapsed if self.elapsed > 0 else float("inf")


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
            raise InputError(f"input.url{f' (line {line})' if line else ''}: {e}") from None
        return url, arr, axes, ome

    def explain(self, **overrides: Any) -> Plan:
        """The plan on the spec's input (reads metadata only, never chunk data)."""
        spec = self.spec.with_overrides(**overrides) if overrides else self.spec
        _, arr, axes, _ = self._open(spec)
        info = ArrayInfo(tuple(arr.shape), np.dtype(arr.dtype), tuple(arr.chunks), axes)
        from .backends import backend_note, resolve

        choice = resolve(spec.execution.backend, strict=False)  # gpu without a GPU: explain still plans
        plan = self._plan_for(spec, info, choice.name)
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

        An existing output is refused unless ``overwrite``; an output left incomplete by an interrupted run
        is refused unless ``resume`` (finish it, recomputing only unrecorded tiles) or ``overwrite``.
        """
        import dask.array as da

        from .execute import ProgressCounter, execute

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
        out_url = spec.resolve(spec.output.url)
        if os.path.abspath(out_url) == os.path.abspath(in_url):
            raise InputError(f"output {out_url} is the input; write somewhere else")
        want_ome = _want_ome(spec, ome, plan.output.axes, log)
        so = spec.output.storage_options
        fp = fingerprint(arr, in_url)
        state = output_state(out_url, so)
        skip: set[str] = set()
        manifest = Manifest(out_url, so)
        tile_list = [plan.passes[-1].tile[a] for a in plan.output.axes]
        prov = {"complete": False, "spec": spec.canonical(),
                "spec_hash": spec.hash(compute=str(plan.compute_dtype), dtype=str(plan.output.dtype)),
                "version": __version__, "input_fingerprint": fp, "input_url": in_url, "tile": tile_list,
                "axes": plan.output.axes, "spec_dir": str(spec.base_dir), "compute": str(plan.compute_dtype)}
        if state is not None and not spec.output.overwrite:
            if not resume:
                if state.get("complete") is False:
                    raise OutputExistsError(f"output {out_url} is incomplete (an earlier run was interrupted): "
                                            "use --resume to finish it or --overwrite to start again")
                raise OutputExistsError(f"output {out_url} exists; use --overwrite to replace it")
            if not state:
                raise OutputExistsError(f"output {out_url} exists and was not written by convpipe; "
                                        "refusing to resume into it (use --overwrite)")
            if state.get("complete") and state.get("spec_hash") == prov["spec_hash"] \
                    and state.get("input_fingerprint") == fp:
                if log:
                    log(f"output {out_url} is already complete; nothing to resume")
                return RunResult(out_url, 0.0, int(np.prod(plan.output.shape)), 0, plan.passes[-1].n_tiles,
                                 plan.passes[-1].n_tiles)
            if state.get("spec_hash") != prov["spec_hash"]:
                raise InputError(f"cannot resume {out_url}: the spec changed since it was written "
                                 "(use --overwrite to start again)")
            if state.get("input_fingerprint") != fp:
                raise InputError(f"cannot resume {out_url}: the input changed since it was written "
                                 "(use --overwrite to start again)")
            if list(state.get("tile", [])) != tile_list:
                plan = self._plan_for(spec.with_overrides(tile=dict(zip(plan.output.axes, state["tile"]))), info, be)
            sink = open_sink(out_url, so)
            want_ome = is_ome_output(out_url, so)  # finish in the layout the interrupted run started
            skip = manifest.done()
        else:
            make = create_ome_output if want_ome else create_output
            extra = ({"axes": plan.output.axes, "input_ome": ome.get("info"), "input_level": spec.input.level,
                      "name": spec.name} if want_ome else {})
            sink = make(out_url, shape=plan.output.shape, chunks=plan.output.chunks,
                        dtype=plan.output.dtype, zarr_format=spec.output.zarr_format,
                        attrs={"convpipe": prov}, overwrite=bool(spec.output.overwrite or state is not None),
                        storage_options=so, **extra)
            manifest.clear()
        _bind_input(plan, arr, axes)
        tables = {}
        for pp in plan.passes:
            for op in pp.ops:
                if getattr(op, "emits_table", False) and getattr(op.params, "table", None):
                    from .tables import TableSink

                    tables[id(op)] = (op, TableSink(spec.resolve(op.params.table), so))
        if not skip:
            for _, ts in tables.values():
                ts.clear()
        from .plan import read_chunks

        rc = read_chunks(info, plan.passes[0].tile)
        source = da.from_array(_ChunkReader(arr, in_url), chunks=tuple(rc[a] for a in info.axes),
                               name=f"convpipe-input-{fp}", inline_array=False, lock=False,
                               meta=np.empty((0,) * arr.ndim, dtype=arr.dtype))
        t0 = time.perf_counter()
        n_tiles = plan.passes[-1].n_tiles
        if log:
            log(f"running {spec.name!r}: {n_tiles} tiles ({len(skip)} already done), "
                f"{plan.tasks} tasks on {spec.execution.cluster}")
        monitor = RunMonitor()
        pyramid_method = pyramid_method_for(plan.output.dtype)
        try:
            with open_cluster(spec.execution.cluster, log=log) as cl, monitor, monitor.callback():
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
                                     annotations=ann)
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
        except ConvpipeError:
            raise
        except KeyboardInterrupt:
            raise
        except MemoryError as e:
            raise ExecutionError(f"out of memory while running (output left incomplete; --resume finishes it): "
                                 f"{e}") from None
        except Exception as e:
            raise ExecutionError(f"failed while running {spec.name!r} (output left incomplete; --resume "
                                 f"finishes it): {type(e).__name__}: {e}") from e
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
        return RunResult(out_url, elapsed, int(np.prod(plan.output.shape, dtype=np.int64)), plan.tasks,
                         n_tiles, len(skip), outputs, timings=monitor.to_dict(), plan=plan)


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


class _ChunkReader:
    """The input as dask reads it, naming the stored chunk(s) that cannot be read or decoded."""

    def __init__(self, arr: Any, url: str):
        self.arr, self.url = arr, url
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __getitem__(self, sel: Any) -> np.ndarray:
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
        return (_ChunkReader, (self.arr, self.url))


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
