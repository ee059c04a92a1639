"""The names of a pipeline's ``c`` channels, followed op by op through the plan.

Channels get names where they are made (``filter_bank``: its kernels, ``conv_layer``: its filters,
``sobel`` ``components``: the derivative axes) or from the input's OME ``omero`` labels, and keep them
through every op that leaves ``c`` channel for channel (:meth:`convpipe.ops.base.Op.channel_labels`).
The run writes the output's into its OME ``omero`` block and gives a table whose rows carry ``c`` a
``channel`` column with the name of each row's channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ChannelLabels", "follow", "label_column", "summary", "windows", "with_channel_column"]


@dataclass(frozen=True)
class ChannelLabels:
    """Channel names of a plan: of the output, and of the input each op sees (keyed (pass, op index))."""

    output: list[str] | None
    op_inputs: dict[tuple[int, int], list[str] | None] = field(default_factory=dict)


def follow(plan: Any, input_labels: Sequence[str] | None = None) -> ChannelLabels:
    """Follow the channel names through ``plan``'s passes, starting from the input's (None: unnamed).

    Labels that do not match the input's ``c`` length (or an input without ``c``) are dropped.
    """
    labels = list(input_labels) if input_labels is not None else None
    if labels is not None:
        axes = plan.input.axes
        if "c" not in axes or plan.input.shape[axes.index("c")] != len(labels):
            labels = None
    seen: dict[tuple[int, int], list[str] | None] = {}
    for pp in plan.passes:
        for i, op in enumerate(pp.ops):
            seen[(pp.index, i)] = labels
            labels = op.channel_labels(labels)
    return ChannelLabels(labels, seen)


def summary(labels: Sequence[str], *, at_most: int = 5) -> str:
    """The names on one line (``explain``): ``bank.npy[0..31]`` for one bank file's, else the first few, the
    last and the count."""
    n = len(labels)
    if n > 1 and labels[0].endswith("[0]"):
        stem = labels[0][:-3]
        if list(labels) == [f"{stem}[{i}]" for i in range(n)]:
            return f"{stem}[0..{n - 1}]"
    if n <= at_most:
        return ", ".join(labels)
    return f"{', '.join(labels[:at_most - 1])}, ..., {labels[-1]} ({n} channels)"


def label_column(c: Any, labels: Sequence[str]) -> np.ndarray:
    """The ``channel`` column for a table's ``c`` column: each row's channel name (object array of str)."""
    idx = np.asarray(c, dtype=np.int64)
    names = np.asarray(list(labels), dtype=object)
    if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
        raise ValueError(f"table column 'c' holds {idx.min()}..{idx.max()}, but there are {len(names)} channels")
    return names[idx] if idx.size else np.asarray([], dtype=object)


def with_channel_column(table: Any, labels: Sequence[str] | None) -> Any:
    """``table`` (a ``pyarrow.Table``) with a ``channel`` column of names right after its ``c`` column; the
    table itself when it has no ``c`` column or the channels have no names."""
    import pyarrow as pa

    if labels is None or table is None or "c" not in table.column_names or "channel" in table.column_names:
        return table
    col = pa.array(label_column(table["c"].to_numpy(), labels), type=pa.string())
    return table.add_column(table.column_names.index("c") + 1, "channel", col)


def windows(array: Any, axes: str, *, compute: Any = None) -> list[tuple[float, float]]:
    """Each ``c`` channel's (min, max) over ``array`` (a zarr array with ``axes``), for the omero window.

    Integer and boolean outputs show their dtype's whole range without reading anything; a float output
    is reduced on ``array`` (the smallest pyramid level, so a pyramid makes this cheap). Non-finite values
    are left out; a channel with no finite value gets (0, 0).
    """
    import dask
    import dask.array as da

    dt = np.dtype(array.dtype)
    ci = axes.index("c")
    n = array.shape[ci]
    if dt.kind == "b":
        return [(0.0, 1.0)] * n
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return [(float(info.min), float(info.max))] * n
    x = da.from_zarr(array, inline_array=False)
    others = tuple(i for i in range(x.ndim) if i != ci)
    finite = da.isfinite(x)
    lo = da.where(finite, x, np.inf).min(axis=others)
    hi = da.where(finite, x, -np.inf).max(axis=others)
    lo, hi = (compute or dask.compute)(lo, hi)
    out = []
    for a, b in zip(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64), strict=True):
        out.append((float(a), float(b)) if np.isfinite(a) and np.isfinite(b) else (0.0, 0.0))
    return out
