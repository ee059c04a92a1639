"""What the benchmark records about the machine, and how it keeps runs apart (memory handed back)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform

from .. import sysinfo

__all__ = ["cpu_count", "cpu_seconds", "loadavg", "release_memory", "total_ram", "versions"]


def cpu_count() -> int:
    """Cores this process may use: dask's count (CPU affinity and cgroup quotas, e.g. in a container)."""
    return sysinfo.cpu_count()


def total_ram() -> int:
    """Memory this process may use: distributed's limit (RAM, cgroup limit, RLIMIT_RSS, the smallest)."""
    return sysinfo.memory_limit()


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): steadier than wall time on a busy machine."""
    import psutil

    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover
        return None


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "scipy", "dask", "zarr", "dask_image", "convpipe", "cupy"):
        with contextlib.suppress(Exception):
            out[mod] = getattr(__import__(mod), "__version__", "?")
    return out


def release_memory() -> None:
    """Give freed memory back to the OS between contenders, so each one's peak RSS is its own."""
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
