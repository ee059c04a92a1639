"""The messages around a run: the cluster answers before anything is created, Ctrl-C says how far the run got,
the throughput after a resume, out of memory, numpy's warnings, verify on a foreign array, a truncated TIFF."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import convpipe
from convpipe.cli import main
from convpipe.io import Manifest
from safety_helpers import SHAPE, _array, _cli, _interrupt, _ome, _one_error, _spec, snapshot


# --------------------------------------------------------------------------- the cluster answers first


@pytest.mark.parametrize("existing", [False, True])
def test_an_unreachable_cluster_leaves_nothing_behind(tmp_path, capsys, existing):
    import dask

    _array(tmp_path / "in.zarr")
    if existing:  # an earlier output that --overwrite would replace: still there after the refusal
        convpipe.load(_spec(tmp_path, "in.zarr", "out.zarr")).run()
    spec = _spec(tmp_path, "in.zarr", "out.zarr", execution={"cluster": "tcp://127.0.0.1:1"})
    before = snapshot(tmp_path)
    with dask.config.set({"convpipe.connect-timeout": "1s"}):
        rc, stdout, err = _cli(capsys, "run", spec, "--overwrite")
    assert rc == 1 and "done:" not in stdout
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in _one_error(err)
    assert snapshot(tmp_path) == before
    assert (tmp_path / "out.zarr").exists() == existing


# --------------------------------------------------------------------------- messages


def _slow_spec(tmp_path: Path, cluster: str = "threads") -> Path:
    a = np.random.default_rng(5).random((4, 256, 256)).astype("float32")  # 64 tiles of a few 10 ms each
    zarr.create_array(str(tmp_path / "in.zarr"), shape=a.shape, chunks=(1, 64, 64), dtype="float32")[...] = a
    return _spec(tmp_path, "in.zarr", "out.zarr", steps=[{"median": {"size": 9}}],
                 execution={"cluster": cluster, "tile": {"z": 1, "y": 64, "x": 64}})


@pytest.mark.parametrize("cluster", ["threads", pytest.param("processes", marks=pytest.mark.slow),  # ~22 s
                                     pytest.param("local:2", marks=pytest.mark.slow)])
def test_ctrl_c_says_how_many_tiles_are_written_and_resume_finishes(tmp_path, cluster):
    spec = _slow_spec(tmp_path, cluster)
    out = tmp_path / "out.zarr"
    # its own process group, as a terminal's foreground job: Ctrl-C reaches every process in it
    proc = subprocess.Popen([sys.executable, "-m", "convpipe", "run", str(spec)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(Manifest(str(out)).done()) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be interrupted")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    m = re.search(r"interrupted: (\d+) of 64 tiles of (\S+) are written; `convpipe run (\S+) --resume` "
                  r"finishes it", err)
    assert m, err
    assert int(m.group(1)) >= 4 and m.group(2) == str(out)
    assert zarr.open_array(str(out), mode="r").attrs["convpipe"]["complete"] is False
    done = len(Manifest(str(out)).done())
    r = subprocess.run([sys.executable, "-m", "convpipe", "run", str(spec), "--resume", "--cluster", "threads"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"({done} resumed)" in r.stdout
    a = zarr.open_array(str(tmp_path / "in.zarr"), mode="r")[...]
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...],
                                  ndi.median_filter(a, size=(1, 9, 9), mode="reflect"))


def test_throughput_counts_only_the_tiles_this_run_computed(tmp_path, capsys):
    _array(tmp_path / "in.zarr")
    spec = _spec(tmp_path, "in.zarr", "out.zarr")
    full = convpipe.load(spec).run()
    assert full.computed_voxels == full.voxels == int(np.prod(SHAPE))
    _interrupt(tmp_path / "out.zarr", keep=12)
    rc, out, err = _cli(capsys, "run", spec, "--resume")
    assert rc == 0, err
    line = out.splitlines()[-1]
    m = re.search(r" ([\d.]+) s, ([\d.]+) Mvoxel/s, .* \(12 resumed\)", line)
    assert m, line
    elapsed, mvps = float(m.group(1)), float(m.group(2))
    assert mvps < 1.2 * (np.prod(SHAPE) * 6 / 18) / max(elapsed, 1e-9) / 1e6 + 0.05, line  # not all 18 tiles' worth
    # the same through the API, exactly: 18 tiles of 2 x 16 x 16 along z, y (y: 16, 16, 8), x; 12 resumed
    kept = _interrupt(tmp_path / "out.zarr", keep=12)
    res = convpipe.load(spec).run(resume=True)
    grid_y = [16, 16, 8]
    skipped = sum(2 * grid_y[int(k.split(".")[2])] * 16 for k in kept)
    assert res.skipped_tiles == 12 and res.computed_voxels == res.voxels - skipped
    assert res.voxels_per_second == pytest.approx(res.computed_voxels / res.elapsed)


def test_out_of_memory_names_the_step_the_window_and_what_to_do(tmp_path, capsys, monkeypatch):
    from convpipe import engines

    def no_memory(*args, **kwargs):
        raise MemoryError()  # as scipy's rank filter does: no message at all

    monkeypatch.setattr(engines, "rank_filter", no_memory)
    _array(tmp_path / "in.zarr")
    spec = _spec(tmp_path, "in.zarr", "out.zarr", steps=[{"gaussian": {"sigma": 1}},
                                                        {"median": {"size": {"z": 3, "y": 21, "x": 21}}}])
    rc, _, err = _cli(capsys, "run", spec)
    assert rc == 2
    line = _one_error(err)
    assert "out of memory in steps[1].median (line " in line, line
    assert "window of z: 3, y: 21, x: 21 (1,323 voxels per output voxel)" in line
    assert "execution.tile" in line and "--resume" in line and "per task" in line


@pytest.mark.slow  # ~12 s; the message itself: test_out_of_memory_names_the_step_the_window_and_what_to_do
def test_out_of_memory_for_real_under_a_memory_limit(tmp_path):
    """median with a 7x101x101 window: scipy's rank filter raises a bare MemoryError under an 8 GiB address limit."""
    import resource

    _array(tmp_path / "in.zarr")
    spec = _spec(tmp_path, "in.zarr", "out.zarr", steps=[{"median": {"size": {"z": 7, "y": 101, "x": 101}}}])

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    r = subprocess.run([sys.executable, "-m", "convpipe", "run", str(spec)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, preexec_fn=limit)
    if r.returncode == 0:
        pytest.skip("this scipy filtered the window within the limit")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = _one_error(r.stderr)
    assert "out of memory in steps[0].median" in line and "71,407 voxels per output voxel" in line, line


_WARNING_STEPS = {
    "scale-inf": [{"scale": {"factor": float("inf")}}],
    "log-sqrt": [{"scale": {"factor": 0.0}}, {"log1p": {}}, {"scale": {"factor": -1.0}}, {"sqrt": {}}],
    "zscore-constant": [{"zscore": {}}],
    "rescale-constant": [{"rescale": {}}, {"gaussian": {"sigma": 1}}],
}


@pytest.mark.parametrize("cluster,steps", [("threads", k) for k in _WARNING_STEPS]
                         + [pytest.param("processes", "scale-inf"),  # ~9-12 s each: worker processes start
                            pytest.param("processes", "log-sqrt", marks=pytest.mark.slow)])
def test_no_raw_numpy_warning_reaches_the_terminal(tmp_path, capfd, cluster, steps):
    steps = _WARNING_STEPS[steps]
    a = np.zeros(SHAPE, np.float32)
    a[0, 0, :4] = [np.nan, np.inf, -np.inf, 0]
    _array(tmp_path / "in.zarr", a)
    spec = _spec(tmp_path, "in.zarr", "out.zarr", steps=steps, execution={"cluster": cluster})
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # threads: a warning in any thread lands here
        warnings.simplefilter("always")
        rc = main(["run", str(spec)])
    err = capfd.readouterr().err  # processes: what the workers print on the terminal
    assert rc in (0, 2), err
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert "Warning" not in err and "encountered" not in err, err


def test_verify_on_a_foreign_array_says_it_is_not_a_convpipe_output(tmp_path, capsys):
    _array(tmp_path / "foreign.zarr")
    rc, _, err = _cli(capsys, "verify", tmp_path / "foreign.zarr")
    assert rc == 1 and "is not a convpipe output" in _one_error(err)
    _ome(tmp_path / "img.zarr")
    zarr.open_group(str(tmp_path / "plain-group.zarr"), mode="w")
    rc, _, err = _cli(capsys, "verify", tmp_path / "plain-group.zarr")
    assert rc == 1 and "is not a convpipe output" in _one_error(err)


@pytest.mark.parametrize("compression", [pytest.param(None, marks=pytest.mark.slow), "zlib"])
def test_a_truncated_tiff_gives_one_line_and_no_tifffile_chatter(tmp_path, compression):
    tifffile = pytest.importorskip("tifffile")
    kw = {"compression": compression, "tile": (32, 32)} if compression else {}
    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(0).random((8, 64, 64)).astype("float32"),
                     photometric="minisblack", **kw)
    raw = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: len(raw) // 2])
    # a process of its own: pytest would catch tifffile's log records before they reach the terminal
    r = subprocess.run([sys.executable, "-m", "convpipe", "ingest", str(tmp_path / "t.tif"), "--output",
                        str(tmp_path / "t.zarr")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [_one_error(r.stderr)], r.stderr  # the error line, nothing before
    assert "truncated" in r.stderr
