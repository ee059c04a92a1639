"""The benchmark's contenders: the I/O roofline, dask-image, a plain numpy.fft loop, scipy in memory, convpipe.

Each is ``fn(ctx, case) -> Outcome`` registered with :func:`~.registry.contender`; it writes
``ctx.out_url(case, name)``, and the harness times it, samples its RSS and checks its output.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .data import to_zarr
from .registry import NA, Case, Ctx, Outcome, Skip, contender

__all__ = ["compute_threads", "convpipe_spec", "create_output"]


def create_output(ctx: Ctx, url: str) -> Any:
    """A float32 zarr v3 array in the input's chunks, zarr's default codec (same for every contender)."""
    import zarr

    return zarr.create_array(store=url, shape=ctx.shape, chunks=ctx.chunks, dtype="float32",
                             zarr_format=3, overwrite=True)


def compute_threads(ctx: Ctx, *collections: Any) -> Any:
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


def _dask_write(ctx: Ctx, y: Any, url: str) -> Outcome:
    if tuple(c[0] for c in y.chunks) != tuple(ctx.chunks):
        raise RuntimeError(f"output chunks {y.chunksize} differ from the input's {ctx.chunks}")
    d = to_zarr(y.astype(np.float32), url)
    tasks = _graph_len(d)
    compute_threads(ctx, d)
    return Outcome(url, graph_tasks=tasks)


@contender("roofline", applies=lambda ctx, case: None if case.name == "io" else NA,
           description="dask from_zarr → astype(float32) → to_zarr")
def run_roofline(ctx: Ctx, case: Case) -> Outcome:
    import dask.array as da

    x = da.from_zarr(ctx.input_url)
    return _dask_write(ctx, x.astype(np.float32), ctx.out_url(case, "roofline"))


_FLOOR_VALUES: dict[tuple, np.ndarray] = {}  # one job's output values, computed once (untimed), reused by rounds


def _floor_values(ctx: Ctx, case: Case) -> np.ndarray:
    """This job's output values (convpipe's in-memory ``apply``; the row's check holds them to the oracle)."""
    key = (ctx.input_url, case.name, ctx.shape)
    if key not in _FLOOR_VALUES:
        import convpipe
        import zarr

        _FLOOR_VALUES.clear()  # hold one job's values at a time
        x = zarr.open_array(ctx.input_url, mode="r")[...]
        spec = convpipe_spec(ctx, case, ctx.out_url(case, "floor"))
        _FLOOR_VALUES[key] = np.asarray(convpipe.load(spec).apply(x), dtype=np.float32)
    return _FLOOR_VALUES[key]


def _floor_applies(ctx: Ctx, case: Case) -> str | None:
    if not case.steps or ctx.backend != "cpu":
        return NA
    need = ctx.nvox * (2 + 4 * 3)  # the input and the values held at once, and apply's working copies
    if need > ctx.total_ram / 2:
        return f"needs ~{need / 2**30:.1f} GiB, more than half the RAM ({ctx.total_ram / 2**31:.1f} GiB)"
    return None


@contender("floor", applies=_floor_applies,
           prepare=_floor_values,
           description="the job's I/O floor: zarr reads the input whole, then writes this job's output values "
                       "(computed beforehand, untimed) from memory; time = read + write")
def run_floor(ctx: Ctx, case: Case) -> Outcome:
    """Reading the input plus writing this job's output values from memory, each by zarr's own whole-array
    call (its concurrent chunk I/O and codec threads). The values matter: zstd's speed depends on them
    (float32 copies of uint16 values write ~3x slower than a Sobel magnitude's), so the generic ``io``
    roofline, which writes ``astype(float32)`` of the input, is no job's floor."""
    import zarr

    values = _floor_values(ctx, case)
    url = ctx.out_url(case, "floor")
    t0 = time.perf_counter()
    x = zarr.open_array(ctx.input_url, mode="r")[...]
    read_s = time.perf_counter() - t0
    del x
    out = create_output(ctx, url)
    t0 = time.perf_counter()
    out[...] = values
    write_s = time.perf_counter() - t0
    return Outcome(url, seconds=read_s + write_s, extra={"read_s": read_s, "write_s": write_s})


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
    out = create_output(ctx, url)
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
    out = create_output(ctx, url)
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

