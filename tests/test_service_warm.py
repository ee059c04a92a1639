"""The job service's warm runner: jobs forked from one process that imported convpipe once.

A real service subprocess, nothing mocked. One job's crash (its process killed by a signal, as the OOM
killer does), error or cancellation must not touch the next job served by the same warm runner; a warm
runner that dies is replaced, and the job it took down resumes; a burst of submissions loses none and runs
none twice. Outputs are checked against the oracle (convpipe.oracles), never against convpipe itself.
Throughput is measured by ``convpipe bench --suite extra --pipelines service``, not asserted here.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import signal
import sys
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from convpipe import oracles
from convpipe.service.testing import RunningService, running_service
from convpipe.service.warm import warm_supported

pytestmark = pytest.mark.skipif(not warm_supported(), reason="the warm runner needs Linux")

FAST = [{"gaussian": {"sigma": 1.5}}]
SLOW = [{"median": {"size": 7}}]  # seconds on a 2-core machine: a job to kill, cancel or orphan mid-run
FINAL = ("succeeded", "failed", "cancelled")
_WARM_LINE = re.compile(r"^=== .* attempt (\d+): .*\(warm runner (\d+)\)$", re.M)


def _array(path: Path, data: np.ndarray, chunks: tuple) -> Path:
    a = zarr.create_array(str(path), shape=data.shape, chunks=chunks, dtype=data.dtype)
    a[:] = data
    return path


def spec_text(inp: str, out: str, steps: list, name: str = "warm") -> str:
    return yaml.safe_dump({"convpipe": 1, "name": name, "input": {"url": inp}, "output": {"url": out},
                           "steps": steps}, sort_keys=False)


def wait_job(h, job_id: str, until=FINAL, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while (job := h.get(f"/jobs/{job_id}").json())["state"] not in until:
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout} s"
        time.sleep(0.05)
    return job


def job_pid(svc: RunningService, job_id: str, timeout: float = 60.0) -> int:
    """The job's process id, from the job table, once it has one."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(svc.db) as db:
            (pid,) = db.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if pid:
            return int(pid)
        assert time.monotonic() < deadline
        time.sleep(0.02)


def wait_progress(h, job_id: str, timeout: float = 120.0) -> None:
    """Until the job has written a tile (its output exists and is marked incomplete)."""
    deadline = time.monotonic() + timeout
    while (job := h.get(f"/jobs/{job_id}").json())["progress"] == 0:
        assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.02)


def warm_runners(h, job_id: str) -> list[int]:
    """The warm runner's pid for each attempt of the job, from its log (a cold start has none)."""
    log = h.get(f"/jobs/{job_id}/log").text
    return [int(m.group(2)) for m in _WARM_LINE.finditer(log)]


def check_output(url: Path, x: np.ndarray, steps: list) -> None:
    got = zarr.open_array(str(url), mode="r")
    assert got.attrs["convpipe"]["complete"] is True
    ref, _ = oracles.oracle(steps, x, "yx" if x.ndim == 2 else "zyx")
    oracles.assert_conforms(got[...], ref, precision="float32", what=str(url))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by whoever inherited it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    from skimage import data as skdata

    root = tmp_path_factory.mktemp("warmroot")
    camera = skdata.camera()[200:264, 200:264].astype("float32")  # a real image, 64 × 64
    noise = np.random.default_rng(7).random((48, 256, 256)).astype("float32")
    _array(root / "camera.zarr", camera, (32, 32))
    _array(root / "slow.zarr", noise, (1, 256, 256))
    return {"root": root, "camera": camera, "slow": noise}


# --------------------------------------------------------------------------- isolation


def test_crashed_failed_and_cancelled_jobs_leave_the_warm_runner_serving(tmp_path, data):
    """In one warm runner: two jobs at once, each in its own folder and process group, whose processes then
    crash (SIGKILL, as the OOM killer ends one; SIGSEGV); a job that raises; a cancelled job; then a job
    that succeeds with a correct output. Each ran in a process of its own, forked by the same runner."""
    root = data["root"]
    crashes = (signal.SIGKILL, signal.SIGSEGV)
    with running_service(tmp_path / "svc", [root], max_running=2) as svc, svc.http() as h:
        crashed = [h.post("/jobs", content=spec_text("slow.zarr", f"crash{k}.zarr", SLOW)).json()["id"]
                   for k in range(len(crashes))]
        for i in crashed:
            wait_progress(h, i)
        pids = [job_pid(svc, i) for i in crashed]
        for i, pid in zip(crashed, pids):
            assert Path(os.readlink(f"/proc/{pid}/cwd")) == Path(str(svc.db) + ".d") / i  # its own job folder
            assert os.getpgid(pid) == pid  # its own process group: cancel stops it alone
        for pid, sig in zip(pids, crashes):
            os.kill(pid, sig)
        for i, sig in zip(crashed, crashes):
            c = wait_job(h, i)
            assert c["state"] == "failed" and c["error"] == f"the job process was killed by {sig.name}", c

        raised = h.post("/jobs", content=spec_text("missing.zarr", "never.zarr", FAST)).json()["id"]
        cancelled = h.post("/jobs", content=spec_text("slow.zarr", "cancelled.zarr", SLOW)).json()["id"]
        r = wait_job(h, raised)
        assert r["state"] == "failed" and "missing.zarr" in r["error"], r
        wait_progress(h, cancelled)
        cancel_pid = job_pid(svc, cancelled)
        assert h.post(f"/jobs/{cancelled}/cancel").json()["state"] == "cancelled"

        ok = h.post("/jobs", content=spec_text("camera.zarr", "after.zarr", FAST)).json()["id"]
        assert wait_job(h, ok)["state"] == "succeeded", h.get(f"/jobs/{ok}/log").text

        runners = [warm_runners(h, j) for j in (*crashed, raised, cancelled, ok)]
        assert all(len(r) == 1 for r in runners), runners  # one attempt each, every one forked warm
        assert len({r[0] for r in runners}) == 1, runners  # by one and the same warm runner
        runner = runners[0][0]
        assert alive(runner) and len({*pids, cancel_pid, runner}) == 4
        assert not alive(cancel_pid)  # cancel ended that job's process
    check_output(root / "after.zarr", data["camera"], FAST)
    assert zarr.open_array(str(root / "cancelled.zarr"), mode="r").attrs["convpipe"]["complete"] is False
    assert not (root / "never.zarr").exists()
    assert not alive(runner)  # the service's stop took its warm runner along


def test_each_forked_job_gets_its_own_environment(tmp_path, data):
    """One warm runner, jobs with other environments: each job's roots (handed in its environment) are its
    own, whatever the job before it or the runner's own environment had."""
    import threading

    from convpipe.roots import Roots
    from convpipe.service.warm import WarmPool

    root, other = data["root"], tmp_path / "other"
    other.mkdir()
    base = {k: v for k, v in os.environ.items() if k != "CONVPIPE_ROOTS"} | Roots([other]).env()
    woke = threading.Event()
    pool = WarmPool(sys.executable, base, tmp_path / "warm.log", on_change=woke.set)
    pool.maintain()
    deadline = time.monotonic() + 120
    while not pool.ready():
        assert pool.starting() and time.monotonic() < deadline, pool.reason
        woke.wait(0.5)
    try:
        results = []
        for k, roots in enumerate([[root], [other], [root]]):
            folder = tmp_path / f"job{k}"
            folder.mkdir()
            (folder / "spec.yaml").write_text(spec_text(str(root / "camera.zarr"), str(root / f"env{k}.zarr"), FAST))
            out_r, out_w = os.pipe()
            ev_r, ev_w = os.pipe()
            proc = pool.spawn(["run", "spec.yaml"], folder, base | Roots(roots).env(), out_w, ev_w)
            os.close(out_w)
            os.close(ev_w)
            with os.fdopen(out_r, "rb") as out, os.fdopen(ev_r, "rb") as ev:
                text = out.read().decode()
                ev.read()
            results.append((proc.finish(), text))
    finally:
        pool.close()
    assert results[0][0] == 0 and results[2][0] == 0, results
    assert results[1][0] == 1 and "outside" in results[1][1], results[1]  # its roots do not hold the input
    assert not (root / "env1.zarr").exists()
    check_output(root / "env2.zarr", data["camera"], FAST)


@pytest.mark.parametrize("rc", [-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT])
def test_a_killed_job_says_how_it_was_killed_not_its_last_progress_line(tmp_path, rc):
    from convpipe.service.runner import _error_of, _Live

    live = _Live("x", None, None)  # type: ignore[arg-type]
    live.tail.extend(["running 'cells': 40 tiles (0 already done), 80 tasks on threads", "progress: 3/40"])
    assert _error_of(live, rc) == f"the job process was killed by {signal.Signals(-rc).name}"


# --------------------------------------------------------------------------- a dead warm runner


def test_a_dead_warm_runner_is_replaced_and_its_job_resumes(tmp_path, data):
    """SIGKILL the warm runner mid-job: the job's process dies with it, a new runner starts, and the job
    resumes from its finished chunks there, to a correct output; the new runner serves the next job."""
    root = data["root"]
    with running_service(tmp_path / "svc", [root], max_running=1) as svc, svc.http() as h:
        orphan = h.post("/jobs", content=spec_text("slow.zarr", "orphaned.zarr", SLOW)).json()
        wait_progress(h, orphan["id"])
        pid = job_pid(svc, orphan["id"])
        (runner1,) = warm_runners(h, orphan["id"])
        os.kill(runner1, signal.SIGKILL)
        done = wait_job(h, orphan["id"])
        log = h.get(f"/jobs/{orphan['id']}/log").text
        assert done["state"] == "succeeded" and done["attempts"] == 2, log
        assert "the warm runner died while this job ran" in log and "--resume" in log
        runners = warm_runners(h, orphan["id"])
        assert len(runners) == 2 and runners[0] == runner1 != runners[1] and alive(runners[1]), runners
        assert not alive(pid)
        after = h.post("/jobs", content=spec_text("camera.zarr", "r2.zarr", FAST)).json()
        assert wait_job(h, after["id"])["state"] == "succeeded"
        assert warm_runners(h, after["id"]) == runners[1:]  # the new runner serves on
    check_output(root / "r2.zarr", data["camera"], FAST)
    check_output(root / "orphaned.zarr", data["slow"], SLOW)


def test_without_the_warm_runner_jobs_start_in_a_fresh_interpreter(tmp_path, data):
    """``CONVPIPE_WARM_RUNNER=0``: the previous way, still there as the fallback."""
    root = data["root"]
    with running_service(tmp_path / "svc", [root], max_running=1, env={"CONVPIPE_WARM_RUNNER": "0"}) as svc, \
            svc.http() as h:
        job = h.post("/jobs", content=spec_text("camera.zarr", "cold.zarr", FAST)).json()
        assert wait_job(h, job["id"])["state"] == "succeeded"
        assert warm_runners(h, job["id"]) == []
    assert not (Path(str(svc.db) + ".d") / "warm-runner.log").exists()
    check_output(root / "cold.zarr", data["camera"], FAST)


# --------------------------------------------------------------------------- load


def _load(tmp_path: Path, data: dict, n: int, max_running: int = 2, sample: int = 5) -> None:
    """Submit n tiny jobs at once: every one reaches a final state, all succeed, each ran exactly once (one
    attempt, one run in its log, its own output), never more than max_running at once; a sample of the
    outputs is checked against the oracle."""
    root = data["root"]
    folder = f"load{n}-{tmp_path.name}"
    with running_service(tmp_path / "svc", [root], max_running=max_running) as svc, svc.http() as h:
        def submit(i: int) -> str:
            r = h.post("/jobs", content=spec_text("camera.zarr", f"{folder}/o{i:03d}.zarr", FAST, name=f"load{i}"))
            assert r.status_code == 201, r.text
            return r.json()["id"]

        with cf.ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(submit, range(n)))
        assert len(set(ids)) == n
        deadline, peak = time.monotonic() + 120 + 3 * n, 0
        while True:
            jobs = {j["id"]: j for j in h.get("/jobs", params={"limit": 10_000}).json()}
            states = [jobs[i]["state"] for i in ids]
            peak = max(peak, states.count("running"))
            if all(s in FINAL for s in states):
                break
            assert time.monotonic() < deadline, {s: states.count(s) for s in set(states)}
            time.sleep(0.1)
        bad = {i: (jobs[i]["state"], jobs[i]["error"]) for i in ids if jobs[i]["state"] != "succeeded"}
        assert not bad, bad
        assert peak <= max_running
        assert all(jobs[i]["attempts"] == 1 for i in ids)
        logs = {i: h.get(f"/jobs/{i}/log").text for i in ids}
    for k, i in enumerate(ids):
        assert logs[i].count(" attempt ") == 1 and logs[i].count("\ndone: ") == 1, logs[i]
        assert f"{folder}/o{k:03d}.zarr" in logs[i]  # its own output, written by this job alone
        assert logs[i].rstrip().endswith("succeeded")
    for k in np.random.default_rng(n).choice(n, size=min(sample, n), replace=False):
        check_output(root / folder / f"o{k:03d}.zarr", data["camera"], FAST)


def test_load_20_submissions_lose_none(tmp_path, data):
    _load(tmp_path, data, 20)


@pytest.mark.slow
def test_load_200_submissions_lose_none(tmp_path, data):
    _load(tmp_path, data, 200, sample=10)


@pytest.mark.slow
def test_the_bench_service_row_measures_and_checks(tmp_path):
    """``convpipe bench --suite extra --pipelines service``'s measurement, small: every job succeeded and the
    sample of outputs equals the oracle (its numbers are for the benchmark, not asserted)."""
    from convpipe.bench.service import measure

    r = measure(tmp_path, 4, warm=True, sample=4)
    assert r["jobs"] == r["succeeded"] == 4 and r["sample_ok"], r
    assert r["jobs_per_s"] > 0 and r["seconds"] > 0


def test_serve_takes_the_warm_runner_switch():
    """``convpipe serve --no-warm-runner`` is what ``CONVPIPE_WARM_RUNNER=0`` is; the default is on."""
    from typer.testing import CliRunner

    from convpipe.cli import app

    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--warm-runner" in out and "--no-warm-runner" in out
