"""``conv_layer``: out[o] = activation(bias[o] + sum_i correlate(x[i], weights[o, i])) (SPEC.md).

The input's ``c`` axis holds the in_c channels (no ``c`` axis: one channel); the output's ``c`` holds out_c.
Cross-correlation, as deep-learning layers compute it, with ``extent`` and ``stride`` like correlate.

Engine (CPU and CuPy alike, on the tile the planner gathered): :func:`convpipe.engines.conv_channels`, im2col
by cache-sized blocks of output rows and one matrix product per block over all channel pairs and taps, the
channels centred so that float32 keeps SPEC.md's tolerance (else float64); see :mod:`convpipe.engines.gemm`.
Blocks holding NaN/inf take the per-channel-pair path of the oracle's arithmetic (scipy's correlate), so a NaN reaches exactly its footprint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import engines
from ...kernels import kernel_from_source, source_name
from ...params.layers import ConvLayerParams
from ..base import NO_CONTEXT, Context, Op, insert_axis
from .window import Windowed


def _activation(y: Any, how: str, m: Any) -> Any:
    if how == "relu":
        return m.maximum(y, y.dtype.type(0), out=y)
    if how == "tanh":
        return m.tanh(y, out=y)
    if how == "sigmoid":  # 1 / (1 + exp(-y)); exp overflows to inf for very negative y, giving 0 as it should
        m.negative(y, out=y)
        m.exp(y, out=y)
        y += y.dtype.type(1)
        return m.reciprocal(y, out=y)
    return y


class ConvLayer(Windowed, Op):
    name = "conv_layer"
    kind = "local"
    Params = ConvLayerParams
    gpu_path = True  # engines.conv_channels runs the products on the device; the rest is numpy CuPy implements

    def setup(self) -> None:
        p = self.params
        base = self.step.spec.base_dir if (self.step is not None and self.step.spec is not None) else None
        w = kernel_from_source(p.weights, base)
        if w.ndim < 3:
            raise self.error(f"weights need the shape (out_c, in_c, *kernel), got {tuple(w.shape)}", "weights")
        self.out_c, self.in_c = int(w.shape[0]), int(w.shape[1])
        nd = w.ndim - 2
        self.axes = self.resolve_axes(p.axes, default={1: "x", 2: "yx", 3: "zyx"}.get(nd, "yx"))
        if len(self.axes) != nd:
            raise self.error(f"a {nd}-D kernel (weights {tuple(w.shape)}) needs {nd} axes, but the op acts on "
                             f"{self.axes!r}", "weights")
        if "c" not in self.in_axes and self.in_c != 1:
            raise self.error(f"weights take {self.in_c} input channels, but the input has no 'c' axis (one channel)",
                             "weights")
        if p.bias is None:
            b = np.zeros(self.out_c)
        else:
            b = np.asarray(p.bias, dtype=np.float64).ravel()
            if not isinstance(p.bias, list):  # one number: every output channel's bias
                b = np.full(self.out_c, float(b[0]))
            if b.size != self.out_c or not np.all(np.isfinite(b)):
                raise self.error(f"bias needs {self.out_c} finite values (one per output channel), got {b.size}",
                                 "bias")
        self.weights = np.ascontiguousarray(w)
        self.bias = np.ascontiguousarray(b)
        kshape = tuple(int(s) for s in w.shape[2:])
        self.set_window(kshape, tuple(s // 2 for s in kshape), p.extent, p.stride)

    @property
    def out_axes(self) -> str:
        return self.in_axes if "c" in self.in_axes else insert_axis(self.in_axes, "c")

    def full_axes(self) -> str:
        return "c" if "c" in self.in_axes else ""  # every output channel reads every input channel

    def out_extent(self, axis: str, n: int) -> int:
        return self.out_c

    def channel_labels(self, labels: list[str] | None) -> list[str]:
        """Output channel o is filter o: ``weights.npy[o]`` for weights from a file, else ``conv_layer o``."""
        w = self.params.weights
        stem = source_name(w) if isinstance(w, str) else "conv_layer"
        return [f"{stem}[{o}]" if isinstance(w, str) else f"{stem} {o}" for o in range(self.out_c)]

    def out_length(self, axis: str, n: int) -> int:
        if axis == "c":
            if n != self.in_c:
                raise self.error(f"weights take {self.in_c} input channels, but the input's 'c' axis holds {n}",
                                 "weights")
            return self.out_c
        return Windowed.out_length(self, axis, n)

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The layer on one block.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()`` (the output windows); float32 or float64
        ctx : Context, unused

        Returns
        -------
        array, axes ``out_axes`` (``c`` holds out_c), the valid strided extent along ``axes``, ``x``'s dtype
        """
        m = engines.array_module(x)
        # channel-major block: c first, then the other axes in order; the kernel axes last
        axes = self.in_axes if "c" in self.in_axes else "c" + self.in_axes
        xb = x if "c" in self.in_axes else x[None]
        lead = "".join(a for a in axes if a != "c" and a not in self.axes)
        order = "c" + lead + self.axes
        xb = m.moveaxis(xb, [axes.index(a) for a in order], list(range(len(order))))
        w = self.weights  # float64 on the host: the engine casts for its products, keeps the offset term exact
        nd = len(self.axes)
        S = xb.shape[-nd:]
        stride = tuple(self.stride[a] for a in self.axes)
        k = w.shape[2:]
        O = tuple((s - kk) // st + 1 for s, kk, st in zip(S, k, stride))
        nlead = xb.shape[1:1 + len(lead)]
        out = None
        if not nlead:  # one block: the engine's result is the output (no copy); None: NaN/inf in the block,
            # found from the engine's per-channel min/max (a separate all_finite pass cost ~4 % of the layer)
            out = engines.conv_channels(m.ascontiguousarray(xb), w, stride, self.bias, check_finite=True)
        if out is None:
            finite = bool(nlead) and engines.all_finite(x)
            out = m.empty((self.out_c,) + tuple(nlead) + O, dtype=x.dtype)
            b = m.asarray(self.bias.astype(x.dtype)).reshape((-1,) + (1,) * len(O))
            for li in np.ndindex(*nlead):
                sub = m.ascontiguousarray(xb[(slice(None),) + li])
                if finite:
                    out[(slice(None),) + li] = engines.conv_channels(sub, w, stride, self.bias)
                else:
                    y = self._pairs(sub, w.astype(x.dtype, copy=False), stride, m)
                    y += b
                    out[(slice(None),) + li] = y
        out = _activation(out, self.params.activation, m)
        # back to the op's output order
        oax = self.out_axes
        return m.ascontiguousarray(m.moveaxis(out, list(range(len(order))), [oax.index(a) for a in order]))

    def _pairs(self, sub: Any, w: Any, stride: tuple[int, ...], m: Any) -> Any:
        """Sum over input channels of scipy's correlate, per channel pair (NaN/inf reach their footprint only)."""
        idx = tuple(range(len(self.axes)))
        centers = tuple(s // 2 for s in w.shape[2:])
        outs = []
        for o in range(w.shape[0]):
            acc = None
            for i in range(w.shape[1]):
                kk = np.ascontiguousarray(w[o, i])
                y = engines.correlate_nd(sub[i], kk, centers, idx) if bool((kk != 0).any()) else sub[i] * 0
                sl = tuple(slice(c, y.shape[d] - (s - 1 - c), st)
                           for d, (c, s, st) in enumerate(zip(centers, w.shape[2:], stride)))
                y = y[sl]
                acc = y.copy() if acc is None else acc + y
            outs.append(acc)
        return m.stack(outs)

    def method(self) -> str:
        return "im2col gemm"

    def estimate_work(self):
        """Estimate only: per input voxel (each of ``in_c`` channels), the im2col copy of its taps, out_c x
        taps multiply-adds, the bias and activation of the output voxels."""
        taps = float(np.prod(self.weights.shape[2:]))
        return {"point": taps / 2 + self.out_c / self.in_c, "macs": self.out_c * taps}

    def describe(self) -> str:
        k = "x".join(map(str, self.weights.shape[2:]))
        act = "" if self.params.activation == "none" else f", {self.params.activation}"
        return (f"conv_layer({self.in_c}->{self.out_c} channels, kernel {k} over {self.axes}"
                f"{self.window_note()}{act})")
