"""Feature ops: tables of detections and statistics (Parquet), filter banks.

Tables hold one column per axis in global voxel coordinates plus the named values. A tile reports only
the rows in its core, so nothing is lost or doubled at tile borders (see ``tiles._owned_rows``); ops whose
rows combine across tiles (whole-plane statistics, blob pruning) define ``merge_rows``, which the table sink
calls once on all the tiles' rows at the end of a run.

Where the whole array's edges are
---------------------------------
``blobs`` and ``match_template`` must know where the whole array ends inside a padded block (skimage pads
its LoG by ``reflect`` but takes local maxima with ``nearest``; template matching pads with zeros but its
peaks use ``nearest``). They ask the engine for global coordinates (``wants_coords``) and pad with
``constant`` NaN: positions before the array are known from the coordinates, positions after it are the
trailing all-NaN hyperplanes of the halo. (An input with a whole NaN row/plane right before the array's end
is therefore not supported by these two ops; the oracle is NaN there anyway.)
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import Any, Literal

import numpy as np
import scipy.ndimage as ndi
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .. import engines
from ..errors import SpecError
from .. import limits
from ..kernels import _gabor, kernel_from_source, kernel_or_none, normalize
from ..tiles import map_index
from .local import orientation
from .base import AxesParam, Mode, Op, OpParams, insert_axis
from .layers.params import ExtentParams
from .ncc import ncc
from .ncc import window_max as _window_max
from .registry import register

_BIG = 1 << 60
_TLS = threading.local()  # apply() -> rows() hand-over within one tile task (same thread, same block)


def _stash(op: Op, x: np.ndarray, value: Any) -> None:
    _TLS.item = (id(op), id(x), value)


def _unstash(op: Op, x: np.ndarray) -> Any:
    item = getattr(_TLS, "item", None)
    if item is not None and item[0] == id(op) and item[1] == id(x):
        _TLS.item = None
        return item[2]
    return None


class _AxisFrame:
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
            pos = np.arange(L, dtype=np.int64) - k if k else np.arange(L, dtype=np.int64) + _BIG // 4
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
        return (p >= 0) & (p < (self.n if self.n is not None else _BIG))


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


def _frames(op: Op, x: np.ndarray, axes: str, lo: int, hi: int, coords: dict | None) -> dict[int, _AxisFrame]:
    return {op.in_axes.index(a): _AxisFrame(x, op.in_axes.index(a), lo, hi, (coords or {}).get(a))
            for a in axes}


def _real_mask(L: int, lo: int, hi: int, coords: np.ndarray | None) -> np.ndarray | None:
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


def _keep_real(hit: np.ndarray, op: Op, halo: dict[str, tuple[int, int]], x_shape, coords: dict | None) -> None:
    """Clear ``hit`` (shaped like the op's output) at garbage indices between runs, in place."""
    for a, (lo, hi) in halo.items():
        ax = op.in_axes.index(a)
        m = _real_mask(x_shape[ax], lo, hi, (coords or {}).get(a))
        if m is not None:
            shape = [1] * hit.ndim
            shape[ax] = -1
            hit &= m.reshape(shape)


def _empty_table(columns: dict[str, Any]):
    import pyarrow as pa

    return pa.table({k: np.zeros(0, dtype=v) for k, v in columns.items()})


# =========================================================================== peaks


class PeaksParams(OpParams, AxesParam):
    radius: int = Field(ge=0, le=limits.MAX_HALO)
    threshold: float = 0.0
    axes: str | None = None
    table: str | None = None

    _t = field_validator("table")(lambda v: _table_ok(v))


def _table_ok(v: str | None) -> str | None:
    if v is not None and (not v.strip() or "\x00" in v):
        raise ValueError("a table location is a non-empty path or URL")
    return v


@register
class Peaks(Op):
    """Local maxima: value == maximum_filter(size=2*radius+1 over axes, mode nearest) and value > threshold.

    Plateaus count: every voxel of a flat maximum is a peak, exactly as the oracle. The image passes through.
    """

    name = "peaks"
    kind = "local"
    Params = PeaksParams
    raw_input = True  # compare the stored values: float32 rounding would merge distinct values into plateaus
    emits_table = True
    wants_coords = True  # to tell real voxels from the seams between runs (see _real_mask)
    summary = "local maxima (plateaus included) above a threshold -> table"

    def setup(self):
        self.axes = self.resolve_axes(self.params.axes)

    def halo(self):
        r = self.params.radius
        return {a: (r, r) for a in self.axes}

    def boundary(self, axis):
        return "nearest", 0.0

    def _crop(self, x):
        sl = [slice(None)] * x.ndim
        r = self.params.radius
        for a in self.axes:
            i = self.in_axes.index(a)
            sl[i] = slice(r, x.shape[i] - r)
        return x[tuple(sl)]

    def apply(self, x, xp=np, coords=None):
        _stash(self, x, coords)
        return self._crop(x)

    def rows(self, x, y, context=None):
        coords = _unstash(self, x)
        if coords is None and context is not None:
            coords = context.get("coords")
        size = 2 * self.params.radius + 1
        mx = self._crop(engines.rank_filter(x, "maximum", {self.in_axes.index(a): size for a in self.axes}))
        hit = (y == mx) & (y > self.params.threshold)
        _keep_real(hit, self, self.halo(), x.shape, coords)
        idx = np.nonzero(hit)
        cols = {a: idx[i] for i, a in enumerate(self.in_axes)}
        cols["value"] = y[hit].astype(np.float64)
        return cols

    def method(self):
        return "maximum filter"


# =========================================================================== filter_bank


class GaborBank(OpParams):
    orientations: int | list[float] = 4
    frequencies: float | list[float] = Field(default=[0.1, 0.2])
    sigma: float | None = Field(None, gt=0)
    radius: int | None = Field(None, ge=0)
    offset: float = 0.0

    @field_validator("orientations")
    @classmethod
    def _orient(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("orientations must be >= 1 (a count) or a list of angles in radians")
        if isinstance(v, list) and not v:
            raise ValueError("orientations is an empty list")
        return v

    @field_validator("frequencies")
    @classmethod
    def _freq(cls, v):
        vals = v if isinstance(v, list) else [v]
        if not vals or any(not (f > 0) or not math.isfinite(f) for f in vals):
            raise ValueError("frequencies must be positive numbers (cycles per voxel)")
        return v

    def thetas(self) -> list[float]:
        if isinstance(self.orientations, int):
            return [k * math.pi / self.orientations for k in range(self.orientations)]
        return [float(t) for t in self.orientations]

    def freqs(self) -> list[float]:
        return [float(f) for f in (self.frequencies if isinstance(self.frequencies, list) else [self.frequencies])]

    @model_validator(mode="after")
    def _sizes_ok(self):
        n_orient = self.orientations if isinstance(self.orientations, int) else len(self.orientations)
        limits.channels_ok(float(n_orient) * len(self.freqs()), "gabor (orientations x frequencies)")
        for f in self.freqs():
            sigma = float(self.sigma) if self.sigma is not None else 0.56 / f
            rad = float(self.radius) if self.radius is not None else 3 * sigma
            limits.taps_ok((2 * rad + 1, 2 * rad + 1), f"the gabor kernel of frequency {f:g}")
        return self

    def kernels(self) -> list[np.ndarray]:
        """Frequency-major: channel ``i_f * len(thetas) + i_theta``."""
        return [_gabor(frequency=f, theta=t, sigma=self.sigma, radius=self.radius, offset=self.offset)
                for f in self.freqs() for t in self.thetas()]


class FilterBankParams(OpParams, AxesParam, ExtentParams):
    kernels: list[Any] | str | None = Field(None, description="kernel sources: nested lists, .npy paths, named "
                                            "kernels; or one .npy of shape (N, *kernel)")
    gabor: GaborBank | None = None
    axes: str | None = None
    mode: Mode = "reflect"
    cval: float = 0.0
    normalize: Literal["none", "sum", "l1", "softmax"] = "none"
    temperature: float = 1.0
    method: Literal["auto", "direct", "separable", "fft"] = "auto"

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo):
        if (self.kernels is None) == (self.gabor is None):
            raise ValueError("give either kernels (a list of kernels) or gabor: {orientations, frequencies, sigma}")
        if isinstance(self.kernels, str):  # one .npy holding the bank (convpipe.bind reads it)
            k = kernel_or_none(self.kernels)
            if k is not None:
                if k.ndim < 2:
                    raise ValueError(f"kernels: a bank file holds (N, *kernel), got shape {tuple(k.shape)}")
                limits.channels_ok(k.shape[0], "kernels")
                for i in range(k.shape[0]):
                    normalize(k[i], self.normalize, self.temperature)
        elif self.kernels is not None:
            if not self.kernels:
                raise ValueError("kernels is an empty list")
            limits.channels_ok(len(self.kernels), "kernels")
            for i, src in enumerate(self.kernels):
                try:
                    k = kernel_or_none(src)  # a .npy path is read by convpipe.bind, not here
                    if k is not None:
                        normalize(k, self.normalize, self.temperature)
                except ValueError as e:
                    raise ValueError(f"kernels[{i}]: {e}") from None
        return self


@register
class FilterBank(Op):
    """One output channel per kernel: ``scipy.ndimage.correlate`` of the input with each (same mode/cval).

    Halo = the largest kernel's extent per axis; each kernel runs on its own crop of the padded block, so a
    small kernel never pays for the largest one. Adds a ``c`` axis (kernel index).
    """

    name = "filter_bank"
    kind = "local"
    Params = FilterBankParams
    linear = True
    summary = "bank of kernels (list or gabor orientations x frequencies), one c channel each, by correlate"

    def setup(self):
        from .local import Correlate, KernelParams

        p = self.params
        if "c" in self.in_axes:
            raise self.error("filter_bank adds a 'c' axis, but the input already has one")
        base = self.step.spec.base_dir if (self.step is not None and self.step.spec is not None) else None
        if isinstance(p.kernels, str):  # one .npy of shape (N, *kernel): channel i is kernel i
            bank = kernel_from_source(p.kernels, base)
            ks = [normalize(np.ascontiguousarray(k), p.normalize, p.temperature) for k in bank]
        elif p.kernels is not None:
            ks = [normalize(kernel_from_source(s, base), p.normalize, p.temperature) for s in p.kernels]
        else:
            ks = [normalize(k, p.normalize, p.temperature) for k in p.gabor.kernels()]
        ndims = {k.ndim for k in ks}
        if len(ndims) != 1:
            raise self.error(f"all kernels must have the same number of dimensions, got {sorted(ndims)}", "kernels")
        nd = ndims.pop()
        default = {1: "x", 2: "yx", 3: "zyx"}.get(nd, "yx")
        self.axes = self.resolve_axes(p.axes, default=default)
        if p.extent != "same" and len({k.shape for k in ks}) > 1:
            raise self.error(f"extent {p.extent}: the kernels must all have one shape, got "
                             f"{sorted({'x'.join(map(str, k.shape)) for k in ks})}", "kernels")
        self.subs = []
        for k in ks:
            kp = KernelParams.model_construct(kernel=np.ascontiguousarray(k), axes=self.axes, mode=p.mode,
                                              cval=p.cval, origin=0, normalize="none", temperature=1.0,
                                              method=p.method, extent=p.extent, stride=p.stride)
            try:
                self.subs.append(Correlate(kp, self.in_axes, step=self.step))
            except (SpecError, ValueError) as e:  # a kernel/axes mismatch: name this op's field
                raise self.error(str(getattr(e, "message", e)), "kernels") from None
        self._halo = {}
        for a in self.axes:
            lo = max(s.halo()[a][0] for s in self.subs)
            hi = max(s.halo()[a][1] for s in self.subs)
            self._halo[a] = (lo, hi)

    @property
    def out_axes(self):
        return insert_axis(self.in_axes, "c")

    def out_extent(self, axis, n):
        return len(self.subs)

    def halo(self):
        return dict(self._halo)

    def strides(self):  # every kernel of the bank has the bank's extent and stride
        return self.subs[0].strides()

    def out_length(self, axis, n):
        return self.subs[0].out_length(axis, n) if axis in self.in_axes else n

    def apply(self, x, xp=np):
        outs = []
        for s in self.subs:
            sl = [slice(None)] * x.ndim
            for a, (lo, hi) in s.halo().items():
                i = self.in_axes.index(a)
                H = self._halo[a]
                sl[i] = slice(H[0] - lo, x.shape[i] - (H[1] - hi))
            outs.append(np.asarray(s.apply(x[tuple(sl)], xp), dtype=x.dtype))
        return np.stack(outs, axis=self.out_axes.index("c"))

    def method(self):
        ms = sorted({s.method() for s in self.subs})
        return "/".join(ms)

    def describe(self):
        shapes = ", ".join("x".join(map(str, s.kernel.shape)) for s in self.subs[:4])
        more = f", ... ({len(self.subs)} kernels)" if len(self.subs) > 4 else ""
        return f"filter_bank({shapes}{more} over {self.axes}{self.subs[0].window_note()})"


# =========================================================================== blobs (LoG)


class BlobsParams(OpParams, AxesParam):
    min_sigma: float = Field(1.0, gt=0)
    max_sigma: float = Field(50.0, gt=0)
    num_sigma: int = Field(10, ge=1, le=limits.MAX_CHANNELS)
    threshold: float | None = 0.2
    overlap: float = Field(0.5, ge=0, le=1)
    log_scale: bool = False
    threshold_rel: float | None = Field(None, ge=0)
    exclude_border: bool | int | list[int] = False
    axes: str | None = None
    table: str | None = None

    @field_validator("threshold")
    @classmethod
    def _thr(cls, v):
        if v is None:
            raise ValueError("threshold: null (skimage's 'minimum of the LoG cube') needs a whole-plane "
                             "statistic before detection; give a number (skimage's default is 0.2)")
        if not math.isfinite(v):
            raise ValueError("threshold must be finite")
        return v

    @field_validator("exclude_border")
    @classmethod
    def _eb(cls, v):
        vals = v if isinstance(v, list) else [int(v)]
        if any(int(b) < 0 for b in vals):
            raise ValueError("exclude_border cannot be negative")
        if any(int(b) > limits.MAX_HALO for b in vals):
            raise ValueError(f"exclude_border must be at most {limits.MAX_HALO}")
        return v

    _t = field_validator("table")(lambda v: _table_ok(v))

    @model_validator(mode="after")
    def _halo_ok(self):
        limits.gaussian_ok(max(self.min_sigma, self.max_sigma), 4.0, "max_sigma")
        return self


_BLOB_COLS_PRIVATE = ("_sigma_index", "_value", "_excluded")


@register
class Blobs(Op):
    """``skimage.feature.blob_log`` on every plane over ``axes`` (2-D or 3-D), tile by tile, exactly.

    Tiles find the candidates (local maxima of the scale-normalised LoG cube over a 3x3(x3)x3 neighbourhood,
    above ``threshold``) with a halo of the largest Gaussian's radius + 1, reproducing skimage's float64
    arithmetic bit for bit (``ndi.gaussian_laplace`` with ``reflect`` at the array's edges, ``nearest`` for
    the maximum filter). The overlap pruning is not local (a chain of overlapping blobs can run across the
    whole plane, and skimage's outcome depends on its pair order), so ``merge_rows`` runs skimage's own
    pruning on each plane's candidates, ordered exactly as ``peak_local_max`` orders them: the same KD-tree,
    the same pairs, the same order, the same survivors. Columns: every input axis, ``sigma``.
    """

    name = "blobs"
    rows_context = True  # takes rows(x, y, context={coords, extent, core}) when the engine offers it
    kind = "local"
    raw_input = True  # the LoG in float64 of the stored values, never of their float32 rounding
    Params = BlobsParams
    emits_table = True
    wants_coords = True
    summary = "skimage.feature.blob_log per plane -> table (axes..., sigma)"

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes)
        nd = len(self.axes)
        if nd not in (2, 3):
            raise self.error(f"blobs acts on 2 or 3 axes (a plane or a volume), got {self.axes!r}", "axes")
        eb = p.exclude_border
        if isinstance(eb, list):
            if len(eb) != nd:
                raise self.error(f"exclude_border needs one value per axis of {self.axes!r}", "exclude_border")
            self.eb = [int(b) for b in eb]
        else:
            self.eb = [int(eb)] * nd  # skimage treats True as 1 (it is an int)
        mn = np.full(nd, p.min_sigma, dtype=np.float64)
        mx = np.full(nd, p.max_sigma, dtype=np.float64)
        if p.log_scale:
            self.sigma_list = np.logspace(np.log10(mn), np.log10(mx), p.num_sigma)
        else:
            self.sigma_list = np.linspace(mn, mx, p.num_sigma)
        self._radii = [max(int(4.0 * float(v) + 0.5) for v in s) for s in self.sigma_list]
        self.radius = max(self._radii)
        self.h = max(self.radius + 1, max(self.eb))

    def halo(self):
        return {a: (self.h, self.h) for a in self.axes}

    def boundary(self, axis):
        return "constant", float("nan")  # marks the array's edges; reflect is rebuilt from them

    def _crop(self, x):
        sl = [slice(None)] * x.ndim
        for a in self.axes:
            i = self.in_axes.index(a)
            sl[i] = slice(self.h, x.shape[i] - self.h)
        return x[tuple(sl)]

    def apply(self, x, xp=np, coords=None):
        _stash(self, x, coords)
        return self._crop(x)

    def method(self):
        return "LoG scale space + global pruning"

    def describe(self):
        p = self.params
        return (f"blobs(LoG sigma {p.min_sigma}..{p.max_sigma} x{p.num_sigma}, threshold {p.threshold} "
                f"over {self.axes}, halo {self.h})")

    # ---------------------------------------------------------------- tile: candidates
    def rows(self, x, y, context=None):
        coords = _unstash(self, x)
        if context is not None and coords is None:
            coords = context.get("coords")
        h = self.h
        acted = [self.in_axes.index(a) for a in self.axes]
        frames = _frames(self, x, self.axes, h, h, coords)
        if context is not None and context.get("extent"):
            for ax, a in zip(acted, self.axes):
                frames[ax].n = int(context["extent"][a])
        others = [i for i in range(x.ndim) if i not in acted]
        cols: dict[str, list] = {a: [] for a in self.in_axes}
        for k in ("sigma", *_BLOB_COLS_PRIVATE):
            cols[k] = []
        for combo in itertools.product(*[frames[ax].segments for ax in acted]):
            self._segment(x, acted, others, frames, combo, cols)
        out = {a: (np.concatenate(cols[a]) if cols[a] else np.zeros(0, np.int64)).astype(np.int64)
               for a in self.in_axes}
        out["sigma"] = np.concatenate(cols["sigma"]) if cols["sigma"] else np.zeros(0)
        out["_sigma_index"] = (np.concatenate(cols["_sigma_index"]) if cols["_sigma_index"]
                               else np.zeros(0, np.int64)).astype(np.int64)
        out["_value"] = np.concatenate(cols["_value"]) if cols["_value"] else np.zeros(0)
        out["_excluded"] = (np.concatenate(cols["_excluded"]) if cols["_excluded"] else np.zeros(0, bool)).astype(bool)
        return out

    def _segment(self, x, acted, others, frames, combo, cols):
        h, R = self.h, self.radius
        sl = [slice(None)] * x.ndim
        for ax, (i0, i1) in zip(acted, combo):
            sl[ax] = slice(i0, i1)
        sub = x[tuple(sl)]
        roi, yreg, gpos, edges = [], [], [], []
        whole = True
        for ax, (i0, i1) in zip(acted, combo):
            fr = frames[ax]
            L = i1 - i0
            if L <= 2 * h:
                return
            p = fr.pos[i0:i1]
            ins = fr.inside(i0, i1)
            k = np.nonzero(ins)[0]
            if k.size == 0:
                return
            k0, k1 = int(k[0]), int(k[-1]) + 1
            if not ins.all():  # rebuild scipy's reflect padding from the in-array part
                src = map_index(p, fr.n if fr.n is not None else _BIG, "reflect")
                local = np.clip(src - p[k0] + k0, k0, k1 - 1)
                sub = np.take(sub, local, axis=ax)
            roi.append((max(h - 1, k0, R), min(L - h + 1, k1, L - R)))
            yreg.append((h, L - h))
            gpos.append(p)
            edges.append(fr.n)
            whole = whole and p[k0] == 0 and fr.n is not None and fr.n == p[k1 - 1] + 1
        sub = np.asarray(sub, dtype=np.float64)
        nd = len(acted)
        moved = np.moveaxis(sub, acted, list(range(sub.ndim - nd, sub.ndim)))
        lead_shape = moved.shape[: sub.ndim - nd]
        S = len(self.sigma_list)
        thr = self.params.threshold
        keep_excluded = self.params.threshold_rel is not None
        for lead in np.ndindex(*lead_shape):
            P = np.ascontiguousarray(moved[lead])
            cube = np.empty(tuple(b - a for a, b in roi) + (S,), dtype=np.float64)
            for i, s in enumerate(self.sigma_list):
                # each scale on its own crop (ROI + its radius): the same arithmetic per voxel, less work
                rs = self._radii[i]
                Ps = P[tuple(slice(a - rs, b + rs) for a, b in roi)]
                inner = tuple(slice(rs, rs + b - a) for a, b in roi)
                cube[..., i] = (-ndi.gaussian_laplace(Ps, s) * np.mean(s) ** 2)[inner]
            if cube.size == 1:  # skimage: a one-voxel cube is a peak when above the threshold
                hit = cube > thr
            else:
                mx = _window_max(cube, 3)
                hit = cube == mx
                if whole and hit.all():  # skimage: a constant cube has no peaks (decidable: plane in view)
                    continue
                hit &= cube > thr
            # keep the tile's own region (y) only; the ring around it was for the maximum filter
            ysl = tuple(slice(max(ya - ra, 0), yb - ra) for (ya, yb), (ra, rb) in zip(yreg, roi))
            hit_y = np.zeros_like(hit)
            hit_y[ysl] = hit[ysl]
            idx = np.nonzero(hit_y)
            if not idx[0].size:
                continue
            excl = np.zeros(idx[0].size, dtype=bool)
            for d in range(nd):
                xi = idx[d] + roi[d][0]  # segment-local block index
                g = gpos[d][xi]
                w = self.eb[d]
                if w:
                    excl |= g < w
                    if edges[d] is not None:
                        excl |= g >= edges[d] - w
            keep = slice(None) if keep_excluded else ~excl
            m = int(np.count_nonzero(keep)) if not keep_excluded else idx[0].size
            if m == 0:
                continue
            for d, ax in enumerate(acted):
                cols[self.in_axes[ax]].append((idx[d] + roi[d][0] + combo[d][0] - h)[keep])
            for j, ax in enumerate(others):
                cols[self.in_axes[ax]].append(np.full(m, lead[j], dtype=np.int64))
            si = idx[nd][keep]
            cols["sigma"].append(self.sigma_list[si, 0])
            cols["_sigma_index"].append(si)
            cols["_value"].append(cube[idx][keep])
            cols["_excluded"].append(excl[keep])

    # ---------------------------------------------------------------- end: pruning per plane
    def merge_rows(self, table):
        import pyarrow as pa

        schema = {a: np.int64 for a in self.in_axes}
        schema["sigma"] = np.float64
        if table is None or table.num_rows == 0:
            return _empty_table(schema)
        c = {k: table.column(k).to_numpy() for k in table.column_names}
        plane_axes = [a for a in self.in_axes if a not in self.axes]
        n = table.num_rows
        if plane_axes:
            keys = np.stack([c[a] for a in plane_axes], axis=1)
            uniq, inv = np.unique(keys, axis=0, return_inverse=True)
            inv = inv.ravel()
        else:
            uniq, inv = np.zeros((1, 0), np.int64), np.zeros(n, np.int64)
        out = {k: [] for k in schema}
        for g in range(len(uniq)):
            sel = np.nonzero(inv == g)[0]
            vals = c["_value"][sel]
            thr = self.params.threshold
            if self.params.threshold_rel is not None:
                thr = max(thr, self.params.threshold_rel * float(vals.max()))
            sel = sel[(vals > thr) & ~c["_excluded"][sel]]
            if not sel.size:
                continue
            # peak_local_max's order: np.nonzero (C order over axes..., sigma), then stable by -intensity
            order = np.lexsort([c["_sigma_index"][sel]] + [c[a][sel] for a in reversed(self.axes)])
            sel = sel[order]
            sel = sel[np.argsort(-c["_value"][sel], kind="stable")]
            lm = np.column_stack([c[a][sel].astype(np.float64) for a in self.axes] + [c["sigma"][sel]])
            alive = _prune_blobs(lm, self.params.overlap)
            sel = sel[alive]
            for a in self.in_axes:
                out[a].append(c[a][sel])
            out["sigma"].append(lm[alive, -1])
        if not out["sigma"]:
            return _empty_table(schema)
        return pa.table({k: np.concatenate(v).astype(schema[k]) for k, v in out.items()})


def _compute_disk_overlap(d, r1, r2):
    ratio1 = (d ** 2 + r1 ** 2 - r2 ** 2) / (2 * d * r1)
    ratio1 = np.clip(ratio1, -1, 1)
    acos1 = math.acos(ratio1)
    ratio2 = (d ** 2 + r2 ** 2 - r1 ** 2) / (2 * d * r2)
    ratio2 = np.clip(ratio2, -1, 1)
    acos2 = math.acos(ratio2)
    a = -d + r2 + r1
    b = d - r2 + r1
    c = d + r2 - r1
    d = d + r2 + r1
    area = r1 ** 2 * acos1 + r2 ** 2 * acos2 - 0.5 * math.sqrt(abs(a * b * c * d))
    return area / (math.pi * (min(r1, r2) ** 2))


def _compute_sphere_overlap(d, r1, r2):
    vol = (math.pi / (12 * d) * (r1 + r2 - d) ** 2
           * (d ** 2 + 2 * d * (r1 + r2) - 3 * (r1 ** 2 + r2 ** 2) + 6 * r1 * r2))
    return vol / (4.0 / 3 * math.pi * min(r1, r2) ** 3)


def _blob_overlap(blob1, blob2):
    """skimage.feature.blob._blob_overlap with one sigma column (same arithmetic, same branches)."""
    ndim = len(blob1) - 1
    if ndim > 3:
        return 0.0
    root_ndim = math.sqrt(ndim)
    if blob1[-1] == blob2[-1] == 0:
        return 0.0
    elif blob1[-1] > blob2[-1]:
        max_sigma = blob1[-1:]
        r1 = 1
        r2 = blob2[-1] / blob1[-1]
    else:
        max_sigma = blob2[-1:]
        r2 = 1
        r1 = blob1[-1] / blob2[-1]
    pos1 = blob1[:ndim] / (max_sigma * root_ndim)
    pos2 = blob2[:ndim] / (max_sigma * root_ndim)
    d = np.sqrt(np.sum((pos2 - pos1) ** 2))
    if d > r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return 1.0
    if ndim == 2:
        return _compute_disk_overlap(d, r1, r2)
    return _compute_sphere_overlap(d, r1, r2)


def _prune_blobs(blobs_array: np.ndarray, overlap: float) -> np.ndarray:
    """skimage.feature.blob._prune_blobs, returning the mask of survivors (rows keep their order)."""
    from scipy import spatial

    blobs_array = np.array(blobs_array, dtype=np.float64)
    sigma = blobs_array[:, -1:].max()
    distance = 2 * sigma * math.sqrt(blobs_array.shape[1] - 1)
    tree = spatial.cKDTree(blobs_array[:, :-1])
    pairs = np.array(list(tree.query_pairs(distance)))
    if len(pairs) == 0:
        return np.ones(len(blobs_array), dtype=bool)
    for i, j in pairs:
        blob1, blob2 = blobs_array[i], blobs_array[j]
        if _blob_overlap(blob1, blob2) > overlap:
            if blob1[-1] > blob2[-1]:
                blob2[-1] = 0
            else:
                blob1[-1] = 0
    return blobs_array[:, -1] > 0


# =========================================================================== match_template


class CropParams(OpParams):
    """A crop of the pipeline's input: ``[start, stop)`` per axis the template spans, an index for the rest."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _check(self):
        for k, v in (self.model_extra or {}).items():
            if k not in "tczyx" or len(k) != 1:
                raise ValueError(f"crop key {k!r} is not an axis letter from 'tczyx'")
            if isinstance(v, list):
                if len(v) != 2 or not all(isinstance(i, int) for i in v) or not 0 <= v[0] < v[1]:
                    raise ValueError(f"crop {k}: [start, stop) with 0 <= start < stop, got {v!r}")
            elif not isinstance(v, int) or v < 0:
                raise ValueError(f"crop {k}: an index >= 0 or a [start, stop) pair, got {v!r}")
        return self

    def ranges(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MatchTemplateParams(OpParams, AxesParam):
    template: Any = Field(description="kernel source (nested list, .npy, named), or {crop: {y: [a, b], x: [c, d], z: k}}")
    axes: str | None = None
    table: str | None = None
    radius: int = Field(3, ge=0, le=limits.MAX_HALO)
    threshold: float = 0.5
    method: Literal["auto", "direct", "fft"] = "auto"

    @model_validator(mode="after")
    def _template_ok(self, info: ValidationInfo):
        t = self.template
        _table_ok(self.table)
        if isinstance(t, dict) and "crop" in t:
            if set(t) != {"crop"}:
                raise ValueError("template: {crop: {...}} takes no other keys")
            crop = CropParams.model_validate(t["crop"]).ranges()
            spans = [v[1] - v[0] for v in crop.values() if isinstance(v, list)]
            limits.taps_ok(tuple(float(n) for n in spans), "the template crop")
            return self
        try:
            k = kernel_or_none(t)  # a .npy path is read by convpipe.bind, not here
        except ValueError as e:
            raise ValueError(f"template: {e}") from None
        if k is None:
            return self
        if k.ndim not in (2, 3):
            raise ValueError(f"template must be 2-D or 3-D, got {k.ndim}-D")
        return self


@register
class MatchTemplate(Op):
    """``skimage.feature.match_template(plane, template, pad_input=True)`` (zero padding) on every plane.

    Output: the normalised cross-correlation image (same axes as the input). Computed in float64 on the
    padded block: the numerator as a correlation with the zero-mean template (FFT for large templates), the
    window sums by cumulative sums of the block shifted by its mean. Optional ``table``: the correlation's
    peaks as the ``peaks`` op finds them (maximum filter of size 2*radius+1, mode nearest, > threshold).
    """

    name = "match_template"
    rows_context = True  # takes rows(x, y, context={coords, extent, core}) when the engine offers it
    kind = "local"
    raw_input = True  # the correlation in float64 of the stored values, never of their float32 rounding
    Params = MatchTemplateParams
    emits_table = True
    wants_coords = True
    summary = "normalised cross-correlation with a template (skimage match_template, pad_input) [+ peaks table]"

    def setup(self):
        p = self.params
        t = p.template
        self._template = None
        self._crop = None
        if isinstance(t, dict) and "crop" in t:
            crop = CropParams.model_validate(t["crop"]).ranges()
            spans = "".join(a for a in self.in_axes if isinstance(crop.get(a), list))
            if len(spans) not in (2, 3):
                raise self.error(f"crop must give [start, stop) for 2 or 3 axes, got {spans!r}", "template")
            for a in crop:
                if a not in self.in_axes:
                    raise self.error(f"crop axis {a!r} is not one of the input axes {self.in_axes!r}", "template")
            self.axes = self.resolve_axes(p.axes, default=spans)
            if self.axes != spans:
                raise self.error(f"the crop spans {spans!r} but axes is {self.axes!r}", "axes")
            self._crop = crop
            self.tshape = tuple(crop[a][1] - crop[a][0] for a in self.axes)
        else:
            base = self.step.spec.base_dir if (self.step is not None and self.step.spec is not None) else None
            k = kernel_from_source(t, base)
            self.axes = self.resolve_axes(p.axes, default={2: "yx", 3: "zyx"}[k.ndim])
            if len(self.axes) != k.ndim:
                raise self.error(f"a {k.ndim}-D template needs {k.ndim} axes, but the op acts on {self.axes!r}",
                                 "template")
            self._set_template(k)
        self._lock = threading.Lock()

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_lock", None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()

    # ---- the template
    def _set_template(self, k: np.ndarray) -> None:
        k = np.ascontiguousarray(k, dtype=np.float64)
        self.tshape = k.shape
        self._template = k
        # centred after an exact shift by one of its values: k.mean() of values near 2**40 is off by 1e-4
        d = k - k.flat[0] if k.size and math.isfinite(float(k.flat[0])) else k
        self._t0 = d - d.mean()
        self._ssd = float(np.sum(self._t0 ** 2))

    def bind_input(self, array: Any, axes: str) -> None:
        """Read a ``crop`` template from ``array`` (the pipeline's input, with ``axes``); a no-op otherwise.

        ``Pipeline.run`` / ``apply`` may call this before building the graph; without it the crop is read
        from the spec's input on first use.
        """
        if self._crop is None:
            return
        idx = []
        for a in axes:
            v = self._crop.get(a, 0)
            idx.append(slice(v[0], v[1]) if isinstance(v, list) else v)
        k = np.asarray(array[tuple(idx)], dtype=np.float64)
        spans = "".join(a for a in axes if isinstance(self._crop.get(a), list))
        # the crop's dimensions in the op's (tczyx) order, whatever the order of the array's axes
        k = np.transpose(k, [spans.index(a) for a in self.axes])
        if k.shape != self.tshape:
            raise self.error(f"the crop {self._crop} lies outside the input (got a {k.shape} template, expected "
                             f"{self.tshape})", "template")
        self._set_template(k)

    def template(self) -> np.ndarray:
        if self._template is None:
            with self._lock:
                if self._template is None:
                    spec = self.step.spec if self.step is not None else None
                    if spec is None:
                        raise self.error("a crop template needs the pipeline's input (bind_input)", "template")
                    from ..errors import ConvpipeError
                    from ..io import open_input

                    inp = spec.input
                    try:
                        arr, axes, _ = open_input(spec.resolve(inp.url), level=inp.level, axes=inp.axes,
                                                  storage_options=inp.storage_options)
                    except ConvpipeError as e:
                        raise self.error(f"a crop template is read from the spec's input, which failed ({e}); "
                                         "with Pipeline.apply give the template as a kernel (nested list or "
                                         ".npy)", "template") from None
                    self.bind_input(arr, axes)
        return self._template

    # ---- geometry
    def _thalo(self, a):
        t = self.tshape[self.axes.index(a)]
        return t // 2, t - 1 - t // 2

    def halo(self):
        r = self.params.radius if self.params.table else 0
        out = {}
        for a in self.axes:
            lo, hi = self._thalo(a)
            out[a] = (lo + r, hi + r)
        return out

    def boundary(self, axis):
        return "constant", float("nan")  # NaN marks the array's edges; replaced by skimage's zero padding

    def method(self):
        m = self.params.method
        if m == "auto":
            return "fft" if int(np.prod(self.tshape)) > 121 else "direct"
        return m

    def describe(self):
        t = "crop " + str(self._crop) if self._crop is not None else "x".join(map(str, self.tshape))
        return f"match_template({t} over {self.axes}, {self.method()})"

    # ---- compute
    def _ncc(self, x: np.ndarray, outside: np.ndarray | None = None) -> np.ndarray:
        """NCC for every block position whose template window lies in the block (float64); see :func:`ncc`."""
        k = self.template()
        acted = [self.in_axes.index(a) for a in self.axes]
        return ncc(x, outside, k.shape, acted, self._ssd, lambda v: self._correlate(v, acted, k.shape))

    def _correlate(self, xs: np.ndarray, acted: list[int], tshape: tuple[int, ...]) -> np.ndarray:
        """Valid correlation of ``xs`` with the zero-mean template over the acted axes."""
        shape = [1] * xs.ndim
        for i, s in zip(acted, tshape):
            shape[i] = s
        if self.method() == "fft":
            from scipy.signal import fftconvolve

            t0 = self._t0[(slice(None, None, -1),) * len(tshape)].reshape(shape)
            return fftconvolve(xs, t0, mode="valid", axes=acted)
        centers = tuple(s // 2 for s in tshape)
        num = engines.correlate_nd(xs, self._t0, centers, tuple(acted))
        sl = [slice(None)] * xs.ndim
        for i, a in zip(acted, self.axes):
            lo, hi = self._thalo(a)
            sl[i] = slice(lo, xs.shape[i] - hi)
        return num[tuple(sl)]

    wants_extent = True  # where the array ends: a NaN row of the data must not look like the padding

    def apply(self, x, xp=np, coords=None, extent=None):
        acted = [self.in_axes.index(a) for a in self.axes]
        h = self.halo()
        xf = np.array(x, dtype=np.float64)
        fr = {a: _AxisFrame(xf, ax, h[a][0], h[a][1], (coords or {}).get(a)) for ax, a in zip(acted, self.axes)}
        outside = np.zeros((1,) * xf.ndim, dtype=bool)
        for ax, a in zip(acted, self.axes):
            f = fr[a]
            if extent is not None and a in extent:
                f.n = int(extent[a])
            out_mask = np.ones(xf.shape[ax], dtype=bool)
            for i0, i1 in f.segments:
                out_mask[i0:i1] = ~f.inside(i0, i1)
            if out_mask.any():
                shape = [1] * xf.ndim
                shape[ax] = -1
                outside = outside | out_mask.reshape(shape)  # skimage pads with constant 0
        ncc = self._ncc(xf, outside if outside.any() else None)
        r = self.params.radius if self.params.table else 0
        if r:
            _stash(self, x, (ncc, fr, coords))
            sl = [slice(None)] * ncc.ndim
            for ax in acted:
                sl[ax] = slice(r, ncc.shape[ax] - r)
            res = ncc[tuple(sl)]
        else:
            if self.params.table:
                _stash(self, x, (ncc, fr, coords))
            res = ncc
        return res  # float64; the chain casts to the compute dtype

    def rows(self, x, y, context=None):
        got = _unstash(self, x)
        if got is None:  # rows without apply (not how the engine calls it): recompute
            self.apply(x, np, coords=(context or {}).get("coords"))
            got = _unstash(self, x)
        ncc, fr, ncc_coords = got
        r = self.params.radius
        acted = [self.in_axes.index(a) for a in self.axes]
        # in-array part of the NCC region: the maximum filter's 'nearest' = its window clipped at the edges
        roi = []
        for ax, a in zip(acted, self.axes):
            lo, _ = self._thalo(a)
            f = fr[a]
            ins = np.zeros(x.shape[ax], dtype=bool)
            for i0, i1 in f.segments:
                ins[i0:i1] = f.inside(i0, i1)
            roi.append(ins[lo: lo + ncc.shape[ax]])
        size = {ax: 2 * r + 1 for ax in acted}
        hit = np.zeros(y.shape, dtype=bool)
        # segments of inside positions along each axis are processed as independent boxes
        runs = [_true_runs(m) for m in roi]
        for combo in itertools.product(*runs):
            sl = [slice(None)] * ncc.ndim
            for ax, (a0, a1) in zip(acted, combo):
                sl[ax] = slice(a0, a1)
            part = ncc[tuple(sl)]
            mx = _window_max(part, [size.get(i, 1) for i in range(part.ndim)])
            h = (part == mx) & (part > self.params.threshold)
            # map into y (= ncc cropped by r along the acted axes)
            ysl, hsl = [slice(None)] * ncc.ndim, [slice(None)] * ncc.ndim
            ok = True
            for ax, (a0, a1) in zip(acted, combo):
                b0, b1 = max(a0, r), min(a1, ncc.shape[ax] - r)
                if b1 <= b0:
                    ok = False
                    break
                ysl[ax] = slice(b0 - r, b1 - r)
                hsl[ax] = slice(b0 - a0, b1 - a0)
            if ok:
                hit[tuple(ysl)] |= h[tuple(hsl)]
        _keep_real(hit, self, self.halo(), x.shape, ncc_coords)
        idx = np.nonzero(hit)
        cols = {a: idx[i] for i, a in enumerate(self.in_axes)}
        # report the float64 correlation, not its compute-dtype copy
        sl = [slice(None)] * ncc.ndim
        for ax in acted:
            sl[ax] = slice(r, ncc.shape[ax] - r)
        cols["value"] = ncc[tuple(sl)][hit]
        return cols


def _true_runs(m: np.ndarray) -> list[tuple[int, int]]:
    if not m.any():
        return []
    d = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist()))


# =========================================================================== stats


_METRICS = ("count", "mean", "std", "min", "max", "sum", "energy")


class OrientationHistogram(OpParams):
    bins: int = Field(8, ge=1, le=4096)
    weight: Literal["magnitude", "count"] = "magnitude"


class StatsParams(OpParams, AxesParam):
    per: Literal["plane", "tile", "all"] = "all"
    metrics: list[Literal["count", "mean", "std", "min", "max", "sum", "energy"]] = Field(default=list(_METRICS))
    orientation_histogram: OrientationHistogram | None = None
    spectral_bands: list[float] | None = None
    axes: str | None = None
    mode: Mode = "reflect"
    cval: float = 0.0
    table: str | None = None

    _t = field_validator("table")(lambda v: _table_ok(v))

    @field_validator("spectral_bands")
    @classmethod
    def _bands(cls, v):
        if v is None:
            return v
        if len(v) < 2 or any(not math.isfinite(b) or b < 0 for b in v) or any(b >= c for b, c in itertools.pairwise(v)):
            raise ValueError("spectral_bands: at least two increasing edges >= 0 (fractions of Nyquist), "
                             "band i = [edge i, edge i+1)")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("metrics lists a metric twice")
        return v


@register
class Stats(Op):
    """Statistics of the image, per plane / per tile / over the whole array -> table; the image passes through.

    Tiles compute float64 partials (count, sum, sum of squared deviations from the tile mean, min, max,
    energy = sum of squares, histogram and band sums); ``merge_rows`` combines them exactly (Chan et al.'s
    pairwise update for the variance) and writes the requested metrics. ``orientation_histogram``: histogram
    of arctan2(sobel_y, sobel_x) (scipy.ndimage.sobel with ``mode``) over [-pi, pi], ``bins`` bins, weighted by
    the gradient magnitude (or counts). ``spectral_bands: [e0, e1, ...]``: sum of |FFT|^2 / N over each band
    e_i <= r < e_(i+1) of the radial frequency r = sqrt(sum (f_i / 0.5)^2) (fft_filter's radius), per plane
    (per tile: of the tile); with bands covering every r the bands sum to the energy (Parseval).
    """

    raw_input = True  # float64 statistics of the stored values, not of their float32 rounding
    name = "stats"
    rows_context = True  # takes rows(x, y, context={coords, extent, core}) when the engine offers it
    kind = "point"
    Params = StatsParams
    emits_table = True
    wants_coords = True
    summary = "count/mean/std/min/max/sum/energy, orientation histogram, spectral bands -> table"

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes)
        if p.orientation_histogram is not None:
            if len(self.axes) != 2:
                raise self.error(f"orientation_histogram needs exactly 2 axes, got {self.axes!r}", "axes")
            self.kind = "local"
        if p.spectral_bands is not None and p.per != "tile":
            self.kind = "local" if p.orientation_histogram is not None else "full"

    def halo(self):
        if self.params.orientation_histogram is not None:
            return {a: (1, 1) for a in self.axes}
        return {}

    def full_axes(self):
        if self.params.spectral_bands is not None and self.params.per != "tile":
            return self.axes
        return ""

    def out_dtype(self, compute):
        return compute

    def _crop(self, x):
        if self.params.orientation_histogram is None:
            return x
        sl = [slice(None)] * x.ndim
        for a in self.axes:
            i = self.in_axes.index(a)
            sl[i] = slice(1, x.shape[i] - 1)
        return x[tuple(sl)]

    def apply(self, x, xp=np, coords=None):
        _stash(self, x, coords)
        return self._crop(x)

    def method(self):
        return "float64 partials, exact merge"

    # ---------------------------------------------------------------- tile: partials
    def _partials(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Partials of one region (y, with x its padded block for the gradient), as 1-element arrays."""
        v = np.asarray(y, dtype=np.float64)
        n = v.size
        out: dict[str, Any] = {"_count": np.array([n], dtype=np.int64)}
        if n:
            # deviations from a stored value of the region (exact for integers, Sterbenz for floats): on an
            # offset much larger than the spread, region means rounded to float64 would cost the merge's
            # between-region term its digits (an int64 near 2**40: std off by 3e-8 relative)
            shift = float(v.flat[0])
            shift = shift if math.isfinite(shift) else 0.0
            d = v - shift
            ds = float(np.sum(d))
            out["_sum"] = [float(np.sum(v))]
            out["_shift"] = [shift]
            out["_dsum"] = [ds]
            out["_m2"] = [float(np.sum((d - ds / n) ** 2))]
            out["_min"] = [float(np.min(v))]
            out["_max"] = [float(np.max(v))]
            out["_energy"] = [float(np.sum(v * v))]
        else:
            out.update(_sum=[0.0], _shift=[0.0], _dsum=[0.0], _m2=[0.0], _min=[np.inf], _max=[-np.inf],
                       _energy=[0.0])
        oh = self.params.orientation_histogram
        if oh is not None:
            hist = self._orientation(np.asarray(x, dtype=np.float64))
            for i in range(oh.bins):
                out[f"_orientation_{i}"] = [hist[i]]
        if self.params.spectral_bands is not None:
            bands = self._bands(v)
            for i, b in enumerate(bands):
                out[f"_band_{i}"] = [b]
        return {k: np.asarray(val) for k, val in out.items()}

    def _orientation(self, x: np.ndarray) -> np.ndarray:
        """Histogram of arctan2(sobel_y, sobel_x) over the region; ``x`` is padded by 1 along the two axes."""
        oh = self.params.orientation_histogram
        ay, ax = (self.in_axes.index(a) for a in self.axes)
        # scipy.ndimage.sobel of each plane: the derivative along one axis, [1, 2, 1] along the other
        dy = ndi.correlate1d(ndi.correlate1d(x, [-1, 0, 1], axis=ay, mode="reflect"), [1, 2, 1], axis=ax,
                             mode="reflect")
        dx = ndi.correlate1d(ndi.correlate1d(x, [-1, 0, 1], axis=ax, mode="reflect"), [1, 2, 1], axis=ay,
                             mode="reflect")
        dy, dx = self._crop(dy), self._crop(dx)
        theta = orientation(dy, dx)  # in (-pi, pi], 0 where both are 0 (weight count: bin of 0)
        w = np.hypot(dy, dx) if oh.weight == "magnitude" else None
        h, _ = np.histogram(theta, bins=oh.bins, range=(-np.pi, np.pi), weights=w)
        return h.astype(np.float64)

    def _bands(self, v: np.ndarray) -> np.ndarray:
        """Band energies summed over the planes of ``v`` (acted axes = the FFT axes)."""
        acted = [self.in_axes.index(a) for a in self.axes]
        edges = self.params.spectral_bands
        nb = len(edges) - 1
        if v.size == 0:
            return np.zeros(nb)
        F = np.fft.fftn(v, axes=acted)
        power = (F.real ** 2 + F.imag ** 2) / float(np.prod([v.shape[i] for i in acted]))
        r2 = 0.0
        for i in acted:
            f = np.fft.fftfreq(v.shape[i]) / 0.5
            shape = [1] * v.ndim
            shape[i] = -1
            r2 = r2 + (f * f).reshape(shape)
        r = np.sqrt(np.broadcast_to(r2, v.shape))
        return np.array([float(np.sum(power[(r >= edges[i]) & (r < edges[i + 1])])) for i in range(nb)])

    def rows(self, x, y, context=None):
        """Partials of the region y. Each row also carries the region's global bounds (``_g0_a``, ``_g1_a``)
        so the merge can prove that no voxel was counted twice."""
        per = self.params.per
        coords = _unstash(self, x)
        if coords is None and context is not None:
            coords = context.get("coords")
        coords = {a: np.asarray(v) for a, v in (coords or {}).items()}
        if context is not None and context.get("core") is not None:
            # the engine says which part of y the tile owns (y is larger when later ops need a halo)
            sy, sx = [slice(None)] * y.ndim, [slice(None)] * y.ndim
            pad = 1 if self.params.orientation_histogram is not None else 0
            for i, a in enumerate(self.in_axes):
                if a in context["core"]:
                    sl = context["core"][a]
                    sy[i] = sl
                    sx[i] = slice(sl.start, sl.stop + (2 * pad if a in self.axes else 0))
                    if a in coords:
                        coords[a] = coords[a][sl]
            x, y = x[tuple(sx)], y[tuple(sy)]
        bounds: dict[str, tuple[int, int, bool]] = {}
        for i, a in enumerate(self.in_axes):
            g = coords.get(a)
            if g is None or g.size != y.shape[i] or g.size == 0:
                bounds[a] = (-1, -1, False)
            else:
                bounds[a] = (int(g[0]), int(g[-1]) + 1, bool(np.any(np.diff(g) != 1)))

        def with_bounds(cols, box_axes):
            n = len(cols["_count"])
            multi = False
            for a in box_axes:
                g0, g1, m = bounds[a]
                cols[f"_g0_{a}"] = np.full(n, g0, dtype=np.int64)
                cols[f"_g1_{a}"] = np.full(n, g1, dtype=np.int64)
                multi |= m
            cols["_split"] = np.full(n, multi, dtype=bool)
            return cols

        if per == "all":
            return with_bounds(self._partials(x, y), self.in_axes)
        if per == "tile":
            cols = self._partials(x, y)
            for i, a in enumerate(self.in_axes):  # the row sits at the region's centre: inside the core
                cols[a] = np.array([y.shape[i] // 2], dtype=np.int64)
                cols[f"_len_{a}"] = np.array([y.shape[i]], dtype=np.int64)
            return with_bounds(cols, self.in_axes)
        # per plane: one row per plane index (the axes the op does not act on)
        plane_ax = [i for i, a in enumerate(self.in_axes) if a not in self.axes]
        rows: dict[str, list] = {}
        for lead in np.ndindex(*[y.shape[i] for i in plane_ax]):
            sl = [slice(None)] * y.ndim
            for i, j in zip(plane_ax, lead):
                sl[i] = slice(j, j + 1)
            part = self._partials(x[tuple(sl)], y[tuple(sl)])
            for i, j in zip(plane_ax, lead):
                part[self.in_axes[i]] = np.array([j], dtype=np.int64)
            for k, v in part.items():
                rows.setdefault(k, []).append(v)
        return with_bounds({k: np.concatenate(v) for k, v in rows.items()}, self.axes)

    # ---------------------------------------------------------------- end: exact merge
    def merge_rows(self, table):
        import pyarrow as pa

        p = self.params
        per = p.per
        if per == "plane":
            keys = [a for a in self.in_axes if a not in self.axes]
        elif per == "tile":
            keys = list(self.in_axes)
        else:
            keys = []
        if table is None or table.num_rows == 0:
            return pa.table({**{k: np.zeros(0, np.int64) for k in keys}, **self._finish(None)})
        c = {k: table.column(k).to_numpy() for k in table.column_names}
        nrows = table.num_rows
        if per == "tile":
            groups = [np.array([i]) for i in range(nrows)]
            keyvals = {k: c[k] for k in keys}
        elif keys:
            kv = np.stack([c[k] for k in keys], axis=1)
            uniq, inv = np.unique(kv, axis=0, return_inverse=True)
            inv = inv.ravel()
            order = np.argsort(inv, kind="stable")
            splits = np.cumsum(np.bincount(inv, minlength=len(uniq)))[:-1]
            groups = np.split(order, splits)
            keyvals = {k: uniq[:, i] for i, k in enumerate(keys)}
        else:
            groups = [np.arange(nrows)]
            keyvals = {}
        if per != "tile":
            box = list(self.in_axes) if per == "all" else list(self.axes)
            for g in groups:
                self._check_disjoint(c, g, box)
        merged = [self._merge_group(c, g) for g in groups]
        out = self._finish(merged)
        cols = {k: np.asarray(v, dtype=np.int64) for k, v in keyvals.items()}
        if per == "tile":
            for a in self.in_axes:
                known = c[f"_g0_{a}"] >= 0
                start = np.where(known, c[f"_g0_{a}"], c[a] - c[f"_len_{a}"] // 2)
                cols[a] = start
                cols[f"{a}_stop"] = start + c[f"_len_{a}"]
        cols.update(out)
        return pa.table(cols)

    def _check_disjoint(self, c, g, box_axes) -> None:
        """The regions the partials cover must not overlap (else voxels would count twice)."""
        from ..errors import ExecutionError

        if "_split" not in c:
            return
        bad = bool(np.any(c["_split"][g]))
        lo = [c[f"_g0_{a}"][g] for a in box_axes]
        hi = [c[f"_g1_{a}"][g] for a in box_axes]
        if not bad and all(np.all(v >= 0) for v in lo):
            vol = np.prod([h - l for l, h in zip(lo, hi)], axis=0) if box_axes else np.ones(len(g), np.int64)
            bbox = int(np.prod([int(h.max()) - int(l.min()) for l, h in zip(lo, hi)])) if box_axes else 1
            bad = int(np.sum(vol)) > bbox
        if bad:
            raise ExecutionError(
                f"{self.step.path if self.step is not None else self.name}: the tiles' regions overlap, so "
                "voxels would count twice: an op after stats in the same pass needs a halo, and this engine "
                "does not tell stats which part of its block the tile owns. Put stats last (or after the "
                "filters), or run it in its own pipeline.")

    def _merge_group(self, c, g) -> dict[str, float]:
        n_k = c["_count"][g].astype(np.float64)
        N = float(n_k.sum())
        S = float(np.sum(c["_sum"][g]))
        res: dict[str, float] = {"count": int(N), "sum": S}
        nz = n_k > 0
        if N > 0:
            if "_shift" in c:  # region means relative to one stored value K: no digit lost to the offset
                shift, dsum = c["_shift"][g][nz], c["_dsum"][g][nz]
                k = float(shift[0])
                dev = (shift - k) + dsum / n_k[nz]
                mean_dev = float(np.sum((shift - k) * n_k[nz]) + np.sum(dsum)) / N
                mean = k + mean_dev
                between = np.sum(n_k[nz] * (dev - mean_dev) ** 2)
            else:  # partials of an older run (resume)
                mean = S / N
                between = np.sum(n_k[nz] * (c["_sum"][g][nz] / n_k[nz] - mean) ** 2)
            m2 = float(np.sum(c["_m2"][g][nz]) + between)
            res.update(mean=mean, std=math.sqrt(max(m2, 0.0) / N))
        else:
            res.update(mean=float("nan"), std=float("nan"))
        res["min"] = float(np.min(c["_min"][g])) if N else float("nan")
        res["max"] = float(np.max(c["_max"][g])) if N else float("nan")
        res["energy"] = float(np.sum(c["_energy"][g]))
        if self.params.orientation_histogram is not None:
            for i in range(self.params.orientation_histogram.bins):
                res[f"orientation_{i}"] = float(np.sum(c[f"_orientation_{i}"][g]))
        if self.params.spectral_bands is not None:
            for i in range(len(self.params.spectral_bands) - 1):
                res[f"band_{i}"] = float(np.sum(c[f"_band_{i}"][g]))
        return res

    def _finish(self, merged: list[dict] | None) -> dict[str, np.ndarray]:
        p = self.params
        names = list(p.metrics)
        if p.orientation_histogram is not None:
            names += [f"orientation_{i}" for i in range(p.orientation_histogram.bins)]
        if p.spectral_bands is not None:
            names += [f"band_{i}" for i in range(len(p.spectral_bands) - 1)]
        out = {}
        for k in names:
            dt = np.int64 if k == "count" else np.float64
            out[k] = np.array([m[k] for m in merged] if merged else [], dtype=dt)
        return out
