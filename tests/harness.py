"""Running pipelines against the oracles of :mod:`convpipe.oracles` (the helpers the conformance tests share).

``run(steps, x, dims, ...)`` runs a pipeline through ``convpipe.load(...).apply``; ``check`` compares it with
``convpipe.oracles.oracle`` under the contract's tolerance. The oracle is always the whole-array reference
of SPEC.md (for an input not in tczyx order: transposed to canonical order, reference, transposed back),
never an earlier output of convpipe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convpipe.oracles import assert_conforms, default_dims, oracle, step_parts, undefined_orientation, uses_fft


def make_spec(steps: list[dict], precision: str = "float64", **extra: Any) -> dict:
    spec = {"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
            "execution": {"precision": precision}}
    for k, v in extra.items():
        if k in ("input", "output", "execution") and isinstance(v, dict):
            spec.setdefault(k, {}).update(v)
        else:
            spec[k] = v
    return spec


def run(steps: list[dict], x: np.ndarray, dims: str | None = None, chunks: Any = None, tile: Any = None,
        precision: str = "float64") -> np.ndarray:
    """``convpipe.load(spec).apply(dask array with `chunks`, dims, tile=tile).compute()``."""
    import dask.array as da

    import convpipe

    dims = dims or default_dims(np.ndim(x))
    arr = da.from_array(x, chunks=chunks if chunks is not None else x.shape)
    p = convpipe.load(make_spec(steps, precision))
    return np.asarray(p.apply(arr, axes=dims, tile=tile).compute())


def is_orientation(steps: list[dict]) -> bool:
    name, p = step_parts(steps[-1])
    return name in ("sobel", "prewitt", "scharr") and p.get("output") == "orientation"


def check(steps: list[dict], x: np.ndarray, dims: str | None = None, chunks: Any = None, tile: Any = None,
          precision: str = "float64", circular: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``steps`` and compare with the oracle; returns (out, ref). An orientation is compared modulo 2 pi
    (pi and -pi on the branch cut), except where its gradient is within rounding of 0 (its direction is
    noise there); where the gradient is exactly 0 it must be 0."""
    dims = dims or default_dims(np.ndim(x))
    out = run(steps, x, dims, chunks, tile, precision)
    ref, _ = oracle(steps, x, dims)
    circular = is_orientation(steps) if circular is None else circular
    ignore = undefined_orientation(steps, x, dims) if circular else None
    assert_conforms(out, ref, precision, fft=uses_fft(steps),
                    what=f"{steps} on {dims}{tuple(np.shape(x))} chunks={chunks} tile={tile}", circular=circular,
                    ignore=ignore)
    return out, ref


def same_data(a: Any, b: Any) -> bool:
    """Equal as parsed spec data: the same keys in the same order, the same types, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same_data(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
