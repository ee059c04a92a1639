"""What a run tells the world while it runs: typed events, delivered to subscribers.

A run (:func:`convpipe.run.run_pipeline`) emits, in this order:

==================  ==================================================================================
``RunStarted``      once execution begins (the cluster answered, the output is created or opened), with
                    the plan's summary: its passes, tiles, tasks, and how many tiles a resume found done
``PhaseStarted``    around the run's phases: ``graph`` (building the dask graph, including the statistics
``PhaseDone``       pre-pass of zscore / rescale), ``compute`` (the tiles), ``pyramid`` (OME-Zarr levels)
``PassStarted``     per pass of the plan, as its tiles compute: ``TileDone`` carries the pass and its
``TileDone``        counts (``done`` of ``total`` tiles this run computes in that pass; ``final`` marks the
``PassDone``        pass that writes the output, whose counts are the run's progress)
``LogLine``         what the run says as it goes ("running ...", the cluster's dashboard, ...)
``WarningLine``     what the user should know about (an output started again, a plain Zarr instead of OME)
``Finished``        the run ended: exactly one of these three is the last event of a run that got past
``Failed``          loading its spec (``Finished`` alone, without ``RunStarted``, when a resume finds the
``Interrupted``     output already complete)
==================  ==================================================================================

Local schedulers (threads, sync, processes) report the tiles of every pass; on a distributed cluster the
earlier passes run inside the cluster as dependencies of the final one, and only the final pass is
reported.

A subscriber is any callable taking one event. It is called in the thread that emits: the thread that
called ``run`` (dask's local schedulers call their callbacks there too). What a subscriber raises
reaches the run, as it would from the code that emitted: a progress callback raising
``KeyboardInterrupt`` is a Ctrl-C. A subscriber that only observes (a pipe to another process) must
swallow its own errors, as :class:`JsonLinesWriter` does.

The events have one JSON form each (:func:`to_json`, :func:`from_json`): one object per line with an
``event`` member naming the kind. The job service reads a job's progress from these lines, on a pipe of
their own, never from the job's human-readable output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, ClassVar

__all__ = [
    "EVENTS_FD_ENV", "Event", "EventBus", "Failed", "Finished", "Interrupted", "JsonLinesWriter", "LogLine", "PassDone",
    "PassStarted", "PassSummary", "PhaseDone", "PhaseStarted", "RunStarted", "Subscriber", "TileDone",
    "WarningLine", "from_json", "log_subscriber", "progress_subscriber", "to_json",
]


#: the environment variable naming the file descriptor a job's run writes its events to (the job service's pipe)
EVENTS_FD_ENV = "CONVPIPE_EVENTS_FD"


@dataclass(frozen=True)
class Event:
    """Base of every run event; ``kind`` names it in its JSON form."""

    kind: ClassVar[str] = ""


Subscriber = Callable[[Event], Any]


@dataclass(frozen=True)
class PassSummary:
    """One pass of the plan as ``RunStarted`` describes it."""

    index: int
    ops: tuple[str, ...]
    tiles: int
    backend: str


@dataclass(frozen=True)
class RunStarted(Event):
    """Execution begins: the output is created (``create``, ``replace``) or opened (``resume``)."""

    kind: ClassVar[str] = "run_started"
    name: str
    output_url: str
    action: str
    cluster: str
    backend: str
    #: tiles of the final pass, and how many of them a resume found written
    tiles: int
    skipped: int
    tasks: int
    passes: tuple[PassSummary, ...] = ()


@dataclass(frozen=True)
class PhaseStarted(Event):
    kind: ClassVar[str] = "phase_started"
    name: str


@dataclass(frozen=True)
class PhaseDone(Event):
    kind: ClassVar[str] = "phase_done"
    name: str


@dataclass(frozen=True)
class PassStarted(Event):
    """The run began computing pass ``index``: ``tiles`` is how many of its tiles it computes."""

    kind: ClassVar[str] = "pass_started"
    index: int
    tiles: int
    final: bool = False


@dataclass(frozen=True)
class TileDone(Event):
    """A tile of pass ``pass_index`` is done: ``done`` of the ``total`` tiles this run computes in that pass."""

    kind: ClassVar[str] = "tile_done"
    pass_index: int
    done: int
    total: int
    final: bool = False


@dataclass(frozen=True)
class PassDone(Event):
    kind: ClassVar[str] = "pass_done"
    index: int
    tiles: int
    final: bool = False


@dataclass(frozen=True)
class LogLine(Event):
    kind: ClassVar[str] = "log"
    message: str


@dataclass(frozen=True)
class WarningLine(Event):
    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class Finished(Event):
    """The output is complete (``computed_voxels`` 0 and ``elapsed`` 0 when it already was)."""

    kind: ClassVar[str] = "finished"
    output_url: str
    elapsed: float
    voxels: int
    computed_voxels: int
    tiles: int
    skipped_tiles: int
    tasks: int


@dataclass(frozen=True)
class Failed(Event):
    """The run stopped on an error: ``message`` is what the command line prints after ``error:``."""

    kind: ClassVar[str] = "failed"
    message: str
    error: str = "ConvpipeError"


@dataclass(frozen=True)
class Interrupted(Event):
    """Ctrl-C: ``written`` of ``tiles`` final tiles are on disk (None: the output was not created)."""

    kind: ClassVar[str] = "interrupted"
    output_url: str | None = None
    written: int | None = None
    tiles: int | None = None


_KINDS: dict[str, type[Event]] = {c.kind: c for c in (RunStarted, PhaseStarted, PhaseDone, PassStarted, TileDone,
                                                       PassDone, LogLine, WarningLine, Finished, Failed,
                                                       Interrupted)}


# --------------------------------------------------------------------------- the bus


class EventBus:
    """Delivers a run's events to its subscribers, in the order they subscribed.

    Parameters
    ----------
    subscribers : iterable of callables, optional
        Each is called with every event.
    """

    def __init__(self, subscribers: Iterable[Subscriber] = ()):
        self._subs: list[Subscriber] = list(subscribers)
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it again."""
        with self._lock:
            self._subs.append(fn)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subs.remove(fn)

        return unsubscribe

    def emit(self, event: Event, *, quiet: bool = False) -> None:
        """Give ``event`` to every subscriber.

        ``quiet`` swallows a subscriber's ``Exception`` (used while a run is already failing, so that the
        error the run raises stays the run's own).
        """
        with self._lock:
            subs = tuple(self._subs)
        for fn in subs:
            if quiet:
                with contextlib.suppress(Exception):
                    fn(event)
            else:
                fn(event)

    def log(self, message: str) -> None:
        self.emit(LogLine(str(message)))

    def warn(self, message: str) -> None:
        self.emit(WarningLine(str(message)))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """``PhaseStarted`` on entry, ``PhaseDone`` on exit (also when the phase fails)."""
        self.emit(PhaseStarted(name))
        try:
            yield
        except BaseException:
            self.emit(PhaseDone(name), quiet=True)
            raise
        self.emit(PhaseDone(name))


# --------------------------------------------------------------------------- adapters


def progress_subscriber(report: Callable[[int, int], Any], interval: float = 0.2) -> Subscriber:
    """``report(done, total)`` for the final pass's tiles: at most every ``interval`` seconds, and at the last.

    This is what ``Pipeline.run(progress=...)`` has always called: the tiles this run computes (a resume
    counts from zero), throttled so that a run of a million tiles does not call it a million times.
    """
    last = [0.0]

    def on_event(ev: Event) -> None:
        if isinstance(ev, TileDone) and ev.final:
            now = time.monotonic()
            if now - last[0] > interval or ev.done >= ev.total:
                last[0] = now
                report(ev.done, ev.total)

    return on_event


def log_subscriber(write: Callable[[str], Any]) -> Subscriber:
    """``write(message)`` for every log line and warning (``Pipeline.run(log=...)``)."""

    def on_event(ev: Event) -> None:
        if isinstance(ev, LogLine | WarningLine):
            write(ev.message)

    return on_event


# --------------------------------------------------------------------------- JSON lines


def to_json(event: Event) -> str:
    """One line of JSON: ``{"event": kind, ...fields}``."""
    return json.dumps({"event": event.kind, **dataclasses.asdict(event)}, separators=(",", ":"))


_ADAPTERS: dict[type, Any] = {}


def from_json(line: str | bytes) -> Event | None:
    """The event a line of :func:`to_json` holds; None for anything else (other text, unknown kinds, bad fields).

    Fields are validated against the event's types (pydantic); unknown members are ignored, so a newer
    writer's extra fields do not break an older reader.
    """
    from pydantic import TypeAdapter, ValidationError

    try:
        d = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(d, dict):
        return None
    cls = _KINDS.get(d.pop("event", None)) if isinstance(d.get("event"), str) else None
    if cls is None:
        return None
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    try:
        return adapter.validate_python(d, strict=False)
    except ValidationError:
        return None


class JsonLinesWriter:
    """A subscriber writing each event as a JSON line to a text stream (the job service's events pipe).

    ``TileDone`` lines are throttled to one per pass every ``interval`` seconds, and the last of a pass;
    every other event is written as it comes. Writing never fails the run: once the stream breaks (the
    reader is gone), the writer stops.
    """

    def __init__(self, stream: IO[str], interval: float = 0.2):
        self.stream = stream
        self.interval = float(interval)
        self._last: dict[int, float] = {}
        self._broken = False
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if self._broken:
            return
        if isinstance(event, TileDone) and event.done < event.total:
            now = time.monotonic()
            if now - self._last.get(event.pass_index, -math.inf) < self.interval:
                return
            self._last[event.pass_index] = now
        try:
            with self._lock:
                self.stream.write(to_json(event) + "\n")
                self.stream.flush()
        except (OSError, ValueError):  # a closed pipe (the service went away), a closed file
            self._broken = True

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.close()
