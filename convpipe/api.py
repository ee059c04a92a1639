"""The Python API: ``convpipe.load(spec) -> Pipeline`` with ``apply``, ``explain`` and ``run``.

A thin facade: a run lives in :mod:`convpipe.run` (its phases, outputs and events), a plan in
:mod:`convpipe.plan`, a plan's dask graph in :mod:`convpipe.execute`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .errors import InputError
from .plan import ArrayInfo, Plan, make_plan
from .run.core import RunResult
from .run.events import Event, EventBus, log_subscriber, progress_subscriber
from .spec import AXES_ORDER, Spec, load_spec

__all__ = ["Pipeline", "RunResult", "load"]


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

    def explain(self, **overrides: Any) -> Plan:
        """The plan on the spec's input (reads metadata only, never chunk data)."""
        from .backends import backend_note, resolve
        from .run.prepare import array_info, open_spec_input, plan_for

        spec = self.spec.with_overrides(**overrides) if overrides else self.spec
        _, arr, axes, ome = open_spec_input(spec)
        choice = resolve(spec.execution.backend, strict=False)  # gpu without a GPU: explain still plans
        plan = plan_for(spec, array_info(arr, axes), choice.name, ome)
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
        from .run.prepare import bind_input, cluster_resources

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
        workers, mem = cluster_resources(spec)
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
        bind_input(plan, array, axes)
        return execute(plan, array, device_out=device)

    # ------------------------------------------------------------------ run
    def run(self, *, input: str | None = None, output: str | None = None, cluster: str | None = None,
            backend: str | None = None, overwrite: bool | None = None, resume: bool = False,
            tile: Any = None, progress: Callable[[int, int], None] | None = None,
            log: Callable[[str], None] | None = None,
            on_event: Callable[[Event], Any] | Iterable[Callable[[Event], Any]] | None = None) -> RunResult:
        """Run the pipeline from the input to the output Zarr.

        An existing output is refused unless ``overwrite`` (which replaces only Zarr data); an output left
        incomplete by an interrupted run is refused unless ``resume`` (finish it, recomputing only unrecorded
        tiles) or ``overwrite``. ``resume`` wins over ``overwrite`` for an output of the same spec and input.
        An output or table that equals, contains or lies inside the input, by any name, is refused. Nothing
        is written before these checks pass and the cluster answers.

        Parameters
        ----------
        input, output, cluster, backend, overwrite, tile
            Override the spec's ``input.url``, ``output.url``, ``execution.cluster``, ``execution.backend``,
            ``output.overwrite`` and ``execution.tile``.
        resume : bool
            Finish an output left incomplete by an interrupted run.
        progress : callable, optional
            ``progress(done, total)``: the final pass's tiles this run computed, at most every 0.2 s and at
            the last tile.
        log : callable, optional
            ``log(message)`` for every log line and warning of the run.
        on_event : callable or iterable of callables, optional
            Subscribers to the run's typed events (:mod:`convpipe.run.events`).

        Raises
        ------
        RunInterrupted
            On Ctrl-C (a ``KeyboardInterrupt``), saying how many tiles were written.
        """
        from .run.core import run_pipeline

        spec = self.spec.with_overrides(input=input, output=output, cluster=cluster, backend=backend,
                                        overwrite=overwrite, tile=tile)
        subscribers = [] if on_event is None else [on_event] if callable(on_event) else list(on_event)
        if log is not None:
            subscribers.append(log_subscriber(log))
        if progress is not None:
            subscribers.append(progress_subscriber(progress))
        return run_pipeline(spec, resume=resume, bus=EventBus(subscribers))
