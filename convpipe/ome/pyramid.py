"""OME-Zarr pyramids: halve ``y`` and ``x`` of a level (2x2 mean or nearest), and the levels' transforms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # dask.array loads with the first level built, not with convpipe.ome (explain reads metadata)
    import dask.array as da

__all__ = ["downsample_level", "pyramid_transforms"]


def pyramid_transforms(
    scale: Sequence[float],
    axes: str,
    n_levels: int,
    *,
    translation: Sequence[float] | None = None,
    method: Literal["mean", "nearest"] = "mean",
) -> tuple[list[list[float]], list[list[float]]]:
    """Scales and translations of the levels made by :func:`downsample_level`.

    Each level doubles the voxel size along ``y`` and ``x``. A 2x2 mean puts the centre of output
    voxel 0 between input voxels 0 and 1, i.e. half an input voxel further along; ``nearest`` keeps
    input voxel 0, so its position does not move.

    Parameters
    ----------
    scale : sequence of float, shape (ndim,)
        Level-0 voxel size.
    axes : str
        Axis letters, containing ``y`` and ``x``.
    n_levels : int
        Total number of levels including level 0 (>= 1).
    translation : sequence of float, shape (ndim,), optional
        Level-0 translation (zeros when None).
    method : {"mean", "nearest"}
        The downsampling method.

    Returns
    -------
    scales, translations : list of list of float, shape (n_levels, ndim)
    """
    if n_levels < 1:
        raise ValueError("n_levels must be >= 1")
    base_t = list(translation) if translation is not None else [0.0] * len(axes)
    scales, trans = [], []
    for lv in range(n_levels):
        f = 2.0**lv
        s = [float(v) * (f if a in "yx" else 1.0) for v, a in zip(scale, axes, strict=True)]
        t = [
            float(t0) + ((s_l - float(s0)) / 2.0 if (a in "yx" and method == "mean") else 0.0)
            for t0, s0, s_l, a in zip(base_t, scale, s, axes, strict=True)
        ]
        scales.append(s)
        trans.append(t)
    return scales, trans


def _mean2x2_block(block: np.ndarray, *, ya: int, xa: int, out_dtype: np.dtype) -> np.ndarray:
    """2x2 mean of one block; an odd trailing row/column averages only the pixels it has."""
    ny, nx = block.shape[ya], block.shape[xa]
    if block.size == 0:  # reduceat cannot take empty index lists
        shape = list(block.shape)
        shape[ya], shape[xa] = (ny + 1) // 2, (nx + 1) // 2
        return np.empty(shape, dtype=out_dtype)
    acc = np.add.reduceat(block.astype(np.float64, copy=False), np.arange(0, ny, 2), axis=ya)
    acc = np.add.reduceat(acc, np.arange(0, nx, 2), axis=xa)
    cy = np.full(acc.shape[ya], 2.0)
    cx = np.full(acc.shape[xa], 2.0)
    if ny % 2:
        cy[-1] = 1.0
    if nx % 2:
        cx[-1] = 1.0
    shape = [1] * block.ndim
    shape_y, shape_x = list(shape), list(shape)
    shape_y[ya], shape_x[xa] = -1, -1
    acc /= cy.reshape(shape_y) * cx.reshape(shape_x)
    if np.issubdtype(out_dtype, np.integer):
        # round half to even and keep the level's dtype, as every level of a pyramid shares one
        info = np.iinfo(out_dtype)
        return np.clip(np.rint(acc), info.min, info.max).astype(out_dtype)
    return acc.astype(out_dtype, copy=False)


def downsample_level(
    array: da.Array, axes: str, *, method: Literal["mean", "nearest"] = "mean"
) -> da.Array:
    """Halve ``y`` and ``x`` of a dask array: one pyramid level.

    Parameters
    ----------
    array : dask.array.Array
        Shape ``(..., ny, ..., nx, ...)`` with the positions of ``y``/``x`` given by ``axes``.
    axes : str
        One letter per axis of ``array``; must contain ``y`` and ``x``.
    method : {"mean", "nearest"}
        ``mean``: each output voxel is the mean of a 2x2 block of input voxels, computed in
        float64 and cast back to the input dtype (integers rounded half to even). ``nearest``:
        ``array[..., ::2, ::2]`` (for labels and 0/1 masks, where a mean would invent values).

    Returns
    -------
    dask.array.Array
        Shape ``(..., ceil(ny / 2), ..., ceil(nx / 2), ...)``, the input's dtype.

    Notes
    -----
    Odd sizes: both methods give ``ceil(n / 2)`` voxels. With ``mean``, the last row/column of an
    odd-sized axis is the mean over the pixels that exist (2 or 1 along that axis), never padded
    with zeros. This equals replicating the edge pixel (``numpy.pad(mode="edge")``) before a 2x2
    mean, and unlike ``skimage.transform.downscale_local_mean`` (which pads with ``cval=0``)
    it does not darken the border.

    Chunks along ``y``/``x`` are first made even (except the last) so every 2x2 block lies in one
    chunk: no halo exchange is needed, and each output chunk depends on exactly one input chunk.
    """
    from dask.base import tokenize

    if len(axes) != array.ndim:
        raise ValueError(f"axes {axes!r} do not match a {array.ndim}-D array")
    if "y" not in axes or "x" not in axes:
        raise ValueError(f"axes {axes!r} must contain 'y' and 'x' to build a pyramid level")
    ya, xa = axes.index("y"), axes.index("x")
    if method == "nearest":
        sl = [slice(None)] * array.ndim
        sl[ya] = sl[xa] = slice(None, None, 2)
        return array[tuple(sl)]
    if method != "mean":
        raise ValueError(f"method must be 'mean' or 'nearest', got {method!r}")
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_:
        raise ValueError("a 2x2 mean of a boolean array is not boolean; use method='nearest'")

    new_chunks: dict[int, int] = {}
    for ax in (ya, xa):
        cs = array.chunks[ax]
        if any(c % 2 for c in cs[:-1]):
            # an odd chunk would split a 2x2 block between two tasks
            new_chunks[ax] = max(2, cs[0] + cs[0] % 2)
    if new_chunks:
        array = array.rechunk(new_chunks, method="tasks")
    out_chunks = tuple(
        tuple((c + 1) // 2 for c in cs) if i in (ya, xa) else cs for i, cs in enumerate(array.chunks)
    )
    # dask's typing of the map_blocks method wrapper is wrong (it expects the array twice)
    return array.map_blocks(  # type: ignore[call-arg]
        _mean2x2_block,  # type: ignore[arg-type]
        ya=ya,
        xa=xa,
        out_dtype=dtype,
        dtype=dtype,
        chunks=out_chunks,
        meta=np.empty((0,) * array.ndim, dtype=dtype),
        name="downsample-mean-" + tokenize(array.name, ya, xa, str(dtype)),
    )
