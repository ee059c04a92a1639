"""Where a padded block lies in the whole array, for the feature ops that must know where it ends."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..base import Op

BIG = 1 << 60

class AxisFrame:
    """Where a padded block's indices lie in the whole array along one axis.

    ``pos``: global position of every block index (shifted by an unknown constant when no coordinates were
    given and the lower edge is not in view); ``segments``: block index ranges of contiguous positions
    (several when the engine concatenated several runs); ``n``: the array's extent when its upper edge is in
    view, else None.
    """

    def __init__(self, x: np.ndarray, ax: int, lo: int, hi: int, coords: np.ndarray | None):
        L = x.shape[ax]
        if coords is not None and len(coords) == L - lo - hi and len(coords):
            c = np.asarray(coords, dtype=np.int64)
            pos = np.concatenate([np.arange(c[0] - lo, c[0]), c, np.arange(c[-1] + 1, c[-1] + 1 + hi)])
            cuts = np.nonzero(np.diff(pos) != 1)[0] + 1
            bounds = [0, *cuts.tolist(), L]
            self.segments = list(itertools.pairwise(bounds))
        else:  # no coordinates: one segment; the lower edge from leading NaN hyperplanes
            k = _nan_run(x, ax, range(min(lo, L)))
            pos = np.arange(L, dtype=np.int64) - k if k else np.arange(L, dtype=np.int64) + BIG // 4
            self.segments = [(0, L)]
        self.pos = pos
        self.n = None
        for i0, i1 in self.segments:
            k = _nan_run(x, ax, range(i1 - 1, max(i1 - 1 - hi, i0 - 1), -1))
            if k:
                self.n = int(pos[i1 - k])
                break

    def inside(self, i0: int, i1: int) -> np.ndarray:
        p = self.pos[i0:i1]
        return (p >= 0) & (p < (self.n if self.n is not None else BIG))


def _nan_run(x: np.ndarray, ax: int, order) -> int:
    """How many hyperplanes (in ``order``) along ``ax`` are entirely NaN, counting until the first that is not."""
    k = 0
    if x.dtype.kind != "f":
        return 0
    for i in order:
        plane = np.take(x, i, axis=ax)
        if plane.size and np.isnan(plane).all():
            k += 1
        else:
            break
    return k


def frames(op: Op, x: np.ndarray, axes: str, lo: int, hi: int, coords: dict | None) -> dict[int, AxisFrame]:
    return {op.in_axes.index(a): AxisFrame(x, op.in_axes.index(a), lo, hi, (coords or {}).get(a))
            for a in axes}


def real_mask(L: int, lo: int, hi: int, coords: np.ndarray | None) -> np.ndarray | None:
    """Which indices of an op's output (length ``L - lo - hi``) are real voxels along one axis.

    When the engine gathers several runs into one block, the output indices where one run's padded piece meets
    the next hold garbage (their windows mix two pieces) and may carry coordinate labels that fall inside the
    tile's core. None: every index is real (one run).
    """
    if coords is None or len(coords) != L - lo - hi or not len(coords):
        return None
    c = np.asarray(coords, dtype=np.int64)
    pos = np.concatenate([np.arange(c[0] - lo, c[0]), c, np.arange(c[-1] + 1, c[-1] + 1 + hi)])
    cuts = np.nonzero(np.diff(pos) != 1)[0] + 1
    if not cuts.size:
        return None
    bounds = [0, *cuts.tolist(), L]
    m = np.zeros(L - lo - hi, dtype=bool)
    for i0, i1 in itertools.pairwise(bounds):
        m[i0: max(i0, i1 - lo - hi)] = True
    return m


def keep_real(hit: np.ndarray, op: Op, halo: dict[str, tuple[int, int]], x_shape, coords: dict | None) -> None:
    """Clear ``hit`` (shaped like the op's output) at garbage indices between runs, in place."""
    for a, (lo, hi) in halo.items():
        ax = op.in_axes.index(a)
        m = real_mask(x_shape[ax], lo, hi, (coords or {}).get(a))
        if m is not None:
            shape = [1] * hit.ndim
            shape[ax] = -1
            hit &= m.reshape(shape)


def empty_table(columns: dict[str, Any]):
    import pyarrow as pa

    return pa.table({k: np.zeros(0, dtype=v) for k, v in columns.items()})


def true_runs(m: np.ndarray) -> list[tuple[int, int]]:
    if not m.any():
        return []
    d = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist()))
