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

from pathlib import Path
from typing import Any

import numpy as np

from .composite import (  # noqa: F401  (the kernels themselves; this module shows them)
    KernelView,
    composite,
    composite_note,
    gaussian_check,
    gaussian_groups,
    linear_runs,
    op_kernels,
    total_sigma,
    _embed,
    _impulse_response,
    _is_chain_linear,
    _is_gauss,
    _num,
    _short,
    _sigma_text,
    _title,
)


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
