"""Measuring a run: the task stream by key prefix, named phases, and peak memory (RSS).

:class:`RssSampler` samples the resident set size of a process (optionally with its children) in a
thread; the run monitor and the benchmark (``convpipe.bench``) share it. :class:`RunMonitor` is what
``Pipeline.run`` uses to measure a run for the HTML report (``convpipe.report``): a dask callback
recording every task's start and end by key prefix, an :class:`RssSampler`, and — as a subscriber to the
run's events (:mod:`convpipe.run.events`) — its phases, its passes' tiles, and its log lines and warnings.
Nothing here imports matplotlib or jinja2, nor the run: events are read by their ``kind``.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["RssSampler", "RunMonitor", "task_prefix"]


class RssSampler:
    """Peak resident set size of a process, sampled in a thread every ``interval`` seconds.

    Parameters
    ----------
    pid : int, optional
        The process to sample (default: this one).
    children : bool
        Add the RSS of its child processes, recursively (a ``processes`` pool, a ``local:N`` cluster).
        Each sample then walks ``/proc``: ask for it only where children matter.
    interval : float
        Seconds between samples. Peaks shorter than that can be missed, so :attr:`peak` is a lower
        bound of the true peak.

    Attributes
    ----------
    baseline : int or None
        RSS when sampling started (None when it could not be read: no psutil, no such process).
    peak : int or None
        The largest RSS seen (of the process and, with ``children``, its children).
    peak_own : int or None
        The largest RSS of the process alone.
    samples : int
        How many samples were read.
    """

    def __init__(self, pid: int | None = None, *, children: bool = False, interval: float = 0.01):
        self.pid = os.getpid() if pid is None else int(pid)
        self.children = bool(children)
        self.interval = float(interval)
        self.baseline: int | None = None
        self.peak: int | None = None
        self.peak_own: int | None = None
        self.samples = 0
        self._proc: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> tuple[int, int] | None:
        """(RSS of the process, RSS with its children when asked), or None when it cannot be read."""
        if self._proc is None:
            try:
                import psutil

                self._proc = psutil.Process(self.pid)
            except Exception:  # noqa: BLE001 - no psutil, or the process is gone: memory is advisory
                return None
        try:
            own = int(self._proc.memory_info().rss)
            total = own
            if self.children:
                for child in self._proc.children(recursive=True):
                    with contextlib.suppress(Exception):  # a child that just exited
                        total += int(child.memory_info().rss)
        except Exception:  # noqa: BLE001 - psutil.Error & co (the process ended)
            return None
        return own, total

    def sample(self) -> int | None:
        """Read the RSS once and update the peaks; return it (with children when asked)."""
        r = self.read()
        if r is None:
            return None
        own, total = r
        self.samples += 1
        self.peak = total if self.peak is None else max(self.peak, total)
        self.peak_own = own if self.peak_own is None else max(self.peak_own, own)
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> RssSampler:
        """Take the baseline sample and start the sampling thread."""
        self._stop.clear()
        self.baseline = self.sample()
        self._thread = threading.Thread(target=self._loop, name="convpipe-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and take a last sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, 10 * self.interval))
            self._thread = None
        self.sample()

    def __enter__(self) -> RssSampler:  # noqa: PYI034 - subclasses are not expected
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_TOKEN = re.compile(r"-[0-9a-f]{32}(?=-|$)")


def task_prefix(key: Any) -> str:
    """The kind of a dask task: its key name without dask's 32-hex token.

    ``("convpipe-pass0-<token>", 3, 1)`` → ``"convpipe-pass0"``, ``"from-zarr-<token>"`` → ``"from-zarr"``.
    (``dask.utils.key_split`` would also drop ``pass0``, losing which pass a tile task belongs to.)
    """
    name = key[0] if isinstance(key, tuple) and key else key
    name = name.decode() if isinstance(name, bytes) else str(name)
    return _TOKEN.sub("", name)


class RunMonitor:
    """Measures a run: task stream by key prefix, named phases, peak RSS.

    Use it as a context manager around the run; inside, wrap local computes with :meth:`callback`
    (a dask callback). For a ``distributed`` client, feed ``distributed.get_task_stream``'s records to
    :meth:`add_task_stream` instead. Subscribed to a run's events (it is callable with one), it records
    the phases (``PhaseStarted`` / ``PhaseDone``), each pass's tiles and when they were done, and the
    run's log lines and warnings; :meth:`phase` names a phase by hand.

    Times are seconds since the monitor started. A local-scheduler task's start is when the scheduler
    handed it to a worker thread and its end when the result came back (the scheduler's view, which
    includes at most a little queueing). RSS is sampled every ``interval`` seconds (of this process
    plus its child processes, e.g. a ``processes`` pool or a ``local:N`` cluster) by an
    :class:`RssSampler`; peaks shorter than the interval can be missed, so it is a lower bound.
    """

    def __init__(self, interval: float = 0.02, max_tasks: int = 20000):
        self.interval = float(interval)
        self.max_tasks = int(max_tasks)
        self.t0 = time.perf_counter()
        self.tasks: list[tuple[str, float, float, int]] = []  # (prefix, start, end, worker)
        self.dropped = 0
        self.phases: list[tuple[str, float, float]] = []
        self.passes: dict[int, dict[str, Any]] = {}  # pass index -> tiles, done, first/last tile times
        self.messages: list[tuple[str, str]] = []  # (level "log" | "warning", text) in order
        self._phase_starts: dict[str, float] = {}
        self.rss = RssSampler(children=True, interval=self.interval)
        self._by_prefix: dict[str, list[float]] = {}  # prefix -> [count, busy seconds, first, last]
        self._lock = threading.Lock()
        self._starts: dict[Any, float] = {}
        self._workers: dict[Any, int] = {}  # worker id (thread ident, address) -> 0, 1, 2, ... in order seen
        self._owner = threading.get_ident()

    @property
    def peak_rss(self) -> int | None:
        return self.rss.peak

    @property
    def baseline_rss(self) -> int | None:
        return self.rss.baseline

    @property
    def samples(self) -> int:
        return self.rss.samples

    def __enter__(self) -> RunMonitor:  # noqa: PYI034 - subclasses are not expected
        self.t0 = time.perf_counter()
        self._owner = threading.get_ident()
        self.rss.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.rss.stop()

    # ------------------------------------------------------------ phases and tasks
    def now(self) -> float:
        return time.perf_counter() - self.t0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the wall time of a named phase (``"compute"``, ``"tables"``, ``"pyramid"``)."""
        start = self.now()
        try:
            yield
        finally:
            self.phases.append((str(name), start, self.now()))

    # ------------------------------------------------------------ run events
    def __call__(self, event: Any) -> None:
        """Record one run event (:mod:`convpipe.run.events`); kinds it does not use are ignored."""
        kind = getattr(event, "kind", "")
        if kind == "phase_started":
            self._phase_starts[event.name] = self.now()
        elif kind == "phase_done":
            self.phases.append((str(event.name), self._phase_starts.pop(event.name, self.now()), self.now()))
        elif kind == "pass_started":
            self.passes.setdefault(int(event.index), {"index": int(event.index), "final": bool(event.final),
                                                      "tiles": int(event.tiles), "done": 0,
                                                      "started_s": round(self.now(), 6), "first_done_s": None,
                                                      "last_done_s": None})
        elif kind == "tile_done":
            rec = self.passes.get(int(event.pass_index))
            if rec is not None:
                t = round(self.now(), 6)
                rec["done"] = int(event.done)
                rec["first_done_s"] = t if rec["first_done_s"] is None else rec["first_done_s"]
                rec["last_done_s"] = t
        elif kind in ("log", "warning"):
            self.messages.append((kind, str(event.message)))

    def record(self, prefix: str, start: float, end: float, worker: Any = 0) -> None:
        """Add one task (times relative to the monitor's start; ``worker`` any hashable worker id)."""
        with self._lock:
            worker = self._workers.setdefault(worker, len(self._workers))
            agg = self._by_prefix.setdefault(prefix, [0, 0.0, start, end])
            agg[0] += 1
            agg[1] += max(0.0, end - start)
            agg[2] = min(agg[2], start)
            agg[3] = max(agg[3], end)
            if len(self.tasks) < self.max_tasks:
                self.tasks.append((prefix, start, end, int(worker)))
            else:
                self.dropped += 1

    def callback(self) -> Any:
        """A ``dask.callbacks.Callback`` recording every task of local computes run inside it.

        dask callbacks are process-wide; the local scheduler calls them in the thread that called
        ``compute``, so only tasks scheduled from the thread that entered the monitor are recorded
        (other runs in the same process, e.g. jobs of ``convpipe serve``, are not mixed in).
        """
        from dask.callbacks import Callback

        mon = self

        class _TaskStream(Callback):
            def _pretask(self, key, dsk, state):
                if threading.get_ident() == mon._owner:
                    mon._starts[key] = mon.now()

            def _posttask(self, key, result, dsk, state, worker_id):
                if threading.get_ident() != mon._owner:
                    return
                end = mon.now()
                start = mon._starts.pop(key, end)
                mon.record(task_prefix(key), start, end, worker_id)

        return _TaskStream()

    def add_task_stream(self, records: list[Mapping[str, Any]]) -> None:
        """Add ``distributed`` task-stream records (``get_task_stream(client).data``)."""
        wall0 = time.time() - self.now()  # the monitor's start in epoch seconds
        for rec in records:
            for ss in rec.get("startstops", ()):
                if ss.get("action") != "compute":
                    continue
                self.record(task_prefix(rec.get("key", "?")), float(ss["start"]) - wall0,
                            float(ss["stop"]) - wall0, ("distributed", str(rec.get("worker", ""))))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (what ``RunResult.timings`` holds)."""
        prefixes = {
            p: {"tasks": int(c), "busy_s": round(b, 6), "first_start_s": round(f, 6), "last_end_s": round(last, 6)}
            for p, (c, b, f, last) in sorted(self._by_prefix.items(), key=lambda kv: kv[1][2])
        }
        return {
            "peak_rss": self.peak_rss,
            "baseline_rss": self.baseline_rss,
            "rss_samples": self.samples,
            "rss_interval_s": self.interval,
            "phases": [{"name": n, "start_s": round(s, 6), "end_s": round(e, 6)} for n, s, e in self.phases],
            "prefixes": prefixes,
            "tasks": [[p, round(s, 6), round(e, 6), w] for p, s, e, w in self.tasks],
            "tasks_dropped": self.dropped,
            "passes": [dict(v) for _, v in sorted(self.passes.items())],
            "messages": [{"level": lv, "text": t} for lv, t in self.messages],
        }
