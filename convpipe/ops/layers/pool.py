"""``pool``: max / mean / min / sum over windows of ``size`` every ``stride`` voxels (SPEC.md).

out[i] = reduce(x[i*s : i*s + size]) for i = 0 .. (n - size) // s along each pooled axis; the trailing
remainder is dropped (torch's ceil_mode=False). Output voxel i reads the window [i*s, i*s + size - 1]: halo
(0, size - 1) and stride s for the planner, which gives ``apply`` exactly those windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import engines
from ...params.layers import PoolParams
from ..base import NO_CONTEXT, Context, Op

_NAMES = {"max": "maximum", "min": "minimum", "sum": "add", "mean": "add"}


class Pool(Op):
    name = "pool"
    kind = "local"
    Params = PoolParams
    gpu_path = True  # strided slices and numpy ufuncs, which CuPy implements

    def setup(self) -> None:
        p = self.params
        self.axes = self.resolve_axes(p.axes, size=p.size, stride=p.stride)
        self.size = {a: int(v) for a, v in self.per_axis(p.size, self.axes, "size").items()}
        st = self.size if p.stride is None else self.per_axis(p.stride, self.axes, "stride")
        self.stride = {a: int(v) for a, v in st.items()}

    def boundary(self, axis: str) -> tuple[str, float]:
        return "constant", 0.0  # every window lies inside the array: no boundary is ever read

    def halo(self) -> dict[str, tuple[int, int]]:
        return {a: (0, s - 1) for a, s in self.size.items() if s > 1}

    def strides(self) -> dict[str, int]:
        return {a: s for a, s in self.stride.items() if s != 1}

    def shift_gain(self) -> float:  # max, min, mean: 1; a sum: the window's size
        return float(np.prod(list(self.size.values()))) if self.params.kind == "sum" else 1.0

    def out_length(self, axis: str, n: int) -> int:
        if axis not in self.size:
            return n
        return (n - self.size[axis]) // self.stride[axis] + 1 if n >= self.size[axis] else 0

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The reduction over every window of the block (``size`` every ``stride`` voxels per pooled axis).

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()`` (the windows); the compute dtype
        ctx : Context, unused

        Returns
        -------
        array, ``(length - size) // stride + 1`` voxels along each pooled axis, ``x``'s dtype
        """
        m = engines.array_module(x)
        red = getattr(m, _NAMES[self.params.kind])
        y = x
        # a box reduction is the reduction along each axis in turn (max, min and sums are separable)
        for a in self.axes:
            ax, k, s = self.ax(a), self.size[a], self.stride[a]
            cnt = (y.shape[ax] - k) // s + 1

            def tap(t: int, y=y, ax=ax, s=s, cnt=cnt):
                sl = [slice(None)] * y.ndim
                sl[ax] = slice(t, t + (cnt - 1) * s + 1, s)
                return y[tuple(sl)]

            acc = tap(0).copy() if k > 1 else tap(0)
            for t in range(1, k):
                red(acc, tap(t), out=acc)
            y = acc
        if self.params.kind == "mean":
            y = y * y.dtype.type(1.0 / float(np.prod(list(self.size.values()))))
        return m.ascontiguousarray(y)

    def ax(self, letter: str) -> int:
        return self.in_axes.index(letter)

    def describe(self) -> str:
        size = "x".join(str(self.size[a]) for a in self.axes)
        same = all(self.stride[a] == self.size[a] for a in self.axes)
        st = "" if same else ", stride " + "x".join(str(self.stride[a]) for a in self.axes)
        return f"pool({self.params.kind} {size} over {self.axes}{st})"
