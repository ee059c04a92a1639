"""Feature ops and their tables: peaks, filter_bank, blobs (scikit-image), match_template, stats."""

from __future__ import annotations

import itertools
import math

import numpy as np
import scipy.ndimage as ndi

from .base import canonical, insert_axis, op, per_plane, planes, resolve_on, table, transpose_to
from .kernels import kernel_array, named_kernel, normalize_kernel, orientation
from .layers import bank_kernels as _bank_file
from .local import correlate, edge_components

def _rows(hit: np.ndarray, dims: str) -> dict[str, np.ndarray]:
    idx = np.nonzero(hit)
    return {a: idx[i].astype(np.int64) for i, a in enumerate(dims)}

@op
def peaks(x, dims, radius, threshold=0.0, axes=None, table=None):
    return np.asarray(x), dims  # the image passes through

@table("peaks")
def peaks_table(x, dims, radius, threshold=0.0, axes=None, table=None):
    """Every voxel where value == maximum_filter(size 2 radius + 1 over axes, mode nearest) and
    value > threshold, on the stored values; columns: axes..., value."""
    on = resolve_on(dims, axes)
    v = np.asarray(x)
    size = [2 * radius + 1 if a in on else 1 for a in dims]
    hit = (v == ndi.maximum_filter(v, size=size, mode="nearest")) & (v > threshold)
    cols = _rows(hit, dims)
    cols["value"] = v[hit].astype(np.float64)
    return cols

def bank_kernels(kernels=None, gabor=None, normalize="none", temperature=1.0, base_dir=None) -> list[np.ndarray]:
    """filter_bank's kernels in channel order (a gabor bank: frequency-major; one .npy: its first axis)."""
    stacked = _bank_file(kernels, base_dir)
    if stacked is not None:
        return [normalize_kernel(k, normalize, temperature) for k in stacked]
    if kernels is not None:
        return [normalize_kernel(kernel_array(k, base_dir), normalize, temperature) for k in kernels]
    g = dict(gabor or {})
    n = g.get("orientations", 4)
    thetas = [k * math.pi / n for k in range(n)] if isinstance(n, int) else [float(t) for t in n]
    fr = g.get("frequencies", [0.1, 0.2])
    freqs = [float(f) for f in (fr if isinstance(fr, list) else [fr])]
    return [normalize_kernel(named_kernel("gabor", frequency=f, theta=t, sigma=g.get("sigma"),
                                          radius=g.get("radius"), offset=g.get("offset", 0.0)),
                             normalize, temperature) for f in freqs for t in thetas]

@op
def filter_bank(x, dims, kernels=None, gabor=None, axes=None, mode="reflect", cval=0.0, normalize="none",
                temperature=1.0, method="auto", base_dir=None, extent="same", stride=1):
    """Channel i = scipy.ndimage.correlate with kernel i (same mode and cval, extent, stride); adds a c axis."""
    ks = bank_kernels(kernels, gabor, normalize, temperature, base_dir)
    outs = [correlate(x, dims, kernel=k, axes=axes, mode=mode, cval=cval, extent=extent, stride=stride)[0]
            for k in ks]
    od = insert_axis(dims, "c")
    return np.stack(outs, axis=od.index("c")), od

_BLOB_PARAMS = ("min_sigma", "max_sigma", "num_sigma", "threshold", "overlap", "log_scale", "threshold_rel",
                "exclude_border")

@op
def blobs(x, dims, **p):
    return np.asarray(x), dims

@table("blobs")
def blobs_table(x, dims, axes=None, table=None, **p):
    """skimage.feature.blob_log on every plane over axes; columns: every axis, sigma."""
    from skimage.feature import blob_log

    on = resolve_on(dims, axes)
    kw = {k: v for k, v in p.items() if k in _BLOB_PARAMS}
    v = np.asarray(x, dtype=np.float64)
    cols: dict[str, list] = {a: [] for a in dims}
    cols["sigma"] = []
    for sl, fixed in planes(dims, on, v.shape):
        for b in blob_log(v[sl], **kw):
            for a in dims:
                cols[a].append(int(fixed[a]) if a in fixed else int(round(b[on.index(a)])))
            cols["sigma"].append(float(b[-1]))
    return {k: np.asarray(c, dtype=np.float64 if k == "sigma" else np.int64) for k, c in cols.items()}

def template_array(template, dims: str, axes: str | None = None, source=None, base_dir=None
                   ) -> tuple[np.ndarray, str]:
    """match_template's template and the axes it spans (tczyx order): a kernel source, whose dimensions
    follow ``axes`` (default yx / zyx), or ``{crop: ...}`` of ``source = (pipeline input, its dims)``."""
    if isinstance(template, dict) and "crop" in template:
        if source is None:
            raise ValueError("a crop template needs the pipeline's input (source=)")
        x0, d0 = source
        crop = template["crop"]
        sel = tuple(slice(*crop[a]) if isinstance(crop.get(a), list) else crop.get(a, 0) for a in d0)
        spans = "".join(a for a in d0 if isinstance(crop.get(a), list))
        t = np.asarray(x0[sel], dtype=np.float64)  # x0 may be a Zarr array: read the crop only
        return transpose_to(t, spans, canonical(spans)), canonical(spans)
    t = kernel_array(template, base_dir)
    return t, resolve_on(dims, axes, default={2: "yx", 3: "zyx"}[t.ndim])

@op
def match_template(x, dims, template, axes=None, table=None, radius=3, threshold=0.5, method="auto",
                   source=None, base_dir=None):
    """skimage.feature.match_template(plane, template, pad_input=True) on every plane."""
    from skimage.feature import match_template as mt

    t, on = template_array(template, dims, axes, source, base_dir)
    return per_plane(x, dims, on, lambda a: mt(a, t, pad_input=True)), dims

@table("match_template")
def match_template_table(x, dims, template, axes=None, table=None, radius=3, threshold=0.5, method="auto",
                         source=None, base_dir=None):
    """The correlation's peaks as ``peaks`` finds them (maximum filter 2 radius + 1 over axes, nearest)."""
    ncc, _ = match_template(x, dims, template=template, axes=axes, source=source, base_dir=base_dir)
    _, on = template_array(template, dims, axes, source, base_dir)
    return peaks_table(ncc, dims, radius=radius, threshold=threshold, axes=on)

@op
def stats(x, dims, **p):
    return np.asarray(x), dims

_METRICS = ("count", "mean", "std", "min", "max", "sum", "energy")

def _region_stats(v: np.ndarray, metrics, on_idx, padded: np.ndarray | None, hist: dict | None,
                  bands: list | None) -> dict[str, float]:
    out = {"count": v.size, "mean": np.mean(v) if v.size else np.nan, "std": np.std(v) if v.size else np.nan,
           "min": np.min(v) if v.size else np.nan, "max": np.max(v) if v.size else np.nan,
           "sum": np.sum(v), "energy": np.sum(v * v)}
    res = {m: out[m] for m in metrics}
    if hist is not None:
        dy, dx = padded
        theta = orientation(dy, dx)
        w = np.hypot(dy, dx) if hist.get("weight", "magnitude") == "magnitude" else None
        h, _ = np.histogram(theta, bins=int(hist.get("bins", 8)), range=(-np.pi, np.pi), weights=w)
        res.update({f"orientation_{i}": float(b) for i, b in enumerate(h)})
    if bands is not None:
        power = np.abs(np.fft.fftn(v, axes=on_idx)) ** 2 / float(np.prod([v.shape[i] for i in on_idx]))
        f = np.meshgrid(*[np.fft.fftfreq(v.shape[i]) / 0.5 if i in on_idx else np.zeros(v.shape[i])
                          for i in range(v.ndim)], indexing="ij")
        r = np.sqrt(sum(g * g for g in f))
        res.update({f"band_{i}": float(power[(r >= lo) & (r < hi)].sum())
                    for i, (lo, hi) in enumerate(itertools.pairwise(bands))})
    return res

@table("stats")
def stats_table(x, dims, per="all", metrics=_METRICS, orientation_histogram=None, spectral_bands=None,
                axes=None, mode="reflect", cval=0.0, table=None, tile=None):
    """numpy in float64 of the stored values, per plane (one row per index of the other axes), per tile
    (``tile``: the work tile per axis; columns a (start) and a_stop) or over all. orientation_histogram:
    histogram of the orientation of (sobel along the first axis, along the second) per plane over [-pi, pi]
    (weighted by the gradient magnitude, or counts); spectral_bands: sum of |FFT|^2 / N over each band of
    fft_filter's radius."""
    on = resolve_on(dims, axes)
    v = np.asarray(x, dtype=np.float64)
    grads = None
    if orientation_histogram is not None:
        comps, _ = edge_components(v, dims, "sobel", on, mode, cval)
        grads = np.stack(comps)
    on_idx = [dims.index(a) for a in on]
    regions: list[tuple[dict, tuple]] = []
    if per == "all":
        regions.append(({}, (slice(None),) * v.ndim))
    elif per == "plane":
        for sl, fixed in planes(dims, on, v.shape):
            regions.append((dict(fixed), tuple(slice(j, j + 1) if not isinstance(j, slice) else j for j in sl)))
    else:
        grid = [range(0, n, int(tile.get(a, n))) for a, n in zip(dims, v.shape)]
        for starts in itertools.product(*grid):
            sl = tuple(slice(s, min(s + int(tile.get(a, n)), n)) for s, a, n in zip(starts, dims, v.shape))
            key = {}
            for a, s in zip(dims, sl):
                key[a], key[f"{a}_stop"] = s.start, s.stop
            regions.append((key, sl))
    rows: dict[str, list] = {}
    for key, sl in regions:
        g = grads[(slice(None),) + sl] if grads is not None else (None, None)
        r = _region_stats(v[sl], list(metrics), on_idx, g, orientation_histogram, spectral_bands)
        for k, val in {**key, **r}.items():
            rows.setdefault(k, []).append(val)
    return {k: np.asarray(c, dtype=np.int64 if (k in dims or k.endswith("_stop") or k == "count") else np.float64)
            for k, c in rows.items()}
