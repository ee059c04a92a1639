"""A run, phase by phase: prepare, open the cluster, create or open the output, execute, finish.

:func:`run_pipeline` is what ``Pipeline.run`` and the command line call. Its phases, each a function:

1. :func:`convpipe.run.prepare.prepare` — open the input, plan, check places, decide (writes nothing);
2. the cluster (``convpipe.cluster.open_cluster``) — one that does not answer leaves nothing behind;
3. :func:`convpipe.run.write.open_output` — create (or replace) the output, or reopen it to resume;
4. :func:`_execute` — GPU warm-up, the plan's graph (:mod:`convpipe.execute`), its computation counted
   into events (:mod:`convpipe.run.loop`), the OME-Zarr pyramid;
5. :func:`convpipe.run.write.finish` — input unchanged, tables merged, provenance marked complete last.

Everything the run has to say goes out as events (:mod:`convpipe.run.events`); failures are typed
(``ExecutionError``, ``RunInterrupted`` saying how many tiles were written) and end the event stream with
``Failed`` / ``Interrupted``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cluster import open_cluster
from ..errors import ConvpipeError, ExecutionError, InputError, RunInterrupted, SpecError
from ..estimate import FIRST_RUN_MODULE, LOADS
from ..monitor import RunMonitor
from ..spec import Spec
from .events import EventBus, Failed, Finished, Interrupted, PassSummary, RunStarted
from .failure import memory_message
from .loop import ProgressCounter, all_keys, compute, tile_voxels
from .prepare import Prepared, bind_input, prepare
from .source import input_source
from .write import build_pyramid, finish, open_output, withdraw_output

__all__ = ["RunResult", "run_pipeline"]


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
    #: RunMonitor.to_dict(): task stream by key prefix, phases, passes, messages, peak RSS (empty when not measured)
    timings: dict = field(default_factory=dict, repr=False)
    #: the Plan the run executed (for reports); None for a resume that found nothing to do
    plan: Any = field(default=None, repr=False, compare=False)
    #: output voxels this run computed (a resume skips the recorded tiles); None: all of ``voxels``
    computed_voxels: int | None = None
    #: of the engines and the libraries some plans load on first use (convpipe.estimate), those the process had
    #: loaded before the run: the rest loaded on the run's clock, which the summary's estimate counts
    modules_before: frozenset | None = field(default=None, repr=False)

    @property
    def voxels_per_second(self) -> float:
        """Throughput of this run: the voxels it computed (not those a resume found done) per second."""
        n = self.voxels if self.computed_voxels is None else self.computed_voxels
        return n / self.elapsed if self.elapsed > 0 else float("inf")


def run_pipeline(spec: Spec, *, resume: bool = False, bus: EventBus | None = None) -> RunResult:
    """Run ``spec`` (with its overrides applied) from its input to its output.

    Parameters
    ----------
    spec : Spec
        The validated spec, as it runs.
    resume : bool
        Finish an output an interrupted run left incomplete (see :mod:`convpipe.resume`).
    bus : EventBus, optional
        Receives the run's events.

    Raises
    ------
    RunInterrupted
        On Ctrl-C (a ``KeyboardInterrupt``) once the output exists, saying how many tiles were written.
    ConvpipeError
        Refusals before anything is written (``InputError``, ``SpecError``, ``OutputExistsError``, ...)
        and ``ExecutionError`` for failures while running (the output is left incomplete).
    """
    bus = bus if bus is not None else EventBus()
    try:
        return _run(spec, resume, bus)
    except RunInterrupted as e:
        bus.emit(Interrupted(e.output_url, e.written, e.tiles), quiet=True)
        raise
    except KeyboardInterrupt:  # before anything was created
        bus.emit(Interrupted(), quiet=True)
        raise
    except ConvpipeError as e:
        bus.emit(Failed(str(e), type(e).__name__), quiet=True)
        raise
    except Exception as e:
        bus.emit(Failed(f"{type(e).__name__}: {e}", type(e).__name__), quiet=True)
        raise


def _run(spec: Spec, resume: bool, bus: EventBus) -> RunResult:
    monitor = RunMonitor()  # measures the run for its report, its messages from the first
    unsubscribe = bus.subscribe(monitor)
    try:
        return _phases(spec, resume, bus, monitor)
    finally:
        unsubscribe()


def _phases(spec: Spec, resume: bool, bus: EventBus, monitor: RunMonitor) -> RunResult:
    p = prepare(spec, resume=resume, bus=bus)
    plan = p.plan
    n_tiles = plan.passes[-1].n_tiles
    total = int(np.prod(plan.output.shape, dtype=np.int64))
    if p.decision.action == "complete":
        bus.log(f"output {p.out_url} is already complete; nothing to resume")
        res = RunResult(p.out_url, 0.0, total, 0, n_tiles, n_tiles, computed_voxels=0)
        bus.emit(Finished(p.out_url, 0.0, total, 0, n_tiles, n_tiles, 0))
        return res
    bind_input(plan, p.arr, p.axes)
    source = input_source(plan, p.arr, p.in_url, p.fingerprint)
    before = frozenset(m for m in (FIRST_RUN_MODULE, *LOADS) if m in sys.modules)  # before the run loads any
    t0 = time.perf_counter()
    created = p.decision.action == "resume"
    made = False  # this run created (or replaced) the output
    try:
        with contextlib.ExitStack() as stack:
            # the cluster first: one that does not answer must leave nothing behind
            cl = stack.enter_context(open_cluster(spec.execution.cluster, log=bus.log))
            stack.enter_context(monitor)
            stack.enter_context(monitor.callback())
            sink = open_output(p)
            created = True
            made = p.decision.action != "resume"
            _execute(p, cl, source, sink, bus, monitor)
        # still in the try: a Ctrl-C while tables are merged leaves an incomplete output to resume
        outputs, elapsed = finish(p, sink, t0)
    except ConvpipeError as e:
        if made and isinstance(e, (SpecError, InputError)):
            withdraw_output(p, bus)
        raise
    except KeyboardInterrupt:
        written = len(p.manifest.done() & all_keys(plan)) if created else None
        raise RunInterrupted(p.out_url, written, n_tiles) from None
    except MemoryError as e:
        raise ExecutionError(memory_message(e, plan)) from None
    except Exception as e:
        raise ExecutionError(f"failed while running {spec.name!r} (output left incomplete; --resume "
                             f"finishes it): {type(e).__name__}: {e}") from e
    computed = total - tile_voxels(plan, p.skip)
    res = RunResult(p.out_url, elapsed, total, plan.tasks, n_tiles, len(p.skip), outputs,
                    timings=monitor.to_dict(), plan=plan, computed_voxels=computed, modules_before=before)
    bus.emit(Finished(p.out_url, elapsed, total, computed, n_tiles, len(p.skip), plan.tasks))
    return res


def _started(p: Prepared, recorded: int, bus: EventBus) -> None:
    """``RunStarted`` with the plan's summary, and the "running ..." line."""
    from ..backends import pass_backend

    plan, spec = p.plan, p.spec
    n_tiles = plan.passes[-1].n_tiles
    passes = tuple(PassSummary(pp.index, tuple(op.name for op in pp.ops), pp.n_tiles, pass_backend(plan, pp))
                   for pp in plan.passes)
    bus.emit(RunStarted(spec.name, p.out_url, p.decision.action, spec.execution.cluster, p.backend, n_tiles,
                        recorded, plan.tasks, passes))
    bus.log(f"running {spec.name!r}: {n_tiles} tiles ({len(p.skip)} already done), "
            f"{plan.tasks} tasks on {spec.execution.cluster}")


def _execute(p: Prepared, cl: Any, source: Any, sink: Any, bus: EventBus, monitor: RunMonitor) -> None:
    """Warm up the GPU, build the plan's graph, compute it counting tiles, build the pyramid."""
    from ..backends import pass_annotations, warmup, worker_resources
    from ..execute import execute

    plan = p.plan
    recorded = len(p.skip & all_keys(plan)) if p.skip else 0
    _started(p, recorded, bus)
    if p.choice.requested != "cpu":
        bus.log(p.choice.reason)  # "backend auto chose gpu: <device>"
    if p.backend == "gpu":  # compile the kernels before the first task: here, or on every worker
        if cl.client is not None:
            from ..gpu import register_warmup

            register_warmup(cl.client, plan)
        elif cl.compute_kwargs.get("scheduler") != "processes":  # worker processes warm up in their first task
            warmup(plan, log=bus.log)
    ann = pass_annotations(plan, worker_resources(cl.client))  # GPU passes -> GPU workers
    with bus.phase("graph"):  # includes the statistics pre-pass of zscore / rescale
        result = execute(plan, source, sink=sink, manifest=p.manifest, skip=p.skip,
                         tables={k: v[1] for k, v in p.tables.items()}, compute=cl.compute,
                         annotations=ann, canonical_source=True)
        counter = ProgressCounter(bus, result.name, plan.passes[-1].index, plan.passes[-1].n_tiles - recorded,
                                  p.skip)
    with bus.phase("compute"):
        compute(result, cl, counter, optimize=not any(ann), monitor=monitor)
    if p.want_ome:
        with bus.phase("pyramid"):
            build_pyramid(p, cl.compute, bus)
