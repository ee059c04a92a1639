"""Importing convpipe and running pipelines changes nothing process-wide: a notebook's or napari's process is
not ours to change. OpenCV's thread count is set around our own calls only and given back; CuPy's kernel
cache folder is passed to CuPy, never exported (tests/test_backends.py checks that one on the CuPy double).

Each check runs in a fresh interpreter. The third-party libraries convpipe uses are imported before the
first snapshot: what *they* do when imported is theirs (scipy adds warning filters, distributed its loggers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import copy, json, logging, os, signal, sys, warnings
    import numpy as np
    import cv2, dask, dask.array, distributed, fsspec, pyarrow.parquet, pydantic, scipy.fft, scipy.ndimage
    import scipy.signal, yaml, zarr

    cv2.setNumThreads(3)  # a user's own setting, which must survive our calls
    np.seterr(over="warn", invalid="warn", divide="warn", under="ignore")

    def loggers():
        return {n: (l.level, list(l.handlers), l.propagate, l.disabled)
                for n, l in logging.root.manager.loggerDict.items() if isinstance(l, logging.Logger)}

    def snap():
        return {"cv2 threads": cv2.getNumThreads(), "environ": dict(os.environ),
                "warnings filters": [repr(f) for f in warnings.filters], "errstate": np.geterr(),
                "printoptions": repr(np.get_printoptions()),
                "root logger": repr((logging.root.level, logging.root.handlers, logging.root.manager.disable)),
                "sigint": repr(signal.getsignal(signal.SIGINT)), "excepthook": repr(sys.excepthook),
                "dask config": repr(dask.config.config)}

    work = sys.argv[1]
    before, old_loggers = snap(), loggers()
    import convpipe

    x = (np.random.default_rng(0).random((3, 40, 40)) * 1000).astype(np.uint16)
    zarr.create_array(os.path.join(work, "in.zarr"), data=x, chunks=(1, 20, 20))
    steps = [{"gaussian": {"sigma": 1}}, {"sobel": {}}, {"median": {"size": 3}},
             {"correlate": {"kernel": [[1, 2, 0], [3, 4, 1], [0, 1, 2]], "method": "direct"}},
             {"stats": {"table": os.path.join(work, "s.parquet")}},
             {"peaks": {"radius": 1, "table": os.path.join(work, "p.parquet")}}]
    p = convpipe.load({"convpipe": 1, "input": os.path.join(work, "in.zarr"),
                       "output": os.path.join(work, "out.zarr"), "steps": steps})
    p.apply(x, axes="zyx", tables=True)  # the chain writes tables: apply returns them too
    str(p.explain())
    p.run()
    convpipe.load({"convpipe": 1, "input": "u.zarr", "steps": [{"log1p": {}}, {"fft_filter": {"cutoff": 0.3}}]}) \\
        .apply(np.full((8, 8), -2.0), axes="yx").compute()  # NaN by rule: no warning, no errstate left behind
    after = snap()
    changed = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    if "environ" in changed:
        changed["environ"] = sorted(set(after["environ"].items()) ^ set(before["environ"].items()))
    new = loggers()
    changed["loggers"] = sorted(n for n, v in new.items() if (old_loggers[n] != v if n in old_loggers
                                                              else v != (0, [], True, False)))
    if not changed["loggers"]:
        del changed["loggers"]
    print(json.dumps(changed, default=repr))
""")


def test_importing_and_running_changes_no_process_state(tmp_path):
    script = tmp_path / "state.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                       check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {}


def test_opencv_threads_are_ours_only_while_our_calls_run():
    """Overlapping calls from several threads: one OpenCV thread while any runs, the process's count after."""
    import threading

    cv2 = pytest.importorskip("cv2")
    from convpipe.engines import cpu

    saved = cv2.getNumThreads()
    try:
        cv2.setNumThreads(3)
        seen: list[int] = []
        entered, release, looked = threading.Barrier(4), threading.Event(), threading.Semaphore(0)

        def call():
            with cpu.opencv_threads():
                entered.wait(10)  # all four inside at once
                seen.append(cv2.getNumThreads())
                looked.release()
                release.wait(10)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in threads:
            assert looked.acquire(timeout=10)
        release.set()
        for t in threads:
            t.join()
        assert seen == [1, 1, 1, 1] and cv2.getNumThreads() == 3
        x = np.random.default_rng(1).random((2, 64, 64)).astype(np.float32)
        cpu.sep_correlate(x, {1: (np.ones(3) / 3, 1), 2: (np.ones(5) / 5, 2)})
        cpu.transposed_copy(np.ascontiguousarray(x), (0, 2, 1))
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(saved)
