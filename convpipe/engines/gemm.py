"""conv_layer's kernel: a valid multi-channel correlation as matrix products, for numpy and CuPy alike.

:func:`convpipe.engines.conv_channels` dispatches here with the array module of the block (``m``: numpy from
:mod:`.cpu`, cupy from :mod:`.gpu`); the arithmetic is the same on both, only where the products run differs.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def conv_channels(xc: Any, w: Any, stride: tuple[int, ...], m: Any) -> Any:
    """Valid correlation of ``xc`` (in_c, *S), channel-major, with ``w`` (out_c, in_c, *k), then strided.

    Returns (out_c, *O) with ``O = (S - k) // stride + 1`` per axis, in ``xc``'s dtype: output channel o is
    sum_i correlate(xc[i], w[o, i]) at positions 0, s, 2s, ... of the valid result.
    """
    k = tuple(w.shape[2:])
    O = tuple((s - kk) // st + 1 for s, kk, st in zip(xc.shape[1:], k, stride))
    if any(st != 1 for st in stride):
        return im2col_gemm(xc, w, stride, O, m)
    return shift_gemm(xc, w, O, m)


def shift_gemm(xc: Any, w: Any, out_shape: tuple[int, ...], m: Any) -> Any:
    """Valid correlation, stride 1: ``xc`` (in_c, *S) channel-major, ``w`` (out_c, in_c, *k) -> (out_c, *O).

    The kx shifts along the last axis are stacked once (kx * in_c rows of the flat block); then every tap of
    the other axes is one matrix product (out_c x kx*in_c) @ (kx*in_c x voxels) over a shifted flat slice,
    which BLAS reads in place. Output voxel p (flat in the layout of S) thus sums w[:, :, t] @ xc[:, p + off(t)]
    over all taps; the outputs between rows (where a shifted window wraps to the next row) are computed and
    dropped. Measured on 16 x 514 x 514 float32 -> 32 channels, 3x3 (2 loaded cores): 0.8 s, against 2.9 s
    with one product per tap, 6.7 s for a full im2col and 2.4 s for OpenCV per channel pair.
    """
    in_c = xc.shape[0]
    S = tuple(xc.shape[1:])
    k = tuple(w.shape[2:])
    out_c = w.shape[0]
    L = int(np.prod(S, dtype=np.int64))
    kx = k[-1]
    flat = xc.reshape(in_c, L)
    M = L - kx + 1
    rows = m.empty((kx, in_c, M), dtype=xc.dtype)
    for t in range(kx):
        rows[t] = flat[:, t:t + M]
    rows = rows.reshape(kx * in_c, M)
    wr = m.moveaxis(w, -1, 1).reshape((out_c, kx * in_c) + k[:-1])  # (out_c, kx*in_c, *k[:-1])
    step = [int(np.prod(S[d + 1:], dtype=np.int64)) for d in range(len(S))]
    P = sum((o - 1) * st for o, st in zip(out_shape, step)) + 1  # the last output's flat index + 1
    acc = m.empty((out_c, L), dtype=xc.dtype)
    dst = acc[:, :P]
    tmp = None
    for j, tap in enumerate(np.ndindex(*k[:-1])):
        off = sum(i * st for i, st in zip(tap, step[:-1]))
        wt = m.ascontiguousarray(wr[(slice(None), slice(None)) + tap])
        if m is not np:  # CuPy: plain products (its matmul wants contiguous outputs)
            if j == 0:
                dst[...] = wt @ rows[:, off:off + P]
            else:
                dst += wt @ rows[:, off:off + P]
        elif j == 0:
            m.matmul(wt, rows[:, off:off + P], out=dst)
        else:
            tmp = m.empty((out_c, P), dtype=xc.dtype) if tmp is None else tmp
            m.matmul(wt, rows[:, off:off + P], out=tmp)
            dst += tmp
    full = acc.reshape((out_c,) + S)
    return full[(slice(None),) + tuple(slice(0, o) for o in out_shape)]


def im2col_gemm(xc: Any, w: Any, stride: tuple[int, ...], out_shape: tuple[int, ...], m: Any) -> Any:
    """Valid correlation with ``stride``: gather each tap's strided voxels once (im2col), one matrix product."""
    in_c, out_c = xc.shape[0], w.shape[0]
    k = tuple(w.shape[2:])
    O = out_shape
    taps = list(np.ndindex(*k))
    cols = m.empty((len(taps), in_c) + O, dtype=xc.dtype)
    for j, tap in enumerate(taps):
        cols[j] = xc[(slice(None),) + tuple(slice(t, t + (o - 1) * st + 1, st) for t, o, st in zip(tap, O, stride))]
    w2 = m.ascontiguousarray(m.moveaxis(w.reshape(out_c, in_c, len(taps)), 2, 1).reshape(out_c, -1))  # tap-major
    return (w2 @ cols.reshape(len(taps) * in_c, -1)).reshape((out_c,) + O)
