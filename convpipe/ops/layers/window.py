"""Output extents and strides of kernel ops: the window each output voxel reads (SPEC.md, "Convolutional layers").

Along an axis with kernel length k, output voxel i (before striding) reads the input window
[i - lo, i + hi] with (lo, hi) = the kernel's (centre, k - 1 - centre) for ``same``, (0, k - 1) for
``valid`` (the kernel wholly inside the array) and (k - 1, 0) for ``full`` (the input extended by k - 1 on
each side by the op's mode). With stride s, output voxel j is position j*s of that result: it reads
[j*s - lo, j*s + hi]. The planner (convpipe.tiles) maps every output tile to exactly those windows; the op's
``apply`` receives the gathered block and returns the valid strided result.
"""

from __future__ import annotations

from typing import Any


def extent_halo(kshape: tuple[int, ...], centers: tuple[int, ...], extent: str) -> list[tuple[int, int]]:
    """(lo, hi) per kernel axis for ``extent``."""
    if extent == "valid":
        return [(0, k - 1) for k in kshape]
    if extent == "full":
        return [(k - 1, 0) for k in kshape]
    return [(c, k - 1 - c) for k, c in zip(kshape, centers)]


def extent_length(n: int, k: int, extent: str, stride: int) -> int:
    """Output length along an axis of length ``n`` (<= 0: no voxel)."""
    length = n - k + 1 if extent == "valid" else n + k - 1 if extent == "full" else n
    return (length - 1) // stride + 1 if length > 0 else length


class Windowed:
    """Mixin for kernel ops with ``extent`` and ``stride``.

    The op sets ``self.axes`` and calls :meth:`set_window` with the kernel's shape (in the order of
    ``self.axes``) and centres; ``halo``, ``strides`` and ``out_length`` follow. ``kernel_halo`` is the
    kernel's own (centre-based) padding, which the engines' ``same`` results are cropped by.
    """

    def set_window(self, kshape: tuple[int, ...], centers: tuple[int, ...], extent: str, stride: Any) -> None:
        for a in (stride if isinstance(stride, dict) else {}):
            if a not in self.axes:
                raise self.error(f"stride names axis {a!r}, not one of the op's axes {self.axes!r}", "stride")
        self.extent = extent
        self.kshape = {a: int(k) for a, k in zip(self.axes, kshape)}
        self.stride = {a: int(stride.get(a, 1) if isinstance(stride, dict) else stride) for a in self.axes}
        self.window_halo = dict(zip(self.axes, extent_halo(tuple(kshape), tuple(centers), extent)))
        self.kernel_halo = {a: (c, k - 1 - c) for a, k, c in zip(self.axes, kshape, centers)}

    def halo(self) -> dict[str, tuple[int, int]]:
        return dict(self.window_halo)

    def strides(self) -> dict[str, int]:
        return {a: s for a, s in self.stride.items() if s != 1}

    def out_length(self, axis: str, n: int) -> int:
        if axis in self.kshape:
            return extent_length(n, self.kshape[axis], self.extent, self.stride[axis])
        return n

    def crop_valid(self, y: Any, axes_index: Any) -> Any:
        """The valid part of an engine's ``same``-shaped result, cropped by the kernel's own halo."""
        sl = [slice(None)] * y.ndim
        for a, (lo, hi) in self.kernel_halo.items():
            i = axes_index(a)
            sl[i] = slice(lo, y.shape[i] - hi)
        return y[tuple(sl)]

    def subsample(self, y: Any, axes_index: Any) -> Any:
        """Positions 0, s, 2s, ... along each strided axis (a contiguous copy when anything is dropped)."""
        st = self.strides()
        if not st:
            return y
        sl = [slice(None)] * y.ndim
        for a, s in st.items():
            sl[axes_index(a)] = slice(None, None, s)
        from ... import engines

        return engines.array_module(y).ascontiguousarray(y[tuple(sl)])

    def window_note(self) -> str:
        """``, valid, stride 2`` for describe (nothing for the defaults)."""
        parts = [] if self.extent == "same" else [self.extent]
        st = self.strides()
        if st:
            vals = set(st.values())
            parts.append(f"stride {vals.pop()}" if len(vals) == 1 and len(st) == len(self.axes)
                         else "stride " + ",".join(f"{a}={s}" for a, s in st.items()))
        return "".join(", " + p for p in parts)

