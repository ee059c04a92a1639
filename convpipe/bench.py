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
    pipelines: str = ",".join(DEFAULT_PIPELINES),
    repeat: int = 1,
    workdir: Path = Path("bench-out"),
    json_path: Path | None = None,
    backend: str = "cpu",
    only: str | None = None,
    quick: bool = False,
    keep_outputs: bool = False,
) -> int:
    """Run the benchmark and print its table; returns the exit code (0 ok, 1 bad options, 2 a check failed)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and console.width < 150:
        console = Console(width=150)  # a log file gets the whole table, not 80 squeezed columns
    err = Console(stderr=True)
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
        pipelines: str = opt(",".join(DEFAULT_PIPELINES), "--pipelines", help=f"comma-separated: {cases}"),
        repeat: int = opt(1, "--repeat", min=1, help="rounds (round-robin over the rows); the best time is reported"),
        workdir: Path = opt(Path("bench-out"), "--workdir", help="the input (cached) and outputs go here"),  # noqa: B008
        json_path: Path | None = opt(None, "--json", help="write the full report as JSON"),  # noqa: B008
        backend: str = opt("cpu", "--backend", help="cpu | gpu (convpipe and dask-image)"),
        only: str | None = opt(None, "--only", help="comma-separated contenders: " + ", ".join(CONTENDERS)),
        quick: bool = opt(False, "--quick", help=quick_help),
        keep_outputs: bool = opt(False, "--keep-outputs", help="keep each contender's output"),
    ) -> None:
        """Side-by-side benchmark: I/O roofline, dask-image, scipy and convpipe on a generated stack."""
        code = bench(shape=shape, chunks=chunks, pipelines=pipelines, repeat=repeat, workdir=workdir,
                     json_path=json_path, backend=backend, only=only, quick=quick, keep_outputs=keep_outputs)
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
