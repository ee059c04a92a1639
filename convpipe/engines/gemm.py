"""conv_layer's kernel: a valid multi-channel correlation as matrix products, for numpy and CuPy alike.

:func:`convpipe.engines.conv_channels` dispatches here with the array module of the block (``m``: numpy from
:mod:`.cpu`, cupy from :mod:`.gpu`); the arithmetic is the same on both, only where the products run differs.

The products: im2col by blocks of output rows. For a block of rows, every kernel tap's (strided) window of
every input channel is copied once into a column buffer of ``taps * in_c`` rows, sized to stay in the CPU's
cache (about 2 MiB); one matrix product (out_c x taps*in_c) @ (taps*in_c x block) then sums over all channel
pairs and taps at once, and its result goes straight to the output rows (contiguous, no crop copy).
Measured on 16 x 258 x 770 float32 -> 32 channels, 3x3, one core: 28 ms, against 51 ms for one product per
kernel row over shifted flat slices (the previous kernel), 150 ms for a whole-tile im2col and 250 ms for
OpenCV's filter2D per channel pair.

Rounding. A float32 product over many taps loses digits to cancellation when the block has a large offset
(a uint16 image near 30 000 under a kernel that sums to 0: the terms are 1e4 times the result), which broke
SPEC.md's float32 tolerance (1e-5 * max(1, max|oracle|)) by 10-35x. So each channel is centred first (its
mid-range subtracted while it is copied into the columns) and the offset's exact contribution
``sum_i c_i * sum_t w[o, i, t]`` is added back in float64 with the bias; the weights enter the offset term in
float64. What remains is the float32 products' own rounding, bounded (probabilistically, Higham & Mary
2019) by ``(sqrt(K) + 2) * u * sum |w| |x - c|`` per output, K the terms it sums. Where that is below half the
tolerance for every voxel at its channels' largest |x - c| (known from the centring's minimum and maximum),
the products run as they are; otherwise the tile's bound is taken by Cauchy-Schwarz, ``||w_o|| * ||x - c||``
over each output's footprint (one pass of squares, :func:`_footprint_norm`), and a tile whose bound exceeds
half the tolerance (relative to its own largest output, which is at most the array's; the first block's
largest output is tried first, a lower bound) is computed again in float64. On the benchmark's layer (random
weights, 16 channels, 3x3) the tile bound passes: float32 throughout.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

#: SPEC.md's float32 tolerance, relative to max(1, max|oracle|): the float32 products must stay within half
TOL_FLOAT32 = 1e-5
#: bytes of the column buffer of one block (taps * in_c rows): about twice the L2 cache of one core (2 MiB
#: here). Measured on 16 x 258 x 770 -> 32 channels, 3x3, CPU ms per tile (best of 7, one thread): 1 MiB 58,
#: 2 MiB 45, 3-8 MiB 40-42, 16 MiB 50; two threads at once, 6 tiles: 2 MiB 296 ms, 4 MiB 271, 8 MiB 293
BLOCK_BYTES = 4 << 20
#: on a device the buffer may be large: fewer, larger products
DEVICE_BLOCK_BYTES = 256 << 20


def _host(v: Any) -> np.ndarray:
    return v.get() if hasattr(v, "get") else np.asarray(v)


def conv_channels(xc: Any, w: np.ndarray, stride: tuple[int, ...], m: Any, bias: Any = None,
                  put: Callable[[np.ndarray], Any] | None = None, check_finite: bool = False) -> Any:
    """Valid correlation of ``xc`` (in_c, *S), channel-major, with the host array ``w`` (out_c, in_c, *k),
    strided, plus ``bias``.

    Parameters
    ----------
    xc : array (numpy or CuPy), float32 or float64, finite
    w : numpy.ndarray, (out_c, in_c, *k): the weights, any float dtype (float64 keeps the offset term exact)
    stride : per kernel axis
    m : the array module of ``xc``
    bias : out_c values or None
    put : host array -> an array of ``m`` (the device's cached constants); default ``m.asarray``
    check_finite : return None when ``xc`` holds NaN/inf (seen in the per-channel minimum and maximum the
        centring takes anyway), so the caller needs no pass of its own over the block

    Returns
    -------
    array (out_c, *O) in ``xc``'s dtype (None: ``check_finite`` and not finite), ``O = (S - k) // stride
    + 1`` per axis: output channel o is
    bias[o] + sum_i correlate(xc[i], w[o, i]) at positions 0, s, 2s, ... of the valid result.
    """
    put = put or m.asarray
    dt = np.dtype(xc.dtype)
    out_c, in_c = int(w.shape[0]), int(w.shape[1])
    k = tuple(int(s) for s in w.shape[2:])
    O = tuple((s - kk) // st + 1 for s, kk, st in zip(xc.shape[1:], k, stride))
    w64 = np.asarray(w, dtype=np.float64)
    b64 = np.zeros(out_c) if bias is None else np.asarray(bias, dtype=np.float64).reshape(out_c)
    if not all(O) or xc.size == 0:
        return m.empty((out_c,) + O, dtype=dt)
    ax = tuple(range(1, xc.ndim))
    lo, hi = _host(xc.min(axis=ax)).astype(np.float64), _host(xc.max(axis=ax)).astype(np.float64)
    if check_finite and not (np.isfinite(lo).all() and np.isfinite(hi).all()):  # min/max propagate NaN
        return None
    c = ((lo + hi) / 2).astype(dt).astype(np.float64)  # the mid-range: the least max|x - c|, exact in dt
    shift = b64 + np.einsum("oit,i->o", w64.reshape(out_c, in_c, -1), c)  # exact offset term, in float64
    if dt.itemsize >= 8:
        return _products(xc, w64, c, shift, stride, O, m, put)[0]
    # the float32 products' rounding bound (module docstring), by Cauchy-Schwarz: sum |w| |x - c| over an
    # output's footprint <= ||w_o|| * ||x - c|| over that footprint
    K = in_c * math.prod(k)
    lam = (math.sqrt(K) + 2) * float(np.finfo(dt).eps) / 2  # sqrt(K) products; x - c and the weights rounded
    wn = float(np.sqrt((w64.reshape(out_c, -1) ** 2).sum(1)).max())
    r = np.maximum(hi - c, c - lo)  # max |x - c| per channel
    cheap = lam * wn * math.sqrt(math.prod(k) * float((r * r).sum()))  # every voxel at its channels' max
    exact = cheap <= 0.5 * TOL_FLOAT32  # enough whatever the result's size (the tolerance is >= TOL * 1)
    y, ysample = _products(xc, w64.astype(dt), c.astype(dt), shift.astype(dt), stride, O, m, put, track=not exact)
    if exact:
        return y
    bound = lam * wn * _footprint_norm(xc, c, k, stride, O, m)
    # max |y| of the first block is a lower bound of the tile's: enough when the bound passes with it (the
    # common case; measured: tracking every block's max cost 10 % of the layer's time); else the whole tile's
    if bound <= 0.5 * TOL_FLOAT32 * max(1.0, ysample) or \
            bound <= 0.5 * TOL_FLOAT32 * max(1.0, float(_host(m.abs(y).max()))):
        return y
    return _products(xc.astype(np.float64), w64, c, shift, stride, O, m, put)[0].astype(dt)


def _footprint_norm(xc: Any, c: np.ndarray, k: tuple[int, ...], stride: tuple[int, ...], O: tuple[int, ...],
                    m: Any) -> float:
    """max over the outputs of ||x - c|| over the output's footprint (all channels, all taps): one plane of
    squares summed over the channels, then summed over the taps' (strided) windows."""
    sq = None
    for i in range(xc.shape[0]):
        d = xc[i] - xc.dtype.type(c[i])
        d *= d
        if sq is None:
            sq = d
        else:
            sq += d
    acc = m.zeros(O, dtype=sq.dtype)
    for tap in np.ndindex(*k):
        acc += sq[tuple(slice(t, t + (o - 1) * st + 1, st) for t, o, st in zip(tap, O, stride))]
    return math.sqrt(max(0.0, float(acc.max())))


def _products(xc: Any, w: np.ndarray, c: np.ndarray, shift: np.ndarray, stride: tuple[int, ...],
              O: tuple[int, ...], m: Any, put: Callable, track: bool = False) -> tuple[Any, float]:
    """sum over channels and taps of w * (x - c), plus shift, by cache-sized blocks of output rows.

    Stride 1: each tap's columns of a block are one flat run of every channel's plane (the rows' wrap-around
    positions are computed and dropped on the way out). With a stride: each tap's strided window. Returns
    (out, max |out| over the first block): the latter only with ``track`` (else 0), while it is in cache.
    """
    dt = np.dtype(xc.dtype)
    out_c, in_c = w.shape[:2]
    k = tuple(w.shape[2:])
    if len(k) == 1:  # a 1-D kernel: one row of one row
        xc, k, stride, O = xc[:, None], (1,) + k, (1,) + tuple(stride), (1,) + O
        w = w[:, :, None]
    taps = list(np.ndindex(*k))
    T, K = len(taps), len(taps) * in_c
    w2 = put(np.ascontiguousarray(np.moveaxis(w.reshape(out_c, in_c, T), 2, 1).reshape(out_c, K)))  # tap-major
    cd = put(np.ascontiguousarray(c.reshape(in_c, 1)))
    sd = put(np.ascontiguousarray(shift.reshape(out_c, 1)))
    budget = BLOCK_BYTES if m is np else DEVICE_BLOCK_BYTES
    flat = all(s == 1 for s in stride)
    if flat:
        xc = m.ascontiguousarray(xc)
    Sy, Sx = xc.shape[-2:]
    ny, ox = O[-2], O[-1]
    width = Sx if flat else ox  # columns a block row takes
    row = K * width * dt.itemsize
    nb, bx = (max(1, min(ny, budget // row)), width) if row <= budget else (1, max(1, budget // (K * dt.itemsize)))
    out = m.empty((out_c,) + O, dtype=dt)
    buf = m.empty(K * nb * bx, dtype=dt)
    tbuf = m.empty(out_c * nb * bx, dtype=dt)
    sy, sx = stride[-2], stride[-1]
    ymax = 0.0
    for outer in np.ndindex(*O[:-2]):  # the axes before the last two (a 3-D kernel's z): one output plane each
        for r0 in range(0, ny, nb):
            b = min(nb, ny - r0)
            for x0 in range(0, ox if bx < width else 1, bx):
                e = min(bx, ox - x0) if bx < width else width  # columns per block row
                n = b * e
                cols = buf[:K * n].reshape(T, in_c, n)
                for j, tap in enumerate(taps):
                    src = tuple(o * st + t for o, st, t in zip(outer, stride, tap[:-2]))
                    ty, tx = tap[-2], tap[-1]
                    if flat:  # one flat run per channel: rows r0.. of the plane, shifted by the tap
                        plane = xc[(slice(None),) + src].reshape(in_c, Sy * Sx)
                        q = (r0 + ty) * Sx + x0 + tx
                        have = min(n, Sy * Sx - q)  # the last block's last row may run off the plane's end
                        m.subtract(plane[:, q:q + have], cd, out=cols[j, :, :have])
                        if have < n:
                            cols[j, :, have:] = 0  # only dropped outputs read these
                    else:
                        win = xc[(slice(None),) + src + (slice(r0 * sy + ty, (r0 + b - 1) * sy + ty + 1, sy),
                                                         slice(x0 * sx + tx, (x0 + e - 1) * sx + tx + 1, sx))]
                        m.subtract(win, cd[:, :, None], out=cols[j].reshape(in_c, b, e))
                tmp = tbuf[:out_c * n].reshape(out_c, n)
                cm = cols.reshape(K, n)
                if m is np:
                    np.matmul(w2, cm, out=tmp)
                else:  # CuPy: plain products (its matmul wants contiguous outputs)
                    tmp[...] = w2 @ cm
                if bx < width:  # part of one row
                    dst = out[(slice(None),) + outer + (r0, slice(x0, x0 + e))]
                    val = tmp
                else:  # whole rows: drop the wrap-around columns of a flat block
                    dst = out[(slice(None),) + outer + (slice(r0, r0 + b),)]
                    val = tmp.reshape(out_c, b, e)[:, :, :ox]
                m.add(val, sd.reshape((out_c,) + (1,) * (val.ndim - 1)), out=dst)  # bias and offset term, in cache
                if track:  # the first block only: a lower bound of the tile's max |out|
                    ymax = max(float(dst.max()), -float(dst.min()))
                    track = False
    return out, ymax
