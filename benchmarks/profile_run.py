"""Where a run's time goes: a task stream and a cProfile of the worker threads of ``convpipe run``.

    PYTHONPATH=. python benchmarks/profile_run.py SPEC.yaml [--top 25] [--sort tottime]

Runs the spec in this process on the threaded scheduler (the spec's ``execution`` otherwise), with

- a task stream: every task's start and end and thread (a dask callback), summarised per task kind
  (input read, tile, other): count, total seconds, and how much of the wall time each worker thread was busy;
- a cProfile of every task, merged over all worker threads (cProfile sees only the thread it runs in, so
  each task runs under its own profiler), printed by cumulative or own time.

The summary of what these showed on the benchmark's jobs is in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import threading
import time
from collections import defaultdict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    ap.add_argument("--no-profile", action="store_true", help="only the task stream (no profiler overhead)")
    a = ap.parse_args(argv)

    import dask
    from dask.callbacks import Callback

    import convpipe

    stream: list[tuple[str, int, float, float]] = []
    starts: dict = {}
    profiles: list[pstats.Stats] = []
    lock = threading.Lock()
    prof_on = not a.no_profile

    def kind(key) -> str:
        name = key[0] if isinstance(key, tuple) else str(key)
        if name.startswith("convpipe-input"):
            return "read"
        if name.startswith("convpipe-pass"):
            return "tile" if not name.endswith("-program") else "program"
        return name.split("-")[0]

    class Stream(Callback):
        def _pretask(self, key, dsk, state):
            starts[(key, threading.get_ident())] = time.perf_counter()

        def _posttask(self, key, result, dsk, state, worker_id):
            t1 = time.perf_counter()
            t0 = starts.pop((key, threading.get_ident()), t1)
            stream.append((kind(key), threading.get_ident(), t0, t1))

    # cProfile per task: wrap the task functions the graph calls (a dask callback runs outside the task)
    from dask import local

    orig = local.execute_task

    def execute_task(*args, **kw):
        if not prof_on:
            return orig(*args, **kw)
        pr = cProfile.Profile()
        pr.enable()
        try:
            return orig(*args, **kw)
        finally:
            pr.disable()
            s = pstats.Stats(pr)
            with lock:
                profiles.append(s)

    local.execute_task = execute_task
    t0 = time.perf_counter()
    with Stream():
        res = convpipe.load(a.spec).run(overwrite=True, cluster="threads")
    wall = time.perf_counter() - t0
    local.execute_task = orig

    print(f"run: {res.elapsed_s if hasattr(res, 'elapsed_s') else wall:.2f} s ({wall:.2f} s in this process), "
          f"{len(stream)} tasks")
    if stream:
        t_first = min(s[2] for s in stream)
        t_last = max(s[3] for s in stream)
        print(f"graph span {t_last - t_first:.2f} s (first task start to last task end); "
              f"before the first task {t_first - t0:.2f} s, after the last {t0 + wall - t_last:.2f} s")
        per = defaultdict(lambda: [0, 0.0])
        for k, _, s, e in stream:
            per[k][0] += 1
            per[k][1] += e - s
        for k, (n, tot) in sorted(per.items(), key=lambda kv: -kv[1][1]):
            print(f"  {k:8s} {n:6d} tasks {tot:8.2f} s in all, {tot / n * 1e3:8.1f} ms each")
        busy = defaultdict(float)
        for _, th, s, e in stream:
            busy[th] += e - s
        span = t_last - t_first
        print("  threads busy: " + ", ".join(f"{b / span:.0%}" for b in busy.values()))
    if profiles:
        st = profiles[0]
        for s in profiles[1:]:
            st.add(s)
        buf = io.StringIO()
        st.stream = buf
        st.sort_stats(a.sort).print_stats(a.top)
        print(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
