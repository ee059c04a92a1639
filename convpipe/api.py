"""The Python API: ``convpipe.load(spec) -> Pipeline`` with ``apply``, ``explain`` and ``run``.

A thin facade: a run lives in :mod:`convpipe.run` (its phases, outputs and events), a plan in
:mod:`convpipe.plan`, a plan's dask graph in :mod:`convpipe.execute`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import calibrate  # noqa: F401  (hands the calibration in: Plan.estimate() measures this machine once)
from .lazy_exports import lazy_exports
from .spec import Spec, load_spec

if TYPE_CHECKING:
    from .plan import Plan
    from .run.core import RunResult
    from .run.events import Event

# The run machinery (run.core: dask, zarr, the engines) loads when a run or apply needs it, not with the API:
# ``load`` and ``explain`` (the command line's start-up, issue 17) never run anything. ``RunResult`` is still
# this module's name (PEP 562).


__getattr__, _ = lazy_exports(__name__, __package__, {"RunResult": "run.core"})

__all__ = ["Pipeline", "RunResult", "load"]


def load(source: str | os.PathLike | dict | Spec) -> "Pipeline":
    """Load a spec (YAML/JSON path, or a dict) into a :class:`Pipeline`.

    The spec may leave out ``input`` (and ``output``): :meth:`Pipeline.apply` takes the array itself, and
    :meth:`Pipeline.run` / :meth:`Pipeline.explain` then need ``input=``.

    Examples
    --------
    >>> import numpy as np, convpipe
    >>> p = convpipe.load({"convpipe": 1, "steps": [{"gaussian": {"sigma": 1}}]})
    >>> p.apply(np.ones((8, 8)), axes="yx").compute().shape
    (8, 8)
    """
    return Pipeline(source if isinstance(source, Spec) else load_spec(source, input_required=False))


class Pipeline:
    """A validated spec, ready to plan and run."""

    def __init__(self, spec: Spec):
        self.spec = spec

    def __repr__(self) -> str:
        from .display import pipeline_text

        return pipeline_text(self)

    def _repr_html_(self) -> str:  # Jupyter
        from .display import pipeline_html

        return pipeline_html(self)

    def explain(self, **overrides: Any) -> Plan:
        """The plan on the spec's input (reads metadata only, never chunk data)."""
        from .backends import backend_note, resolve
        from .run.plan_input import array_info, open_spec_input, plan_for

        spec = self.spec.with_overrides(**overrides) if overrides else self.spec
        _, arr, axes, ome = open_spec_input(spec, metadata_only=True)
        choice = resolve(spec.execution.backend, strict=False)  # gpu without a GPU: explain still plans
        plan = plan_for(spec, array_info(arr, axes), choice.name, ome)
        plan.backend_note = backend_note(choice, plan)  # "auto chose gpu: <device>", passes left on the CPU
        return plan

    # ------------------------------------------------------------------ apply
    def apply(self, array: Any, axes: str | None = None, *, tile: Any = None, tables: bool = False) -> Any:
        """Apply the steps to an in-memory or dask array; returns a lazy dask array.

        The spec's ``input`` (and ``output``) are not used: a spec for ``apply`` may leave them out.

        Parameters
        ----------
        array : numpy.ndarray, dask.array.Array or cupy.ndarray, shape (..., y, x)
        axes : str, optional
            One letter per axis from 'tczyx'; default the last ``array.ndim`` letters.
        tile : dict or list, optional
            Work tile; default the array's chunks.
        tables : bool
            Also compute the tables of the chain's table ops (``peaks``, ``blobs``, ``match_template``,
            ``stats``; with or without ``table:`` in the spec). Without it, a step that names a ``table``
            is refused (SpecError): apply writes nothing, and the table would be lost silently.

        Returns
        -------
        dask.array.Array
            Same axes (plus ``c`` for ops that add channels), dtype by the pipeline's dtype rule.
        (numpy.ndarray, dict) with ``tables=True``
            The computed image (CuPy for CuPy input) and ``{step path: table}`` (``"steps[1].peaks"``, as
            :attr:`RunResult.outputs` names it), each a pandas DataFrame when pandas is installed, else a
            ``pyarrow.Table``, with the rows and columns the run's Parquet table would hold.
        """
        from .apply_tables import apply_array

        return apply_array(self.spec, array, axes, tile=tile, tables=tables)

    # ------------------------------------------------------------------ run
    def run(self, *, input: str | None = None, output: str | None = None, cluster: str | None = None,
            backend: str | None = None, overwrite: bool | None = None, resume: bool = False,
            tile: Any = None, progress: Callable[[int, int], None] | bool | None = None,
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
        progress : callable or bool, optional
            ``progress(done, total)``: the final pass's tiles this run computed, at most every 0.2 s and at
            the last tile. ``True``: a progress bar (rich's: a live widget in Jupyter, a bar on a terminal,
            :class:`convpipe.progress.ProgressBar`). Without it the run prints nothing.
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
        from .run.events import EventBus, log_subscriber, progress_subscriber

        spec = self.spec.with_overrides(input=input, output=output, cluster=cluster, backend=backend,
                                        overwrite=overwrite, tile=tile)
        subscribers = [] if on_event is None else [on_event] if callable(on_event) else list(on_event)
        if log is not None:
            subscribers.append(log_subscriber(log))
        if progress is True:
            from .progress import ProgressBar

            with ProgressBar(spec.name) as bar:
                return run_pipeline(spec, resume=resume, bus=EventBus([*subscribers, progress_subscriber(bar)]))
        if callable(progress):
            subscribers.append(progress_subscriber(progress))
        return run_pipeline(spec, resume=resume, bus=EventBus(subscribers))
