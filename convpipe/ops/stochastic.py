"""``stochastic``: every output voxel copies the input voxel at a random offset drawn from a kernel.

The kernel's weights become probabilities by ``normalize`` (``none``: they must already be non-negative
and sum to 1; ``sum``/``l1``: divided by their sum, all weights must be >= 0; ``softmax`` with
``temperature``). The offset of the voxel at global coordinates (c_0, ..., c_{d-1}) (over all the op's
input axes, in array order) is drawn from a counter-based generator, a pure function of
``(seed, c_0, ..., c_{d-1})``: splitmix64's finaliser chained over the coordinates in uint64 arithmetic.
Its high 32 bits pick a bucket of a Walker alias table (built in exact integer arithmetic), its low 32 bits
choose between the bucket's entry and its alias: O(1) per voxel. No generator state and no dependence on
the tile, chunk or task: the result is bit-identical for every chunking and tiling, and the mean over seeds
tends to ``correlate`` with the normalised kernel (E[out_i] = sum_k p_k x[i + k - center]).

Engine contract: the op sets ``wants_coords = True``; the tiling engine then calls ``apply(x, ctx)`` with
``ctx.coords = {axis: global coordinate of every output index along that axis}``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..kernels import kernel_from_source
from ..params.stochastic import StochasticParams, probabilities
from .base import NO_CONTEXT, Context, Op
from .local.base import place_kernel

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def mix64(z: Any) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64 with full avalanche); returns a new array."""
    return _mix_inplace(np.array(z, dtype=np.uint64, copy=True, ndmin=1)).reshape(np.shape(z))


def _mix_inplace(z: np.ndarray) -> np.ndarray:
    t = z >> _S30
    z ^= t
    z *= _M1
    np.right_shift(z, _S27, out=t)
    z ^= t
    z *= _M2
    np.right_shift(z, _S31, out=t)
    z ^= t
    return z


def voxel_hash(seed: int, coords: list[np.ndarray]) -> np.ndarray:
    """uint64 hash of (seed, coordinates), broadcast over the outer product of the per-axis ``coords``.

    h_0 = mix(seed * golden + golden); h_{j+1} = mix(h_j + (c_j + 1) * golden). Partial hashes of the
    leading axes are computed on their (small) outer product only; just the last step is full size.
    """
    nd = len(coords)
    with np.errstate(over="ignore"):
        h = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + _GOLDEN).reshape((1,) * nd)
        for j, c in enumerate(coords):
            c = np.asarray(c, dtype=np.int64).astype(np.uint64)
            c = (c + np.uint64(1)) * _GOLDEN
            h = _mix_inplace(h + c.reshape([-1 if k == j else 1 for k in range(nd)]))
    return h


def alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table of probabilities ``p`` in exact integer arithmetic.

    Bucket j (one of K, chosen by the high 32 bits of a hash) keeps j when the low 32 bits are below
    ``thr[j]``, else takes ``alias[j]``. Entry i is drawn with probability W_i / (K 2^32), where the integer
    weights W_i = floor(p_i K 2^32) (the rounding remainder on the largest) sum to K 2^32 exactly;
    a zero weight is never drawn. Integers only, so the table is the same on every machine.
    """
    k = p.size
    one = 1 << 32
    total = k * one
    w = [math.floor(float(v) * total) for v in p]
    w[int(np.argmax(p))] += total - sum(w)
    thr = [one] * k
    alias = list(range(k))
    small = [i for i in range(k) if w[i] < one]
    large = [i for i in range(k) if w[i] >= one]
    while small and large:
        s_, l_ = small.pop(), large[-1]
        thr[s_] = w[s_]
        alias[s_] = l_
        w[l_] -= one - w[s_]
        if w[l_] < one:
            large.pop()
            small.append(l_)
    for i in small + large:  # exactly full (integer arithmetic leaves no rounding residue)
        thr[i] = one
    return np.array(thr, dtype=np.uint64), np.array(alias, dtype=np.intp)


class Stochastic(Op):
    name = "stochastic"
    kind = "local"
    Params = StochasticParams
    wants_coords = True

    def setup(self) -> None:
        p = self.params
        base = self.step.spec.base_dir if (self.step is not None and self.step.spec is not None) else None
        try:
            prob = probabilities(kernel_from_source(p.kernel, base), p.normalize, p.temperature)
        except ValueError as e:
            raise self.error(str(e), "kernel") from None
        prob, self.axes, self.centers = place_kernel(self, prob, p.origin)
        self.prob = prob
        self.thr, self.alias = alias_table(prob.ravel())
        self.kidx = np.unravel_index(np.arange(prob.size), prob.shape)  # per kernel axis: k_a of each entry

    def halo(self):
        return {a: (c, s - 1 - c) for a, c, s in zip(self.axes, self.centers, self.prob.shape)}

    def draw(self, coords: list[np.ndarray]) -> np.ndarray:
        """Flat kernel index drawn for each voxel of the outer product of ``coords`` (all in_axes)."""
        h = voxel_hash(int(self.params.seed), coords)
        j = ((h >> np.uint64(32)) * np.uint64(self.thr.size)) >> np.uint64(32)  # bucket, uniform in [0, K)
        j = j.astype(np.intp)
        h &= np.uint64(0xFFFFFFFF)
        keep = h < np.take(self.thr, j)
        return np.where(keep, j, np.take(self.alias, j))

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """Each output voxel copies the padded block's voxel at its drawn offset.

        Parameters
        ----------
        x : numpy.ndarray, axes ``in_axes``, padded by ``halo()``; any dtype
        ctx : Context; ``ctx.coords`` (required): the global coordinate of every output index per axis

        Returns
        -------
        numpy.ndarray, ``x``'s shape less the halo along ``axes``, ``x``'s dtype
        """
        halo = self.halo()
        out_shape = []
        for i, a in enumerate(self.in_axes):
            lo, hi = halo.get(a, (0, 0))
            out_shape.append(x.shape[i] - lo - hi)
        if ctx.coords is None:
            raise RuntimeError("stochastic needs the global coordinates of its output (the engine gives "
                               "ctx.coords to ops with wants_coords)")
        cs = [np.asarray(ctx.coords[a], dtype=np.int64) for a in self.in_axes]
        for a, c, n in zip(self.in_axes, cs, out_shape):
            if c.size != n:
                raise RuntimeError(f"stochastic: {c.size} coordinates along {a!r} for {n} output voxels")
        if 0 in out_shape:
            return np.empty(out_shape, dtype=x.dtype)
        choice = self.draw(cs)
        xc = np.ascontiguousarray(x)
        nd = xc.ndim
        strides = [st // xc.itemsize for st in xc.strides]
        # flat index into the padded block: output position i reads padded position i + k_a along each
        # op axis (the halo below is the kernel's centre), i along the others
        off = np.zeros(self.prob.size, dtype=np.int64)
        for a, k in zip(self.axes, self.kidx):
            off += k.astype(np.int64) * strides[self.in_axes.index(a)]
        flat = np.take(off, choice)
        del choice
        for i, n in enumerate(out_shape):
            flat += (np.arange(n, dtype=np.int64) * strides[i]).reshape([-1 if j == i else 1 for j in range(nd)])
        return np.take(xc.reshape(-1), flat)

    def method(self) -> str:
        return "gather"

    def estimate_work(self):
        """Estimate only: a hash per voxel, the alias draw and the gather, whatever the kernel's size (the
        planner's model prices it as a direct kernel): 11 ns a voxel on the stack example's tiles, 19 units of
        ``factor_point`` (0.58 ns from a probe on a warm heap, convpipe.heap)."""
        return {"point": 19.0}

    def describe(self) -> str:
        return (f"stochastic(kernel {'x'.join(map(str, self.prob.shape))} over {self.axes}, "
                f"seed {self.params.seed})")
