"""Array backends: numpy/scipy on the CPU, CuPy on the GPU. CuPy is imported only when asked for."""

from __future__ import annotations

import importlib.util


def gpu_available() -> bool:
    """True when CuPy is installed and sees a CUDA device. Never imports CuPy when it is not installed."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device, broken install: all mean "no GPU here"
        return False
