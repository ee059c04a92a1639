"""The job service's throughput on tiny jobs, end to end (issue 17 item 6): the extra row ``service``
(:mod:`.service_row`) and the main table's service section (:mod:`.summary`).

A real service (``convpipe serve`` in a subprocess, on a loopback port, ``--max-running 2``) gets a burst of
tiny jobs (a gaussian σ=1.5 of a 64 × 64 float32 image) submitted at once over HTTP; jobs/s is their count
over the time from the first submission to the last job's success. Measured twice: each job forked from the
warm runner (the default) and each in a fresh interpreter (``CONVPIPE_WARM_RUNNER=0``, the way before). One
job is run first and waited for, so the numbers are the steady state; the time from the service's start to
that first job's success is reported beside them. A sample of outputs is checked against the oracle.
Target: ≥ 3 jobs/s warm, every job succeeded.

:func:`throughput` is the measurement both report (the main table with smaller counts). This module imports
nothing of the harness or the extra suite, so the harness's sections can use it.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .machine import loadavg

STEPS = [{"gaussian": {"sigma": 1.5}}]
TARGET_JOBS_PER_S = 3.0


def _spec(inp: str, out: str) -> str:
    import yaml

    return yaml.safe_dump({"convpipe": 1, "name": "tiny", "input": {"url": inp}, "output": {"url": out},
                           "steps": STEPS}, sort_keys=False)


def _wait(h: Any, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j["id"]: j for j in h.get("/jobs", params={"limit": 10_000}).json()}
        if all(jobs[i]["state"] in ("succeeded", "failed", "cancelled") for i in ids):
            return jobs
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(jobs[i]['state'] == 'succeeded' for i in ids)} of {len(ids)} jobs done "
                               f"after {timeout:.0f} s")
        time.sleep(0.02)


def measure(workdir: Path, n: int, *, warm: bool, max_running: int = 2, sample: int = 3) -> dict:
    """Start a service, run one job, then ``n`` at once; jobs/s and the checks (see the module's docstring)."""
    import zarr

    from .. import oracles
    from ..service.testing import start_service

    root = workdir / "root"
    root.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(17).random((64, 64)).astype("float32")
    if not (root / "in.zarr").exists():
        zarr.create_array(str(root / "in.zarr"), shape=image.shape, chunks=(64, 64), dtype="float32")[:] = image
    tag = f"{'warm' if warm else 'cold'}-{time.time_ns()}"
    t_start = time.perf_counter()
    svc = start_service(workdir / f"svc-{tag}", [root], max_running=max_running,
                        env={"CONVPIPE_WARM_RUNNER": "1" if warm else "0"})
    try:
        with svc.http() as h:
            first = h.post("/jobs", content=_spec("in.zarr", f"{tag}/first.zarr")).json()["id"]
            _wait(h, [first], 300)
            first_s = time.perf_counter() - t_start
            load_before = loadavg()
            t0 = time.perf_counter()
            with cf.ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(lambda i: h.post("/jobs", content=_spec("in.zarr", f"{tag}/o{i:03d}.zarr"))
                                    .json()["id"], range(n)))
            submitted_s = time.perf_counter() - t0
            jobs = _wait(h, ids, 120 + 10 * n)
            seconds = time.perf_counter() - t0
            load_after = loadavg()
    finally:
        svc.stop()
    ok = sum(jobs[i]["state"] == "succeeded" for i in ids)
    ref, _ = oracles.oracle(STEPS, image, "yx")
    worst = 0.0
    for k in np.random.default_rng(n).choice(n, size=min(sample, n), replace=False):
        got = zarr.open_array(str(root / tag / f"o{k:03d}.zarr"), mode="r")[...]
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - ref))))
    return {"jobs": n, "succeeded": ok, "seconds": seconds, "jobs_per_s": n / seconds, "submit_s": submitted_s,
            "service_start_to_first_job_s": first_s, "max_running": max_running, "sample_max_abs_diff": worst,
            "sample_ok": worst <= 1e-5 * max(1.0, float(np.max(np.abs(ref)))),
            "loadavg_before": load_before, "loadavg_after": load_after}


def throughput(workdir: Path, n_warm: int, n_cold: int, say: Callable[[str], Any] = lambda *a, **k: None) -> dict:
    """Jobs/s of ``n_warm`` jobs forked from the warm runner and ``n_cold`` in a fresh interpreter each.

    What the extra row ``service`` measures and the main table's service section (``convpipe bench``, with
    small counts) reports: :func:`measure` twice (warm only where :func:`~convpipe.service.warm.warm_supported`),
    their ratio ``speedup``, and ``met`` (warm ≥ :data:`TARGET_JOBS_PER_S` jobs/s, every job succeeded, the
    sampled outputs equal the oracle); ``all_ok`` is the last two alone.
    """
    from ..service.warm import warm_supported

    out: dict = {"warm": None, "cold": None, "target_jobs_per_s": TARGET_JOBS_PER_S}
    if warm_supported():
        say(f"  warm runner: {n_warm} jobs …")
        out["warm"] = measure(workdir, n_warm, warm=True)
    say(f"  fresh interpreter per job: {n_cold} jobs …")
    out["cold"] = measure(workdir, n_cold, warm=False)
    rows = [r for r in (out["warm"], out["cold"]) if r]
    out["all_ok"] = all(r["succeeded"] == r["jobs"] and r["sample_ok"] for r in rows)
    best = out["warm"] or out["cold"]
    out["speedup"] = out["warm"]["jobs_per_s"] / out["cold"]["jobs_per_s"] if out["warm"] else None
    out["met"] = bool(out["all_ok"] and out["warm"] and out["warm"]["jobs_per_s"] >= TARGET_JOBS_PER_S)

    def one(name: str, r: dict | None) -> str:
        if r is None:
            return f"{name}: not here (Linux only)"
        return (f"{name} {r['jobs_per_s']:.2f} jobs/s ({r['succeeded']}/{r['jobs']} in {r['seconds']:.1f} s, "
                f"first job {r['service_start_to_first_job_s']:.1f} s after start)")

    out["summary"] = (f"{one('warm', out['warm'])}; {one('fresh interpreter', out['cold'])}"
                      + (f"; {out['speedup']:.1f}×" if out["speedup"] else "")
                      + f"; load {best['loadavg_before'][0]:.1f}")
    return out
