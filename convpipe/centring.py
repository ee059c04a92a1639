"""Centring a tile before a float32 run of shift-aware ops: exact results on offset data.

Why. A float32 sum of terms much larger than its result loses the result's digits. On offset data (a uint16
camera image near 30 000 with a range of a few hundred) every op whose result is small next to its input
(derivatives and edges, zero-sum kernels, high-pass filters, after smoothing or not) computes such sums: the
float32 rounding of the 30 000s is ~2e-3, and the result of a Laplacian of Gaussian is ~1, so SPEC.md's
tolerance (1e-5 * max(1, max|oracle|)) was missed by 5-40x. The rounding of the float32 weights adds
``c * sum|w| * 6e-8`` of its own (a second-derivative Gaussian's weights do not even sum to 0 in float64).

What. Each op declares how it answers a constant shift of its input (:meth:`convpipe.ops.base.Op.shift_gain`):
``op(x - c) = op(x) - g * c``. For a run of consecutive ops that declare it, the tile engine
(:func:`convpipe.tiles.run_chain`) subtracts a per-tile constant ``c`` before the run, runs it on the centred
values, and adds ``g_total * c`` (``g_total`` the product of the gains, in float64) back after it; once a
gain is 0 (a derivative) nothing is added back. The float32 sums then hold terms of the size of the data's
*range*, not of its offset, and the offset's contribution is exact in float64.

- ``c`` is the tile's mid-range (the least ``max|x - c|``) rounded to float32, so ``x - c`` is exact for
  uint16 / int16 data, and ``c`` differs by tile: each tile's rounding differs, each within tolerance.
- Only in float32 (``precision: float64`` is untouched), only where it gains something: a run holding an op
  whose gain is not 1 (a run of smoothing filters and rank filters loses no digits), on values whose
  mid-range is larger than their range.
- A tile holding NaN/inf is centred too, on its finite values' mid-range: SPEC.md wants the oracle's result
  on the finite voxels outside the non-finite footprints, which lose the tolerance on offset data as any
  other. ``NaN - c = NaN`` and ``+-inf - c = +-inf`` (and adding ``g_total * c`` back keeps them), so the
  footprints hold what the arithmetic gives, NaN where +inf meets -inf or a zero weight, as uncentred. The
  rules of :mod:`convpipe.finite` are untouched: such a tile is never checked for overflow nor run again op
  by op, and the op-by-op run (of a finite tile that overflowed) computes uncentred anyway.
- Mode ``constant`` pads with ``cval``: the engine pads the centred block with ``cval - c`` instead. Ops that
  reset the padding to cval before each 1-D pass (scipy's per-pass constant padding, ``wants_outside`` with
  cval != 0) reset it to the true cval *as the centred intermediate holds it*: after passes of kernels
  ``w_1 .. w_k`` the intermediate is the true one minus ``c * sum(w_1) * .. * sum(w_k)``, so pass ``k + 1``
  pads with ``cval - c * prod(sum(w_j))`` (:func:`pass_cvals`, the op reads ``c`` from ``Context.shift``).

The CPU path imports nothing from CuPy: the array module is the block's own (``xp``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: a gain within this of 1 loses no digits to cancellation (smoothing: a kernel's float64 sum is 1 +- 1e-16)
_UNIT = 1e-6


def gains(ops: Sequence[Any], compute: np.dtype) -> list[float | None]:
    """Each op's response to a shift (None: unknown, or nothing is centred in this compute dtype)."""
    if np.dtype(compute) != np.float32:
        return [None] * len(ops)
    return [None if op.raw_input else op.shift_gain() for op in ops]


def worth(g: Sequence[float | None]) -> list[bool]:
    """Per op: whether centring before it pays, i.e. its run of shift-aware ops, from it on, holds an op
    whose gain is not 1 (a derivative, a zero-sum or unnormalized kernel)."""
    out = [False] * len(g)
    pays = False
    for i in range(len(g) - 1, -1, -1):
        if g[i] is None:
            pays = False
            continue
        pays = pays or abs(g[i] - 1.0) > _UNIT
        out[i] = pays
    return out


def pass_cvals(cval: float, shift: float, weights: dict, order: Sequence[int]) -> list[float]:
    """The padding of each 1-D pass in ``order`` (scipy's per-pass ``cval``) for a block centred by ``shift``.

    Pass ``k`` reads the centred intermediate of passes ``0 .. k-1``: true values minus ``shift`` times the
    product of their kernels' sums (float64, the oracle's weights), so the true cval is ``cval`` minus the
    same. Pass 0 reads the block the engine padded (``cval - shift``); listed for completeness.
    """
    out, gain = [], 1.0
    for a in order:
        if a not in weights:
            continue
        out.append(float(cval) - float(shift) * gain if shift else float(cval))
        gain *= float(np.sum(np.asarray(weights[a][0], dtype=np.float64)))
    return out


def centre(u: Any, compute: np.dtype, xp: Any = np, *, known: tuple[float, float] | None = None,
           inplace: bool = False) -> tuple[Any, float]:
    """``(u - c, c)`` in ``compute`` with ``c`` the mid-range of ``u``'s finite values rounded to ``compute``;
    ``(u, 0.0)`` when ``u`` holds no finite value or centring gains little (``|c|`` no larger than the range).

    ``known``: ``(min, max)`` of ``u`` when the caller has them (the finiteness check computed them; NaN or
    inf there: ``u`` holds non-finite values, and the finite values' range is computed here).
    ``inplace``: ``u`` (of dtype ``compute``) is the caller's to overwrite: no new block is allocated (the
    allocation of a fresh block costs twice the subtraction).
    """
    compute = np.dtype(compute)
    c = centre_value(u, compute, xp, known=known)
    if not c:
        return u, 0.0
    if inplace and u.dtype == compute:
        xp.subtract(u, compute.type(c), out=u)
        return u, c
    if u.dtype == compute or u.dtype.itemsize < compute.itemsize or (u.dtype.kind in "iu" and u.dtype.itemsize <= 2):
        # one pass, and exact: the values and c are float32 numbers within a factor 2 of each other or integers
        return xp.subtract(u, compute.type(c), dtype=compute), c
    return xp.subtract(u, c, dtype=np.float64).astype(compute), c  # int32 / float64 stored values


def centre_value(u: Any, compute: np.dtype, xp: Any = np, *, known: tuple[float, float] | None = None) -> float:
    """The ``c`` of :func:`centre` (a value of ``compute``), or 0.0 where ``u`` is not worth centring: for a
    caller that subtracts it while it copies the block anyway (``convpipe.tiles``' gather of an edge tile)."""
    compute = np.dtype(compute)
    if getattr(u, "size", 0) == 0 or u.dtype.kind not in "iuf":
        return 0.0
    if known is None and u.dtype.kind in "iu" and u.size > 1 << 16 and u.flags.c_contiguous:
        # integers are finite and c need only lie near the values (x - c is exact for any c of this
        # grid): every 61st value, a 1/60 of the two reductions (min and max of a uint16 tile cost 40% of its cast)
        s = u.reshape(-1)[::61]
        known = (float(s.min()), float(s.max()))
    lo, hi = known if known is not None else (float(u.min()), float(u.max()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        # NaN / inf in the block: c from its finite values (NaN - c is NaN, +-inf - c is +-inf, so the
        # non-finite footprints keep what the arithmetic gives). Only such tiles pay this second reduction
        fin = u[xp.isfinite(u)]
        if not fin.size:
            return 0.0
        lo, hi = float(fin.min()), float(fin.max())
    c = float(compute.type((lo + hi) / 2))
    return 0.0 if abs(c) <= hi - lo else c


def restore(y: Any, shift: float) -> Any:
    """``y + shift`` (the offset's contribution, computed in float64, cast once to ``y``'s dtype)."""
    s = y.dtype.type(shift)  # a numpy scalar: CuPy refuses 0-d numpy arrays
    if getattr(getattr(y, "flags", None), "owndata", False):  # the op's own result: add in place
        y += s
        return y
    return y + s
