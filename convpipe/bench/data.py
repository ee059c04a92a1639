"""The benchmark's data: the generated input, the sub-volume every output is checked on, its oracle,
and the files (zarr outputs) the contenders write.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .machine import cpu_count
from .registry import INPUT_VERSION, BenchConfig, Case, Ctx

__all__ = ["check_output", "check_region", "describe_output", "disk_usage", "ensure_input", "oracle_on_region",
           "remove", "to_zarr"]


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


def oracle_on_region(ctx: Ctx, case: Case, region: tuple[slice, ...]) -> np.ndarray:
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


def check_output(ctx: Ctx, case: Case, url: str, region: tuple[slice, ...], oracle: np.ndarray) -> dict:
    """The output at ``url`` on ``region`` against ``oracle``: max|Δ|, relative to max(1, max|oracle|), ok."""
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


def describe_output(url: str) -> dict:
    """Dtype, chunks, format and codecs of an output (a fairness audit: all should match)."""
    import zarr

    try:
        a = zarr.open_array(url, mode="r")
        codecs = [type(c).__name__ for c in (getattr(a.metadata, "codecs", None) or [])]
        return {"dtype": str(a.dtype), "chunks": list(a.chunks), "zarr_format": a.metadata.zarr_format,
                "codecs": codecs, "stored_bytes": disk_usage(url)}
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return {"describe_error": f"{type(e).__name__}: {e}"}

def disk_usage(path: str) -> int:
    """Bytes stored under ``path`` (fsspec's ``du``; 0 when nothing is there)."""
    import fsspec

    try:
        return int(fsspec.filesystem("file").du(str(path), total=True))
    except FileNotFoundError:
        return 0


def remove(url: str) -> None:
    p = Path(url)
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


def to_zarr(y: Any, url: str) -> Any:
    """``to_zarr`` the way a user writes it, without dask's two traps for a fair timing.

    - to_zarr into an existing ``zarr.Array`` rechunks to ``chunks="auto"`` first (measured: (16, 512, 512)
      float32 becomes (32, 1024, 1024), four write tasks), so the output is created from the URL;
    - ``mode="w"`` makes to_zarr write every chunk under one global lock, so the old output is removed and
      the default ``mode="a"`` (lock-free) creates it.
    The array is created with the dask chunks (the input's), zarr v3, zarr's default codec.
    """
    import dask.array as da

    remove(url)
    return da.to_zarr(y, url, compute=False, zarr_format=3)


# --------------------------------------------------------------------------- input


def gen_block(block_info: Any = None, seed: int = 0) -> np.ndarray:
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
    x = da.map_blocks(gen_block, dtype=np.uint16, chunks=da.core.normalize_chunks(chunks, shape),
                      seed=config.seed, meta=np.empty((0,) * len(shape), np.uint16))
    d = to_zarr(x, url)
    import dask

    dask.compute(d, scheduler="threads", num_workers=cpu_count())
    z = zarr.open_array(url, mode="r+")
    z.attrs["convpipe_bench_input"] = want  # written last: a half-written input is never reused
    return url, time.perf_counter() - t0, False

