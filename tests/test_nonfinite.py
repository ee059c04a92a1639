"""Non-finite input (SPEC.md, "Axes, boundaries, exactness"), every op family, several chunkings.

Where an output voxel's footprint holds a NaN or inf, the output there is what the arithmetic gives; elsewhere
the oracle holds; a non-finite value never spreads beyond its footprint and the result never depends on the
chunking. Each case compares with a footprint-local reference: NaN, +inf and -inf exactly where it has them
(masks compared separately), the finite values within the contract's tolerance, on every chunking.

The references are scipy / numpy / scikit-image, except where their own implementation spreads NaN beyond the
footprint (running sums: ``uniform_filter``, ``uniform_filter1d``; running extrema and selection:
``minimum_filter`` / ``maximum_filter`` / ``median_filter`` return values that depend on where a line starts).
There the reference is the op's definition evaluated window by window: a box correlation, and for rank filters
numpy's rule (a window holding a NaN gives NaN, as ``numpy.max`` / ``numpy.median`` do; inf is ordered).
Spectral ops: every output of a plane's FFT depends on every input of the plane, so a non-finite value anywhere
in a plane makes the whole plane NaN; numpy's own FFT gives NaN or inf there, depending on its butterflies.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
from convpipe.oracles import oracle, step_parts, tolerance

import convpipe

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

PATTERNS = ("nan", "+inf", "-inf", "mixed")
CHUNKINGS_2D = {"whole": None, "small": (3, 4), "irregular": ((5, 1, 6, 2), (2, 7, 1, 4, 3))}
SHAPE_2D = (14, 17)


def poison(x: np.ndarray, pattern: str, seed: int = 0) -> np.ndarray:
    """x with a few non-finite voxels: one at a corner, one on a chunk border, one inside (plus, for 'mixed', both
    signs of inf next to each other and a NaN)."""
    x = np.array(x, dtype=np.float64)
    idx = [tuple(0 for _ in x.shape), tuple(s // 2 for s in x.shape), tuple(max(s - 3, 0) for s in x.shape)]
    if pattern == "mixed":
        vals = [np.nan, np.inf, -np.inf]
        idx.append(tuple(min(s // 2 + 1, s - 1) for s in x.shape))
        vals.append(-np.inf)
    else:
        v = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}[pattern]
        vals = [v] * len(idx)
    for i, v in zip(idx, vals):
        x[i] = v
    return x


def run(steps, x, dims, chunks, precision="float64", tile=None):
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
                       "execution": {"precision": precision}})
    arr = da.from_array(x, chunks=chunks if chunks is not None else x.shape)
    return np.asarray(p.apply(arr, axes=dims, tile=tile).compute())


def assert_nonfinite_conforms(out, ref, precision="float64", fft=False, what="", nan_only=False):
    """NaN / +inf / -inf where the reference has them; finite values within tolerance. ``nan_only``: the
    reference is non-finite there, the output NaN (spectral planes)."""
    o = np.asarray(out, np.float64)
    r = np.asarray(ref, np.float64)
    assert o.shape == r.shape, what
    if nan_only:
        assert np.array_equal(~np.isfinite(o), ~np.isfinite(r)), f"{what}: non-finite voxels differ"
        assert np.all(np.isnan(o[~np.isfinite(o)])), what
    else:
        for name, f in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
            bad = f(o) != f(r)
            assert not bad.any(), (f"{what}: {name} differs from the reference at {int(bad.sum())} voxels, "
                                   f"e.g. {tuple(int(v) for v in np.argwhere(bad)[0])}")
    fin = np.isfinite(r) & np.isfinite(o)
    if fin.any():
        err = float(np.max(np.abs(o[fin] - r[fin])))
        assert err <= tolerance(r, precision, fft), f"{what}: max error {err:.3g}"


def across_chunkings(steps, x, dims, ref, chunkings, precision="float64", fft=False, nan_only=False):
    outs = []
    for name, ch in chunkings.items():
        out = run(steps, x, dims, ch, precision)
        assert_nonfinite_conforms(out, ref, precision, fft, what=f"{steps} chunks {name}", nan_only=nan_only)
        outs.append(out)
    for o in outs[1:]:  # masks identical across chunkings (values: within tolerance, checked above)
        assert np.array_equal(np.isnan(o), np.isnan(outs[0])) and np.array_equal(np.isinf(o), np.isinf(outs[0]))


# --------------------------------------------------------------------------- footprint-local references


def box_local(x, sizes: dict[int, int], mode="reflect", cval=0.0, origins: dict[int, int] | None = None):
    """uniform_filter without the running sum: one direct 1-D correlation with 1/size weights per axis."""
    u = np.asarray(x, np.float64)
    for ax, s in sizes.items():
        if s > 1:
            u = ndi.correlate1d(u, np.full(s, 1.0 / s), axis=ax, mode=mode, cval=cval,
                                origin=(origins or {}).get(ax, 0))
    return u


def rank_local(x, size, kind, mode="reflect", cval=0.0):
    """Rank filter window by window, numpy's NaN rule: a window holding a NaN gives NaN; inf is ordered."""
    NUMPY_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}
    size = tuple(int(s) for s in size)
    pads = [(s // 2, s - 1 - s // 2) for s in size]
    if mode == "constant":
        p = np.pad(x, pads, mode="constant", constant_values=cval)
    else:
        p = np.pad(x, pads, mode=NUMPY_PAD[mode])
    w = np.lib.stride_tricks.sliding_window_view(p, size).reshape(x.shape + (-1,))
    n = w.shape[-1]
    if kind == "minimum":
        out = np.min(w, axis=-1)
    elif kind == "maximum":
        out = np.max(w, axis=-1)
    else:
        out = np.partition(np.where(np.isnan(w), 0.0, w), n // 2, axis=-1)[..., n // 2]
    return np.where(np.isnan(w).any(axis=-1), np.nan, out)


def ref_chain(steps, x, dims):
    """The oracles of convpipe.oracles, with the footprint-local references where scipy's spread."""
    u = np.asarray(x, np.float64)
    for st in steps:
        name, p = step_parts(st)
        mode, cval = p.get("mode", "reflect"), p.get("cval", 0.0)
        if name == "uniform":
            size = p["size"]
            u = box_local(u, {dims.index(a): int(size[a] if isinstance(size, dict) else size)
                              for a in (size if isinstance(size, dict) else "yx") if a in dims}, mode, cval)
        elif name in ("median", "minimum", "maximum"):
            size = p["size"]
            s = tuple(int(size.get(a, 1)) if isinstance(size, dict) else (int(size) if a in "yx" else 1)
                      for a in dims)
            u = rank_local(u, s, name, mode, cval)
        else:
            u, dims = oracle([st], u, dims)
    return u


# --------------------------------------------------------------------------- local filters


K33 = [[0.5, -1.0, 0.25], [2.0, 1.0, 0.0], [-0.5, 0.75, 1.5]]
KSEP = np.outer([1.0, 2.0, 1.0], [1.0, 0.0, -1.0]).tolist()
K13 = np.random.default_rng(4).standard_normal((13, 13)).round(2).tolist()  # >= 13x13: auto picks the FFT

LOCAL = {
    "correlate-direct": [{"correlate": {"kernel": K33, "method": "direct"}}],
    "correlate-separable": [{"correlate": {"kernel": KSEP, "method": "separable"}}],
    "correlate-fft": [{"correlate": {"kernel": K33, "method": "fft"}}],
    "correlate-auto-13x13": [{"correlate": {"kernel": K13}}],
    "convolve-wrap": [{"convolve": {"kernel": K33, "mode": "wrap"}}],
    "gaussian": [{"gaussian": {"sigma": 1.5}}],
    "gaussian-order-constant": [{"gaussian": {"sigma": 1.2, "order": {"y": 1, "x": 0}, "mode": "constant",
                                              "cval": 0.5}}],
    "uniform": [{"uniform": {"size": 4}}],
    "uniform-nearest": [{"uniform": {"size": 3, "mode": "nearest"}}],
    "sobel": [{"sobel": {}}],
    "prewitt-components": [{"prewitt": {"output": "components"}}],
    "scharr-orientation": [{"scharr": {"output": "orientation"}}],
    "laplace": [{"laplace": {"mode": "mirror"}}],
    "gaussian_laplace": [{"gaussian_laplace": {"sigma": 1.0}}],
    "gaussian_gradient_magnitude": [{"gaussian_gradient_magnitude": {"sigma": 1.0}}],
    "difference_of_gaussians": [{"difference_of_gaussians": {"low_sigma": 1.0, "high_sigma": 2.0}}],
    "unsharp_mask": [{"unsharp_mask": {"radius": 1.0, "amount": 1.5}}],
    "median": [{"median": {"size": 3}}],
    "minimum": [{"minimum": {"size": {"y": 2, "x": 3}}}],
    "maximum-wrap": [{"maximum": {"size": 4, "mode": "wrap"}}],
    "diffusion-steps": [{"diffusion": {"steps": 3, "dt": 0.2}}],
    "diffusion-Dt": [{"diffusion": {"diffusivity": 0.5, "time": 1.0}}],
    # consecutive symmetric filters are merged into one kernel for finite blocks: never for NaN/inf ones
    "merged-gaussians": [{"gaussian": {"sigma": 1.0}}, {"gaussian": {"sigma": 1.5}}],
    "merged-gauss-log": [{"gaussian": {"sigma": 1.0, "mode": "wrap"}}, {"gaussian_laplace": {"sigma": 1.0, "mode": "wrap"}}],
    "chain-gauss-sobel-median": [{"gaussian": {"sigma": 1.0}}, {"sobel": {}}, {"median": {"size": 3}}],
    "chain-point": [{"abs": {}}, {"scale": {"factor": -2.0, "offset": 1.0}}, {"clip": {"min": -3.0, "max": 2.0}}],
}


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("case", list(LOCAL))
def test_local_filters(case, pattern):
    steps = LOCAL[case]
    x = poison(np.random.default_rng(1).standard_normal(SHAPE_2D), pattern)
    ref = ref_chain(steps, x, "yx")
    across_chunkings(steps, x, "yx", ref, CHUNKINGS_2D)


@pytest.mark.parametrize("case", ["gaussian", "sobel", "correlate-auto-13x13", "median", "merged-gaussians",
                                  "difference_of_gaussians"])
def test_local_filters_float32(case):
    """float32 blocks go through OpenCV when finite; blocks holding NaN/inf never do."""
    steps = LOCAL[case]
    x = poison(np.random.default_rng(2).standard_normal(SHAPE_2D), "mixed").astype(np.float32)
    ref = ref_chain(steps, x.astype(np.float64), "yx")
    for ch in CHUNKINGS_2D.values():
        assert_nonfinite_conforms(run(steps, x, "yx", ch, "float32"), ref, "float32", what=f"{case} {ch}")


def test_whole_nan_rows_and_regions():
    """A NaN region (a masked field of view) stays within the footprints of its voxels."""
    x = np.random.default_rng(3).standard_normal((20, 24))
    x[5:8, :] = np.nan
    x[:, 20:] = np.nan
    for steps in (LOCAL["gaussian"], LOCAL["median"], LOCAL["uniform"], LOCAL["chain-gauss-sobel-median"]):
        ref = ref_chain(steps, x, "yx")
        across_chunkings(steps, x, "yx", ref, {"whole": None, "small": (3, 5), "rows": (1, 24)})


# --------------------------------------------------------------------------- along one axis


MOVIE = (11, 4, 5)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("window,align", [(3, "centered"), (4, "trailing"), (5, "centered")])
def test_moving_average(pattern, window, align):
    """The running sum of uniform_filter1d smeared a NaN to the end of every block: chunking-dependent."""
    x = poison(np.random.default_rng(4).standard_normal(MOVIE), pattern)
    origin = 0 if align == "centered" else (window - 1) // 2
    ref = box_local(x, {0: window}, origins={0: origin})
    steps = [{"moving_average": {"axis": "z", "window": window, "align": align}}]
    across_chunkings(steps, x, "zyx", ref, {"whole": None, "z2": (2, 4, 5), "z3": (3, 2, 5), "z1": (1, 4, 5)})


@pytest.mark.parametrize("pattern", PATTERNS)
def test_autoregressive(pattern):
    """An IIR filter's footprint is the whole past: the non-finite value reaches every later sample."""
    from scipy.signal import lfilter

    x = poison(np.random.default_rng(5).standard_normal(MOVIE), pattern)
    ref = lfilter([1.0], [1.0, -0.5, 0.2], x, axis=0)
    steps = [{"autoregressive": {"axis": "z", "coefficients": [0.5, -0.2]}}]
    across_chunkings(steps, x, "zyx", ref, {"whole": None, "z2": (2, 4, 5), "yx1": (11, 1, 2)})


# --------------------------------------------------------------------------- spectral, per plane


STACK = (3, 12, 14)


def _per_plane(x, fn):
    return np.stack([fn(p) for p in x])


def fft_lowpass(p, cutoff=0.4):
    r = np.sqrt((np.fft.fftfreq(p.shape[0])[:, None] / 0.5) ** 2 + (np.fft.fftfreq(p.shape[1])[None, :] / 0.5) ** 2)
    return np.real(np.fft.ifftn(np.fft.fftn(p) * (r <= cutoff)))


def log_spectrum(p):
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fftn(p))))


def butterworth(p):
    from skimage.filters import butterworth as bw

    return bw(p, cutoff_frequency_ratio=0.1, high_pass=False, order=2.0, channel_axis=None)


SPECTRAL = {
    "fft_filter": ({"fft_filter": {"kind": "lowpass", "cutoff": 0.4}}, fft_lowpass),
    "log_spectrum": ({"log_spectrum": {}}, log_spectrum),
    "butterworth": ({"butterworth": {"cutoff_frequency_ratio": 0.1, "high_pass": False}}, butterworth),
}


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("case", list(SPECTRAL))
def test_spectral_planes(case, pattern):
    """A plane holding a NaN/inf is NaN everywhere (its FFT's footprint is the plane); the others are exact."""
    step, fn = SPECTRAL[case]
    x = np.random.default_rng(6).standard_normal(STACK)
    x[1] = poison(x[1], pattern)  # only the middle plane
    ref = _per_plane(x, fn)
    assert not np.isfinite(ref[1]).any()  # numpy's FFT: the whole plane is NaN/inf
    across_chunkings([step], x, "zyx", ref, {"whole": None, "z1": (1, 12, 14), "small": (1, 5, 6)}, fft=True,
                     nan_only=True)
    out = run([step], x, "zyx", (1, 5, 6))
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


# --------------------------------------------------------------------------- point and global ops


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("step", [{"abs": {}}, {"sqrt": {}}, {"log1p": {}}, {"scale": {"factor": 0.5}},
                                  {"clip": {"min": -1.0, "max": 1.0}}, {"threshold": {"value": 0.1}},
                                  {"astype": {"dtype": "int16"}}], ids=lambda s: next(iter(s)))
def test_point_ops(step, pattern):
    x = poison(np.random.default_rng(7).standard_normal(SHAPE_2D), pattern)
    ref, _ = oracle([step], x, "yx")
    across_chunkings([step], x, "yx", ref, CHUNKINGS_2D)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_zscore_follows_numpy(pattern):
    """numpy's mean of an array holding a NaN is NaN (of +inf: inf, and its std NaN): the whole output is NaN,
    as (x - x.mean()) / x.std() gives."""
    x = poison(np.random.default_rng(8).standard_normal(SHAPE_2D), pattern)
    ref = (x - x.mean()) / x.std()
    assert np.isnan(ref).all()
    across_chunkings([{"zscore": {}}], x, "yx", ref, CHUNKINGS_2D)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("params", [{}, {"percentiles": [5, 95]}, {"in_range": [-1.0, 1.0]}],
                         ids=["minmax", "percentiles", "in_range"])
def test_rescale_follows_skimage(params, pattern):
    from skimage.exposure import rescale_intensity

    x = poison(np.random.default_rng(9).standard_normal(SHAPE_2D), pattern)
    if "in_range" in params:
        rng = tuple(params["in_range"])
    elif "percentiles" in params:
        rng = tuple(np.percentile(x, params["percentiles"]))
    else:
        rng = (np.min(x), np.max(x))
    with np.errstate(all="ignore"):
        ref = rescale_intensity(x, in_range=rng, out_range=(0.0, 1.0))
    across_chunkings([{"rescale": params}], x, "yx", ref, CHUNKINGS_2D)


# --------------------------------------------------------------------------- stochastic


@pytest.mark.parametrize("pattern", ["nan", "mixed"])
def test_stochastic_copies_exactly_the_drawn_voxels(pattern):
    """Each output voxel copies one input voxel: NaN/inf where (and only where) the draw hit one."""
    x = poison(np.random.default_rng(10).standard_normal(SHAPE_2D), pattern)
    marked = np.where(np.isnan(x), -1000.0, np.where(np.isposinf(x), 1000.0, np.where(np.isneginf(x), -2000.0, x)))
    steps = [{"stochastic": {"kernel": {"name": "box", "size": 3}, "normalize": "sum", "seed": 3}}]
    ref_marked = run(steps, marked, "yx", None)
    ref = np.where(ref_marked == -1000.0, np.nan,
                   np.where(ref_marked == 1000.0, np.inf, np.where(ref_marked == -2000.0, -np.inf, ref_marked)))
    assert (~np.isfinite(ref)).any()
    across_chunkings(steps, x, "yx", ref, CHUNKINGS_2D)


# --------------------------------------------------------------------------- features and tables


def run_tables(tmp, x, steps, tile, chunks=(8, 8), precision="float64"):
    import pyarrow.parquet as pq
    import zarr

    tmp.mkdir(parents=True, exist_ok=True)
    z = zarr.create_array(str(tmp / "in.zarr"), shape=x.shape, chunks=chunks, dtype=x.dtype, overwrite=True)
    z[...] = x
    steps = [{op: dict(prm, table=str(tmp / f"{op}.parquet")) if op != "filter_bank" else prm
              for op, prm in st.items()} for st in steps]
    spec = {"convpipe": 1, "input": {"url": str(tmp / "in.zarr")},
            "output": {"url": str(tmp / "out.zarr"), "overwrite": True}, "steps": steps,
            "execution": {"tile": list(tile), "precision": precision}}
    convpipe.load(spec).run()
    tables = {}
    for st in steps:
        (op,) = st
        if "table" in st[op]:
            t = pq.read_table(str(tmp / f"{op}.parquet"))
            tables[op] = {c: t.column(c).to_numpy() for c in t.column_names}
    return zarr.open_array(str(tmp / "out.zarr"), mode="r")[...], tables


TILES = [(48, 56), (16, 16), (13, 21)]


def spots(shape=(48, 56), seed=11):
    rng = np.random.default_rng(seed)
    x = 0.02 * rng.standard_normal(shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx, s in [(10, 12, 2.0), (30, 40, 3.0), (38, 10, 2.5), (12, 44, 2.0), (25, 25, 2.0)]:
        x += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return x


def poison_features(x, pattern):
    x = x.copy()
    v = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}
    if pattern == "mixed":
        x[20, 30], x[5, 5], x[44, 50] = np.nan, np.inf, -np.inf
    else:
        x[20, 30] = x[5, 5] = x[44, 50] = v[pattern]
    x[47, :] = np.nan if pattern in ("nan", "mixed") else x[47, :]  # a whole NaN row at the array's end
    return x


@pytest.mark.parametrize("pattern", PATTERNS)
def test_filter_bank(pattern):
    x = poison(np.random.default_rng(12).standard_normal(SHAPE_2D), pattern)
    ks = [K33, KSEP]
    steps = [{"filter_bank": {"kernels": ks}}]
    ref = np.stack([ndi.correlate(x, np.array(k)) for k in ks])
    across_chunkings(steps, x, "yx", ref, CHUNKINGS_2D)


def peaks_ref(x, radius, thr):
    """Window maxima as numpy takes them (NaN propagates), mode nearest."""
    p = np.pad(x, radius, mode="edge")
    w = np.lib.stride_tricks.sliding_window_view(p, (2 * radius + 1,) * 2)
    mx = np.max(w, axis=(-2, -1))
    hit = (x == mx) & (x > thr)
    return set(zip(*[i.tolist() for i in np.nonzero(hit)], x[hit].tolist()))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_peaks_table(tmp_path, pattern):
    x = poison_features(spots(), pattern)
    if pattern in ("+inf", "mixed"):
        x[30, 40] = np.inf  # an infinite peak is a peak (inf == max, inf > threshold)
    want = peaks_ref(x, 2, 0.3)
    for tile in TILES:
        _, tb = run_tables(tmp_path / f"t{tile[1]}", x, [{"peaks": {"radius": 2, "threshold": 0.3}}], tile)
        c = tb["peaks"]
        got = set(zip(c["y"].tolist(), c["x"].tolist(), c["value"].tolist()))
        assert got == want, (tile, got ^ want)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("per", ["all", "plane"])
def test_stats_table_follows_numpy(tmp_path, pattern, per):
    x = poison(np.random.default_rng(13).standard_normal((3, 10, 12)), pattern)
    with np.errstate(all="ignore"):
        if per == "all":
            v = [x]
        else:
            v = list(x)
        ref = {"mean": [np.mean(a) for a in v], "std": [np.std(a) for a in v], "min": [np.min(a) for a in v],
               "max": [np.max(a) for a in v], "sum": [np.sum(a) for a in v], "energy": [np.sum(a * a) for a in v]}
    for tile in [(3, 10, 12), (1, 4, 5)]:
        z = tmp_path / f"{per}{tile[1]}"
        z.mkdir()
        import pyarrow.parquet as pq
        import zarr

        a = zarr.create_array(str(z / "in.zarr"), shape=x.shape, chunks=(1, 4, 5), dtype=x.dtype)
        a[...] = x
        spec = {"convpipe": 1, "input": {"url": str(z / "in.zarr")}, "output": {"url": str(z / "out.zarr")},
                "steps": [{"stats": {"per": per, "table": str(z / "s.parquet")}}],
                "execution": {"tile": list(tile)}}
        convpipe.load(spec).run()
        t = pq.read_table(str(z / "s.parquet"))
        for k, r in ref.items():
            got = t.column(k).to_numpy()
            r = np.asarray(r)
            assert np.array_equal(np.isnan(got), np.isnan(r)) and np.array_equal(got[np.isinf(r)], r[np.isinf(r)]), k
            fin = np.isfinite(r)
            np.testing.assert_allclose(got[fin], r[fin], rtol=1e-9, err_msg=k)


def ncc_ref(x, t):
    """match_template's formula window by window; NaN where the window holds a NaN/inf."""
    th, tw = t.shape
    bad = ~np.isfinite(x)
    p = np.pad(np.where(bad, 0.0, x), ((th // 2, th - 1 - th // 2), (tw // 2, tw - 1 - tw // 2)))
    pb = np.pad(bad, ((th // 2, th - 1 - th // 2), (tw // 2, tw - 1 - tw // 2)))
    w = np.lib.stride_tricks.sliding_window_view(p, t.shape)
    wc = w - w.mean(axis=(-2, -1), keepdims=True)
    tc = t - t.mean()
    num = np.einsum("ijkl,kl->ij", wc, tc)
    den = np.sqrt(np.sum(wc * wc, axis=(-2, -1)) * np.sum(tc * tc))
    out = np.where(den > np.finfo(np.float64).eps, num / np.where(den > 0, den, 1.0), 0.0)
    out[np.lib.stride_tricks.sliding_window_view(pb, t.shape).any(axis=(-2, -1))] = np.nan
    return out


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("template", ["direct", "fft"])
def test_match_template(tmp_path, pattern, template):
    """NaN where the template window holds a NaN/inf (skimage's FFT and running sums spread it over the whole
    image); elsewhere skimage's correlation; the whole NaN row at the array's end is data, not padding."""
    x = poison_features(spots(), pattern)
    t = spots()[27:34, 36:45] if template == "direct" else spots()[24:37, 33:48]  # 63 or 195 taps
    ref = ncc_ref(x, t)
    want_rows = set()
    p = np.pad(ref, 3, mode="edge")
    mx = np.max(np.lib.stride_tricks.sliding_window_view(p, (7, 7)), axis=(-2, -1))
    want_rows = set(zip(*[i.tolist() for i in np.nonzero((ref == mx) & (ref > 0.3))]))
    step = [{"match_template": {"template": t.tolist(), "radius": 3, "threshold": 0.3}}]
    for tile in TILES:
        img, tb = run_tables(tmp_path / f"t{tile[1]}", x, step, tile)
        assert_nonfinite_conforms(img, ref, fft=True, what=f"match_template {tile}")
        c = tb["match_template"]
        assert set(zip(c["y"].tolist(), c["x"].tolist())) == want_rows
    assert (30, 40) in want_rows


@pytest.mark.parametrize("pattern", PATTERNS)
def test_blobs_table(tmp_path, pattern):
    """No blob from a scale-space window that holds a NaN; the rest as blob_log finds them (the NaN voxels as
    data never read); the same rows on every tiling."""
    import skimage.feature

    rng = np.random.default_rng(14)
    clean = 0.02 * rng.standard_normal((64, 96))
    yy, xx = np.mgrid[:64, :96]
    for cy, cx, sg in [(12, 60, 2.0), (25, 75, 2.5), (15, 85, 2.0), (30, 50, 3.0), (22, 24, 2.0), (48, 28, 2.5)]:
        clean += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sg * sg))
    x = clean.copy()
    v = {"nan": [np.nan] * 3, "+inf": [np.inf] * 3, "-inf": [-np.inf] * 3, "mixed": [np.nan, np.inf, -np.inf]}
    for (i, j), val in zip([(5, 5), (20, 20), (50, 30)], v[pattern]):
        x[i, j] = val
    if pattern in ("nan", "mixed"):
        x[63, :] = np.nan  # a whole NaN row at the array's end: data, not the padding
    params = {"min_sigma": 1.5, "max_sigma": 3.0, "num_sigma": 4, "threshold": 0.05}
    got_all = []
    for tile in [(64, 96), (16, 16), (13, 21)]:
        _, tb = run_tables(tmp_path / f"t{tile[1]}", x, [{"blobs": params}], tile)
        c = tb["blobs"]
        got_all.append(set(zip(c["y"].tolist(), c["x"].tolist(), c["sigma"].tolist())))
    assert all(g == got_all[0] for g in got_all)
    reach = int(4 * params["max_sigma"] + 0.5) + 2  # LoG radius + the 3x3x3 window
    bad = np.argwhere(~np.isfinite(x))

    def far(r):  # beyond the footprint, and beyond any blob whose overlap pruning could reach r
        return bad.size == 0 or np.min(np.max(np.abs(bad - np.array(r[:2])), axis=1)) > reach + 9

    # numpy's rule for the maximum of a window: a scale-space window holding a NaN gives no blob
    sig = np.linspace(params["min_sigma"], params["max_sigma"], params["num_sigma"])
    cube = np.stack([-ndi.gaussian_laplace(x, s) * s * s for s in sig], axis=-1)
    nanwin = ndi.maximum_filter(np.isnan(cube), size=3, mode="nearest")
    for y, xx, s in got_all[0]:
        assert not nanwin[y, xx, int(np.argmin(np.abs(sig - s)))], (y, xx, s)
    ref = {(int(round(b[0])), int(round(b[1])), float(b[2])) for b in skimage.feature.blob_log(clean, **params)}
    assert {r for r in got_all[0] if far(r)} == {r for r in ref if far(r)}
    assert len({r for r in ref if far(r)}) >= 2
