"""Measurement subprocesses: one job (a run, or a graph build) in a fresh interpreter, sampled from outside.

Anything measured for memory runs in its own process, so one row's allocations never show in another's
peak RSS. The parent samples the child's RSS (and, when asked, its whole process tree) with the run
monitor's :class:`convpipe.monitor.RssSampler`; the child prints one tagged JSON line with its own numbers.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable

from ..monitor import RssSampler

__all__ = ["child_cmd", "child_main", "run_child", "run_sampled"]

_CHILD_TAG = "CONVPIPE-BENCH-CHILD "


def child_main(job_json: str) -> None:
    """Entry point of a measurement subprocess: runs one job, prints one tagged JSON line."""
    job = json.loads(job_json)
    import psutil

    import convpipe

    proc = psutil.Process()
    out: dict = {"rss_after_imports": int(proc.memory_info().rss)}
    p = convpipe.load(job["spec"])
    if job["kind"] == "build":  # the graph only, no writes (metadata-only inputs: nothing is read either)
        import dask.array as da
        import zarr

        from convpipe.execute import execute
        from convpipe.plan import read_chunks

        t = time.perf_counter()
        plan = p.explain()
        out["plan_s"] = time.perf_counter() - t
        arr = zarr.open_array(job["spec"]["input"]["url"], mode="r")
        rc = read_chunks(plan.input, plan.passes[0].tile)
        src = da.from_zarr(arr, chunks=tuple(rc[a] for a in plan.input.axes), inline_array=False)
        builds = []
        for _ in range(int(job.get("repeat", 3))):  # best of N: one GC pause must not make a size look slow
            gc.collect()
            t = time.perf_counter()
            res = execute(plan, src)
            n = len(res.__dask_graph__())
            builds.append(time.perf_counter() - t)
            del res
        out.update(build_s=min(builds), build_times=builds, graph_len=n, tasks=int(plan.tasks),
                   tiles=int(plan.passes[-1].n_tiles))
    else:
        t = time.perf_counter()
        res = p.run(**job.get("run", {}))
        out["wall_in_child_s"] = time.perf_counter() - t
        phases = {ph["name"]: ph["end_s"] - ph["start_s"] for ph in res.timings.get("phases", [])}
        out.update(elapsed=res.elapsed, tasks=int(res.tasks), tiles=int(res.tiles),
                   skipped_tiles=int(res.skipped_tiles), phases=phases,
                   peak_rss_monitor=res.timings.get("peak_rss"),
                   outputs=json.loads(json.dumps(res.outputs, default=str)))
    out["rss_end"] = int(proc.memory_info().rss)
    print(_CHILD_TAG + json.dumps(out), flush=True)


def run_sampled(cmd: list[str], *, timeout: float, interval: float = 0.01, tree: bool = False,
                 kill_when: Callable[[], bool] | None = None, env: dict | None = None) -> dict:
    """Run ``cmd``; sample the RSS of the process (and of its whole tree) until it ends.

    ``kill_when`` is polled every ``interval`` seconds; when it returns True the process is SIGKILLed (the
    resume row). A run past ``timeout`` is killed too (``timed_out``). ``peak_rss`` is the process's own
    peak, ``peak_rss_tree`` that of the process and its children (equal unless ``tree``)."""
    import signal
    import subprocess

    t0 = time.perf_counter()
    pr = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    chunks: dict[str, list[str]] = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda f=f, k=k: chunks[k].append(f.read()), daemon=True)
               for f, k in ((pr.stdout, "out"), (pr.stderr, "err"))]
    for th in readers:
        th.start()
    killed = timed_out = False
    with RssSampler(pr.pid, children=tree, interval=interval) as rss:  # a /proc walk only when asked (local:N)
        while pr.poll() is None:
            if not killed and kill_when is not None and kill_when():
                os.kill(pr.pid, signal.SIGKILL)
                killed = True
            if time.perf_counter() - t0 > timeout and not killed:
                os.kill(pr.pid, signal.SIGKILL)
                killed = timed_out = True
            time.sleep(interval)
    wall = time.perf_counter() - t0
    for th in readers:
        th.join(5)
    stdout, stderr = "".join(chunks["out"]), "".join(chunks["err"])
    result = None
    for line in stdout.splitlines():
        if line.startswith(_CHILD_TAG):
            result = json.loads(line[len(_CHILD_TAG):])
    return {"wall_s": wall, "peak_rss": rss.peak_own or 0, "peak_rss_tree": rss.peak or 0, "rc": pr.returncode,
            "killed": killed, "timed_out": timed_out, "result": result, "stdout_tail": stdout[-2000:], "stderr_tail": stderr[-2000:]}


def child_cmd(job: dict) -> list[str]:
    return [sys.executable, "-c", "import sys; from convpipe.bench.child import child_main; child_main(sys.argv[1])",
            json.dumps(job)]


def run_child(job: dict, *, timeout: float = 600.0, interval: float = 0.01, tree: bool = False) -> dict:
    r = run_sampled(child_cmd(job), timeout=timeout, interval=interval, tree=tree)
    if r["result"] is None and not r["timed_out"]:
        raise RuntimeError(f"measurement subprocess failed (rc {r['rc']}): {r['stderr_tail'][-800:]}")
    return r

