"""Shared pytest setup: the tests folder goes on ``sys.path`` so test modules can ``import harness``
(whatever the import mode), and a seeded ``rng`` fixture. Slow tests are deselected by pyproject's
``addopts = -m 'not slow'``; run them with ``-m slow``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


# --------------------------------------------------------------------------- executors of the conformance suite
# (tests/executors.py: what each one is; a test takes ``executor`` indirectly parametrised by its name)


@pytest.fixture(scope="session")
def local_cluster_address():
    """One ``distributed.LocalCluster`` per test session (per xdist worker), as ``cluster: local:2`` starts
    it: 2 single-threaded worker processes on the loopback interface. Runs reach it by its address."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.CRITICAL) as lc:
        yield lc.scheduler_address


@pytest.fixture(scope="session")
def session_process_pool():
    """The ``processes`` scheduler's worker pool, started once (convpipe's own, from cluster._process_pool)."""
    from convpipe import cluster

    with cluster._process_pool(2) as pool:
        yield pool


@pytest.fixture
def executor(request, monkeypatch):
    """The executor named by the test's parameter, with what it needs for this test."""
    import contextlib

    from executors import EXECUTORS

    ex = EXECUTORS[request.param]
    if ex.name == "distributed":
        ex = ex.with_cluster(request.getfixturevalue("local_cluster_address"))
    elif ex.name == "processes":
        from convpipe import cluster

        pool = request.getfixturevalue("session_process_pool")

        @contextlib.contextmanager
        def shared(workers):
            yield pool

        monkeypatch.setattr(cluster, "_process_pool", shared)  # every run of this test uses the session's pool
    elif ex.name == "cupy-double":
        request.getfixturevalue("fake_cupy")  # tests/test_backends.py's double, installed as cupy for this test
    elif ex.name == "cupy":
        cupy = pytest.importorskip("cupy")
        try:
            ok = cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # noqa: BLE001 - no driver, no device
            ok = False
        if not ok:
            pytest.skip("CuPy sees no CUDA device")
        request.addfinalizer(lambda: cupy.get_default_memory_pool().free_all_blocks())
    return ex


# --------------------------------------------------------------------------- calibration (convpipe.estimate)


@pytest.fixture(scope="session", autouse=True)
def _fixed_calibration(tmp_path_factory):
    """Every test (and every process it starts) reads a fixed calibration from a cache of its own: no test
    measures this machine or touches the user's cache unless it asks to (tests/test_estimate.py)."""
    import json
    import os

    from convpipe.estimate import CACHE_ENV, CACHE_FILE, machine_key

    d = tmp_path_factory.mktemp("convpipe-cache")
    costs = {"factor_point": 1.0, "factor_local": 1.0, "factor_full": 1.0, "factor_global": 1.0,
             "task_s": 5e-4, "read_bytes_per_s": 2e8, "write_bytes_per_s": 1e8, "run_fixed_s": 0.2,
             "process_bytes": 1.5e8, "seconds": 0.0}
    (d / CACHE_FILE).write_text(json.dumps({"key": machine_key(), "costs": costs, "measured_at": 0}))
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(d)
    yield d
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` -> (exit code, stdout, stderr) of ``convpipe.cli.main(args)`` in this process."""
    from convpipe.cli import main

    def run(*args) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err
    return run
