"""The GPU backend: CuPy arrays, cupyx.scipy.ndimage kernels, cupy.fft; warm-up.

Importing this module never imports CuPy: every function imports it when it runs, so a CPU-only machine
can import (and test) everything here that does not touch a device.

Engines. The functions :func:`sep_correlate`, :func:`correlate_nd` and :func:`rank_filter` have the
contract of :mod:`convpipe.engines`: the block was already padded by the halo machinery, so the border mode
of the kernel never matters (``reflect`` is passed) and the caller crops. Weights arrive as host arrays;
they are cast to the block's dtype (as the CPU engines do: OpenCV filters float32 with float32 taps) and
cached on the device. cupyx.scipy.ndimage accumulates in float32 for float32 input, like OpenCV.

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
a persistent on-disk cache (:func:`set_kernel_cache_dir`), so the next worker process loads instead of
compiling. Tile tasks call :meth:`GPUBackend.task`, which warms up first if nobody did; with
``distributed``, :func:`register_warmup` installs a worker plugin that warms every worker (also ones that
join later) before it runs tasks.

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

from .backends import on_device

# --------------------------------------------------------------------------- modules (imported lazily)


def _cp() -> Any:
    import cupy

    return cupy


def _ndi() -> Any:
    import cupyx.scipy.ndimage as ndi

    return ndi


# --------------------------------------------------------------------------- transfers

_COUNT_LOCK = threading.Lock()
_COUNTS = {"h2d": 0, "h2d_bytes": 0, "d2h": 0, "d2h_bytes": 0}
_PINNED_MIN = 1 << 20  # blocks from this size on go through a pinned staging buffer


def transfer_counts() -> dict[str, int]:
    """Host-to-device and device-to-host copies made by :func:`to_device` / :func:`to_host` so far."""
    with _COUNT_LOCK:
        return dict(_COUNTS)


def reset_transfer_counts() -> None:
    with _COUNT_LOCK:
        for k in _COUNTS:
            _COUNTS[k] = 0


def _count(kind: str, nbytes: int) -> None:
    with _COUNT_LOCK:
        _COUNTS[kind] += 1
        _COUNTS[kind + "_bytes"] += int(nbytes)


def _pinned_enabled() -> bool:
    return os.environ.get("CONVPIPE_PINNED", "1") not in ("0", "false", "no", "")


_PINNED_LOCK = threading.Lock()
_PINNED_FREE: list[np.ndarray] = []  # idle pinned staging buffers; at most one per concurrent copy


@contextlib.contextmanager
def _pinned_buffer(nbytes: int):
    """A pinned (page-locked) staging buffer of at least ``nbytes``, borrowed from a small pool (as many
    buffers as copies ever ran at once, each a power of two of at least 1 MiB)."""
    with _PINNED_LOCK:
        fit = [i for i, b in enumerate(_PINNED_FREE) if b.nbytes >= nbytes]
        buf = _PINNED_FREE.pop(min(fit, key=lambda i: _PINNED_FREE[i].nbytes)) if fit else None
    if buf is None:
        import cupyx

        buf = cupyx.empty_pinned((1 << max(20, int(nbytes - 1).bit_length()),), dtype=np.uint8)
    try:
        yield buf
    finally:
        with _PINNED_LOCK:
            _PINNED_FREE.append(buf)
            if len(_PINNED_FREE) > 16:  # keep the largest ones
                _PINNED_FREE.sort(key=lambda b: b.nbytes)
                del _PINNED_FREE[0]


def to_device(x: Any, *, pinned: bool | None = None, count: bool = True) -> Any:
    """``x`` on the current device: one host-to-device copy (none when it already is a CuPy array)."""
    if on_device(x):
        return x
    cp = _cp()
    x = np.asarray(x)
    if count:
        _count("h2d", x.nbytes)
    if pinned is None:
        pinned = _pinned_enabled() and x.nbytes >= _PINNED_MIN
    if not pinned or x.size == 0:
        return cp.asarray(x)
    out = cp.empty(x.shape, dtype=x.dtype)
    with _pinned_buffer(x.nbytes) as buf:
        staged = buf[: x.nbytes].view(x.dtype).reshape(x.shape)
        np.copyto(staged, x)  # also makes a strided host view contiguous
        out.set(staged)  # asynchronous on the current stream ...
        cp.cuda.get_current_stream().synchronize()  # ... and the buffer goes back to the pool
    return out


def to_host(x: Any, *, count: bool = True) -> np.ndarray:
    """``x`` as a numpy array: one device-to-host copy for a CuPy array."""
    if not on_device(x):
        return np.asarray(x)
    if count:
        _count("d2h", x.nbytes)
    return x.get()


_WEIGHTS: dict = {}
_WEIGHTS_LOCK = threading.Lock()


def _dev_const(w: Any, dtype: Any) -> Any:
    """A small host constant (kernel taps) as a device array of ``dtype``, cached per device."""
    cp = _cp()
    w = np.ascontiguousarray(np.asarray(w), dtype=np.dtype(dtype))
    key = (cp.cuda.runtime.getDevice(), w.dtype.str, w.shape, w.tobytes())
    d = _WEIGHTS.get(key)
    if d is None:
        d = cp.asarray(w)
        cp.cuda.get_current_stream().synchronize()  # usable from any thread's stream from now on
        with _WEIGHTS_LOCK:
            if len(_WEIGHTS) > 512:
                _WEIGHTS.clear()
            _WEIGHTS[key] = d
    return d


# --------------------------------------------------------------------------- engines


def sep_correlate(x: Any, weights: dict[int, tuple[np.ndarray, int]], *,
                  fill: tuple[dict[int, np.ndarray], float] | None = None,
                  order: list[int] | None = None) -> Any:
    """Separable correlation of a device block: one ``correlate1d`` per axis (``weights[axis] = (w, center)``).

    ``fill`` and ``order`` as in :func:`convpipe.engines.sep_correlate`: before each pass but the first, the
    voxels outside the array along that pass's axis (a host boolean mask) are reset to cval, as scipy's
    ``constant`` mode pads every pass's input.
    """
    if not weights:
        return x
    ndi = _ndi()
    out = x
    for k, a in enumerate(order or sorted(weights)):
        if a not in weights:
            continue
        if fill is not None:
            outside, cval = fill
            mask = outside.get(a)
            if k > 0 and mask is not None and np.any(mask):
                out = out.copy() if out is x else out
                sl = [slice(None)] * out.ndim
                sl[a] = mask  # a host mask: CuPy copies it over
                out[tuple(sl)] = cval
        w, c = weights[a]
        w = np.asarray(w)
        origin = int(c) - len(w) // 2
        out = ndi.correlate1d(out, _dev_const(w, x.dtype), axis=int(a), output=x.dtype, mode="reflect",
                              origin=origin)
    return out


def correlate_nd(x: Any, k: np.ndarray, centers: tuple[int, ...], axes: tuple[int, ...]) -> Any:
    """Direct correlation with ``k`` over ``axes`` (cupyx.scipy.ndimage.correlate)."""
    k = np.asarray(k)
    shape = [1] * x.ndim
    origins = [0] * x.ndim
    for a, s, c in zip(axes, k.shape, centers):
        shape[a] = s
        origins[a] = int(c) - s // 2
    kk = _dev_const(k.reshape(shape), x.dtype)
    return _ndi().correlate(x, kk, output=x.dtype, mode="reflect", origin=origins)


def rank_filter(x: Any, kind: str, sizes: dict[int, int]) -> Any:
    """median / minimum / maximum over a box (centred as scipy); min/max as exact 1-D passes."""
    ndi = _ndi()
    if kind in ("minimum", "maximum"):
        f = ndi.minimum_filter1d if kind == "minimum" else ndi.maximum_filter1d
        out = x
        for a, s in sorted(sizes.items()):
            if s > 1:
                out = f(out, int(s), axis=int(a), mode="reflect")
        return out
    if kind != "median":
        raise ValueError(f"unknown rank filter {kind!r}")
    size = [int(sizes.get(a, 1)) for a in range(x.ndim)]
    return ndi.median_filter(x, size=size, mode="reflect")


def fftconvolve(x: Any, k: Any, mode: str = "full", axes: Any = None) -> Any:
    """cupyx.scipy.signal.fftconvolve with a host (or device) kernel."""
    from cupyx.scipy.signal import fftconvolve as fc

    kd = k if on_device(k) else _dev_const(k, np.asarray(k).dtype)
    return fc(to_device(x), kd, mode=mode, axes=axes)


class _FFT:
    """scipy.fft's functions on the device (cupyx.scipy.fft); ``workers=`` is accepted and ignored."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        import cupyx.scipy.fft as f

        fn = getattr(f, name)
        if not callable(fn):
            return fn

        def call(*args: Any, workers: Any = None, **kw: Any) -> Any:
            return fn(*args, **kw)

        call.__name__ = name
        return call


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
    """CuPy + cupyx.scipy.ndimage + cupy.fft (see :class:`convpipe.backends.CPUBackend` for the interface)."""

    name = "gpu"
    device = True
    fft = _FFT()

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

    def sep_correlate(self, x: Any, weights: dict[int, tuple[np.ndarray, int]], **kw: Any) -> Any:
        return sep_correlate(to_device(x), weights, **kw)

    def correlate_nd(self, x: Any, k: np.ndarray, centers: tuple[int, ...], axes: tuple[int, ...]) -> Any:
        return correlate_nd(to_device(x), k, centers, axes)

    def rank_filter(self, x: Any, kind: str, sizes: dict[int, int]) -> Any:
        return rank_filter(to_device(x), kind, sizes)

    def fftconvolve(self, x: Any, k: Any, mode: str = "full", axes: Any = None) -> Any:
        return fftconvolve(x, k, mode=mode, axes=axes)

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
_WARM_IDS: dict[int, Any] = {}  # id(prog.ops) -> prog.ops, for the per-task fast path
_MAX_WARM_VOXELS = 1 << 22  # a case larger than this (whole axes) is left to the first real tile


def kernel_cache_dir() -> str:
    """Where compiled kernels persist: ``$CONVPIPE_KERNEL_CACHE``, else ``$XDG_CACHE_HOME`` (or ~/.cache)
    ``/convpipe/cupy-kernels``."""
    d = os.environ.get("CONVPIPE_KERNEL_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "convpipe", "cupy-kernels")
    return d


def set_kernel_cache_dir(path: str | os.PathLike | None = None) -> str:
    """Point CuPy's on-disk kernel cache (``CUPY_CACHE_DIR``, read by CuPy at each compile) at a persistent
    folder. A ``CUPY_CACHE_DIR`` the user set wins unless ``path`` is given."""
    if path is None and os.environ.get("CUPY_CACHE_DIR"):
        return os.environ["CUPY_CACHE_DIR"]
    d = str(path) if path is not None else kernel_cache_dir()
    os.makedirs(d, exist_ok=True)
    os.environ["CUPY_CACHE_DIR"] = d
    return d


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
    from .backends import pass_backend

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
        set_kernel_cache_dir()
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
            "cache_dir": os.environ.get("CUPY_CACHE_DIR", "")}


def warmup(plan: Any, *, log: Any = None) -> dict:
    """Compile every kernel ``plan``'s GPU passes need, once per process, before the first task."""
    info = run_warmup(plan_warmup(plan))
    if log is not None and info["compiled"]:
        log(f"gpu warm-up: {info['compiled']} case(s) in {info['seconds']:.2f} s, kernel cache {info['cache_dir']}")
    return info


def ensure_warm(prog: Any, in_dtype: Any) -> None:
    """The per-task check: warm this pass up unless this process already did (cheap after the first)."""
    ops = prog.ops
    if _WARM_IDS.get(id(ops)) is ops:
        return
    cases = pass_warmup_cases(ops, prog.extents, prog.compute, in_dtype, getattr(prog, "out_dtype", prog.compute))
    if any(c.key not in _WARMED for c in cases):
        run_warmup(cases)
    if len(_WARM_IDS) > 256:
        _WARM_IDS.clear()
    _WARM_IDS[id(ops)] = ops


def _forget_warmup() -> None:
    """Tests: make this process cold again (kernels compiled by CuPy stay compiled)."""
    with _WARM_LOCK:
        _WARMED.clear()
        _WARM_IDS.clear()


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
    from .backends import pass_backends

    if "gpu" not in pass_backends(plan):
        return
    if hasattr(client, "register_plugin"):
        client.register_plugin(WarmupPlugin(plan))
    else:  # pragma: no cover - older distributed
        client.register_worker_plugin(WarmupPlugin(plan))

