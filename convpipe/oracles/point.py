"""Point ops (value by value) and global ops (statistics of the whole array)."""

from __future__ import annotations

import numpy as np

from .base import op

@op
def astype(x, dims, dtype):
    dt = np.dtype(dtype)
    x = np.asarray(x)
    if dt.kind in "iu" and x.dtype.kind == "f":
        info = np.iinfo(dt)
        x = np.clip(np.nan_to_num(x, nan=0.0), info.min, info.max)
    return x.astype(dt), dims

@op
def scale(x, dims, factor=1.0, offset=0.0):
    return np.asarray(x, dtype=np.float64) * factor + offset, dims

@op
def clip(x, dims, min=None, max=None):
    return np.clip(np.asarray(x, dtype=np.float64), min, max), dims

@op
def abs(x, dims):
    return np.abs(np.asarray(x, dtype=np.float64)), dims

@op
def log1p(x, dims):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log1p(np.asarray(x, dtype=np.float64)), dims

@op
def sqrt(x, dims):
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.asarray(x, dtype=np.float64)), dims

def auto_threshold(x: np.ndarray, method: str):
    """skimage.filters.threshold_<method> of the whole array, as stored (its dtype decides the histogram)."""
    from skimage import filters

    return getattr(filters, f"threshold_{method}")(np.asarray(x))


@op
def threshold(x, dims, value=None, method=None):
    """x > value; with ``method``, value = skimage.filters.threshold_<method> of the whole array as stored."""
    if method is not None:
        value = auto_threshold(x, method)
    return (np.asarray(x) > value).astype(np.uint8), dims

@op
def zscore(x, dims):
    """(x - mean) / std of the whole array, population std, float64 statistics (std 0: x - mean)."""
    v = np.asarray(x, dtype=np.float64)
    s = float(np.std(v))
    return (v - float(np.mean(v))) / (s if s != 0 else 1.0), dims

@op
def rescale(x, dims, in_range=None, percentiles=None, out_range=(0.0, 1.0)):
    """skimage.exposure.rescale_intensity on float input: clip to in_range, map linearly onto out_range
    (a degenerate in_range: clip to out_range); in_range = numpy.percentile (linear) or min/max of the array."""
    v = np.asarray(x, dtype=np.float64)
    if in_range is not None:
        lo, hi = (float(a) for a in in_range)
    elif percentiles is not None:
        lo, hi = (float(a) for a in np.percentile(v, percentiles))
    else:
        lo, hi = float(np.min(v)), float(np.max(v))
    omin, omax = (float(a) for a in out_range)
    v = np.clip(v, lo, hi)
    if lo == hi:
        return np.clip(v, omin, omax), dims
    return (v - lo) / (hi - lo) * (omax - omin) + omin, dims

POINT_OPS = ("astype", "scale", "clip", "abs", "log1p", "sqrt", "threshold")
GLOBAL_OPS = ("zscore", "rescale")
#: the local filters of SPEC.md's first table (scipy.ndimage / scikit-image references with a halo)
LOCAL_OPS = ("correlate", "convolve", "gaussian", "uniform", "sobel", "prewitt", "scharr", "laplace",
             "gaussian_laplace", "gaussian_gradient_magnitude", "difference_of_gaussians", "unsharp_mask",
             "median", "minimum", "maximum", "diffusion")
