"""``filter_bank``: one ``c`` channel per kernel (a list, one ``.npy`` of shape (N, *kernel), or gabor
orientations x frequencies), by correlate (with its ``extent`` and ``stride``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import SpecError
from ...kernels import kernel_from_source, normalize, source_name
from ...params.features import FilterBankParams
from ...params.local import KernelParams
from ..base import NO_CONTEXT, Context, Op, insert_axis
from ..local.correlate import Correlate


class FilterBank(Op):
    """One output channel per kernel: ``scipy.ndimage.correlate`` of the input with each (same mode/cval).

    Halo = the largest kernel's extent per axis; each kernel runs on its own crop of the padded block, so a
    small kernel never pays for the largest one. Adds a ``c`` axis (kernel index).
    """

    name = "filter_bank"
    kind = "local"
    Params = FilterBankParams
    linear = True

    def setup(self):
        p = self.params
        if "c" in self.in_axes:
            raise self.error("filter_bank adds a 'c' axis, but the input already has one")
        base = self.step.spec.base_dir if (self.step is not None and self.step.spec is not None) else None
        if isinstance(p.kernels, str):  # one .npy of shape (N, *kernel): channel i is kernel i
            bank = kernel_from_source(p.kernels, base)
            ks = [normalize(np.ascontiguousarray(k), p.normalize, p.temperature) for k in bank]
            self.labels = [f"{source_name(p.kernels)}[{i}]" for i in range(len(ks))]
        elif p.kernels is not None:
            ks = [normalize(kernel_from_source(s, base), p.normalize, p.temperature) for s in p.kernels]
            self.labels = [source_name(s) if isinstance(s, str) else f"kernel {i}" for i, s in enumerate(p.kernels)]
        else:
            ks = [normalize(k, p.normalize, p.temperature) for k in p.gabor.kernels()]
            # frequency-major, as GaborBank.kernels() orders them
            self.labels = [f"gabor f={f:.6g} theta={np.degrees(t):.6g}deg" for f in p.gabor.freqs()
                           for t in p.gabor.thetas()]
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

    def channel_labels(self, labels):
        """Channel i is kernel i: named by its file (``edges.npy``, ``bank.npy[3]``), its name (``sobel_y``),
        ``gabor f=0.1 theta=60deg``, or ``kernel i`` when written inline."""
        return list(self.labels)

    def strides(self):  # every kernel of the bank has the bank's extent and stride
        return self.subs[0].strides()

    def out_length(self, axis, n):
        return self.subs[0].out_length(axis, n) if axis in self.in_axes else n

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """Each kernel's correlation on its own crop of the block, stacked along a new ``c`` axis.

        Parameters
        ----------
        x : numpy.ndarray, axes ``in_axes``, padded by ``halo()`` (the largest kernel's); float32 or float64
        ctx : Context, unused

        Returns
        -------
        numpy.ndarray, axes ``out_axes`` (``c`` inserted, one channel per kernel), ``x``'s shape less the halo
        along ``axes``, ``x``'s dtype
        """
        outs = []
        for s in self.subs:
            sl = [slice(None)] * x.ndim
            for a, (lo, hi) in s.halo().items():
                i = self.in_axes.index(a)
                H = self._halo[a]
                sl[i] = slice(H[0] - lo, x.shape[i] - (H[1] - hi))
            outs.append(np.asarray(s.apply(x[tuple(sl)]), dtype=x.dtype))
        return np.stack(outs, axis=self.out_axes.index("c"))

    def method(self):
        ms = sorted({s.method() for s in self.subs})
        return "/".join(ms)

    def describe(self):
        shapes = ", ".join("x".join(map(str, s.kernel.shape)) for s in self.subs[:4])
        more = f", ... ({len(self.subs)} kernels)" if len(self.subs) > 4 else ""
        return f"filter_bank({shapes}{more} over {self.axes}{self.subs[0].window_note()})"
