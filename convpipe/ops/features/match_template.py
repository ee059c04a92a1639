"""``match_template``: scikit-image's normalised cross-correlation with a template on every plane, with an
optional table of its peaks."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ... import engines
from ...kernels import kernel_from_source
from ...params.features import CropParams, MatchTemplateParams
from ..base import NO_CONTEXT, Context, Op, Rows
from .frames import AxisFrame, keep_real, true_runs
from .ncc import ncc, window_max

class MatchTemplate(Op):
    """``skimage.feature.match_template(plane, template, pad_input=True)`` (zero padding) on every plane.

    Output: the normalised cross-correlation image (same axes as the input). Computed in float64 on the
    padded block: the numerator as a correlation with the zero-mean template (FFT for large templates), the
    window sums by cumulative sums of the block shifted by its mean. Optional ``table``: the correlation's
    peaks as the ``peaks`` op finds them (maximum filter of size 2*radius+1, mode nearest, > threshold).
    """

    name = "match_template"
    kind = "local"
    raw_input = True  # the correlation in float64 of the stored values, never of their float32 rounding
    Params = MatchTemplateParams
    emits_table = True
    wants_coords = True  # where the block lies: skimage's zero padding replaces the NaN beyond the array
    wants_extent = True  # where the array ends: a NaN row of the data must not look like the padding

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
        """The template (float64): given in the spec, or a crop read by :meth:`bind_input`."""
        if self._template is None:
            raise self.error("a crop template is read from the pipeline's input, which was not bound: "
                             "Pipeline.run and Pipeline.apply read it; elsewhere call bind_input(array, axes) "
                             "first", "template")
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

    def estimate_work(self):  # estimate only: two correlations (image, template), box sums, the quotient
        taps = float(np.prod(self.tshape))
        return {"fft": 2.0, "point": 8.0} if self.method() == "fft" else {"taps": 2 * taps, "point": 8.0}

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

    def _compute(self, x: Any, ctx: Context) -> tuple[np.ndarray, dict]:
        """The float64 NCC of the block and the frames of its acted axes (where the array lies in it)."""
        coords, extent = ctx.coords, ctx.extent
        acted = [self.in_axes.index(a) for a in self.axes]
        h = self.halo()
        xf = np.array(x, dtype=np.float64)
        fr = {a: AxisFrame(xf, ax, h[a][0], h[a][1], (coords or {}).get(a)) for ax, a in zip(acted, self.axes)}
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
        return self._ncc(xf, outside if outside.any() else None), fr

    def _core(self, ncc: np.ndarray) -> np.ndarray:
        """The NCC without the maximum filter's ring (``radius`` along the acted axes, with a table)."""
        r = self.params.radius if self.params.table else 0
        if not r:
            return ncc
        sl = [slice(None)] * ncc.ndim
        for a in self.axes:
            ax = self.in_axes.index(a)
            sl[ax] = slice(r, ncc.shape[ax] - r)
        return ncc[tuple(sl)]

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The normalised cross-correlation of every plane with the template (skimage's zero padding).

        Parameters
        ----------
        x : numpy.ndarray, axes ``in_axes``, padded by ``halo()`` with NaN beyond the array; stored values
        ctx : Context; ``ctx.coords`` and ``ctx.extent`` (where the array's edges are)

        Returns
        -------
        numpy.ndarray, ``x``'s shape less the halo, float64 (the chain casts to the compute dtype)
        """
        return self._core(self._compute(x, ctx)[0])

    def apply_rows(self, x: Any, ctx: Context = NO_CONTEXT) -> tuple[Any, Rows]:
        """The correlation image and its peaks as ``peaks`` finds them (maximum filter of size 2 * radius + 1,
        mode nearest, above ``threshold``): local indices per input axis and the float64 ``value``."""
        ncc, fr = self._compute(x, ctx)
        y = self._core(ncc)
        ncc_coords = ctx.coords
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
        runs = [true_runs(m) for m in roi]
        for combo in itertools.product(*runs):
            sl = [slice(None)] * ncc.ndim
            for ax, (a0, a1) in zip(acted, combo):
                sl[ax] = slice(a0, a1)
            part = ncc[tuple(sl)]
            mx = window_max(part, [size.get(i, 1) for i in range(part.ndim)])
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
        keep_real(hit, self, self.halo(), x.shape, ncc_coords)
        idx = np.nonzero(hit)
        cols = {a: idx[i] for i, a in enumerate(self.in_axes)}
        # report the float64 correlation, not its compute-dtype copy
        sl = [slice(None)] * ncc.ndim
        for ax in acted:
            sl[ax] = slice(r, ncc.shape[ax] - r)
        cols["value"] = ncc[tuple(sl)][hit]
        return y, cols
