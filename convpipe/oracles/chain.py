"""Chains of references: ``oracle(steps, x, dims)``, and which steps take SPEC.md's FFT tolerance."""

from __future__ import annotations

import builtins
import math
from pathlib import Path

import numpy as np

from .base import OPS, SPECTRAL_OPS, TABLES, default_dims
from .kernels import kernel_array
from .point import POINT_OPS
from .features import bank_kernels

def step_parts(step: dict | str) -> tuple[str, dict]:
    if isinstance(step, str):
        return step, {}
    (name, params), = step.items()
    return name, dict(params or {})

_SOURCE_OPS = ("match_template", "regionprops")  # ops that may read the pipeline's input (crop, intensity)
_FILE_OPS = ("correlate", "convolve", "filter_bank", "stochastic", "match_template", "conv_layer")  # kernel paths

def oracle(steps: list, x: np.ndarray, dims: str | None = None, base_dir: Path | None = None,
           tables: dict | None = None, tile: dict | None = None, source: tuple | None = None
           ) -> tuple[np.ndarray, str]:
    """The chain of references on the whole array (float64 throughout, integer inputs cast first).

    ``tables`` (a dict) receives ``{step index: columns}`` for steps that emit a table; ``tile`` (the run's
    work tile per axis letter) is needed for ``stats`` per tile; ``source`` = (the pipeline's input, its
    dims) for a ``match_template`` crop when ``x`` is only a part of it (default: ``x`` itself).
    """
    dims = dims or default_dims(np.ndim(x))
    source = source or (np.asarray(x), dims)
    u = np.asarray(x)
    if u.dtype.kind not in "biuf":
        raise TypeError(f"cannot compute on {u.dtype}")
    for i, st in enumerate(steps):
        name, params = step_parts(st)
        if name in _FILE_OPS and base_dir is not None:
            params["base_dir"] = base_dir
        if name in _SOURCE_OPS:
            params["source"] = source
        if tables is not None and name in TABLES and params.get("table"):
            tp = dict(params, tile=tile) if name == "stats" else params
            tables[i] = TABLES[name](u, dims, **tp)
        # every op sees float64, except point ops (astype's exact cast) and tables of stored values
        if name not in POINT_OPS and u.dtype != np.float64 and name not in ("peaks", "stats", "blobs"):
            u = u.astype(np.float64)
        u, dims = OPS[name](u, dims, **params)
    return u, dims

def fft_based(name: str, params: dict, base_dir: Path | None = None) -> bool:
    """Whether SPEC.md's FFT tolerance applies to a step: spectral ops, ``method: fft``, or ``auto`` with
    a kernel large enough that convpipe may pick the FFT (from 64 taps)."""
    if name in SPECTRAL_OPS:
        return True
    if name not in ("correlate", "convolve", "filter_bank", "match_template"):
        return False
    m = params.get("method", "auto")
    if m == "fft":
        return True
    if m != "auto":
        return False
    try:
        if name == "filter_bank":
            ks = bank_kernels(params.get("kernels"), params.get("gabor"), base_dir=base_dir)
        elif name == "match_template":
            t = params["template"]
            if isinstance(t, dict) and "crop" in t:
                return math.prod(b - a for a, b in (v for v in t["crop"].values() if isinstance(v, list))) > 121
            ks = [kernel_array(t, base_dir)]
        else:
            ks = [kernel_array(params["kernel"], base_dir)]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return builtins.any(k.size >= (122 if name == "match_template" else 64) for k in ks)

def uses_fft(steps: list, base_dir: Path | None = None) -> bool:
    return builtins.any(fft_based(*step_parts(s), base_dir=base_dir) for s in steps)
