"""``threshold {method: otsu | li | yen | mean}``: skimage.filters.threshold_<method> of the whole input,
exactly, then the point op ``x > threshold`` (uint8 0/1).

The statistics come from one or two tree reductions over the op's input (:func:`convpipe.stats._reduce`:
per-chunk summaries merged in a fixed tree, memory bounded by a few summaries), built as scikit-image builds
them (skimage 0.26, ``skimage/filters/thresholding.py`` and ``skimage/exposure/exposure.py``):

- integer input: one bin per integer value from the minimum to the maximum (``np.bincount``); the counts of
  all chunks add up to exactly skimage's histogram.
- float input (otsu, yen): ``numpy.histogram(x, 256)`` over the autodetected range [min, max]. Each value's
  bin depends only on the value, the range and the bin edges, so ``numpy.histogram(chunk, 256, range=(min,
  max))`` with the global min and max as scalars of the input's dtype gives counts that add up to exactly the
  whole array's; the bin centres are numpy's own edges of that call.
- li on float input iterates on the values: the distinct finite values and their counts are gathered (at
  most :data:`LI_DISTINCT_LIMIT`; skimage's default stopping tolerance is half the smallest gap between
  distinct values, which needs them all), then skimage's loop runs on them in the input's float type. The
  class means are sums in float64 rounded to that type, where skimage sums in the type itself (pairwise):
  the two can differ in the last bit, so li on float input equals skimage's up to that rounding.
- mean: the exact sum (integers) or a float64 sum (floats) divided by the count, as numpy.mean.

The threshold formulas below are scikit-image's (BSD-3-Clause), transcribed line by line so that every
float32 operation happens in the same type and order: the library does not depend on scikit-image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import InputError
from ...stats import _reduce
from ..base import NO_CONTEXT, Context
from ..intensity import _GlobalOp

NBINS = 256
#: integer inputs: at most this many integer bins from min to max (8 MiB of counts per summary)
INT_BINS_LIMIT = 1 << 20
#: li on float input: at most this many distinct values are gathered
LI_DISTINCT_LIMIT = 1 << 24


# --------------------------------------------------------------------------- reductions


def _as_numeric(darr):
    """bool input as uint8 (skimage histograms booleans as integers too)."""
    return darr.astype(np.uint8) if np.dtype(darr.dtype).kind == "b" else darr


def _without_nan(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``x`` without its NaN (flattened when any are dropped, ``x`` itself when none) and how many there were.

    Shared by the range and the distinct-value pre-passes, so both follow one rule for what a value is: NaN
    never is one, it is counted apart (the range's count is how :func:`compute_threshold` refuses NaN).
    """
    if x.dtype.kind != "f":
        return x, 0
    m = np.isnan(x)
    nan = int(np.count_nonzero(m))
    return (x[~m] if nan else x), nan


def _range_chunk(x: np.ndarray) -> tuple:
    """(n, NaN count, non-NaN count, min, max) of one chunk; min/max as scalars of its dtype."""
    x = np.asarray(x)
    v, nan = _without_nan(x)
    if v.size == 0:
        return x.size, nan, 0, None, None
    return x.size, nan, v.size, v.min(), v.max()


def _range_merge(parts):
    have = [p for p in parts if p[2]]
    return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts),
            min(p[3] for p in have) if have else None, max(p[4] for p in have) if have else None)


def value_range(darr, compute: Callable | None = None) -> tuple[int, int, Any, Any]:
    """(count, NaN count, min, max) of the non-NaN values, min/max as scalars of the array's dtype."""
    n, nan, _, lo, hi = _reduce(darr, _range_chunk, _range_merge, compute)
    return int(n), int(nan), lo, hi


def int_histogram(darr, lo: int, hi: int, compute: Callable | None = None) -> np.ndarray:
    """Counts of every integer value in [lo, hi] (int64), as skimage's ``_bincount_histogram``."""
    nb = int(hi) - int(lo) + 1

    def chunk(x):
        v = np.asarray(x).ravel().astype(np.int64) - int(lo)
        return np.bincount(v, minlength=nb).astype(np.int64)

    return _reduce(darr, chunk, lambda parts: np.sum(parts, axis=0), compute)


def float_histogram(darr, lo, hi, nbins: int = NBINS, compute: Callable | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """numpy.histogram(whole, nbins) counts (int64) and bin edges, from per-chunk histograms over [lo, hi]."""
    dt = np.dtype(darr.dtype)
    rng = (dt.type(lo), dt.type(hi))  # scalars of the data's type: numpy's bin type and edges follow them

    def chunk(x):
        return np.histogram(np.asarray(x).ravel(), bins=nbins, range=rng)[0].astype(np.int64)

    counts = _reduce(darr, chunk, lambda parts: np.sum(parts, axis=0), compute)
    _, edges = np.histogram(np.array([rng[0]], dtype=dt), bins=nbins, range=rng)
    return counts, edges


def _sum_chunk(x: np.ndarray) -> tuple:
    """(n, exact integer sum) for integers (64-bit split in halves), (n, float64 sum) for floats."""
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        v = x.astype(np.int64) if x.dtype.itemsize < 8 or x.dtype.kind == "i" else x
        if x.dtype.itemsize < 4:
            return x.size, int(v.sum(dtype=np.int64))
        hi = (v >> 32).astype(np.int64) if v.dtype.kind == "i" else (v >> np.uint64(32)).astype(np.int64)
        lo = (v & 0xFFFFFFFF).astype(np.int64)
        return x.size, (int(hi.sum(dtype=np.int64)) << 32) + int(lo.sum(dtype=np.int64))
    return x.size, float(np.sum(x, dtype=np.float64))


def _sum_merge(parts):
    n = sum(p[0] for p in parts)
    vals = [p[1] for p in parts]
    if all(isinstance(v, int) for v in vals):
        return n, sum(vals)
    return n, math.fsum(float(v) for v in vals)


def _unique_chunk(x: np.ndarray) -> tuple:
    """Distinct non-NaN values and their counts, NaN count, whether +inf / -inf occur."""
    x, nan = _without_nan(np.asarray(x).ravel())
    v, c = np.unique(x, return_counts=True)
    if v.size > LI_DISTINCT_LIMIT:
        raise _TooMany()
    return v, c.astype(np.int64), nan


class _TooMany(Exception):
    pass


def _unique_merge(parts):
    vals = np.concatenate([p[0] for p in parts])
    cnts = np.concatenate([p[1] for p in parts])
    v, inv = np.unique(vals, return_inverse=True)
    if v.size > LI_DISTINCT_LIMIT:
        raise _TooMany()
    return v, np.bincount(inv.ravel(), weights=cnts, minlength=v.size).astype(np.int64), sum(p[2] for p in parts)


# --------------------------------------------------------------------------- skimage's formulas


def otsu_from_hist(counts: np.ndarray, bin_centers: np.ndarray):
    """skimage.filters.threshold_otsu(hist=(counts, bin_centers)), line by line."""
    counts, bin_centers = _trim(counts, bin_centers)
    if counts.size == 1:
        return bin_centers[0]
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * bin_centers) / weight1
    mean2 = (np.cumsum((counts * bin_centers)[::-1]) / weight2[::-1])[::-1]
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    idx = np.argmax(variance12)
    return bin_centers[idx]


def yen_from_hist(counts: np.ndarray, bin_centers: np.ndarray):
    """skimage.filters.threshold_yen(hist=(counts, bin_centers)), line by line."""
    counts, bin_centers = _trim(counts, bin_centers)
    if bin_centers.size == 1:
        return bin_centers[0]
    pmf = counts.astype("float32", copy=False) / counts.sum()
    P1 = np.cumsum(pmf)  # noqa: N806  (skimage's names)
    P1_sq = np.cumsum(pmf ** 2)  # noqa: N806
    P2_sq = np.cumsum(pmf[::-1] ** 2)[::-1]  # noqa: N806
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = np.log(((P1_sq[:-1] * P2_sq[1:]) ** -1) * (P1[:-1] * (1.0 - P1[:-1])) ** 2)
    return bin_centers[crit.argmax()]


def _trim(counts, bin_centers):
    """skimage's ``_validate_image_histogram``: drop empty bins at both ends; counts as float32."""
    if counts[0] == 0 or counts[-1] == 0:
        cond = counts > 0
        start = np.argmax(cond)
        end = cond.size - np.argmax(cond[::-1])
        counts, bin_centers = counts[start:end], bin_centers[start:end]
    return counts.astype("float32", copy=False), bin_centers


def li_int(counts: np.ndarray, lo, dtype: np.dtype):
    """skimage.filters.threshold_li on an integer image whose values lo, lo+1, ... occur ``counts`` times."""
    dtype = np.dtype(dtype)
    image_min = dtype.type(lo)
    nz = np.nonzero(counts)[0]
    if nz.size == 1:
        return image_min  # np.all(image == image.flat[0]): that value
    span = counts.size - 1
    if span > np.iinfo(dtype).max:  # skimage's `image -= image_min` would wrap around in the input's type
        raise ValueError(f"the range of the values ({span}) overflows {dtype} in scikit-image's arithmetic; "
                         "cast the input to a wider type first (astype)")
    n = int(counts.sum())
    total = int(np.dot(np.arange(counts.size, dtype=np.int64), counts))  # the shifted image's exact sum
    tolerance = 0.5
    t_next = np.float64(float(total) / n)  # np.mean of the shifted integers (float64 sum, exact below 2**53)
    t_curr = -2 * tolerance
    bin_centers = np.arange(counts.size)  # skimage's histogram of the shifted image: 0 ... max - min
    hist = counts.astype("float32", copy=False)
    while abs(t_next - t_curr) > tolerance:
        t_curr = t_next
        foreground = bin_centers > t_curr
        background = ~foreground
        mean_fore = np.average(bin_centers[foreground], weights=hist[foreground])
        mean_back = np.average(bin_centers[background], weights=hist[background])
        if mean_back == 0:
            break
        t_next = (mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore))
    return t_next + image_min


def li_float(values: np.ndarray, counts: np.ndarray, dtype: np.dtype, n_nonnan: int):
    """skimage.filters.threshold_li on a float image of the non-NaN ``values`` (sorted, distinct; counts)."""
    t = dtype.type
    if n_nonnan == 0:
        return np.nan
    if values.size == 1:
        return values[0]  # every non-NaN value equal (inf too)
    finite = np.isfinite(values)
    values, counts = values[finite], counts[finite]
    if values.size == 0:
        return 0.0  # +inf and -inf only
    image_min = values.min()
    shifted = values - image_min  # skimage's in-place `image -= image_min`, in the image's type
    sv, inv = np.unique(shifted, return_inverse=True)
    sc = np.bincount(inv.ravel(), weights=counts, minlength=sv.size).astype(np.int64)
    tolerance = np.min(np.diff(sv)) / 2  # ValueError for a single finite value, as skimage

    def mean(sel):
        c = sc[sel]
        k = int(c.sum())
        if k == 0:
            return t(np.nan)
        return t(float(np.dot(sv[sel].astype(np.float64), c.astype(np.float64))) / k)

    t_next = mean(slice(None))
    t_curr = -2 * tolerance
    with np.errstate(divide="ignore", invalid="ignore"):
        while abs(t_next - t_curr) > tolerance:
            t_curr = t_next
            foreground = sv > t_curr
            mean_fore = mean(foreground)
            mean_back = mean(~foreground)
            if mean_back == 0.0:
                break
            t_next = (mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore))
    return t_next + image_min


# --------------------------------------------------------------------------- the op


class AutoThreshold(_GlobalOp):
    """``threshold {method}``: what ``threshold`` expands into when a method is given (see the module)."""

    name = "threshold"
    hides_nonfinite = True  # inf > t is 1, NaN > t is 0

    def needs(self):
        return []

    def out_dtype(self, compute):
        return np.dtype(np.uint8)

    def describe(self):
        return f"threshold(method={self.params.method})"

    def method(self) -> str:
        return f"elementwise (after a {self.params.method} threshold pre-pass over the whole input)"

    def _where(self) -> str:
        return self.step.path if self.step is not None else "threshold"

    def estimate_prepasses(self):
        """Estimate only: two computations over the whole input (the value range, then the histogram or
        distinct values), and their work per voxel in x*2+1 probes (measured on the coins: ~0.4 us a voxel)."""
        return (2, 100.0)

    def prepare_from(self, darr, compute: Callable | None = None) -> None:
        try:
            value = compute_threshold(darr, self.params.method, compute)
        except InputError:
            raise
        except (ValueError, ZeroDivisionError) as e:  # what scikit-image itself raises on such an input
            raise InputError(f"{self._where()}: {self.params.method} threshold of this input: {e}") from None
        self.threshold = value
        self.stats = {"threshold": float(value)}

    def prepare(self, stats: dict[str, float]) -> None:
        self.threshold = np.float64(stats["threshold"])
        self.stats = {"threshold": float(stats["threshold"])}

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """x > the whole input's threshold, as 0/1.

        Parameters
        ----------
        x : array, any shape; the stored values (raw_input: integers as a float type that holds them)
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape, uint8
        """
        self._need_prepared()
        # a float64 scalar: numpy compares a float32 block in float64 then (never rounding the threshold)
        return (x > np.float64(self.threshold)).astype(np.uint8)

    @property
    def domain_nonfinite(self) -> bool:
        return False  # the output is 0/1 whatever the threshold


def compute_threshold(darr, method: str, compute: Callable | None = None):
    """skimage.filters.threshold_<method> of the whole dask array ``darr`` (see the module docstring)."""
    from ...stats import _as_dask

    darr = _as_numeric(_as_dask(darr))
    dt = np.dtype(darr.dtype)
    if method == "mean":
        n, s = _reduce(darr, _sum_chunk, _sum_merge, compute)
        if isinstance(s, int):
            return np.float64(float(s) / n)
        return dt.type(s / n)
    if method == "li" and dt.kind == "f":
        try:
            v, c, nan = _reduce(darr, _unique_chunk, _unique_merge, compute)
        except _TooMany:
            raise InputError(f"threshold li on a float input with more than {LI_DISTINCT_LIMIT} distinct values: "
                             "scikit-image's stopping tolerance needs them all; cast to an integer type first "
                             "(astype uint16 after a rescale), or use otsu / yen / mean") from None
        return li_float(v, c, dt, int(c.sum()))
    n, nan, lo, hi = value_range(darr, compute)
    if dt.kind in "iu":
        nb = int(hi) - int(lo) + 1
        if nb > INT_BINS_LIMIT:
            raise InputError(f"threshold {method}: an integer input spanning {nb} values needs as many histogram "
                             f"bins (at most {INT_BINS_LIMIT}); rescale or cast to float first")
        counts = int_histogram(darr, lo, hi, compute)
        if method == "li":
            return li_int(counts, lo, dt)
        centers = np.arange(int(lo), int(hi) + 1)
        if method == "otsu":
            return dt.type(lo) if lo == hi else otsu_from_hist(counts, centers)
        return yen_from_hist(counts, centers)
    # float otsu / yen: numpy.histogram over the autodetected range refuses NaN and inf, as skimage does
    if nan or lo is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        raise InputError(f"threshold {method}: the input holds NaN or infinite values; scikit-image's histogram "
                         "refuses a non-finite range")
    if method == "otsu" and lo == hi:
        return lo  # every value equal: skimage returns it
    counts, edges = float_histogram(darr, lo, hi, NBINS, compute)
    centers = (edges[:-1] + edges[1:]) / 2.0
    return otsu_from_hist(counts, centers) if method == "otsu" else yen_from_hist(counts, centers)
