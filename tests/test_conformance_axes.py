"""Conformance for every order of the input's axes (SPEC.md: a kernel's dimensions follow the axis letters).

The oracle of an input with axes ``xy`` (``zxy``, ``ycx``, ...) is: transpose to canonical ``tczyx`` order,
apply the op's whole-array reference, transpose back (``convpipe.oracles`` does exactly that); the output
keeps the input's order for shared axes, a new ``c`` axis goes before the first axis after it in tczyx.
Never our own output. Every op family: local filters (separable and n-D kernels, direct / separable /
FFT), edges with every output kind, moving_average / autoregressive along an axis, spectral, point and
global ops, stochastic, filter_bank, and the tables of peaks, blobs, match_template and stats. Chunkings
cut the kernels. Each case also checks that it can fail: the reference differs from reading the stored
array as if its axes were in canonical order.

The default run takes one order, chunking and precision per case (rotating over the cases, so each is
covered); ``-m slow`` runs every combination.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import dask.array as da
import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from harness import is_orientation, make_spec

import convpipe
from convpipe.oracles import assert_conforms, canonical, oracle, step_parts, undefined_orientation, uses_fft

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

rng0 = np.random.default_rng(41)
K24 = rng0.standard_normal((2, 4)).round(3).tolist()
K35 = rng0.standard_normal((3, 5)).round(3).tolist()
K223 = rng0.standard_normal((2, 2, 3)).round(3).tolist()
K_BIG = (rng0.standard_normal((9, 13)) / 9).round(4).tolist()  # 117 taps: FFT under auto on n-D paths
KSEP2 = np.outer([1.0, 2.0, -1.0], [0.5, 1.0, 0.0, -2.0, 0.3]).tolist()
KSEP3 = np.multiply.outer(np.multiply.outer([1.0, -1.0], [1.0, 2.0, 1.0]), [3.0, 0.0, 1.0, 0.5]).tolist()
TPL = (rng0.standard_normal((3, 6))).round(3).tolist()

# canonical axes -> (shape, orders to test); the first orders are the default sample
ORDERS = {
    "yx": ((11, 14), ["xy"]),
    "zyx": ((5, 9, 12), ["zxy", "yxz", "xzy", "xyz", "yzx"]),
    "cyx": ((3, 9, 12), ["ycx", "yxc", "xcy"]),
    "tyx": ((12, 7, 9), ["ytx", "xyt", "txy"]),
    "tzyx": ((6, 3, 7, 8), ["xtzy", "zytx"]),
}

# family, id, canonical axes, steps, precision-sensitive tolerance uses the FFT bound when the steps do
CASES: list[tuple[str, str, str, list[dict]]] = [
    # local filters: n-D kernels (direct and FFT), separable ones, per-axis parameters
    ("local", "correlate-2d-even-origin", "yx", [{"correlate": {"kernel": K24, "origin": [-1, 1], "mode": "wrap"}}]),
    ("local", "correlate-2d-direct-on-zyx", "zyx", [{"correlate": {"kernel": K35, "method": "direct"}}]),
    ("local", "convolve-2d-fft", "zyx", [{"convolve": {"kernel": K35, "method": "fft", "mode": "mirror"}}]),
    ("local", "correlate-large-auto", "yx", [{"correlate": {"kernel": K_BIG, "mode": "nearest"}}]),
    ("local", "correlate-3d-direct", "zyx", [{"correlate": {"kernel": K223, "method": "direct",
                                                            "mode": "constant", "cval": 0.4}}]),
    ("local", "correlate-3d-fft", "zyx", [{"correlate": {"kernel": K223, "method": "fft"}}]),
    ("local", "correlate-separable-2d", "zyx", [{"correlate": {"kernel": KSEP2, "method": "separable"}}]),
    ("local", "convolve-separable-3d", "zyx", [{"convolve": {"kernel": KSEP3, "axes": "zyx", "mode": "reflect"}}]),
    ("local", "correlate-zx", "zyx", [{"correlate": {"kernel": K24, "axes": "zx"}}]),
    ("local", "correlate-1d-on-y", "zyx", [{"correlate": {"kernel": [1.0, 2.0, -3.0, 0.5], "axes": "y"}}]),
    ("local", "gaussian-aniso-order", "zyx", [{"gaussian": {"sigma": {"z": 0.7, "y": 1.8, "x": 1.0},
                                                             "order": {"z": 0, "y": 1, "x": 0}}}]),
    ("local", "uniform-aniso", "zyx", [{"uniform": {"size": {"z": 2, "y": 5, "x": 3}, "mode": "wrap"}}]),
    ("local", "median-aniso", "zyx", [{"median": {"size": {"y": 4, "x": 2}, "mode": "mirror"}}]),
    ("local", "maximum-aniso", "yx", [{"maximum": {"size": {"y": 1, "x": 5}}}]),
    ("local", "minimum-zy", "zyx", [{"minimum": {"size": {"z": 3, "y": 2}, "mode": "constant", "cval": -0.5}}]),
    ("local", "gaussian_laplace-aniso", "zyx", [{"gaussian_laplace": {"sigma": {"y": 1.5, "x": 0.6}}}]),
    ("local", "ggm-zy", "zyx", [{"gaussian_gradient_magnitude": {"sigma": {"z": 0.8, "y": 1.4}}}]),
    ("local", "dog-aniso", "yx", [{"difference_of_gaussians": {"low_sigma": {"y": 0.7, "x": 1.5}}}]),
    ("local", "unsharp-aniso", "zyx", [{"unsharp_mask": {"radius": {"y": 2.0, "x": 0.6}, "amount": 1.5}}]),
    ("local", "laplace-zx", "zyx", [{"laplace": {"axes": "zx", "mode": "nearest"}}]),
    ("local", "diffusion-steps-zy", "zyx", [{"diffusion": {"steps": 2, "dt": 0.2, "axes": "zy"}}]),
    ("local", "chain-merged", "zyx", [{"gaussian": {"sigma": {"y": 2.0, "x": 0.7}, "mode": "wrap"}},
                                      {"gaussian": {"sigma": {"y": 0.5, "x": 1.5}, "mode": "wrap"}},
                                      {"correlate": {"kernel": K24}}]),
    ("local", "per-channel", "cyx", [{"correlate": {"kernel": K35}}, {"gaussian": {"sigma": {"y": 1.5, "x": 0.5}}}]),
    # edges with every output kind
    ("edges", "sobel-magnitude-zx", "zyx", [{"sobel": {"axes": "zx"}}]),
    ("edges", "prewitt-components", "zyx", [{"prewitt": {"output": "components"}}]),
    ("edges", "scharr-components-zyx", "zyx", [{"scharr": {"output": "components", "axes": "zyx"}}]),
    ("edges", "sobel-orientation", "yx", [{"sobel": {"output": "orientation"}}]),
    ("edges", "scharr-orientation-zx", "zyx", [{"scharr": {"output": "orientation", "axes": "zx", "mode": "wrap"}}]),
    ("edges", "prewitt-orientation-channels", "cyx", [{"prewitt": {"output": "orientation", "mode": "constant",
                                                                   "cval": 0.3}}]),
    ("edges", "gauss-then-components", "yx", [{"gaussian": {"sigma": {"y": 1.0, "x": 2.0}}},
                                             {"sobel": {"output": "components"}},
                                             {"uniform": {"size": {"y": 3, "x": 1}}}]),
    # along one axis
    ("axis", "moving_average-t", "tyx", [{"moving_average": {"window": 4, "align": "trailing"}}]),
    ("axis", "moving_average-x", "tzyx", [{"moving_average": {"window": 3, "axis": "x", "mode": "wrap"}}]),
    ("axis", "autoregressive-t", "tyx", [{"autoregressive": {"coefficients": [0.6, -0.2]}}]),
    ("axis", "autoregressive-y", "zyx", [{"autoregressive": {"coefficients": [0.9], "axis": "y"}}]),
    # spectral
    ("spectral", "fft_filter-bandpass", "zyx", [{"fft_filter": {"kind": "bandpass", "cutoff": [0.15, 0.6],
                                                                "shape": "butterworth", "order": 3}}]),
    ("spectral", "fft_filter-zx", "zyx", [{"fft_filter": {"kind": "lowpass", "cutoff": 0.4, "axes": "zx"}}]),
    ("spectral", "butterworth", "zyx", [{"butterworth": {"cutoff_frequency_ratio": 0.1, "npad": 2}}]),
    ("spectral", "log_spectrum", "zyx", [{"log_spectrum": {}}]),
    ("spectral", "log_spectrum-3d", "zyx", [{"log_spectrum": {"axes": "zyx"}}]),
    # point and global ops
    ("point", "point-chain", "zyx", [{"correlate": {"kernel": K24}}, {"scale": {"factor": -2.0, "offset": 1.0}},
                                     {"clip": {"min": -1.0}}, {"abs": {}}, {"sqrt": {}}]),
    ("point", "threshold", "yx", [{"uniform": {"size": {"y": 1, "x": 3}}}, {"threshold": {"value": 0.1}}]),
    ("point", "log1p-astype", "zyx", [{"abs": {}}, {"log1p": {}}, {"correlate": {"kernel": K35}},
                                      {"astype": {"dtype": "float32"}}]),
    ("global", "zscore", "zyx", [{"gaussian": {"sigma": {"z": 1.0, "y": 0.0, "x": 2.0}}}, {"zscore": {}}]),
    ("global", "rescale-percentiles", "cyx", [{"rescale": {"percentiles": [2, 98]}}, {"correlate": {"kernel": K24}}]),
    # stochastic and filter banks
    ("stochastic", "stochastic-2d", "zyx", [{"stochastic": {"kernel": [[0, 1, 0.5], [2, 0, 0], [0, 0, 3]],
                                                            "normalize": "sum", "seed": 3, "mode": "wrap"}}]),
    ("stochastic", "stochastic-zx", "zyx", [{"stochastic": {"kernel": [[1, 2, 0, 1]], "normalize": "l1",
                                                            "axes": "zx", "seed": 1}}]),
    ("features", "filter_bank", "zyx", [{"filter_bank": {"kernels": [K24, K35, [[2.0]]], "mode": "mirror"}}]),
    ("features", "filter_bank-gabor", "yx", [{"filter_bank": {"gabor": {"orientations": 2, "frequencies": 0.25,
                                                                        "sigma": 1.5}}}]),
    ("features", "match_template-inline", "zyx", [{"match_template": {"template": TPL}}]),
    # objects: morphology (masks from a threshold of the stored values: exact in either precision)
    ("objects", "binary_opening-asym", "zyx", [{"threshold": {"value": -0.6}},
                                               {"binary_opening": {"footprint": [[0, 1, 1], [1, 1, 0]],
                                                                   "axes": "yx", "iterations": 2}}]),
    ("objects", "binary_closing-3d", "zyx", [{"threshold": {"value": 0.5}},
                                             {"binary_closing": {"footprint": [[[1, 1, 0]], [[0, 1, 1]]]}}]),
    ("objects", "binary_dilation-zx", "zyx", [{"threshold": {"value": 1.0}},
                                              {"binary_dilation": {"footprint": [[1, 1, 0, 0]], "axes": "zx"}}]),
    ("objects", "binary_erosion-cyx", "cyx", [{"threshold": {"value": -0.8}},
                                              {"binary_erosion": {"footprint": [[1, 1], [0, 1], [0, 1]]}}]),
    ("objects", "grey_closing-aniso", "zyx", [{"grey_closing": {"size": {"y": 2, "x": 3}, "mode": "mirror"}}]),
    ("objects", "grey_erosion-3d", "zyx", [{"grey_erosion": {"footprint": [[[1, 0], [1, 1]], [[0, 1], [0, 0]]]}}]),
    ("objects", "grey_dilation-zy", "zyx", [{"grey_dilation": {"size": {"z": 2, "y": 3}, "mode": "constant",
                                                               "cval": 0.5}}]),
    ("objects", "grey_opening-yx", "yx", [{"grey_opening": {"footprint": [[0, 1, 1], [1, 1, 0]]}}]),
    ("objects", "white_tophat-zx", "zyx", [{"white_tophat": {"footprint": [[1, 1, 0], [0, 1, 1]], "axes": "zx",
                                                              "mode": "nearest"}}]),
    ("objects", "black_tophat-wrap", "yx", [{"black_tophat": {"size": {"y": 3, "x": 2}, "mode": "wrap"}}]),
    ("objects", "distance_transform-sampling", "zyx", [{"threshold": {"value": -0.7}},
                                                       {"distance_transform": {"sampling": {"z": 2.0, "y": 0.7,
                                                                                            "x": 1.3}}}]),
    ("objects", "distance_transform-zx", "zyx", [{"threshold": {"value": -0.3}},
                                                 {"distance_transform": {"axes": "zx", "sampling": [0.5, 2.0]}}]),
    ("global", "threshold-otsu", "zyx", [{"threshold": {"method": "otsu"}}, {"grey_dilation": {"size": {"y": 2}}}]),
    ("global", "threshold-yen", "yx", [{"threshold": {"method": "yen"}}]),
]

# table cases run through Zarr (tables are written by run only): family, id, axes, steps
TABLE_CASES: list[tuple[str, str, str, list[dict]]] = [
    ("tables", "peaks-yx", "zyx", [{"gaussian": {"sigma": {"z": 0.0, "y": 1.5, "x": 0.5}}},
                                   {"peaks": {"radius": 2, "threshold": 0.05, "table": "p.parquet"}}]),
    ("tables", "peaks-3d", "zyx", [{"peaks": {"radius": 1, "axes": "zyx", "threshold": 0.5, "table": "p.parquet"}}]),
    ("tables", "blobs", "yx", [{"blobs": {"min_sigma": 1.5, "max_sigma": 4, "num_sigma": 4, "threshold": 0.02,
                                          "table": "b.parquet"}}]),
    ("tables", "match_template-crop", "zyx", [{"match_template": {
        "template": {"crop": {"z": 1, "y": [2, 5], "x": [3, 9]}}, "radius": 2, "threshold": 0.3,
        "table": "m.parquet"}}]),
    ("tables", "stats-plane-orientation", "zyx", [{"stats": {"per": "plane", "orientation_histogram": {"bins": 6},
                                                             "spectral_bands": [0.0, 0.3, 0.7, 1.5],
                                                             "table": "s.parquet"}}]),
    ("tables", "stats-plane-zx", "zyx", [{"stats": {"per": "plane", "axes": "zx",
                                                    "orientation_histogram": {"bins": 5, "weight": "count"},
                                                    "table": "s.parquet"}}]),
]


def _chunkings(shape):
    """Chunkings that cut every kernel: 2-3 voxels, irregular, and a tile of several chunks."""
    small = tuple(min(n, 2 + i % 2) for i, n in enumerate(shape))
    irregular = tuple(tuple(_irregular(n)) for n in shape)
    return {"small": (small, None), "irregular": (irregular, None),
            "tile>chunk": (tuple(min(n, 2) for n in shape), {"__all__": 5})}


def _irregular(n):
    pieces, pattern, i = [], (1, 3, 2, 5, 1, 4), 0
    while sum(pieces) < n:
        pieces.append(min(pattern[i % len(pattern)], n - sum(pieces)))
        i += 1
    return pieces


def _data(canon: str, seed: int = 0) -> np.ndarray:
    shape, _ = ORDERS[canon]
    return np.random.default_rng(seed).standard_normal(shape)


def _params(cases, *, slow: bool):
    out = []
    for k, (family, cid, canon, steps) in enumerate(cases):
        orders = ORDERS[canon][1]
        chunkings = list(_chunkings(ORDERS[canon][0]))
        if slow:
            combos = [(o, ch, prec) for o in orders for ch in chunkings for prec in ("float64", "float32")]
        else:  # a sample: one combination per case, rotating orders, chunkings and precisions over the cases
            combos = [(orders[k % len(orders)], chunkings[k % len(chunkings)], ("float64", "float32")[k % 2])]
        for order, ch, prec in combos:
            marks = [pytest.mark.slow] if slow else []
            out.append(pytest.param(family, canon, steps, order, ch, prec, marks=marks,
                                    id=f"{family}-{cid}-{order}-{ch}-{prec}"))
    return out


def _tile(tile_spec, order, shape):
    if tile_spec is None:
        return None
    return {a: min(5, n) for a, n in zip(order, shape)}


def _discriminates(steps, x_stored, order, ref):
    """The case can fail: reading the stored array as if its axes were in canonical order (the letters by
    position) gives another result."""
    try:
        naive, _ = oracle(steps, x_stored, canonical(order))
    except ValueError:  # e.g. a template larger than the plane it would be read along
        return True
    if naive.shape != ref.shape:
        return True
    both = np.isfinite(naive) & np.isfinite(ref)
    d = np.abs(naive - ref)[both]
    if is_orientation(steps):
        d = np.abs(np.angle(np.exp(1j * (naive - ref)[both])))
    return d.size and float(d.max()) > 1e-3 * max(1.0, float(np.abs(ref[both]).max()))


def _compare(out, ref, steps, x, order, prec, what):
    ignore = undefined_orientation(steps, x, order) if is_orientation(steps) else None
    if step_parts(steps[-1])[0] == "threshold":  # a voxel within rounding of the threshold may flip
        pre, _ = oracle(steps[:-1], x, order)
        p = step_parts(steps[-1])[1]
        if "method" in p:
            from convpipe.oracles_objects import auto_threshold

            thr = float(auto_threshold(pre, p["method"]))
        else:
            thr = p["value"]
        ignore = np.abs(pre - thr) <= 1e-5 * max(1.0, float(np.abs(pre).max()))
    assert_conforms(out, ref, prec, fft=uses_fft(steps), what=what, circular=is_orientation(steps),
                    ignore=ignore)


def _check_image(family, canon, steps, order, ch, prec):
    x = _data(canon)
    xs = np.ascontiguousarray(np.transpose(x, [canon.index(a) for a in order]))  # stored in `order`
    chunks, tile = _chunkings(x.shape)[ch]
    chunks = tuple(chunks[canon.index(a)] for a in order)
    p = convpipe.load(make_spec(steps, prec))
    out = np.asarray(p.apply(da.from_array(xs, chunks=chunks), axes=order,
                             tile=_tile(tile, order, xs.shape)).compute())
    ref, ref_dims = oracle(steps, xs, order)
    _compare(out, ref, steps, xs, order, prec, f"{steps} on {order}{xs.shape} chunks={ch} {prec}")
    return xs, ref


@pytest.mark.parametrize("family,canon,steps,order,ch,prec", _params(CASES, slow=False))
def test_axis_order(family, canon, steps, order, ch, prec):
    _check_image(family, canon, steps, order, ch, prec)


ORDER_FREE = ("log_spectrum-3d",)  # |FFT| over every axis commutes with permuting them


@pytest.mark.parametrize("family,cid,canon,steps", [pytest.param(*c, id=c[1]) for c in CASES + TABLE_CASES
                                                    if c[0] not in ("global", "tables") and c[1] not in ORDER_FREE])
def test_every_case_can_fail(family, cid, canon, steps):
    """For some order of the case, reading the stored array by position gives a different result."""
    x = _data(canon)
    found = []
    for order in ORDERS[canon][1]:
        xs = np.transpose(x, [canon.index(a) for a in order])
        ref, _ = oracle(steps, xs, order)
        found.append(_discriminates(steps, xs, order, ref))
    assert any(found), "no order of this case can tell a wrong axis order"


@pytest.mark.parametrize("family,canon,steps,order,ch,prec", _params(CASES, slow=True))
def test_axis_order_slow(family, canon, steps, order, ch, prec):
    _check_image(family, canon, steps, order, ch, prec)


# --------------------------------------------------------------------------- through Zarr, with tables


def _run_zarr(tmp: Path, xs: np.ndarray, order: str, steps, chunks, tile, prec):
    z = zarr.create_array(str(tmp / "in.zarr"), shape=xs.shape, chunks=chunks, dtype=xs.dtype, overwrite=True)
    z[...] = xs
    steps = [{op: dict(p, table=str(tmp / p["table"])) if p.get("table") else p for op, p in st.items()}
             for st in steps]
    spec = make_spec(steps, prec, input={"url": str(tmp / "in.zarr"), "axes": order},
                     output={"url": str(tmp / "out.zarr"), "overwrite": True},
                     execution={"tile": tile} if tile else {})
    res = convpipe.load(spec).run()
    tables = {}
    for k, v in res.outputs.items():
        if k != "image":
            t = pq.read_table(v["table"])
            tables[int(k.split("]")[0].split("[")[1])] = {c: t.column(c).to_numpy() for c in t.column_names}
    return zarr.open_array(str(tmp / "out.zarr"), mode="r"), tables, res


def _assert_rows(got: dict, want: dict, axes: str, what: str, rel: float = 1e-9):
    keys = [a for a in want if a in axes or a.endswith("_stop")] or []
    values = [c for c in want if c not in keys]
    assert set(got) == set(want), f"{what}: columns {sorted(got)} != {sorted(want)}"
    g = {tuple(int(got[k][i]) for k in keys): i for i in range(len(next(iter(got.values()))))}
    w = {tuple(int(want[k][i]) for k in keys): i for i in range(len(next(iter(want.values()))))}
    assert set(g) == set(w), f"{what}: rows differ: {sorted(set(g) ^ set(w))[:5]}"
    assert len(g) == len(next(iter(got.values()))), f"{what}: duplicate rows"
    for c in values:
        gv = np.array([got[c][g[k]] for k in w], dtype=np.float64)
        wv = np.array([want[c][w[k]] for k in w], dtype=np.float64)
        scale = max(1.0, float(np.abs(wv).max())) if wv.size else 1.0
        assert np.allclose(gv, wv, rtol=0, atol=rel * scale, equal_nan=True), f"{what}: column {c}"


def _check_tables(tmp_path, canon, steps, order, ch, prec):
    x = _data(canon, seed=5)
    if any(step_parts(s)[0] == "blobs" for s in steps):
        x = _spots(x.shape)
    xs = np.ascontiguousarray(np.transpose(x, [canon.index(a) for a in order]))
    chunks, tile = _chunkings(x.shape)[ch]
    if isinstance(chunks[0], tuple):  # Zarr chunks are regular
        chunks = tuple(min(3, n) for n in x.shape)
    chunks = tuple(chunks[canon.index(a)] for a in order)
    out, tables, res = _run_zarr(tmp_path, xs, order, steps, chunks, _tile(tile, order, xs.shape), prec)
    want: dict = {}
    ref, ref_dims = oracle(steps, xs, order, tables=want, tile=res.plan.passes[-1].tile)
    assert out.attrs["convpipe"]["axes"] == ref_dims == res.plan.output.axes
    _compare(out[...], ref, steps, xs, order, prec, f"{steps} on {order} (image)")
    assert set(tables) == set(want)
    for i in want:
        _assert_rows(tables[i], want[i], canonical(order), f"{steps[i]} on {order}",
                     1e-9 if prec == "float64" else 1e-5)
        assert len(want[i][next(iter(want[i]))]) > 0 or step_parts(steps[i])[0] == "stats"


def _spots(shape):
    """Gaussian spots of a few sizes, off-centre, on a faint ramp: blob_log finds them."""
    grid = np.indices(shape).astype(float)
    rng = np.random.default_rng(2)
    img = 0.01 * grid[-1]
    for _ in range(4):
        c = [rng.uniform(1, n - 2) for n in shape]
        s = rng.uniform(1.2, 2.5)
        img += np.exp(-sum((g - ci) ** 2 for g, ci in zip(grid, c)) / (2 * s * s))
    return img


@pytest.mark.parametrize("family,canon,steps,order,ch,prec", _params(TABLE_CASES, slow=False))
def test_axis_order_tables(tmp_path, family, canon, steps, order, ch, prec):
    _check_tables(tmp_path, canon, steps, order, ch, prec)


@pytest.mark.parametrize("family,canon,steps,order,ch,prec", _params(TABLE_CASES, slow=True))
def test_axis_order_tables_slow(tmp_path, family, canon, steps, order, ch, prec):
    _check_tables(tmp_path, canon, steps, order, ch, prec)


# --------------------------------------------------------------------------- layout, explain


@pytest.mark.parametrize("order,out", [("xy", "cxy"), ("zxy", "czxy"), ("yxz", "cyxz"), ("xzy", "cxzy"),
                                       ("tyx", "tcyx"), ("ytx", "cytx")])
def test_output_order_keeps_the_inputs_and_places_c(order, out):
    x = np.random.default_rng(1).standard_normal(tuple(range(4, 4 + len(order))))
    p = convpipe.load(make_spec([{"sobel": {"output": "components"}}]))
    y = p.apply(x, axes=order)
    ref, dims = oracle([{"sobel": {"output": "components"}}], x, order)
    assert dims == out and y.shape == ref.shape
    assert_conforms(y.compute(), ref)


def test_explain_shows_the_inputs_order_and_the_compute_order(tmp_path):
    xs = np.zeros((12, 5, 9), dtype=np.float32)  # x z y
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=xs.shape, chunks=(6, 5, 9), dtype=xs.dtype)
    z[...] = xs
    spec = make_spec([{"correlate": {"kernel": K24}}, {"sobel": {"output": "components"}}], "float32",
                     input={"url": str(tmp_path / "in.zarr"), "axes": "xzy"},
                     output={"url": str(tmp_path / "o.zarr"), "chunks": [2, 6, 5, 3]})
    plan = convpipe.load(spec).explain()
    text = str(plan)
    assert "input   12x x 5z x 9y" in text and "output  2c x 12x x 5z x 9y" in text
    assert "tczyx order (zyx -> czyx)" in text and "(xzy -> cxzy)" in text
    assert plan.output.axes == "cxzy" and plan.output.chunks == (2, 6, 5, 3)  # a list follows the output
    assert plan.to_dict()["compute_axes"] == "zyx"
    canon = convpipe.load(make_spec([{"gaussian": {"sigma": 1}}], input={"url": str(tmp_path / "in.zarr"),
                                                                         "axes": "zyx"})).explain()
    assert "tczyx order" not in str(canon)


def test_run_writes_the_inputs_order_and_resumes(tmp_path):
    """A run through Zarr: the output keeps the stored order; tile lists follow it; verify agrees."""
    from convpipe.verify import verify

    x = _data("zyx", seed=9)
    order = "xzy"
    xs = np.ascontiguousarray(np.transpose(x, [2, 0, 1]))
    steps = [{"correlate": {"kernel": K35, "method": "direct"}}, {"scharr": {"output": "orientation"}}]
    out, _, res = _run_zarr(tmp_path, xs, order, steps, (4, 2, 3), [4, 5, 3], "float64")
    assert res.plan.passes[-1].tile == {"z": 5, "y": 3, "x": 4}
    ref, dims = oracle(steps, xs, order)
    assert dims == order and out.shape == xs.shape
    _compare(out[...], ref, steps, xs, order, "float64", "run xzy")
    v = verify(str(tmp_path / "out.zarr"), all=True)
    assert v.ok, v.summary()


def test_every_op_family_has_a_permuted_case():
    from convpipe.ops import registry

    names = {step_parts(s)[0] for _, _, _, steps in CASES + TABLE_CASES for s in steps}
    assert set(registry.names()) <= names, sorted(set(registry.names()) - names)


def test_case_counts():
    """The sample sizes the suite runs (reported; also a guard that both runs cover every case)."""
    fast = _params(CASES, slow=False) + _params(TABLE_CASES, slow=False)
    slow = _params(CASES, slow=True) + _params(TABLE_CASES, slow=True)
    per_family = {}
    for p in fast:
        per_family[p.values[0]] = per_family.get(p.values[0], 0) + 1
    assert {c[0] for c in CASES + TABLE_CASES} == set(per_family)
    assert len(slow) > 3 * len(fast)
    print("fast", per_family, len(fast), "slow", len(slow))
    assert list(itertools.chain.from_iterable(o for _, o in ORDERS.values()))


def test_contiguous_copies_any_strided_view():
    from convpipe.engines import contiguous

    a = np.random.default_rng(1).standard_normal((6, 7, 8, 9)).astype(np.float32)
    for view in (a[1:5, :, 2:].transpose(0, 3, 1, 2), a[:, ::2].transpose(2, 1, 0, 3), a.T, a[..., 0]):
        c = contiguous(view)
        assert c.flags.c_contiguous
        np.testing.assert_array_equal(c, view)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "int64", "float32", "float64", "bool"])
def test_transposed_copy_is_numpys_transpose(dtype):
    """The reader's fast transposed copy (OpenCV for the axis that becomes last) equals numpy's, every perm."""
    from convpipe.engines import transposed_copy

    rng = np.random.default_rng(0)
    for shape in [(3, 4, 5), (2, 3, 1, 5), (6, 7), (4,)]:
        a = (rng.random(shape) * 100).astype(dtype)
        for perm in itertools.permutations(range(len(shape))):
            b = transposed_copy(a, perm)
            assert b.flags.c_contiguous and b.dtype == a.dtype
            np.testing.assert_array_equal(b, a.transpose(perm))
