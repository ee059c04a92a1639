"""The job service, end to end: a real service subprocess on a free loopback port, driven over HTTP.

Nothing is mocked: the service runs each job as ``python -m convpipe run`` in its own process, and
outputs are compared with the same spec run through the Python API.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import re
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import convpipe
from convpipe.service.testing import RunningService, running_service, start_service

FAST = [{"gaussian": {"sigma": 1}}]
SLOW = [{"median": {"size": 7}}]  # ~2 s for the slow input on this 2-core machine: long enough to interrupt


def _make_input(path: Path, shape: tuple, chunks: tuple, seed: int = 0) -> Path:
    a = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="float32")
    a[:] = np.random.default_rng(seed).random(shape).astype("float32")
    return path


def spec_text(inp: str, out: str, steps: list | None = None, **extra) -> str:
    d = {"convpipe": 1, "name": extra.pop("name", "test"), "input": {"url": inp}, "output": {"url": out, **extra},
         "steps": steps or FAST}
    return yaml.safe_dump(d, sort_keys=False)


def reference(inp: Path, out: Path, steps: list) -> np.ndarray:
    """The same spec run through the Python API."""
    res = convpipe.load({"convpipe": 1, "input": {"url": str(inp)}, "output": {"url": str(out)},
                         "steps": steps}).run()
    return zarr.open_array(res.output_url, mode="r")[...]


def wait_job(http, job_id: str, timeout: float = 120.0, until=("succeeded", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/jobs/{job_id}").json()
        if job["state"] in until:
            return job
        assert time.monotonic() < deadline, f"job still {job['state']} after {timeout} s"
        time.sleep(0.05)


def complete_flag(url: str) -> bool:
    return bool(zarr.open_array(url, mode="r").attrs["convpipe"]["complete"])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    _make_input(root / "in.zarr", (64, 64), (32, 32))
    _make_input(root / "slow.zarr", (48, 256, 256), (1, 256, 256), seed=1)
    return root


@pytest.fixture(scope="module")
def svc(tmp_path_factory, data) -> RunningService:
    with running_service(tmp_path_factory.mktemp("svc"), [data]) as s:
        yield s


# --------------------------------------------------------------------------- security


def test_every_request_needs_the_token(svc):
    with svc.http(token="") as anon:
        assert anon.get("/jobs").status_code == 401
        assert anon.get("/no/such/path").status_code == 401  # even unknown routes: no probing
        assert anon.post("/jobs", content=spec_text("in.zarr", "x.zarr")).status_code == 401
        assert anon.get("/openapi.json").status_code == 401
    with svc.http(token=svc.token + "x") as wrong:
        r = wrong.get("/jobs")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    with svc.http(token="") as h:
        assert h.get("/jobs", headers={"Authorization": f"Basic {svc.token}"}).status_code == 401
        assert h.get("/jobs", headers={"Authorization": svc.token}).status_code == 401
    with svc.http() as ok:
        assert ok.get("/jobs").status_code == 200
        assert ok.get("/jobs", headers={"Authorization": f"bearer {svc.token}"}).status_code == 200


def test_paths_outside_the_roots_are_refused(svc, data, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    _make_input(outside / "secret.zarr", (8, 8), (8, 8))
    link = data / "escape-link"
    if not link.exists():
        os.symlink(outside, link)
    cases = {
        "relative ..": spec_text("in.zarr", "../elsewhere.zarr"),
        "deep ..": spec_text("in.zarr", "sub/../../elsewhere.zarr"),
        "absolute": spec_text("in.zarr", str(outside / "o.zarr")),
        "file:// URL": spec_text("in.zarr", f"file://{outside}/o.zarr"),
        "input outside": spec_text(str(outside / "secret.zarr"), "o.zarr"),
        "symlinked output": spec_text("in.zarr", "escape-link/o.zarr"),
        "symlinked input": spec_text("escape-link/secret.zarr", "o.zarr"),
        "symlink then ..": spec_text("in.zarr", "escape-link/../o.zarr"),
        "table outside": spec_text("in.zarr", "t.zarr", [{"peaks": {"radius": 2, "threshold": 0.5,
                                                                    "table": "../peaks.parquet"}}]),
        "chained URL": spec_text("in.zarr", f"simplecache::file://{data}/o.zarr"),
        "other scheme": spec_text("in.zarr", "memory://o.zarr"),
    }
    with svc.http() as h:
        before = len(h.get("/jobs").json())
        for what, text in cases.items():
            r = h.post("/jobs", content=text)
            assert r.status_code == 403, (what, r.status_code, r.text)
            assert "outside" in r.json()["detail"] or "roots" in r.json()["detail"], what
        assert len(h.get("/jobs").json()) == before  # nothing was queued
    assert not (outside / "o.zarr").exists() and not (tmp_path / "elsewhere.zarr").exists()


def test_invalid_specs_get_422_with_the_errors(svc):
    bad = "convpipe: 1\ninput: {url: in.zarr}\noutput: {url: o.zarr}\nsteps:\n  - gausian: {sigma: 1}\n"
    with svc.http() as h:
        r = h.post("/jobs", content=bad)
        assert r.status_code == 422
        err = r.json()["errors"][0]
        assert err["path"] == "steps[0].gausian" and err["line"] == 5 and "gaussian" in err["message"]
        # specs are data: a YAML tag that would build a Python object is an error, never evaluated
        evil = "convpipe: 1\ninput: !!python/object/apply:os.system ['touch /tmp/pwned']\nsteps: [abs]\n"
        r = h.post("/jobs", content=evil)
        assert r.status_code == 422 and "Python objects are refused" in r.json()["errors"][0]["message"]
        assert h.post("/jobs", content=b"\xff\xfe not utf-8").status_code == 422
        assert h.post("/jobs", content="[1, 2").status_code == 422
        # JSON is YAML: a JSON body is a spec too (here a valid one, to prove the JSON path)
        assert h.post("/jobs", json={"convpipe": 1, "input": {"url": "in.zarr"}}).status_code == 422


def test_request_bodies_are_capped(svc):
    big = "# " + "x" * (1 << 20) + "\n" + spec_text("in.zarr", "o.zarr")
    with svc.http() as h:
        assert h.post("/jobs", content=big).status_code == 413

        def chunks():  # no Content-Length: the limit must hold for a chunked upload too
            for _ in range(20):
                yield b"#" * (100 << 10)

        assert h.post("/jobs", content=chunks()).status_code == 413
        assert h.get("/jobs/nope").status_code == 404
        assert h.get("/jobs", params={"state": "bogus"}).status_code == 422


# --------------------------------------------------------------------------- jobs


def test_a_job_runs_to_success_like_the_python_api(svc, data, tmp_path):
    with svc.http() as h:
        r = h.post("/jobs", content=spec_text("in.zarr", "ok.zarr", name="first"))
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["state"] == "queued" and r.headers["location"] == f"/jobs/{job['id']}"
        done = wait_job(h, job["id"])
        assert done["state"] == "succeeded", h.get(f"/jobs/{job['id']}/log").text
        assert done["progress"] == 1.0 and done["error"] is None and done["name"] == "first"
        assert set(done) >= {"id", "name", "state", "progress", "error", "submitted", "started", "finished", "outputs"}
        assert done["submitted"] <= done["started"] <= done["finished"]
        assert done["outputs"] == [str(data / "ok.zarr")]
        log = h.get(f"/jobs/{job['id']}/log").text
        assert "progress: 2/4" in log or "progress: 4/4" in log
        assert log.rstrip().endswith("succeeded")
        assert h.get("/jobs").json()[0]["id"] == job["id"]  # newest first
    got = zarr.open_array(str(data / "ok.zarr"), mode="r")
    assert got.attrs["convpipe"]["complete"] is True
    np.testing.assert_array_equal(got[...], reference(data / "in.zarr", tmp_path / "ref.zarr", FAST))


def test_a_failing_job_reports_its_error(svc):
    with svc.http() as h:
        job = h.post("/jobs", content=spec_text("missing.zarr", "never.zarr")).json()
        done = wait_job(h, job["id"])
        assert done["state"] == "failed"
        assert "missing.zarr" in done["error"]
        assert "Traceback" not in h.get(f"/jobs/{job['id']}/log").text
        assert h.post(f"/jobs/{job['id']}/cancel").status_code == 409  # already over


def test_progress_comes_from_the_runs_events_never_from_what_a_job_prints(svc, data):
    """A job's output names "progress: 9/10" (its error line prints it): the old stdout regex took that for 90%."""
    fake = data / "progress: 9/10.zarr"
    if not fake.exists():
        _make_input(fake, (8, 8), (8, 8))  # an existing output: the job is refused before any tile
    with svc.http() as h:
        job = h.post("/jobs", content=spec_text("in.zarr", "progress: 9/10.zarr", name="looks-done")).json()
        done = wait_job(h, job["id"])
        log = h.get(f"/jobs/{job['id']}/log").text
        assert done["state"] == "failed" and "progress: 9/10" in log, log
        assert done["progress"] == 0.0
        assert done["error"].startswith("output ") and "exists; use --overwrite" in done["error"]  # said once, no "error: "


def test_progress_reaches_the_job_while_it_runs_in_whole_tiles(svc, data):
    """Seen over HTTP while the job runs: 0 < progress < 1, always a whole number of tiles of the output,
    although the job's log says "running 'progress: 9/10': ..." (the name) before its first tile."""
    seen = []
    with svc.http() as h:
        job = h.post("/jobs", content=spec_text("slow.zarr", "whole-tiles.zarr", SLOW, name="progress: 9/10")).json()
        deadline = time.monotonic() + 120
        while (j := h.get(f"/jobs/{job['id']}").json())["state"] in ("queued", "running"):
            if j["state"] == "running":
                seen.append(j["progress"])
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert j["state"] == "succeeded" and j["progress"] == 1.0, h.get(f"/jobs/{job['id']}/log").text
        log = h.get(f"/jobs/{job['id']}/log").text
    tiles = int(re.search(r"running 'progress: 9/10': (\d+) tiles", log).group(1))
    assert tiles >= 4  # several tiles: progress has steps to be seen between 0 and 1
    assert any(0 < p < 1 for p in seen), seen
    assert all(abs(p * tiles - round(p * tiles)) < 0.01 for p in seen), seen  # never 0.9 = 43.2 tiles
    assert seen == sorted(seen)


def test_the_runner_reads_progress_from_the_events_pipe(tmp_path):
    """The reader alone: events and junk on the pipe, a resume's progress counted from the tiles it found."""
    from convpipe.run.events import Failed, LogLine, PassSummary, RunStarted, TileDone, to_json
    from convpipe.service.runner import Runner, _error_of, _Live
    from convpipe.service.store import JobStore

    store = JobStore(tmp_path / "j.sqlite")
    store.add("x", "convpipe: 1", [])
    job = store.claim_next()
    runner = Runner(store, tmp_path / "jobs")
    r, w = os.pipe()
    lines = [
        "progress: 9/10", "not json", '{"event": "tile_done", "pass_index": 0, "done": "x", "total": 10}',
        to_json(RunStarted("x", "o.zarr", "resume", "threads", "cpu", 10, 4, 12, (PassSummary(0, ("abs",), 10, "cpu"),))),
        to_json(TileDone(0, 1, 6, False)),  # an earlier pass: not the output's progress
        to_json(LogLine("progress: 9/10")),
        to_json(TileDone(0, 3, 6, True)),
        "x" * 200_000,  # an over-long line is cut, never taken for an event
        to_json(Failed("the reason: here", "ExecutionError")),
    ]
    def write():  # in a thread: the lines outgrow the pipe's buffer
        with os.fdopen(w, "w") as f:
            f.write("\n".join(lines) + "\n")

    writer = threading.Thread(target=write)
    writer.start()
    live = _Live(job.id, None, None)  # type: ignore[arg-type]
    runner._read_events(live, r)
    writer.join(30)
    assert store.get(job.id).progress == pytest.approx(0.7)  # (4 found + 3 computed) of 10
    assert live.failure == "the reason: here" and _error_of(live, 2) == "error: the reason: here"
    store.close()


def test_cancel_running_and_queued_jobs(tmp_path, data):
    with running_service(tmp_path / "svc", [data], max_running=1) as svc, svc.http() as h:
        running = h.post("/jobs", content=spec_text("slow.zarr", "cancelled.zarr", SLOW)).json()
        queued = h.post("/jobs", content=spec_text("in.zarr", "never-run.zarr")).json()
        wait_job(h, running["id"], timeout=60, until=("running",))
        assert h.get(f"/jobs/{queued['id']}").json()["state"] == "queued"  # --max-running 1

        r = h.post(f"/jobs/{queued['id']}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        # the output exists once the run has started writing: wait for that, then cancel mid-run
        deadline = time.monotonic() + 60
        while h.get(f"/jobs/{running['id']}").json()["progress"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        r = h.post(f"/jobs/{running['id']}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
        assert time.monotonic() - t0 < 10
        assert r.json()["finished"] is not None and r.json()["progress"] < 1
        assert complete_flag(str(data / "cancelled.zarr")) is False  # partial output stays marked incomplete
        assert not (data / "never-run.zarr").exists()
        last = h.get(f"/jobs/{running['id']}/log").text.rstrip().splitlines()[-1]
        assert last.startswith("=== ") and " cancelled" in last

        # A graceful stop (SIGTERM) stops the running job and queues it to resume at the next start.
        again = h.post("/jobs", content=spec_text("slow.zarr", "stopped.zarr", SLOW)).json()
        wait_job(h, again["id"], timeout=60, until=("running",))
    svc.stop()
    assert svc.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
    with sqlite3.connect(svc.db) as db:
        state, resume = db.execute("SELECT state, resume FROM jobs WHERE id = ?", (again["id"],)).fetchone()
    assert (state, resume) == ("queued", 1)
    assert "stopped by the service shutting down" in (Path(str(svc.db) + ".d") / again["id"] / "log.txt").read_text()


def test_jobs_survive_a_killed_service(tmp_path, data):
    """SIGKILL the service mid-job; the restarted service resumes the job to an identical output."""
    work = tmp_path / "svc"
    svc = start_service(work, [data], max_running=1)
    try:
        with svc.http() as h:
            job = h.post("/jobs", content=spec_text("slow.zarr", "resumed.zarr", SLOW)).json()
            waiting = h.post("/jobs", content=spec_text("in.zarr", "after-restart.zarr")).json()
            deadline = time.monotonic() + 60
            while (j := h.get(f"/jobs/{job['id']}").json())["progress"] == 0:
                assert j["state"] in ("queued", "running") and time.monotonic() < deadline
                time.sleep(0.02)
        svc.kill()
        assert 0 < j["progress"] < 1
        time.sleep(0.5)  # the job process dies with the service (PR_SET_PDEATHSIG)
        assert complete_flag(str(data / "resumed.zarr")) is False
    finally:
        svc.kill()

    with running_service(work, [data], db=svc.db, max_running=1) as again, again.http() as h:
        done = wait_job(h, job["id"])
        assert done["state"] == "succeeded" and done["attempts"] == 2, h.get(f"/jobs/{job['id']}/log").text
        w = wait_job(h, waiting["id"])
        assert w["state"] == "succeeded", (w, h.get(f"/jobs/{waiting['id']}/log").text, again.log())  # a queued job is kept
        log = h.get(f"/jobs/{job['id']}/log").text
        assert "--resume" in log and "will resume" in log
    ref = reference(data / "slow.zarr", tmp_path / "ref.zarr", SLOW)
    got = zarr.open_array(str(data / "resumed.zarr"), mode="r")
    assert got.attrs["convpipe"]["complete"] is True
    np.testing.assert_array_equal(got[...], ref)


def _load_test(tmp_path: Path, data: Path, n: int, max_running: int) -> float:
    """Submit n small jobs at once; all finish, none lost, never more than max_running running. Returns jobs/s."""
    with running_service(tmp_path / "svc", [data], max_running=max_running) as svc, svc.http() as h:
        t0 = time.monotonic()

        def submit(i: int) -> str:
            r = h.post("/jobs", content=spec_text("in.zarr", f"load{n}/out{i:02d}.zarr", name=f"load{i}"))
            assert r.status_code == 201, r.text
            return r.json()["id"]

        with cf.ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(submit, range(n)))
        assert len(set(ids)) == n
        peak, deadline = 0, time.monotonic() + 60 + 6 * n
        while True:
            jobs = {j["id"]: j for j in h.get("/jobs", params={"limit": 1000}).json()}
            states = [jobs[i]["state"] for i in ids]
            peak = max(peak, states.count("running"))
            if all(s in ("succeeded", "failed", "cancelled") for s in states):
                break
            assert time.monotonic() < deadline, f"load test did not finish: {states}"
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
    assert states.count("succeeded") == n, [jobs[i]["error"] for i in ids if jobs[i]["state"] != "succeeded"]
    assert 1 <= peak <= max_running
    # The job table's own timings must agree: at no instant more than max_running jobs between start and end.
    from datetime import datetime

    events = sorted([(datetime.fromisoformat(jobs[i]["started"]), 1) for i in ids]
                    + [(datetime.fromisoformat(jobs[i]["finished"]), -1) for i in ids], key=lambda e: (e[0], e[1]))
    live = top = 0
    for _, d in events:
        live += d
        top = max(top, live)
    assert top <= max_running
    for i in range(n):
        assert complete_flag(str(data / f"load{n}" / f"out{i:02d}.zarr"))
    print(f"\nload test: {n} jobs in {elapsed:.1f} s = {n / elapsed:.2f} jobs/s (max running {max_running})")
    return n / elapsed


def test_load_concurrent_jobs(tmp_path, data, record_property):
    """A dozen jobs submitted at once (the 50-job version is marked slow)."""
    record_property("jobs_per_second", round(_load_test(tmp_path, data, 12, 2), 2))


@pytest.mark.slow
def test_load_50_concurrent_jobs(tmp_path, data, record_property):
    """50 small jobs submitted at once: all finish, none lost, never more than --max-running running."""
    record_property("jobs_per_second", round(_load_test(tmp_path, data, 50, 2), 2))


def test_bad_setups_are_refused_at_start(svc, data, tmp_path, capsys):
    from convpipe.cli.service import main

    token = tmp_path / "token.txt"
    token.write_text("x" * 32)
    base = ["serve", "--port", "0", "--token-file", str(token)]
    assert main(base + ["--db", str(svc.db), "--root", str(data)]) == 1  # one job table, one service
    assert "another convpipe service is using" in capsys.readouterr().err
    assert main(base + ["--db", str(tmp_path / "j.sqlite"), "--root", str(tmp_path / "missing")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(base + ["--db", str(tmp_path / "j.sqlite"), "--root", str(data), "--cluster", "profile:nope"]) == 1
    assert "unknown cluster profile" in capsys.readouterr().err
    token.write_text("short\n")
    assert main(base + ["--db", str(tmp_path / "j.sqlite"), "--root", str(data)]) == 1
    assert "too short" in capsys.readouterr().err
    fresh = tmp_path / "new" / "token.txt"  # a missing token file gets a random token, owner-only
    assert main(["serve", "--port", "0", "--token-file", str(fresh), "--db", str(svc.db), "--root", str(data)]) == 1
    assert len(fresh.read_text().strip()) >= 32 and fresh.stat().st_mode & 0o077 == 0


def test_paths_are_checked_again_when_a_job_starts(tmp_path):
    """A symlink re-pointed outside the roots after submission is caught before the job runs."""
    from convpipe.service.policy import Forbidden, Roots, prepare_submission

    root, inside, outside = tmp_path / "root", tmp_path / "root" / "real", tmp_path / "outside"
    for d in (root, inside, outside):
        d.mkdir(exist_ok=True)
    _make_input(root / "in.zarr", (8, 8), (8, 8))
    (root / "link").symlink_to(inside)
    roots = Roots([root])
    sub = prepare_submission(spec_text("in.zarr", str(root / "link" / "o.zarr")), roots)
    assert sub.locations["output.url"] == str(root / "link" / "o.zarr") and sub.outputs == [sub.locations["output.url"]]
    assert "cluster" not in yaml.safe_load(sub.spec_text).get("execution", {})
    prepare_submission(sub.spec_text, roots)  # unchanged: still fine
    (root / "link").unlink()
    (root / "link").symlink_to(outside)
    with pytest.raises(Forbidden, match="output.url"):
        prepare_submission(sub.spec_text, roots)


def test_job_table_claims_in_order_and_cancels_atomically(tmp_path):
    from convpipe.service.store import JobStore

    store = JobStore(tmp_path / "jobs.sqlite")
    a, b, c = (store.add(n, "spec", []) for n in "abc")
    assert [j.id for j in store.list_jobs()] == [c.id, b.id, a.id]  # newest first
    assert store.cancel_queued(b.id) and not store.cancel_queued(b.id)
    first = store.claim_next()
    assert first.id == a.id and first.state == "running" and first.attempts == 1
    assert not store.cancel_queued(a.id) and store.request_cancel(a.id)
    assert store.claim_next().id == c.id and store.claim_next() is None
    store.requeue(c.id)
    again = store.claim_next()
    assert again.id == c.id and again.resume and again.attempts == 2 and again.started == store.get(c.id).started
    store.set_progress(c.id, 0.5)
    store.set_progress(c.id, 0.2)  # never goes back
    assert store.get(c.id).progress == 0.5
    store.finish(c.id, "succeeded")
    assert store.get(c.id).public()["progress"] == 1.0
    store.close()
