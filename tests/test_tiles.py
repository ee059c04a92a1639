"""Unit tests of the halo machinery in ``convpipe.tiles``: boundary index maps against numpy.pad and
scipy.ndimage (including repeated reflection when the pad is longer than the array), run arithmetic,
and ``dilate`` against a brute-force enumeration of what an op reads."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from convpipe.tiles import (
    _array_to_runs,
    dilate,
    map_index,
    merge_runs,
    runs_len,
    runs_to_array,
)

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")
NUMPY_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}


# --------------------------------------------------------------------------- map_index


@pytest.mark.parametrize("mode", list(NUMPY_PAD))
def test_map_index_matches_numpy_pad(mode):
    """scipy's reflect/mirror/nearest/wrap are numpy.pad's symmetric/reflect/edge/wrap, also for pads
    many times longer than the array (numpy reflects repeatedly)."""
    for n in range(1, 9):
        for pad in list(range(20)) + [31, 64]:
            want = np.pad(np.arange(n), pad, mode=NUMPY_PAD[mode])
            got = map_index(np.arange(-pad, n + pad), n, mode)
            assert np.array_equal(got, want), (mode, n, pad)


def _scipy_extension(n: int, pad: int, mode: str, cval: float = -1.0) -> np.ndarray:
    """What scipy.ndimage reads at positions -pad..n+pad-1 of a length-n line (via shift kernels)."""
    x = np.arange(n, dtype=float)
    out = np.empty(n + 2 * pad)
    for p in range(-pad, n + pad):
        i = min(max(p, 0), n - 1)  # an output position inside the array ...
        s = p - i  # ... reading at offset s
        w = np.zeros(2 * abs(s) + 1)
        w[abs(s) + s] = 1.0
        out[p + pad] = ndi.correlate1d(x, w, mode=mode, cval=cval)[i]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_map_index_matches_scipy(mode):
    for n in range(1, 7):
        for pad in (0, 1, 2, 3, n, 2 * n - 1, 2 * n, 2 * n + 1, 3 * n + 2, 17):
            want = _scipy_extension(n, pad, mode)
            got = map_index(np.arange(-pad, n + pad), n, mode)
            assert np.array_equal(got.astype(float), want), (mode, n, pad, got, want)


@pytest.mark.parametrize("mode", MODES)
def test_map_index_inside_is_identity_and_keeps_shape(mode):
    p = np.arange(12).reshape(3, 4)
    assert np.array_equal(map_index(p, 12, mode), p)
    q = np.arange(-5, 7).reshape(3, 4)
    got = map_index(q, 4, mode)
    assert got.shape == (3, 4) and got.dtype == np.int64
    assert np.array_equal(got.ravel(), map_index(q.ravel(), 4, mode))


def test_map_index_constant_marks_outside():
    got = map_index(np.arange(-3, 8), 5, "constant")
    assert np.array_equal(got, [-1, -1, -1, 0, 1, 2, 3, 4, -1, -1, -1])


@pytest.mark.parametrize("mode", MODES)
def test_map_index_empty_axis(mode):
    assert np.array_equal(map_index(np.arange(-2, 3), 0, mode), [-1] * 5)


def test_map_index_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        map_index(np.array([-1, 0]), 3, "grid-wrap")


def test_map_index_periods():
    n = 5
    p = np.arange(-40, 45)
    assert np.array_equal(map_index(p, n, "wrap"), map_index(p + n, n, "wrap"))
    assert np.array_equal(map_index(p, n, "reflect"), map_index(p + 2 * n, n, "reflect"))
    assert np.array_equal(map_index(p, n, "mirror"), map_index(p + 2 * n - 2, n, "mirror"))
    # reflect repeats the edge sample, mirror does not
    assert list(map_index(np.array([-2, -1, 5, 6]), n, "reflect")) == [1, 0, 4, 3]
    assert list(map_index(np.array([-2, -1, 5, 6]), n, "mirror")) == [2, 1, 3, 2]


@pytest.mark.parametrize("mode", ["reflect", "mirror", "wrap", "nearest"])
def test_map_index_length_one_and_two(mode):
    p = np.arange(-9, 10)
    assert np.array_equal(map_index(p, 1, mode), np.zeros_like(p))
    got = map_index(np.arange(-9, 11), 2, mode)
    assert np.array_equal(got, np.pad(np.arange(2), 9, mode=NUMPY_PAD[mode]))


# --------------------------------------------------------------------------- runs


def test_merge_runs():
    assert merge_runs([]) == ()
    assert merge_runs([(3, 5), (0, 2)]) == ((0, 2), (3, 5))
    assert merge_runs([(0, 2), (2, 4)]) == ((0, 4),)  # touching runs join
    assert merge_runs([(0, 5), (1, 2), (4, 9), (12, 12), (7, 3)]) == ((0, 9),)  # nested, overlapping, empty
    assert merge_runs([(5, 7), (0, 1), (6, 10), (1, 2)]) == ((0, 2), (5, 10))


def test_runs_to_array_and_len():
    runs = ((0, 2), (5, 8))
    assert list(runs_to_array(runs)) == [0, 1, 5, 6, 7]
    assert runs_len(runs) == 5
    assert runs_to_array(()).size == 0 and runs_to_array(()).dtype == np.int64
    assert runs_len(()) == 0


def test_array_to_runs_roundtrip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.integers(0, 30, rng.integers(0, 25))
        runs = _array_to_runs(p)
        assert list(runs_to_array(runs)) == sorted(set(p.tolist()))
        assert runs == merge_runs(runs)


# --------------------------------------------------------------------------- dilate


def _read_set(runs, lo, hi, n, mode) -> set[int]:
    """Brute force: every in-array position the op reads to produce ``runs``."""
    out: set[int] = set()
    for s, e in runs:
        idx = map_index(np.arange(s - lo, e + hi), n, mode)
        out.update(int(i) for i in idx if i >= 0)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_dilate_single_run_exhaustive(mode):
    halos = (0, 1, 2, 3, 5, 8, 13)
    for n in range(1, 8):
        for s in range(n):
            for e in range(s + 1, n + 1):
                for lo, hi in itertools.product(halos, halos):
                    got = dilate(((s, e),), lo, hi, n, mode)
                    assert got == merge_runs(got), (mode, n, s, e, lo, hi)
                    assert set(runs_to_array(got).tolist()) == _read_set(((s, e),), lo, hi, n, mode), \
                        (mode, n, (s, e), lo, hi, got)


@pytest.mark.parametrize("mode", MODES)
def test_dilate_several_runs_random(mode):
    rng = np.random.default_rng(1)
    for _ in range(400):
        n = int(rng.integers(1, 40))
        cuts = np.sort(rng.choice(np.arange(n + 1), size=min(n + 1, 2 * int(rng.integers(1, 4))), replace=False))
        runs = merge_runs([(int(a), int(b)) for a, b in zip(cuts[::2], cuts[1::2])])
        lo, hi = (int(v) for v in rng.integers(0, 3 * n + 3, 2))
        got = dilate(runs, lo, hi, n, mode)
        assert got == merge_runs(got)
        assert set(runs_to_array(got).tolist()) == _read_set(runs, lo, hi, n, mode), (mode, n, runs, lo, hi)


def test_dilate_modes_differ_where_they_should():
    n = 10
    core = ((0, 2),)
    assert dilate(core, 3, 0, n, "constant") == ((0, 2),)
    assert dilate(core, 3, 0, n, "nearest") == ((0, 2),)
    assert dilate(core, 3, 0, n, "wrap") == ((0, 2), (7, 10))  # pulled from the far end
    assert dilate(core, 3, 0, n, "reflect") == ((0, 3),)
    assert dilate(core, 3, 0, n, "mirror") == ((0, 4),)
    assert dilate(((4, 6),), 2, 1, n, "wrap") == ((2, 7),)
    assert dilate(((0, n),), 50, 50, n, "wrap") == ((0, n),)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_take_equals_numpy_take_for_any_index_runs(data):
    """tiles._take (a view for a range, a slice copy plus the ends for a padded range) is np.take, whatever
    the runs: reflected, wrapped and repeated ends, a reversed axis, gaps."""
    from convpipe.tiles import _take

    shape = data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    u = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    ax = data.draw(st.integers(0, len(shape) - 1))
    n = shape[ax]
    parts = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n), st.booleans()), min_size=1,
                               max_size=4))
    idx = np.concatenate([np.arange(a, max(a, b))[::-1] if rev else np.arange(a, max(a, b)) for a, b, rev in parts]
                         + [np.zeros(0, np.int64)]).astype(np.int64)
    got = _take(u, ax, idx)
    assert np.array_equal(got, np.take(u, idx, axis=ax))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_take_all_equals_numpy_take_per_axis(data):
    """tiles._take_all (one copy: the runs' middle as a slice, the padded faces by fancy indexing) equals one
    np.take per axis, for any index runs on any subset of the axes."""
    from convpipe.tiles import _take_all

    shape = data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=3))
    u = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    takes = {}
    for ax in data.draw(st.sets(st.integers(0, len(shape) - 1))):
        n = shape[ax]
        parts = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, n), st.booleans()), min_size=1,
                                   max_size=3))
        takes[ax] = np.concatenate([np.arange(a, max(a + 1, b))[::-1] if rev else np.arange(a, max(a + 1, b))
                                    for a, b, rev in parts]).astype(np.int64)
    want = u
    for ax, idx in takes.items():
        want = np.take(want, idx, axis=ax)
    assert np.array_equal(_take_all(u, takes), want)


# --------------------------------------------------------------------------- slabs (convpipe.tiles.SLAB_BYTES)


def _slab_decision(steps, shape=(6, 20, 24), axes="zyx"):
    import dask.array as da

    import convpipe
    import convpipe.tiles as tiles

    seen = []
    orig = tiles._slab_planes

    def spy(*a, **k):
        seen.append(orig(*a, **k))
        return seen[-1]

    x = np.random.default_rng(3).random(shape)
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "output": {"url": "unused-out.zarr"},
                       "steps": steps, "execution": {"precision": "float64"}})
    saved, tiles.SLAB_BYTES = tiles.SLAB_BYTES, 1
    tiles._slab_planes = spy
    try:
        out = np.asarray(p.apply(da.from_array(x, chunks=(3, 10, 12)), axes=axes).compute(scheduler="sync"))
    finally:
        tiles.SLAB_BYTES, tiles._slab_planes = saved, orig
    return seen, x, out


@pytest.mark.parametrize("steps,slabbed", [
    ([{"gaussian": {"sigma": 1.5}}, {"sobel": {}}], True),  # plane-wise (yx): one plane at a time
    ([{"gaussian": {"sigma": 1.5, "axes": "zyx"}}], False),  # a z halo: the planes depend on each other
    ([{"uniform": {"size": 3}}, {"gaussian": {"sigma": 1, "axes": "zyx"}}], False),
])
def test_a_chain_runs_slab_by_slab_only_when_its_planes_are_independent(steps, slabbed):
    from convpipe.oracles import oracle

    seen, x, out = _slab_decision(steps)
    assert seen and all((k is not None) == slabbed for k in seen), seen
    ref, _ = oracle(steps, x, "zyx")
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10 * max(1.0, float(np.abs(ref).max())))
