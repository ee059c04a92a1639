"""The memory this process may use, as Dask's ``distributed.system.MEMORY_LIMIT`` says, without paying
for ``import distributed``.

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

__all__ = ["memory_limit"]

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
    """``distributed.system.MEMORY_LIMIT``: the least of the machine's memory, the cgroup limit and RLIMIT_RSS."""
    return int(_system_module().MEMORY_LIMIT)
