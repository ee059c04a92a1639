"""The GPU backend on a real device (marker ``gpu``; skipped without CuPy or a CUDA device).

Every op with a GPU path, in every mode, runs through the device path and is compared with the CPU
result within SPEC.md's tolerance (1e-5 * max(1, max|ref|) in float32, 1e-4 for FFT methods; 1e-10 /
1e-8 in float64), never just "it ran": the transfer counters also prove the device did the work, one
copy each way per tile. Dask arrays of CuPy chunks keep CuPy meta and come back as CuPy. After the
warm-up the first run compiles nothing (no new file in a fresh kernel cache) and is at most 1.5x the
warm run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")
try:
    _HAVE_DEVICE = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # noqa: BLE001  (no driver, no device)
    _HAVE_DEVICE = False
if not _HAVE_DEVICE:
    pytest.skip("CuPy sees no CUDA device", allow_module_level=True)

import dask.array as da
from test_backends import assert_close, op_steps, spec, tolerance

import convpipe
from convpipe import engines, gpu
from convpipe.bench.gpu import bench_gpu

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _device_memory():
    yield
    cupy.get_default_memory_pool().free_all_blocks()


def _crop(a, r):
    """The valid region: ``r`` voxels off each side of every axis (``r`` an int or one per axis)."""
    rs = (r,) * a.ndim if isinstance(r, int) else r
    out = a[tuple(slice(k, s - k) for k, s in zip(rs, a.shape))]
    assert out.size, "cropped to nothing"
    return out


def _tol(ref, dtype, fft=False):
    scale = max(1.0, float(np.max(np.abs(ref))))
    if np.dtype(dtype) == np.float64:
        return (1e-8 if fft else 1e-10) * scale
    return (1e-4 if fft else 1e-5) * scale


# --------------------------------------------------------------------------- engines


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_engines_match_the_cpu_engines(rng, dtype):
    x = (rng.random((5, 67, 61)) * 1000).astype(dtype)
    d = cupy.asarray(x)
    for w in ({2: (np.array([1.0, 2.0, 1.0]) / 4, 1)},
              {1: (np.array([1.0, 3.0, -2.0, 1.0]), 2), 2: (np.array([0.5, 0.5]), 0)},
              {0: (np.array([1.0, -1.0, 2.0]), 1), 1: (np.array([1.0, 2.0, 1.0]), 1),
               2: (np.exp(-np.linspace(-2, 2, 9) ** 2), 4)}):
        ref = _crop(engines.sep_correlate(x, w), (1, 4, 4))
        got = engines.sep_correlate(d, w)
        assert isinstance(got, cupy.ndarray)  # the dispatch sent the CuPy block to the CuPy engine
        got = _crop(got.get(), (1, 4, 4))
        assert got.dtype == dtype and np.max(np.abs(got - ref)) <= _tol(ref, dtype)
    k = rng.random((3, 5))
    for centers in ((1, 2), (0, 4), (2, 0)):
        ref = _crop(engines.correlate_nd(x, k, centers, (1, 2)), (0, 5, 5))
        got = _crop(engines.correlate_nd(d, k, centers, (1, 2)).get(), (0, 5, 5))
        assert np.max(np.abs(got - ref)) <= _tol(ref, dtype)
    for kind, sizes in (("median", {1: 3, 2: 3}), ("median", {0: 3, 1: 2, 2: 5}), ("minimum", {1: 3, 2: 4}),
                        ("maximum", {0: 2, 1: 5})):
        ref = engines.rank_filter(x, kind, sizes)
        np.testing.assert_array_equal(engines.rank_filter(d, kind, sizes).get(), ref)  # exact
    kk = rng.random((1, 7, 9)).astype(dtype)
    import scipy.signal

    ref = scipy.signal.fftconvolve(x.astype(np.float64), kk.astype(np.float64), mode="valid", axes=(1, 2))
    got = engines.fftconvolve(d, kk, mode="valid", axes=(1, 2)).get()
    assert np.max(np.abs(got - ref)) <= _tol(ref, dtype, fft=True)
    xn = x.copy()
    xn[2, 30, 30] = np.nan  # a window holding a NaN is NaN on the device as on the host
    np.testing.assert_array_equal(engines.rank_filter(cupy.asarray(xn), "median", {1: 3, 2: 3}).get(),
                                  engines.rank_filter(xn, "median", {1: 3, 2: 3}))


# --------------------------------------------------------------------------- every op, every mode


def _input(shape=(2, 32, 28), seed=3):
    return (np.random.default_rng(seed).random(shape) * 2000).astype(np.uint16)


def _apply(steps, backend, a, chunks=(1, 16, 14), **execution):
    x = da.from_array(a, chunks=chunks)
    return convpipe.load(spec(steps, backend, **execution)).apply(x, axes="zyx")


@pytest.mark.parametrize("case", op_steps(), ids=lambda c: c[0])
def test_every_op_every_mode_matches_the_cpu(case):
    _, steps = case
    a = _input()
    ref = _apply(steps, "cpu", a).compute(scheduler="threads")
    before = _apply(steps[:-1], "cpu", a).compute(scheduler="threads") if len(steps) > 1 else None
    gpu.reset_transfer_counts()
    y = _apply(steps, "gpu", a)
    got = y.compute(scheduler="threads")
    assert isinstance(got, np.ndarray) and got.dtype == ref.dtype and got.shape == ref.shape
    c = gpu.transfer_counts()
    n = int(np.prod(y.numblocks))
    assert c["h2d"] == n and c["d2h"] == n, f"the device did not run every tile once: {c} for {n} tiles"
    assert_close(steps, got, ref, before)


@pytest.mark.parametrize("case", [c for c in op_steps() if c[0].endswith(("-reflect", "-wrap", "-None"))
                                  and not c[0].startswith(("threshold", "astype"))], ids=lambda c: c[0])
def test_float64_precision(case):
    _, steps = case
    a = _input((2, 40, 36))
    ref = _apply(steps, "cpu", a, precision="float64").compute()
    got = _apply(steps, "gpu", a, precision="float64").compute()
    fft = any(isinstance(v, dict) and v.get("method") == "fft" for s in steps for v in s.values())
    assert got.dtype == ref.dtype
    assert np.max(np.abs(got.astype(np.float64) - ref)) <= _tol(ref, np.float64, fft)


# --------------------------------------------------------------------------- CuPy in, CuPy out


def test_apply_on_dask_arrays_of_cupy_chunks():
    a = _input((4, 64, 56)).astype(np.float32)
    steps = [{"gaussian": {"sigma": 2.0, "mode": "wrap"}}, {"sobel": {}}, {"scale": {"factor": 0.5}}]
    ref = _apply(steps, "cpu", a).compute()
    x = da.from_array(cupy.asarray(a), chunks=(1, 32, 28), asarray=False)
    assert isinstance(x._meta, cupy.ndarray)
    gpu.reset_transfer_counts()
    y = convpipe.load(spec(steps, "auto")).apply(x, axes="zyx")
    assert isinstance(y._meta, cupy.ndarray) and y.dtype == np.float32
    got = y.compute()
    assert isinstance(got, cupy.ndarray)
    assert gpu.transfer_counts()["h2d"] == 0 and gpu.transfer_counts()["d2h"] == 0  # never left the device
    assert np.max(np.abs(got.get() - ref)) <= tolerance(steps, ref)
    z = convpipe.load(spec(steps, "auto")).apply(cupy.asarray(a), axes="zyx")  # a bare CuPy array
    assert isinstance(z._meta, cupy.ndarray)
    assert np.max(np.abs(z.compute().get() - ref)) <= tolerance(steps, ref)


def test_run_zarr_to_zarr_one_copy_each_way_per_tile(tmp_path):
    import zarr

    a = _input((8, 256, 256))
    zarr.create_array(str(tmp_path / "in.zarr"), data=a, chunks=(4, 128, 128))
    steps = [{"median": {"size": 3}}, {"gaussian": {"sigma": 1.5}}, {"gaussian_gradient_magnitude": {"sigma": 1}}]
    out = {}
    for be in ("cpu", "gpu"):
        p = convpipe.load({"convpipe": 1, "input": {"url": str(tmp_path / "in.zarr")},
                           "output": {"url": str(tmp_path / f"{be}.zarr")}, "steps": steps,
                           "execution": {"backend": be}})
        gpu.reset_transfer_counts()
        logs: list[str] = []
        res = p.run(log=logs.append)
        out[be] = zarr.open_array(str(tmp_path / f"{be}.zarr"), mode="r")[...]
        if be == "gpu":
            c = gpu.transfer_counts()
            assert c["h2d"] == res.tiles and c["d2h"] == res.tiles, c
            assert any("backend gpu" in line for line in logs), logs
    assert np.max(np.abs(out["gpu"].astype(np.float64) - out["cpu"])) <= tolerance(steps, out["cpu"])


# --------------------------------------------------------------------------- warm-up: cold vs warm

_COLD_WARM = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np, zarr
    import convpipe
    from convpipe import backends

    work = sys.argv[1]
    url = os.path.join(work, "in.zarr")
    if not os.path.exists(url):
        a = (np.random.default_rng(0).random((32, 1024, 1024)) * 4000).astype(np.uint16)
        zarr.create_array(url, data=a, chunks=(8, 512, 512))
    steps = [{"gaussian": {"sigma": 2.0, "mode": "mirror"}}, {"sobel": {}},
             {"median": {"size": 3, "mode": "wrap"}}, {"clip": {"max": 3000}}]
    p = convpipe.load({"convpipe": 1, "input": {"url": url}, "output": {"url": os.path.join(work, "out.zarr")},
                       "steps": steps, "execution": {"backend": "gpu"}})
    cache = os.environ["CUPY_CACHE_DIR"]
    count = lambda: sum(len(f) for _, _, f in os.walk(cache))
    t0 = time.perf_counter()
    info = backends.warmup(p.explain())
    warm_s = time.perf_counter() - t0
    n0 = count()
    t0 = time.perf_counter(); p.run(overwrite=True); cold = time.perf_counter() - t0
    n1 = count()
    t0 = time.perf_counter(); p.run(overwrite=True); warm = time.perf_counter() - t0
    print(json.dumps({"warmup_s": warm_s, "compiled": info["compiled"], "cold": cold, "warm": warm,
                      "files_after_warmup": n0, "files_after_cold": n1}))
""")


def test_warmup_then_cold_run_is_close_to_warm(tmp_path):
    """In a fresh process with an empty kernel cache: warm-up compiles (files appear in the cache), the
    first run compiles nothing more and takes at most 1.5x the second; a second process with the same
    cache warms up faster (it loads instead of compiling)."""
    script = tmp_path / "coldwarm.py"
    script.write_text(_COLD_WARM)
    env = dict(os.environ, CUPY_CACHE_DIR=str(tmp_path / "kernels"))
    results = []
    for _ in range(2):
        r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                           check=False, timeout=600)
        assert r.returncode == 0, r.stderr
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    first, second = results
    assert first["compiled"] > 0 and first["files_after_warmup"] > 0
    assert first["files_after_cold"] == first["files_after_warmup"], "the run compiled kernels the warm-up missed"
    assert first["cold"] <= 1.5 * first["warm"] + 0.05, first
    assert second["cold"] <= 1.5 * second["warm"] + 0.05, second
    assert second["warmup_s"] < first["warmup_s"], results


def test_warmup_compiles_every_kernel_of_every_op(tmp_path, monkeypatch):
    """For each op with a GPU path: after ``warmup(plan)``, running the plan compiles nothing new."""
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "kernels"))

    def count():
        return sum(len(f) for _, _, f in os.walk(tmp_path / "kernels"))

    from convpipe.plan import ArrayInfo, make_plan

    a = _input()
    tile = {"z": 1, "y": 16, "x": 14}
    # the kernels never see the mode (blocks are pre-padded); the padding differs by kind: slices,
    # gathers (reflect), masks (constant)
    for name, steps in [c for c in op_steps() if c[0].endswith(("-reflect", "-constant", "-None"))]:
        x = da.from_array(a, chunks=tuple(tile.values()))
        p = convpipe.load(spec(steps, "gpu"))
        y = p.apply(x, axes="zyx")
        plan = make_plan(p.spec.steps, ArrayInfo(a.shape, a.dtype, tuple(tile.values()), "zyx"),
                         tile=tile, out_chunks=tile, backend="gpu")
        gpu.warmup(plan)
        n = count()
        y.compute()
        assert count() == n, f"{name}: the run compiled kernels the warm-up did not"


# --------------------------------------------------------------------------- benchmark


def test_bench_gpu_smoke(tmp_path):
    rep = bench_gpu(shape=(8, 512, 512), chunks=(4, 256, 256), workdir=tmp_path, repeat=1)
    assert rep["device"]
    assert rep["max_rel_diff_gpu_vs_cpu"] <= 1e-5
    assert rep["end_to_end"]["gpu"]["transfers"]["h2d"] > 0 and "note" not in rep["end_to_end"]["gpu"]
    assert rep["speedup_kernel"] > 1  # device-resident kernels beat one CPU core
