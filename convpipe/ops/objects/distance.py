"""``distance_transform``: the exact Euclidean distance transform (scipy.ndimage.distance_transform_edt of
``x != 0`` with voxel ``sampling``), tile by tile, by separable passes over whole lines.

The squared distance to the nearest background voxel is separable (Felzenszwalb & Huttenlocher 2012,
"Distance transforms of sampled functions"; Meijster et al. 2000): with f_0 the mask,

    f_1(p) = (s_1 * distance along axis 1 to the nearest background voxel of its line)**2
    f_k(p) = min_q f_{k-1}(p with axis k at q) + (s_k * (p_k - q))**2     (the lower envelope of parabolas)

and the result is sqrt(f_K). Each axis is one op of kind ``full`` along that axis only (:class:`EdtPass`): a
task holds whole lines along it and tiles of any size along the others, and every axis after the first
starts a pass of its own (``new_pass``), so memory is bounded by tiles, never by the sub-array. The first
pass is fused with the ops before it. Lines without a background voxel carry a finite sentinel (larger than
any true squared distance, so no overflow check fires and the envelope stays exact); a voxel of the last
pass still holding it lies in a sub-array with no background at all: an error naming that sub-array.

Values are computed in float64 (squared distances of integer offsets times squared voxel sizes: exact
sums of squares; the envelope only compares them) and cast to the compute dtype between passes (float32
holds integer squared distances exactly up to 2**24, i.e. 4096 voxels; beyond, within float32 rounding).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import ExecutionError, InputError
from ...params.morphology import DistanceParams
from ..base import NO_CONTEXT, Context, Op
from .morphology import object_axes


def _sentinel(extent: dict[str, int], sampling: dict[str, float], axes: str) -> tuple[float, float]:
    """(sentinel for "no background on this line", the bound above which a value means "none at all")."""
    b = sum((float(extent[a]) * sampling[a]) ** 2 for a in axes)
    return 4.0 * b + 4.0, 2.0 * b + 2.0


def first_axis_sq(mask: np.ndarray, s: float, big: float) -> np.ndarray:
    """(s * distance to the nearest background voxel along the last axis)**2 of every line; ``big`` where
    the line has none."""
    n = mask.shape[-1]
    idx = np.arange(n, dtype=np.int64)
    far = np.int64(4 * n + 4)
    bg = ~mask
    left = np.maximum.accumulate(np.where(bg, idx, -far), axis=-1)
    right = np.flip(np.minimum.accumulate(np.flip(np.where(bg, idx, far), axis=-1), axis=-1), axis=-1)
    d = np.minimum(idx - left, right - idx)
    out = (d.astype(np.float64) * s) ** 2
    out[d > n] = big
    return out


def envelope_sq(f: np.ndarray, s: float) -> np.ndarray:
    """min over q of f[..., q] + (s * (p - q))**2 for every p, along the last axis (lower envelope).

    Felzenszwalb & Huttenlocher's algorithm run on all lines at once: the stack of parabolas per line is a
    row of ``v`` (their positions) and ``z`` (where each starts to be lowest); each step pops, for the
    lines that need it only, until the new parabola's intersection lies beyond the top's start.
    """
    lead = f.shape[:-1]
    n = f.shape[-1]
    F = np.ascontiguousarray(f, dtype=np.float64).reshape(-1, n)  # noqa: N806
    L = F.shape[0]  # noqa: N806
    if n == 1 or L == 0:
        return F.reshape(lead + (n,)).copy()
    s2 = float(s) * float(s)
    q = np.arange(n, dtype=np.float64)
    G = F + s2 * q * q  # noqa: N806  (f(q) + (s q)^2: the intersection of parabolas q and r is at
    #                                  (G[q] - G[r]) / (2 s^2 (q - r)))
    v = np.zeros((L, n), dtype=np.int64)
    z = np.empty((L, n + 1), dtype=np.float64)
    z[:, 0] = -np.inf
    z[:, 1] = np.inf
    k = np.zeros(L, dtype=np.int64)
    rows = np.arange(L)
    for j in range(1, n):
        gj = G[:, j]
        act = rows
        while act.size:
            kt = k[act]
            vt = v[act, kt]
            sint = (gj[act] - G[act, vt]) / (2.0 * s2 * (j - vt))
            pop = sint <= z[act, kt]
            act = act[pop]
            k[act] -= 1
        vt = v[rows, k]
        sint = (gj - G[rows, vt]) / (2.0 * s2 * (j - vt))
        k += 1
        v[rows, k] = j
        z[rows, k] = sint
        z[rows, k + 1] = np.inf
    out = np.empty((L, n), dtype=np.float64)
    k[:] = 0
    for p in range(n):
        act = rows
        while act.size:
            adv = z[act, k[act] + 1] < p
            act = act[adv]
            k[act] += 1
        vk = v[rows, k]
        out[:, p] = s2 * (p - vk) ** 2 + F[rows, vk]
    return out.reshape(lead + (n,))


class EdtPass(Op):
    """One axis of the distance transform (internal; ``distance_transform`` expands into one per axis)."""

    kind = "full"
    wants_coords = True
    wants_extent = True

    def __init__(self, params, axes, *, step=None, parent: "DistanceTransform", axis: str, first: bool,
                 last: bool):
        self.parent = parent
        self.axis = axis
        self.first = first
        self.last = last
        self.new_pass = not first  # whole lines along this axis only: a pass of its own
        self.name = "distance_transform"
        super().__init__(params, axes, step=step)

    @property
    def raw_input(self):  # the first pass reads x != 0 of the stored values
        return "exact" if self.first else False

    @property
    def hides_nonfinite(self):  # NaN != 0 is foreground: the distances are finite
        return self.first

    @property
    def sampling_array(self) -> np.ndarray:  # part of the op's token (convpipe.execute.op_token)
        return self.parent.sampling_array

    def full_axes(self) -> str:
        return self.axis

    def bind_voxel_sizes(self, sizes: dict[str, float]) -> None:
        self.parent.bind_voxel_sizes(sizes)

    def out_dtype(self, compute):
        return compute

    def estimate_work(self):
        """Estimate only. The first axis is a few vectorised passes; the others run the lower envelope as a
        Python loop over each line's positions (vectorised across lines): ``envelope``, priced per tile by
        its lines and positions (:func:`convpipe.estimate._envelope_ns`)."""
        return {"point": 3.0} if self.first else {"point": 3.0, "envelope": 1.0}

    def method(self) -> str:
        if self.first:
            return "distance along each line" + (", sqrt" if self.last else "")
        return "lower envelope of parabolas along each line" + (", sqrt" if self.last else "")

    def describe(self) -> str:
        s = self.parent.sampling[self.axis]
        k = self.parent.order.index(self.axis)
        return (f"distance_transform(pass {k + 1}/{len(self.parent.order)}: whole lines along {self.axis}, "
                f"sampling {s:g})")

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """One axis of the transform on blocks whole along it.

        Parameters
        ----------
        x : numpy.ndarray, whole along ``axis``; the first pass: the stored values (read as x != 0), later
            passes: the squared distances so far (compute dtype)
        ctx : Context, with ``coords`` (to name a sub-array without background) and ``extent``

        Returns
        -------
        numpy.ndarray, ``x``'s shape, float64: squared distances; the distances after the last pass
        """
        coords, extent = ctx.coords, ctx.extent
        ax = self.in_axes.index(self.axis)
        s = self.parent.sampling[self.axis]
        big, bound = _sentinel(extent, self.parent.sampling, self.parent.axes)
        moved = np.moveaxis(x, ax, -1)
        if self.first:
            f = first_axis_sq(moved != 0, s, big)
        else:
            f = envelope_sq(moved, s)
        if self.last:
            none = f >= bound
            if none.any():
                raise self._no_background(np.moveaxis(none, -1, ax), coords)
            f = np.sqrt(f)
        return np.moveaxis(f, -1, ax)

    def _no_background(self, none: np.ndarray, coords: dict, error: type = ExecutionError) -> Exception:
        i = np.unravel_index(int(np.argmax(none)), none.shape)
        where = ", ".join(f"{a}={int(coords[a][j])}" for a, j in zip(self.in_axes, i) if a not in self.parent.axes)
        what = f"the sub-array {where}" if where else "the input"
        step = self.step.path if self.step is not None else "distance_transform"
        line = self.step.spec.line_of(("steps", self.step.index, self.step.name)) \
            if self.step is not None and self.step.spec is not None else None
        if line is not None:
            step += f" (line {line})"
        return error(f"{step}: {what} (over axes {self.parent.axes}) holds no background voxel "
                     "(x == 0): its distance transform is undefined")

    def check_source(self, darr: Any, compute: Any) -> None:
        """The first pass reading the stored input: every sub-array over ``axes`` must hold a voxel x == 0,
        checked by one reduction before anything is written (InputError, exit 1; found in a later pass of a
        derived mask instead it is an ExecutionError, exit 2, as SPEC.md says)."""
        if not self.first or darr.ndim != len(self.in_axes):
            return
        import dask

        over = tuple(self.in_axes.index(a) for a in self.parent.axes)
        (has,) = (compute or dask.compute)((darr == 0).any(axis=over))
        has = np.asarray(has)
        if not has.all():
            rest = [a for a in self.in_axes if a not in self.parent.axes]
            none = np.expand_dims(~has, over)  # the sub-arrays' index, over-axes of length 1
            coords = {a: np.arange(none.shape[self.in_axes.index(a)]) for a in rest}
            raise self._no_background(none, coords, InputError)


class DistanceTransform(Op):
    name = "distance_transform"
    kind = "full"
    Params = DistanceParams

    def setup(self):
        p = self.params
        self.axes = object_axes(self, p.axes)
        s = p.sampling
        if isinstance(s, list):
            order = p.axes if p.axes is not None else self.axes
            if len(s) != len(self.axes):
                raise self.error(f"sampling has {len(s)} values but the op acts on {len(self.axes)} axes "
                                 f"({order!r})", "sampling")
            s = dict(zip(order, s))
        if isinstance(s, dict):
            s = self.per_axis(s, self.axes, "sampling")
        self.explicit = s is not None
        self.sampling = {a: float(s[a] if isinstance(s, dict) else s) for a in self.axes} if s is not None \
            else {a: 1.0 for a in self.axes}
        self.sampling_array = np.array([self.sampling[a] for a in self.axes])
        # the last axis first: its pass reads the mask along memory order; then the others, innermost first
        self.order = self.axes[::-1]
        self.sub = [EdtPass(p, self.in_axes, step=self.step, parent=self, axis=a, first=i == 0,
                            last=i == len(self.order) - 1) for i, a in enumerate(self.order)]

    def bind_voxel_sizes(self, sizes: dict[str, float]) -> None:
        """The OME metadata's voxel sizes of the level read: the default ``sampling``."""
        if self.explicit:
            return
        for a in self.axes:
            v = sizes.get(a)
            if v is not None and math.isfinite(v) and v > 0:
                self.sampling[a] = float(v)
        self.sampling_array = np.array([self.sampling[a] for a in self.axes])

    def expand(self):
        return self.sub

    def full_axes(self) -> str:
        return self.axes

    def describe(self) -> str:
        s = ", ".join(f"{a}: {self.sampling[a]:g}" for a in self.axes)
        return f"distance_transform(over {self.axes}, sampling {{{s}}})"

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The passes one after the other on a block whole along every axis of the op.

        Parameters
        ----------
        x : numpy.ndarray, whole along ``axes``; the stored values (read as x != 0)
        ctx : Context, with ``coords`` and ``extent`` (as the passes need them)

        Returns
        -------
        numpy.ndarray, ``x``'s shape, dtype float64: the distances
        """
        for p in self.sub:
            x = p.apply(x, ctx)
        return x
