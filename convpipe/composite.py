"""The kernel a step amounts to, and the one kernel a fused run of linear steps amounts to.

Ops given by a kernel show it as written and normalised; every other linear op its impulse response, measured
by running the op's own ``apply`` on a unit impulse (what is shown is what runs). A run of consecutive linear
ops amounts to the full convolution of their kernels (:func:`composite`); ``explain`` names it
(:func:`composite_note`), e.g. ``gaussian σ=3 then σ=4 = gaussian σ=5``. ``convpipe kernel``
(:mod:`convpipe.kernelview`) prints and draws them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .axes import AXES_ORDER

@dataclass
class KernelView:
    """One kernel: ``weights`` over ``axes`` (correlation weights, as the op correlates), and what it is."""

    title: str
    axes: str
    weights: np.ndarray
    note: str = ""

    @property
    def separable(self) -> bool:
        from .kernels import separable_factors

        return self.weights.ndim <= 1 or separable_factors(self.weights) is not None

    def rank(self) -> int | None:
        if self.weights.ndim != 2:
            return None
        return int(np.linalg.matrix_rank(self.weights, tol=1e-12 * max(1.0, float(np.abs(self.weights).max()))))


# --------------------------------------------------------------------------- kernels of ops


def _impulse_response(op: Any) -> KernelView | None:
    """The correlation kernel of a linear op that keeps its axes: flip(op.apply(unit impulse))."""
    halo = op.halo()
    if not halo or op.out_axes != op.in_axes or op.strides():
        return None
    axes = "".join(a for a in op.in_axes if a in halo)
    shape, centre = [], []
    for a in op.in_axes:
        lo, hi = halo.get(a, (0, 0))
        shape.append(2 * (lo + hi) + 1)
        centre.append(lo + hi)
    x = np.zeros(shape)
    x[tuple(centre)] = 1.0
    y = np.asarray(op.apply(x), dtype=np.float64)
    y = y[tuple(slice(None, None, -1) if a in halo else 0 for a in op.in_axes)]
    return KernelView(_title(op), axes, np.ascontiguousarray(y), "impulse response of the op")


def _title(op: Any) -> str:
    st = getattr(op, "step", None)
    where = f"steps[{st.index}] " if st is not None and getattr(st, "index", -1) >= 0 else ""
    return f"{where}{op.describe()}"


def op_kernels(op: Any) -> list[KernelView]:
    """The kernel(s) of one bound op (empty for ops that have none: point, spectral, rank filters ...)."""
    name = op.name
    if name in ("correlate", "convolve"):
        k = op.kernel[(slice(None, None, -1),) * op.kernel.ndim] if name == "convolve" else op.kernel
        note = "as written (convolve flips it when applied)" if name == "convolve" else ""
        return [KernelView(_title(op), op.axes, np.ascontiguousarray(k), note)]
    if name == "stochastic":
        return [KernelView(_title(op), op.axes, np.ascontiguousarray(op.prob), "probabilities of the offsets")]
    if name == "filter_bank":
        return [KernelView(f"{_title(op)} channel {i}", s.axes, s.kernel) for i, s in enumerate(op.subs)]
    if name == "conv_layer":
        w = op.weights
        return [KernelView(f"{_title(op)} out {o} <- in {i}", op.axes, w[o, i])
                for o in range(w.shape[0]) for i in range(w.shape[1])]
    if name == "merged":
        out = []
        for p in op.parts:
            out.extend(op_kernels(p))
        return out
    if getattr(op, "linear", False):
        v = _impulse_response(op)
        return [v] if v is not None else []
    return []


# --------------------------------------------------------------------------- composites


def _is_chain_linear(op: Any) -> bool:
    return (getattr(op, "linear", False) and op.kind == "local" and op.out_axes == op.in_axes
            and not op.strides() and op.name not in ("filter_bank", "conv_layer")
            and getattr(op, "extent", "same") == "same")


def linear_runs(ops: list[Any]) -> list[list[Any]]:
    """Maximal runs of >= 2 consecutive linear ops (merged ops count by their parts)."""
    runs: list[list[Any]] = []
    cur: list[Any] = []
    for op in ops:
        if _is_chain_linear(op):
            cur.extend(op.parts if op.name == "merged" else [op])
        else:
            if len(cur) >= 2:
                runs.append(cur)
            cur = []
    if len(cur) >= 2:
        runs.append(cur)
    return runs


def _embed(v: KernelView, axes: str) -> np.ndarray:
    shape = [v.weights.shape[v.axes.index(a)] if a in v.axes else 1 for a in axes]
    return v.weights.reshape(shape)


def composite(run: list[Any]) -> KernelView | None:
    """The one correlation kernel a run of linear ops amounts to: the full convolution of their kernels."""
    import scipy.signal as ss

    views = []
    for op in run:
        ks = op_kernels(op)
        if len(ks) != 1:
            return None
        views.append(ks[0])
    axes = "".join(a for a in AXES_ORDER if any(a in v.axes for v in views))
    k = _embed(views[0], axes)
    for v in views[1:]:
        k = ss.convolve(k, _embed(v, axes), mode="full", method="direct")
    return KernelView(" then ".join(_short(op) for op in run), axes, np.ascontiguousarray(k), "composite")


def _sigma_text(s: dict[str, float]) -> str:
    vals = {round(v, 6) for v in s.values()}
    if len(vals) == 1:
        return f"σ={_num(vals.pop())}"
    return "σ=(" + ", ".join(f"{a} {_num(v)}" for a, v in s.items()) + ")"


def _num(v: float) -> str:
    return f"{v:.4g}"


def _short(op: Any) -> str:
    if op.name == "gaussian" and all(int(o) == 0 for o in op.order.values()):
        return f"gaussian {_sigma_text(op.sigma)}"
    if op.name in ("correlate", "convolve"):
        return f"{op.name} {'x'.join(map(str, op.kernel.shape))}"
    return op.describe()


def _is_gauss(op: Any) -> bool:
    return op.name == "gaussian" and all(int(o) == 0 for o in op.order.values())


def gaussian_groups(run: list[Any]) -> list[list[Any]]:
    """The run cut into groups: consecutive order-0 gaussians over the same axes together, other ops alone."""
    groups: list[list[Any]] = []
    for op in run:
        if groups and _is_gauss(op) and _is_gauss(groups[-1][-1]) and groups[-1][-1].axes == op.axes:
            groups[-1].append(op)
        else:
            groups.append([op])
    return groups


def total_sigma(group: list[Any]) -> dict[str, float]:
    """Gaussians compose by adding variances: σ = sqrt(Σ σ_i²) per axis."""
    return {a: math.sqrt(sum(op.sigma[a] ** 2 for op in group)) for a in group[0].axes}


def composite_note(run: list[Any]) -> str:
    """How explain names a fused linear run: ``gaussian σ=3 then σ=4 = gaussian σ=5``, and for a run of other
    filters the one kernel it amounts to."""
    parts = []
    groups = gaussian_groups(run)
    for g in groups:
        if len(g) > 1:
            parts.append("gaussian " + " then ".join(_sigma_text(op.sigma) for op in g)
                         + f" = gaussian {_sigma_text(total_sigma(g))}")
        else:
            parts.append(_short(g[0]))
    text = " then ".join(parts if len(groups) == 1 else [f"({p})" if " = " in p else p for p in parts])
    if len(groups) == 1 and len(groups[0]) > 1:
        return text
    k = composite(run)
    if k is None:
        return text
    sep = "separable" if k.separable else "not separable"
    return f"{text} = one kernel {'x'.join(map(str, k.weights.shape))} over {k.axes} ({sep})"


def gaussian_check(run: list[Any], k: KernelView) -> str | None:
    """For a run of gaussians: how far the composite is from the one gaussian of the summed variances."""
    groups = gaussian_groups(run)
    if len(groups) != 1 or len(groups[0]) < 2:
        return None
    import scipy.ndimage as ndi

    sig = total_sigma(groups[0])
    d = np.zeros(k.weights.shape)
    d[tuple(n // 2 for n in d.shape)] = 1.0
    ref = ndi.gaussian_filter(d, [sig[a] for a in k.axes], mode="constant")
    return (f"  max |composite - gaussian {_sigma_text(sig)}| = {np.abs(ref - k.weights).max():.2g} "
            "(the discrete, truncated kernels compose up to that)")
