"""What a run, ``explain`` and ``apply`` share before any data is read: the input's metadata and the plan.

Split from :mod:`.prepare` (which re-exports these names) so that ``explain`` plans without importing what a
run needs (the output checks, resume, OME writing: zarr, dask); issue 17 asks that ``explain`` start within
twice the time of ``import numpy, yaml, pydantic``. ``open_spec_input(spec, metadata_only=True)`` reads a
local input's metadata documents without zarr (:mod:`convpipe.ome.meta`), as ``explain`` reads no data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..cluster import resources
from ..errors import InputError, SpecError
from ..io import open_input
from ..plan import ArrayInfo, Plan, make_plan, parse_bytes
from ..spec import Spec

__all__ = ["array_info", "bind_voxel_sizes", "cluster_resources", "open_spec_input", "plan_for"]


def cluster_resources(spec: Spec) -> tuple[int, int]:
    """(workers, memory per worker) the plan is sized for: the cluster's, or ``execution.memory_limit``."""
    _, workers, mem = resources(spec.execution.cluster, parse_bytes(spec.execution.memory_limit))
    return workers, mem


def plan_for(spec: Spec, info: ArrayInfo, backend: str, ome: dict | None = None) -> Plan:
    """The spec's plan on an input described by ``info`` (``ome``: its OME metadata, for ops that take
    defaults from it)."""
    workers, mem = cluster_resources(spec)
    out = spec.output
    plan = make_plan(spec.steps, info, spec=spec, out_chunks=out.chunks if out else None,
                     out_dtype=out.dtype if out else None, tile=spec.execution.tile,
                     precision=spec.execution.precision, workers=workers, memory_per_worker=mem,
                     cluster=spec.execution.cluster, backend=backend)
    bind_voxel_sizes(plan, ome, spec.input.level)
    return plan


def bind_voxel_sizes(plan: Plan, ome: dict | None, level: int | None) -> None:
    """Ops whose defaults come from the input's OME metadata (distance_transform's sampling: the voxel sizes
    of the level read) get them here; metadata only, so explain does this too."""
    info = ome.get("info") if ome else None
    if info is None or not info.axes:
        return
    try:
        scale = info.levels[int(level or 0)].scale
    except (IndexError, TypeError, ValueError):
        return
    sizes = dict(zip(info.axes, (float(v) for v in scale)))
    for pp in plan.passes:
        for op in pp.ops:
            op.bind_voxel_sizes(sizes)


def open_spec_input(spec: Spec, *, metadata_only: bool = False) -> tuple[str, Any, str, dict]:
    """(resolved url, array, axes, OME metadata) of the spec's input; an InputError names ``input.url``.

    ``metadata_only``: the array may be a :class:`convpipe.ome.meta.ArrayMeta` (shape, dtype, chunks; no data)
    when the input's metadata could be read without zarr (see :func:`convpipe.io.open_input`).
    """
    i = spec.input
    if i is None:  # a spec loaded for Pipeline.apply (convpipe.load accepts one without an input)
        raise SpecError("the spec names no input: give run(input=URL) / explain(input=URL), --input, or an "
                        "'input: URL' in the spec (only apply() works without one)", path="input")
    url = spec.resolve(i.url)
    try:
        arr, axes, ome = open_input(url, level=i.level, axes=i.axes, storage_options=i.storage_options,
                                    metadata_only=metadata_only)
    except InputError as e:
        line = spec.line_of(("input", "url"))
        rel = "" if url == i.url else f" (relative paths resolve against the spec's folder, {spec.base_dir})"
        raise InputError(f"input.url{f' (line {line})' if line else ''}: {e}{rel}") from None
    return url, arr, axes, ome


def array_info(arr: Any, axes: str) -> ArrayInfo:
    return ArrayInfo(tuple(arr.shape), np.dtype(arr.dtype), tuple(arr.chunks), axes)
