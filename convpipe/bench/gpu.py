"""GPU vs CPU (``convpipe bench --suite gpu``): end-to-end Zarr → Zarr and device-resident kernel time.

Moved here from ``convpipe.gpu`` so the GPU backend imports nothing of the planner, the spec or the I/O
for a benchmark; this module uses them as any caller would.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BENCH_STEPS", "bench_gpu"]

BENCH_STEPS = ({"gaussian": {"sigma": 2.0}}, {"sobel": {}})


def _bench_input(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], seed: int) -> str:
    import zarr

    want = {"shape": list(shape), "chunks": list(chunks), "seed": seed, "v": 1}
    if path.exists():
        with contextlib.suppress(Exception):  # unreadable: regenerate it
            z = zarr.open_array(str(path), mode="r")
            if dict(z.attrs).get("convpipe_gpu_bench") == want:
                return str(path)
    z = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="uint16", overwrite=True)
    step = chunks[0]
    for z0 in range(0, shape[0], step):
        rng = np.random.default_rng([seed, z0])
        slab = rng.integers(0, 4096, size=(min(step, shape[0] - z0),) + tuple(shape[1:]), dtype=np.uint16)
        z[z0: z0 + slab.shape[0]] = slab
    z.attrs["convpipe_gpu_bench"] = want
    return str(path)


def _whole_block_runner(steps: Sequence[dict], host: np.ndarray, axes: str) -> Any:
    """A function running ``steps`` on the whole of ``host`` as one block with a given backend."""
    from ..plan import ArrayInfo, make_plan
    from ..spec import load_spec
    from ..tiles import backward, run_chain

    spec = load_spec({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": list(steps)})
    info = ArrayInfo(tuple(host.shape), host.dtype, tuple(host.shape), axes)
    plan = make_plan(spec.steps, info, tile=dict(zip(axes, host.shape)), out_chunks=dict(zip(axes, host.shape)),
                     memory_per_worker=1 << 50)

    def run(be: Any, x: Any) -> Any:
        for pp in plan.passes:
            if pp.ops[0].kind == "global":
                raise ValueError("bench_gpu: steps with global ops are not supported in the kernel timing")
            core = {a: ((0, pp.extents[-1][a]),) for a in pp.out_axes}
            targets = backward(pp.ops, core, pp.extents)
            x = run_chain(x, pp.ops, targets, pp.extents, plan.compute_dtype, xp=be.xp)
        be.synchronize()
        return x

    return run


def bench_gpu(shape: tuple[int, ...] = (64, 2048, 2048), chunks: tuple[int, ...] = (16, 512, 512),
              steps: Sequence[dict] | None = None, *, workdir: str | os.PathLike = "bench-gpu", repeat: int = 2,
              backends: Sequence[str] = ("cpu", "gpu"), cluster: str = "threads",
              kernel_shape: tuple[int, ...] | None = None, seed: int = 0, log: Any = None) -> dict:
    """GPU vs CPU: end-to-end Zarr -> Zarr (cold = first run in this process, warm = best of ``repeat``
    later runs) and device-resident kernel time (the whole ``kernel_shape`` block, already in the
    backend's memory, through the fused chain), plus the largest difference of the GPU output from the CPU
    one relative to ``max(1, max|cpu|)``. ``convpipe bench --suite gpu`` runs it.
    """
    import zarr

    import convpipe

    from ..backends import device_name, get_backend
    from ..gpu import transfer_counts

    say = log or (lambda *_: None)
    steps = [dict(s) for s in (steps or BENCH_STEPS)]
    shape, chunks = tuple(int(n) for n in shape), tuple(int(c) for c in chunks)
    axes = "tczyx"[-len(shape):]
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    url = _bench_input(work / ("input-" + "x".join(map(str, shape)) + ".zarr"), shape, chunks, seed)
    nvox = int(np.prod(shape, dtype=np.int64))
    report: dict = {"shape": list(shape), "chunks": list(chunks), "steps": steps, "cluster": cluster,
                    "device": device_name(), "end_to_end": {}, "kernel": {}}
    outs = {}
    for name in backends:
        out = str((work / f"out-{name}.zarr").resolve())
        p = convpipe.load({"convpipe": 1, "name": f"bench-gpu-{name}", "input": {"url": url},
                           "output": {"url": out, "overwrite": True}, "steps": steps,
                           "execution": {"cluster": cluster, "backend": name}})
        before = transfer_counts()
        times, res = [], None
        for _ in range(1 + max(1, repeat)):
            t0 = time.perf_counter()
            res = p.run(overwrite=True)
            times.append(time.perf_counter() - t0)
        after = transfer_counts()
        moved = {k: after[k] - before[k] for k in after}
        row = {"cold_s": times[0], "warm_s": min(times[1:]), "voxels_per_s": nvox / min(times[1:]),
               "tasks": getattr(res, "tasks", None), "transfers": moved}
        if name == "gpu" and moved["h2d"] == 0:
            row["note"] = "no host-to-device copies: the run did not use the device (GPU hooks not wired?)"
        report["end_to_end"][name] = row
        outs[name] = out
        say(f"{name}: cold {times[0]:.2f} s, warm {row['warm_s']:.2f} s")
    if "cpu" in outs and "gpu" in outs:
        a, b = zarr.open_array(outs["cpu"], mode="r"), zarr.open_array(outs["gpu"], mode="r")
        diff = ref = 0.0
        for z0 in range(0, shape[0], chunks[0]):
            ra = np.asarray(a[z0: z0 + chunks[0]], dtype=np.float64)
            rb = np.asarray(b[z0: z0 + chunks[0]], dtype=np.float64)
            diff, ref = max(diff, float(np.max(np.abs(ra - rb)))), max(ref, float(np.max(np.abs(ra))))
        report["max_rel_diff_gpu_vs_cpu"] = diff / max(1.0, ref)
        report["speedup_end_to_end"] = report["end_to_end"]["cpu"]["warm_s"] / report["end_to_end"]["gpu"]["warm_s"]
    ks = tuple(kernel_shape or ((min(shape[0], 16),) + shape[1:]))
    host = np.asarray(zarr.open_array(url, mode="r")[tuple(slice(0, n) for n in ks)])
    run = _whole_block_runner(steps, host, axes)
    for name in backends:
        be = get_backend(name)
        resident = be.asarray(host)  # in the backend's memory before the clock starts
        be.synchronize()
        t0 = time.perf_counter()
        run(be, resident)
        cold = time.perf_counter() - t0
        best = float("inf")
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            run(be, resident)
            best = min(best, time.perf_counter() - t0)
        del resident
        report["kernel"][name] = {"shape": list(ks), "cold_s": cold, "warm_s": best,
                                  "voxels_per_s": float(np.prod(ks)) / best,
                                  "note": "device-resident, no transfers" if be.device else "host, one core"}
        say(f"{name} kernel: {best * 1e3:.1f} ms for {'x'.join(map(str, ks))}")
    if "cpu" in report["kernel"] and "gpu" in report["kernel"]:
        report["speedup_kernel"] = report["kernel"]["cpu"]["warm_s"] / report["kernel"]["gpu"]["warm_s"]
    return report
