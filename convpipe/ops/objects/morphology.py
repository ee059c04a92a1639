"""Binary and grey morphology (scipy.ndimage.binary_* / grey_* / white_tophat / black_tophat) in the halo engine.

Every op is a chain of single erosions and dilations (:class:`Stage`), one op each, so the tiling machinery
pads each stage's input at the whole array's edges as scipy pads it there:

- binary ops: scipy's ``border_value=0``: outside the array the mask is 0 for *every* erosion and dilation
  (an iterated dilation never sees the voxels it grew outside the array; closing's erosion erodes from the
  edge), which is the machinery's ``constant`` boundary with cval 0 at every stage. ``iterations: n`` is n
  stages (halo n x radius); opening is erosions then dilations, closing dilations then erosions (halos add).
- grey opening / closing: scipy applies ``mode`` to the input of each of its two filters; two stages do too.
- white / black tophat subtract the input from (or from) its opening / closing, so they are one op with both
  halos; the intermediate is padded again at the array's edges by ``mode`` inside the op
  (:meth:`Tophat.apply`: positions outside the array take the value of the position ``mode`` maps them to,
  which lies inside the block; ``wrap`` needs nothing, the padded block being periodic already).

A stage computes on the padded block with OpenCV (``cv2.erode`` / ``cv2.dilate``: 2-D over the last two axes,
finite uint8 / float32 / float64 blocks; exact, these are comparisons) or scipy.ndimage, and crops the halo.
Dilation uses the footprint reflected through its centre, as scipy does (and, for even sizes, scipy's
shifted origin), so the halo of a dilation is the erosion's mirrored.

Non-finite input (grey ops): a window holding a NaN gives NaN (SPEC.md's rule; scipy's running extrema
have none); binary ops read ``x != 0``, so NaN is foreground as in scipy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi

from ... import engines, limits
from ...kernels import kernel_from_source
from ...params.morphology import BinaryParams, GreyParams
from ...tiles import map_index
from ..base import NO_CONTEXT, Context
from ..local.base import LocalOp

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

SPATIAL = "zyx"


def object_axes(op: Any, axes: str | None) -> str:
    """SPEC.md's object ops: explicit ``axes``, else every spatial axis (z, y, x) of the input."""
    if axes is not None:
        return op.resolve_axes(axes)
    on = "".join(a for a in op.in_axes if a in SPATIAL)
    if not on:
        raise op.error(f"the input axes {op.in_axes!r} have no spatial axis (z, y, x): name the axes", "axes")
    return on


def _base_dir(op: Any):
    return op.step.spec.base_dir if (op.step is not None and op.step.spec is not None) else None


def _footprint(op: Any, src: Any, axes: str) -> np.ndarray:
    try:
        k = kernel_from_source(src, _base_dir(op))
    except ValueError as e:
        raise op.error(str(e), "footprint") from None
    if k.ndim == 1 and len(axes) > 1:
        raise op.error(f"a 1-D footprint needs 1 axis, but the op acts on {axes!r}", "footprint")
    if k.ndim != len(axes):
        raise op.error(f"a {k.ndim}-D footprint needs {k.ndim} axes, but the op acts on {axes!r}", "footprint")
    s = k != 0
    if not s.any():
        raise op.error("the footprint has no nonzero element", "footprint")
    return s


def binary_structure(op: Any, p: BinaryParams, axes: str) -> np.ndarray:
    if p.footprint is not None:
        return _footprint(op, p.footprint, axes)
    c = 1 if p.connectivity is None else p.connectivity
    if c > len(axes):
        raise op.error(f"connectivity {c} is beyond the number of axes ({len(axes)}: {axes!r})", "connectivity")
    return ndi.generate_binary_structure(len(axes), c)


def grey_structure(op: Any, p: GreyParams, axes: str) -> tuple[np.ndarray, bool]:
    """(footprint over ``axes``, whether it is a full box given by ``size``)."""
    if p.footprint is not None:
        return _footprint(op, p.footprint, axes), False
    size = op.per_axis(p.size, axes, "size")
    return np.ones(tuple(int(size[a]) for a in axes), dtype=bool), True


def stage_halo(shape: tuple[int, ...], axes: str, kind: str) -> dict[str, tuple[int, int]]:
    """Reach of one erosion (scipy's centre k // 2) or dilation (mirrored) along each axis."""
    h = {}
    for a, k in zip(axes, shape):
        c = k // 2
        h[a] = (c, k - 1 - c) if kind == "erosion" else (k - 1 - c, c)
    return h


def _add_halos(*hs: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for h in hs:
        for a, (lo, hi) in h.items():
            plo, phi = out.get(a, (0, 0))
            out[a] = (plo + lo, phi + hi)
    return out


def _full(s: np.ndarray, ndim: int, positions: list[int]) -> np.ndarray:
    """The footprint over the op's axes as an ``ndim``-D footprint (size 1 along the other axes)."""
    shape = [1] * ndim
    for i, k in zip(positions, s.shape):
        shape[i] = k
    return s.reshape(shape)


def _cv_plane_ok(x: np.ndarray, positions: list[int]) -> bool:
    """OpenCV's 2-D erode/dilate applies: the footprint lies over the block's last two axes (or the last)."""
    nd = x.ndim
    return (cv2 is not None and nd >= 2 and set(positions) <= {nd - 2, nd - 1}
            and x.dtype in (np.uint8, np.float32, np.float64) and x.strides[-1] == x.itemsize
            and x.shape[-1] > 0 and x.shape[-2] > 0)


def _cv_morph(x: np.ndarray, s2: np.ndarray, kind: str) -> np.ndarray:
    """cv2.erode / cv2.dilate of every plane with the 2-D footprint ``s2`` placed as scipy places it.

    cv2: erode(p) = min over the kernel of x[p + q - anchor], dilate(p) = max of x[p + q - anchor]; scipy's
    dilation reflects the footprint, so cv2.dilate gets the reflected footprint with the reflected anchor.
    """
    ky, kx = s2.shape
    if kind == "erosion":
        k = np.ascontiguousarray(s2, dtype=np.uint8)
        anchor = (kx // 2, ky // 2)
        fn = cv2.erode
    else:
        k = np.ascontiguousarray(s2[::-1, ::-1], dtype=np.uint8)
        anchor = (kx - 1 - kx // 2, ky - 1 - ky // 2)
        fn = cv2.dilate
    src = x if x.flags.c_contiguous else np.ascontiguousarray(x)
    out = np.empty_like(src)
    lead = src.shape[:-2]
    for idx in np.ndindex(*lead):
        fn(src[idx], k, dst=out[idx], anchor=anchor, iterations=1, borderType=cv2.BORDER_REPLICATE)
    return out


def morph(x: np.ndarray, s: np.ndarray, positions: list[int], kind: str, binary: bool, box: bool = False
          ) -> np.ndarray:
    """One erosion / dilation of the whole block ``x`` with footprint ``s`` over the block axes ``positions``.

    Values are exact where the footprint lies inside the block (the caller crops the rest). ``binary``: ``x``
    is a 0/1 uint8 mask and so is the result.
    """
    if s.ndim == 2 and _cv_plane_ok(x, positions) and (binary or engines.all_finite(x)):
        # the footprint's two axes in the block's order are (y, x) of the plane; one axis: a 1 x k or k x 1
        s2 = s if positions == [x.ndim - 2, x.ndim - 1] else s.T
        return _cv_morph(x, s2, kind)
    if s.ndim == 1 and _cv_plane_ok(x, positions) and (binary or engines.all_finite(x)):
        s2 = s[None, :] if positions[0] == x.ndim - 1 else s[:, None]
        return _cv_morph(x, s2, kind)
    fp = _full(s, x.ndim, positions)
    if binary:
        f = ndi.binary_erosion if kind == "erosion" else ndi.binary_dilation
        return f(x != 0, structure=fp, border_value=0).view(np.uint8)
    if x.dtype.kind == "f" and not engines.all_finite(x):
        nan = np.isnan(x)
        if nan.any():
            y = _grey(np.where(nan, x.dtype.type(0), x), fp, kind, box)
            # a window holding a NaN is NaN: the maximum of the NaN mask over the same window
            spread = _grey(nan.view(np.uint8), fp, "window_max" if kind == "erosion" else "dilation", box)
            return np.where(spread.astype(bool), x.dtype.type(np.nan), y)
    return _grey(x, fp, kind, box)


def _grey(x: np.ndarray, fp: np.ndarray, kind: str, box: bool) -> np.ndarray:
    if kind == "erosion":
        return ndi.grey_erosion(x, footprint=fp, mode="reflect")
    if kind == "dilation":
        return ndi.grey_dilation(x, footprint=fp, mode="reflect")
    # "window_max": the maximum over the erosion's own window (grey_erosion's centring, not reflected)
    return ndi.maximum_filter(x, footprint=fp, mode="reflect")


class Stage(LocalOp):
    """One erosion or dilation (internal: every morphology op expands into these)."""

    gpu_path = False  # OpenCV and scipy.ndimage only

    def __init__(self, params, axes, *, step=None, name: str, kind: str, binary: bool, over: str,
                 structure: np.ndarray, box: bool = False):
        self.name = name
        self.kind_ = kind
        self.binary = binary
        self.axes = over
        self.structure = structure
        self.box = box
        super().__init__(params, axes, step=step)

    @property
    def raw_input(self):  # a mask reads the stored values (x != 0 of a float64 1e-50 is 1, not its float32 0)
        return "exact" if self.binary else False

    @property
    def hides_nonfinite(self):  # NaN != 0 is foreground: a binary result is finite whatever its input
        return self.binary

    def boundary(self, axis):
        if self.binary:
            return "constant", 0.0  # scipy's border_value=0 at every stage
        return self.params.mode, float(self.params.cval)

    def halo(self):
        return stage_halo(self.structure.shape, self.axes, self.kind_)

    def out_dtype(self, compute):
        return np.dtype(np.uint8) if self.binary else compute

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """One erosion or dilation of the padded block, cropped.

        Parameters
        ----------
        x : numpy.ndarray, padded by ``halo()``; binary: the stored values (read as x != 0), grey: the compute
            dtype
        ctx : Context, unused

        Returns
        -------
        numpy.ndarray, ``x``'s shape less the halo; binary uint8 0/1, grey ``x``'s dtype
        """
        if self.binary and x.dtype != np.uint8:
            x = (x != 0).view(np.uint8)
        y = morph(x, self.structure, [self.ax(a) for a in self.axes], self.kind_, self.binary, self.box)
        return self.crop(y)

    def method(self):
        return "opencv/scipy " + self.kind_

    def describe(self):
        fp = "x".join(map(str, self.structure.shape))
        return f"{self.name}({fp} footprint over {self.axes})"


class _MorphOp(LocalOp):
    """A registered morphology op: its stages, in order (``expand``), their halos added."""

    gpu_path = False  # OpenCV and scipy.ndimage only

    binary = True
    stages: tuple[str, ...] = ()  # erosion / dilation, each ``iterations`` times for binary ops

    def setup(self):
        p = self.params
        size = getattr(p, "size", None)
        if p.axes is None and isinstance(size, dict):  # a per-axis size names the axes (SPEC.md's axes rule)
            self.axes = self.resolve_axes(None, size=size)
        else:
            self.axes = object_axes(self, p.axes)
        if self.binary:
            self.structure, box = binary_structure(self, p, self.axes), False
            reps = p.iterations
        else:
            self.structure, box = grey_structure(self, p, self.axes)
            reps = 1
        limits.radius_ok(max(max(k for k in self.structure.shape) * reps * len(self.stages), 1),
                         f"{self.name} with iterations {reps}")
        self.sub = [Stage(p, self.in_axes, step=self.step, name=f"{'binary' if self.binary else 'grey'}_{k}",
                          kind=k, binary=self.binary, over=self.axes, structure=self.structure, box=box)
                    for k in self.stages for _ in range(reps)]

    def expand(self):
        return self.sub

    def halo(self):
        return _add_halos(*(s.halo() for s in self.sub))

    def out_dtype(self, compute):
        return np.dtype(np.uint8) if self.binary else compute

    def boundary(self, axis):
        return self.sub[0].boundary(axis)

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The stages one after the other on one padded block (the planner runs them as ops of their own).

        Parameters
        ----------
        x : numpy.ndarray, padded by ``halo()`` (the stages' halos added); dtype as :meth:`Stage.apply`
        ctx : Context, unused

        Returns
        -------
        numpy.ndarray, ``x``'s shape less the halo; binary uint8 0/1, grey ``x``'s dtype
        """
        for st in self.sub:
            x = st.apply(x, ctx)
        return x


class BinaryErosion(_MorphOp):
    name = "binary_erosion"
    Params = BinaryParams
    stages = ("erosion",)


class BinaryDilation(_MorphOp):
    name = "binary_dilation"
    Params = BinaryParams
    stages = ("dilation",)


class BinaryOpening(_MorphOp):
    name = "binary_opening"
    Params = BinaryParams
    stages = ("erosion", "dilation")


class BinaryClosing(_MorphOp):
    name = "binary_closing"
    Params = BinaryParams
    stages = ("dilation", "erosion")


class _GreyOp(_MorphOp):
    binary = False
    Params = GreyParams


class GreyErosion(_GreyOp):
    name = "grey_erosion"
    stages = ("erosion",)


class GreyDilation(_GreyOp):
    name = "grey_dilation"
    stages = ("dilation",)


class GreyOpening(_GreyOp):
    name = "grey_opening"
    stages = ("erosion", "dilation")


class GreyClosing(_GreyOp):
    name = "grey_closing"
    stages = ("dilation", "erosion")


class _Tophat(_GreyOp):
    """x - opening(x) (white) or closing(x) - x (black): one op, both stages inside (see the module)."""

    wants_coords = True
    wants_extent = True

    def expand(self):
        return [self]

    def halo(self):
        """The stages' halos added, each side wide enough that the positions ``mode`` maps the second stage's
        outside reads to (near the array's edge) have a valid first-stage value in the block, even for a tile
        one voxel wide and a footprint of even size."""
        h1, h2 = self.sub[0].halo(), self.sub[1].halo()
        return {a: (h1[a][0] + max(h2[a]), h1[a][1] + max(h2[a])) for a in h1}

    def method(self):
        return "opencv/scipy " + " then ".join(self.stages) + ", subtract"

    def describe(self):
        fp = "x".join(map(str, self.structure.shape))
        return f"{self.name}({fp} footprint over {self.axes}, mode {self.params.mode})"

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """Both stages on the padded block, the intermediate padded again by ``mode``, then the difference.

        Parameters
        ----------
        x : numpy.ndarray, padded by ``halo()``; the compute dtype
        ctx : Context, with ``coords`` and ``extent`` (where the array's edges are)

        Returns
        -------
        numpy.ndarray, ``x``'s shape less the halo, ``x``'s dtype
        """
        coords, extent = ctx.coords, ctx.extent
        first, second = self.sub
        positions = [self.ax(a) for a in self.axes]
        e = morph(x, self.structure, positions, first.kind_, False, first.box)
        e = self._repad(e, first.halo(), coords, extent)
        y = morph(e, self.structure, positions, second.kind_, False, second.box)
        y = self.crop(y)
        core = self.crop(x)
        return core - y if self.stages[0] == "erosion" else y - core

    def _repad(self, e: np.ndarray, h1: dict, coords: dict, extent: dict) -> np.ndarray:
        """The first stage's result, its positions outside the array set as ``mode`` pads there (scipy pads the
        second filter's input, the intermediate, not the original input)."""
        mode, cval = self.params.mode, float(self.params.cval)
        if mode == "wrap":
            return e
        total = self.halo()
        for a in self.axes:
            ax = self.ax(a)
            lo, hi = total[a]
            c = np.asarray(coords[a], dtype=np.int64)
            g = np.concatenate([np.arange(c[0] - lo, c[0]), c, np.arange(c[-1] + 1, c[-1] + 1 + hi)])
            n = int(extent[a])
            out_idx = np.nonzero((g < 0) | (g >= n))[0]
            if not out_idx.size:
                continue
            e = e if e.flags.writeable and e.base is None else e.copy()
            sl = [slice(None)] * e.ndim
            if mode == "constant":
                sl[ax] = out_idx
                e[tuple(sl)] = e.dtype.type(cval)
                continue
            # indices whose first-stage value is valid: its whole window lies in one contiguous run of g
            l1, r1 = h1[a]
            brk = np.diff(g) != 1
            run = np.concatenate([[0], np.cumsum(brk)])
            starts = np.concatenate([[0], np.nonzero(brk)[0] + 1])
            ends = np.concatenate([np.nonzero(brk)[0], [g.size - 1]])
            idx = np.arange(g.size)
            ok = (idx - starts[run] >= l1) & (ends[run] - idx >= r1) & (g >= 0) & (g < n)
            want = map_index(g[out_idx], n, mode)
            cand = np.nonzero(ok)[0]
            if not cand.size:
                continue
            order = np.argsort(g[cand], kind="stable")
            sorted_g = g[cand][order]
            pos = np.minimum(np.searchsorted(sorted_g, want), cand.size - 1)
            found = sorted_g[pos] == want
            # positions whose source is not in the block lie beyond the second stage's reach of the core
            sl[ax] = out_idx[found]
            sl_src = [slice(None)] * e.ndim
            sl_src[ax] = cand[order][pos[found]]
            e[tuple(sl)] = e[tuple(sl_src)]
        return e


class WhiteTophat(_Tophat):
    name = "white_tophat"
    stages = ("erosion", "dilation")


class BlackTophat(_Tophat):
    name = "black_tophat"
    stages = ("dilation", "erosion")
