"""``stochastic``: the reference of the random kernel draws (counter-based, so any window reproduces them)."""

from __future__ import annotations

import math

import numpy as np

from .base import op, resolve_on
from .kernels import kernel_array, normalize_kernel
from .local import pad

_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1

def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(_M1)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))

def _alias(p: np.ndarray) -> tuple[list[int], list[int]]:
    """Walker/Vose alias table in exact integers: weights floor(p_i K 2^32), remainder on the largest."""
    k, one = p.size, 1 << 32
    w = [math.floor(float(v) * k * one) for v in p]
    w[int(np.argmax(p))] += k * one - sum(w)
    thr, alias = [one] * k, list(range(k))
    small = [i for i in range(k) if w[i] < one]
    large = [i for i in range(k) if w[i] >= one]
    while small and large:
        s, g = small.pop(), large[-1]
        thr[s], alias[s] = w[s], g
        w[g] -= one - w[s]
        if w[g] < one:
            large.pop()
            small.append(g)
    for i in small + large:
        thr[i] = one
    return thr, alias

@op
def stochastic(x, dims, kernel, axes=None, origin=0, normalize="none", temperature=1.0, seed=0,
               mode="reflect", cval=0.0, base_dir=None, offset=None):
    """Each voxel copies the input at an offset drawn from the kernel's probabilities. The draw at global
    coordinates (c_0, ..., c_n) over every axis in tczyx order: h_0 = mix(seed * G + G),
    h_(j+1) = mix(h_j + (c_j + 1) G) (splitmix64's finaliser, G its golden gamma, uint64 arithmetic); the
    high 32 bits of h pick an alias-table bucket, the low 32 bits keep it or take its alias.
    ``offset`` ({axis: start}): ``x`` is a part of the array starting there (its draws are the array's)."""
    k = kernel_array(kernel, base_dir)
    if normalize != "none":
        k = normalize_kernel(k, normalize, temperature)
    prob = k / k.sum()
    on = resolve_on(dims, axes, default={1: "x", 2: "yx", 3: "zyx"}.get(prob.ndim, "yx"))
    if prob.ndim == 1 and len(on) > 1:
        prob = prob.reshape((1,) * (len(on) - 1) + (-1,))
    origins = [origin] * prob.ndim if isinstance(origin, int) else list(origin)
    centers = [s // 2 + o for s, o in zip(prob.shape, origins)]
    thr, alias = _alias(prob.ravel())
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        h = _mix(np.array([(seed * _GOLDEN + _GOLDEN) & _MASK64], dtype=np.uint64)).reshape((1,) * x.ndim)
        for j, n in enumerate(x.shape):
            start = int((offset or {}).get(dims[j], 0))
            c = ((np.arange(start, start + n, dtype=np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN))
            h = _mix(h + c.reshape([-1 if i == j else 1 for i in range(x.ndim)]))
        h = np.broadcast_to(h, x.shape)
        bucket = ((h >> np.uint64(32)) * np.uint64(prob.size)) >> np.uint64(32)
    bucket = bucket.astype(np.intp)
    low = h & np.uint64(0xFFFFFFFF)
    choice = np.where(low < np.asarray(thr, dtype=np.uint64)[bucket], bucket, np.asarray(alias)[bucket])
    offsets = np.unravel_index(choice, prob.shape)  # per kernel axis: the drawn tap
    pads = [(0, 0)] * x.ndim
    for a, c, s in zip(on, centers, prob.shape):
        pads[dims.index(a)] = (c, s - 1 - c)
    xp = pad(x, pads, mode, cval)
    idx = list(np.indices(x.shape))
    for a, off in zip(on, offsets):
        i = dims.index(a)
        idx[i] = idx[i] + off  # padded position = output position - centre + tap + centre
    return xp[tuple(idx)], dims
