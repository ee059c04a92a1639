"""The execution loop of a run: compute the plan's graph on the cluster, counting tiles into events.

:class:`ProgressCounter` turns finished tile tasks into ``PassStarted`` / ``TileDone`` / ``PassDone``
events (:mod:`convpipe.run.events`). Local schedulers (threads, sync, processes) report through a dask
callback that sees every task, so every pass is counted; a distributed client reports the final pass's
futures as they complete (the earlier passes run inside the cluster, as their dependencies).
"""

from __future__ import annotations

import itertools
import re
import threading
from typing import Any

import numpy as np

from ..execute import tile_key
from ..plan import Plan
from .events import EventBus, PassDone, PassStarted, TileDone

__all__ = ["ProgressCounter", "all_keys", "compute", "tile_voxels"]

_PASS = re.compile(r"^convpipe-pass(\d+)-")


def all_keys(plan: Plan) -> set[str]:
    """The manifest keys of every tile of the final pass."""
    pp = plan.passes[-1]
    return {tile_key(i, pp.index) for i in itertools.product(*[range(len(g)) for g in pp.tile_grid()])}


def tile_voxels(plan: Plan, keys: set[str]) -> int:
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


class ProgressCounter:
    """Counts the tile tasks of a run's graph, pass by pass, and emits them as events.

    Parameters
    ----------
    bus : EventBus
        Where ``PassStarted``, ``TileDone`` and ``PassDone`` go.
    final_name : str
        The dask name of the final pass (the graph's result).
    final_index : int
        That pass's index in the plan.
    total : int
        Final tiles this run computes (a resume leaves out the recorded ones).
    skip : set of str
        The recorded tiles (their graph keys hold markers, not tasks).
    """

    def __init__(self, bus: EventBus, final_name: str, final_index: int, total: int, skip: set[str] | None = None):
        self.bus = bus
        self.final = final_index
        self.skip = skip or set()
        self.names = {final_name: final_index}  # dask name -> pass index
        self.total = {final_index: int(total)}
        self.done = {final_index: 0}
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._lock = threading.Lock()

    # the counts ------------------------------------------------------------
    def pass_of(self, key: Any) -> int | None:
        """The pass a tile task's key belongs to; None for other tasks and for a recorded tile's marker."""
        if not (isinstance(key, tuple) and key and isinstance(key[0], str)):
            return None
        i = self.names.get(key[0])
        if i == self.final and self.skip and tile_key(key[1:], i) in self.skip:
            return None  # a recorded tile's marker
        return i

    def start(self, index: int) -> None:
        """Emit ``PassStarted`` for pass ``index`` (once)."""
        with self._lock:
            if index in self._started:
                return
            self._started.add(index)
        self.bus.emit(PassStarted(index, self.total.get(index, 0), index == self.final))

    def tick(self, index: int | None = None) -> None:
        """One more tile of pass ``index`` (default the final one) is done."""
        index = self.final if index is None else index
        self.start(index)
        with self._lock:
            self.done[index] = done = self.done.get(index, 0) + 1
            total = self.total.get(index, done)
            over = done >= total and index not in self._finished
            if over:
                self._finished.add(index)
        self.bus.emit(TileDone(index, done, total, index == self.final))
        if over:
            self.bus.emit(PassDone(index, done, index == self.final))

    def close(self) -> None:
        """The graph computed: every counted pass not yet reported done is (one with nothing to do, too)."""
        for index in sorted(self.total):
            if index not in self._finished:
                self.start(index)
                self._finished.add(index)
                self.bus.emit(PassDone(index, self.done.get(index, 0), index == self.final))

    # local schedulers ------------------------------------------------------
    def callback(self) -> Any:
        """A dask callback counting the tile tasks of computes run in this thread, every pass of the plan."""
        from dask.callbacks import Callback

        outer, owner = self, threading.get_ident()

        class _Tiles(Callback):
            def _start(self, dsk):
                if threading.get_ident() == owner:
                    outer._count_passes(dsk)

            def _pretask(self, key, dsk, state):
                if threading.get_ident() == owner:
                    i = outer.pass_of(key)
                    if i is not None:
                        outer.start(i)

            def _posttask(self, key, result, dsk, state, worker_id):
                if threading.get_ident() == owner:
                    i = outer.pass_of(key)
                    if i is not None:
                        outer.tick(i)

        return _Tiles()

    def _count_passes(self, dsk: Any) -> None:
        """The earlier passes' totals: their tile tasks in the graph the scheduler runs (after culling)."""
        counts: dict[str, int] = {}
        for key in dsk:
            if isinstance(key, tuple) and key and isinstance(key[0], str) and key[0] not in self.names:
                m = _PASS.match(key[0])
                if m is not None and not key[0].endswith("-program"):
                    counts[key[0]] = counts.get(key[0], 0) + 1
        for name, n in counts.items():
            index = int(_PASS.match(name).group(1))
            if index != self.final:
                self.names[name] = index
                self.total[index] = n
                self.done.setdefault(index, 0)


def compute(result: Any, cl: Any, counter: ProgressCounter, *, optimize: bool, monitor: Any = None) -> None:
    """Compute the run's graph on the cluster handle ``cl`` (``convpipe.cluster.ClusterHandle``)."""
    if cl.client is not None:
        from distributed import get_task_stream

        with get_task_stream(cl.client) as stream:
            run_distributed(cl.client, result, counter, optimize=optimize)
        if monitor is not None:
            monitor.add_task_stream(stream.data)
    else:
        run_local(result, cl.compute_kwargs, counter)
    counter.close()


def run_local(result: Any, compute_kwargs: dict, counter: ProgressCounter) -> None:
    import dask

    with counter.callback():
        dask.compute(result, **compute_kwargs)


def run_distributed(client: Any, result: Any, counter: ProgressCounter, optimize: bool = True) -> None:
    from distributed import as_completed

    # dask's array optimization drops layer annotations (a GPU pass's resources): skip it when annotated
    futures = client.compute(result.to_delayed(optimize_graph=optimize).ravel().tolist())
    counter.start(counter.final)
    for fut in as_completed(futures):
        fut.result()
        if counter.pass_of(fut.key) is not None:  # not the marker of a tile a resume found recorded
            counter.tick()
