"""Honest estimates (issue 17, item 3): costs measured on this machine, cached per machine and versions.

No test here depends on how fast anything runs: the calibration is faked (a counter) except in one smoke
test that only checks what a real measurement returns is well-formed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import convpipe
from convpipe import calibrate
from convpipe import estimate as E
from convpipe.cli import main
from convpipe.plan import ArrayInfo, make_plan
from convpipe.spec import load_spec

COSTS = {"factor_point": 1.0, "factor_local": 2.0, "factor_full": 1.0, "factor_global": 1.0, "task_s": 1e-3,
         "read_bytes_per_s": 1e8, "write_bytes_per_s": 5e7, "run_fixed_s": 0.25, "process_bytes": 1e8,
         "seconds": 0.5}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(E.CACHE_ENV, str(d))
    return d


class Counter:
    def __init__(self, costs=COSTS):
        self.calls = 0
        self.costs = dict(costs)

    def __call__(self):
        self.calls += 1
        return dict(self.costs)


def test_measured_once_then_read_from_the_cache(cache):
    m = Counter()
    first = E.calibration(measure=m)
    again = E.calibration(measure=m)
    assert m.calls == 1 and first["costs"] == again["costs"] == COSTS
    stored = json.loads((cache / E.CACHE_FILE).read_text())
    assert stored["key"] == E.machine_key() and stored["costs"] == COSTS
    E.calibration(measure=m, refresh=True)
    assert m.calls == 2


@pytest.mark.parametrize("change", ["versions", "machine", "format"])
def test_a_cache_from_other_versions_or_another_machine_is_measured_again(cache, monkeypatch, change):
    m = Counter()
    E.calibration(measure=m)
    key = E.machine_key()
    if change == "versions":
        key["versions"] = dict(key["versions"], numpy="0.0.1")
    elif change == "machine":
        key["node"] = key["node"] + "-elsewhere"
    else:
        key["format"] = key["format"] + 1
    monkeypatch.setattr(E, "machine_key", lambda: key)
    E.calibration(measure=m)
    assert m.calls == 2
    E.calibration(measure=m)
    assert m.calls == 2  # and the new measurement is what the cache holds now
    assert json.loads((cache / E.CACHE_FILE).read_text())["key"] == key


def test_a_torn_cache_is_measured_again_and_an_unwritable_one_still_estimates(cache, tmp_path, monkeypatch):
    cache.mkdir()
    (cache / E.CACHE_FILE).write_text('{"key": ')
    m = Counter()
    assert E.calibration(measure=m)["costs"] == COSTS and m.calls == 1
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    monkeypatch.setenv(E.CACHE_ENV, str(blocked / "sub"))
    assert E.calibration(measure=m)["costs"] == COSTS and m.calls == 2


@pytest.mark.parametrize("xdg", [None, "xdg-cache"])
def test_the_default_cache_is_the_users_cache_dir(xdg, tmp_path, monkeypatch):
    import platformdirs  # on Linux the answer is computed without it: it must stay the same

    monkeypatch.delenv(E.CACHE_ENV, raising=False)
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / xdg))
    assert E.cache_dir() == Path(platformdirs.user_cache_dir("convpipe", appauthor=False))
    monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / "mine"))
    assert E.cache_dir() == tmp_path / "mine"


def test_importing_convpipe_does_not_calibrate(tmp_path):
    # the API hands estimate its calibration function (convpipe.calibrate) at import; calling it is what
    # costs seconds, and only explain/run ask for it
    code = ("import convpipe; convpipe.load({'convpipe': 1, 'input': {'url': 'x.zarr'}, 'steps': "
            "[{'gaussian': {'sigma': 1}}]})")
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                   env={"PATH": "", "HOME": str(tmp_path)}, cwd=tmp_path)
    assert not any(tmp_path.rglob(E.CACHE_FILE))


def _plan(shape=(64, 2048, 2048), steps=None, workers=4, cluster="local:4"):
    steps = load_spec({"convpipe": 1, "input": {"url": "in.zarr"},
                       "steps": steps or [{"gaussian": {"sigma": 2}}, {"sobel": {"axes": "yx"}}]}).steps
    return make_plan(steps, ArrayInfo(shape, np.dtype("uint16"), (16, 512, 512), "zyx"), workers=workers,
                     memory_per_worker=4 << 30, cluster=cluster)


def test_the_estimate_follows_the_measured_costs():
    plan = _plan()
    base = E.estimate(plan, COSTS)
    assert base["seconds"] > COSTS["run_fixed_s"]
    # a task and the input block (tile + halo, uint16) its thread reads ahead, per worker process (local:N)
    pp = plan.passes[0]
    block = np.prod([pp.tile[a] + sum(pp.halo.get(a, (0, 0))) for a in "zyx"]) * 2
    assert base["peak_memory_bytes"] == pytest.approx(plan.peak_memory_per_worker + block + COSTS["process_bytes"])
    threads = E.estimate(_plan(cluster="threads"), COSTS)  # one process runs every worker's task at once
    assert threads["peak_memory_bytes"] == pytest.approx(4 * (plan.peak_memory_per_worker + block)
                                                          + COSTS["process_bytes"])
    slow_local = E.estimate(plan, dict(COSTS, factor_local=20.0))
    assert slow_local["seconds"] > 2 * base["seconds"]  # the local ops dominate this chain
    slow_point = E.estimate(plan, dict(COSTS, factor_point=1.5))
    assert base["seconds"] < slow_point["seconds"] < slow_local["seconds"]
    slow_disk = E.estimate(plan, dict(COSTS, read_bytes_per_s=1e6, write_bytes_per_s=1e6))
    io = (plan.input.nbytes + plan.output.nbytes) / 1e6 / plan.workers
    assert slow_disk["seconds"] == pytest.approx(base["seconds"] + io - (plan.input.nbytes / 1e8 + plan.output.nbytes
                                                                          / 5e7) / plan.workers, rel=1e-3)
    per_chunk = E.estimate(plan, dict(COSTS, read_chunk_s=0.01, write_chunk_s=0.02))
    chunks = E._chunks(plan.input) * 0.01 + E._chunks(plan.output) * 0.02
    assert E._chunks(plan.input) > 1
    assert per_chunk["seconds"] == pytest.approx(base["seconds"] + chunks / plan.workers, rel=1e-3)
    more = E.estimate(_plan(workers=8), COSTS)
    assert more["seconds"] < base["seconds"]
    bigger = E.estimate(_plan(shape=(256, 2048, 2048)), COSTS)
    assert bigger["seconds"] > 3 * (base["seconds"] - COSTS["run_fixed_s"])


def test_explain_json_reports_the_estimate(tmp_path, cache, monkeypatch, capsys):
    m = Counter()
    monkeypatch.setattr(E, "measure_costs", m)
    url = tmp_path / "in.zarr"
    zarr.create_array(str(url), shape=(4, 64, 64), chunks=(2, 32, 32), dtype="uint16")[...] = 7
    (tmp_path / "spec.yaml").write_text(f"convpipe: 1\ninput: {{url: {url}}}\nsteps:\n  - gaussian: {{sigma: 1}}\n")
    for _ in range(2):
        capsys.readouterr()
        assert main(["explain", str(tmp_path / "spec.yaml"), "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        est = d["estimate"]
        assert set(est) == {"seconds", "peak_memory_bytes"}
        assert isinstance(est["peak_memory_bytes"], int) and est["peak_memory_bytes"] > 0
        assert math.isfinite(est["seconds"]) and est["seconds"] >= COSTS["run_fixed_s"]
    assert m.calls == 1  # explain calibrated lazily once; the second explain read the cache
    assert main(["explain", str(tmp_path / "spec.yaml")]) == 0
    text = capsys.readouterr().out
    assert "estimate" in text.splitlines()[-1] and "measured on this machine" in text
    plan = convpipe.load(str(tmp_path / "spec.yaml")).explain()
    assert plan.estimate() == est  # the API's Plan.estimate is what explain --json reports


def test_run_summary_prints_estimate_and_actual_side_by_side(tmp_path, capsys):
    url = tmp_path / "in.zarr"
    zarr.create_array(str(url), shape=(4, 64, 64), chunks=(2, 32, 32), dtype="uint16")[...] = 7
    out = tmp_path / "out.zarr"
    (tmp_path / "spec.yaml").write_text(f"convpipe: 1\ninput: {{url: {url}}}\noutput: {{url: {out}}}\n"
                                        "steps:\n  - gaussian: {sigma: 1}\n")
    capsys.readouterr()
    assert main(["run", str(tmp_path / "spec.yaml")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"done: {out}")
    import re

    m = re.search(r"^done: .*?\s([0-9.]+) s,.*; estimate ([0-9.]+) s vs actual ([0-9.]+) s, peak memory per "
                  r"worker estimate [0-9.]+ \w*B, actual [0-9.]+ \w*B$", line)
    assert m, line
    assert m.group(1) == m.group(3)  # the actual is the run's own elapsed time
    plan = convpipe.load(str(tmp_path / "spec.yaml")).explain()
    assert float(m.group(2)) == pytest.approx(plan.estimate()["seconds"], abs=0.01)


def test_a_real_calibration_is_well_formed(cache):
    costs = calibrate.measure_costs(side=128)
    for k in ("factor_point", "factor_local", "factor_full", "factor_global", "task_s", "read_bytes_per_s",
              "write_bytes_per_s", "read_chunk_s", "write_chunk_s", "run_fixed_s", "process_bytes", "seconds",
              "compute_s", "direct_base_ns", "direct_tap_ns", "mac_ns", "fft_ns", "fft_call_s", "tile_s",
              "pyramid_level_s", "table_part_s", "table_merge_part_s", "table_fixed_s", "thread_speedup",
              "thread_plane", "thread_speedup_large", "thread_plane_large", "op_s"):
        assert math.isfinite(costs[k]) and costs[k] >= 0, (k, costs)
    for k in ("thread_speedup", "thread_speedup_large"):
        assert 1.0 <= costs[k] <= max(os.cpu_count() or 1, 1)
    assert 0 < costs["thread_plane"] < costs["thread_plane_large"]  # the two probes' planes: small and large
    assert costs["read_bytes_per_s"] > 0 and costs["write_bytes_per_s"] > 0 and costs["factor_local"] > 0
    assert not any(cache.rglob("*.zarr"))  # the probe data went with its temporary folder


def test_separable_ops_follow_the_fitted_line_per_tap_and_per_merged_term():
    costs = dict(COSTS, separable_base_ns=10.0, separable_tap_ns=1.0)
    wide = _plan(steps=[{"gaussian": {"sigma": 8}}])
    narrow = _plan(steps=[{"gaussian": {"sigma": 1}}])
    steeper = dict(costs, separable_tap_ns=4.0)
    gain_wide = E.estimate(wide, steeper)["seconds"] - E.estimate(wide, costs)["seconds"]
    gain_narrow = E.estimate(narrow, steeper)["seconds"] - E.estimate(narrow, costs)["seconds"]
    assert gain_wide > 3 * gain_narrow > 0  # the per-tap cost weighs with the halo
    merged = _plan(steps=[{"gaussian_laplace": {"sigma": 2}}, {"uniform": {"size": 5}}])
    op = merged.passes[0].ops[-1]
    terms = len(getattr(op, "terms", None) or [1])
    halo = sum(lo + hi for lo, hi in op.halo().values())
    assert E._measured_ns(op, 1.0, costs) == pytest.approx(terms * (10.0 + halo))


def test_the_report_shows_the_estimate_beside_the_actual(tmp_path):
    from convpipe.report import build_report

    url = tmp_path / "in.zarr"
    zarr.create_array(str(url), shape=(4, 64, 64), chunks=(2, 32, 32), dtype="uint16")[...] = 7
    p = convpipe.load({"convpipe": 1, "input": {"url": str(url)}, "output": {"url": str(tmp_path / "o.zarr")},
                       "steps": [{"gaussian": {"sigma": 1}}]})
    res = p.run()
    html = build_report(p, res, timings=res.timings)
    assert "estimated time" in html and "estimated peak" in html and "elapsed" in html


def test_the_api_hands_the_calibration_in():
    """convpipe.estimate (the plan layer) cannot import what measures (it runs pipelines); the API's import of
    convpipe.calibrate hands it in, so Plan.estimate() on a machine without a cache measures."""
    import convpipe.api  # noqa: F401

    assert E.measure_costs is calibrate.measure_costs


# --------------------------------------------------------------------------- the model's terms (fake costs)


def _est(plan, **over):
    return E.estimate(plan, dict(COSTS, **over))["seconds"]


def test_a_pre_pass_costs_a_computation_and_the_passes_before_it_once_per_reduction():
    # zscore: one reduction of the gaussian's output; threshold otsu: two (value range, then histogram)
    steps = {"zscore": [{"gaussian": {"sigma": 2}}, {"zscore": {}}],
             "otsu": [{"gaussian": {"sigma": 2}}, {"threshold": {"method": "otsu"}}]}
    for name, computes in (("zscore", 1), ("otsu", 2)):
        plan = _plan(steps=steps[name])
        assert len(plan.passes) == 2 and plan.passes[1].ops[0].kind == "global"
        assert _est(plan, compute_s=1.0) - _est(plan) == pytest.approx(computes, abs=2e-3), name
        # the pass before is computed again each time: a slower gaussian weighs (1 + computes) times
        slow = _est(plan, separable_base_ns=200.0, separable_tap_ns=0.0)
        slower = _est(plan, separable_base_ns=400.0, separable_tap_ns=0.0)
        once = E._pass_seconds(plan.passes[0], dict(COSTS, separable_base_ns=400.0, separable_tap_ns=0.0),
                               plan.workers) - E._pass_seconds(plan.passes[0], dict(
                                   COSTS, separable_base_ns=200.0, separable_tap_ns=0.0), plan.workers)
        assert slower - slow == pytest.approx((1 + computes) * once, rel=0.01), name
    assert E._prepasses(_plan(steps=steps["otsu"]).passes[1].ops[0])[0] == 2


def test_a_table_costs_a_part_per_tile_and_its_merge(tmp_path):
    plan = _plan(shape=(4, 512, 512), steps=[{"gaussian": {"sigma": 1}},
                                              {"peaks": {"radius": 3, "table": str(tmp_path / "p.parquet")}}])
    n = plan.passes[-1].n_tiles
    base = _est(plan)
    assert _est(plan, table_fixed_s=1.0) - base == pytest.approx(1.0, abs=2e-3)
    assert _est(plan, table_merge_part_s=1.0) - base == pytest.approx(n, abs=2e-3)
    assert _est(plan, table_part_s=1.0) - base == pytest.approx(n / min(plan.workers, n), abs=2e-3)
    no_table = _plan(shape=(4, 512, 512), steps=[{"gaussian": {"sigma": 1}}, {"peaks": {"radius": 3}}])
    assert _est(no_table, table_fixed_s=1.0) == pytest.approx(_est(no_table), abs=2e-3)


def test_each_op_is_charged_its_own_work_and_its_own_voxels():
    bank = [[[1.0, 0.0, -1.0]] * 3, [[0.0, 1.0, 0.0]] * 3]
    one = _plan(steps=[{"filter_bank": {"kernels": [bank[0]], "method": "direct"}}])
    many = _plan(steps=[{"filter_bank": {"kernels": bank * 8, "method": "direct"}}])
    work = lambda p, **c: _est(p, direct_tap_ns=10.0, **c) - _est(p, direct_tap_ns=0.0, **c)  # noqa: E731
    assert work(many) == pytest.approx(16 * work(one), rel=0.02)  # a bank of 16 kernels: 16 kernels' taps
    # diffusion's sub-steps: elementwise passes, which the point probe's factor prices
    diff = _plan(steps=[{"diffusion": {"steps": 10, "dt": 0.2, "axes": "yx"}}])
    assert all(op.estimate_work() == {"point": 3.0} for op in diff.passes[0].ops)
    assert _est(diff, factor_point=4.0) - _est(diff, factor_point=2.0) > 0
    # an op after pool sees a quarter of the pass's voxels
    pooled = _plan(steps=[{"pool": {"size": 2, "kind": "max", "axes": "yx"}}, {"scale": {"factor": 2.0}}])
    ops = pooled.passes[0].ops
    assert len(pooled.passes) == 1 and [op.name for op in ops] == ["pool", "scale"]
    assert E._voxels(pooled.passes[0].extents[1]) == E._voxels(pooled.passes[0].extents[0]) / 4
    assert E._work_ns({"point": 2, "taps": 9, "macs": 100, "fft": 1},
                      dict(COSTS, direct_base_ns=1.0, direct_tap_ns=0.5, mac_ns=0.01)) == pytest.approx(
        2 * 1.0 + (1.0 + 4.5) + 1.0 + 40.0 * COSTS["factor_full"])


def test_the_threads_cluster_overlaps_its_tiles_compute_only_as_far_as_measured():
    """One process runs every tile of the threads cluster: its passes' compute is spread over the measured
    overlap (``thread_speedup``), the other clusters' over their workers; per-task costs over the workers."""
    steps = [{"gaussian": {"sigma": 2}}, {"threshold": {"method": "otsu"}}]
    threads, local = _plan(steps=steps, cluster="threads"), _plan(steps=steps)
    assert threads.workers == 4 and threads.passes[0].n_tiles >= 4
    pp = threads.passes[0]
    compute = E._pass_seconds(pp, dict(COSTS, task_s=0.0), 4, lambda task_s: 1.0)
    assert compute == pytest.approx(4 * E._pass_seconds(pp, dict(COSTS, task_s=0.0), 4), rel=1e-9)
    tasks = E._pass_seconds(pp, dict(COSTS, task_s=1.0), 4, lambda task_s: 1.0) - compute
    assert tasks == pytest.approx(pp.tasks / 4, rel=1e-6)  # the scheduler's cost per task: not compute
    serial, half, full = (_est(threads, thread_speedup=v) for v in (1.0, 2.0, 4.0))
    assert serial > half > full
    # the pre-pass's own work and both passes' compute: what a measured overlap of 1 leaves on one worker
    work = lambda p, **c: _est(p, factor_point=2.0, **c) - _est(p, factor_point=1.0, **c)  # noqa: E731
    assert work(threads, thread_speedup=1.0) == pytest.approx(4 * work(threads, thread_speedup=4.0), rel=1e-3)
    # clamped to [1, workers]; a cache without it (and every other cluster) keeps the workers
    assert _est(threads, thread_speedup=0.1) == serial and _est(threads, thread_speedup=64.0) == full
    assert _est(threads) == full
    assert _est(local, thread_speedup=1.0) == _est(local) == pytest.approx(full, rel=1e-9)
    assert E.compute_workers(local, dict(COSTS, thread_speedup=1.0)) == 4.0


def test_each_op_past_a_tiles_first_costs_its_bookkeeping():
    """A chain of n ops pays n - 1 times op_s a tile (the first is in task_s): diffusion's 20 explicit steps on
    small tiles were 2/3 bookkeeping, and its estimate 0.45x the run."""
    steps = _plan(steps=[{"diffusion": {"steps": 20, "dt": 0.2, "axes": "yx"}}])
    one = _plan(steps=[{"gaussian": {"sigma": 1}}])
    pp = steps.passes[0]
    assert len(pp.ops) == 20 and len(one.passes[0].ops) == 1
    busy = min(steps.workers, pp.n_tiles)
    assert _est(steps, op_s=1.0) - _est(steps, op_s=0.0) == pytest.approx(pp.n_tiles * 19 / busy, rel=1e-3)
    assert _est(one, op_s=1.0) == _est(one, op_s=0.0)


def test_the_threads_overlap_follows_the_tiles_size():
    """Tiles of small planes overlap as measured on small planes, large as on large, and between them in log
    size: one overlap for both had put the examples at 0.5x or the benchmark's jobs at 2.2x their runs."""
    threads = _plan(steps=[{"gaussian": {"sigma": 2}}], cluster="threads")
    c = dict(COSTS, thread_speedup=1.0, thread_plane=1e3, thread_speedup_large=3.0, thread_plane_large=1e5)
    at = lambda t: E.compute_workers(threads, c, t)  # noqa: E731
    assert at(1.0) == at(1e3) == 1.0 and at(1e5) == at(1e8) == 3.0
    assert at(1e4) == pytest.approx(2.0) and 1.0 < at(2e3) < at(5e4) < 3.0
    assert E.compute_workers(threads, dict(c, thread_speedup_large=64.0), 1e8) == threads.workers  # clamped
    old = dict(COSTS, thread_speedup=1.5)  # a cache of one size only: that overlap, whatever the tile
    assert E.compute_workers(threads, old, 1.0) == E.compute_workers(threads, old, 1e8) == 1.5
    # the estimate asks with the voxels of a plane of each pass's tile
    pp = threads.passes[0]
    seen: list[float] = []
    E._pass_seconds(pp, c, threads.workers, lambda plane: seen.append(plane) or 1.0)
    assert seen == [E.tile_plane(pp)] and E.tile_plane(pp) == pp.tile["y"] * pp.tile["x"]


def test_an_fft_call_costs_per_tile_and_a_pyramid_per_level(tmp_path):
    fft = _plan(steps=[{"correlate": {"kernel": [[1.0] * 15] * 15, "method": "fft"}}])
    pp = fft.passes[0]
    busy = min(fft.workers, pp.n_tiles)
    assert _est(fft, fft_call_s=1.0) - _est(fft) == pytest.approx(pp.n_tiles / busy, rel=1e-3)
    url = tmp_path / "in.zarr"
    zarr.create_array(str(url), shape=(64, 64), chunks=(32, 32), dtype="uint16")[...] = 7
    levels = []
    for n in (0, 2):
        out = {"url": str(tmp_path / f"o{n}.zarr")} | ({"ome": True, "pyramid": n} if n else {})
        plan = convpipe.load({"convpipe": 1, "input": {"url": str(url)}, "output": out,
                              "steps": [{"gaussian": {"sigma": 1}}]}).explain()
        levels.append(_est(plan, pyramid_level_s=1.0))
    assert levels[1] - levels[0] == pytest.approx(2.0, abs=0.01)


def test_a_first_run_in_a_process_pays_the_engines_load(monkeypatch):
    """``convpipe run`` is always its process's first run, which loads the engines on its clock: the estimate
    adds the measured first-run cost then, and not for a later run in the same process."""
    plan = _plan()
    costs = dict(COSTS, first_run_s=0.75)
    later = E.estimate(plan, costs, first_run=False)["seconds"]
    assert E.estimate(plan, costs, first_run=True)["seconds"] == pytest.approx(later + 0.75, abs=2e-3)
    import convpipe.engines.cpu  # noqa: F401  (loaded: a later run by default)

    assert E.estimate(plan, costs)["seconds"] == later
    monkeypatch.delitem(sys.modules, "convpipe.engines.cpu")  # a process that has run nothing yet
    assert E.estimate(plan, costs)["seconds"] == pytest.approx(later + 0.75, abs=2e-3)


def test_the_run_summary_uses_what_the_run_found_loaded(monkeypatch):
    """The summary's estimate is of the run as it started: the modules loaded then, not those the run loaded."""
    from types import SimpleNamespace

    costs = dict(COSTS, first_run_s=0.75)
    monkeypatch.setattr(E, "calibration", lambda: {"costs": costs})
    plan = _plan()
    res = SimpleNamespace(plan=plan, elapsed=2.0, timings={}, modules_before=frozenset({"pandas"}))
    first = E.estimate(plan, costs, first_run=True)["seconds"]
    assert f"estimate {first:.2f} s vs actual 2.00 s" in E.summary_suffix(res)
    later = E.estimate(plan, costs, first_run=False)["seconds"]
    res.modules_before = frozenset({E.FIRST_RUN_MODULE})
    assert f"estimate {later:.2f} s vs actual 2.00 s" in E.summary_suffix(res)


def test_a_library_the_plan_loads_on_first_use_is_counted_when_the_process_lacks_it(tmp_path):
    """FFT correlation loads scipy.signal, a table pyarrow and pandas: each costs the run that loads it."""
    costs = dict(COSTS, **{"load_s:scipy.signal": 0.5, "load_s:pyarrow.parquet": 0.1, "load_s:pandas": 0.25})
    plain = _plan()
    assert E.plan_loads(plain) == set()
    fft = convpipe.load({"convpipe": 1, "input": {"url": "x.zarr"},
                         "steps": [{"correlate": {"kernel": np.ones((15, 15)).tolist(), "method": "fft"}}]})
    table = convpipe.load({"convpipe": 1, "input": {"url": "x.zarr"},
                           "steps": [{"peaks": {"radius": 2, "threshold": 1.0, "table": str(tmp_path / "p.parquet")}}]})
    from convpipe.plan import ArrayInfo, make_plan

    info = ArrayInfo((256, 256), np.dtype("float32"), (128, 128), "yx")
    fft_plan = make_plan(fft.spec.steps, info)
    table_plan = make_plan(table.spec.steps, info)
    assert E.plan_loads(fft_plan) == {"scipy.signal"}
    assert E.plan_loads(table_plan) == {"pyarrow.parquet", "pandas"}
    warm = {"convpipe.engines.cpu", "scipy.signal", "pyarrow.parquet", "pandas"}
    base = E.estimate(fft_plan, costs, loaded=warm)["seconds"]
    assert E.estimate(fft_plan, costs, loaded=warm - {"scipy.signal"})["seconds"] == pytest.approx(base + 0.5, abs=2e-3)
    base = E.estimate(table_plan, costs, loaded=warm)["seconds"]
    assert E.estimate(table_plan, costs, loaded={"convpipe.engines.cpu"})["seconds"] == pytest.approx(base + 0.35,
                                                                                                   abs=2e-3)


def test_heap_warm_once_allocates_below_glibcs_adaptive_limit(monkeypatch):
    """convpipe.heap.warm frees one block just under glibc's largest adaptive mmap threshold (a block above
    32 MiB adapts nothing), and only on its first call in a process."""
    import numpy as np

    from convpipe import heap

    seen = []
    real = np.empty
    monkeypatch.setattr(heap, "_warmed", False)
    monkeypatch.setattr(np, "empty", lambda n, dtype=None: seen.append(n) or real(1, dtype=dtype))
    heap.warm()
    heap.warm()
    assert seen == [heap.WARM_BYTES] and heap.WARM_BYTES < 32 << 20


def test_envelope_is_priced_by_a_tiles_lines_and_positions():
    """distance_transform's lower envelope loops over a line's positions, vectorised across the tile's lines:
    a tile costs positions x (step + lines x line), so a voxel's share falls with the lines a tile holds."""
    from convpipe import estimate as E

    class PP:
        tile = {"y": 100, "x": 50}

    class Op:
        axis = "y"

    costs = {"envelope_step_s": 1e-4, "envelope_line_s": 2e-7}
    assert E._envelope_ns(Op, PP, 5000.0, costs) == pytest.approx(100 * (1e-4 + 50 * 2e-7) / 5000 * 1e9)
    assert E._envelope_ns(Op, PP, 50000.0, costs) < E._envelope_ns(Op, PP, 5000.0, costs)  # 500 lines
    assert E._envelope_ns(Op, PP, 5000.0, {}) == 400.0  # a calibration without the probe
