"""Conformance: every op, every mode, every chunking and tiling equals the whole-array oracle.

The contract: ``max|out - oracle| <= tol * max(1, max|oracle|)`` with tol 1e-10 in float64 and 1e-5 in
float32 (1e-8 / 1e-4 for FFT methods). The oracles live in ``convpipe.oracles`` (scipy / scikit-image in
float64 on the whole array, per sub-array over the axes an op does not act on).

Known library bugs are marked ``xfail(strict=True, reason="BUG: ...")``: when one is fixed, its tests
XPASS and fail, and the mark has to go.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from harness import check, make_spec, run

from convpipe.oracles import MODES, assert_conforms, insert_axis, oracle, resolve_on, step_parts

# sqrt / log1p of negative values give NaN, in the oracle as in the pipeline
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

# --------------------------------------------------------------------------- known bugs

BUG_CVAL = ("BUG: mode constant with cval != 0 for separable derivative filters (sobel/prewitt/scharr, "
            "gaussian_laplace, gaussian_gradient_magnitude, gaussian with order > 0): convpipe pads the "
            "input once with cval on every axis, scipy pads the intermediate result of each 1-D pass with "
            "cval, so voxels within the halo of an edge differ by O(cval)")
BUG_POINT_INT = ("BUG: point ops as the first step on an integer input run in the input's integer type "
                 "(or float16 for sqrt/log1p on uint8/int8) instead of the compute precision: scale factor "
                 "0.5 on uint8 becomes 0 (out = offset), sqrt/log1p on uint8 give float16 values (error "
                 "~4e-3), abs/scale(-1) of int8 -128 overflow to -128")
BUG_NPY_TOKEN = ("BUG: graph key token is built from the kernel source as written, not from the resolved "
                 "kernel: two specs in different folders with the same relative 'kernel: k.npy' (different "
                 "contents) get the same dask key, so in one graph the second returns the first's result")
BUG_NDARRAY_KERNEL = ("BUG: a kernel given as a numpy array (accepted by validation and by "
                      "kernels.kernel_from_source) crashes apply() with PydanticSerializationError "
                      "(build_pass serialises params with model_dump_json)")

_DERIV_OPS = {"sobel", "prewitt", "scharr", "gaussian_laplace", "gaussian_gradient_magnitude"}


BUG_CVAL_SHORT = "BUG: constant mode, cval != 0, separable derivative filter over >= 2 axes (see BUG_CVAL)"


def known_bug(steps: list[dict], dims: str) -> str | None:
    """The short reason of a known bug that ``steps`` on ``dims`` hits, or None (none are open)."""
    return None
    for st in steps:
        name, p = step_parts(st)
        if p.get("mode") == "constant" and p.get("cval", 0.0) != 0.0:
            per = [p[k] for k in ("sigma", "order") if k in p]
            if len(resolve_on(dims, p.get("axes"), *per)) < 2:
                continue  # one 1-D pass: nothing to pad in between
            if name in _DERIV_OPS:
                return BUG_CVAL_SHORT
            if name == "gaussian":
                o = p.get("order", 0)
                if any(v for v in (o.values() if isinstance(o, dict) else [o])):
                    return BUG_CVAL_SHORT
        if name in ("sobel", "prewitt", "scharr") and p.get("output") == "components":
            dims = insert_axis(dims, "c")
    return None


def xfail_if_bug(request, steps, dims):
    reason = known_bug(steps, dims)
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


# --------------------------------------------------------------------------- inputs, chunkings

CVAL = 0.7


def _irregular(n: int) -> tuple[int, ...]:
    pieces, pattern, i = [], (1, 3, 2, 5, 1, 4), 0
    while sum(pieces) < n:
        pieces.append(min(pattern[i % len(pattern)], n - sum(pieces)))
        i += 1
    return tuple(pieces)


def chunking(kind: str, shape: tuple[int, ...]):
    """(chunks, tile) for a named chunking."""
    if kind == "whole":
        return shape, None
    if kind == "ones":  # every chunk is smaller than every halo
        return tuple(1 for _ in shape), None
    if kind == "small":  # 2-3 voxels
        return tuple(min(s, 2 + (i % 2)) for i, s in enumerate(shape)), None
    if kind == "tile>chunk":  # tiles of several chunks, not a multiple of them (rounded up by the planner)
        return tuple(min(s, 2) for s in shape), [min(s, 5) for s in shape]
    if kind == "irregular":
        return tuple(_irregular(s) for s in shape), None
    raise KeyError(kind)


CHUNKINGS = ("whole", "ones", "small", "tile>chunk", "irregular")
CONFIGS = {  # id: (dims, shape, acts on the whole volume?)
    "2d": ("yx", (9, 10), False),
    "3d-planes": ("zyx", (3, 6, 7), False),
    "3d-volume": ("zyx", (3, 6, 7), True),
}

rng0 = np.random.default_rng(7)
K33 = rng0.standard_normal((3, 3)).round(3).tolist()
K333 = rng0.standard_normal((3, 3, 3)).round(3).tolist()
K24 = rng0.standard_normal((2, 4)).round(3).tolist()
K223 = rng0.standard_normal((2, 2, 3)).round(3).tolist()
KSEP2 = np.outer([1.0, 2.0, -1.0], [0.5, 1.0, 0.0, -2.0]).tolist()
KSEP3 = np.multiply.outer(np.multiply.outer([1.0, -1.0], [1.0, 2.0, 1.0]), [3.0, 0.0, 1.0]).tolist()


def local_cases(volume: bool) -> dict[str, dict]:
    """One representative parameter set per local op (and a few variants), for 2-D planes or 3-D volumes."""
    ax = {"axes": "zyx"} if volume else {}
    d = {
        "correlate": {"correlate": {"kernel": K333 if volume else K33}},
        "correlate-even-origin": {"correlate": {"kernel": K223 if volume else K24,
                                                "origin": [0, -1, 1] if volume else [-1, 1]}},
        "correlate-separable": {"correlate": {"kernel": KSEP3 if volume else KSEP2}},
        "convolve": {"convolve": {"kernel": K333 if volume else K33, "origin": [0, 1, -1] if volume else [1, 0]}},
        "convolve-even": {"convolve": {"kernel": K223 if volume else K24, "origin": -1}},
        "gaussian": {"gaussian": {"sigma": 1.5, **ax}},
        "gaussian-aniso": {"gaussian": {"sigma": {"z": 0.8, "y": 2.0, "x": 1.2} if volume else {"y": 2.0, "x": 0.8}}},
        "gaussian-order": {"gaussian": {"sigma": 1.2,
                                        "order": {"z": 0, "y": 1, "x": 2} if volume else {"y": 1, "x": 0}}},
        "uniform": {"uniform": {"size": {"z": 2, "y": 3, "x": 4} if volume else 4}},
        "sobel": {"sobel": {**ax}},
        "prewitt": {"prewitt": {**ax}},
        "scharr": {"scharr": {**ax}},
        "sobel-components": {"sobel": {"output": "components", **ax}},
        "laplace": {"laplace": {**ax}},
        "gaussian_laplace": {"gaussian_laplace": {"sigma": 1.2, **ax}},
        "gaussian_gradient_magnitude": {"gaussian_gradient_magnitude": {"sigma": 1.0, **ax}},
        "difference_of_gaussians": {"difference_of_gaussians": {"low_sigma": 1.0, "high_sigma": 2.0, **ax}},
        "median": {"median": {"size": 3, **ax}},
        "minimum": {"minimum": {"size": {"z": 3, "y": 2, "x": 3} if volume else {"y": 2, "x": 3}}},
        "maximum": {"maximum": {"size": 4 if not volume else 2, **ax}},
        "diffusion-steps": {"diffusion": {"steps": 3, "dt": 0.15 if volume else 0.2, **ax}},
        "diffusion-Dt": {"diffusion": {"diffusivity": 0.5, "time": 1.5, **ax}},
    }
    if not volume:
        d["prewitt-orientation"] = {"prewitt": {"output": "orientation"}}
    return d


def with_mode(step: dict, mode: str) -> dict:
    name, p = step_parts(step)
    p["mode"] = mode
    if mode == "constant":
        p["cval"] = CVAL
    return {name: p}


ONES_SHAPE = {"yx": (5, 6), "zyx": (2, 4, 5)}  # 1-voxel chunks on a smaller array (one task per voxel)


def _matrix():
    return [pytest.param(cfg, case, mode, id=f"{cfg}-{case}-{mode}")
            for cfg, (_, _, volume) in CONFIGS.items() for case in local_cases(volume) for mode in MODES]


def _run_case(request, cfg, case, mode, chunkings, prec, seed=0):
    dims, shape, volume = CONFIGS[cfg]
    step = with_mode(local_cases(volume)[case], mode)
    steps = [step]
    xfail_if_bug(request, steps, dims)
    circular = step_parts(step)[1].get("output") == "orientation"
    for ch in chunkings:
        sh = ONES_SHAPE[dims] if ch == "ones" else shape
        x = np.random.default_rng(seed).standard_normal(sh)
        chunks, tile = chunking(ch, sh)
        check(steps, x, dims, chunks, tile, prec, circular=circular)


@pytest.mark.parametrize("cfg,case,mode", _matrix())
def test_local_op(request, cfg, case, mode):
    """float64 (1e-10) on every chunking: whole, 1-voxel, 2-3 voxel, tiles > chunks, irregular."""
    _run_case(request, cfg, case, mode, CHUNKINGS, "float64")


@pytest.mark.parametrize("cfg,case,mode", _matrix())
def test_local_op_float32(request, cfg, case, mode):
    """float32 (1e-5 rule) on small and irregular chunks."""
    _run_case(request, cfg, case, mode, ("small", "irregular"), "float32")


@pytest.mark.slow
@pytest.mark.parametrize("cfg,case,mode", _matrix())
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_local_op_slow(request, cfg, case, mode, seed):
    _run_case(request, cfg, case, mode, CHUNKINGS, "float32", seed)
    _run_case(request, cfg, case, mode, CHUNKINGS, "float64", seed)


# --------------------------------------------------------------------------- unsharp_mask (no mode)


@pytest.mark.parametrize("ch", CHUNKINGS)
@pytest.mark.parametrize("prec", ["float64", "float32"])
@pytest.mark.parametrize("cfg,params", [
    ("2d", {"radius": 1.0, "amount": 1.0}),
    ("2d", {"radius": {"y": 2.0, "x": 0.7}, "amount": 2.5}),
    ("3d-planes", {"radius": 1.5, "amount": 0.5}),
    ("3d-volume", {"radius": 1.2, "amount": 1.0, "axes": "zyx"}),
])
def test_unsharp_mask(cfg, params, prec, ch):
    dims, shape, _ = CONFIGS[cfg]
    x = np.random.default_rng(1).standard_normal(shape)
    chunks, tile = chunking(ch, shape)
    check([{"unsharp_mask": params}], x, dims, chunks, tile, prec)


# --------------------------------------------------------------------------- fused chains


CHAINS = {
    "gauss-wrap>sobel-constant>uniform-nearest": [
        {"gaussian": {"sigma": 1.0, "mode": "wrap"}}, {"sobel": {"mode": "constant"}},
        {"uniform": {"size": 3, "mode": "nearest"}}],
    "gauss-wrap>sobel-constant-cval>uniform-nearest": [
        {"gaussian": {"sigma": 1.0, "mode": "wrap"}}, {"sobel": {"mode": "constant", "cval": 0.5}},
        {"uniform": {"size": 3, "mode": "nearest"}}],
    "median-mirror>log-reflect>abs>sqrt": [
        {"median": {"size": 3, "mode": "mirror"}}, {"gaussian_laplace": {"sigma": 1.0}}, {"abs": {}}, {"sqrt": {}}],
    "uniform-wrap>maximum-constant>laplace-mirror>scale": [
        {"uniform": {"size": 2, "mode": "wrap"}}, {"maximum": {"size": 3, "mode": "constant", "cval": -0.5}},
        {"laplace": {"mode": "mirror"}}, {"scale": {"factor": -2.0, "offset": 0.25}}],
    "dog-nearest>ggm-wrap": [
        {"difference_of_gaussians": {"low_sigma": 0.8, "high_sigma": 1.6}},
        {"gaussian_gradient_magnitude": {"sigma": 0.7, "mode": "wrap"}}],
    "correlate-even-constant>convolve-wrap>clip": [
        {"correlate": {"kernel": K24, "origin": [-1, 1], "mode": "constant", "cval": 1.5}},
        {"convolve": {"kernel": K33, "mode": "wrap"}}, {"clip": {"min": -2.0, "max": 3.0}}],
    "diffusion-steps-mirror>unsharp>minimum-wrap": [
        {"diffusion": {"steps": 2, "dt": 0.25, "mode": "mirror"}}, {"unsharp_mask": {"radius": 1.0, "amount": 2.0}},
        {"minimum": {"size": 2, "mode": "wrap"}}],
    "gauss-zx-reflect>prewitt-yx-nearest>median-z-wrap": [
        {"gaussian": {"sigma": {"z": 1.0, "x": 1.5}, "mode": "reflect"}}, {"prewitt": {"mode": "nearest"}},
        {"median": {"size": {"z": 3}, "mode": "wrap"}}],
    "scale>gauss-constant>sobel-components>gauss-yx>abs": [
        {"scale": {"factor": 3.0}}, {"gaussian": {"sigma": 0.8, "mode": "constant"}},
        {"sobel": {"output": "components", "mode": "reflect"}}, {"gaussian": {"sigma": 1.0, "mode": "wrap"}},
        {"abs": {}}],
    "diffusion-Dt-wrap>uniform-zyx-mirror>dog-constant": [
        {"diffusion": {"diffusivity": 0.25, "time": 2.0, "mode": "wrap"}},
        {"uniform": {"size": 3, "axes": "zyx", "mode": "mirror"}},
        {"difference_of_gaussians": {"low_sigma": 1.0, "mode": "constant", "cval": 0.2}}],
}


@pytest.mark.parametrize("ch", CHUNKINGS)
@pytest.mark.parametrize("chain", list(CHAINS))
def test_fused_chain(request, chain, ch):
    steps = CHAINS[chain]
    xfail_if_bug(request, steps, "zyx")
    x = np.random.default_rng(3).standard_normal((4, 10, 9) if ch != "ones" else (2, 5, 6))
    chunks, tile = chunking(ch, x.shape)
    check(steps, x, "zyx", chunks, tile, "float64")


@pytest.mark.parametrize("ch", ["small", "irregular"])
@pytest.mark.parametrize("chain", list(CHAINS))
def test_fused_chain_float32(request, chain, ch):
    steps = CHAINS[chain]
    xfail_if_bug(request, steps, "zyx")
    x = np.random.default_rng(4).standard_normal((3, 9, 10))
    chunks, tile = chunking(ch, x.shape)
    check(steps, x, "zyx", chunks, tile, "float32")


def test_fused_chain_each_op_keeps_its_mode():
    """The same op twice with different modes is not the same as either mode twice."""
    x = np.random.default_rng(5).standard_normal((9, 12))
    steps = [{"gaussian": {"sigma": 2.0, "mode": "wrap"}}, {"gaussian": {"sigma": 2.0, "mode": "constant"}}]
    _, ref = check(steps, x, "yx", (2, 3))
    for m in ("wrap", "constant"):
        other, _ = oracle([{"gaussian": {"sigma": 2.0, "mode": m}}] * 2, x, "yx")
        assert np.abs(other - ref).max() > 1e-3


# --------------------------------------------------------------------------- wrap across many chunks


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", [
    {"uniform": {"size": 7}}, {"gaussian": {"sigma": 3.0}}, {"median": {"size": 5}},
    {"correlate": {"kernel": [1.0, -2.0, 3.0, 0.5, 4.0, -1.0]}}, {"diffusion": {"steps": 6, "dt": 0.4}},
])
def test_1d_long_halo_many_chunks(op, mode):
    """1-D signal in 1-voxel chunks: wrap pulls runs from the far end through many chunks."""
    steps = [with_mode(op, mode)]
    x = np.random.default_rng(6).standard_normal(31)
    for chunks, tile in (((1,), None), ((3,), [7]), (_irregular(31), None)):
        check(steps, x, "x", chunks, tile)


@pytest.mark.parametrize("prec", ["float64", "float32"])
def test_wrap_across_many_chunks_2d(prec):
    x = np.random.default_rng(8).standard_normal((24, 30))
    steps = [{"gaussian": {"sigma": {"y": 3.0, "x": 4.0}, "mode": "wrap"}},
             {"uniform": {"size": 5, "mode": "wrap"}}, {"laplace": {"mode": "wrap"}}]
    check(steps, x, "yx", (2, 3), None, prec)
    check(steps, x, "yx", (5, 7), [10, 14], prec)


# --------------------------------------------------------------------------- halos larger than the array


HUGE = [
    ("gaussian-s10", {"gaussian": {"sigma": 10.0}}),
    ("gaussian-s10-order1", {"gaussian": {"sigma": 10.0, "order": 1}}),
    ("uniform-15", {"uniform": {"size": 15}}),
    ("median-9", {"median": {"size": 9}}),
    ("maximum-11", {"maximum": {"size": 11}}),
    ("correlate-1x15", {"correlate": {"kernel": [list(np.linspace(-1, 2, 15))]}}),
    ("gaussian_laplace-s4", {"gaussian_laplace": {"sigma": 4.0}}),
    ("diffusion-steps-9", {"diffusion": {"steps": 9, "dt": 0.2}}),
    ("sobel", {"sobel": {}}),
    ("dog-3-6", {"difference_of_gaussians": {"low_sigma": 3.0, "high_sigma": 6.0}}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,op", HUGE, ids=[h[0] for h in HUGE])
def test_halo_larger_than_array(request, name, op, mode):
    steps = [with_mode(op, mode)]
    xfail_if_bug(request, steps, "yx")
    for shape, chunks in (((7, 5), (2, 2)), ((1, 6), (1, 1)), ((2, 9), (1, 4)), ((3, 7), (3, 7))):
        x = np.random.default_rng(9).standard_normal(shape)
        check(steps, x, "yx", chunks)


@pytest.mark.parametrize("mode", MODES)
def test_halo_larger_than_array_1d_and_3d(request, mode):
    steps = [with_mode({"gaussian": {"sigma": 10.0}}, mode)]
    check(steps, np.random.default_rng(10).standard_normal(7), "x", (2,))
    x = np.random.default_rng(11).standard_normal((2, 7, 3))
    check([with_mode({"gaussian": {"sigma": {"z": 6.0, "y": 10.0, "x": 5.0}}}, mode)], x, "zyx", (1, 3, 1))
    check([with_mode({"uniform": {"size": {"z": 9, "y": 4, "x": 8}}}, mode)], x, "zyx", (1, 2, 2), [2, 5, 3])


# --------------------------------------------------------------------------- ops on a subset of axes


SUBSET = {
    "gaussian-zx": {"gaussian": {"sigma": {"z": 1.0, "x": 2.0}}},
    "gaussian-z": {"gaussian": {"sigma": 1.5, "axes": "z"}},
    "uniform-zx": {"uniform": {"size": 3, "axes": "zx"}},
    "sobel-zx": {"sobel": {"axes": "zx"}},
    "scharr-zx-components": {"scharr": {"axes": "zx", "output": "components"}},
    "prewitt-zx-orientation": {"prewitt": {"axes": "zx", "output": "orientation"}},
    "laplace-zx": {"laplace": {"axes": "zx"}},
    "gaussian_laplace-zx": {"gaussian_laplace": {"sigma": {"z": 0.8, "x": 1.3}}},
    "ggm-zy": {"gaussian_gradient_magnitude": {"sigma": 1.0, "axes": "zy"}},
    "dog-zx": {"difference_of_gaussians": {"low_sigma": {"z": 0.5, "x": 1.0}}},
    "median-zx": {"median": {"size": {"z": 3, "x": 2}}},
    "minimum-z": {"minimum": {"size": 3, "axes": "z"}},
    "correlate-zx": {"correlate": {"kernel": K24, "axes": "zx"}},
    "correlate-1d-y": {"correlate": {"kernel": [1.0, 2.0, -3.0, 0.5], "axes": "y"}},
    "correlate-1d-kernel-on-zx": {"correlate": {"kernel": [1.0, 2.0, -3.0, 0.5], "axes": "zx"}},
    "convolve-zx": {"convolve": {"kernel": K33, "axes": "zx", "origin": [1, -1]}},
    "diffusion-zx": {"diffusion": {"steps": 2, "dt": 0.2, "axes": "zx"}},
    "unsharp-zx": {"unsharp_mask": {"radius": {"z": 1.0, "x": 0.5}, "amount": 1.2}},
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(SUBSET))
def test_subset_axes(request, case, mode):
    op = SUBSET[case]
    steps = [op if "unsharp" in case else with_mode(op, mode)]
    if "unsharp" in case and mode != "reflect":
        pytest.skip("unsharp_mask has no mode")
    xfail_if_bug(request, steps, "zyx")
    for ch in ("small", "ones", "tile>chunk"):
        x = np.random.default_rng(12).standard_normal((5, 4, 6) if ch != "ones" else (3, 2, 4))
        chunks, tile = chunking(ch, x.shape)
        circular = "orientation" in case
        check(steps, x, "zyx", chunks, tile, circular=circular)


# --------------------------------------------------------------------------- kernels: even sizes, origins, methods


def _valid_origins(size: int) -> list[int]:
    return list(range(-(size // 2), (size - 1) // 2 + 1))


EVEN = [(2, 2), (2, 4), (4, 3), (1, 4), (4, 1), (6, 2)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", EVEN, ids=[f"{a}x{b}" for a, b in EVEN])
@pytest.mark.parametrize("name", ["correlate", "convolve"])
def test_even_kernels_all_origins(name, shape, mode):
    k = np.random.default_rng(13).standard_normal(shape).round(3).tolist()
    x = np.random.default_rng(14).standard_normal((9, 10))
    for oy, ox in itertools.product(_valid_origins(shape[0]), _valid_origins(shape[1])):
        step = with_mode({name: {"kernel": k, "origin": [oy, ox]}}, mode)
        check([step], x, "yx", (2, 3))
    check([with_mode({name: {"kernel": k, "origin": [oy, ox]}}, mode)], x, "yx", (1, 1))


@pytest.mark.parametrize("name", ["correlate", "convolve"])
def test_origin_outside_kernel_is_refused(name):
    import convpipe
    from convpipe.errors import ConvpipeError

    with pytest.raises((ConvpipeError, ValueError), match="origin"):
        p = convpipe.load(make_spec([{name: {"kernel": [[1.0, 2.0, 3.0]], "origin": [0, 2]}}]))
        p.apply(np.zeros((4, 4)), axes="yx").compute()


METHOD_KERNELS = {
    "separable-2x4": KSEP2,
    "nonseparable-3x3": K33,
    "nonseparable-4x5": np.random.default_rng(15).standard_normal((4, 5)).round(3).tolist(),
}


def _method_cases():
    return [pytest.param(name, kname, method, id=f"{name}-{kname}-{method}")
            for name in ("correlate", "convolve") for kname in METHOD_KERNELS
            for method in ("auto", "direct", "separable", "fft")
            if method != "separable" or kname.startswith("separable")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,kname,method", _method_cases())
def test_methods(name, kname, method, mode):
    k = METHOD_KERNELS[kname]
    x = np.random.default_rng(16).standard_normal((2, 9, 10))
    step = with_mode({name: {"kernel": k, "method": method, "origin": [0, -1]}}, mode)
    for prec in ("float64", "float32"):
        check([step], x, "zyx", (1, 3, 2), None, prec)
        check([step], x, "zyx", (2, 4, 5), [2, 8, 10], prec)


@pytest.mark.parametrize("method", ["auto", "direct", "fft"])
@pytest.mark.parametrize("mode", MODES)
def test_methods_3d_kernel(method, mode):
    x = np.random.default_rng(17).standard_normal((5, 7, 6))
    step = with_mode({"correlate": {"kernel": K223, "method": method, "origin": [-1, 0, 1]}}, mode)
    check([step], x, "zyx", (2, 2, 3))
    step = with_mode({"convolve": {"kernel": KSEP3, "method": method}}, mode)
    check([step], x, "zyx", (1, 3, 2), None, "float32")


def test_large_kernel_auto_fft():
    """A 31x31 non-separable kernel: auto may pick FFT, which then has the FFT tolerance."""
    k = np.random.default_rng(18).standard_normal((31, 31)) / 31
    x = np.random.default_rng(19).standard_normal((40, 45))
    for mode, prec in (("wrap", "float64"), ("reflect", "float64"), ("constant", "float64"), ("mirror", "float32")):
        steps = [{"correlate": {"kernel": k.tolist(), "mode": mode}}]
        out = run(steps, x, "yx", (16, 20), None, prec)
        ref, _ = oracle(steps, x, "yx")
        assert_conforms(out, ref, prec, fft=True, what=f"31x31 {mode}")


# --------------------------------------------------------------------------- the dask tokenize trap


def _orientation_pair(kind: str):
    K = np.random.default_rng(20).standard_normal((1, 3, 3))
    if kind == "swap-yx":
        return K, K.transpose(0, 2, 1)  # same shape, a transposed view
    return K, K.T  # (1, 3, 3) and (3, 3, 1)


@pytest.mark.parametrize("kind", ["swap-yx", "full-transpose"])
def test_kernel_and_its_transpose_in_one_graph(kind):
    import dask
    import dask.array as da

    import convpipe

    K, KT = _orientation_pair(kind)
    assert not np.allclose(np.ascontiguousarray(K).ravel(), np.ascontiguousarray(KT).ravel())
    x = np.random.default_rng(21).standard_normal((4, 9, 11))
    arr = da.from_array(x, chunks=(2, 4, 5))
    pa = convpipe.load(make_spec([{"correlate": {"kernel": K.tolist(), "axes": "zyx"}}]))
    pb = convpipe.load(make_spec([{"correlate": {"kernel": KT.tolist(), "axes": "zyx"}}]))
    a, b = dask.compute(pa.apply(arr, axes="zyx"), pb.apply(arr, axes="zyx"))
    ra, _ = oracle([{"correlate": {"kernel": K.tolist()}}], x, "zyx")
    rb, _ = oracle([{"correlate": {"kernel": KT.tolist()}}], x, "zyx")
    assert np.abs(ra - rb).max() > 1e-3
    assert_conforms(a, ra, what="K")
    assert_conforms(b, rb, what="K transposed")
    # both in one fused chain, and one graph holding both orders
    c1 = convpipe.load(make_spec([{"correlate": {"kernel": K.tolist()}}, {"correlate": {"kernel": KT.tolist()}}]))
    c2 = convpipe.load(make_spec([{"correlate": {"kernel": KT.tolist()}}, {"correlate": {"kernel": K.tolist()}}]))
    o1, o2 = dask.compute(c1.apply(arr, axes="zyx"), c2.apply(arr, axes="zyx"))
    r1, _ = oracle([{"correlate": {"kernel": K.tolist()}}, {"correlate": {"kernel": KT.tolist()}}], x, "zyx")
    r2, _ = oracle([{"correlate": {"kernel": KT.tolist()}}, {"correlate": {"kernel": K.tolist()}}], x, "zyx")
    assert_conforms(o1, r1, what="K then KT")
    assert_conforms(o2, r2, what="KT then K")


def test_kernel_and_its_transpose_as_numpy_arrays():
    import dask
    import dask.array as da

    import convpipe

    K, KT = _orientation_pair("swap-yx")
    x = np.random.default_rng(22).standard_normal((4, 9, 11))
    arr = da.from_array(x, chunks=(2, 4, 5))
    pa = convpipe.load(make_spec([{"correlate": {"kernel": K}}]))
    pb = convpipe.load(make_spec([{"correlate": {"kernel": KT}}]))
    a, b = dask.compute(pa.apply(arr, axes="zyx"), pb.apply(arr, axes="zyx"))
    assert_conforms(a, oracle([{"correlate": {"kernel": K}}], x, "zyx")[0])
    assert_conforms(b, oracle([{"correlate": {"kernel": KT}}], x, "zyx")[0])


def test_kernel_and_its_transpose_as_npy_files(tmp_path):
    import dask
    import dask.array as da

    import convpipe

    K, KT = _orientation_pair("swap-yx")
    np.save(tmp_path / "k.npy", K)
    np.save(tmp_path / "kt.npy", np.ascontiguousarray(KT))
    x = np.random.default_rng(23).standard_normal((4, 9, 11))
    arr = da.from_array(x, chunks=(2, 4, 5))
    pa = convpipe.load(make_spec([{"correlate": {"kernel": str(tmp_path / "k.npy")}}]))
    pb = convpipe.load(make_spec([{"correlate": {"kernel": str(tmp_path / "kt.npy")}}]))
    a, b = dask.compute(pa.apply(arr, axes="zyx"), pb.apply(arr, axes="zyx"))
    assert_conforms(a, oracle([{"correlate": {"kernel": K.tolist()}}], x, "zyx")[0])
    assert_conforms(b, oracle([{"correlate": {"kernel": KT.tolist()}}], x, "zyx")[0])


def test_same_relative_npy_name_in_two_spec_folders(tmp_path):
    import dask
    import dask.array as da
    import yaml

    import convpipe

    K, KT = _orientation_pair("swap-yx")
    pipes = []
    for sub, k in (("a", K), ("b", KT)):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "k.npy", np.ascontiguousarray(k))
        (tmp_path / sub / "spec.yaml").write_text(yaml.safe_dump(make_spec([{"correlate": {"kernel": "k.npy"}}])))
        pipes.append(convpipe.load(tmp_path / sub / "spec.yaml"))
    x = np.random.default_rng(24).standard_normal((4, 9, 11))
    arr = da.from_array(x, chunks=(2, 4, 5))
    a, b = dask.compute(pipes[0].apply(arr, axes="zyx"), pipes[1].apply(arr, axes="zyx"))
    assert_conforms(a, oracle([{"correlate": {"kernel": K.tolist()}}], x, "zyx")[0], what="folder a")
    assert_conforms(b, oracle([{"correlate": {"kernel": KT.tolist()}}], x, "zyx")[0], what="folder b")


# --------------------------------------------------------------------------- other axes, dtypes, 1-D


ONE_D = [
    {"gaussian": {"sigma": 2.0}}, {"gaussian": {"sigma": 1.0, "order": 2}}, {"uniform": {"size": 4}},
    {"median": {"size": 4}}, {"minimum": {"size": 3}}, {"sobel": {}}, {"laplace": {}},
    {"correlate": {"kernel": [1.0, 0.0, -2.0, 0.5]}}, {"convolve": {"kernel": [1.0, 0.0, -2.0, 0.5], "origin": -1}},
    {"diffusion": {"steps": 4, "dt": 0.3}}, {"difference_of_gaussians": {"low_sigma": 1.0}},
    {"gaussian_gradient_magnitude": {"sigma": 1.5}},
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", ONE_D, ids=[f"{next(iter(o))}{i}" for i, o in enumerate(ONE_D)])
def test_1d_signals(request, op, mode):
    steps = [with_mode(op, mode)]
    xfail_if_bug(request, steps, "x")
    x = np.random.default_rng(25).standard_normal(17)
    for chunks, tile in (((1,), None), ((4,), [9]), ((17,), None)):
        check(steps, x, "x", chunks, tile)
    check(steps, x, "x", (3,), None, "float32")


@pytest.mark.parametrize("dims,shape,chunks,steps", [
    ("tyx", (3, 8, 9), (1, 3, 4), [{"gaussian": {"sigma": 1.5, "mode": "wrap"}}, {"sobel": {}}]),
    ("czyx", (2, 3, 7, 6), (1, 2, 3, 2), [{"uniform": {"size": {"z": 3, "y": 2, "x": 3}, "mode": "mirror"}}]),
    ("tzyx", (2, 3, 6, 7), (1, 1, 2, 3), [{"median": {"size": 3, "axes": "zyx", "mode": "nearest"}},
                                          {"laplace": {"axes": "zyx", "mode": "wrap"}}]),
    ("tczyx", (2, 2, 3, 5, 6), (1, 2, 2, 2, 3), [{"sobel": {"axes": "zyx", "mode": "reflect"}}]),
    ("tx", (4, 15), (2, 2), [{"gaussian": {"sigma": {"t": 1.0, "x": 2.0}, "mode": "wrap"}}]),
    ("zy", (5, 9), (2, 2), [{"gaussian_laplace": {"sigma": 1.0}}]),
])
def test_other_axis_names(dims, shape, chunks, steps):
    x = np.random.default_rng(26).standard_normal(shape)
    check(steps, x, dims, chunks)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32", "int32"])
@pytest.mark.parametrize("prec", ["float64", "float32"])
def test_integer_and_float32_inputs_to_local_ops(dtype, prec):
    """Local ops cast integer inputs to the compute precision before the first op."""
    rng = np.random.default_rng(27)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    hi = min(int(info.max), 4000) if info else 100
    lo = max(int(info.min), -4000) if info else -100
    x = rng.integers(lo, hi, (6, 9, 10)).astype(dtype)
    steps = [{"gaussian": {"sigma": 1.2, "mode": "mirror"}}, {"median": {"size": 3, "mode": "wrap"}},
             {"sobel": {"mode": "nearest"}}]
    check(steps, x, "zyx", (2, 3, 4), None, prec)


# --------------------------------------------------------------------------- point ops


POINT = [
    {"scale": {"factor": 2.5, "offset": -1.0}}, {"scale": {"factor": -0.5}}, {"clip": {"min": -0.3, "max": 0.8}},
    {"clip": {"min": 0.1}}, {"clip": {"max": -0.1}}, {"abs": {}}, {"log1p": {}}, {"sqrt": {}},
    {"threshold": {"value": 0.25}}, {"astype": {"dtype": "float32"}},
]


@pytest.mark.parametrize("prec", ["float64", "float32"])
@pytest.mark.parametrize("op", POINT, ids=[f"{next(iter(o))}{i}" for i, o in enumerate(POINT)])
def test_point_ops_on_float_input(op, prec):
    x = np.random.default_rng(28).standard_normal((5, 7, 6))
    out, _ = check([op], x, "zyx", (2, 3, 2), None, prec)
    if "threshold" in op:
        assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}


@pytest.mark.parametrize("dtype,scale", [("int8", 400), ("uint8", 800), ("int16", 1e5)])
def test_astype_saturates(dtype, scale):
    x = np.random.default_rng(29).standard_normal((6, 8)) * scale
    x[0, 0] = np.nan
    steps = [{"gaussian": {"sigma": 0.7}}, {"astype": {"dtype": dtype}}]
    out = run(steps, x, "yx", (2, 3))
    ref, _ = oracle(steps, x, "yx")
    pre, _ = oracle(steps[:1], x, "yx")
    assert out.dtype == np.dtype(dtype)
    assert ref.min() == np.iinfo(dtype).min and ref.max() == np.iinfo(dtype).max  # both ends saturate
    at_integer = np.abs(pre - np.round(pre)) < 1e-9  # truncation may go either way there
    assert np.array_equal(out[~at_integer], ref[~at_integer])


@pytest.mark.parametrize("op", [{"threshold": {"value": 100}}, {"clip": {"min": 10, "max": 100}}])
@pytest.mark.parametrize("dtype", ["uint8", "int16"])
def test_point_ops_on_integer_input(op, dtype):
    x = np.random.default_rng(30).integers(0, 250, (7, 9)).astype(dtype)
    check([op], x, "yx", (2, 3))


@pytest.mark.parametrize("dtype,op", [
    ("uint8", {"scale": {"factor": 0.5, "offset": 1.0}}),
    ("uint8", {"sqrt": {}}),
    ("uint8", {"log1p": {}}),
    ("int8", {"abs": {}}),
    ("int8", {"scale": {"factor": -1.0}}),
    ("uint16", {"scale": {"factor": 0.25}}),
], ids=["uint8-scale0.5", "uint8-sqrt", "uint8-log1p", "int8-abs", "int8-scale-1", "uint16-scale0.25"])
@pytest.mark.parametrize("prec", ["float64", "float32"])
def test_point_ops_first_on_integer_input(dtype, op, prec):
    info = np.iinfo(dtype)
    x = np.random.default_rng(31).integers(info.min, info.max, (7, 9), endpoint=True).astype(dtype)
    x.flat[0] = info.min
    check([op], x, "yx", (2, 3), None, prec)


# --------------------------------------------------------------------------- known bugs, focused


@pytest.mark.parametrize("op", ["sobel", "prewitt", "scharr"])
def test_components_without_tile(op):
    """Regression: apply() without tile= once failed for ops that add a 'c' axis."""
    x = np.random.default_rng(32).standard_normal((3, 8, 9))
    check([{op: {"output": "components"}}], x, "zyx", (1, 3, 4))


@pytest.mark.parametrize("op", ["sobel", "prewitt", "scharr"])
def test_components_with_a_tile_list_per_output_axis(op):
    x = np.random.default_rng(37).standard_normal((3, 8, 9))
    out, _ = check([{op: {"output": "components", "axes": "zyx"}}], x, "zyx", (1, 3, 4), [3, 2, 3, 4])
    assert out.shape == (3, 3, 8, 9)
    out, _ = check([{op: {"output": "components"}}], x, "zyx", (1, 3, 4), [2, 1, 5, 5])
    assert out.shape == (2, 3, 8, 9)  # c is inserted before z ('tczyx' order), one per acted axis


def test_apply_accepts_numpy_and_default_axes():
    import dask.array as da

    import convpipe

    x = np.random.default_rng(38).standard_normal((6, 7))
    steps = [{"gaussian": {"sigma": 1.0, "mode": "wrap"}}, {"laplace": {}}]
    out = convpipe.load(make_spec(steps)).apply(x).compute()
    assert_conforms(out, oracle(steps, x, "yx")[0])
    x3 = np.random.default_rng(39).standard_normal((3, 6, 7))
    out = convpipe.load(make_spec(steps)).apply(x3, tile=[1, 4, 4]).compute()  # default axes: zyx
    assert_conforms(out, oracle(steps, x3, "zyx")[0])
    spec = make_spec(steps, execution={"tile": {"y": 2, "x": 3}})  # the spec's tile, when apply gets none
    out = convpipe.load(spec).apply(da.from_array(x3, chunks=(1, 1, 2)), axes="zyx").compute()
    assert_conforms(out, oracle(steps, x3, "zyx")[0])


@pytest.mark.parametrize("op", [
    {"sobel": {}}, {"prewitt": {"output": "components"}}, {"scharr": {"output": "orientation"}},
    {"gaussian_laplace": {"sigma": 1.0}}, {"gaussian_gradient_magnitude": {"sigma": 1.0}},
    {"gaussian": {"sigma": 1.0, "order": 1}},
], ids=["sobel", "prewitt-components", "scharr-orientation", "gaussian_laplace", "ggm", "gaussian-order1"])
def test_constant_cval_nonzero_derivative_filters(op):
    """Whole array in one chunk, so no tiling is involved: the boundary itself differs from scipy."""
    (name, p), = op.items()
    step = {name: dict(p, mode="constant", cval=2.0)}
    x = np.random.default_rng(33).standard_normal((12, 14))
    check([step], x, "yx", x.shape, {"y": 12, "x": 14} if p.get("output") == "components" else None,
          circular=p.get("output") == "orientation")


# --------------------------------------------------------------------------- full runs through Zarr


def _write_input(url: str, x: np.ndarray, chunks, zarr_format: int = 3):
    import zarr

    if url.startswith("memory://"):
        from zarr.storage import FsspecStore

        store = FsspecStore.from_url(url, read_only=False)
    else:
        store = url.removeprefix("file://")
    a = zarr.create_array(store=store, shape=x.shape, chunks=chunks, dtype=x.dtype, zarr_format=zarr_format,
                          overwrite=True)
    a[...] = x


def _read(url: str):
    import zarr

    if url.startswith("memory://"):
        from zarr.storage import FsspecStore

        return zarr.open_array(FsspecStore.from_url(url, read_only=True), mode="r")
    return zarr.open_array(url.removeprefix("file://"), mode="r")


ZARR_CASES = {
    "gauss-wrap>sobel-constant f64": dict(
        steps=[{"gaussian": {"sigma": 1.5, "mode": "wrap"}}, {"sobel": {"mode": "constant"}}],
        shape=(4, 11, 13), chunks=(1, 2, 3), dtype="float64", precision="float64"),
    "median>log f32 tile": dict(
        steps=[{"median": {"size": 3, "mode": "mirror"}}, {"gaussian_laplace": {"sigma": 1.0, "mode": "nearest"}}],
        shape=(3, 12, 10), chunks=(2, 3, 4), dtype="float32", precision="float32",
        execution={"tile": [2, 6, 8]}, output={"chunks": [1, 6, 4]}),
    "uint8 diffusion v2": dict(
        steps=[{"diffusion": {"steps": 3, "dt": 0.2, "mode": "wrap"}}, {"uniform": {"size": 4}}],
        shape=(2, 9, 14), chunks=(1, 4, 5), dtype="uint8", precision="float64", output={"zarr_format": 2}),
    "threshold uint8 out": dict(
        steps=[{"gaussian": {"sigma": 1.0}}, {"threshold": {"value": 0.1}}],
        shape=(2, 10, 10), chunks=(1, 3, 3), dtype="float64", precision="float64"),
    "components": dict(
        steps=[{"prewitt": {"output": "components", "axes": "zyx", "mode": "reflect"}}],
        shape=(3, 7, 8), chunks=(1, 3, 3), dtype="float64", precision="float64"),
    "halo > array, wrap": dict(
        steps=[{"gaussian": {"sigma": 8.0, "mode": "wrap"}}, {"maximum": {"size": 3, "mode": "constant", "cval": 0.3}}],
        shape=(2, 5, 6), chunks=(1, 1, 2), dtype="float64", precision="float64", output={"dtype": "float64"}),
}


@pytest.mark.parametrize("where", ["local", "file-url", "memory"])
@pytest.mark.parametrize("case", list(ZARR_CASES))
def test_zarr_run(case, where, tmp_path, request):
    import convpipe

    c = ZARR_CASES[case]
    rng = np.random.default_rng(34)
    x = rng.standard_normal(c["shape"])
    x = (np.clip(x * 40 + 120, 0, 255).astype(c["dtype"]) if c["dtype"] == "uint8" else x.astype(c["dtype"]))
    tag = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)
    if where == "memory":
        in_url, out_url = f"memory://convpipe-tests/{tag}/in.zarr", f"memory://convpipe-tests/{tag}/out.zarr"
    else:
        in_url, out_url = str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr")
        if where == "file-url":
            in_url, out_url = "file://" + in_url, "file://" + out_url
    _write_input(in_url, x, c["chunks"])
    spec = make_spec(c["steps"], c["precision"], input={"url": in_url},
                     output={"url": out_url, **c.get("output", {})}, execution=c.get("execution", {}))
    res = convpipe.load(spec).run()
    got = _read(out_url)
    ref, _ = oracle(c["steps"], x, "zyx" if len(c["shape"]) == 3 else None)
    out = got[...]
    want_dtype = c.get("output", {}).get("dtype") or (
        "uint8" if "threshold" in step_parts(c["steps"][-1])[0] else c["precision"])
    assert out.dtype == np.dtype(want_dtype)
    if "output" in c and "chunks" in c["output"]:
        assert tuple(got.chunks) == tuple(c["output"]["chunks"])
    if out.dtype == np.uint8:
        pre, _ = oracle(c["steps"][:-1], x, "zyx")
        thr = step_parts(c["steps"][-1])[1]["value"]
        ambiguous = np.abs(pre - thr) <= 1e-5 * max(1.0, np.abs(pre).max())
        assert np.array_equal(out[~ambiguous], ref[~ambiguous])
    else:
        assert_conforms(out, ref, c["precision"], what=f"zarr run {case} at {where}")
    assert got.attrs["convpipe"]["complete"] is True
    assert res.voxels == int(np.prod(ref.shape))


def test_zarr_run_overwrite_and_refuse(tmp_path):
    import convpipe
    from convpipe.errors import ConvpipeError

    x = np.random.default_rng(35).standard_normal((5, 9))
    in_url, out_url = str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr")
    _write_input(in_url, x, (2, 4))
    steps = [{"uniform": {"size": 3, "mode": "wrap"}}]
    p = convpipe.load(make_spec(steps, "float64", input={"url": in_url}, output={"url": out_url}))
    p.run()
    with pytest.raises(ConvpipeError):
        p.run()
    steps2 = [{"gaussian": {"sigma": 2.0, "mode": "mirror"}}]
    p2 = convpipe.load(make_spec(steps2, "float64", input={"url": in_url}, output={"url": out_url}))
    p2.run(overwrite=True)
    assert_conforms(_read(out_url)[...], oracle(steps2, x, "yx")[0])


@pytest.mark.parametrize("mode", MODES)
def test_rank_oracle_agrees_with_scipy(mode):
    """The brute-force rank oracle is scipy's median/minimum/maximum_filter wherever scipy's N-D path runs
    (2-D and 3-D, even and odd sizes, windows longer than the array)."""
    import scipy.ndimage as ndi
    from convpipe.oracles import rank_filter

    rng = np.random.default_rng(36)
    fns = {"median": ndi.median_filter, "minimum": ndi.minimum_filter, "maximum": ndi.maximum_filter}
    for shape, size in (((7, 9), (3, 4)), ((4, 5), (9, 2)), ((2, 3, 4), (3, 1, 5)), ((1, 6), (5, 3))):
        x = rng.standard_normal(shape)
        for kind, fn in fns.items():
            want = fn(x, size=size, mode=mode, cval=0.3)
            assert np.array_equal(rank_filter(x, size, kind, mode, 0.3), want), (kind, shape, size)


def test_oracle_module_does_not_import_convpipe():
    """The oracle must not share code with what it checks: the oracle modules (convpipe.oracles and the
    families beside it, convpipe.oracles_<family>) import numpy, scipy and scikit-image only (and the
    standard library), nothing of convpipe but one another, not even lazily."""
    import ast
    import sys

    import convpipe.oracles

    folder = Path(convpipe.oracles.__file__).parent
    modules = [folder / "oracles.py", *sorted(folder.glob("oracles_*.py"))]
    siblings = {m.stem for m in modules}
    allowed = {"numpy", "scipy", "skimage", "__future__"} | set(sys.stdlib_module_names)
    for path in modules:
        tree = ast.parse(path.read_text())
        roots = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # only another oracle module: `from . import oracles_layers`
                    assert node.level == 1 and node.module is None and \
                        {a.name for a in node.names} <= siblings, f"relative import in {path.name} (line {node.lineno})"
                    continue
                roots.add(node.module.split(".")[0])
        assert roots <= allowed, (path.name, roots - allowed)
