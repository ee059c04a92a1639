"""Offset data in float32: values near 30 000 with a small range (microscopy cameras), SPEC.md's tolerance.

With ``precision: auto`` a uint16 input computes in float32. Chains whose result is small next to the input
(derivative or zero-sum kernels, after smoothing or not) lost the tolerance by catastrophic cancellation: a
float32 sum of terms 1e4 times the result. The tile engine centres such runs of ops (:mod:`convpipe.centring`);
these tests hold it to the oracle (scipy / scikit-image in float64 on the whole array) on every chunking, and
check each op's declared response to a constant shift against the oracle itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from harness import run
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convpipe.oracles import assert_conforms, oracle, uses_fft
from test_backends import fake_cupy  # noqa: F401  (the CuPy double: a fixture)

#: ops that make a small result of a large input (the cancelling family), with parameters
CANCELLING = [
    {"sobel": {}}, {"sobel": {"output": "components"}}, {"prewitt": {}}, {"scharr": {"output": "components"}},
    {"laplace": {}},
    {"gaussian_laplace": {"sigma": 2}}, {"gaussian_laplace": {"sigma": 0.7}},
    {"gaussian_gradient_magnitude": {"sigma": 1.5}},
    {"gaussian": {"sigma": 1.2, "order": {"y": 0, "x": 1}}}, {"gaussian": {"sigma": 2, "order": {"y": 2, "x": 0}}},
    {"correlate": {"kernel": [[0.1, -0.3, 0.05], [0.2, 0.0, -0.15], [0.3, -0.1, -0.1]]}},
    {"correlate": {"kernel": [[0.1, -0.3, 0.05], [0.2, 0.0, -0.15], [0.3, -0.1, -0.1]], "method": "fft"}},
    {"convolve": {"kernel": [[0.25, -0.5, 0.125, 0.125]]}},
    {"difference_of_gaussians": {"low_sigma": 1}},
    {"fft_filter": {"kind": "highpass", "cutoff": 0.2}},
    {"fft_filter": {"kind": "bandpass", "cutoff": [0.1, 0.5]}},
]
#: smoothing before or after (gain 1, or a kernel that does not sum to one)
SMOOTHING = [
    {"gaussian": {"sigma": 1.5}}, {"gaussian": {"sigma": 0.8}}, {"uniform": {"size": 4}}, {"median": {"size": 3}},
    {"correlate": {"kernel": [[0.3, 0.5, 0.4]]}},
]
MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]
HAS_MODE = {"sobel", "prewitt", "scharr", "laplace", "gaussian_laplace", "gaussian_gradient_magnitude", "gaussian",
            "correlate", "convolve", "difference_of_gaussians", "uniform", "median"}


def _with_mode(step: dict, mode: str, cval: float) -> dict:
    (name, p), = step.items()
    if name not in HAS_MODE:
        return step
    return {name: dict(p, mode=mode, **({"cval": cval} if mode == "constant" else {}))}


def offset_image(shape, dtype, offset: float, spread: float, seed: int) -> np.ndarray:
    """``offset`` + a smooth field and noise within ``spread``, stored as ``dtype``."""
    import scipy.ndimage as ndi

    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.standard_normal(shape), 3.0)
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-12)
    v = offset + spread * (0.7 * f + 0.3 * rng.random(shape))
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.round(v), info.min, info.max).astype(dtype)
    return v.astype(dtype)


def check_float32(steps, x, chunks, precision="float32"):
    got = run(steps, x, "yx", chunks=chunks, precision=precision)
    ref, _ = oracle(steps, x, "yx")
    assert_conforms(got, ref, "float32", fft=uses_fft(steps), what=f"{steps} {x.dtype} chunks={chunks}")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_offset_data_float32_meets_the_oracle_on_any_chunking(data):
    """A cancelling op, alone or after / before smoothing, on offset data of uint16 / int16 / float32, any
    boundary mode (constant: cval 0, near the data or far from it), chunks that cut the kernels: within
    float32's tolerance."""
    dtype = data.draw(st.sampled_from([np.uint16, np.int16, np.float32]), "dtype")
    spread = data.draw(st.floats(1.0, 500.0), "spread")
    offset = data.draw(st.floats(0.0, 60000.0 - spread), "offset")
    if dtype is np.int16:  # the same offsets, over int16's range
        offset -= 30000.0
    shape = (data.draw(st.integers(12, 40), "ny"), data.draw(st.integers(12, 40), "nx"))
    x = offset_image(shape, dtype, offset, spread, data.draw(st.integers(0, 2**16), "seed"))
    core = data.draw(st.sampled_from(CANCELLING), "op")
    before = data.draw(st.sampled_from([None] + SMOOTHING), "before")
    after = data.draw(st.sampled_from([None] + SMOOTHING), "after")
    mode = data.draw(st.sampled_from(MODES), "mode")
    cval = data.draw(st.sampled_from([0.0, round(offset + spread / 2, 1), round(offset - spread, 2), -3.5]), "cval")
    steps = [_with_mode(s, mode, cval) for s in (before, core, after) if s is not None]
    chunks = tuple(data.draw(st.integers(4, n), f"chunk{i}") for i, n in enumerate(shape))
    check_float32(steps, x, chunks)


#: ops that reset the constant padding before each 1-D pass (scipy's per-pass cval) and chains of them
PER_PASS = [
    [{"gaussian": {"sigma": 1.5}}, {"laplace": {}}],  # what hypothesis found: 1.06e-5 > 1e-5 uncentred
    [{"gaussian": {"sigma": 1.2, "order": {"y": 0, "x": 1}}}], [{"gaussian": {"sigma": 2, "order": {"y": 2, "x": 1}}}],
    [{"gaussian_laplace": {"sigma": 1.5}}], [{"gaussian_gradient_magnitude": {"sigma": 1.2}}],
    [{"sobel": {}}], [{"prewitt": {"output": "components"}}], [{"scharr": {}}],
    [{"gaussian": {"sigma": 1}}, {"sobel": {"output": "components"}}, {"uniform": {"size": 3}}],
    [{"gaussian_laplace": {"sigma": 0.8}}, {"gaussian": {"sigma": 2, "order": {"y": 1, "x": 0}}}],
]


@pytest.mark.parametrize("steps", PER_PASS, ids=lambda s: "-".join(next(iter(d)) for d in s))
@pytest.mark.parametrize("offset,spread,cval", [(13.0, 1.0, 13.5), (30000, 200, 30100.0), (30000, 200, 29950.5),
                                                (30000, 200, -7.25), (-29000, 300, 3.0)],
                         ids=["near13", "mid", "below", "far", "int16-neg"])
@pytest.mark.parametrize("chunks", [(4, 4), (7, 11), (30, 30)], ids=lambda c: f"{c[0]}x{c[1]}")
def test_constant_padding_other_than_0_per_pass_is_centred(steps, offset, spread, cval, chunks):
    """Ops that pad each 1-D pass with cval != 0 (scipy's per-pass constant padding) run centred: each pass
    pads with the true cval as the centred intermediate holds it, within float32's tolerance on offset data."""
    dtype = np.int16 if offset < 0 else np.uint16
    x = offset_image((30, 30), dtype, offset, spread, 1)
    steps = [_with_mode(s, "constant", cval) for s in steps]
    check_float32(steps, x, chunks)



@pytest.fixture
def centre_spy(monkeypatch) -> list:
    """The centring constants ``convpipe.centring.centre`` picks during the test, in call order (and those
    ``centre_value`` picks for a gather that subtracts while it copies an edge tile)."""
    import convpipe.centring as centring

    seen: list = []
    centre, value = centring.centre, centring.centre_value

    def spy(u, *a, **k):
        out, c = centre(u, *a, **k)
        seen.append(c)
        return out, c

    def spy_value(u, *a, **k):
        c = value(u, *a, **k)
        if c:
            seen.append(c)
        return c

    monkeypatch.setattr(centring, "centre", spy)
    monkeypatch.setattr(centring, "centre_value", spy_value)
    return seen


def test_constant_padding_other_than_0_per_pass_is_centred_found_case():
    """What hypothesis found (uncentred: 1.06e-5 > 1e-5), as it found it."""
    x = offset_image((12, 12), np.uint16, 13.0, 1.0, 1)
    steps = [{"gaussian": {"sigma": 1.5, "mode": "constant", "cval": 13.5}},
             {"laplace": {"mode": "constant", "cval": 13.5}}]
    check_float32(steps, x, (4, 4))


def test_per_pass_constant_padding_op_is_centred(centre_spy):
    """The per-pass padding ops are no longer left out of the centred run: the tile is centred before them."""
    seen = centre_spy
    x = offset_image((20, 20), np.uint16, 30000, 200, 2)
    run([{"gaussian_laplace": {"sigma": 1, "mode": "constant", "cval": 30010.0}}], x, "yx", chunks=(20, 20),
        precision="float32")
    assert seen and all(29900 < c < 30300 for c in seen), seen


def test_pass_cvals_centre_the_true_cval():
    """Pass k pads with cval - c * (product of the earlier kernels' sums): the centred form of the true cval."""
    from convpipe.centring import pass_cvals

    w = {0: (np.array([1.0, 2.0, 1.0]), 1), 1: (np.array([-1.0, 0.0, 3.0]), 1), 2: (np.array([0.5, 0.25]), 0)}
    assert pass_cvals(5.0, 10.0, w, [1, 0, 2]) == [5.0 - 10.0, 5.0 - 10.0 * 2.0, 5.0 - 10.0 * 8.0]
    assert pass_cvals(5.0, 0.0, w, [0, 3, 1]) == [5.0, 5.0]


def camera_offset(scale: float, offset: float) -> np.ndarray:
    skimage = pytest.importorskip("skimage")
    return (skimage.data.camera().astype(np.float64) * scale + offset).astype(np.uint16)


@pytest.mark.parametrize("steps", [
    [{"gaussian_laplace": {"sigma": 2}}], [{"gaussian": {"sigma": 2}}, {"sobel": {}}],
    [{"gaussian_gradient_magnitude": {"sigma": 1.5}}], [{"gaussian": {"sigma": 1}}, {"laplace": {}}],
    [{"median": {"size": 3}}, {"prewitt": {"output": "components"}}],
    [{"correlate": {"kernel": [[0.1, -0.3, 0.05], [0.2, 0.0, -0.15], [0.3, -0.1, -0.1]]}}],
    [{"gaussian": {"sigma": 3}}, {"difference_of_gaussians": {"low_sigma": 1}}],
    [{"fft_filter": {"kind": "highpass", "cutoff": 0.2}}],
], ids=lambda s: "-".join(next(iter(d)) for d in s))
@pytest.mark.parametrize("scale,offset", [(100, 20000), (1, 30000)], ids=["x100+20000", "x1+30000"])
def test_camera_offset_uint16_auto_precision(steps, scale, offset):
    """A real image as a camera stores it (skimage's camera x100 + 20000, and its 8 bits + 30000, in uint16),
    precision auto (float32), chunks that cut every kernel."""
    x = camera_offset(scale, offset)
    check_float32(steps, x, (160, 200), precision="auto")


@pytest.mark.parametrize("step", CANCELLING + SMOOTHING + [
    {"unsharp_mask": {"radius": 2, "amount": 3}}, {"scale": {"factor": -2.5}}, {"moving_average": {"window": 3,
                                                                                                     "axis": "x"}},
    {"butterworth": {"high_pass": True}}, {"butterworth": {"high_pass": False}}, {"maximum": {"size": 3}},
    {"minimum": {"size": {"y": 3, "x": 2}}}, {"diffusion": {"steps": 2, "dt": 0.2}},
], ids=lambda s: next(iter(s)))
def test_declared_shift_gain_matches_the_oracle(step):
    """Each op's ``shift_gain()`` is what the oracle does under a constant shift c of its input:
    oracle(x - c) = oracle(x) - g * c in float64 (the engine adds g * c back from this declaration)."""
    from convpipe.ops import registry

    (name, p), = step.items()
    cls = registry.get(name)
    ops = cls(cls.Params(**p), "yx").expand()
    g = 1.0
    for op in ops:
        gi = op.shift_gain()
        assert gi is not None, f"{name} declares no response to a shift"
        g *= gi
    x = offset_image((24, 28), np.float64, 0.0, 100.0, 1)
    c = 30000.0
    a, _ = oracle([step], x + c, "yx")
    b, _ = oracle([step], x, "yx")
    assert np.abs(a - (b + g * c)).max() <= 1e-8 * max(1.0, np.abs(b).max() + abs(g) * c)


@pytest.mark.parametrize("steps", [
    [{"abs": {}}, {"gaussian_laplace": {"sigma": 1.5}}], [{"clip": {"min": -29950, "max": -29900}}, {"laplace": {}}],
    [{"scale": {"factor": 0.5, "offset": 10}}, {"gaussian": {"sigma": 1}}, {"sobel": {}}],
], ids=lambda s: "-".join(next(iter(d)) for d in s))
def test_runs_start_after_ops_of_unknown_response(steps):
    """An op that declares no response to a shift (abs, clip) sees the true values; the run of
    shift-aware ops after it is centred on its own (int16 data near -30000: abs maps it near +30000)."""
    x = offset_image((30, 34), np.int16, -30100, 200, 2)
    check_float32(steps, x, (11, 13))


def test_float64_precision_is_never_centred(monkeypatch):
    """``precision: float64`` runs exactly as before: the centring is not even asked."""
    import convpipe.centring as centring

    def boom(*a, **k):
        raise AssertionError("centred a float64 chain")

    monkeypatch.setattr(centring, "centre", boom)
    x = offset_image((30, 30), np.uint16, 30000, 200, 0)
    steps = [{"gaussian": {"sigma": 1}}, {"sobel": {}}]
    got = run(steps, x, "yx", chunks=(13, 17), precision="float64")
    ref, _ = oracle(steps, x, "yx")
    assert_conforms(got, ref, "float64")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nonfinite_and_finite_tiles_are_all_centred():
    """Tiles whose blocks hold NaN or inf and tiles whose blocks are finite, in one array: NaN/inf sit where
    the oracle has them, and every finite voxel (the left-hand tiles' too) meets the tolerance."""
    x = offset_image((32, 32), np.float32, 30000, 200, 3)
    x[5, 7] = np.nan
    x[20, 3] = np.inf
    for steps in ([{"gaussian": {"sigma": 1}}, {"sobel": {}}], [{"gaussian_laplace": {"sigma": 1.2}}]):
        got = run(steps, x, "yx", chunks=(16, 16), precision="float32")
        ref, _ = oracle(steps, x, "yx")
        assert not np.isfinite(ref[:, :16]).all() and np.isfinite(ref[:, 16:]).all()
        assert_conforms(got, ref, "float32", what=f"{steps}")


def test_offset_data_on_the_cupy_double(fake_cupy):
    """The GPU path runs the same centring (tiles.run_chain with the block's array module): on the CuPy test
    double of tests/test_backends.py, with CuPy's rules (no 0-d numpy arrays, no implicit host copies)."""
    import dask.array as da

    import convpipe
    from harness import make_spec

    x = offset_image((40, 44), np.uint16, 30000, 200, 4)
    for steps in ([{"gaussian": {"sigma": 1.5}}, {"sobel": {}}], [{"gaussian_laplace": {"sigma": 2}}],
                  [{"median": {"size": 3}}, {"correlate": {"kernel": [[0.25, -0.5, 0.125, 0.125]]}}]):
        p = convpipe.load(make_spec(steps, "float32", execution={"backend": "gpu"}))
        got = np.asarray(p.apply(da.from_array(x, chunks=(17, 23)), axes="yx").compute(scheduler="sync"))
        ref, _ = oracle(steps, x, "yx")
        assert_conforms(got, ref, "float32", what=f"{steps} on the CuPy double")


def _one_tile(steps, x):
    """The ops, targets and extents of ``steps`` on ``x`` as one tile (as benchmarks/offset_centring does)."""
    from convpipe.plan import ArrayInfo, make_plan
    from convpipe.spec import load_spec
    from convpipe.tiles import backward

    spec = load_spec({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps})
    info = ArrayInfo(x.shape, x.dtype, x.shape, "yx")
    plan = make_plan(spec.steps, info, tile=dict(zip("yx", x.shape)), out_chunks=dict(zip("yx", x.shape)),
                     memory_per_worker=1 << 40)
    (pp,) = plan.passes
    return pp.ops, backward(pp.ops, {a: ((0, pp.extents[-1][a]),) for a in pp.out_axes}, pp.extents), pp.extents


def test_owned_block_centred_in_place_survives_the_op_by_op_rerun(monkeypatch):
    """An owned block (the task's own copy) is centred in place; when the chain runs a second time op by op
    (convpipe.finite: a non-finite result, whose step that run names), that run starts from the centred block
    and adds the offset back first: the result is the oracle's, not off by g * c. (The rerun computes
    uncentred, as before centring existed: offset 1000 keeps that within tolerance.)"""
    from convpipe import finite
    from convpipe.tiles import run_chain

    steps = [{"correlate": {"kernel": [[0.3, -0.5, 0.45]]}}, {"gaussian_laplace": {"sigma": 1.5}}]
    x = offset_image((30, 40), np.float32, 1000, 200, 5)
    ref, _ = oracle(steps, x, "yx")
    ops, targets, extents = _one_tile(steps, x)
    calls = []
    after = finite.Guard.after

    def once(self, i, y, *, last):  # the first run's end "is not finite": run again op by op
        if last and not self.every and not calls:
            calls.append(i)
            raise finite.Attribute()
        return after(self, i, y, last=last)

    monkeypatch.setattr(finite.Guard, "after", once)
    block = x.copy()
    got = run_chain(block, ops, targets, extents, np.dtype(np.float32), owned=True)
    assert calls, "the rerun did not happen"
    assert_conforms(got, ref, "float32", what="rerun after in-place centring")
    shared = x.copy()  # not owned: never written
    run_chain(shared, ops, targets, extents, np.dtype(np.float32))
    assert np.array_equal(shared, x)


def test_owned_block_is_centred_in_place():
    """The task's own block is centred where it lies (no second block allocated); the result is the oracle's."""
    from convpipe.tiles import run_chain

    steps = [{"gaussian": {"sigma": 1}}, {"laplace": {}}]
    x = offset_image((30, 40), np.float32, 30000, 200, 6)
    ref, _ = oracle(steps, x, "yx")
    ops, targets, extents = _one_tile(steps, x)
    block = x.copy()
    got = run_chain(block, ops, targets, extents, np.dtype(np.float32), owned=True)
    assert np.abs(block).max() <= 200, "the owned block was not centred in place"
    assert_conforms(got, ref, "float32", what="in-place centring")


@pytest.mark.parametrize("steps", [
    [{"gaussian": {"sigma": 1}}, {"gaussian": {"sigma": 2}}],
    [{"gaussian": {"sigma": 1.5}}, {"gaussian_laplace": {"sigma": 1}}],
    [{"uniform": {"size": 3, "mode": "wrap"}}, {"gaussian_laplace": {"sigma": 0.7, "mode": "wrap"}}],
], ids=["gauss-gauss", "gauss-log", "uniform-log"])
def test_merged_filters_declare_the_product_of_their_parts(steps):
    """The planner merges consecutive symmetric filters (ops.local.merged): the merged op's gain is the
    product of its parts' (a composed kernel's sum is the product of the sums), checked against the oracle."""
    from convpipe.ops.local.merged import MergedSeparable, merge_linear

    ops = [o for s in steps for o in _one_tile([s], np.zeros((20, 20), np.float32))[0]]
    merged = merge_linear(ops, only_if_cheaper=False)
    assert len(merged) == 1 and isinstance(merged[0], MergedSeparable)
    parts = np.prod([o.shift_gain() for o in ops])
    assert merged[0].shift_gain() == pytest.approx(parts, rel=1e-12, abs=1e-15)
    x = offset_image((24, 28), np.float64, 0.0, 100.0, 1)
    a, _ = oracle(steps, x + 30000.0, "yx")
    b, _ = oracle(steps, x, "yx")
    assert np.abs(a - (b + merged[0].shift_gain() * 30000.0)).max() <= 1e-8 * max(1.0, np.abs(a).max())


def poisoned_offset(shape, seed: int, spots) -> np.ndarray:
    """Float32 offset data (near 30 000, range 200) with NaN / +inf / -inf at ``spots`` ((y, x, value))."""
    x = offset_image(shape, np.float32, 30000, 200, seed)
    for y, xx, v in spots:
        x[y, xx] = v
    return x


#: NaN / inf in the top-left corner, one tile's interior, a chunk border, +inf next to -inf
SPOTS = [
    [(5, 7, np.nan)],
    [(3, 4, np.inf), (20, 30, -np.inf)],
    [(0, 0, np.nan), (16, 15, np.inf), (16, 16, -np.inf), (30, 9, np.nan)],
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("spots", SPOTS, ids=["nan", "inf-both", "mixed"])
@pytest.mark.parametrize("chunks", [(16, 16), (11, 13), (40, 9), (40, 44)], ids=lambda c: f"{c[0]}x{c[1]}")
@pytest.mark.parametrize("steps", [
    [{"gaussian": {"sigma": 1}}, {"sobel": {}}], [{"gaussian_laplace": {"sigma": 1.2}}],
    [{"difference_of_gaussians": {"low_sigma": 1}}],
    [{"median": {"size": 3}}, {"prewitt": {"output": "components"}}],
], ids=lambda s: "-".join(next(iter(d)) for d in s))
def test_tiles_holding_nonfinite_values_are_centred_on_their_finite_values(steps, chunks, spots):
    """A tile holding NaN or inf is centred too, on its finite values (NaN - c and inf - c keep their
    values): every finite voxel meets float32's tolerance, in tiles with and without non-finite values and
    next to the footprints, and NaN / +inf / -inf sit exactly where the oracle has them (the arithmetic's
    result, which centring does not change)."""
    x = poisoned_offset((40, 44), 7, spots)
    got = run(steps, x, "yx", chunks=chunks, precision="float32")
    ref, _ = oracle(steps, x, "yx")
    # (a median of 3 x 3 removes isolated infs: the oracle may be finite everywhere)
    assert_conforms(got, ref, "float32", what=f"{steps} chunks={chunks} {spots}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_nonfinite_tile_is_centred_on_its_finite_values(centre_spy):
    """The centring constant of a tile holding NaN / inf is its finite values' mid-range (finite), not NaN."""
    seen = centre_spy
    x = poisoned_offset((30, 30), 8, [(4, 4, np.nan), (20, 20, np.inf)])
    steps = [{"gaussian": {"sigma": 1}}, {"sobel": {}}]
    run(steps, x, "yx", chunks=(30, 30), precision="float32")  # one tile, holding both
    assert seen and all(np.isfinite(c) and 29900 < c < 30300 for c in seen), seen


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_tiles_on_the_cupy_double(fake_cupy):
    """The finite values' range of a block holding NaN / inf, on the GPU path (the CuPy double's rules)."""
    import dask.array as da

    import convpipe
    from harness import make_spec

    x = poisoned_offset((40, 44), 9, SPOTS[2])
    for steps in ([{"gaussian": {"sigma": 1.5}}, {"sobel": {}}], [{"gaussian_laplace": {"sigma": 2}}]):
        p = convpipe.load(make_spec(steps, "float32", execution={"backend": "gpu"}))
        got = np.asarray(p.apply(da.from_array(x, chunks=(17, 23)), axes="yx").compute(scheduler="sync"))
        ref, _ = oracle(steps, x, "yx")
        assert_conforms(got, ref, "float32", what=f"{steps} on the CuPy double")


def test_centre_takes_the_finite_values_only():
    """``centre`` of a block holding NaN / +-inf: c is the mid-range of the finite values, NaN and inf
    stay as they are; a block without a finite value is not centred."""
    from convpipe.centring import centre

    u = np.array([[30000, 30100, np.nan], [np.inf, -np.inf, 30050]], np.float32)
    v, c = centre(u.copy(), np.dtype(np.float32), known=(float("nan"), float("nan")))
    assert c == 30050.0
    assert np.array_equal(v, u - np.float32(c), equal_nan=True)
    w = np.array([np.nan, np.inf], np.float32)
    v, c = centre(w, np.dtype(np.float32))
    assert c == 0.0 and v is w


def test_per_pass_constant_padding_on_the_cupy_double(fake_cupy):
    """The GPU engine's per-pass padding (engines.gpu.sep_correlate) pads with the centred true cval too."""
    import dask.array as da

    import convpipe
    from harness import make_spec

    x = offset_image((40, 44), np.uint16, 30000, 200, 4)
    for steps in (PER_PASS[0], PER_PASS[2], PER_PASS[4], PER_PASS[8]):
        steps = [_with_mode(s, "constant", 30150.5) for s in steps]
        p = convpipe.load(make_spec(steps, "float32", execution={"backend": "gpu"}))
        got = np.asarray(p.apply(da.from_array(x, chunks=(17, 23)), axes="yx").compute(scheduler="sync"))
        ref, _ = oracle(steps, x, "yx")
        assert_conforms(got, ref, "float32", what=f"{steps} on the CuPy double")
