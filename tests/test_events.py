"""A run's events (convpipe.run.events): their order on every executor, their JSON form, and who consumes them.

The grammar every run's stream obeys (:func:`check_stream`): one terminal event last; ``RunStarted`` before
any phase, pass or tile; per pass ``PassStarted``, then ``TileDone`` counting 1, 2, ... up to the total it
announced, then ``PassDone``; the final pass's total is the tiles the run computes (all of them, or those
a resume did not find written); tiles only inside the ``compute`` phase.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

import convpipe
from convpipe.cli import main
from convpipe.errors import OutputExistsError, RunInterrupted
from convpipe.run import events as ev
from convpipe.run.events import (
    EventBus,
    Failed,
    Finished,
    Interrupted,
    JsonLinesWriter,
    LogLine,
    PassDone,
    PassStarted,
    PassSummary,
    PhaseDone,
    PhaseStarted,
    RunStarted,
    TileDone,
    WarningLine,
    from_json,
    to_json,
)

SHAPE, CHUNKS = (4, 32, 32), (1, 16, 16)
TILE = {"z": 1, "y": 16, "x": 16}  # 16 tiles a pass
ONE_PASS = [{"gaussian": {"sigma": 1}}]
TWO_PASSES = [{"gaussian": {"sigma": 1}}, {"zscore": {}}, {"uniform": {"size": 3}}]  # zscore starts pass 1


def _input(path: Path, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).random(SHAPE).astype(np.float32)
    zarr.create_array(str(path), shape=SHAPE, chunks=CHUNKS, dtype="float32")[...] = x
    return x


def _spec(tmp: Path, steps=ONE_PASS, cluster: str = "threads", **out) -> dict:
    return {"convpipe": 1, "name": "events", "input": {"url": str(tmp / "in.zarr")},
            "output": {"url": str(tmp / "out.zarr"), **out}, "steps": steps,
            "execution": {"cluster": cluster, "tile": TILE}}


def check_stream(stream: list, *, every_pass: bool = True, throttled: bool = False) -> dict:
    """Assert the grammar of one run's events; returns per-pass counts and the RunStarted (if any).

    ``throttled``: tiles counted up, not necessarily one by one (the JSON writer skips some).
    """
    terminal = (Finished, Failed, Interrupted)
    assert stream and isinstance(stream[-1], terminal), stream[-3:]
    assert sum(isinstance(e, terminal) for e in stream) == 1
    started = [i for i, e in enumerate(stream) if isinstance(e, RunStarted)]
    assert len(started) <= 1
    first_work = next((i for i, e in enumerate(stream) if isinstance(e, PhaseStarted | PassStarted | TileDone)),
                      None)
    if first_work is not None:
        assert started and started[0] < first_work
    rs = stream[started[0]] if started else None
    passes: dict[int, dict] = {}
    phase = None
    for e in stream:
        if isinstance(e, PhaseStarted):
            assert phase is None
            phase = e.name
        elif isinstance(e, PhaseDone):
            assert phase == e.name
            phase = None
        elif isinstance(e, PassStarted):
            assert e.index not in passes and phase == "compute"
            passes[e.index] = {"total": e.tiles, "done": 0, "closed": False, "final": e.final}
        elif isinstance(e, TileDone):
            p = passes[e.pass_index]  # KeyError: a tile before its pass started
            assert phase == "compute" and not p["closed"] and e.final == p["final"]
            assert (e.done > p["done"] if throttled else e.done == p["done"] + 1) and e.total == p["total"]
            p["done"] = e.done
        elif isinstance(e, PassDone):
            p = passes[e.index]
            assert not p["closed"] and e.tiles == p["done"] == p["total"]
            p["closed"] = True
    if isinstance(stream[-1], Finished):
        assert phase is None and all(p["closed"] for p in passes.values())
        if rs is not None:
            final = [i for i, p in passes.items() if p["final"]]
            assert final == [rs.passes[-1].index]
            assert passes[final[0]]["total"] == rs.tiles - rs.skipped
            if every_pass:
                assert sorted(passes) == [p.index for p in rs.passes]
    return {"passes": passes, "started": rs}


# --------------------------------------------------------------------------- on every executor


# one distributed case: a LocalCluster takes seconds to start, and both cases share its futures loop
EXECUTORS = [(c, s) for c in ("threads", "sync", "processes") for s in ("one-pass", "two-passes")] + \
    [("local:2", "two-passes")]


@pytest.mark.parametrize("cluster, which", EXECUTORS)
def test_the_stream_on_every_executor(tmp_path, cluster, which):
    steps = ONE_PASS if which == "one-pass" else TWO_PASSES
    _input(tmp_path / "in.zarr")
    stream: list = []
    res = convpipe.load(_spec(tmp_path, steps, cluster)).run(on_event=stream.append)
    got = check_stream(stream, every_pass=cluster != "local:2")
    rs = got["started"]
    assert rs.action == "create" and rs.skipped == 0 and rs.tiles == res.tiles == 16
    assert len(rs.passes) == len(res.plan.passes) == (2 if steps is TWO_PASSES else 1)
    assert [p.ops for p in rs.passes] == [tuple(op.name for op in pp.ops) for pp in res.plan.passes]
    final = rs.passes[-1].index
    assert got["passes"][final]["done"] == 16
    if cluster == "local:2":  # earlier passes run inside the cluster: only the final one is reported
        assert list(got["passes"]) == [final]
    else:
        for p in rs.passes:  # every tile of every pass was needed once
            assert got["passes"][p.index]["done"] == p.tiles
    fin = stream[-1]
    assert (fin.output_url, fin.tiles, fin.skipped_tiles, fin.voxels) == (res.output_url, 16, 0, res.voxels)
    assert fin.computed_voxels == res.computed_voxels == res.voxels
    assert [e.name for e in stream if isinstance(e, PhaseStarted)] == ["graph", "compute"]


def test_a_resume_counts_the_tiles_it_computes(tmp_path):
    _input(tmp_path / "in.zarr")
    spec = _spec(tmp_path, TWO_PASSES)

    def stop(e):
        if isinstance(e, TileDone) and e.final and e.done >= 5:
            raise KeyboardInterrupt

    first: list = []
    with pytest.raises(RunInterrupted) as info:
        convpipe.load(spec).run(on_event=[first.append, stop])
    check_stream(first)
    last = first[-1]
    assert isinstance(last, Interrupted) and last.written == info.value.written >= 5 and last.tiles == 16
    assert not any(isinstance(e, PassDone) and e.final for e in first)

    again: list = []
    res = convpipe.load(spec).run(resume=True, on_event=again.append)
    got = check_stream(again, every_pass=True)
    rs = got["started"]
    # tiles already running on other threads at the Ctrl-C may still have been recorded after it
    assert rs.action == "resume" and rs.skipped == res.skipped_tiles >= last.written
    assert got["passes"][rs.passes[-1].index]["done"] == 16 - rs.skipped
    # the earlier pass computes only what the unwritten final tiles need (dask culls the rest)
    assert 0 < got["passes"][rs.passes[0].index]["done"] <= 4
    assert again[-1].computed_voxels == res.computed_voxels < res.voxels

    done: list = []
    res = convpipe.load(spec).run(resume=True, on_event=done.append)
    assert [type(e) for e in done] == [LogLine, Finished]  # nothing to do: no RunStarted, no tiles
    assert "already complete" in done[0].message and done[-1].computed_voxels == 0 == res.computed_voxels


def test_a_refusal_ends_in_failed_with_the_message_and_nothing_started(tmp_path):
    _input(tmp_path / "in.zarr")
    convpipe.load(_spec(tmp_path)).run()
    stream: list = []
    with pytest.raises(OutputExistsError) as info:
        convpipe.load(_spec(tmp_path)).run(on_event=stream.append)
    assert stream == [Failed(str(info.value), "OutputExistsError")]


def test_a_failure_while_running_ends_in_failed(tmp_path):
    _input(tmp_path / "in.zarr")
    for chunk in (tmp_path / "in.zarr" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"not a chunk")
    stream: list = []
    with pytest.raises(convpipe.ExecutionError) as info:
        convpipe.load(_spec(tmp_path)).run(on_event=stream.append)
    check_stream(stream)
    assert isinstance(stream[-1], Failed) and stream[-1].message == str(info.value)
    assert "cannot read chunk" in stream[-1].message
    assert not any(isinstance(e, TileDone) for e in stream)


def test_a_warning_is_an_event_reaches_log_and_the_report(tmp_path):
    """An OME input relabelled out of OME order is written as a plain Zarr array: a warning before the run."""
    from safety_helpers import _ome

    from convpipe.report import build_report

    _ome(tmp_path / "in.zarr")
    spec = _spec(tmp_path)
    spec["input"]["axes"] = "zxy"
    del spec["execution"]["tile"]
    stream: list = []
    logs: list = []
    p = convpipe.load(spec)
    res = p.run(on_event=stream.append, log=logs.append)
    check_stream(stream)
    warnings = [e for e in stream if isinstance(e, WarningLine)]
    assert len(warnings) == 1 and "not in OME-Zarr order" in warnings[0].message
    assert stream.index(warnings[0]) < next(i for i, e in enumerate(stream) if isinstance(e, RunStarted))
    assert logs == [e.message for e in stream if isinstance(e, LogLine | WarningLine)]
    assert {"level": "warning", "text": warnings[0].message} in res.timings["messages"]
    assert "<strong>warning</strong>" in build_report(p, res)


# --------------------------------------------------------------------------- adapters and consumers


def test_progress_and_log_keywords_are_adapters_over_the_events(tmp_path):
    _input(tmp_path / "in.zarr")
    calls: list = []
    logs: list = []
    stream: list = []
    convpipe.load(_spec(tmp_path, TWO_PASSES)).run(progress=lambda d, t: calls.append((d, t)), log=logs.append,
                                                   on_event=stream.append)
    assert calls and calls[-1] == (16, 16)  # the final pass only, throttled, and always its last tile
    assert all(t == 16 for _, t in calls) and [d for d, _ in calls] == sorted({d for d, _ in calls})
    assert logs == [e.message for e in stream if isinstance(e, LogLine | WarningLine)]
    assert logs[0].startswith("running 'events': 16 tiles (0 already done)")


def test_the_monitor_records_phases_passes_and_messages(tmp_path):
    _input(tmp_path / "in.zarr")
    res = convpipe.load(_spec(tmp_path, TWO_PASSES)).run()
    t = res.timings
    assert [p["name"] for p in t["phases"]] == ["graph", "compute"]
    assert [(p["index"], p["tiles"], p["done"], p["final"]) for p in t["passes"]] == \
        [(pp.index, pp.n_tiles, pp.n_tiles, pp is res.plan.passes[-1]) for pp in res.plan.passes]
    for p in t["passes"]:
        assert 0 <= p["started_s"] <= p["first_done_s"] <= p["last_done_s"]
    assert t["messages"][0]["level"] == "log" and "running 'events'" in t["messages"][0]["text"]


def test_the_report_shows_the_run_log(tmp_path):
    from convpipe.report import build_report

    _input(tmp_path / "in.zarr")
    p = convpipe.load(_spec(tmp_path, TWO_PASSES))
    res = p.run()
    html = build_report(p, res)
    assert 'id="run"' in html and "running &#39;events&#39;: 16 tiles" in html
    assert "(writes the output)" in html and "16 of 16" in html


def test_a_subscriber_can_stop_the_run_and_a_failing_one_never_hides_the_error(tmp_path):
    _input(tmp_path / "in.zarr")
    convpipe.load(_spec(tmp_path)).run()

    def broken(e):
        if isinstance(e, Failed):
            raise RuntimeError("subscriber bug")

    with pytest.raises(OutputExistsError):  # the run's own error, not the subscriber's
        convpipe.load(_spec(tmp_path)).run(on_event=broken)


# --------------------------------------------------------------------------- the JSON form

SAMPLES = [
    RunStarted("n", "o.zarr", "create", "threads", "cpu", 16, 3, 20,
               (PassSummary(0, ("gaussian",), 4, "cpu"), PassSummary(1, ("zscore", "uniform"), 16, "gpu"))),
    PhaseStarted("graph"), PhaseDone("compute"), PassStarted(1, 13, True), TileDone(0, 2, 4, False),
    PassDone(1, 13, True), LogLine("running 'x': ..."), WarningLine("note: ü ✓ \n two lines"),
    Finished("o.zarr", 1.5, 100, 40, 16, 3, 20), Failed("bad: thing", "InputError"), Interrupted("o.zarr", 3, 16),
    Interrupted(),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.kind)
def test_every_event_round_trips_through_one_json_line(event):
    line = to_json(event)
    assert "\n" not in line and json.loads(line)["event"] == event.kind
    assert from_json(line) == event
    assert from_json(line.encode()) == event


def test_every_event_kind_has_a_sample():
    assert {type(e) for e in SAMPLES} == set(ev._KINDS.values())


@pytest.mark.parametrize("line", [
    "progress: 9/10", "", "{}", "[]", "null", '{"event": "progress", "done": 9, "total": 10}',
    '{"event": "tile_done", "pass_index": 0, "done": "many", "total": 10}',
    '{"event": "tile_done", "pass_index": 0, "done": 9}', '{"event": ["tile_done"]}',
    b"\xff\xfe{", '{"event": "tile_done", "pass_index": 0, "done": 9, "total": 10',
])
def test_anything_else_is_not_an_event(line):
    assert from_json(line) is None


def test_unknown_fields_are_ignored():
    assert from_json('{"event": "log", "message": "m", "new": 1}') == LogLine("m")


def test_the_json_writer_throttles_tiles_but_keeps_the_last_and_every_other_event():
    buf = io.StringIO()
    w = JsonLinesWriter(buf, interval=3600)
    w(PassStarted(0, 100, True))
    for i in range(1, 101):
        w(TileDone(0, i, 100, True))
    w(Finished("o", 1.0, 1, 1, 100, 0, 1))
    got = [from_json(line) for line in buf.getvalue().splitlines()]
    assert got == [PassStarted(0, 100, True), TileDone(0, 1, 100, True), TileDone(0, 100, 100, True),
                   Finished("o", 1.0, 1, 1, 100, 0, 1)]


def test_a_broken_pipe_never_fails_the_run():
    r, w = os.pipe()
    os.close(r)
    writer = JsonLinesWriter(os.fdopen(w, "w"))
    writer(LogLine("x" * 100_000))  # EPIPE (SIGPIPE is ignored by Python)
    writer(LogLine("again"))
    writer.close()


def test_bus_subscribe_unsubscribe_and_phase_on_failure():
    seen: list = []
    bus = EventBus()
    off = bus.subscribe(seen.append)
    with pytest.raises(ValueError), bus.phase("compute"):
        raise ValueError
    off()
    bus.log("not seen")
    assert seen == [PhaseStarted("compute"), PhaseDone("compute")]


def test_events_are_frozen_dataclasses():
    for e in SAMPLES:
        with pytest.raises(dataclasses.FrozenInstanceError):
            e.kind_of = 1  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the command line


def test_cli_sends_json_events_to_the_service_pipe_and_prints_progress(tmp_path, monkeypatch, capfd):
    _input(tmp_path / "in.zarr")
    (tmp_path / "s.yaml").write_text(json.dumps(_spec(tmp_path)))
    r, w = os.pipe()
    monkeypatch.setenv(ev.EVENTS_FD_ENV, str(w))
    assert main(["run", str(tmp_path / "s.yaml")]) == 0
    with pytest.raises(OSError):
        os.fstat(w)  # the run closed its end
    with os.fdopen(r, "rb") as f:
        got = [from_json(line) for line in f.read().splitlines()]
    assert None not in got
    check_stream(got, throttled=True)
    assert isinstance(got[-1], Finished) and TileDone(0, 16, 16, True) in got
    out = capfd.readouterr()
    assert "progress: 16/16" in out.out and "running 'events'" in out.err  # the log stays text for people
    assert '"event"' not in out.out + out.err


def test_cli_with_a_bad_events_fd_warns_and_runs(tmp_path, monkeypatch, capfd):
    _input(tmp_path / "in.zarr")
    (tmp_path / "s.yaml").write_text(json.dumps(_spec(tmp_path)))
    monkeypatch.setenv(ev.EVENTS_FD_ENV, "not-a-number")
    assert main(["run", str(tmp_path / "s.yaml")]) == 0
    assert "no events are sent" in capfd.readouterr().err


# --------------------------------------------------------------------------- one stream, three consumers


def test_one_stream_feeds_the_progress_bar_the_monitor_and_the_service(tmp_path, capsys):
    """The bar, the monitor (the report) and the service's reader are all subscribers of the same events."""
    import threading

    from convpipe.cli import _Progress
    from convpipe.run.events import progress_subscriber
    from convpipe.service.runner import Runner, _Live
    from convpipe.service.store import JobStore

    _input(tmp_path / "in.zarr")
    store = JobStore(tmp_path / "j.sqlite")
    store.add("events", "convpipe: 1", [])
    job = store.claim_next()
    service_progress: list = []
    set_progress = store.set_progress
    store.set_progress = lambda jid, p: (service_progress.append(p), set_progress(jid, p))  # type: ignore
    r, w = os.pipe()
    live = _Live(job.id, None, None)  # type: ignore[arg-type]
    reader = threading.Thread(target=Runner(store, tmp_path / "jobs")._read_events, args=(live, r))
    reader.start()
    pipe = JsonLinesWriter(os.fdopen(w, "w"), interval=0)  # unthrottled: every event crosses the pipe
    pipe_stream = pipe.stream
    bar_calls: list = []
    stream: list = []
    with _Progress("events") as bar:  # not a terminal here: plain "progress: n/m" lines

        def bar_spy(done, total):
            bar_calls.append((done, total))
            bar(done, total)

        res = convpipe.load(_spec(tmp_path, TWO_PASSES)).run(
            on_event=[stream.append, progress_subscriber(bar_spy, interval=0), pipe])
    pipe.close()
    reader.join(30)
    assert not reader.is_alive() and pipe_stream.closed

    final = [e for e in stream if isinstance(e, TileDone) and e.final]
    check_stream(stream)
    # the bar: one call per final tile event, the same counts
    assert bar_calls == [(e.done, e.total) for e in final] and bar_calls[-1] == (16, 16)
    assert "progress: 16/16" in capsys.readouterr().out
    # the monitor (what the report shows): the same passes, tiles and messages
    t = res.timings
    assert {p["index"]: p["done"] for p in t["passes"]} == \
        {i: max(e.done for e in stream if isinstance(e, TileDone) and e.pass_index == i)
         for i in {e.pass_index for e in stream if isinstance(e, TileDone)}}
    assert [m["text"] for m in t["messages"]] == [e.message for e in stream if isinstance(e, LogLine | WarningLine)]
    assert [p["name"] for p in t["phases"]] == [e.name for e in stream if isinstance(e, PhaseDone)]
    # the service: its progress is the final pass's tiles, whole tiles, rising to 1
    assert service_progress and service_progress[-1] == 1.0 == store.get(job.id).progress
    assert service_progress == sorted(service_progress)
    assert all(abs(p * 16 - round(p * 16)) < 1e-9 for p in service_progress)
    store.close()


def test_what_crosses_the_pipe_is_the_stream_itself(tmp_path):
    """Unthrottled, the JSON lines read back equal the in-process events, one for one, in order."""
    _input(tmp_path / "in.zarr")
    buf = io.StringIO()
    stream: list = []
    convpipe.load(_spec(tmp_path, TWO_PASSES)).run(on_event=[stream.append, JsonLinesWriter(buf, interval=0)])
    assert [from_json(line) for line in buf.getvalue().splitlines()] == stream
