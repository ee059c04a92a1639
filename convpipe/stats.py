"""Exact whole-array statistics over dask arrays, and the global point ops that need them.

``moments(darr) -> (count, mean, std)``
    float64 accumulation: each chunk gives (count, mean, M2) by two passes over its values in float64;
    chunks are merged pairwise in a fixed tree with Chan et al.'s update
    (delta = mean_b - mean_a; mean = mean_a + delta * n_b / n; M2 = M2_a + M2_b + delta^2 n_a n_b / n).
    Population std (ddof 0), like numpy.std. Also min and max (NaN propagates, as numpy).

``percentiles(darr, qs) -> values``
    numpy.percentile(method="linear") of the whole array, computed out of core and *exactly*: the two order
    statistics each percentile interpolates are found by a radix select over order-preserving unsigned
    keys of the values (IEEE floats: flip the sign bit of positives, all bits of negatives; signed ints:
    flip the sign bit). Each pass histograms the next 16 bits (``numpy.bincount``) of the keys that share
    the prefix found so far; a bucket small enough is pulled out whole and sorted instead. uint8/uint16
    need one pass, float32 at most two, float64 at most four. The interpolation is numpy's ``_lerp`` in
    float64: the result equals ``numpy.percentile(x.astype(float64), qs)`` bit for bit (and
    ``numpy.percentile(x, qs)`` for integer inputs). Any NaN gives NaN, as numpy.

Every pass is one dask computation of per-chunk summaries reduced in a fixed tree (fan-in 8): memory is
bounded by a few summaries, whatever the array's size, and the result does not depend on the scheduler.
``compute`` (default ``dask.compute``) lets the caller run the passes on its own cluster.

The global ops that use these statistics (``zscore``, ``rescale``) are :mod:`convpipe.ops.intensity`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

_MOMENT_KEYS = ("count", "mean", "std", "min", "max", "mean_shift", "mean_rest")
EXTRACT_LIMIT = 1 << 20  # a bucket with at most this many values is pulled out and sorted
_DIGIT = 16
_FANIN = 8


# --------------------------------------------------------------------------- the tree reduction


def _as_dask(x: Any):
    import dask.array as da

    return x if isinstance(x, da.Array) else da.from_array(np.asarray(x), chunks="auto")


def _reduce(darr, chunk_fn: Callable, combine_fn: Callable, compute: Callable | None):
    """combine_fn(list of chunk_fn(block) results, tree-reduced in block order) computed with ``compute``."""
    import dask
    from dask import delayed

    blocks = list(darr.to_delayed().ravel())
    level = [delayed(chunk_fn, pure=True)(b) for b in blocks]
    while len(level) > 1:
        level = [delayed(combine_fn, pure=True)(level[i:i + _FANIN]) for i in range(0, len(level), _FANIN)]
    (res,) = (compute or dask.compute)(level[0])
    return res


# --------------------------------------------------------------------------- moments


def _chunk_moments(x: np.ndarray) -> np.ndarray:
    """(n, shift, mean - shift, M2, min, max) of one chunk, float64.

    The mean is kept relative to a stored value of the data (``shift``, the chunk's first value when finite):
    on an offset much larger than the spread (an int64 near 2**40, 1e4 + 1e-6 noise) a mean rounded to
    float64 loses the digits that ``(x - mean) / std`` and the merge's between-chunk term need, while
    ``x - shift`` is exact for integers and for floats within a factor 2 of the shift (Sterbenz).
    """
    x = np.asarray(x)
    n = x.size
    if n == 0:
        return np.array([0.0, 0.0, 0.0, 0.0, np.inf, -np.inf])
    v = x.astype(np.float64, copy=False)
    shift = float(v.flat[0])
    if not math.isfinite(shift):
        shift = 0.0
    d = v - shift
    dm = d.mean()
    d = d - dm
    m2 = float(np.vdot(d.ravel(), d.ravel()))
    return np.array([float(n), shift, float(dm), m2, float(v.min()), float(v.max())])


def _merge_moments(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Chan et al.'s pairwise merge of (n, shift, mean - shift, M2, min, max), left to right, in the frame of
    the first non-empty part's shift (differences of stored values: exact for integers, Sterbenz for floats)."""
    acc = np.asarray(parts[0], dtype=np.float64)
    for b in parts[1:]:
        b = np.asarray(b, dtype=np.float64)
        na, nb = acc[0], b[0]
        if nb == 0:
            acc = np.array([*acc[:4], np.minimum(acc[4], b[4]), np.maximum(acc[5], b[5])])
            continue
        if na == 0:
            acc = np.array([*b[:4], np.minimum(acc[4], b[4]), np.maximum(acc[5], b[5])])
            continue
        k = acc[1]
        ma = acc[2]
        mb = (b[1] - k) + b[2]  # b's mean relative to k
        n = na + nb
        delta = mb - ma
        acc = np.array([n, k, ma + delta * (nb / n), acc[3] + b[3] + delta * delta * (na * nb / n),
                        np.minimum(acc[4], b[4]), np.maximum(acc[5], b[5])])
    return acc


def _summary_of(r: np.ndarray) -> dict[str, float]:
    n = int(r[0])
    std = math.sqrt(r[3] / n) if n and not math.isnan(r[3]) else (float("nan") if n else 0.0)
    return {"count": n, "mean": float(r[1] + r[2]), "std": std, "min": float(r[4]), "max": float(r[5]),
            "mean_shift": float(r[1]), "mean_rest": float(r[2])}


def moment_summary(darr, *, compute: Callable | None = None) -> dict[str, float]:
    """{count, mean, std, min, max} of the whole array, in float64 (population std)."""
    s = _moment_summary_full(darr, compute)
    return {k: s[k] for k in ("count", "mean", "std", "min", "max")}


def _moment_summary_full(darr, compute: Callable | None) -> dict[str, float]:
    """Also ``mean_shift`` and ``mean_rest``: the mean as a stored value plus a small rest, for ``(x - mean)``
    without the rounding of the mean to float64."""
    return _summary_of(_reduce(_as_dask(darr), _chunk_moments, _merge_moments, compute))


def moments(darr, *, compute: Callable | None = None) -> tuple[int, float, float]:
    """(count, mean, population std) of the whole array, float64 accumulation, chunk-merged exactly."""
    s = moment_summary(darr, compute=compute)
    return int(s["count"]), s["mean"], s["std"]


# --------------------------------------------------------------------------- order-preserving keys


def _key_info(dtype: np.dtype) -> tuple[np.dtype, int]:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return np.dtype(np.uint8), 8
    if dtype.kind not in "iuf":
        raise TypeError(f"percentiles of a {dtype} array are not supported")
    return np.dtype(f"u{dtype.itemsize}"), dtype.itemsize * 8


def to_keys(x: np.ndarray) -> np.ndarray:
    """Unsigned keys whose order is the values' order (NaNs sort to the ends; they are handled apart)."""
    x = np.asarray(x)
    udt, bits = _key_info(x.dtype)
    if x.dtype.kind == "b":
        return x.astype(np.uint8)
    u = x.view(udt)
    sign = udt.type(1 << (bits - 1))
    if x.dtype.kind == "u":
        return u
    if x.dtype.kind == "i":
        return u ^ sign
    return np.where(u & sign, ~u, u | sign)


def from_key(key: int, dtype: np.dtype) -> float:
    """The value (as float64) of one key."""
    dtype = np.dtype(dtype)
    udt, bits = _key_info(dtype)
    k = np.array([key], dtype=udt)
    sign = udt.type(1 << (bits - 1))
    if dtype.kind == "b":
        return float(k[0])
    if dtype.kind == "u":
        return float(k.view(dtype)[0])
    if dtype.kind == "i":
        return float((k ^ sign).view(dtype)[0])
    u = np.where(k & sign, k ^ sign, ~k)
    return float(u.view(dtype)[0])


# --------------------------------------------------------------------------- one scan over the data


class _Scan:
    """What one pass computes per chunk: moments, NaN count, bucket histograms, extracted buckets.

    ``groups`` are (prefix, prefix_bits, action) with action 'hist' (bincount of the next digit among
    keys with that prefix) or 'extract' (those keys, sorted at the end).
    """

    def __init__(self, bits: int, groups: list[tuple[int, int, str]], want_moments: bool, want_nan: bool):
        self.bits = bits
        self.groups = groups
        self.want_moments = want_moments
        self.want_nan = want_nan

    def digit_bits(self, pbits: int) -> int:
        return min(_DIGIT, self.bits - pbits)

    def chunk(self, x: np.ndarray) -> dict:
        x = np.asarray(x)
        out: dict[str, Any] = {}
        if self.want_moments:
            out["moments"] = _chunk_moments(x)
        if self.want_nan:
            out["nan"] = int(np.count_nonzero(np.isnan(x))) if x.dtype.kind == "f" else 0
        if self.groups:
            keys = to_keys(x).ravel()
            res = []
            for prefix, pbits, action in self.groups:
                if pbits:
                    shift = np.asarray(self.bits - pbits, dtype=keys.dtype)
                    sel = keys[(keys >> shift) == keys.dtype.type(prefix)]
                else:
                    sel = keys
                if action == "extract":
                    res.append(np.sort(sel))
                else:
                    d = self.digit_bits(pbits)
                    shift = np.asarray(self.bits - pbits - d, dtype=keys.dtype)
                    dig = ((sel >> shift) & keys.dtype.type((1 << d) - 1)).astype(np.intp)
                    res.append(np.bincount(dig, minlength=1 << d).astype(np.int64))
            out["groups"] = res
        return out

    def combine(self, parts: list[dict]) -> dict:
        out: dict[str, Any] = {}
        if self.want_moments:
            out["moments"] = _merge_moments([p["moments"] for p in parts])
        if self.want_nan:
            out["nan"] = sum(p["nan"] for p in parts)
        if self.groups:
            res = []
            for j, (_, _, action) in enumerate(self.groups):
                items = [p["groups"][j] for p in parts]
                if action == "extract":
                    res.append(np.sort(np.concatenate(items)))
                else:
                    res.append(np.sum(items, axis=0))
            out["groups"] = res
        return out


def _linear_positions(n: int, qs: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy's method='linear': previous / next 0-based ranks and gamma, exactly as numpy computes them."""
    q = np.true_divide(np.asarray(qs, dtype=np.float64), 100)
    vi = (n - 1) * q
    prev = np.floor(vi)
    nxt = prev + 1
    above = vi >= n - 1
    prev[above] = n - 1
    nxt[above] = n - 1
    below = vi < 0
    prev[below] = 0
    nxt[below] = 0
    gamma = np.asarray(vi - np.floor(vi), dtype=np.float64)
    return prev.astype(np.int64), nxt.astype(np.int64), gamma


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation (numpy/lib/_function_base_impl.py ``_lerp``)."""
    with np.errstate(invalid="ignore"):  # inf - inf at an infinite order statistic gives NaN, as numpy
        diff_b_a = b - a
        out = np.add(a, diff_b_a * t)
        np.subtract(b, diff_b_a * (1 - t), out=out, where=t >= 0.5)
    return out


def _check_qs(qs: Iterable[float]) -> list[float]:
    qs = [float(q) for q in qs]
    for q in qs:
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile {q!r} is outside [0, 100]")
    return qs


def summarize(darr, needs: Iterable[str], *, compute: Callable | None = None) -> dict[str, float]:
    """Every statistic named in ``needs`` of the whole array, in as few passes as possible.

    Keys: ``count``, ``mean``, ``std`` (population), ``min``, ``max``, ``mean_shift`` + ``mean_rest`` (the
    mean as a stored value plus a small rest, see :func:`_chunk_moments`), and ``percentile_key(q)`` for
    percentiles. Moments ride along with the first percentile pass.
    """
    darr = _as_dask(darr)
    needs = list(dict.fromkeys(needs))
    qs: list[float] = []
    want_m = False
    for k in needs:
        if k in _MOMENT_KEYS:
            want_m = True
        elif isinstance(k, str) and k.startswith("percentile:"):
            qs.append(float(k.split(":", 1)[1]))
        else:
            raise ValueError(f"unknown statistic {k!r}")
    qs = _check_qs(qs)
    out: dict[str, float] = {}
    first: dict | None = None
    if qs:
        vals, first = _percentiles(darr, qs, compute, want_moments=want_m)
        for q, v in zip(qs, vals):
            out[percentile_key(q)] = float(v)
    if want_m:
        if first is not None:
            m = _summary_of(first["moments"])
        else:
            m = _moment_summary_full(darr, compute)
        out.update({k: m[k] for k in _MOMENT_KEYS})
    return {k: out[k] for k in needs}


def percentile_key(q: float) -> str:
    return f"percentile:{float(q)!r}"


def percentiles(darr, qs: Iterable[float], *, compute: Callable | None = None) -> np.ndarray:
    """numpy.percentile(x.astype(float64), qs, method='linear') of the whole array, exactly (float64)."""
    vals, _ = _percentiles(_as_dask(darr), _check_qs(qs), compute)
    return vals


def _percentiles(darr, qs: list[float], compute, want_moments: bool = False) -> tuple[np.ndarray, dict | None]:
    n = int(np.prod(darr.shape, dtype=np.int64))
    if n == 0:
        raise ValueError("percentiles of an empty array")
    dtype = np.dtype(darr.dtype)
    _, bits = _key_info(dtype)
    prev, nxt, gamma = _linear_positions(n, qs)
    ranks = sorted(set(prev.tolist()) | set(nxt.tolist()))
    found: dict[int, int] = {}  # rank -> key
    # pending groups: (prefix, pbits, base rank, count, ranks)
    pending = [(0, 0, 0, n, ranks)]
    first = None
    is_float = dtype.kind == "f"
    while pending:
        groups = [(p, b, "extract" if c <= EXTRACT_LIMIT else "hist") for p, b, _, c, _ in pending]
        scan = _Scan(bits, groups, want_moments and first is None, is_float and first is None)
        res = _reduce(darr, scan.chunk, scan.combine, compute)
        if first is None:
            first = res
            if is_float and res["nan"]:
                return np.full(len(qs), np.nan), first
        nxt_pending = []
        for (prefix, pbits, base, count, rk), (_, _, action), data in zip(pending, groups, res["groups"]):
            if action == "extract":
                for r in rk:
                    found[r] = int(data[r - base])
                continue
            d = scan.digit_bits(pbits)
            cum = np.cumsum(data)
            by_digit: dict[int, list[int]] = {}
            for r in rk:
                by_digit.setdefault(int(np.searchsorted(cum, r - base, side="right")), []).append(r)
            for dig, rs in by_digit.items():
                new_prefix = (prefix << d) | dig
                new_base = base + (int(cum[dig - 1]) if dig else 0)
                if pbits + d == bits:
                    for r in rs:
                        found[r] = new_prefix
                else:
                    nxt_pending.append((new_prefix, pbits + d, new_base, int(data[dig]), rs))
        pending = nxt_pending
    a = np.array([from_key(found[r], dtype) for r in prev.tolist()], dtype=np.float64)
    b = np.array([from_key(found[r], dtype) for r in nxt.tolist()], dtype=np.float64)
    return _lerp(a, b, gamma), first
