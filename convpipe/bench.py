"""``convpipe bench``: the side-by-side benchmark.

One process run, on a generated uint16 stack (default 32×2048×2048 in zarr chunks (16, 512, 512)), times
for each *case* (a pipeline, or the bare I/O) every *contender* that can run it:

- ``roofline``    read the input, cast to float32, write it (dask ``from_zarr`` → ``astype`` → ``to_zarr``)
- ``dask-image``  the same pipeline written with ``dask_image.ndfilters`` (map_overlap), ``to_zarr``
- ``scipy``       read the whole array into memory, scipy.ndimage, write (skipped when it would not fit
                  in half the RAM)
- ``convpipe``    ``convpipe.load(spec).run()``

and reports wall time, ratios (to the roofline and to dask-image), the task count of each dask graph,
peak RSS (psutil, sampled in a thread) and, for correctness, each output's max abs difference from the
float64 scipy oracle on a sub-volume that crosses chunk borders and touches an array edge.

Every output is float32, zarr v3, in the input's chunks and zarr's default codec (no ``compressors``
argument anywhere), and every dask contender runs on the threaded scheduler with all cores.

Extending the benchmark
-----------------------
A new row is one small registration:

- a new *case* (e.g. FFT convolution with a 41×41 kernel) is ``add_case(Case(name=..., steps=[...],
  oracle=..., impls={"dask-image": ..., "scipy": ...}, halo=...))``: ``steps`` feeds convpipe, ``oracle``
  is the scipy reference (dtype preserving, used in float64 for the check and in float32 as the
  ``scipy`` contender unless ``impls["scipy"]`` says otherwise), ``impls`` holds per-contender
  implementations;
- a new *contender* (e.g. a numpy.fft loop, a resumed run, the GPU) is a function
  ``fn(ctx, case) -> Outcome`` decorated with ``@contender("name", applies=...)``; it writes
  ``ctx.out_url(case, name)`` and the harness times it, samples RSS and checks the output.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import json
import os
import platform
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import typer  # at module level: the command's string annotations are evaluated in this module's globals

DEFAULT_SHAPE = (32, 2048, 2048)
DEFAULT_CHUNKS = (16, 512, 512)
QUICK_SHAPE = (8, 512, 512)
QUICK_CHUNKS = (4, 256, 256)
DEFAULT_PIPELINES = ("light", "heavy")
INPUT_VERSION = 1  # bump when the generated input changes, so a cached input is regenerated
REPORT_VERSION = 1


# --------------------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    shape: tuple[int, ...] = DEFAULT_SHAPE
    chunks: tuple[int, ...] = DEFAULT_CHUNKS
    pipelines: tuple[str, ...] = DEFAULT_PIPELINES
    repeat: int = 1
    workdir: Path = Path("bench-out")
    json_path: Path | None = None
    backend: str = "cpu"
    only: tuple[str, ...] | None = None  # contender names; None = all
    keep_outputs: bool = False
    seed: int = 0

    @classmethod
    def quick(cls, **kw: Any) -> BenchConfig:
        kw.setdefault("shape", QUICK_SHAPE)
        kw.setdefault("chunks", QUICK_CHUNKS)
        return cls(**kw)


@dataclass
class Outcome:
    """What a contender returns: the output it wrote, its task count, anything else worth keeping."""

    out_url: str
    graph_tasks: int | None = None  # len of the dask graph the contender built (or its plan's task count)
    seconds: float | None = None  # set when the contender times itself (else the harness's wall time)
    extra: dict = field(default_factory=dict)


class Skip(Exception):
    """Raised by a contender that cannot run here (the reason goes into the report)."""


@dataclass
class Ctx:
    """What a contender sees: the input, the machine, the config."""

    config: BenchConfig
    input_url: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    ncpu: int
    total_ram: int

    @property
    def backend(self) -> str:
        return self.config.backend

    def out_url(self, case: Case, contender: str) -> str:
        return str((self.config.workdir / f"out-{case.name}-{contender}.zarr").resolve())

    @property
    def nvox(self) -> int:
        return int(np.prod(self.shape))


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    title: str
    steps: list  # convpipe spec steps; empty = convpipe does not run this case
    oracle: Callable[[np.ndarray], np.ndarray]  # whole-array scipy reference; keeps the input's float dtype
    halo: tuple  # per axis reach of the whole chain (None = the whole axis), for the sub-volume oracle
    impls: dict = field(default_factory=dict)  # contender name -> implementation
    tol: float = 1e-4  # relative: max|out - oracle| <= tol * max(1, max|oracle|)
    scipy_temporaries: float = 4.0  # float32 whole-array copies the scipy contender holds at once


CASES: dict[str, Case] = {}


def add_case(case: Case) -> Case:
    CASES[case.name] = case
    return case


def _radius(sigma: float, truncate: float = 4.0) -> int:
    """scipy.ndimage's Gaussian kernel radius."""
    return int(truncate * float(sigma) + 0.5)


def _per_plane(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Apply a 2-D function to every plane of a (..., y, x) stack (the op's `axes: yx`)."""

    def apply(a: np.ndarray) -> np.ndarray:
        out = None
        for idx in np.ndindex(*a.shape[:-2]):
            r = fn(a[idx])
            if out is None:
                out = np.empty(a.shape[:-2] + r.shape, dtype=r.dtype)
            out[idx] = r
        return out

    return apply


# The oracles follow SPEC semantics: an op with axes yx is the 2-D op of every plane.
def _sobel_magnitude_2d(p: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi

    dy = ndi.sobel(p, axis=0)
    dx = ndi.sobel(p, axis=1)
    return np.sqrt(dy * dy + dx * dx)


def _light_oracle(a: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi

    return _per_plane(lambda p: _sobel_magnitude_2d(ndi.gaussian_filter(p, 2.0)))(a)


def _heavy_oracle(a: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi

    g = ndi.gaussian_filter(a, (1.0, 3.0, 3.0))
    return _per_plane(lambda p: ndi.uniform_filter(ndi.gaussian_laplace(p, 2.0), 5))(g)


def _sobel_kernels() -> tuple[np.ndarray, np.ndarray]:
    """(1, 3, 3) correlation kernels of scipy.ndimage.sobel(plane, axis=0) and axis=1.

    Contiguous copies on purpose: dask's tokenize gives a (1, 3, 3) kernel and its transposed *view* the
    same token, so dask-image would give both correlations one graph key and hypot(dy, dx) comes out wrong.
    """
    d = np.array([-1.0, 0.0, 1.0])
    s = np.array([1.0, 2.0, 1.0])
    ky = np.ascontiguousarray(np.outer(d, s)[None])
    kx = np.ascontiguousarray(np.outer(s, d)[None])
    return ky, kx


def _light_dask_image(x: Any) -> Any:
    import dask.array as da
    import dask_image.ndfilters as nf

    g = nf.gaussian_filter(x, sigma=(0, 2, 2))
    ky, kx = _sobel_kernels()
    if type(x._meta).__module__.split(".")[0] == "cupy":  # pragma: no cover - GPU machines only
        import cupy

        ky, kx = cupy.asarray(ky), cupy.asarray(kx)
    # dask_image.ndfilters.sobel on a 3-D array smooths along z as well; per-plane Sobel is a (1, 3, 3) correlation
    dy = nf.correlate(g, ky)
    dx = nf.correlate(g, kx)
    return da.sqrt(dy * dy + dx * dx)


def _heavy_dask_image(x: Any) -> Any:
    import dask_image.ndfilters as nf

    g = nf.gaussian_filter(x, sigma=(1, 3, 3))
    # NOT gaussian_laplace(g, sigma=(0, 2, 2)): scipy (so dask-image) adds d²/dz² of a sigma-0 Gaussian,
    # which is the plain yx-smoothed image, to the sum, i.e. LoG + G. The per-plane LoG is d²/dy² + d²/dx².
    lap = nf.gaussian_filter(g, sigma=(0, 2, 2), order=(0, 2, 0)) + nf.gaussian_filter(g, sigma=(0, 2, 2), order=(0, 0, 2))
    return nf.uniform_filter(lap, size=(1, 5, 5))


add_case(Case(
    name="io",
    title="I/O: read, cast to float32, write",
    steps=[],
    oracle=lambda a: a.astype(np.float32) if a.dtype != np.float64 else a,
    halo=(0, 0, 0),
    impls={},
    scipy_temporaries=1.0,
))

add_case(Case(
    name="light",
    title="gaussian σ=2 (yx) → Sobel magnitude (yx)",
    steps=[{"gaussian": {"sigma": {"y": 2, "x": 2}}}, {"sobel": {"axes": "yx"}}],
    oracle=_light_oracle,
    halo=(0, _radius(2) + 1, _radius(2) + 1),
    impls={"dask-image": _light_dask_image},
    scipy_temporaries=3.0,
))

add_case(Case(
    name="heavy",
    title="gaussian σ=(1,3,3) → gaussian_laplace σ=2 (yx) → uniform 5 (yx)",
    steps=[{"gaussian": {"sigma": {"z": 1, "y": 3, "x": 3}}},
           {"gaussian_laplace": {"sigma": {"y": 2, "x": 2}}},
           {"uniform": {"size": {"y": 5, "x": 5}}}],
    oracle=_heavy_oracle,
    halo=(_radius(1), _radius(3) + _radius(2) + 2, _radius(3) + _radius(2) + 2),
    impls={"dask-image": _heavy_dask_image},
    scipy_temporaries=4.0,
))


# Issue 4: FFT methods. A random (not separable) 41×41 kernel, so nothing can fold it into 1-D passes.
_K41 = np.random.default_rng(41).random((41, 41))
_K41 /= _K41.sum()


def _conv41_oracle(a: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi

    return ndi.correlate(a, _K41[None], mode="reflect")  # direct, per plane (a (1, 41, 41) kernel)


FFT_LOWPASS = {"kind": "lowpass", "cutoff": 0.25, "shape": "butterworth", "order": 4}


def fft_lowpass_mask(ny: int, nx: int, cutoff: float = 0.25, order: float = 4.0) -> np.ndarray:
    """The Butterworth low-pass on the rfft2 grid of a (ny, nx) plane, written out plainly (float64):
    r = |f| / Nyquist, mask = 1 / (1 + (r / cutoff)^(2 order))."""
    fy = np.fft.fftfreq(ny)[:, None] / 0.5
    fx = np.fft.rfftfreq(nx)[None, :] / 0.5
    r = np.sqrt(fy * fy + fx * fx)
    return 1.0 / (1.0 + (r / cutoff) ** (2.0 * order))


def fft_lowpass_planes(a: np.ndarray, workers: int = 1) -> np.ndarray:
    """The plain whole-plane loop: rfft2 × mask → irfft2 for every (y, x) plane, in a's float dtype."""
    import scipy.fft

    ny, nx = a.shape[-2:]
    m = fft_lowpass_mask(ny, nx, FFT_LOWPASS["cutoff"], FFT_LOWPASS["order"]).astype(a.dtype)
    out = np.empty(a.shape, a.dtype)
    for idx in np.ndindex(*a.shape[:-2]):
        spec = scipy.fft.rfft2(a[idx], workers=workers)
        spec *= m
        out[idx] = scipy.fft.irfft2(spec, s=(ny, nx), workers=workers)
    return out


add_case(Case(
    name="conv41",
    title="correlate, random 41×41 kernel (yx), method fft (scipy: direct)",
    steps=[{"correlate": {"kernel": _K41.tolist(), "axes": "yx", "mode": "reflect", "method": "fft"}}],
    oracle=_conv41_oracle,
    halo=(0, 20, 20),
    impls={},
    scipy_temporaries=2.0,
))

add_case(Case(
    name="fft_lowpass",
    title="fft_filter lowpass butterworth cutoff 0.25 order 4 (yx)",
    steps=[{"fft_filter": dict(FFT_LOWPASS)}],
    oracle=lambda a: fft_lowpass_planes(a),
    halo=(0, None, None),
    impls={"numpy-fft": fft_lowpass_planes},
    scipy_temporaries=3.0,
))


# --------------------------------------------------------------------------- contenders


@dataclass
class Contender:
    name: str
    fn: Callable[[Ctx, Case], Outcome]
    # None: runs; a string: skipped, with the reason in the report; NA: does not apply (no row at all)
    applies: Callable[[Ctx, Case], str | None]
    description: str = ""


CONTENDERS: dict[str, Contender] = {}
NA = "n/a"  # what ``applies`` returns for a case the contender has nothing to do with (no row)


def contender(name: str, *, applies: Callable[[Ctx, Case], str | None], description: str = "") -> Callable:
    def deco(fn: Callable[[Ctx, Case], Outcome]) -> Callable[[Ctx, Case], Outcome]:
        CONTENDERS[name] = Contender(name, fn, applies, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def _create_output(ctx: Ctx, url: str) -> Any:
    """A float32 zarr v3 array in the input's chunks, zarr's default codec (same for every contender)."""
    import zarr

    return zarr.create_array(store=url, shape=ctx.shape, chunks=ctx.chunks, dtype="float32",
                             zarr_format=3, overwrite=True)


def _compute_threads(ctx: Ctx, *collections: Any) -> Any:
    import dask

    return dask.compute(*collections, scheduler="threads", num_workers=ctx.ncpu)


def _graph_len(collection: Any) -> int:
    return len(collection.__dask_graph__())


def _to_gpu(x: Any) -> Any:
    try:
        import cupy
    except ImportError:  # pragma: no cover - GPU machines only
        raise Skip("backend gpu: CuPy is not installed") from None
    return x.map_blocks(cupy.asarray, dtype=x.dtype)


def _to_host(x: Any) -> Any:  # pragma: no cover - GPU machines only
    import cupy

    return x.map_blocks(cupy.asnumpy, dtype=x.dtype)


def _to_zarr(y: Any, url: str) -> Any:
    """``to_zarr`` the way a user writes it, without dask's two traps for a fair timing.

    - to_zarr into an existing ``zarr.Array`` rechunks to ``chunks="auto"`` first (measured: (16, 512, 512)
      float32 becomes (32, 1024, 1024), four write tasks), so the output is created from the URL;
    - ``mode="w"`` makes to_zarr write every chunk under one global lock, so the old output is removed and
      the default ``mode="a"`` (lock-free) creates it.
    The array is created with the dask chunks (the input's), zarr v3, zarr's default codec.
    """
    import dask.array as da

    _rm(url)
    return da.to_zarr(y, url, compute=False, zarr_format=3)


def _dask_write(ctx: Ctx, y: Any, url: str) -> Outcome:
    if tuple(c[0] for c in y.chunks) != tuple(ctx.chunks):
        raise RuntimeError(f"output chunks {y.chunksize} differ from the input's {ctx.chunks}")
    d = _to_zarr(y.astype(np.float32), url)
    tasks = _graph_len(d)
    _compute_threads(ctx, d)
    return Outcome(url, graph_tasks=tasks)


@contender("roofline", applies=lambda ctx, case: None if case.name == "io" else NA,
           description="dask from_zarr → astype(float32) → to_zarr")
def run_roofline(ctx: Ctx, case: Case) -> Outcome:
    import dask.array as da

    x = da.from_zarr(ctx.input_url)
    return _dask_write(ctx, x.astype(np.float32), ctx.out_url(case, "roofline"))


@contender("dask-image", applies=lambda ctx, case: None if "dask-image" in case.impls else NA,
           description="dask_image.ndfilters (map_overlap) → to_zarr")
def run_dask_image(ctx: Ctx, case: Case) -> Outcome:
    import dask.array as da

    x = da.from_zarr(ctx.input_url).astype(np.float32)
    if ctx.backend == "gpu":  # pragma: no cover - GPU machines only
        y = _to_host(case.impls["dask-image"](_to_gpu(x)))
    else:
        y = case.impls["dask-image"](x)
    return _dask_write(ctx, y, ctx.out_url(case, "dask-image"))


@contender("numpy-fft", applies=lambda ctx, case: None if "numpy-fft" in case.impls else NA,
           description="plain loop: zarr slab → scipy.fft rfft2 × mask → irfft2 per plane (all cores) → zarr")
def run_numpy_fft(ctx: Ctx, case: Case) -> Outcome:
    """The floor for per-plane FFT filters: no dask, no planner; reads one chunk-deep z slab of whole planes,
    filters each plane with scipy.fft (``workers`` = all cores), writes the slab, in the input's chunks."""
    import zarr

    url = ctx.out_url(case, "numpy-fft")
    src = zarr.open_array(ctx.input_url, mode="r")
    out = _create_output(ctx, url)
    cz = ctx.chunks[0]
    for z0 in range(0, ctx.shape[0], cz):
        slab = src[z0:z0 + cz].astype(np.float32)
        out[z0:z0 + cz] = case.impls["numpy-fft"](slab, ctx.ncpu)
    return Outcome(url)


def _scipy_applies(ctx: Ctx, case: Case) -> str | None:
    if case.name == "io":
        return NA
    need = ctx.nvox * (2 + 4 * (1 + case.scipy_temporaries))
    if need > ctx.total_ram / 2:
        return f"needs ~{need / 2**30:.1f} GiB, more than half the RAM ({ctx.total_ram / 2**31:.1f} GiB)"
    return None


@contender("scipy", applies=_scipy_applies, description="whole array in memory, scipy.ndimage (one thread)")
def run_scipy(ctx: Ctx, case: Case) -> Outcome:
    import zarr

    url = ctx.out_url(case, "scipy")
    a = zarr.open_array(ctx.input_url, mode="r")[...].astype(np.float32)
    fn = case.impls.get("scipy", case.oracle)
    r = fn(a)
    del a
    out = _create_output(ctx, url)
    out[...] = r.astype(np.float32, copy=False)
    return Outcome(url)


def _convpipe_applies(ctx: Ctx, case: Case) -> str | None:
    if not case.steps:
        return NA
    try:
        import convpipe
    except ImportError as e:  # pragma: no cover
        return f"convpipe not importable: {e}"
    if not hasattr(convpipe, "load"):
        return "convpipe.load is not available (the public API is not there yet)"
    return None


def convpipe_spec(ctx: Ctx, case: Case, out_url: str) -> dict:
    spec = {
        "convpipe": 1,
        "name": f"bench-{case.name}",
        "input": {"url": ctx.input_url},
        "output": {"url": out_url, "overwrite": True},
        "steps": case.steps,
        "execution": {"cluster": "threads", "backend": ctx.backend},  # explicit: auto would pick a GPU
    }
    return spec


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


@contender("convpipe", applies=_convpipe_applies, description="convpipe.load(spec).run(), cluster threads")
def run_convpipe(ctx: Ctx, case: Case) -> Outcome:
    import convpipe

    url = ctx.out_url(case, "convpipe")
    p = convpipe.load(convpipe_spec(ctx, case, url))
    plan = p.explain()
    t0 = time.perf_counter()
    res = p.run()
    seconds = time.perf_counter() - t0
    tasks = _int_or_none(getattr(res, "tasks", None))
    if tasks is None:
        tasks = _int_or_none(getattr(plan, "tasks", None))
    extra = {"plan": str(plan), "reported_elapsed_s": getattr(res, "elapsed", None),
             "plan_tasks": _int_or_none(getattr(plan, "tasks", None)),
             "result": {k: v for k, v in vars(res).items() if isinstance(v, (int, float, str))}
             if hasattr(res, "__dict__") else str(res)}
    return Outcome(url, graph_tasks=tasks, seconds=seconds, extra=extra)


# --------------------------------------------------------------------------- measurement helpers


def _task_counter() -> Any:
    """A dask callback counting the tasks the (local) scheduler is handed, after graph optimization —
    the same measurement for every dask contender, whatever it builds internally."""
    from dask.callbacks import Callback

    class TaskCounter(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.tasks = 0
            self.computes = 0

        def _start(self, dsk: Any) -> None:
            self.tasks += len(dsk)
            self.computes += 1

    return TaskCounter()


class RssSampler:
    """Peak resident set size of this process, sampled in a thread every ``interval`` seconds."""

    def __init__(self, interval: float = 0.01):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        return int(self.proc.memory_info().rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> Self:
        self.baseline = self.peak = self._rss()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self._rss())


def _release_memory() -> None:
    """Give freed memory back to the OS between contenders, so each one's peak RSS is its own."""
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _warm_up(ctx: Ctx) -> None:
    """Imports and first-call costs (thread pool, zarr's event loop, codecs) before anything is timed."""
    import dask.array as da
    import scipy.ndimage as ndi

    for mod in ("dask_image.ndfilters", "convpipe.api"):
        with contextlib.suppress(Exception):
            __import__(mod)
    x = da.from_zarr(ctx.input_url)[: ctx.chunks[0], : min(64, ctx.shape[1]), : min(64, ctx.shape[2])]
    ndi.gaussian_filter(np.asarray(_compute_threads(ctx, x.astype(np.float32))[0]), 1.0)
    url = str((ctx.config.workdir / "warm-up.zarr").resolve())
    _compute_threads(ctx, _to_zarr(x.astype(np.float32), url))
    _rm(url)


def _total_ram() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def check_region(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[slice, ...]:
    """The sub-volume every output is checked on: crosses chunk borders and touches an array edge.

    z: the whole axis (or 2 chunks around the middle border when long); y: a window around the chunk border
    nearest the middle; x: the last chunk and a bit, touching the far edge. Small axes are taken whole.
    """
    out = []
    nd = len(shape)
    for i, (n, c) in enumerate(zip(shape, chunks)):
        if n <= 2 * c:
            out.append(slice(0, n))
            continue
        b = max(c, min(n - c, round(n / 2 / c) * c))  # a chunk border near the middle
        if i == nd - 1:  # x: touch the far edge, cross the last border
            w = c + c // 4
            out.append(slice(max(0, n - w), n))
        elif i == nd - 2:  # y: around the middle border
            h = max(1, (3 * c) // 8)
            out.append(slice(b - h, b + h))
        elif n <= 4 * c:
            out.append(slice(0, n))
        else:
            out.append(slice(b - c, b + c))
    return tuple(out)


def _oracle_on_region(ctx: Ctx, case: Case, region: tuple[slice, ...]) -> np.ndarray:
    """The float64 oracle on ``region``: computed on the region grown by the chain's halo (clipped to the
    array, so the array's own edges keep their boundary mode), then cropped. Exact for local chains."""
    import zarr

    ext, crop = [], []
    for r, h, n in zip(region, case.halo, ctx.shape):
        lo, hi = (0, n) if h is None else (max(0, r.start - h), min(n, r.stop + h))
        ext.append(slice(lo, hi))
        crop.append(slice(r.start - lo, r.stop - lo))
    a = zarr.open_array(ctx.input_url, mode="r")[tuple(ext)].astype(np.float64)
    return np.asarray(case.oracle(a))[tuple(crop)]


def _check(ctx: Ctx, case: Case, url: str, region: tuple[slice, ...], oracle: np.ndarray) -> dict:
    import zarr

    arr = zarr.open_array(url, mode="r")
    got = np.asarray(arr[region], dtype=np.float64)
    if got.shape != oracle.shape:
        return {"max_abs_diff": None, "rel_diff": None, "check_ok": False,
                "check_error": f"shape {got.shape} != oracle {oracle.shape}"}
    diff = float(np.nanmax(np.abs(got - oracle))) if got.size else 0.0
    if not np.isfinite(got).all():
        diff = float("inf")
    scale = max(1.0, float(np.abs(oracle).max()) if oracle.size else 1.0)
    return {"max_abs_diff": diff, "rel_diff": diff / scale, "oracle_scale": scale,
            "check_ok": bool(diff <= case.tol * scale)}


def _describe_output(url: str) -> dict:
    """Dtype, chunks, format and codecs of an output (a fairness audit: all should match)."""
    import zarr

    try:
        a = zarr.open_array(url, mode="r")
        codecs = [type(c).__name__ for c in (getattr(a.metadata, "codecs", None) or [])]
        return {"dtype": str(a.dtype), "chunks": list(a.chunks), "zarr_format": a.metadata.zarr_format,
                "codecs": codecs, "stored_bytes": _du(url)}
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return {"describe_error": f"{type(e).__name__}: {e}"}


def _du(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, f))
    return total


def _rm(url: str) -> None:
    p = Path(url)
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


# --------------------------------------------------------------------------- input


def _gen_block(block_info: Any = None, seed: int = 0) -> np.ndarray:
    """A deterministic uint16 block: smooth structure (waves, bright spots) plus noise."""
    info = block_info[None]
    loc = info["array-location"]
    z, y, x = (np.arange(lo, hi, dtype=np.float32) for lo, hi in loc)
    z, y, x = z[:, None, None], y[None, :, None], x[None, None, :]
    v = (2000.0 + 700.0 * np.sin(x * 0.021 + z * 0.35) * np.cos(y * 0.017)
         + 900.0 * (np.cos(x * 0.11) * np.cos(y * 0.13)) ** 8)
    key = [seed] + [int(lo) for lo, _ in loc]
    rng = np.random.default_rng(key)
    v = v + rng.normal(0.0, 120.0, size=info["chunk-shape"]).astype(np.float32)
    return np.clip(v, 0, 65535).astype(np.uint16)


def ensure_input(config: BenchConfig, console: Any = None) -> tuple[str, float, bool]:
    """Generate (or reuse) the input stack in ``workdir``; returns (url, seconds, reused)."""
    import dask.array as da
    import zarr

    shape, chunks = tuple(config.shape), tuple(config.chunks)
    url = str((config.workdir / f"input-{'x'.join(map(str, shape))}-{'x'.join(map(str, chunks))}.zarr").resolve())
    want = {"version": INPUT_VERSION, "shape": list(shape), "chunks": list(chunks), "seed": config.seed,
            "complete": True}
    with contextlib.suppress(Exception):
        a = zarr.open_array(url, mode="r")
        if dict(a.attrs).get("convpipe_bench_input") == want:
            return url, 0.0, True
    if console is not None:
        console.print(f"generating input {shape} uint16, chunks {chunks} → {url}")
    t0 = time.perf_counter()
    x = da.map_blocks(_gen_block, dtype=np.uint16, chunks=da.core.normalize_chunks(chunks, shape),
                      seed=config.seed, meta=np.empty((0,) * len(shape), np.uint16))
    d = _to_zarr(x, url)
    import dask

    dask.compute(d, scheduler="threads", num_workers=_cpu_count())
    z = zarr.open_array(url, mode="r+")
    z.attrs["convpipe_bench_input"] = want  # written last: a half-written input is never reused
    return url, time.perf_counter() - t0, False


# --------------------------------------------------------------------------- the run


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "scipy", "dask", "zarr", "dask_image", "convpipe", "cupy"):
        with contextlib.suppress(Exception):
            out[mod] = getattr(__import__(mod), "__version__", "?")
    return out


def _selected_cases(config: BenchConfig) -> list[Case]:
    names = list(dict.fromkeys(["io", *config.pipelines]))
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"unknown pipeline(s) {', '.join(unknown)}; known: {', '.join(c for c in CASES if c != 'io')}")
    return [CASES[n] for n in names]


def _selected_contenders(config: BenchConfig) -> list[Contender]:
    if config.only is None:
        return list(CONTENDERS.values())
    unknown = [n for n in config.only if n not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(CONTENDERS)}")
    return [c for c in CONTENDERS.values() if c.name in config.only]


def _validate(config: BenchConfig) -> None:
    if len(config.shape) != 3 or len(config.chunks) != 3:
        raise ValueError("--shape and --chunks take three numbers: z,y,x")
    if any(int(n) < 1 for n in (*config.shape, *config.chunks)):
        raise ValueError("--shape and --chunks must be positive")
    if config.repeat < 1:
        raise ValueError("--repeat must be >= 1")
    if config.backend not in ("cpu", "gpu"):
        raise ValueError("--backend is cpu or gpu")


def run_benchmark(config: BenchConfig, console: Any = None, *, progress: bool = True) -> dict:
    """Run every selected (case, contender) pair; return the report (also written to ``config.json_path``)."""
    _validate(config)
    cases = _selected_cases(config)
    contenders = _selected_contenders(config)
    config.workdir = Path(config.workdir)
    config.workdir.mkdir(parents=True, exist_ok=True)
    say = (console.print if (console is not None and progress) else (lambda *a, **k: None))

    url, gen_s, reused = ensure_input(config, console if progress else None)
    ctx = Ctx(config, url, tuple(config.shape), tuple(config.chunks), _cpu_count(), _total_ram())
    region = check_region(ctx.shape, ctx.chunks)
    _warm_up(ctx)
    report: dict = {
        "convpipe_bench": REPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"shape": list(ctx.shape), "chunks": list(ctx.chunks), "pipelines": list(config.pipelines),
                   "repeat": config.repeat, "backend": config.backend,
                   "only": list(config.only) if config.only else None, "workdir": str(config.workdir.resolve())},
        "machine": {"cpus": ctx.ncpu, "ram_bytes": ctx.total_ram, "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "versions": _versions(),
        "input": {"url": url, "shape": list(ctx.shape), "chunks": list(ctx.chunks), "dtype": "uint16",
                  "nbytes": ctx.nvox * 2, "stored_bytes": _du(url), "generated_s": gen_s, "reused": reused},
        "check_region": [[s.start, s.stop] for s in region],
        "cases": {c.name: {"title": c.title, "steps": c.steps, "tol": c.tol} for c in cases},
        "contenders": {c.name: c.description for c in contenders},
        "rows": [],
    }

    # every row is a slot; rounds run all slots in turn (round-robin), so a burst of load from elsewhere on
    # the machine hits every contender alike rather than all the repeats of one
    slots: list[dict] = []
    for case in cases:
        for con in contenders:
            reason = con.applies(ctx, case)
            if reason is None:
                slots.append({"case": case, "con": con, "runs": [], "row": None})
            elif reason != NA:
                slots.append({"case": case, "con": con, "runs": [],
                              "row": _row(case, con, status="skipped", reason=reason)})
    oracles: dict[str, np.ndarray] = {}
    for case in cases:
        if any(sl["row"] is None and sl["case"] is case for sl in slots):
            say(f"[dim]{case.name}: float64 oracle on {' × '.join(f'[{r.start}:{r.stop}]' for r in region)}[/]")
            oracles[case.name] = _oracle_on_region(ctx, case, region)
    report["machine"]["loadavg_start"] = _loadavg()
    for k in range(config.repeat):
        last = k == config.repeat - 1
        for sl in slots:
            if sl["row"] is not None:
                continue
            case, con = sl["case"], sl["con"]
            say(f"{case.name} · {con.name}" + (f" (round {k + 1}/{config.repeat})" if config.repeat > 1 else "") + " …")
            sl["row"] = _measure(ctx, case, con, sl["runs"], region, oracles[case.name], last=last)
            r = sl["row"]
            if r is None:
                say(f"  {sl['runs'][-1]['seconds']:.2f} s")
            elif r["status"] == "ok":
                say(f"  {r['times'][-1]:.2f} s (best {r['seconds']:.2f}), tasks {_fmt(r['tasks'], 'd')}, "
                    f"peak RSS {_fmt_bytes(r['peak_rss'])}, max|Δ| {_fmt(r['max_abs_diff'], '.3g')}")
            else:
                say(f"  [red]{r['status']}: {r.get('reason')}[/]")
    report["machine"]["loadavg_end"] = _loadavg()
    report["rows"] = [sl["row"] for sl in slots]

    _ratios(report["rows"])
    report["all_ok"] = all(r["status"] in ("ok", "skipped") and r.get("check_ok", True) is not False
                           for r in report["rows"])
    if config.json_path is not None:
        p = Path(config.json_path)
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return report


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _row(case: Case, con: Contender, **kw: Any) -> dict:
    row = {"pipeline": case.name, "contender": con.name, "status": "ok", "reason": None, "seconds": None,
           "times": [], "cpu_s": None, "tasks": None, "graph_tasks": None, "computes": None, "peak_rss": None,
           "rss_delta": None, "baseline_rss": None,
           "voxels_per_s": None, "max_abs_diff": None, "rel_diff": None, "check_ok": None, "tol": case.tol,
           "vs_roofline": None, "vs_dask_image": None, "output": None, "extra": {}}
    row.update(kw)
    return row


def _measure(ctx: Ctx, case: Case, con: Contender, runs: list[dict], region: tuple[slice, ...],
             oracle: np.ndarray, *, last: bool) -> dict | None:
    """Run one contender once, appending to ``runs``; return its row after the last round or a failure,
    else None (more rounds to come)."""
    try:
        _rm(ctx.out_url(case, con.name))  # every run writes a fresh output; removing the old one is not timed
        _release_memory()
        with RssSampler() as rss, _task_counter() as counter:
            c0 = _cpu_seconds()
            t0 = time.perf_counter()
            outcome = con.fn(ctx, case)
            wall = time.perf_counter() - t0
            cpu = _cpu_seconds() - c0
    except Skip as e:
        return _row(case, con, status="skipped", reason=str(e))
    except Exception as e:  # noqa: BLE001 - one contender failing must not sink the benchmark
        return _row(case, con, status="error", reason=f"{type(e).__name__}: {e}",
                    extra={"traceback": traceback.format_exc()})
    finally:
        _release_memory()
    run = {"seconds": outcome.seconds if outcome.seconds is not None else wall, "wall": wall, "cpu_s": cpu,
           "peak": rss.peak, "baseline": rss.baseline, "tasks": counter.tasks, "computes": counter.computes}
    try:  # every round's output is checked (cheap: a sub-volume), so a flaky result cannot hide
        run.update(_check(ctx, case, outcome.out_url, region, oracle))
    except Exception as e:  # noqa: BLE001
        run.update(check_ok=False, check_error=f"{type(e).__name__}: {e}")
    runs.append(run)
    if not last:
        return None
    times = [r["seconds"] for r in runs]
    best = min(times)
    top = max(runs, key=lambda r: r["peak"])
    row = _row(case, con, seconds=best, times=times, cpu_s=min(r["cpu_s"] for r in runs), tasks=runs[-1]["tasks"] or None,
               graph_tasks=outcome.graph_tasks, computes=runs[-1]["computes"], peak_rss=top["peak"],
               rss_delta=max(r["peak"] - r["baseline"] for r in runs), baseline_rss=top["baseline"],
               voxels_per_s=ctx.nvox / best if best > 0 else None, extra=outcome.extra)
    def badness(r: dict) -> tuple:
        d = r.get("max_abs_diff")
        return (r.get("check_ok") is False, float("inf") if d is None else d)

    worst = max(runs, key=badness)  # the row reports the worst round
    row.update({k: worst[k] for k in ("max_abs_diff", "rel_diff", "oracle_scale", "check_ok", "check_error")
                if k in worst})
    row["runs"] = runs
    row["output"] = _describe_output(outcome.out_url)
    if not ctx.config.keep_outputs:
        _rm(outcome.out_url)
    return row


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): steadier than wall time on a busy machine."""
    import psutil

    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover
        return None


def _ratios(rows: list[dict]) -> None:
    roof = next((r["seconds"] for r in rows if r["contender"] == "roofline" and r["status"] == "ok"), None)
    di = {r["pipeline"]: r["seconds"] for r in rows if r["contender"] == "dask-image" and r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok" or not r["seconds"]:
            continue
        if roof:
            r["vs_roofline"] = r["seconds"] / roof
        if di.get(r["pipeline"]):
            r["vs_dask_image"] = r["seconds"] / di[r["pipeline"]]


# --------------------------------------------------------------------------- the extra suite (issues 4, 5, 6, 10)
#
# Rows that are experiments rather than one pipeline timed side by side: each is a function
# ``fn(sx: ExtraCtx) -> dict`` registered with ``@extra_row(name, ...)``; it returns its numbers, its target
# and whether the target was met. Anything measured for memory runs in a fresh subprocess (``_run_child``),
# sampled from here with psutil, so one row's allocations never show in another's peak RSS.
# ``convpipe bench --suite extra [--pipelines conv41,resume,...] [--quick]`` runs them and writes JSON
# (default ``<workdir>/extra.json``).


@dataclass
class ExtraRow:
    name: str
    fn: Callable[[ExtraCtx], dict]
    title: str
    target: str


EXTRA_ROWS: dict[str, ExtraRow] = {}


def extra_row(name: str, *, title: str, target: str) -> Callable:
    def deco(fn: Callable[[ExtraCtx], dict]) -> Callable[[ExtraCtx], dict]:
        EXTRA_ROWS[name] = ExtraRow(name, fn, title, target)
        return fn

    return deco


@dataclass
class ExtraCtx:
    workdir: Path
    quick: bool = False
    say: Callable[..., None] = lambda *a, **k: None
    ncpu: int = 1
    archive_run_limit_s: float = 240.0  # a single archive-scale run longer than this is cut and extrapolated
    archive_targets: tuple[int, ...] | None = None  # task counts (default 1 k, 10 k, 100 k; quick: 200, 1 k, 2 k)
    archive_clusters: tuple[str, ...] = ("threads", "local:2")

    def size(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def input(self, shape: tuple[int, ...], chunks: tuple[int, ...]) -> str:
        return ensure_input(BenchConfig(shape=shape, chunks=chunks, workdir=self.workdir), None)[0]

    def path(self, name: str) -> str:
        return str((self.workdir / name).resolve())


_CHILD_TAG = "CONVPIPE-BENCH-CHILD "


def _child_main(job_json: str) -> None:
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


def _run_sampled(cmd: list[str], *, timeout: float, interval: float = 0.01, tree: bool = False,
                 kill_when: Callable[[], bool] | None = None, env: dict | None = None) -> dict:
    """Run ``cmd``; sample the RSS of the process (and of its whole tree) until it ends.

    ``kill_when`` is polled at every sample; when it returns True the process is SIGKILLed (the resume row).
    A run past ``timeout`` is killed too (``timed_out``)."""
    import signal
    import subprocess

    import psutil

    t0 = time.perf_counter()
    pr = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    chunks: dict[str, list[str]] = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda f=f, k=k: chunks[k].append(f.read()), daemon=True)
               for f, k in ((pr.stdout, "out"), (pr.stderr, "err"))]
    for th in readers:
        th.start()
    ps = psutil.Process(pr.pid)
    peak = peak_tree = 0
    killed = timed_out = False
    while pr.poll() is None:
        try:
            rss = ps.memory_info().rss
            total = rss
            for c in (ps.children(recursive=True) if tree else ()):  # /proc walk: only when asked (local:N)
                with contextlib.suppress(psutil.Error):
                    total += c.memory_info().rss
            peak, peak_tree = max(peak, rss), max(peak_tree, total)
        except psutil.Error:
            pass
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
    return {"wall_s": wall, "peak_rss": peak, "peak_rss_tree": peak_tree, "rc": pr.returncode, "killed": killed,
            "timed_out": timed_out, "result": result, "stdout_tail": stdout[-2000:], "stderr_tail": stderr[-2000:]}


def _child_cmd(job: dict) -> list[str]:
    return [sys.executable, "-c", "import sys; from convpipe.bench import _child_main; _child_main(sys.argv[1])",
            json.dumps(job)]


def _run_child(job: dict, *, timeout: float = 600.0, interval: float = 0.01, tree: bool = False) -> dict:
    r = _run_sampled(_child_cmd(job), timeout=timeout, interval=interval, tree=tree)
    if r["result"] is None and not r["timed_out"]:
        raise RuntimeError(f"measurement subprocess failed (rc {r['rc']}): {r['stderr_tail'][-800:]}")
    return r


def _spec(input_url: str, out_url: str, steps: list, **execution: Any) -> dict:
    execution.setdefault("cluster", "threads")
    execution.setdefault("backend", "cpu")
    return {"convpipe": 1, "name": "bench-extra", "input": {"url": input_url},
            "output": {"url": out_url, "overwrite": True}, "steps": steps, "execution": execution}


def _harness_rows(sx: ExtraCtx, shape: tuple, chunks: tuple, case: str, only: tuple, repeat: int = 1) -> dict:
    cfg = BenchConfig(shape=shape, chunks=chunks, pipelines=(case,), only=only, workdir=sx.workdir, repeat=repeat)
    rep = run_benchmark(cfg, None, progress=False)
    return {r["contender"]: r for r in rep["rows"] if r["pipeline"] == case}


def _slim(row: dict) -> dict:
    keep = ("status", "reason", "seconds", "cpu_s", "tasks", "peak_rss", "rss_delta", "max_abs_diff", "rel_diff",
            "oracle_scale", "check_ok", "tol")
    return {k: row.get(k) for k in keep}


@extra_row("conv41", title="FFT convolution, random 41×41 kernel, convpipe method fft vs scipy.ndimage direct",
           target="convpipe ≥ 10× faster than scipy direct; max|Δ| ≤ 1e-4·max(1, max|ref|)")
def extra_conv41(sx: ExtraCtx) -> dict:
    sizes = sx.size((((1, 2048, 2048), (1, 512, 512)), ((4, 2048, 2048), (1, 512, 512))),
                    (((1, 256, 256), (1, 128, 128)),))
    out: dict = {"input": "uint16 generated stack, cast to float32 by both", "sizes": {}}
    for shape, chunks in sizes:
        # best of 2 rounds (round-robin): convpipe's first FFT correlation in a process pays one-time costs
        # (measured: 0.67 s for the first 1-plane run, 0.38 s for 4 planes right after) the warm-up does not cover
        rows = _harness_rows(sx, shape, chunks, "conv41", ("scipy", "convpipe"), repeat=sx.size(2, 1))
        c, s = rows["convpipe"], rows["scipy"]
        speedup = s["seconds"] / c["seconds"] if c.get("seconds") and s.get("seconds") else None
        ok_err = bool(c.get("check_ok")) and bool(s.get("check_ok"))
        out["sizes"]["x".join(map(str, shape))] = {
            "shape": list(shape), "chunks": list(chunks), "convpipe": _slim(c), "scipy_direct": _slim(s),
            "convpipe_times": c.get("times"), "scipy_times": s.get("times"),
            "speedup": speedup, "met": bool(speedup is not None and speedup >= 10 and ok_err)}
    out["met"] = all(v["met"] for v in out["sizes"].values())
    out["note"] = ("best of the rounds; both read the zarr input and write a float32 zarr output; scipy.ndimage.correlate is one "
                   "thread, convpipe uses all cores; errors vs the float64 scipy direct oracle on the check sub-volume")
    return out


@extra_row("fft_filter", title="fft_filter lowpass butterworth 0.25/4 vs a plain scipy.fft whole-plane loop",
           target="convpipe ≤ 1.5× the floor (numpy-fft: zarr → rfft2 × mask → irfft2 → zarr, all cores)")
def extra_fft_filter(sx: ExtraCtx) -> dict:
    shape, chunks = sx.size(((16, 2048, 2048), (1, 512, 512)), ((4, 256, 256), (1, 128, 128)))
    rows = _harness_rows(sx, shape, chunks, "fft_lowpass", ("numpy-fft", "scipy", "convpipe"))
    c, f, s = rows["convpipe"], rows["numpy-fft"], rows["scipy"]
    ratio = c["seconds"] / f["seconds"] if c.get("seconds") and f.get("seconds") else None
    return {"shape": list(shape), "chunks": list(chunks),
            "convpipe": _slim(c), "floor_numpy_fft_zarr": _slim(f), "scipy_in_memory_1thread": _slim(s),
            "ratio_vs_floor": ratio, "ratio_vs_in_memory": (c["seconds"] / s["seconds"]) if s.get("seconds") else None,
            "met": bool(ratio is not None and ratio <= 1.5 and c.get("check_ok")),
            "note": "floor and convpipe both read the uint16 zarr input and write float32 zarr in the input's "
                    "chunks; the floor reads one chunk-deep z slab of whole planes at a time, scipy.fft "
                    "workers = all cores; 'scipy' is the same loop in memory on one thread (reads all, then writes)"}


def _manifest_count(out_url: str) -> int:
    try:
        return len(os.listdir(os.path.join(out_url, ".convpipe", "done")))
    except FileNotFoundError:
        return 0


def _cli_elapsed(stdout: str) -> float | None:
    import re

    m = re.search(r"^done: .*?\s([0-9.]+) s,", stdout, re.MULTILINE)
    return float(m.group(1)) if m else None


@extra_row("resume", title="Resume overhead: SIGKILL at ~50% of the tiles, then --resume",
           target="resumed time / full-run time ≤ 0.6")
def extra_resume(sx: ExtraCtx) -> dict:
    import yaml
    import zarr

    import convpipe

    shape, chunks = sx.size(((64, 2048, 2048), (16, 512, 512)), ((8, 256, 256), (2, 64, 64)))
    url = sx.input(shape, chunks)
    steps = CASES["heavy"].steps
    full_out, res_out = sx.path("out-resume-full.zarr"), sx.path("out-resume.zarr")
    spec_path = sx.workdir / "resume-spec.yaml"
    spec = _spec(url, res_out, steps)
    spec["output"].pop("overwrite")
    spec_path.write_text(yaml.safe_dump(spec))
    n_tiles = int(convpipe.load(spec).explain().passes[-1].n_tiles)
    cli = [sys.executable, "-m", "convpipe", "run", str(spec_path)]
    rounds = []
    half = n_tiles // 2
    for _ in range(sx.size(3, 1)):  # whole cycles: full run, killed run, resume, a no-op resume
        for u in (full_out, res_out):
            _rm(u)
        full = _run_sampled(cli + ["--output", full_out], timeout=900)
        if full["rc"] != 0:
            raise RuntimeError(f"full run failed: {full['stderr_tail'][-800:]}")
        killed = _run_sampled(cli + ["--output", res_out], timeout=900, interval=0.002,
                              kill_when=lambda: _manifest_count(res_out) >= half)
        at_kill = _manifest_count(res_out)
        resumed = _run_sampled(cli + ["--output", res_out, "--resume"], timeout=900)
        if resumed["rc"] != 0:
            raise RuntimeError(f"resume failed: {resumed['stderr_tail'][-800:]}")
        noop = _run_sampled(cli + ["--output", res_out, "--resume"], timeout=900)  # the CLI's fixed cost
        a, b = zarr.open_array(full_out, mode="r"), zarr.open_array(res_out, mode="r")
        same = all(np.array_equal(a[z], b[z]) for z in sorted({0, shape[0] // 2, shape[0] - 1}))
        complete = bool(dict(b.attrs).get("convpipe", {}).get("complete"))
        fe, re_ = _cli_elapsed(full["stdout_tail"]), _cli_elapsed(resumed["stdout_tail"])
        rounds.append({"killed": killed["killed"], "tiles_done_at_kill": at_kill, "killed_after_s": killed["wall_s"],
                       "full_wall_s": full["wall_s"], "resume_wall_s": resumed["wall_s"],
                       "noop_resume_wall_s": noop["wall_s"], "full_elapsed_s": fe, "resume_elapsed_s": re_,
                       "ratio_wall": resumed["wall_s"] / full["wall_s"],
                       "ratio_elapsed": (re_ / fe) if fe and re_ else None,
                       "ideal_ratio": 1 - at_kill / n_tiles, "resumed_equals_full_run": same,
                       "resumed_complete": complete})
    for u in (full_out, res_out):
        _rm(u)
    best_full = min(r["full_wall_s"] for r in rounds)
    best_res = min(r["resume_wall_s"] for r in rounds)
    el = [(r["full_elapsed_s"], r["resume_elapsed_s"]) for r in rounds if r["full_elapsed_s"] and r["resume_elapsed_s"]]
    ratio_wall = best_res / best_full
    same = all(r["resumed_equals_full_run"] for r in rounds)
    complete = all(r["resumed_complete"] for r in rounds)
    return {"shape": list(shape), "chunks": list(chunks), "pipeline": "heavy", "tiles": n_tiles, "rounds": rounds,
            "tiles_done_at_kill": [r["tiles_done_at_kill"] for r in rounds],
            "full_wall_s": best_full, "resume_wall_s": best_res, "ratio_wall": ratio_wall,
            "ratio_elapsed": (min(e[1] for e in el) / min(e[0] for e in el)) if el else None,
            "ratio_wall_per_round": [r["ratio_wall"] for r in rounds],
            "ratio_wall_median_of_rounds": float(np.median([r["ratio_wall"] for r in rounds])),
            "noop_resume_wall_s": min(r["noop_resume_wall_s"] for r in rounds),
            "resumed_equals_full_run": same, "resumed_complete": complete,
            "met": bool(ratio_wall <= 0.6 and same and complete),
            "note": "best of the rounds (as the main table); wall: `python -m convpipe run` subprocess end to end "
                    "(interpreter start and imports included); elapsed: what the CLI reports for the run itself; "
                    "noop: `--resume` on the finished output (the CLI's fixed cost)"}


@extra_row("rss_scale", title="Peak RSS at 1× and 4× the data (light pipeline, same chunks, fresh subprocesses)",
           target="peak RSS at 4× ≤ 1.2 × peak RSS at 1×")
def extra_rss_scale(sx: ExtraCtx) -> dict:
    (z1, z4), plane, chunks = sx.size(((16, 64), (2048, 2048), (16, 512, 512)), ((2, 8), (256, 256), (2, 128, 128)))
    runs = {}
    for z in (z1, z4):
        url = sx.input((z, *plane), chunks)
        out = sx.path(f"out-rss-{z}.zarr")
        r = _run_child({"kind": "run", "spec": _spec(url, out, CASES["light"].steps)})
        _rm(out)
        res = r["result"]
        runs[z] = {"shape": [z, *plane], "peak_rss": r["peak_rss"], "rss_after_imports": res["rss_after_imports"],
                   "wall_s": r["wall_s"], "elapsed_s": res["elapsed"], "tiles": res["tiles"], "tasks": res["tasks"]}
    ratio = runs[z4]["peak_rss"] / runs[z1]["peak_rss"]
    return {"chunks": list(chunks), "dtype": "uint16", "runs": {str(k): v for k, v in runs.items()},
            "ratio": ratio, "met": bool(ratio <= 1.2)}


@extra_row("peaks", title="peaks radius 3 → Parquet table, fresh subprocess: peak RSS, rows, time at 16 and 64 planes",
           target="memory bounded: peak RSS at 64 planes ≈ at 16 planes (≤ 1.2×)")
def extra_peaks(sx: ExtraCtx) -> dict:
    (z1, z4), plane, chunks = sx.size(((16, 64), (2048, 2048), (16, 512, 512)), ((2, 8), (256, 256), (2, 128, 128)))
    threshold = 2400.0
    runs = {}
    for z in (z1, z4):
        url = sx.input((z, *plane), chunks)
        out, table = sx.path(f"out-peaks-{z}.zarr"), sx.path(f"peaks-{z}.parquet")
        steps = [{"peaks": {"radius": 3, "threshold": threshold, "table": table}}]
        r = _run_child({"kind": "run", "spec": _spec(url, out, steps)})
        res = r["result"]
        rows = next((v.get("rows") for v in res["outputs"].values() if isinstance(v, dict) and "rows" in v), None)
        table_bytes = _du(table) if os.path.isdir(table) else (os.path.getsize(table) if os.path.exists(table) else None)
        _rm(out)
        _rm(table)
        runs[z] = {"shape": [z, *plane], "peak_rss": r["peak_rss"], "rss_after_imports": res["rss_after_imports"],
                   "wall_s": r["wall_s"], "elapsed_s": res["elapsed"], "rows": rows, "table_bytes": table_bytes,
                   "tiles": res["tiles"]}
    ratio = runs[z4]["peak_rss"] / runs[z1]["peak_rss"]
    return {"chunks": list(chunks), "threshold": threshold, "input": "the generated uint16 stack (waves, spots, noise σ 120)",
            "runs": {str(k): v for k, v in runs.items()}, "ratio": ratio, "met": bool(ratio <= 1.2)}


def _archive_input(sx: ExtraCtx, tasks_target: int, tile: tuple[int, int, int], plane: tuple[int, int]) -> tuple[str, int]:
    """A metadata-only uint16 input (no chunk written: reads give the fill value) sized for ~tasks_target."""
    import zarr

    ny, nx = plane
    tiles_per_plane = (ny // tile[1]) * (nx // tile[2])
    z = max(1, round(tasks_target / (2 * tiles_per_plane)))  # two tasks per tile: read + compute/write
    url = sx.path(f"archive-{z}x{ny}x{nx}.zarr")
    _rm(url)
    zarr.create_array(url, shape=(z, ny, nx), chunks=tile, dtype="uint16", fill_value=0, zarr_format=3)
    return url, z


@extra_row("archive", title="Archive scale: graph build and end-to-end overhead per task, metadata-only input, "
                            "tiles (1,64,64), gaussian σ=1",
           target="build µs/task and run ms/task flat (linear growth) from 1 k to 100 k tasks")
def extra_archive(sx: ExtraCtx) -> dict:
    tile = (1, 64, 64)
    plane = (640, 640)
    targets = sx.archive_targets or sx.size((1_000, 10_000, 100_000), (200, 1_000, 2_000))
    clusters = sx.archive_clusters
    steps = [{"gaussian": {"sigma": {"y": 1, "x": 1}}}]
    out: dict = {"tile": list(tile), "plane": list(plane), "steps": steps, "build": {}, "run": {},
                 "run_limit_s": sx.archive_run_limit_s}
    inputs = {t: _archive_input(sx, t, tile, plane) for t in targets}
    for t, (url, z) in inputs.items():
        spec = _spec(url, sx.path("out-archive.zarr"), steps, tile=list(tile))
        spec["output"]["chunks"] = list(tile)
        r = _run_child({"kind": "build", "spec": spec})
        res = r["result"]
        out["build"][str(t)] = {"z": z, "tasks": res["tasks"], "tiles": res["tiles"], "graph_len": res["graph_len"],
                                "plan_s": res["plan_s"], "build_s": res["build_s"],
                                "build_us_per_task": 1e6 * res["build_s"] / res["tasks"]}
        sx.say(f"  build {res['tasks']} tasks: {res['build_s']:.2f} s")
    for cl in clusters:
        out["run"][cl] = {}
        per_task_prev = None
        for t, (url, z) in inputs.items():
            key = str(t)
            if per_task_prev is not None and per_task_prev * t > sx.archive_run_limit_s:
                out["run"][cl][key] = {"measured": False, "extrapolated_elapsed_s": per_task_prev * t,
                                       "extrapolated_ms_per_task": 1e3 * per_task_prev,
                                       "note": f"not run: extrapolated past {sx.archive_run_limit_s:.0f} s from the "
                                               "previous size's per-task time"}
                sx.say(f"  {cl} {t}: extrapolated {per_task_prev * t:.0f} s")
                continue
            o = sx.path("out-archive.zarr")
            spec = _spec(url, o, steps, cluster=cl, tile=list(tile))
            spec["output"]["chunks"] = list(tile)
            # sampled every 0.1 s (the tree only for local:N): the sampler must not steal a core from the run
            r = _run_child({"kind": "run", "spec": spec}, timeout=sx.archive_run_limit_s * 1.5 + 60, interval=0.1,
                           tree=cl != "threads")
            _rm(o)
            if r["timed_out"]:
                out["run"][cl][key] = {"measured": False, "timed_out_after_s": r["wall_s"]}
                continue
            res = r["result"]
            ph = res["phases"]
            tasks = res["tasks"]
            row = {"measured": True, "z": z, "tasks": tasks, "tiles": res["tiles"], "elapsed_s": res["elapsed"],
                   "graph_s": ph.get("graph"), "compute_s": ph.get("compute"), "subprocess_wall_s": r["wall_s"],
                   "run_ms_per_task": 1e3 * res["elapsed"] / tasks,
                   "compute_ms_per_task": 1e3 * ph["compute"] / tasks if ph.get("compute") else None,
                   "graph_us_per_task": 1e6 * ph["graph"] / tasks if ph.get("graph") else None,
                   "peak_rss_tree": r["peak_rss_tree"]}
            out["run"][cl][key] = row
            per_task_prev = res["elapsed"] / tasks
            sx.say(f"  {cl} {tasks} tasks: {res['elapsed']:.1f} s ({row['run_ms_per_task']:.2f} ms/task)")
    for t, (url, _) in inputs.items():
        _rm(url)
    b = [v["build_us_per_task"] for v in out["build"].values()]
    out["build_growth"] = b[-1] / b[0]  # per-task build cost, largest size over smallest
    fits, growth = {}, {}
    for cl, rows in out["run"].items():
        pts = [(v["tasks"], v["elapsed_s"], v.get("compute_s")) for v in rows.values() if v.get("measured")]
        if len(pts) < 2:
            fits[cl], growth[cl] = None, None
            continue
        # elapsed = fixed + per_task · tasks; the marginal cost between consecutive sizes says whether it is linear
        marg = [1e3 * (e2 - e1) / (t2 - t1) for (t1, e1, _), (t2, e2, _) in itertools.pairwise(pts)]
        slope, icpt = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
        fits[cl] = {"fixed_s": float(icpt), "ms_per_task": float(1e3 * slope), "marginal_ms_per_task": marg}
        growth[cl] = marg[-1] / marg[0] if len(marg) > 1 else None
    out["run_fit"] = fits
    for cl, rows in out["run"].items():  # sizes not run: the linear fit's estimate, labelled as such
        for k, v in rows.items():
            if not v.get("measured") and fits.get(cl):
                n = out["build"][k]["tasks"]
                v["extrapolated_from_fit_s"] = fits[cl]["fixed_s"] + 1e-3 * fits[cl]["ms_per_task"] * n
                v["extrapolated_ms_per_task"] = 1e3 * v["extrapolated_from_fit_s"] / n
    out["run_marginal_growth"] = growth
    # linear: per-task build cost and marginal run cost per task at the largest size within 2× of the smallest
    out["met"] = bool(out["build_growth"] <= 2 and all(g is None or g <= 2 for g in growth.values()))
    return out


def run_extra(names: tuple[str, ...] | None, workdir: Path, *, quick: bool = False, json_path: Path | None = None,
              console: Any = None, archive_run_limit_s: float = 240.0) -> dict:
    """Run the extra rows (all, or ``names``) one after the other; return (and write) the report."""
    say = console.print if console is not None else (lambda *a, **k: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sx = ExtraCtx(workdir=workdir, quick=quick, say=say, ncpu=_cpu_count(), archive_run_limit_s=archive_run_limit_s)
    report: dict = {"convpipe_bench_extra": REPORT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "quick": quick, "machine": {"cpus": sx.ncpu, "ram_bytes": _total_ram(),
                                                "platform": platform.platform()},
                    "versions": _versions(), "rows": {}}
    for name in names or tuple(EXTRA_ROWS):
        row = EXTRA_ROWS[name]
        say(f"{name}: {row.title} …")
        report["machine"].setdefault("loadavg", {})[name] = _loadavg()
        t0 = time.perf_counter()
        try:
            res = row.fn(sx)
            res["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - one row failing must not sink the others
            res = {"status": "error", "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                   "met": False}
        res.update(title=row.title, target=row.target, row_seconds=time.perf_counter() - t0)
        report["rows"][name] = res
        say(f"  {res['status']}, target {'met' if res.get('met') else 'MISSED'}: {_extra_summary(name, res)}")
        if json_path is not None:  # written after every row: a cut-off run keeps what it measured
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return report


def _extra_summary(name: str, r: dict) -> str:
    if r.get("status") != "ok":
        return r.get("reason", "")
    f = _fmt
    if name == "conv41":
        return "; ".join(
            f"{k}: convpipe {f(v['convpipe']['seconds'], '.2f')} s vs scipy direct {f(v['scipy_direct']['seconds'], '.2f')} s"
            f" = {f(v['speedup'], '.1f')}×, rel err {f(v['convpipe']['rel_diff'], '.1e')}" for k, v in r["sizes"].items())
    if name == "fft_filter":
        return (f"convpipe {f(r['convpipe']['seconds'], '.2f')} s, floor {f(r['floor_numpy_fft_zarr']['seconds'], '.2f')} s"
                f" = {f(r['ratio_vs_floor'], '.2f')}×; in-memory 1 thread {f(r['scipy_in_memory_1thread']['seconds'], '.2f')} s")
    if name == "resume":
        return (f"{r['tiles_done_at_kill']} of {r['tiles']} tiles at kill; best full {r['full_wall_s']:.1f} s, resume "
                f"{r['resume_wall_s']:.1f} s (wall ratio {r['ratio_wall']:.2f}, rounds "
                f"{', '.join(f'{x:.2f}' for x in r['ratio_wall_per_round'])}; run ratio {f(r['ratio_elapsed'], '.2f')}); "
                f"no-op resume {r['noop_resume_wall_s']:.1f} s; equal {r['resumed_equals_full_run']}")
    if name in ("rss_scale", "peaks"):
        parts = [f"{k} planes: {_fmt_bytes(v['peak_rss'])}, {v['elapsed_s']:.1f} s" + (f", {v['rows']:,} rows" if v.get("rows") is not None else "")
                 for k, v in r["runs"].items()]
        return "; ".join(parts) + f"; ratio {r['ratio']:.2f}"
    if name == "archive":
        b = ", ".join(f"{v['tasks']}: {v['build_us_per_task']:.0f} µs" for v in r["build"].values())
        runs = "; ".join(cl + " " + ", ".join(
            (f"{k}: {v['run_ms_per_task']:.2f} ms" if v.get("measured") else f"{k}: ~{v.get('extrapolated_ms_per_task', float('nan')):.2f} ms (extrapolated)")
            for k, v in rows.items()) for cl, rows in r["run"].items())
        fit = "; ".join(f"{cl} fit {v['fixed_s']:.1f} s + {v['ms_per_task']:.2f} ms/task" for cl, v in r["run_fit"].items()
                        if v)
        return f"build/task {b}; run/task (elapsed/tasks) {runs}; {fit}"
    return ""


# --------------------------------------------------------------------------- presentation


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    if abs(n) >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if abs(n) >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB"


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def render_table(report: dict) -> Any:
    from rich.table import Table

    cfg, m = report["config"], report["machine"]
    t = Table(title=(f"convpipe bench · {'×'.join(map(str, cfg['shape']))} uint16, chunks "
                     f"{'×'.join(map(str, cfg['chunks']))} · {m['cpus']} CPUs, {_fmt_bytes(m['ram_bytes'])} RAM · "
                     f"backend {cfg['backend']} · best of {cfg['repeat']}"),
              caption=("time: best wall time of the rounds; cpu s: the least process CPU time (all threads) of "
                       "the rounds; tasks run: tasks the threaded scheduler executed (optimized graph); graph/plan: len of the "
                       "dask graph built, or convpipe's plan.tasks; Δ RSS: peak minus RSS at the start; max|Δ|, rel: "
                       "vs the float64 scipy oracle on the sub-volume "
                       + " × ".join(f"[{a}:{b}]" for a, b in report["check_region"])
                       + f"; load average at start/end {m.get('loadavg_start')} / {m.get('loadavg_end')}"))
    for col, just in (("pipeline", "left"), ("contender", "left"), ("time s", "right"), ("cpu s", "right"),
                      ("× roofline", "right"),
                      ("× dask-image", "right"), ("tasks run", "right"), ("graph/plan", "right"), ("peak RSS", "right"), ("Δ RSS", "right"),
                      ("max|Δ|", "right"), ("rel", "right"), ("check", "center")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for r in report["rows"]:
        if last is not None and r["pipeline"] != last:
            t.add_section()
        last = r["pipeline"]
        if r["status"] != "ok":
            style = "dim" if r["status"] == "skipped" else "red"
            t.add_row(r["pipeline"], r["contender"], f"[{style}]{r['status']}[/]", *["—"] * 10)
            continue
        ok = r.get("check_ok")
        t.add_row(r["pipeline"], r["contender"], _fmt(r["seconds"], ".2f"), _fmt(r["cpu_s"], ".2f"),
                  _fmt(r["vs_roofline"], ".2f", "×"),
                  _fmt(r["vs_dask_image"], ".2f", "×"), _fmt(r["tasks"], ",d"), _fmt(r["graph_tasks"], ",d"),
                  _fmt_bytes(r["peak_rss"]), _fmt_bytes(r["rss_delta"]), _fmt(r["max_abs_diff"], ".2e"),
                  _fmt(r["rel_diff"], ".1e"), "[green]ok[/]" if ok else "[red]FAIL[/]")
    return t


def render_notes(report: dict) -> list[str]:
    """One line per skipped or failed row (the table has no room for reasons)."""
    notes = []
    for r in report["rows"]:
        if r["status"] != "ok":
            notes.append(f"{r['pipeline']}/{r['contender']} {r['status']}: {r['reason']}")
        elif r.get("check_ok") is False:
            notes.append(f"{r['pipeline']}/{r['contender']} check FAILED: max|Δ| {r['max_abs_diff']} "
                         f"(rel {r['rel_diff']}, tol {r['tol']}) {r.get('check_error', '')}".rstrip())
    return notes


# --------------------------------------------------------------------------- command line


def _parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace("×", ",").replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what}: expected numbers like 32,2048,2048, got {text!r}") from None
    return vals


def _parse_names(text: str | None) -> tuple[str, ...] | None:
    if text is None or not text.strip():
        return None
    return tuple(n.strip() for n in text.split(",") if n.strip())


def bench(
    shape: str | None = None,
    chunks: str | None = None,
    pipelines: str | None = None,
    repeat: int = 1,
    workdir: Path = Path("bench-out"),
    json_path: Path | None = None,
    backend: str = "cpu",
    only: str | None = None,
    quick: bool = False,
    keep_outputs: bool = False,
    suite: str = "main",
    run_limit: float = 240.0,
) -> int:
    """Run the benchmark and print its table; returns the exit code (0 ok, 1 bad options, 2 a check failed)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and console.width < 150:
        console = Console(width=150)  # a log file gets the whole table, not 80 squeezed columns
    err = Console(stderr=True)
    if suite == "extra":
        return _bench_extra(pipelines, workdir, quick, json_path, run_limit, console, err)
    if suite != "main":
        err.print(f"[red]error:[/] --suite is main or extra, got {suite!r}")
        return 1
    if pipelines is None:
        pipelines = ",".join(DEFAULT_PIPELINES)
    try:
        d_shape = QUICK_SHAPE if quick else DEFAULT_SHAPE
        d_chunks = QUICK_CHUNKS if quick else DEFAULT_CHUNKS
        cfg = BenchConfig(
            shape=_parse_ints(shape, "--shape") if shape else d_shape,
            chunks=_parse_ints(chunks, "--chunks") if chunks else d_chunks,
            pipelines=_parse_names(pipelines) or (),
            repeat=repeat, workdir=workdir, json_path=json_path, backend=backend,
            only=_parse_names(only), keep_outputs=keep_outputs,
        )
        _validate(cfg)
        _selected_cases(cfg)
        _selected_contenders(cfg)
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        return 1
    report = run_benchmark(cfg, console)
    console.print(render_table(report))
    for note in render_notes(report):
        console.print(f"  {note}", highlight=False)
    if json_path is not None:
        console.print(f"report: {json_path}")
    if not report["all_ok"]:
        bad = [f"{r['pipeline']}/{r['contender']}" for r in report["rows"]
               if r["status"] == "error" or r.get("check_ok") is False]
        err.print(f"[red]failed:[/] {', '.join(bad)}")
        return 2
    return 0


def _bench_extra(pipelines: str | None, workdir: Path, quick: bool, json_path: Path | None, run_limit: float,
                 console: Any, err: Any) -> int:
    names = _parse_names(pipelines)
    unknown = [n for n in (names or ()) if n not in EXTRA_ROWS]
    if unknown:
        err.print(f"[red]error:[/] unknown extra row(s) {', '.join(unknown)}; known: {', '.join(EXTRA_ROWS)}")
        return 1
    json_path = json_path if json_path is not None else Path(workdir) / ("extra-quick.json" if quick else "extra.json")
    report = run_extra(names, workdir, quick=quick, json_path=json_path, console=console,
                       archive_run_limit_s=run_limit)
    console.print(render_extra_table(report))
    console.print(f"report: {json_path}")
    bad = [n for n, r in report["rows"].items() if r.get("status") != "ok"]
    if bad:
        err.print(f"[red]failed:[/] {', '.join(bad)}")
        return 2
    return 0


def render_extra_table(report: dict) -> Any:
    from rich.table import Table

    m = report["machine"]
    t = Table(title=f"convpipe bench --suite extra{' (quick)' if report.get('quick') else ''} · {m['cpus']} CPUs, "
                    f"{_fmt_bytes(m['ram_bytes'])} RAM", show_lines=True)
    for col in ("row", "result", "target", "met"):
        t.add_column(col, overflow="fold")
    for name, r in report["rows"].items():
        met = "[green]met[/]" if r.get("met") else ("[red]error[/]" if r.get("status") != "ok" else "[red]missed[/]")
        t.add_row(name, _extra_summary(name, r), r.get("target", ""), met)
    return t


def register(app: Any) -> None:
    """Add the ``bench`` command to a typer app (the main CLI calls this)."""
    cases = ", ".join(c for c in CASES if c != "io")
    quick_help = (f"small preset {'×'.join(map(str, QUICK_SHAPE))}, chunks {'×'.join(map(str, QUICK_CHUNKS))}, "
                  "for tests")
    # typer's option-as-default style (not Annotated[...]): this module postpones annotations, and the help
    # texts name the registered cases and contenders, which are locals here
    opt = typer.Option

    @app.command("bench")
    def bench_command(
        shape: str | None = opt(None, "--shape", help="z,y,x of the generated uint16 stack [32,2048,2048]"),
        chunks: str | None = opt(None, "--chunks", help="zarr chunks z,y,x [16,512,512]"),
        pipelines: str | None = opt(None, "--pipelines",
                                    help=f"comma-separated: {cases} (default light,heavy); with --suite extra: "
                                         f"{', '.join(EXTRA_ROWS)} (default all)"),
        repeat: int = opt(1, "--repeat", min=1, help="rounds (round-robin over the rows); the best time is reported"),
        workdir: Path = opt(Path("bench-out"), "--workdir", help="the input (cached) and outputs go here"),  # noqa: B008
        json_path: Path | None = opt(None, "--json", help="write the full report as JSON"),  # noqa: B008
        backend: str = opt("cpu", "--backend", help="cpu | gpu (convpipe and dask-image)"),
        only: str | None = opt(None, "--only", help="comma-separated contenders: " + ", ".join(CONTENDERS)),
        quick: bool = opt(False, "--quick", help=quick_help),
        keep_outputs: bool = opt(False, "--keep-outputs", help="keep each contender's output"),
        suite: str = opt("main", "--suite", help="main (the side-by-side table) | extra (issue rows: conv41, "
                                                 "fft_filter, resume, rss_scale, peaks, archive; JSON to "
                                                 "<workdir>/extra.json unless --json)"),
        run_limit: float = opt(240.0, "--run-limit", help="extra/archive: a run expected past this many seconds "
                                                          "is extrapolated, not run"),
    ) -> None:
        """Side-by-side benchmark: I/O roofline, dask-image, scipy and convpipe on a generated stack."""
        code = bench(shape=shape, chunks=chunks, pipelines=pipelines, repeat=repeat, workdir=workdir,
                     json_path=json_path, backend=backend, only=only, quick=quick, keep_outputs=keep_outputs,
                     suite=suite, run_limit=run_limit)
        if code:
            # SystemExit, not typer.Exit: a host CLI calling its app with standalone_mode=False gets typer.Exit's
            # code back as click's return value and may drop it; SystemExit reaches the process either way
            raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """A standalone ``bench`` CLI (used by benchmarks/run_bench.py)."""
    app = typer.Typer(add_completion=False, help="convpipe side-by-side benchmark")
    register(app)
    app(args=argv if argv is not None else sys.argv[1:], prog_name="run_bench")


if __name__ == "__main__":  # pragma: no cover
    main()
