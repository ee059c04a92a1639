"""What the local filters share: the halo crop, scipy's Gaussian weights, constant-mode fills, the sum over
axes of per-axis filters and the Laplacian."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ... import engines
from ..base import Op


def gaussian_kernel1d(sigma: float, order: int, radius: int) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian (derivative) weights, reversed as gaussian_filter1d uses them.

    scipy's own formula (``scipy.ndimage._filters._gaussian_kernel1d``), operation for operation, so the
    weights are bit-identical (a test checks it against scipy's): computed here rather than imported, as
    planning a chain calls it and ``explain`` must not pay scipy.ndimage's import (about a quarter second).
    """
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    phi /= phi.sum()
    if order == 0:
        w = phi
    else:
        exp_range = np.arange(order + 1)
        q = np.zeros(order + 1)
        q[0] = 1
        d = np.diag(exp_range[1:], 1)  # d @ q: q'(x)
        p = np.diag(np.ones(order) / -(sigma * sigma), -1)  # p @ q: q(x) * p'(x), p(x) = -x^2 / (2 sigma^2)
        for _ in range(order):
            q = (d + p).dot(q)
        w = (x[:, None] ** exp_range).dot(q) * phi
    return np.ascontiguousarray(w[::-1], dtype=np.float64)


def gaussian_radius(sigma: float, truncate: float) -> int:
    return int(truncate * float(sigma) + 0.5)


def axis_sum(terms: Iterable[Any], *, square: bool = False) -> Any:
    """The sum of ``terms`` (one array per axis, all of one shape), or of their squares, in the order given.

    Shared by every op that adds up one filtered copy of its block per axis: ``laplace`` and ``heat_step``
    (second differences), ``gaussian_laplace`` (second derivatives), ``gaussian_gradient_magnitude`` of a
    block with no taps. scipy adds the per-axis results in axis order, one after the other, in the input's
    dtype; so does this, so the rounding is scipy's. The first term is copied before the others are added
    into it in place, since it may be a view of the op's input (a pass with no taps returns its block); a
    squared term is a new array already. Terms the op made itself take :func:`sqrt_sum_squares`.

    Parameters
    ----------
    terms : iterable of array (numpy or CuPy), at least one, all of one shape and dtype
    square : bool
        Add ``t * t`` for each term ``t`` instead of ``t``.

    Returns
    -------
    array, the terms' shape and dtype: a new array
    """
    out = None
    for t in terms:
        if square:
            t = t * t
        if out is None:
            out = t if square else t.copy()
        else:
            np.add(out, t, out=out)
    return out


def sqrt_sum_squares(terms: list[Any]) -> Any:
    """``sqrt(t0 * t0 + t1 * t1 + ...)`` in place in the first term: the magnitude of an op's own components.

    The terms are whole engine results, before the op crops its halo: contiguous, so numpy's vector loops run
    (on the cropped views the four passes took 1.5x as long: 13 of a light tile's ~70 CPU-ms). The voxels
    the op keeps get scipy's operations in scipy's order (squares added in axis order, in the terms' dtype),
    each alone: the same bits wherever a tile starts. (OpenCV's ``magnitude``, one pass, is not: its vector
    lanes fuse the multiply-add and its scalar tail does not.)

    Parameters
    ----------
    terms : list of array (numpy or CuPy), at least one, all of one shape and dtype, the caller's to overwrite

    Returns
    -------
    array: the first term, overwritten
    """
    out = None
    for t in terms:
        t = np.multiply(t, t, out=t)
        out = t if out is None else np.add(out, t, out=out)
    return np.sqrt(out, out=out)


def place_kernel(op: Op, k: np.ndarray, origin: int | list[int], *, flip: bool = False
                 ) -> tuple[np.ndarray, str, list[int]]:
    """A kernel placed on the op's axes as scipy.ndimage.correlate places it: (kernel, axes, centre per axis).

    The axes are ``op.params.axes``, by default the kernel's trailing ones (``x``, ``yx``, ``zyx``); a 1-D
    kernel over several axes acts along the last; ``origin`` (one for all axes, or one per axis) shifts the
    centre from ``size // 2``. ``flip``: scipy.ndimage.convolve, correlate with the kernel flipped and the
    origin mirrored. Shared by ``correlate`` / ``convolve`` and ``stochastic``, whose mean over seeds is
    ``correlate`` with its kernel only if both place it alike: the same axes, centres and refusals.

    Raises
    ------
    SpecError
        At the op's ``kernel`` or ``origin``: a kernel whose dimensions are not the axes', an origin of
        another length, or one that puts the centre outside the kernel.
    """
    default = {1: "x", 2: "yx", 3: "zyx"}.get(k.ndim, "yx")
    axes = op.resolve_axes(op.params.axes, default=default)
    if k.ndim == 1 and len(axes) > 1:
        k = k.reshape((1,) * (len(axes) - 1) + (-1,))
    if k.ndim != len(axes):
        raise op.error(f"a {k.ndim}-D kernel needs {k.ndim} axes, but the op acts on {axes!r}", "kernel")
    origins = [origin] * k.ndim if isinstance(origin, int) else list(origin)
    if len(origins) != k.ndim:
        raise op.error(f"origin needs {k.ndim} values", "origin")
    if flip:  # scipy.ndimage.convolve == correlate with the flipped kernel and mirrored origin
        k = np.ascontiguousarray(k[(slice(None, None, -1),) * k.ndim])
        origins = [-o - (0 if s & 1 else 1) for o, s in zip(origins, k.shape)]
    centers = []
    for o, s in zip(origins, k.shape):
        c = s // 2 + o
        if not 0 <= c < s:
            raise op.error(f"origin {o} is outside the kernel (size {s})", "origin")
        centers.append(c)
    return k, axes, centers


class LocalOp(Op):
    """A filter with a halo that runs unchanged on CuPy blocks (every local filter here does)."""

    kind = "local"
    gpu_path = True

    def ax(self, letter: str) -> int:
        return self.in_axes.index(letter)

    def fill(self, ctx: Any) -> tuple | None:
        """scipy's per-pass cval padding, needed for kernels that do not sum to one (see engines):
        ``(outside, cval, shift)``, ``shift`` the block's centring (``ctx.shift``), so each pass pads with the
        true cval as the centred intermediate holds it. None where scipy's padding needs no reset (cval 0:
        a linear pass of a slab of 0s stays 0s, and of a centred slab ``-c`` gives ``-c * sum(w)``, the
        centred 0, by itself)."""
        outside = ctx.outside
        if not outside:
            return None
        mode, cval = self.boundary(self.in_axes[0])
        return (outside, cval, ctx.shift) if mode == "constant" and cval != 0 else None

    def laplacian(self, x: Any) -> Any:
        """scipy.ndimage.laplace of the block over ``self.axes``: the sum of the [1, -2, 1] second
        differences along each axis, cropped by ``halo()`` (one voxel along each axis).

        One function for ``laplace`` and for each explicit step of ``diffusion`` (u + dt * laplace(u)), so
        the steps are the oracle's laplace to the last bit whatever changes in how it is computed.
        """
        w = np.array([1.0, -2.0, 1.0])
        return axis_sum(self.crop(engines.sep_correlate(x, {self.ax(a): (w, 1)})) for a in self.axes)
