"""The memory this process may use, as Dask's ``distributed.system.MEMORY_LIMIT`` says, without paying
for ``import distributed``; and the CPUs, as ``dask.system.CPU_COUNT`` says, without ``import dask``
(on Linux both are computed here as dask and distributed compute them; tests/test_startup_imports.py checks
that they agree).

``distributed/system.py`` needs only psutil, but importing it runs ``distributed/__init__`` (the client,
the scheduler's protocol, tornado: half a second on a busy machine), which ``explain`` and ``cluster
show`` never use. So the module is loaded from distributed's own file, under a private name; if that
fails (a distributed whose ``system`` module needs its package), it is imported the ordinary way.
A leaf module: imports nothing of convpipe.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

__all__ = ["cpu_count", "memory_limit"]

_NAME = "convpipe._distributed_system"


def _system_module() -> Any:
    if "distributed.system" in sys.modules:
        return sys.modules["distributed.system"]
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    try:
        pkg = importlib.util.find_spec("distributed")  # finds the package without importing it
        origin = pkg.submodule_search_locations[0] if pkg and pkg.submodule_search_locations else None
        spec = importlib.util.spec_from_file_location(_NAME, f"{origin}/system.py") if origin else None
        if spec is None or spec.loader is None:
            raise ImportError("distributed/system.py not found")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        int(mod.MEMORY_LIMIT)
    except Exception:  # noqa: BLE001 - any surprise: the ordinary import, which says what is wrong
        import distributed.system as mod
    sys.modules[_NAME] = mod
    return mod


def memory_limit() -> int:
    """``distributed.system.MEMORY_LIMIT``: the least of the machine's memory, the cgroup limit and RLIMIT_RSS.

    On Linux computed here as distributed computes it (psutil's ``virtual_memory().total`` is /proc/meminfo's
    MemTotal): loading distributed's module costs psutil and logging, ~15 ms of ``explain``'s start-up.
    Elsewhere, or when /proc/meminfo does not say, distributed's own module."""
    if sys.platform != "linux" or "distributed.system" in sys.modules:
        return int(_system_module().MEMORY_LIMIT)
    try:
        with open("/proc/meminfo") as f:
            total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return int(_system_module().MEMORY_LIMIT)
    limit = total
    for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.soft_limit_in_bytes",
                 "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.high", "/sys/fs/cgroup/memory.low"):
        try:
            with open(path) as f:
                cgroups_limit = int(f.read())
            if cgroups_limit > 0:
                limit = min(limit, cgroups_limit)
        except Exception:  # noqa: BLE001 - "max", or no such file: as distributed
            pass
    try:
        import resource

        hard_limit = resource.getrlimit(resource.RLIMIT_RSS)[1]
        if 0 < hard_limit < limit:
            limit = hard_limit
    except (ImportError, OSError):
        pass
    return int(limit)


def _cgroup_cpu_quota() -> tuple[int, int] | tuple[None, None]:
    """(quota, period) of this process's cgroup CPU limit (v1, then v2), as dask.system reads it."""
    for dirname in ("cpuacct,cpu", "cpu,cpuacct"):
        try:
            with open(f"/sys/fs/cgroup/{dirname}/cpu.cfs_quota_us") as f:
                quota = int(f.read())
            with open(f"/sys/fs/cgroup/{dirname}/cpu.cfs_period_us") as f:
                period = int(f.read())
            return quota, period
        except Exception:  # noqa: BLE001 - no such cgroup file: the next place
            pass
    try:
        with open("/proc/self/cgroup") as f:
            group_path = f.read().strip().split(":")[-1]
        if not group_path.endswith("/"):
            group_path = f"{group_path}/"
        with open(f"/sys/fs/cgroup{group_path}cpu.max") as f:
            quota, period = map(int, f.read().split(" "))
            return quota, period
    except Exception:  # noqa: BLE001 - "max" (no limit) or no cgroup v2
        pass
    return None, None


def cpu_count() -> int:
    """``dask.system.CPU_COUNT``: the CPUs this process may use (affinity, psutil's affinity, the cgroup quota
    rounded up), computed as dask computes it; importing ``dask.system`` imports dask (~0.15 s), which
    ``explain`` does not otherwise need. dask's own figure when dask is already loaded."""
    if "dask.system" in sys.modules:
        return int(sys.modules["dask.system"].CPU_COUNT)
    import math
    import os

    if sys.version_info >= (3, 13):
        count = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count() or 1
    if not (sys.platform == "linux" and hasattr(os, "sched_getaffinity")):  # on Linux psutil's is the one above
        try:
            import psutil
        except ImportError:
            psutil = None
        if psutil is not None:
            proc = psutil.Process()
            if hasattr(proc, "cpu_affinity"):
                affinity = proc.cpu_affinity()
                if affinity:
                    count = min(count, len(affinity))
    if sys.platform == "linux":
        quota, period = _cgroup_cpu_quota()
        if quota is not None and period is not None:
            cgroups = math.ceil(quota / period)
            if cgroups > 0:
                count = min(count, cgroups)
    return int(count or 1)
