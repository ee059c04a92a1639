"""The conformance suite's one case list: every case an op, chain, chunking, axis order or table must pass
on every executor (tests/executors.py says how each executor runs one).

A :class:`Case` is what one test of the old per-purpose suite checked: one or more :class:`Check`\\ s
(steps, an input, its axes, a chunking, a work tile, a precision) that must each equal the whole-array
oracle of :mod:`convpipe.oracles` within SPEC.md's tolerance. Groups:

``local_op`` / ``local_op_float32`` / ``local_op_seeds`` (slow)
    every local op in every mode, on 2-D planes, 3-D planes and 3-D volumes, over every chunking.
``unsharp_mask``, ``fused_chain`` / ``fused_chain_float32``, ``1d_long_halo``, ``wrap_many_chunks_2d``,
``halo_larger_than_array`` / ``halo_larger_than_array_1d_3d``, ``subset_axes``, ``even_kernels``, ``methods``,
``methods_3d_kernel``, ``large_kernel_auto_fft``, ``1d_signals``, ``other_axis_names``, ``integer_inputs``,
``point_float``, ``astype_saturates``, ``point_integer``, ``point_first_on_integer``, ``components``,
``components_tile_list``, ``cval_derivatives``
    the rest of what tests/test_conformance.py checked, one group per former test.
``axis_order`` / ``tables``
    every op family on permuted axis orders (tests/test_conformance_axes.py), the tables through a run.

Chunkings cut every kernel: whole, 1-voxel, 2-3 voxels, tiles of several chunks, irregular chunks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convpipe.oracles import MODES, step_parts

# --------------------------------------------------------------------------- the case list's types


@dataclass(frozen=True)
class Check:
    """One run that must conform: ``steps`` on ``make_x()`` with axes ``dims``."""

    steps: list
    make_x: Callable[[], np.ndarray]
    dims: str
    chunks: Any = None  # None: one chunk; a tuple per axis (ints, or tuples of ints: irregular chunks)
    tile: Any = None  # None: the chunks; a list (per input axis) or a dict by axis letter
    precision: str = "float64"
    circular: bool | None = None  # compare angles modulo 2 pi (None: when the last step is an orientation)
    fft: bool | None = None  # SPEC.md's FFT tolerance (None: when a step may use the FFT)
    compare: str = "conforms"  # "conforms" | "saturate" (an integer astype: exact except at integers)
    dtype: str | None = None  # the output dtype it must have
    shape: tuple | None = None  # the output shape it must have
    tables: bool = False  # the steps write tables: run only, rows compared with the oracle's


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    checks: tuple[Check, ...]
    slow: bool = False
    marks: tuple = field(default=())

    @property
    def id(self) -> str:
        return f"{self.group}-{self.name}"


def _x(shape, seed: int) -> Callable[[], np.ndarray]:
    return lambda: np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------- chunkings, shared data

CVAL = 0.7


def irregular(n: int) -> tuple[int, ...]:
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
        return tuple(irregular(s) for s in shape), None
    raise KeyError(kind)


CHUNKINGS = ("whole", "ones", "small", "tile>chunk", "irregular")
CONFIGS = {  # id: (dims, shape, acts on the whole volume?)
    "2d": ("yx", (9, 10), False),
    "3d-planes": ("zyx", (3, 6, 7), False),
    "3d-volume": ("zyx", (3, 6, 7), True),
}
ONES_SHAPE = {"yx": (5, 6), "zyx": (2, 4, 5)}  # 1-voxel chunks on a smaller array (one task per voxel)

rng0 = np.random.default_rng(7)
K33 = rng0.standard_normal((3, 3)).round(3).tolist()
K333 = rng0.standard_normal((3, 3, 3)).round(3).tolist()
K24 = rng0.standard_normal((2, 4)).round(3).tolist()
K223 = rng0.standard_normal((2, 2, 3)).round(3).tolist()
KSEP2 = np.outer([1.0, 2.0, -1.0], [0.5, 1.0, 0.0, -2.0]).tolist()
KSEP3 = np.multiply.outer(np.multiply.outer([1.0, -1.0], [1.0, 2.0, 1.0]), [3.0, 0.0, 1.0]).tolist()


def with_mode(step: dict, mode: str) -> dict:
    name, p = step_parts(step)
    p["mode"] = mode
    if mode == "constant":
        p["cval"] = CVAL
    return {name: p}


# --------------------------------------------------------------------------- local ops, every mode


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


def _local(cfg, case, mode, chunkings, prec, seed=0) -> tuple[Check, ...]:
    dims, shape, volume = CONFIGS[cfg]
    steps = [with_mode(local_cases(volume)[case], mode)]
    out = []
    for ch in chunkings:
        sh = ONES_SHAPE[dims] if ch == "ones" else shape
        chunks, tile = chunking(ch, sh)
        out.append(Check(steps, _x(sh, seed), dims, chunks, tile, prec))
    return tuple(out)


def _local_matrix():
    return [(cfg, case, mode) for cfg, (_, _, volume) in CONFIGS.items() for case in local_cases(volume)
            for mode in MODES]


def local_op_cases() -> list[Case]:
    out = []
    for cfg, case, mode in _local_matrix():
        name = f"{cfg}-{case}-{mode}"
        out.append(Case("local_op", name, _local(cfg, case, mode, CHUNKINGS, "float64")))
        out.append(Case("local_op_float32", name, _local(cfg, case, mode, ("small", "irregular"), "float32")))
        for seed in (1, 2, 3):
            out.append(Case("local_op_seeds", f"{name}-{seed}", _local(cfg, case, mode, CHUNKINGS, "float32", seed)
                            + _local(cfg, case, mode, CHUNKINGS, "float64", seed), slow=True))
    return out


# --------------------------------------------------------------------------- unsharp, chains, long halos

UNSHARP = [
    ("2d", {"radius": 1.0, "amount": 1.0}),
    ("2d", {"radius": {"y": 2.0, "x": 0.7}, "amount": 2.5}),
    ("3d-planes", {"radius": 1.5, "amount": 0.5}),
    ("3d-volume", {"radius": 1.2, "amount": 1.0, "axes": "zyx"}),
]

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

LONG_HALO_1D = [
    {"uniform": {"size": 7}}, {"gaussian": {"sigma": 3.0}}, {"median": {"size": 5}},
    {"correlate": {"kernel": [1.0, -2.0, 3.0, 0.5, 4.0, -1.0]}}, {"diffusion": {"steps": 6, "dt": 0.4}},
]

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


def chain_and_halo_cases() -> list[Case]:
    out = []
    for (cfg, params), prec, ch in itertools.product(UNSHARP, ("float64", "float32"), CHUNKINGS):
        dims, shape, _ = CONFIGS[cfg]
        chunks, tile = chunking(ch, shape)
        out.append(Case("unsharp_mask", f"{cfg}-{params}-{prec}-{ch}",
                        (Check([{"unsharp_mask": params}], _x(shape, 1), dims, chunks, tile, prec),)))
    for chain, steps in CHAINS.items():
        for ch in CHUNKINGS:
            shape = (4, 10, 9) if ch != "ones" else (2, 5, 6)
            chunks, tile = chunking(ch, shape)
            out.append(Case("fused_chain", f"{chain}-{ch}", (Check(steps, _x(shape, 3), "zyx", chunks, tile),)))
        for ch in ("small", "irregular"):
            chunks, tile = chunking(ch, (3, 9, 10))
            out.append(Case("fused_chain_float32", f"{chain}-{ch}",
                            (Check(steps, _x((3, 9, 10), 4), "zyx", chunks, tile, "float32"),)))
    for op, mode in itertools.product(LONG_HALO_1D, MODES):
        steps = [with_mode(op, mode)]
        out.append(Case("1d_long_halo", f"{next(iter(op))}-{mode}", tuple(
            Check(steps, _x(31, 6), "x", chunks, tile) for chunks, tile in (((1,), None), ((3,), [7]),
                                                                          ((irregular(31),), None)))))
    wrap = [{"gaussian": {"sigma": {"y": 3.0, "x": 4.0}, "mode": "wrap"}},
            {"uniform": {"size": 5, "mode": "wrap"}}, {"laplace": {"mode": "wrap"}}]
    for prec in ("float64", "float32"):
        out.append(Case("wrap_many_chunks_2d", prec, (Check(wrap, _x((24, 30), 8), "yx", (2, 3), None, prec),
                                                     Check(wrap, _x((24, 30), 8), "yx", (5, 7), [10, 14], prec))))
    for (name, op), mode in itertools.product(HUGE, MODES):
        steps = [with_mode(op, mode)]
        out.append(Case("halo_larger_than_array", f"{name}-{mode}", tuple(
            Check(steps, _x(shape, 9), "yx", chunks)
            for shape, chunks in (((7, 5), (2, 2)), ((1, 6), (1, 1)), ((2, 9), (1, 4)), ((3, 7), (3, 7))))))
    for mode in MODES:
        out.append(Case("halo_larger_than_array_1d_3d", mode, (
            Check([with_mode({"gaussian": {"sigma": 10.0}}, mode)], _x(7, 10), "x", (2,)),
            Check([with_mode({"gaussian": {"sigma": {"z": 6.0, "y": 10.0, "x": 5.0}}}, mode)], _x((2, 7, 3), 11),
                  "zyx", (1, 3, 1)),
            Check([with_mode({"uniform": {"size": {"z": 9, "y": 4, "x": 8}}}, mode)], _x((2, 7, 3), 11), "zyx",
                  (1, 2, 2), [2, 5, 3]))))
    return out


# --------------------------------------------------------------------------- subsets of axes, kernels, methods

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


def _valid_origins(size: int) -> list[int]:
    return list(range(-(size // 2), (size - 1) // 2 + 1))


EVEN = [(2, 2), (2, 4), (4, 3), (1, 4), (4, 1), (6, 2)]

METHOD_KERNELS = {
    "separable-2x4": KSEP2,
    "nonseparable-3x3": K33,
    "nonseparable-4x5": np.random.default_rng(15).standard_normal((4, 5)).round(3).tolist(),
}


def kernel_cases() -> list[Case]:
    out = []
    for case, mode in itertools.product(SUBSET, MODES):
        if "unsharp" in case and mode != "reflect":
            continue  # unsharp_mask has no mode
        steps = [SUBSET[case] if "unsharp" in case else with_mode(SUBSET[case], mode)]
        checks = []
        for ch in ("small", "ones", "tile>chunk"):
            shape = (5, 4, 6) if ch != "ones" else (3, 2, 4)
            chunks, tile = chunking(ch, shape)
            checks.append(Check(steps, _x(shape, 12), "zyx", chunks, tile))
        out.append(Case("subset_axes", f"{case}-{mode}", tuple(checks)))
    for name, shape, mode in itertools.product(("correlate", "convolve"), EVEN, MODES):
        k = np.random.default_rng(13).standard_normal(shape).round(3).tolist()
        x = _x((9, 10), 14)
        checks = [Check([with_mode({name: {"kernel": k, "origin": [oy, ox]}}, mode)], x, "yx", (2, 3))
                  for oy, ox in itertools.product(_valid_origins(shape[0]), _valid_origins(shape[1]))]
        oy, ox = _valid_origins(shape[0])[-1], _valid_origins(shape[1])[-1]
        checks.append(Check([with_mode({name: {"kernel": k, "origin": [oy, ox]}}, mode)], x, "yx", (1, 1)))
        out.append(Case("even_kernels", f"{name}-{shape[0]}x{shape[1]}-{mode}", tuple(checks)))
    for name, kname, method, mode in itertools.product(("correlate", "convolve"), METHOD_KERNELS,
                                                       ("auto", "direct", "separable", "fft"), MODES):
        if method == "separable" and not kname.startswith("separable"):
            continue
        step = with_mode({name: {"kernel": METHOD_KERNELS[kname], "method": method, "origin": [0, -1]}}, mode)
        x = _x((2, 9, 10), 16)
        out.append(Case("methods", f"{name}-{kname}-{method}-{mode}", tuple(
            c for prec in ("float64", "float32")
            for c in (Check([step], x, "zyx", (1, 3, 2), None, prec),
                      Check([step], x, "zyx", (2, 4, 5), [2, 8, 10], prec)))))
    for method, mode in itertools.product(("auto", "direct", "fft"), MODES):
        x = _x((5, 7, 6), 17)
        out.append(Case("methods_3d_kernel", f"{method}-{mode}", (
            Check([with_mode({"correlate": {"kernel": K223, "method": method, "origin": [-1, 0, 1]}}, mode)], x,
                  "zyx", (2, 2, 3)),
            Check([with_mode({"convolve": {"kernel": KSEP3, "method": method}}, mode)], x, "zyx", (1, 3, 2), None,
                  "float32"))))
    k31 = (np.random.default_rng(18).standard_normal((31, 31)) / 31).tolist()
    out.append(Case("large_kernel_auto_fft", "31x31", tuple(  # auto may pick the FFT: its tolerance
        Check([{"correlate": {"kernel": k31, "mode": mode}}], _x((40, 45), 19), "yx", (16, 20), None, prec, fft=True)
        for mode, prec in (("wrap", "float64"), ("reflect", "float64"), ("constant", "float64"),
                           ("mirror", "float32")))))
    return out


# --------------------------------------------------------------------------- 1-D, other axes, dtypes, point ops

ONE_D = [
    {"gaussian": {"sigma": 2.0}}, {"gaussian": {"sigma": 1.0, "order": 2}}, {"uniform": {"size": 4}},
    {"median": {"size": 4}}, {"minimum": {"size": 3}}, {"sobel": {}}, {"laplace": {}},
    {"correlate": {"kernel": [1.0, 0.0, -2.0, 0.5]}}, {"convolve": {"kernel": [1.0, 0.0, -2.0, 0.5], "origin": -1}},
    {"diffusion": {"steps": 4, "dt": 0.3}}, {"difference_of_gaussians": {"low_sigma": 1.0}},
    {"gaussian_gradient_magnitude": {"sigma": 1.5}},
]

OTHER_AXES = [
    ("tyx", (3, 8, 9), (1, 3, 4), [{"gaussian": {"sigma": 1.5, "mode": "wrap"}}, {"sobel": {}}]),
    ("czyx", (2, 3, 7, 6), (1, 2, 3, 2), [{"uniform": {"size": {"z": 3, "y": 2, "x": 3}, "mode": "mirror"}}]),
    ("tzyx", (2, 3, 6, 7), (1, 1, 2, 3), [{"median": {"size": 3, "axes": "zyx", "mode": "nearest"}},
                                          {"laplace": {"axes": "zyx", "mode": "wrap"}}]),
    ("tczyx", (2, 2, 3, 5, 6), (1, 2, 2, 2, 3), [{"sobel": {"axes": "zyx", "mode": "reflect"}}]),
    ("tx", (4, 15), (2, 2), [{"gaussian": {"sigma": {"t": 1.0, "x": 2.0}, "mode": "wrap"}}]),
    ("zy", (5, 9), (2, 2), [{"gaussian_laplace": {"sigma": 1.0}}]),
]

POINT = [
    {"scale": {"factor": 2.5, "offset": -1.0}}, {"scale": {"factor": -0.5}}, {"clip": {"min": -0.3, "max": 0.8}},
    {"clip": {"min": 0.1}}, {"clip": {"max": -0.1}}, {"abs": {}}, {"log1p": {}}, {"sqrt": {}},
    {"threshold": {"value": 0.25}}, {"astype": {"dtype": "float32"}},
]

POINT_FIRST = [
    ("uint8-scale0.5", "uint8", {"scale": {"factor": 0.5, "offset": 1.0}}),
    ("uint8-sqrt", "uint8", {"sqrt": {}}),
    ("uint8-log1p", "uint8", {"log1p": {}}),
    ("int8-abs", "int8", {"abs": {}}),
    ("int8-scale-1", "int8", {"scale": {"factor": -1.0}}),
    ("uint16-scale0.25", "uint16", {"scale": {"factor": 0.25}}),
]


def _integers(dtype: str, seed: int) -> Callable[[], np.ndarray]:
    def make():
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        hi = min(int(info.max), 4000) if info else 100
        lo = max(int(info.min), -4000) if info else -100
        return np.random.default_rng(seed).integers(lo, hi, (6, 9, 10)).astype(dtype)
    return make


def _full_range(dtype: str) -> Callable[[], np.ndarray]:
    def make():
        info = np.iinfo(dtype)
        x = np.random.default_rng(31).integers(info.min, info.max, (7, 9), endpoint=True).astype(dtype)
        x.flat[0] = info.min
        return x
    return make


def _saturating(scale: float) -> Callable[[], np.ndarray]:
    def make():
        x = np.random.default_rng(29).standard_normal((6, 8)) * scale
        x[0, 0] = np.nan
        return x
    return make


def other_cases() -> list[Case]:
    out = []
    for (i, op), mode in itertools.product(enumerate(ONE_D), MODES):
        steps = [with_mode(op, mode)]
        x = _x(17, 25)
        checks = [Check(steps, x, "x", chunks, tile) for chunks, tile in (((1,), None), ((4,), [9]), ((17,), None))]
        checks.append(Check(steps, x, "x", (3,), None, "float32"))
        out.append(Case("1d_signals", f"{next(iter(op))}{i}-{mode}", tuple(checks)))
    for dims, shape, chunks, steps in OTHER_AXES:
        out.append(Case("other_axis_names", dims, (Check(steps, _x(shape, 26), dims, chunks),)))
    chain = [{"gaussian": {"sigma": 1.2, "mode": "mirror"}}, {"median": {"size": 3, "mode": "wrap"}},
             {"sobel": {"mode": "nearest"}}]
    for dtype, prec in itertools.product(["uint8", "int16", "uint16", "float32", "int32"], ["float64", "float32"]):
        out.append(Case("integer_inputs", f"{dtype}-{prec}",
                        (Check(chain, _integers(dtype, 27), "zyx", (2, 3, 4), None, prec),)))
    for (i, op), prec in itertools.product(enumerate(POINT), ["float64", "float32"]):
        out.append(Case("point_float", f"{next(iter(op))}{i}-{prec}", (
            Check([op], _x((5, 7, 6), 28), "zyx", (2, 3, 2), None, prec,
                  dtype="uint8" if "threshold" in op else None),)))
    for dtype, scale in (("int8", 400), ("uint8", 800), ("int16", 1e5)):
        out.append(Case("astype_saturates", dtype, (
            Check([{"gaussian": {"sigma": 0.7}}, {"astype": {"dtype": dtype}}], _saturating(scale), "yx", (2, 3),
                  compare="saturate", dtype=dtype),)))
    for op, dtype in itertools.product([{"threshold": {"value": 100}}, {"clip": {"min": 10, "max": 100}}],
                                       ["uint8", "int16"]):
        make = (lambda d: lambda: np.random.default_rng(30).integers(0, 250, (7, 9)).astype(d))(dtype)
        out.append(Case("point_integer", f"{next(iter(op))}-{dtype}", (Check([op], make, "yx", (2, 3)),)))
    for (name, dtype, op), prec in itertools.product(POINT_FIRST, ["float64", "float32"]):
        out.append(Case("point_first_on_integer", f"{name}-{prec}",
                        (Check([op], _full_range(dtype), "yx", (2, 3), None, prec),)))
    for op in ("sobel", "prewitt", "scharr"):
        x = _x((3, 8, 9), 32)
        out.append(Case("components", op, (Check([{op: {"output": "components"}}], x, "zyx", (1, 3, 4)),)))
        x = _x((3, 8, 9), 37)
        out.append(Case("components_tile_list", op, (
            Check([{op: {"output": "components", "axes": "zyx"}}], x, "zyx", (1, 3, 4), [3, 2, 3, 4],
                  shape=(3, 3, 8, 9)),
            Check([{op: {"output": "components"}}], x, "zyx", (1, 3, 4), [2, 1, 5, 5], shape=(2, 3, 8, 9)))))
    for cid, op in (("sobel", {"sobel": {}}), ("prewitt-components", {"prewitt": {"output": "components"}}),
                    ("scharr-orientation", {"scharr": {"output": "orientation"}}),
                    ("gaussian_laplace", {"gaussian_laplace": {"sigma": 1.0}}),
                    ("ggm", {"gaussian_gradient_magnitude": {"sigma": 1.0}}),
                    ("gaussian-order1", {"gaussian": {"sigma": 1.0, "order": 1}})):
        (name, p), = op.items()
        out.append(Case("cval_derivatives", cid, (  # one chunk: the boundary itself, no tiling involved
            Check([{name: dict(p, mode="constant", cval=2.0)}], _x((12, 14), 33), "yx", (12, 14),
                  {"y": 12, "x": 14} if p.get("output") == "components" else None),)))
    return out


# --------------------------------------------------------------------------- axis orders and tables

arng = np.random.default_rng(41)
A24 = arng.standard_normal((2, 4)).round(3).tolist()
A35 = arng.standard_normal((3, 5)).round(3).tolist()
A223 = arng.standard_normal((2, 2, 3)).round(3).tolist()
A_BIG = (arng.standard_normal((9, 13)) / 9).round(4).tolist()  # 117 taps: FFT under auto on n-D paths
ASEP2 = np.outer([1.0, 2.0, -1.0], [0.5, 1.0, 0.0, -2.0, 0.3]).tolist()
ASEP3 = np.multiply.outer(np.multiply.outer([1.0, -1.0], [1.0, 2.0, 1.0]), [3.0, 0.0, 1.0, 0.5]).tolist()
TPL = (arng.standard_normal((3, 6))).round(3).tolist()

# canonical axes -> (shape, orders to test); the first orders are the default sample
ORDERS = {
    "yx": ((11, 14), ["xy"]),
    "zyx": ((5, 9, 12), ["zxy", "yxz", "xzy", "xyz", "yzx"]),
    "cyx": ((3, 9, 12), ["ycx", "yxc", "xcy"]),
    "tyx": ((12, 7, 9), ["ytx", "xyt", "txy"]),
    "tzyx": ((6, 3, 7, 8), ["xtzy", "zytx"]),
}

# family, id, canonical axes, steps
AXIS_CASES: list[tuple[str, str, str, list[dict]]] = [
    # local filters: n-D kernels (direct and FFT), separable ones, per-axis parameters
    ("local", "correlate-2d-even-origin", "yx", [{"correlate": {"kernel": A24, "origin": [-1, 1], "mode": "wrap"}}]),
    ("local", "correlate-2d-direct-on-zyx", "zyx", [{"correlate": {"kernel": A35, "method": "direct"}}]),
    ("local", "convolve-2d-fft", "zyx", [{"convolve": {"kernel": A35, "method": "fft", "mode": "mirror"}}]),
    ("local", "correlate-large-auto", "yx", [{"correlate": {"kernel": A_BIG, "mode": "nearest"}}]),
    ("local", "correlate-3d-direct", "zyx", [{"correlate": {"kernel": A223, "method": "direct",
                                                            "mode": "constant", "cval": 0.4}}]),
    ("local", "correlate-3d-fft", "zyx", [{"correlate": {"kernel": A223, "method": "fft"}}]),
    ("local", "correlate-separable-2d", "zyx", [{"correlate": {"kernel": ASEP2, "method": "separable"}}]),
    ("local", "convolve-separable-3d", "zyx", [{"convolve": {"kernel": ASEP3, "axes": "zyx", "mode": "reflect"}}]),
    ("local", "correlate-zx", "zyx", [{"correlate": {"kernel": A24, "axes": "zx"}}]),
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
                                      {"correlate": {"kernel": A24}}]),
    ("local", "per-channel", "cyx", [{"correlate": {"kernel": A35}}, {"gaussian": {"sigma": {"y": 1.5, "x": 0.5}}}]),
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
    ("point", "point-chain", "zyx", [{"correlate": {"kernel": A24}}, {"scale": {"factor": -2.0, "offset": 1.0}},
                                     {"clip": {"min": -1.0}}, {"abs": {}}, {"sqrt": {}}]),
    ("point", "threshold", "yx", [{"uniform": {"size": {"y": 1, "x": 3}}}, {"threshold": {"value": 0.1}}]),
    ("point", "log1p-astype", "zyx", [{"abs": {}}, {"log1p": {}}, {"correlate": {"kernel": A35}},
                                      {"astype": {"dtype": "float32"}}]),
    ("global", "zscore", "zyx", [{"gaussian": {"sigma": {"z": 1.0, "y": 0.0, "x": 2.0}}}, {"zscore": {}}]),
    ("global", "rescale-percentiles", "cyx", [{"rescale": {"percentiles": [2, 98]}}, {"correlate": {"kernel": A24}}]),
    # stochastic and filter banks
    ("stochastic", "stochastic-2d", "zyx", [{"stochastic": {"kernel": [[0, 1, 0.5], [2, 0, 0], [0, 0, 3]],
                                                            "normalize": "sum", "seed": 3, "mode": "wrap"}}]),
    ("stochastic", "stochastic-zx", "zyx", [{"stochastic": {"kernel": [[1, 2, 0, 1]], "normalize": "l1",
                                                            "axes": "zx", "seed": 1}}]),
    ("features", "filter_bank", "zyx", [{"filter_bank": {"kernels": [A24, A35, [[2.0]]], "mode": "mirror"}}]),
    ("features", "filter_bank-gabor", "yx", [{"filter_bank": {"gabor": {"orientations": 2, "frequencies": 0.25,
                                                                        "sigma": 1.5}}}]),
    ("features", "match_template-inline", "zyx", [{"match_template": {"template": TPL}}]),
    # convolutional layers: output extents and strides change the shape
    ("layers", "correlate-valid-stride", "zyx", [{"correlate": {"kernel": A24, "extent": "valid", "stride": {"x": 2}}}]),
    ("layers", "convolve-full-wrap", "yx", [{"convolve": {"kernel": A35, "extent": "full", "mode": "wrap"}}]),
    ("layers", "pool-mean", "zyx", [{"pool": {"size": {"y": 2, "x": 3}, "stride": {"y": 3, "x": 2}, "kind": "mean"}}]),
    ("layers", "conv_layer", "cyx", [{"conv_layer": {"weights": (np.arange(2 * 3 * 2 * 4).reshape(2, 3, 2, 4) % 5 - 2.0)
                                                     .tolist(), "bias": [0.5, -1], "activation": "tanh",
                                                     "stride": {"y": 2}}}]),
    ("layers", "filter_bank-valid", "zyx", [{"filter_bank": {"kernels": [A24, A24], "extent": "valid", "stride": 2}}]),
    # objects: numbers follow the raster order of the canonical axes, whatever the stored order
    ("objects", "label-3d", "zyx", [{"threshold": {"value": 1.0}}, {"label": {"connectivity": 2}}]),
    ("objects", "label-per-plane-zx", "zyx", [{"threshold": {"value": 0.0}}, {"label": {"axes": "zx"}}]),
    ("objects", "label-tzyx", "tzyx", [{"threshold": {"value": 0.5}}, {"label": {"connectivity": 3}}]),
    # objects: morphology and distance transforms (masks from a threshold of the stored values: exact in
    # either precision)
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
    ("tables", "regionprops-plane", "zyx", [{"threshold": {"value": 0.2}}, {"label": {"axes": "yx"}},
                                            {"regionprops": {"intensity": "input", "axes": "yx",
                                                             "table": "r.parquet"}}]),
    ("tables", "regionprops-3d", "tzyx", [{"threshold": {"value": 0.5}}, {"label": {"connectivity": 2}},
                                          {"regionprops": {"intensity": "input", "table": "r.parquet"}}]),
]


def axis_chunkings(shape):
    """Chunkings that cut every kernel: 2-3 voxels, irregular, and a tile of several chunks."""
    small = tuple(min(n, 2 + i % 2) for i, n in enumerate(shape))
    return {"small": (small, None), "irregular": (tuple(irregular(n) for n in shape), None),
            "tile>chunk": (tuple(min(n, 2) for n in shape), 5)}


def axis_data(canon: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(ORDERS[canon][0])


def spots(shape):
    """Gaussian spots of a few sizes, off-centre, on a faint ramp: blob_log finds them."""
    grid = np.indices(shape).astype(float)
    rng = np.random.default_rng(2)
    img = 0.01 * grid[-1]
    for _ in range(4):
        c = [rng.uniform(1, n - 2) for n in shape]
        s = rng.uniform(1.2, 2.5)
        img += np.exp(-sum((g - ci) ** 2 for g, ci in zip(grid, c)) / (2 * s * s))
    return img


def _stored(canon: str, order: str, seed: int, blobs: bool) -> Callable[[], np.ndarray]:
    def make():
        x = spots(ORDERS[canon][0]) if blobs else axis_data(canon, seed)
        return np.ascontiguousarray(np.transpose(x, [canon.index(a) for a in order]))  # stored in `order`
    return make


def _axis_check(canon, steps, order, ch, prec, tables=False) -> Check:
    shape = ORDERS[canon][0]
    chunks, tile = axis_chunkings(shape)[ch]
    if tables and isinstance(chunks[0], tuple):  # a run's Zarr chunks are regular
        chunks = tuple(min(3, n) for n in shape)
    chunks = tuple(chunks[canon.index(a)] for a in order)
    tile = None if tile is None else {a: min(tile, n) for a, n in zip(canon, shape)}
    blobs = any(step_parts(s)[0] == "blobs" for s in steps)
    return Check(steps, _stored(canon, order, 5 if tables else 0, blobs), order, chunks, tile, prec, tables=tables)


def axis_params(cases, *, slow: bool) -> list[tuple[str, str, list, str, str, str]]:
    """(family, id, steps, order, chunking, precision): the default run takes one combination per case,
    rotating orders, chunkings and precisions over the cases (so each is covered); slow takes every one."""
    out = []
    for k, (family, cid, canon, steps) in enumerate(cases):
        orders = ORDERS[canon][1]
        chunkings = list(axis_chunkings(ORDERS[canon][0]))
        if slow:
            combos = [(o, ch, prec) for o in orders for ch in chunkings for prec in ("float64", "float32")]
        else:
            combos = [(orders[k % len(orders)], chunkings[k % len(chunkings)], ("float64", "float32")[k % 2])]
        out += [(family, cid, canon, steps, o, ch, prec) for o, ch, prec in combos]
    return out


def axis_cases() -> list[Case]:
    out = []
    for table, group in ((False, "axis_order"), (True, "tables")):
        cases = TABLE_CASES if table else AXIS_CASES
        fast = {(c[1], c[4], c[5], c[6]) for c in axis_params(cases, slow=False)}
        for family, cid, canon, steps, order, ch, prec in axis_params(cases, slow=True):
            out.append(Case(group, f"{family}-{cid}-{order}-{ch}-{prec}",
                            (_axis_check(canon, steps, order, ch, prec, table),),
                            slow=(cid, order, ch, prec) not in fast))
    return out


# --------------------------------------------------------------------------- the list


def all_cases() -> list[Case]:
    """Every case, in a fixed order (the samples of tests/executors.py depend on it)."""
    cases = local_op_cases() + chain_and_halo_cases() + kernel_cases() + other_cases() + axis_cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases
