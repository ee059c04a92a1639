"""Array backends: numpy/scipy on the CPU, CuPy on the GPU. CuPy is imported only when asked for.

A :class:`Backend` is what one tile task needs to run a fused pass in one kind of memory:

``name``                                      ``"cpu"`` or ``"gpu"``
``xp``                                        the array module (numpy, cupy)
``asarray(x)`` / ``to_host(x)``               into this backend's memory (no copy when it is there) / to numpy
``gather(chunks)``                            the input chunks as the block assembly wants them
``output(x, device)``                         a task's result where the caller wants it (host or device)
``meta(ndim, dtype)``                         the empty array dask uses as ``meta``
``task(prog, dtype)``                         context a tile task runs in (GPU: warm-up, device slots)

The kernels are not the backend's: ops call :mod:`convpipe.engines`, which dispatch on the array's type
(``dask.utils.Dispatch``), and numpy functions, which NumPy's ``__array_function__`` / ``__array_ufunc__``
protocols send to CuPy for CuPy arrays. A pass runs on the GPU when the plan's backend is ``gpu`` and every
op of the pass declares a GPU path (``Op.gpu_path``); otherwise that pass runs on the CPU and ``explain``
says why.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .engines import array_module, on_device, to_host  # noqa: F401  (part of this module's interface)
from .errors import BackendError
from .placement import has_gpu_path, pass_backend, pass_backends, placement_notes  # noqa: F401  (this module's too)

BACKENDS = ("cpu", "gpu", "auto")


# --------------------------------------------------------------------------- what is where


def gpu_available() -> bool:
    """True when CuPy is installed and sees a CUDA device. Never imports CuPy when it is not installed."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001  (no driver, no device, broken install: all mean "no GPU here")
        return False


def meta_on_device(darr: Any) -> bool:
    """True for a dask array whose chunks are CuPy arrays (its ``_meta`` says so)."""
    return on_device(getattr(darr, "_meta", None))


def device_name() -> str:
    """A short description of the CUDA device(s) CuPy sees (``""`` when none)."""
    if not gpu_available():
        return ""
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        return f"{name}" + (f" (+{n - 1} more)" if n > 1 else "")
    except Exception:  # noqa: BLE001  # pragma: no cover - a device that cannot describe itself still works
        return "a CUDA device"


class Choice(NamedTuple):
    """The backend a run uses, and why (``explain`` and the run log print ``reason``)."""

    name: str  # "cpu" | "gpu"
    requested: str  # "cpu" | "gpu" | "auto"
    reason: str


def resolve(requested: str = "auto", *, strict: bool = True) -> Choice:
    """Pick the backend for ``execution.backend``.

    ``cpu`` is always the CPU (and never imports CuPy). ``gpu`` needs a usable GPU: without one it raises a
    :class:`BackendError` (with ``strict=False``, for ``explain``, it answers ``gpu`` and says it is missing).
    ``auto`` is the GPU when CuPy sees a device, else the CPU.
    """
    if requested not in BACKENDS:
        raise BackendError(f"backend {requested!r} is not one of {', '.join(BACKENDS)}")
    if requested == "cpu":
        return Choice("cpu", requested, "backend cpu")
    dev = device_name()
    if requested == "gpu":
        if not dev:
            if strict:
                raise BackendError("backend gpu: no usable GPU (CuPy is not installed or sees no CUDA device); "
                                   "use backend: cpu or auto")
            return Choice("gpu", requested, "backend gpu: no usable GPU here, a run would fail")
        return Choice("gpu", requested, f"backend gpu: {dev}")
    if dev:
        return Choice("gpu", requested, f"backend auto chose gpu: CuPy sees {dev}")
    return Choice("cpu", requested, "backend auto chose cpu: no CUDA device (or CuPy) found")


def for_array(x: Any) -> Backend:
    """The backend that owns ``x``'s memory (no availability check: the array already exists)."""
    if on_device(x):
        from .gpu import GPU

        return GPU
    return CPU


def get_backend(name: str = "cpu", *, check: bool = True) -> Backend:
    """The backend object for ``cpu``, ``gpu`` (a :class:`BackendError` without a usable GPU) or ``auto``.

    ``check=False`` skips looking for a device (a tile task whose plan already chose ``gpu``).
    """
    if name == "cpu":
        return CPU
    if not check and name == "gpu":
        from .gpu import GPU

        return GPU
    choice = resolve(name)
    if choice.name == "cpu":
        return CPU
    from .gpu import GPU

    return GPU


# --------------------------------------------------------------------------- the CPU backend


class CPUBackend:
    """Host memory (numpy). Device arrays handed to it are copied to the host."""

    name = "cpu"
    device = False

    def __repr__(self) -> str:
        return "Backend(cpu)"

    def __reduce__(self):  # one instance per process, also after pickling into a worker
        return (get_backend, ("cpu",))

    @property
    def xp(self) -> Any:
        return np

    def asarray(self, x: Any) -> np.ndarray:
        return to_host(x)

    def to_host(self, x: Any) -> np.ndarray:
        return to_host(x)

    def gather(self, chunks: Iterable[Any]) -> list[np.ndarray]:
        return [to_host(c) for c in chunks]

    def output(self, x: Any, device: bool = False) -> Any:
        if device:
            from .gpu import GPU

            return GPU.asarray(x)
        return to_host(x)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def meta(self, ndim: int, dtype: Any) -> np.ndarray:
        return np.empty((0,) * ndim, dtype=dtype)

    def task(self, prog: Any = None, in_dtype: Any = None) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        pass


Backend = CPUBackend  # the interface; convpipe.gpu.GPUBackend implements the same members
CPU = CPUBackend()


# --------------------------------------------------------------------------- placement of passes


def backend_note(choice: Choice, plan: Any) -> str:
    """What ``explain`` adds after the plan's backend: how ``auto`` / ``gpu`` resolved, and the passes of a
    GPU plan that stay on the CPU (empty for an explicit ``cpu``)."""
    parts = [] if choice.requested == "cpu" else [choice.reason.removeprefix("backend ")]
    return "; ".join(parts + placement_notes(plan))


def worker_resources(client: Any) -> list[dict]:
    """The ``resources`` each worker of a distributed client declared (``[]`` for local schedulers)."""
    if client is None:
        return []
    info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else client.scheduler_info()
    return [dict(w.get("resources") or {}) for w in info.get("workers", {}).values()]


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def pass_annotations(plan: Any, resources: Iterable[Mapping[str, Any]] | None = None,
                     gpu_resource: str = "GPU") -> list[dict]:
    """Dask annotations for each pass's tile tasks (use with ``dask.annotate(**ann)`` around ``build_pass``).

    On a *mixed* cluster (some workers declare a ``GPU`` resource, e.g. ``dask worker --resources GPU=1``)
    a GPU pass's tasks must land on those workers: ``{"resources": {"GPU": 1}}``. On a cluster where no
    worker declares it (a CPU cluster, or ``profile:cuda``: one worker per GPU, all equal) nothing is
    annotated: a resource no worker has would leave the tasks waiting forever. CPU passes are never
    restricted. Each GPU task holds one unit, so a worker with ``GPU=1`` runs one GPU tile at a time.
    """
    res = [dict(r) for r in (resources or [])]
    have = any(float(r.get(gpu_resource, 0) or 0) > 0 for r in res)
    out = []
    for where in pass_backends(plan):
        out.append({"resources": {gpu_resource: 1}} if (where == "gpu" and have) else {})
    return out


def warmup(plan: Any, **kw: Any) -> dict:
    """Compile the kernels of ``plan``'s GPU passes once in this process (no-op for CPU plans)."""
    if "gpu" not in pass_backends(plan):
        return {"cases": 0, "compiled": 0, "seconds": 0.0}
    from .gpu import warmup as gpu_warmup

    return gpu_warmup(plan, **kw)
