"""Consecutive symmetric linear filters merged into one sum of separable terms (the planner builds these)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import engines
from ..base import NO_CONTEXT, Context, Op
from .base import LocalOp, gaussian_kernel1d
from .gaussian import Gaussian, GaussianLaplace
from .rank import Uniform


class MergedSeparable(LocalOp):
    """Consecutive symmetric linear filters run as one sum of separable terms (the planner builds these).

    Correlation is associative and distributes over sums, and for ``wrap`` (periodic extension) or
    ``reflect`` / ``mirror`` (symmetric extensions) with *symmetric* kernels the extension of a filtered
    signal equals the filtered extension. Filtering in sequence with the array-edge mode is therefore
    exactly filtering once with the composed kernels: gaussian -> gaussian_laplace -> uniform becomes two
    separable terms. ``nearest`` and ``constant`` lack that property and are never merged.

    ``terms`` is a list of ``{axis: 1-D weights}``; an axis missing from a term is the identity there.
    Axes whose kernel is the same in every term are filtered once, before the terms split.
    """

    name = "merged"
    linear = True

    def __init__(self, parts: list[Any], terms: list[dict[str, np.ndarray]], mode: str):
        self.parts = parts
        self.terms = [{a: np.ascontiguousarray(v) for a, v in t.items()} for t in terms]
        self._mode = mode
        axes = {a for t in self.terms for a in t}
        self.common = {a: self.terms[0][a] for a in sorted(axes)
                       if all(a in t and t[a].shape == self.terms[0][a].shape and np.array_equal(t[a], self.terms[0][a])
                              for t in self.terms)}
        self.rad = {a: max(len(t[a]) // 2 for t in self.terms if a in t) for a in axes}
        super().__init__(parts[0].params, parts[0].in_axes, step=parts[0].step)

    def boundary(self, axis):
        return self._mode, 0.0

    def halo(self):
        return {a: (r, r) for a, r in self.rad.items()}

    def shift_gain(self):  # the terms' products of kernel sums, summed
        return float(sum(np.prod([v.sum() for v in t.values()]) for t in self.terms))

    def _w(self, a, v):
        r = self.rad[a]
        if len(v) // 2 < r:  # centre a shorter kernel in the axis' common halo
            v = np.pad(v, r - len(v) // 2)
        return (v, r)

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The merged filters: the axes common to every term once, then each term, summed.

        Parameters
        ----------
        x : array, axes ``in_axes``, padded by ``halo()`` (the sum of the parts' halos); float32 or float64
        ctx : Context, passed to the parts when they run one after the other (NaN/inf blocks)

        Returns
        -------
        array, ``x``'s shape less the halo along its axes, ``x``'s dtype
        """
        if not engines.all_finite(x):
            # NaN/inf: the steps one after the other, as written. A composed kernel has the same NaN footprint
            # but other inf arithmetic (gaussian -> gaussian_laplace: +inf where the steps give inf - inf = NaN).
            # The block holds the sum of the parts' halos, and for these modes and symmetric kernels filtering
            # the padded block equals padding the filtered one (see the class docstring).
            for p in self.parts:
                x = p.apply(x, ctx)
            return x
        base = engines.sep_correlate(x, {self.ax(a): self._w(a, v) for a, v in self.common.items()})
        # no term filters a common axis again: its halo goes now, and the terms never run on it (the z halo
        # of the benchmark's heavy tile is a fifth of its planes)
        base = self.crop(base, {a: (self.rad[a], self.rad[a]) for a in self.common})
        rest_halo = {a: (r, r) for a, r in self.rad.items() if a not in self.common}
        terms = [{self.ax(a): self._w(a, v) for a, v in t.items() if a not in self.common} for t in self.terms]
        nd = base.ndim
        if nd > 2 and engines.array_module(base) is np and all(ax >= nd - 2 for t in terms for ax in t):
            return self._by_plane(base, terms, rest_halo)
        out = None
        for t in terms:
            y = self.crop(engines.sep_correlate(base, t), rest_halo)
            out = y.copy() if out is None else np.add(out, y, out=out)
        return out

    def _by_plane(self, base: np.ndarray, terms: list[dict[int, Any]], halo: dict[str, tuple[int, int]]) -> np.ndarray:
        """The terms over the last two axes summed plane by plane into one output: each plane's term results
        stay in the cache, where whole-block terms were two more temporaries of the block's size (76 MB on the
        heavy benchmark tile: fresh mmaps that page-fault) and a memory-bound sum. Same additions, same order."""
        nd = base.ndim
        crop = []
        for i in (nd - 2, nd - 1):
            lo, hi = halo.get(self.in_axes[i], (0, 0))
            crop.append(slice(lo, base.shape[i] - hi))
        crop2 = tuple(crop)
        out = np.empty(base.shape[:-2] + tuple(s.stop - s.start for s in crop2), dtype=base.dtype)
        planes = [{ax - (nd - 2): w for ax, w in t.items()} for t in terms]
        for idx in np.ndindex(*base.shape[:-2]):
            acc = out[idx]
            for k, w in enumerate(planes):
                y = engines.sep_correlate(base[idx], w)[crop2]
                if k == 0:
                    acc[...] = y
                else:
                    np.add(acc, y, out=acc)
        return out

    def method(self):
        return f"separable (merged, {len(self.terms)} term{'s' if len(self.terms) > 1 else ''})"

    def describe(self):
        return " * ".join(p.describe() for p in self.parts) + f" (merged: {self.method()})"


def symmetric_terms(op: Op) -> tuple[str, list[dict[str, np.ndarray]]] | None:
    """(mode, separable terms with symmetric 1-D weights) when ``op`` is mergeable, else None."""
    mode = op.boundary(op.in_axes[0])[0] if op.kind == "local" else None
    if mode not in ("wrap", "reflect", "mirror"):
        return None
    if isinstance(op, Gaussian) and all(int(o) == 0 for o in op.order.values()):
        terms = [{a: gaussian_kernel1d(s, 0, op.radius[a]) for a, s in op.active.items()}]
    elif isinstance(op, Uniform) and all(s % 2 == 1 for s in op.size.values()):
        terms = [{a: np.full(s, 1.0 / s) for a, s in op.size.items() if s > 1}]
    elif isinstance(op, GaussianLaplace):
        terms = []
        for along in op.axes:
            terms.append({a: gaussian_kernel1d(s, 2 if a == along else 0, op.radius[a])
                          for a, s in op.sigma.items() if s > 1e-15})
    elif isinstance(op, MergedSeparable):
        terms = [dict(t) for t in op.terms]
    else:
        return None
    if not all(np.allclose(v, v[::-1], rtol=1e-12, atol=1e-15) for t in terms for v in t.values()):
        return None
    return mode, terms


# One 1-D pass costs its taps plus about this many taps' worth of memory traffic (measured with OpenCV on
# float32 planes here: a 5-tap pass takes ~1.6x a 1-tap pass, a 45-tap one ~6x).
_PASS_COST = 8


def _terms_cost(terms: list[dict[str, np.ndarray]]) -> int:
    common = {a for a in terms[0] if all(a in t and np.array_equal(t[a], terms[0][a]) for t in terms)}
    cost = sum(len(terms[0][a]) + _PASS_COST for a in common)
    return cost + sum(len(v) + _PASS_COST for t in terms for a, v in t.items() if a not in common)


def merge_linear(ops: list[Op], *, only_if_cheaper: bool = True) -> list[Op]:
    """Merge runs of consecutive mergeable filters that share a boundary mode.

    Composed kernels are longer (taps add up) and terms multiply, so a merge saves memory passes but can
    cost arithmetic: it is made only when the tap-count model says the merged op is cheaper (two
    Gaussians: yes; gaussian -> gaussian_laplace -> uniform: no), and never past 4 terms.
    """
    out: list[Op] = []
    for op in ops:
        cur = symmetric_terms(op)
        prev = symmetric_terms(out[-1]) if out else None
        if (cur is not None and prev is not None and cur[0] == prev[0] and out[-1].in_axes == op.in_axes
                and len(cur[1]) * len(prev[1]) <= 4):
            terms = []
            for t1 in prev[1]:
                for t2 in cur[1]:
                    t = dict(t1)
                    for a, v in t2.items():
                        t[a] = np.convolve(t[a], v) if a in t else v
                    terms.append(t)
            if only_if_cheaper and _terms_cost(terms) >= _terms_cost(prev[1]) + _terms_cost(cur[1]):
                out.append(op)
                continue
            parts = (out[-1].parts if isinstance(out[-1], MergedSeparable) else [out[-1]]) + [op]
            out[-1] = MergedSeparable(parts, terms, cur[0])
        else:
            out.append(op)
    return out
