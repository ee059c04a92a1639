"""Reliability: bad inputs beyond what a spec can express, and losing a worker mid-run.

Every case ends in one of two ways: the oracle's (scipy's) result, or one clear error line with exit code 1
(spec / input error) or 2 (failed while running). Never a traceback, and never a half-written output marked
complete. Runs go through the real command line (``convpipe.cli.main`` in-process, or a subprocess where
the process boundary matters: stderr, signals, file permissions).

Documented behaviour pinned here:

* a *missing* input chunk reads as the array's fill value (zarr's semantics; nothing can tell a missing chunk
  from a never-written one), and the result is the oracle of that array;
* NaN and inf propagate as in scipy.ndimage, except ``uniform``: scipy's running sum spreads a NaN/inf to
  the rest of the line, which no tiled filter can reproduce; convpipe propagates to the filter's footprint;
* ``astype`` to an integer type saturates (NaN -> 0, +-inf -> the type's max/min, truncation toward zero).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import yaml
import zarr

import convpipe
from convpipe.cli import main

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")


# --------------------------------------------------------------------------- helpers


def _write(path: Path, a: np.ndarray, chunks, **kw) -> None:
    z = zarr.create_array(str(path), shape=a.shape, chunks=chunks, dtype=a.dtype, overwrite=True, **kw)
    if a.size:
        z[...] = a


def _spec(tmp: Path, steps, *, out="out.zarr", dtype=None, tile=None, precision="float64",
          cluster="threads", name="spec.yaml") -> Path:
    spec = {"convpipe": 1, "name": "reliability", "input": {"url": "in.zarr"}, "output": {"url": out},
            "steps": steps, "execution": {"cluster": cluster, "precision": precision}}
    if dtype:
        spec["output"]["dtype"] = dtype
    if tile is not None:
        spec["execution"]["tile"] = tile
    p = tmp / name
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


def _run(capsys, tmp: Path, a: np.ndarray | None, steps, chunks=None, **kw):
    """``convpipe run`` in-process: (exit code, stderr, output array or None, output complete flag)."""
    if a is not None:
        _write(tmp / "in.zarr", a, chunks or a.shape)
    spec = _spec(tmp, steps, **kw)
    capsys.readouterr()
    rc = main(["run", str(spec)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    out, complete = None, None
    path = tmp / kw.get("out", "out.zarr")
    if path.exists():
        try:
            z = zarr.open_array(str(path), mode="r")
        except Exception:  # noqa: BLE001 - an unreadable leftover is "not complete"
            complete = False
        else:
            complete = z.attrs.get("convpipe", {}).get("complete")
            out = z[...]
    if rc != 0:
        assert complete is not True, "a failed run left an output marked complete"
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, err
    else:
        assert complete is True
    return rc, err, out, complete


def _assert_scipy_equal(out: np.ndarray, ref: np.ndarray, precision="float64") -> None:
    assert out.shape == ref.shape
    o, r = out.astype(np.float64), ref.astype(np.float64)
    for what, fo, fr in (("NaN", np.isnan(o), np.isnan(r)), ("+inf", o == np.inf, r == np.inf),
                         ("-inf", o == -np.inf, r == -np.inf)):
        if not np.array_equal(fo, fr):
            where = np.argwhere(fo != fr)[:4].tolist()
            raise AssertionError(f"{what} positions differ from scipy at {where} (out {o[tuple(where[0])]!r}, "
                                 f"scipy {r[tuple(where[0])]!r})")
    fin = np.isfinite(r)
    if fin.any():
        tol = {"float64": 1e-10, "float32": 1e-5}[precision] * max(1.0, float(np.abs(r[fin]).max()))
        err = float(np.abs(o[fin] - r[fin]).max())
        if err > tol:
            raise AssertionError(f"max|out - scipy| = {err} > {tol}")


def _per_plane(x: np.ndarray, fn) -> np.ndarray:
    """fn on every 2-D plane over the last two axes."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for i in np.ndindex(*x.shape[:-2]):
        out[i] = fn(x[i])
    return out


# --------------------------------------------------------------------------- empty, 1-D, length-1 axes


@pytest.mark.parametrize("shape,chunks", [((0, 8), (1, 8)), ((4, 0, 8), (2, 1, 8)), ((0,), (1,))])
def test_empty_input_is_one_clear_error(tmp_path, capsys, shape, chunks):
    rc, err, _, complete = _run(capsys, tmp_path, np.zeros(shape, np.float32),
                                [{"gaussian": {"sigma": 1}}], chunks=chunks)
    assert rc == 1
    assert "empty" in err
    assert complete is None  # nothing was created


@pytest.mark.parametrize("steps,ref", [
    ([{"gaussian": {"sigma": 2.5}}], lambda x: ndi.gaussian_filter(x, 2.5)),
    ([{"uniform": {"size": 4, "mode": "wrap"}}], lambda x: ndi.uniform_filter(x, 4, mode="wrap")),
    ([{"median": {"size": 5, "mode": "mirror"}}], lambda x: ndi.median_filter(x, 5, mode="mirror")),
    ([{"sobel": {}}], lambda x: np.abs(ndi.correlate1d(x, [-1.0, 0, 1]))),
    ([{"laplace": {"mode": "constant", "cval": 3}}], lambda x: ndi.laplace(x, mode="constant", cval=3)),
    ([{"correlate": {"kernel": [1, -2, 0.5, 4]}}], lambda x: ndi.correlate(x, [1, -2, 0.5, 4])),
])
def test_one_dimensional_input(tmp_path, capsys, steps, ref):
    x = np.random.default_rng(1).standard_normal(101)
    rc, err, out, _ = _run(capsys, tmp_path, x, steps, chunks=(16,))
    assert rc == 0, err
    _assert_scipy_equal(out, ref(x))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 1, 37), (1, 5, 1), (3, 1, 1)])
def test_axes_of_length_one(tmp_path, capsys, mode, shape):
    x = np.random.default_rng(2).standard_normal(shape)
    steps = [{"gaussian": {"sigma": {"z": 1, "y": 1.5, "x": 2}, "mode": mode, "cval": 0.5}},
             {"maximum": {"size": {"z": 3, "y": 2, "x": 3}, "mode": mode, "cval": 0.5}}]
    rc, err, out, _ = _run(capsys, tmp_path, x, steps, chunks=(1, 1, 8))
    assert rc == 0, err
    ref = ndi.maximum_filter(ndi.gaussian_filter(x, (1, 1.5, 2), mode=mode, cval=0.5), size=(3, 2, 3), mode=mode,
                             cval=0.5)
    _assert_scipy_equal(out, ref)


# --------------------------------------------------------------------------- NaN / inf


def _nonfinite_stack() -> np.ndarray:
    x = np.random.default_rng(3).standard_normal((4, 24, 24))
    x[1, 5, 5] = np.nan
    x[2, 12, 20] = np.inf
    x[2, 3, 3] = -np.inf
    x[3, 0, 10] = np.nan  # on the array's edge
    x[0, 23, 23] = np.inf  # in the corner
    return x


def _rank_numpy(p: np.ndarray, size: int, kind: str) -> np.ndarray:
    """Rank filter (mode reflect) window by window with numpy's NaN rule, which SPEC.md's non-finite rule asks
    for: a window holding a NaN gives NaN (scipy's running extrema and selection skip or keep a NaN depending on
    where the line starts); inf is ordered like any value."""
    w = np.lib.stride_tricks.sliding_window_view(np.pad(p, (size // 2, size - 1 - size // 2), mode="symmetric"),
                                                 (size, size)).reshape(p.shape + (-1,))
    if kind == "median":
        out = np.partition(np.where(np.isnan(w), 0.0, w), w.shape[-1] // 2, axis=-1)[..., w.shape[-1] // 2]
    else:
        out = (np.min if kind == "minimum" else np.max)(w, axis=-1)
    return np.where(np.isnan(w).any(axis=-1), np.nan, out)


NONFINITE_OK = {
    "gaussian": ([{"gaussian": {"sigma": 1.2}}], lambda x: _per_plane(x, lambda p: ndi.gaussian_filter(p, 1.2))),
    "gaussian-wrap": ([{"gaussian": {"sigma": 1, "mode": "wrap"}}],
                      lambda x: _per_plane(x, lambda p: ndi.gaussian_filter(p, 1, mode="wrap"))),
    "median": ([{"median": {"size": 3}}], lambda x: _per_plane(x, lambda p: _rank_numpy(p, 3, "median"))),
    "minimum": ([{"minimum": {"size": 3}}], lambda x: _per_plane(x, lambda p: _rank_numpy(p, 3, "minimum"))),
    "maximum": ([{"maximum": {"size": 4}}], lambda x: _per_plane(x, lambda p: _rank_numpy(p, 4, "maximum"))),
    "laplace": ([{"laplace": {}}], lambda x: _per_plane(x, ndi.laplace)),
    "correlate": ([{"correlate": {"kernel": [[1, 2, 1], [0, 5, 0], [-1, -2, -1]]}}],
                  lambda x: _per_plane(x, lambda p: ndi.correlate(p, [[1, 2, 1], [0, 5, 0], [-1, -2, -1]]))),
    "point-ops": ([{"abs": {}}, {"sqrt": {}}, {"log1p": {}}, {"clip": {"max": 1.5}}],
                  lambda x: np.clip(np.log1p(np.sqrt(np.abs(x))), None, 1.5)),
}


@pytest.mark.parametrize("name", sorted(NONFINITE_OK))
def test_nan_and_inf_propagate_as_scipy(tmp_path, capsys, name):
    steps, ref = NONFINITE_OK[name]
    x = _nonfinite_stack()
    rc, err, out, _ = _run(capsys, tmp_path, x, steps, chunks=(1, 8, 8))
    assert rc == 0, err
    with np.errstate(invalid="ignore"):
        _assert_scipy_equal(out, ref(x))


@pytest.mark.parametrize("op", ["sobel", "prewitt", "scharr", "gaussian_gradient_magnitude"])
def test_nan_and_inf_propagate_as_scipy_edges(tmp_path, capsys, op):
    x = _nonfinite_stack()
    if op == "gaussian_gradient_magnitude":
        steps = [{op: {"sigma": 1}}]
        ref = _per_plane(x, lambda p: ndi.gaussian_gradient_magnitude(p, 1))
    else:
        steps = [{op: {}}]
        smooth = {"sobel": [1.0, 2, 1], "prewitt": [1.0, 1, 1], "scharr": [3 / 16, 10 / 16, 3 / 16]}[op]

        def mag(p):
            dy = ndi.correlate1d(ndi.correlate1d(p, [-1.0, 0, 1], 0), smooth, 1)
            dx = ndi.correlate1d(ndi.correlate1d(p, [-1.0, 0, 1], 1), smooth, 0)
            return np.sqrt(dy * dy + dx * dx)

        ref = _per_plane(x, mag)
    rc, err, out, _ = _run(capsys, tmp_path, x, steps, chunks=(1, 8, 8))
    assert rc == 0, err
    with np.errstate(invalid="ignore"):
        _assert_scipy_equal(out, ref)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_nan_with_a_large_kernel_stays_local(tmp_path, capsys, method):
    x = np.random.default_rng(11).standard_normal((1, 64, 64))
    x[0, 30, 30] = np.nan
    k = np.random.default_rng(12).standard_normal((13, 13))
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"correlate": {"kernel": k.tolist(), "method": method}}],
                           chunks=(1, 32, 32))
    assert rc == 0, err
    _assert_scipy_equal(out, _per_plane(x, lambda p: ndi.correlate(p, k)), "float32" if method == "fft" else "float64")


def test_uniform_nonfinite_propagates_to_the_footprint(tmp_path, capsys):
    """scipy.ndimage.uniform_filter's running sum spreads a NaN to the rest of its line (an artifact of the
    algorithm, and impossible to reproduce tile by tile); convpipe's uniform gives NaN exactly where the
    footprint holds a NaN (or both infinities) and scipy's values elsewhere."""
    x = _nonfinite_stack()
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"uniform": {"size": 3}}], chunks=(1, 8, 8))
    assert rc == 0, err
    finite = np.where(np.isfinite(x), x, 0.0)
    ref = _per_plane(finite, lambda p: ndi.uniform_filter(p, 3))
    has_nan = _per_plane(np.isnan(x).astype(float), lambda p: ndi.maximum_filter(p, 3)) > 0
    has_pinf = _per_plane((x == np.inf).astype(float), lambda p: ndi.maximum_filter(p, 3)) > 0
    has_ninf = _per_plane((x == -np.inf).astype(float), lambda p: ndi.maximum_filter(p, 3)) > 0
    ref[has_pinf] = np.inf
    ref[has_ninf] = -np.inf
    ref[has_nan | (has_pinf & has_ninf)] = np.nan
    _assert_scipy_equal(out, ref)
    scipy_ref = _per_plane(x, lambda p: ndi.uniform_filter(p, 3))
    assert np.isnan(scipy_ref).sum() > np.isnan(out).sum()  # the documented difference


# --------------------------------------------------------------------------- integer overflow (astype saturates)


def test_astype_float_to_int_saturates(tmp_path, capsys):
    x = np.array([[1e10, -1e10, np.nan, np.inf, -np.inf, 3.7, -3.7, 200.5, 127.9, -128.9]])
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"astype": {"dtype": "int8"}}], chunks=(1, 4))
    assert rc == 0, err
    assert out.dtype == np.int8
    assert out.tolist() == [[127, -128, 0, 127, -128, 3, -3, 127, 127, -128]]
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"astype": {"dtype": "uint16"}}], chunks=(1, 4), out="u16.zarr")
    assert rc == 0, err
    assert out.tolist() == [[65535, 0, 0, 65535, 0, 3, 0, 200, 127, 0]]


def test_float_output_dtype_to_int_saturates(tmp_path, capsys):
    x = np.array([[1e6, -1e6, 0.5, 254.9, np.nan]])
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"scale": {"factor": 1.0}}], chunks=(1, 2), dtype="uint8")
    assert rc == 0, err
    assert out.tolist() == [[255, 0, 0, 254, 0]]


def test_astype_int_to_int_saturates(tmp_path, capsys):
    x = np.array([[1000, -1000, 5, 127, 128, -129, 70000, 0]], dtype=np.int32)
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"astype": {"dtype": "int8"}}], chunks=(1, 4))
    assert rc == 0, err
    assert out.tolist() == [[127, -128, 5, 127, 127, -128, 127, 0]]


def test_integer_output_dtype_saturates(tmp_path, capsys):
    x = np.array([[1000, -1000, 5, 300]], dtype=np.int32)
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"astype": {"dtype": "int32"}}], chunks=(1, 4), dtype="int8")
    assert rc == 0, err
    assert out.tolist() == [[127, -128, 5, 127]]


def test_point_ops_on_integer_input_compute_in_float(tmp_path, capsys):
    """Point ops on an integer input run in the compute precision (scale 0.5 on int16 is not 0)."""
    x = np.array([[10, 11, -3, 7]], dtype=np.int16)
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"scale": {"factor": 0.5, "offset": 0.25}}], chunks=(1, 2))
    assert rc == 0, err
    np.testing.assert_allclose(out, x * 0.5 + 0.25)
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"abs": {}}], chunks=(1, 2), dtype="uint8", out="u8.zarr")
    assert rc == 0, err
    assert out.tolist() == [[10, 11, 3, 7]]


# --------------------------------------------------------------------------- kernels and halos beyond the array


@pytest.mark.parametrize("mode", MODES)
def test_kernel_larger_than_the_array(tmp_path, capsys, mode):
    x = np.random.default_rng(4).standard_normal((2, 5, 4))
    k = np.random.default_rng(5).standard_normal((9, 11))
    rc, err, out, _ = _run(capsys, tmp_path, x, [{"correlate": {"kernel": k.tolist(), "mode": mode, "cval": 1.5,
                                                                "method": "direct"}}], chunks=(1, 2, 2))
    assert rc == 0, err
    _assert_scipy_equal(out, _per_plane(x, lambda p: ndi.correlate(p, k, mode=mode, cval=1.5)))


@pytest.mark.parametrize("mode", MODES)
def test_halo_larger_than_the_array_along_an_axis(tmp_path, capsys, mode):
    x = np.random.default_rng(6).standard_normal((3, 5, 40))
    steps = [{"gaussian": {"sigma": {"z": 2, "y": 4, "x": 1}, "mode": mode, "cval": -1}},  # radius 8, 16 > 3, 5
             {"median": {"size": {"y": 7, "x": 3}, "mode": mode, "cval": -1}}]
    rc, err, out, _ = _run(capsys, tmp_path, x, steps, chunks=(1, 2, 8), tile={"z": 1, "y": 2, "x": 8})
    assert rc == 0, err
    g = ndi.gaussian_filter(x, (2, 4, 1), mode=mode, cval=-1)
    ref = np.stack([ndi.median_filter(p, size=(7, 3), mode=mode, cval=-1) for p in g])
    _assert_scipy_equal(out, ref)


# --------------------------------------------------------------------------- damaged inputs


def test_missing_input_chunk_reads_as_fill_value(tmp_path, capsys):
    """A chunk file that is absent reads as the array's fill value (zarr's semantics: a missing chunk is
    indistinguishable from one never written). The result is the oracle of that array."""
    x = np.random.default_rng(7).standard_normal((4, 16, 16))
    _write(tmp_path / "in.zarr", x, (2, 8, 8), fill_value=7.0)
    os.remove(tmp_path / "in.zarr" / "c" / "1" / "0" / "1")
    seen = zarr.open_array(str(tmp_path / "in.zarr"), mode="r")[...]
    assert (seen[2:4, 0:8, 8:16] == 7.0).all()
    rc, err, out, _ = _run(capsys, tmp_path, None, [{"gaussian": {"sigma": 1}}])
    assert rc == 0, err
    _assert_scipy_equal(out, _per_plane(seen, lambda p: ndi.gaussian_filter(p, 1)))


def _corrupt_input(tmp: Path) -> str:
    x = np.random.default_rng(8).standard_normal((4, 16, 16)).astype(np.float32)
    _write(tmp / "in.zarr", x, (2, 8, 8))
    (tmp / "in.zarr" / "c" / "1" / "0" / "1").write_bytes(b"definitely not zstd")
    return "c/1/0/1"


def test_corrupt_input_chunk_fails_cleanly(tmp_path):
    _corrupt_input(tmp_path)
    spec = _spec(tmp_path, [{"gaussian": {"sigma": 1}}])
    r = subprocess.run([sys.executable, "-m", "convpipe", "run", str(spec)], check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr
    assert "--resume" in errors[0]
    assert zarr.open_array(str(tmp_path / "out.zarr"), mode="r").attrs["convpipe"]["complete"] is False


def test_corrupt_input_chunk_error_names_the_chunk(tmp_path, capsys):
    key = _corrupt_input(tmp_path)
    rc, err, _, complete = _run(capsys, tmp_path, None, [{"gaussian": {"sigma": 1}}])
    assert rc == 2 and complete is False
    assert key in err and "in.zarr" in err


@pytest.mark.slow
def test_corrupt_input_chunk_on_local_cluster_has_no_traceback(tmp_path):
    _corrupt_input(tmp_path)
    spec = _spec(tmp_path, [{"gaussian": {"sigma": 1}}], cluster="local:2")
    r = subprocess.run([sys.executable, "-m", "convpipe", "run", str(spec)], check=False, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- unwritable output


def _readonly_dir(tmp: Path) -> Path:
    d = tmp / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").mkdir()
    except OSError:
        return d  # the permission holds (not running as root)
    (d / "probe").rmdir()
    # root ignores permission bits: use a location that refuses even root (sysfs)
    for cand in (Path("/sys/fs"), Path("/sys")):
        try:
            (cand / "convpipe-probe").mkdir()
        except OSError:
            return cand
        else:  # pragma: no cover - a writable /sys: give up
            (cand / "convpipe-probe").rmdir()
    pytest.skip("no read-only location available")


def test_read_only_output_location_is_one_line_exit_1(tmp_path):
    x = np.random.default_rng(9).standard_normal((2, 8, 8)).astype(np.float32)
    _write(tmp_path / "in.zarr", x, (1, 8, 8))
    out = _readonly_dir(tmp_path) / "out.zarr"
    spec = _spec(tmp_path, [{"gaussian": {"sigma": 1}}], out=str(out))
    r = subprocess.run([sys.executable, "-m", "convpipe", "run", str(spec)], check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write output"), r.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- losing a worker


def _worker_pids(pid: int) -> list[int]:
    import psutil

    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    res = []
    for k in kids:
        try:
            if "spawn_main" in " ".join(k.cmdline()) or "forkserver" in " ".join(k.cmdline()):
                res.append(k.pid)
        except psutil.Error:
            continue
    return res


@pytest.fixture(scope="module")
def worker_loss(tmp_path_factory):
    """local:2: SIGKILL one worker process while tiles are being written (once for the tests below)."""
    pytest.importorskip("psutil")
    tmp = tmp_path_factory.mktemp("worker-loss")
    shape, chunks = (8, 256, 256), (2, 64, 64)  # 64 tiles
    x = np.random.default_rng(10).standard_normal(shape).astype(np.float32)
    _write(tmp / "in.zarr", x, chunks)
    steps = [{"gaussian": {"sigma": {"y": 2, "x": 2}}}, {"sobel": {}}, {"median": {"size": 3}}]
    ref_spec = _spec(tmp, steps, out="ref.zarr", precision="float32", tile={"z": 2, "y": 64, "x": 64},
                     name="ref.yaml")
    convpipe.load(ref_spec).run()
    ref = zarr.open_array(str(tmp / "ref.zarr"), mode="r")[...]

    spec = _spec(tmp, steps, precision="float32", cluster="local:2", tile={"z": 2, "y": 64, "x": 64})
    done_dir = tmp / "out.zarr" / ".convpipe" / "done"
    killed, n, seen = None, 0, set()
    with open(tmp / "run.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "convpipe", "run", str(spec)], cwd=tmp,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline:
                n = len(os.listdir(done_dir)) if done_dir.exists() else 0
                workers = _worker_pids(proc.pid)
                if n >= 6 and len(workers) >= 2:
                    killed = workers[0]
                    os.kill(killed, signal.SIGKILL)
                    break
                time.sleep(0.01)
            seen = set(_worker_pids(proc.pid))
            while proc.poll() is None and time.monotonic() < deadline:  # the nanny starts a new worker
                seen.update(_worker_pids(proc.pid))
                time.sleep(0.05)
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if killed is None:
        pytest.skip(f"the run ended before a worker could be killed (rc {rc})")
    return {"rc": rc, "log": (tmp / "run.log").read_text(), "out": tmp / "out.zarr", "ref": ref,
            "killed": killed, "tiles_at_kill": n, "workers_seen": seen}


@pytest.mark.slow
def test_worker_killed_mid_run_output_is_identical(worker_loss):
    """Dask recomputes the keys lost with the worker (the nanny starts a new one); tiles rewrite whole chunks,
    so a tile that died half-written is simply written again: the result is bit-identical to a threaded run."""
    w = worker_loss
    assert w["rc"] == 0, w["log"]
    assert w["tiles_at_kill"] < 64, "the kill came too late to matter"
    assert w["workers_seen"] - {w["killed"]}, f"no replacement worker was seen; log:\n{w['log']}"
    z = zarr.open_array(str(w["out"]), mode="r")
    assert z.attrs["convpipe"]["complete"] is True
    assert len(os.listdir(w["out"] / ".convpipe" / "done")) == 64
    assert np.array_equal(z[...], w["ref"])


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="BUG (timing-dependent, hence not strict): distributed's scheduler/nanny "
                                        "log comm errors with full tracebacks to stderr when a worker dies, "
                                        "although the run succeeds; see the proposed cluster.py diff (silence_logs)")
def test_worker_killed_mid_run_prints_no_traceback(worker_loss):
    assert worker_loss["rc"] == 0
    assert "Traceback" not in worker_loss["log"]
