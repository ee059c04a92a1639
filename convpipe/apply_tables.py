"""``Pipeline.apply``: the steps on an in-memory array (:func:`apply_array`); on a chain with table ops, the
image and every table, computed together.

A run writes an op's rows to Parquet part by part (:mod:`convpipe.tables`); ``apply`` writes nothing, so
its tile tasks hand their rows back with their tiles instead (``execute(..., rows=...)``). One
``dask.compute`` of the image and of those rows shares every tile task between the two (the graph is not
optimised, which would rename the shared tasks and run each tile twice). The rows are then assembled as
the run assembles its parts: in tile order, merged by the op's ``merge_rows`` when it has one.

``apply`` without ``tables=True`` refuses a chain whose steps name a table (:func:`refuse_dropped_tables`):
dropping what the spec asked to be written would be a silent loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .axes import AXES_ORDER
from .errors import InputError, SpecError
from .plan import ArrayInfo, Plan, make_plan

__all__ = ["apply_array", "apply_with_tables", "refuse_dropped_tables", "table_ops", "to_frame", "with_table_rows"]


def table_ops(plan: Plan) -> list[Any]:
    """The plan's ops that compute rows (``emits_table``), in chain order."""
    return [op for pp in plan.passes for op in pp.ops if getattr(op, "emits_table", False)]


def refuse_dropped_tables(plan: Plan) -> None:
    """Raise SpecError when a step names a table that a plain ``apply`` (image only) would drop."""
    named = [op for op in table_ops(plan) if getattr(op.params, "table", None)]
    if not named:
        return
    listed = ", ".join(f"{op.step.path if op.step is not None else op.name} (table: {op.params.table})"
                       for op in named)
    first = named[0]
    message = (f"{'this step writes a table' if len(named) == 1 else 'these steps write tables'}: {listed}; "
               "apply() returns only the image: call apply(..., tables=True) for (image, {step: table}), "
               "or run() to write the table")
    if first.step is not None:
        raise first.step.error(message, "table")
    raise SpecError(message, path=first.name)


def with_table_rows(steps: list) -> list:
    """The steps, each table op that names no ``table`` given a stand-in one (``apply(tables=True)``).

    An op plans for its rows only when it has a table (``match_template`` widens its halo by the peaks'
    ``radius``); the stand-in is never opened: ``apply`` writes nothing.
    """
    from .ops import registry
    from .spec import Step

    out = []
    for s in steps:
        if getattr(registry.get(s.name), "emits_table", False) and getattr(s.params, "table", "") is None:
            s = Step(s.name, s.params.model_copy(update={"table": f"<{s.path}>"}), s.index, s.spec)
        out.append(s)
    return out


def _gather(*pairs: Any) -> list:
    return [p[1] for p in pairs]


def _assemble(op: Any, parts: list[tuple[str, dict]]) -> Any:
    """One op's table from its tiles' rows, as :meth:`convpipe.tables.TableSink.finalize` builds it."""
    import pyarrow as pa

    from .tables import rows_table

    tables = [rows_table(cols) for _, cols in sorted(parts, key=lambda p: p[0])]  # a run's part order
    merge = getattr(op, "merge_rows", None)
    if merge is not None:
        return merge(pa.concat_tables(tables) if tables else None)
    with_columns = [t for t in tables if t.num_columns]
    return pa.concat_tables(with_columns) if with_columns else pa.table({})


def to_frame(table: Any) -> Any:
    """A ``pandas.DataFrame`` when pandas is installed, else the ``pyarrow.Table`` itself."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        return table
    return table.to_pandas()


def apply_with_tables(plan: Plan, array: Any, *, device_out: bool = False) -> tuple[Any, dict[str, Any]]:
    """Compute ``plan`` on ``array``: (the image, {step path: table}) for every op that computes rows.

    The image is computed (numpy, or CuPy for CuPy input) in the input's axis order, as
    ``execute(plan, array).compute()`` gives it; each table is a pandas DataFrame when pandas is
    installed, else a ``pyarrow.Table``, with the columns a run's Parquet table has.
    """
    import dask
    from dask.base import tokenize
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    from .channels import follow, with_channel_column
    from .execute import execute
    from .run.prepare import table_name

    # keyed by place in the plan, as a run's table sinks are (no sink: the rows come back instead)
    places = {(pp.index, i): None for pp in plan.passes for i, op in enumerate(pp.ops) if op.emits_table}
    rows: list[tuple[int, Any]] = []
    arr = execute(plan, array, tables=places, rows=rows, device_out=device_out)
    name = f"convpipe-rows-{tokenize(arr.name, [k for _, k in rows])}"
    graph = HighLevelGraph.from_collections(name, {name: (_gather, *[k for _, k in rows])}, dependencies=[arr])
    image, pairs = dask.compute(arr, Delayed(name, graph), optimize_graph=False)
    per_op: dict[tuple[int, int], list] = {}
    for (pass_index, _), (key, cols) in zip(rows, pairs):
        for i, c in cols.items():
            per_op.setdefault((pass_index, i), []).append((key, c))
    labels = follow(plan).op_inputs  # apply's array carries no OME labels: only channels the ops name
    out: dict[str, Any] = {}
    for pp in plan.passes:
        for i, op in enumerate(pp.ops):
            if getattr(op, "emits_table", False):
                table = with_channel_column(_assemble(op, per_op.get((pp.index, i), [])), labels[(pp.index, i)])
                out[table_name(op)] = to_frame(table)
    return image, out


def apply_array(spec: Any, array: Any, axes: str | None = None, *, tile: Any = None, tables: bool = False) -> Any:
    """:meth:`convpipe.api.Pipeline.apply`: ``spec``'s steps on an in-memory or dask array (lazy dask array;
    with ``tables`` the computed image and its tables). The spec's ``input`` and ``output`` are not used."""
    import dask.array as da

    from .execute import execute
    from .run.prepare import bind_input, cluster_resources

    if axes is None:
        axes = AXES_ORDER[-array.ndim:]
    if len(axes) != array.ndim:
        raise InputError(f"axes {axes!r} has {len(axes)} letters but the array has {array.ndim} axes")
    from .backends import meta_on_device, on_device, resolve

    if not isinstance(array, da.Array):
        # name=False: a random name, not a sha1 of the whole array (64 MiB took 66 ms of one thread before any
        # tile could start; the pass's own name still comes from the plan and this name)
        array = da.from_array(array if on_device(array) else np.asarray(array), chunks="auto", name=False)
    device = meta_on_device(array)  # CuPy in (chunks on the device): GPU backend, CuPy out
    info = ArrayInfo(tuple(array.shape), np.dtype(array.dtype), tuple(c[0] for c in array.chunks), axes)
    workers, mem = cluster_resources(spec)
    out = spec.output
    t = tile if tile is not None else (spec.execution.tile if spec.execution.tile != "auto" else None)
    if t is None:
        t = dict(zip(axes, info.chunks))
    elif not isinstance(t, dict) and len(t) == len(axes):
        t = dict(zip(axes, t))  # a list follows the input's axes; axes an op adds (c) stay whole
    steps = with_table_rows(spec.steps) if tables else spec.steps
    plan = make_plan(steps, info, spec=None, out_chunks=t, out_dtype=out.dtype if out else None,
                     tile=t,
                     precision=spec.execution.precision, workers=workers, memory_per_worker=mem,
                     backend="gpu" if device else resolve(spec.execution.backend).name)
    bind_input(plan, array, axes)
    if tables:
        return apply_with_tables(plan, array, device_out=device)
    refuse_dropped_tables(plan)
    return execute(plan, array, device_out=device)
