"""``convpipe kernel SPEC [--step N] [--png FILE]``: the kernels a spec amounts to, made visible.

For each step: the resolved kernel after normalisation (weights, sum, shape, separability). Ops given by a
kernel (correlate, convolve, stochastic, filter_bank, conv_layer) show it as written and normalised; every
other linear op shows its impulse response, measured by running the op's own ``apply`` on a unit impulse
(so what is shown is what runs). For a fused run of consecutive linear steps, the composite kernel they
amount to (convolution is associative: correlating with A then B is correlating with A * B, the full
convolution of the two) and its frequency response. ``explain`` names the composite of each run
(:func:`composite_note`), e.g. ``gaussian σ=3 then σ=4 = gaussian σ=5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
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
    y = np.asarray(op.apply(x, np), dtype=np.float64)
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


# --------------------------------------------------------------------------- text


def frequency_response(k: np.ndarray, n: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
    """|H| of the correlation kernel on an n-point grid per axis (fftshifted), and the frequencies."""
    size = [max(n, s) for s in k.shape]
    H = np.abs(np.fft.fftshift(np.fft.fftn(k, s=size)))
    freqs = [np.fft.fftshift(np.fft.fftfreq(m)) for m in size]
    return freqs, H


def _profile(k: np.ndarray, axes: str) -> list[str]:
    """|H| along each axis through 0 at 0, 1/8, 1/4, 3/8, 1/2 cycles per voxel."""
    lines = []
    for d, a in enumerate(axes):
        m = max(64, k.shape[d])
        f = np.arange(5) / 8.0
        # the response along axis d (others at frequency 0) is that of the kernel summed over the other axes
        k1 = k.sum(axis=tuple(i for i in range(k.ndim) if i != d))
        H = np.abs(np.fft.fft(k1, m))
        vals = [H[int(round(fr * m)) % m] for fr in f]
        lines.append(f"    |H| along {a}: " + ", ".join(f"{fr:g}: {v:.4g}" for fr, v in zip(f, vals))
                     + "  (cycles/voxel: |H|)")
    return lines


def _weights_text(w: np.ndarray, limit: int = 400) -> list[str]:
    if w.size > limit:
        return [f"    ({w.size} weights; min {w.min():.5g}, max {w.max():.5g})"]
    if w.ndim == 0:
        return [f"    {float(w):.5g}"]
    if w.ndim == 1:
        return ["    [" + ", ".join(f"{v:.5g}" for v in w) + "]"]
    if w.ndim == 2:
        width = max(len(f"{v:.5g}") for v in w.ravel())
        return ["    " + " ".join(f"{v:.5g}".rjust(width) for v in row) for row in w]
    out = []
    for i in range(w.shape[0]):
        out.append(f"    [{i}]")
        out.extend("  " + line for line in _weights_text(w[i], limit))
    return out


def describe_kernel(v: KernelView) -> list[str]:
    w = v.weights
    rank = v.rank()
    sep = "separable" if v.separable else ("not separable" + (f" (rank {rank})" if rank is not None else ""))
    lines = [f"{v.title}" + (f"  [{v.note}]" if v.note else ""),
             f"  shape {'x'.join(map(str, w.shape))} over {v.axes or '-'}, sum {w.sum():.6g}, {sep}"]
    lines.extend(_weights_text(w))
    return lines


# --------------------------------------------------------------------------- the command


def bound_ops(spec: Any) -> tuple[list[Any], list[list[Any]]]:
    """The spec's ops bound to its input's axes (as the planner binds them), and the pass of each op."""
    from .ops.local.merged import merge_linear
    from .plan import bind_ops

    axes = _input_axes(spec)
    ops = bind_ops(spec.steps, axes)
    return ops, linear_runs(merge_linear(list(ops)))


def _input_axes(spec: Any) -> str:
    from .axes import canonical

    if spec.input.axes:
        return canonical(spec.input.axes)
    try:
        from .run.prepare import open_spec_input

        _, _, axes, _ = open_spec_input(spec)
        return canonical(axes)
    except Exception:  # noqa: BLE001 - no input yet: assume the axes the kernels need
        need_c = any(s.name == "conv_layer" for s in spec.steps)
        return "czyx" if need_c else "zyx"


def kernel_report(spec: Any, step: int | None = None) -> tuple[str, list[KernelView]]:
    """The text of ``convpipe kernel`` and the kernels it shows (steps' kernels, then composites)."""
    from .errors import SpecError

    ops, runs = bound_ops(spec)
    if step is not None and not any(s.index == step for s in spec.steps):
        raise SpecError(f"--step {step}: the spec has steps 0 to {len(spec.steps) - 1}", path="steps")
    lines: list[str] = []
    shown: list[KernelView] = []
    for op in ops:
        st = op.step
        if step is not None and (st is None or st.index != step):
            continue
        ks = op_kernels(op)
        if not ks:
            lines.append(f"{_title(op)}: no kernel (not a linear filter)")
            continue
        for v in ks[:16]:
            lines.extend(describe_kernel(v))
            shown.append(v)
        if len(ks) > 16:
            lines.append(f"  ... {len(ks) - 16} more kernels")
    for run in runs:
        if step is not None and not any(op.step is not None and op.step.index == step for op in run):
            continue
        c = composite(run)
        if c is None:
            continue
        lines.append("")
        lines.append(f"composite of a fused linear run: {composite_note(run)}")
        lines.extend(describe_kernel(c)[1:])
        check = gaussian_check(run, c)
        if check:
            lines.append(check)
        lines.extend(_profile(c.weights, c.axes))
        shown.append(c)
    return "\n".join(lines), shown


def draw_png(views: list[KernelView], path: Path) -> None:
    """Each kernel (a central plane for 3-D) beside its |frequency response|."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    views = views[:12] or []
    fig, axs = plt.subplots(max(1, len(views)), 2, figsize=(8, 3.2 * max(1, len(views))), squeeze=False)
    for row, v in zip(axs, views):
        w = v.weights
        while w.ndim > 2:
            w = w[w.shape[0] // 2]
        freqs, H = frequency_response(w if w.ndim else w.reshape(1))
        while H.ndim > 2:
            H = H[H.shape[0] // 2]
        if w.ndim <= 1:
            row[0].stem(np.arange(w.size), np.atleast_1d(w))
            row[1].plot(freqs[0], H)
            row[1].set_xlabel("cycles / voxel")
        else:
            im = row[0].imshow(w, cmap="RdBu_r", vmin=-np.abs(w).max(), vmax=np.abs(w).max())
            fig.colorbar(im, ax=row[0])
            im = row[1].imshow(H, extent=(freqs[1][0], freqs[1][-1], freqs[0][-1], freqs[0][0]), cmap="viridis")
            fig.colorbar(im, ax=row[1])
        row[0].set_title(v.title[:60], fontsize=8)
        row[1].set_title("|frequency response|", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
