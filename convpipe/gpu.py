"""The GPU backend: where a GPU pass's tile runs (device memory, bounded concurrency) and its warm-up.

Importing this module never imports CuPy: every function imports it when it runs, so a CPU-only machine
can import (and test) everything here that does not touch a device. The kernels and the host/device copies
are :mod:`convpipe.engines.gpu` (re-exported here: :func:`to_device`, :func:`to_host`,
:func:`transfer_counts`).

One pass, one round trip. A tile task assembles its padded block on the host, moves it to the device once
(:func:`to_device`, through a pinned staging buffer for blocks of 1 MiB or more), runs the whole fused
chain on device arrays (``run_chain(..., xp=cupy)``: ops reach the kernels through ``engines.*``, which
dispatch on the array type, and their numpy calls reach CuPy through ``__array_function__`` /
``__array_ufunc__``), and copies the core back once (:func:`to_host`). :func:`transfer_counts` counts
the copies, which is how the tests check "once each way".

What CuPy does not take (checked against CuPy's sources, and enforced by the test double in
tests/test_backends.py): numpy arrays mixed into ufuncs, including 0-d ones such as
``np.asarray(2.0, dtype=x.dtype)`` (TypeError: use ``x.dtype.type(2.0)``, a numpy scalar, which CuPy
accepts); implicit device-to-host conversion (``np.asarray(cupy_array)``); ``ndarray.flags.writeable``
(CuPy's flags have only c_contiguous / f_contiguous / owndata). It does take numpy integer and boolean
index arrays (``np.take``, ``a[mask] = v``: copied to the device), ``np.clip`` with ``None``,
``np.nan_to_num``, ``np.stack``, ``np.arctan2``, ``np.sqrt(a, out=a)``, ``np.add(a, b, out=a)``.

Warm-up. The first tile on a fresh worker would otherwise pay CuPy's kernel compilation (NVRTC, about
0.1-1 s per kernel) in its own time. :func:`warmup` runs each GPU pass's chain once on tiny blocks of the
right dtype, placed where real tiles are (at the array's first and last edge, whose padding gathers with
``take``, and inside, where blocks are views): CuPy specialises kernels on dtype, ndim, kernel shape,
origin and contiguity, never on the array's size, so the tiny run compiles exactly the kernels the real
tiles use. Warm-ups are serialised by a lock, done once per process per pass, and compiled kernels land in
CuPy's persistent on-disk cache, so the next worker process loads instead of compiling. That folder is
CuPy's own choice (``$CUPY_CACHE_DIR`` or ``~/.cupy/kernel_cache``); ``$CONVPIPE_KERNEL_CACHE`` or
:func:`set_kernel_cache_dir` pass another one to CuPy's compiler, never through ``os.environ``. Tile tasks
call :meth:`GPUBackend.task`, which warms up first if nobody did; with ``distributed``,
:func:`register_warmup` installs a worker plugin that warms every worker (also ones that join later)
before it runs tasks.

The GPU-vs-CPU benchmark lives in :mod:`convpipe.bench.gpu` (``convpipe bench --suite gpu``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .engines import on_device
from .engines.gpu import (_PINNED_FREE, _WEIGHTS, _cp, _dev_const, reset_transfer_counts,  # noqa: F401
                          to_device, to_host, transfer_counts)
from .placement import pass_backend, pass_backends

# --------------------------------------------------------------------------- the backend


_SLOTS: threading.Semaphore | None = None
_SLOTS_LOCK = threading.Lock()


def _slots() -> threading.Semaphore:
    """At most ``CONVPIPE_GPU_TASKS`` (default 4) tiles of one process on the device at once."""
    global _SLOTS
    if _SLOTS is None:
        with _SLOTS_LOCK:
            if _SLOTS is None:
                _SLOTS = threading.BoundedSemaphore(max(1, int(os.environ.get("CONVPIPE_GPU_TASKS", "4"))))
    return _SLOTS


class GPUBackend:
    """Device memory for a GPU pass (see :class:`convpipe.backends.CPUBackend` for the interface)."""

    name = "gpu"
    device = True

    def __repr__(self) -> str:
        return "Backend(gpu)"

    def __reduce__(self):
        return (_gpu_backend, ())

    @property
    def xp(self) -> Any:
        return _cp()

    def asarray(self, x: Any) -> Any:
        return to_device(x)

    def to_host(self, x: Any) -> np.ndarray:
        return to_host(x)

    def gather(self, chunks: Sequence[Any]) -> list[Any]:
        """Input chunks for block assembly: host chunks stay on the host (the assembled block then crosses
        once); device chunks (dask arrays of CuPy chunks) stay on the device."""
        chunks = list(chunks)
        if any(on_device(c) for c in chunks):
            return [to_device(c) for c in chunks]
        return chunks

    def output(self, x: Any, device: bool = False) -> Any:
        return to_device(x) if device else to_host(x)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return _cp().empty(shape, dtype=dtype)

    def meta(self, ndim: int, dtype: Any) -> Any:
        return _cp().empty((0,) * ndim, dtype=dtype)

    @contextlib.contextmanager
    def task(self, prog: Any = None, in_dtype: Any = None):
        """A tile task's device section: warm-up first if this process has not, then a device slot."""
        if prog is not None and in_dtype is not None:
            ensure_warm(prog, in_dtype)
        with _slots():
            yield

    def synchronize(self) -> None:
        _cp().cuda.get_current_stream().synchronize()


def _gpu_backend() -> GPUBackend:
    return GPU


GPU = GPUBackend()


# --------------------------------------------------------------------------- warm-up

_WARM_LOCK = threading.Lock()
_WARMED: set = set()
_WARM_OPS: dict[tuple, None] = {}  # programs (their ops tuples) warmed in this process: the per-task fast path
_MAX_WARM_VOXELS = 1 << 22  # a case larger than this (whole axes) is left to the first real tile


_CACHE_DIR: dict[str, str | None] = {"passed": None}  # the folder this process passed to CuPy, if any


def kernel_cache_dir() -> str:
    """Where CuPy keeps compiled kernels in this process: the folder :func:`set_kernel_cache_dir` passed,
    else CuPy's own choice (``$CUPY_CACHE_DIR``, or ``~/.cupy/kernel_cache``). Both persist across processes."""
    return _CACHE_DIR["passed"] or os.environ.get("CUPY_CACHE_DIR") or os.path.expanduser("~/.cupy/kernel_cache")


def set_kernel_cache_dir(path: str | os.PathLike) -> str:
    """Pass ``path`` to CuPy's compiler as the on-disk kernel cache of this process (created if missing).

    Never through ``os.environ`` (a user's process and its children are not ours to change): CuPy >= 14
    takes a cache backend (``compiler._set_kernel_cache_backend``), older CuPy reads the folder from
    ``compiler.get_cache_dir()`` at each compile. Only an explicit call or ``$CONVPIPE_KERNEL_CACHE`` does
    this; by default CuPy keeps its own folder.
    """
    d = os.path.abspath(os.fspath(path))
    os.makedirs(d, exist_ok=True)
    from cupy.cuda import compiler

    if hasattr(compiler, "_set_kernel_cache_backend"):
        from cupy.cuda._compiler_cache import DiskKernelCacheBackend

        compiler._set_kernel_cache_backend(DiskKernelCacheBackend(d))
    else:
        compiler.get_cache_dir = lambda: d
    _CACHE_DIR["passed"] = d
    return d


def _configured_cache() -> None:
    """``$CONVPIPE_KERNEL_CACHE``, when set, is the folder passed to CuPy (once per process and folder)."""
    want = os.environ.get("CONVPIPE_KERNEL_CACHE")
    if want and os.path.abspath(want) != _CACHE_DIR["passed"]:
        set_kernel_cache_dir(want)


@dataclasses.dataclass(frozen=True)
class WarmCase:
    """One tiny run of a pass's chain: a core of at most 2 voxels per axis at the array's first edge,
    inside, or at its last edge."""

    pass_index: int
    where: str  # "first" | "interior" | "last"
    core: tuple  # ((axis, (start, stop)), ...) over the pass's output axes
    block_shape: tuple[int, ...]  # the padded input block the chain starts from
    in_dtype: np.dtype
    compute: np.dtype
    out_dtype: np.dtype
    key: tuple = dataclasses.field(repr=False)
    targets: tuple = dataclasses.field(repr=False, compare=False)
    ops: tuple = dataclasses.field(repr=False, compare=False)
    extents: tuple = dataclasses.field(repr=False, compare=False)

    @property
    def voxels(self) -> int:
        return int(np.prod(self.block_shape, dtype=np.int64))


def pass_signature(ops: Sequence[Any], extents: Sequence[dict], compute: Any, in_dtype: Any,
                   out_dtype: Any) -> tuple:
    """What decides the kernels a pass compiles (equal signatures compile the same kernels)."""
    return (tuple((op.name, op.describe(), op.in_axes, tuple(sorted(op.halo().items()))) for op in ops),
            tuple(tuple(sorted(e.items())) for e in extents),
            np.dtype(compute).str, np.dtype(in_dtype).str, np.dtype(out_dtype).str)


def pass_warmup_cases(ops: Sequence[Any], extents: Sequence[dict], compute: Any, in_dtype: Any,
                      out_dtype: Any, *, tile: dict[str, int] | None = None, pass_index: int = 0) -> list[WarmCase]:
    """The tiny runs that compile every kernel one pass needs (pure: no device, no data)."""
    from .tiles import backward, runs_len

    ops = tuple(ops)
    extents = tuple(dict(e) for e in extents)
    in_axes = ops[0].in_axes
    out_axes = ops[-1].out_axes
    n_out = extents[-1]
    sig = pass_signature(ops, extents, compute, in_dtype, out_dtype)
    full = set("".join(op.full_axes() for op in ops))
    cases: list[WarmCase] = []
    seen: set = set()
    for where in ("first", "interior", "last"):
        core = {}
        for a in out_axes:
            n = int(n_out[a])
            if a in full or a not in extents[0]:  # whole axes, and axes an op adds (c), are whole
                core[a] = ((0, n),)
                continue
            c = max(1, min(2, n, int((tile or {}).get(a, 2))))
            s = 0 if where == "first" else (n - c if where == "last" else (n - c) // 2)
            core[a] = ((s, s + c),)
        targets = backward(list(ops), core, list(extents))
        frozen = tuple(tuple(sorted(t.items())) for t in targets)
        if frozen in seen:
            continue
        seen.add(frozen)
        shape = tuple(runs_len(targets[0][a]) for a in in_axes)
        cases.append(WarmCase(pass_index, where, tuple((a, core[a][0]) for a in out_axes), shape,
                              np.dtype(in_dtype), np.dtype(compute), np.dtype(out_dtype),
                              key=(sig, where), targets=tuple(targets), ops=ops, extents=extents))
    return cases


def plan_warmup(plan: Any) -> list[WarmCase]:
    """Warm-up cases of every GPU pass of ``plan``, in pass order (pure: testable without a GPU)."""
    cases: list[WarmCase] = []
    in_dtype = plan.input.dtype
    for pp in plan.passes:
        last = pp is plan.passes[-1]
        out_dtype = plan.output.dtype if last else plan.compute_dtype
        if pass_backend(plan, pp) == "gpu":
            cases += pass_warmup_cases(pp.ops, pp.extents, plan.compute_dtype, in_dtype, out_dtype,
                                       tile=pp.tile, pass_index=pp.index)
        in_dtype = plan.compute_dtype
    return cases


def _run_case(case: WarmCase) -> None:
    from .io import cast_output
    from .tiles import run_chain

    cp = _cp()
    block = to_device(np.zeros(case.block_shape, dtype=case.in_dtype), count=False)
    y = run_chain(block, list(case.ops), list(case.targets), list(case.extents), case.compute, xp=cp)
    y = cast_output(y, case.out_dtype)
    to_host(y, count=False)
    cp.cuda.get_current_stream().synchronize()


def run_warmup(cases: Sequence[WarmCase]) -> dict:
    """Run ``cases`` not run before in this process, one at a time (a lock serialises warm-ups)."""
    t0 = time.perf_counter()
    done = skipped = 0
    with _WARM_LOCK:
        _configured_cache()
        for case in cases:
            if case.key in _WARMED:
                continue
            if case.voxels > _MAX_WARM_VOXELS:
                skipped += 1
                continue
            _run_case(case)
            _WARMED.add(case.key)
            done += 1
    return {"cases": len(cases), "compiled": done, "skipped": skipped, "seconds": time.perf_counter() - t0,
            "cache_dir": kernel_cache_dir()}


def warmup(plan: Any, *, log: Any = None) -> dict:
    """Compile every kernel ``plan``'s GPU passes need, once per process, before the first task."""
    info = run_warmup(plan_warmup(plan))
    if log is not None and info["compiled"]:
        log(f"gpu warm-up: {info['compiled']} case(s) in {info['seconds']:.2f} s, kernel cache {info['cache_dir']}")
    return info


def ensure_warm(prog: Any, in_dtype: Any) -> None:
    """The per-task check: warm this pass up unless this process already did (cheap after the first)."""
    ops = tuple(prog.ops)
    if ops in _WARM_OPS:  # ops compare by identity: this very program was checked before
        return
    cases = pass_warmup_cases(ops, prog.extents, prog.compute, in_dtype, getattr(prog, "out_dtype", prog.compute))
    if any(c.key not in _WARMED for c in cases):
        run_warmup(cases)
    if len(_WARM_OPS) > 256:
        _WARM_OPS.clear()
    _WARM_OPS[ops] = None


def _forget_warmup() -> None:
    """Tests: make this process cold again (kernels compiled by CuPy stay compiled)."""
    with _WARM_LOCK:
        _WARMED.clear()
        _WARM_OPS.clear()


try:  # distributed is a dependency, but keep this module importable without it
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover
    _WorkerPlugin = object


class WarmupPlugin(_WorkerPlugin):
    """A distributed worker plugin: warm the plan's GPU passes up on every worker before it runs tasks
    (workers that join later too). The compile runs in a thread, not on the worker's event loop."""

    def __init__(self, plan: Any):
        self.plan = plan
        self.name = "convpipe-gpu-warmup"

    async def setup(self, worker: Any) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, warmup, self.plan)


def register_warmup(client: Any, plan: Any) -> None:
    """Install :class:`WarmupPlugin` on a distributed client (waits until current workers are warm)."""
    if "gpu" not in pass_backends(plan):
        return
    if hasattr(client, "register_plugin"):
        client.register_plugin(WarmupPlugin(plan))
    else:  # pragma: no cover - older distributed
        client.register_worker_plugin(WarmupPlugin(plan))

