"""stochastic: bit-identical for every chunking and tile, draws distributed as the kernel, mean -> correlate."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.data

import convpipe
from convpipe.errors import SpecError
from convpipe.ops.base import Context
from convpipe.ops.stochastic import Stochastic, StochasticParams, voxel_hash

MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]
K3 = [[0.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 0.0]]


def pipeline(steps, precision="float64"):
    return convpipe.load({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
                          "execution": {"precision": precision}})


def run(steps, arr, axes, *, chunks, tile=None, precision="float64"):
    return pipeline(steps, precision).apply(da.from_array(arr, chunks=chunks), axes=axes, tile=tile).compute()


@pytest.fixture(scope="module")
def vol():
    return np.random.default_rng(0).random((4, 30, 26))


@pytest.mark.parametrize("mode", MODES)
def test_bit_identical_across_chunkings(vol, mode):
    step = {"stochastic": {"kernel": {"name": "gaussian", "sigma": 1.5}, "seed": 42, "mode": mode, "cval": -1}}
    outs = [run([step], vol, "zyx", chunks=c, tile=t) for c, t in [
        ((4, 30, 26), None), ((1, 7, 5), None), ((2, 4, 4), {"z": 2, "y": 12, "x": 8}), ((3, 30, 3), None)]]
    for o in outs[1:]:
        assert o.dtype == outs[0].dtype
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_bit_identical_in_chains_with_wrap(vol, precision):
    """Followed by a wrap-mode filter, the stochastic op produces several disjoint runs per tile (the far
    end of the array): each voxel must still get its own global draw. Rank filters around it are exact,
    so the whole chain is bit-identical for every chunking."""
    steps = [{"median": {"size": 3, "mode": "mirror"}},
             {"stochastic": {"kernel": [[1, 1, 1], [1, 1, 1], [1, 1, 1]], "normalize": "sum", "seed": 9,
                             "mode": "nearest"}},
             {"maximum": {"size": 5, "mode": "wrap"}}]
    whole = run(steps, vol, "zyx", chunks=vol.shape, precision=precision)
    for chunks in [(1, 4, 4), (2, 9, 13), (4, 3, 26)]:
        np.testing.assert_array_equal(run(steps, vol, "zyx", chunks=chunks, precision=precision), whole)
    # the first two ops on the whole array, then the wrap filter: the same values
    mid = run(steps[:2], vol, "zyx", chunks=vol.shape, precision=precision)
    np.testing.assert_array_equal(whole, ndi.maximum_filter(mid, (1, 5, 5), mode="wrap"))


def test_values_come_from_the_kernel_support():
    """Each output is the input at an offset of non-zero probability (coordinates encoded in the values)."""
    ny, nx = 40, 50
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    enc = (yy * 1000 + xx).astype(np.float64)
    k = np.zeros((5, 5))
    k[0, 4] = 1
    k[2, 2] = 2
    k[3, 1] = 1
    out = run([{"stochastic": {"kernel": k.tolist(), "normalize": "sum", "seed": 5, "mode": "wrap"}}], enc, "yx",
              chunks=(16, 16))
    dy = (out // 1000).astype(int) - yy
    dx = (out % 1000).astype(int) - xx
    dy = (dy + ny // 2) % ny - ny // 2  # undo wrap
    dx = (dx + nx // 2) % nx - nx // 2
    seen = set(zip(dy.ravel().tolist(), dx.ravel().tolist()))
    assert seen == {(-2, 2), (0, 0), (1, -1)}


def test_draw_frequencies_match_probabilities():
    k = np.array([[1.0, 2.0, 3.0], [0.0, 6.0, 0.5], [0.5, 2.0, 1.0]])
    p = k / k.sum()
    op = Stochastic(StochasticParams(kernel=k.tolist(), normalize="sum", seed=123), "zyx")
    z, y, x = np.arange(8), np.arange(300), np.arange(400)
    choice = op.draw([z, y, x])
    counts = np.bincount(choice.ravel(), minlength=9) / choice.size
    assert counts[3] == 0 and counts[5] > 0  # zero weight never drawn
    np.testing.assert_allclose(counts, p.ravel(), atol=0.002)  # ~1e6 draws: std ~ 4e-4
    # successive seeds / neighbouring voxels are not correlated
    op2 = Stochastic(StochasticParams(kernel=k.tolist(), normalize="sum", seed=124), "zyx")
    c2 = op2.draw([z, y, x])
    same = np.mean(choice == c2)
    assert abs(same - np.sum(p ** 2)) < 0.005
    assert abs(np.mean(choice[:, :, 1:] == choice[:, :, :-1]) - np.sum(p ** 2)) < 0.005


def test_hash_is_pure_and_broadcasts():
    a = voxel_hash(7, [np.arange(3), np.arange(-2, 4)])
    b = np.array([[int(voxel_hash(7, [np.array([i]), np.array([j])])[0, 0]) for j in range(-2, 4)]
                  for i in range(3)], dtype=np.uint64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(voxel_hash(8, [np.arange(3), np.arange(-2, 4)]), a)
    assert len(np.unique(voxel_hash(0, [np.arange(100), np.arange(100)]))) == 10000


def test_apply_of_a_part_matches_the_whole(vol):
    op = Stochastic(StochasticParams(kernel=K3, normalize="sum", seed=1, mode="reflect"), "zyx")
    pad = np.pad(vol, ((0, 0), (1, 1), (1, 1)), mode="symmetric")
    whole = op.apply(pad, Context(coords={"z": np.arange(4), "y": np.arange(30), "x": np.arange(26)}))
    part = op.apply(pad[:, 10:22, 5:20], Context(coords={"z": np.arange(4), "y": np.arange(10, 20),
                                                         "x": np.arange(5, 18)}))
    np.testing.assert_array_equal(part, whole[:, 10:20, 5:18])
    with pytest.raises(RuntimeError, match="coordinates"):
        op.apply(pad)


@pytest.mark.parametrize("kernel,normalize,temperature", [
    ({"name": "gaussian", "sigma": 1.0}, "none", 1.0),
    ([[1, 2, 1], [2, 4, 2], [1, 2, 1]], "sum", 1.0),
    ([[0.0, 1.0, 0.0], [1.0, 3.0, 2.0], [0.0, 1.0, 0.0]], "softmax", 0.7),
])
def test_mean_over_seeds_tends_to_correlate(kernel, normalize, temperature):
    img = skimage.data.camera()[::8, ::8].astype(np.float64) / 255.0  # 64 x 64
    from convpipe.kernels import kernel_from_source
    from convpipe.kernels import normalize as knorm

    p = knorm(kernel_from_source(kernel), normalize, temperature)
    ref = ndi.correlate(img, p / p.sum(), mode="mirror")
    op = Stochastic(StochasticParams(kernel=kernel, normalize=normalize, temperature=temperature, mode="mirror"),
                    "yx")
    r = op.halo()["y"][0]
    pad = np.pad(img, r, mode="reflect")  # numpy reflect == scipy mirror
    c = {"y": np.arange(64), "x": np.arange(64)}
    n = 400
    acc = np.zeros_like(img)
    for s in range(n):
        acc += Stochastic(StochasticParams(kernel=kernel, normalize=normalize, temperature=temperature,
                                           mode="mirror", seed=s), "yx").apply(pad, Context(coords=c))
    mean = acc / n
    # one seed through the pipeline equals the direct apply
    one = run([{"stochastic": {"kernel": kernel, "normalize": normalize, "temperature": temperature,
                               "mode": "mirror", "seed": n - 1}}], img, "yx", chunks=(20, 24))
    np.testing.assert_array_equal(one, Stochastic(StochasticParams(
        kernel=kernel, normalize=normalize, temperature=temperature, mode="mirror", seed=n - 1), "yx")
        .apply(pad, Context(coords=c)))
    err = np.abs(mean - ref)
    assert err.mean() <= 0.02 * np.abs(ref).mean()
    assert np.linalg.norm(mean - ref) <= 0.02 * np.linalg.norm(ref)


@pytest.mark.slow
def test_mean_over_many_seeds_pointwise():
    """With enough seeds the mean is within 2% of max|oracle| at every voxel (pipeline, stack, wrap)."""
    rng = np.random.default_rng(3)
    x = ndi.gaussian_filter(rng.random((2, 32, 32)), 2) * 10
    k = {"name": "disk", "radius": 2}
    from convpipe.kernels import kernel_from_source

    ref = ndi.correlate(x, kernel_from_source(k)[None], mode="wrap")
    n = 300
    acc = np.zeros_like(x)
    for s in range(n):
        acc += run([{"stochastic": {"kernel": k, "seed": s, "mode": "wrap"}}], x, "zyx", chunks=(1, 16, 16))
    assert np.max(np.abs(acc / n - ref)) <= 0.02 * np.max(np.abs(ref))


def test_seed_and_float32(vol):
    a = run([{"stochastic": {"kernel": K3, "normalize": "sum", "seed": 1}}], vol, "zyx", chunks=(2, 10, 10),
            precision="float32")
    b = run([{"stochastic": {"kernel": K3, "normalize": "sum", "seed": 2}}], vol, "zyx", chunks=(2, 10, 10),
            precision="float32")
    assert a.dtype == np.float32 and not np.array_equal(a, b)
    assert np.all(np.isin(a, vol.astype(np.float32)))


def test_halo_and_origin():
    op = Stochastic(StochasticParams(kernel=np.ones((3, 6)).tolist(), normalize="sum", origin=[1, -2]), "yx")
    assert op.halo() == {"y": (2, 0), "x": (1, 4)}
    enc = np.arange(30 * 40, dtype=np.float64).reshape(30, 40)
    out = run([{"stochastic": {"kernel": np.ones((3, 6)).tolist(), "normalize": "sum", "origin": [1, -2],
                               "mode": "wrap"}}], enc, "yx", chunks=(7, 9))
    dy = (out // 40).astype(int) - np.arange(30)[:, None]
    dx = (out % 40).astype(int) - np.arange(40)[None]
    assert set(np.unique((dy + 15) % 30 - 15)) == {-2, -1, 0}
    assert set(np.unique((dx + 20) % 40 - 20)) == {-1, 0, 1, 2, 3, 4}


@pytest.mark.parametrize("params,match", [
    ({"kernel": [[1, 2], [3, 4]]}, "sum to 1"),
    ({"kernel": [[0.5, -0.1], [0.3, 0.3]]}, "non-negative"),
    ({"kernel": [[1, -1], [2, 2]], "normalize": "sum"}, "non-negative"),
    ({"kernel": [[1, -1], [2, 2]], "normalize": "l1"}, "non-negative"),
    ({"kernel": [[1, 1]], "normalize": "softmax", "temperature": 0}, "temperature"),
    ({"kernel": [[1.0]], "seed": 1.5}, "seed"),
    ({"kernel": [[0.25, 0.25], [0.25, 0.25]], "method": "fft"}, "unknown parameter"),
])
def test_validation(params, match):
    with pytest.raises(SpecError, match=match):
        convpipe.load({"convpipe": 1, "input": {"url": "u.zarr"}, "steps": [{"stochastic": params}]})


def test_softmax_and_none_accepted(vol):
    out = run([{"stochastic": {"kernel": [[0.2, 0.3, 0.5]], "seed": 3}}], vol, "zyx", chunks=(2, 10, 10))
    assert out.shape == vol.shape
    out = run([{"stochastic": {"kernel": [[1, 2], [-1, 0]], "normalize": "softmax", "temperature": 2}}],
              vol, "zyx", chunks=(2, 10, 10))
    assert out.shape == vol.shape
