"""Convolutional layers (SPEC.md "Convolutional layers"): extents, strides, pool, conv_layer, kernel banks.

Every result is compared with the whole-array reference of :mod:`convpipe.oracles.layers` (scipy.signal's
valid/full correlation, numpy.pad for the modes, numpy reductions for pool), over modes, chunkings (chunks
smaller than the kernel, tiles that cut kernels), strides, extents, axis orders and dtypes; a hypothesis
property draws (shape, kernel size, stride, extent, tile).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as ss
from harness import check, make_spec, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convpipe
from convpipe.errors import SpecError
from convpipe.oracles import MODES, assert_conforms, oracle
from convpipe.plan import ArrayInfo, make_plan

rng0 = np.random.default_rng(15)
K34 = rng0.standard_normal((3, 4)).round(3).tolist()
K55 = rng0.standard_normal((5, 5)).round(3).tolist()
K7 = rng0.standard_normal(7).round(3).tolist()
X = rng0.standard_normal((17, 19))
CHUNKS = [(17, 19), (6, 5), (2, 3)]  # whole, cutting the kernels, smaller than the kernels


# --------------------------------------------------------------------------- the oracle itself


def test_oracle_valid_and_full_are_scipy_signal():
    """The reference is what SPEC.md names: scipy.signal.correlate / convolve mode valid / full."""
    from convpipe.oracles import correlate_extent

    k = np.array(K34)
    assert np.allclose(correlate_extent(X, k, "valid"), ss.correlate(X, k, mode="valid"))
    assert np.allclose(correlate_extent(X, k, "full", mode="constant"), ss.correlate(X, k, mode="full"))
    assert np.allclose(correlate_extent(X, k, "full", mode="constant", flip=True), ss.convolve(X, k, mode="full"))
    assert np.allclose(correlate_extent(X, k, "same", mode="wrap"), ndi.correlate(X, k, mode="wrap"))
    # the full extension by mode: reflect is numpy's symmetric, as scipy.ndimage means it
    e = correlate_extent(np.array([1.0, 2, 3]), np.array([1.0, 0, 0]), "full", mode="reflect")
    assert e.tolist() == [2.0, 1.0, 1.0, 2.0, 3.0]


def test_oracle_pool_is_block_reduce():
    """pool with stride = size and n divisible equals skimage.measure.block_reduce."""
    from skimage.measure import block_reduce

    from convpipe.oracles import pool

    x = rng0.standard_normal((12, 18))
    for kind, fn in (("max", np.max), ("mean", np.mean), ("min", np.min), ("sum", np.sum)):
        y, _ = pool(x, "yx", size={"y": 3, "x": 2}, kind=kind)
        assert np.allclose(y, block_reduce(x, (3, 2), fn))


# --------------------------------------------------------------------------- extents and strides


@pytest.mark.parametrize("op", ["correlate", "convolve"])
@pytest.mark.parametrize("extent", ["same", "valid", "full"])
@pytest.mark.parametrize("stride", [1, 2, {"x": 3}])
@pytest.mark.parametrize("chunks", CHUNKS, ids=["whole", "cut", "tiny"])
def test_extent_stride(op, extent, stride, chunks):
    modes = ("reflect",) if extent == "valid" else MODES  # valid reads no boundary
    for mode in modes:
        steps = [{op: {"kernel": K34, "extent": extent, "stride": stride, "mode": mode, "cval": 0.7}}]
        out, ref = check(steps, X, "yx", chunks=chunks)
        n_y = {"same": 17, "valid": 15, "full": 19}[extent]
        s_y = stride if isinstance(stride, int) else 1
        assert out.shape[0] == (n_y - 1) // s_y + 1


@pytest.mark.parametrize("mode", MODES)
def test_full_wrap_halo_larger_than_chunks_and_array(mode):
    """A 1-D kernel longer than the axis, chunks of 2, full extent, then a filter that reads far ends."""
    x = rng0.standard_normal((4, 5))
    steps = [{"correlate": {"kernel": K7, "axes": "x", "extent": "full", "mode": mode, "stride": 2}},
             {"gaussian": {"sigma": {"y": 0, "x": 3.0}, "mode": "wrap"}}]
    for chunks in ((1, 2), (4, 5)):
        check(steps, x, "yx", chunks=chunks)


def test_full_self_convolution_of_a_sequence():
    """The issue's numbers: [2, 4, 5, 7] convolved with itself, extent full = [4, 16, 36, 68, 81, 70, 49]."""
    x = np.array([[2.0, 4, 5, 7]])
    out = run([{"convolve": {"kernel": [2, 4, 5, 7], "axes": "x", "extent": "full", "mode": "constant"}}],
              x, "yx", chunks=(1, 1))
    assert out.ravel().tolist() == [4, 16, 36, 68, 81, 70, 49]


@pytest.mark.parametrize("tile", [None, {"y": 2, "x": 4}, {"y": 5, "x": 1}])
def test_tiles_write_whole_output_chunks(tile):
    """An explicit tile (in output voxels) over a shape-changing chain: every tile owns whole output chunks."""
    steps = [{"correlate": {"kernel": K55, "extent": "valid", "stride": 2}},
             {"pool": {"size": 2, "stride": 1, "kind": "sum"}},
             {"convolve": {"kernel": K34, "extent": "full", "mode": "mirror"}}]
    check(steps, X, "yx", chunks=(3, 4), tile=tile)


@pytest.mark.parametrize("order", ["zyx", "xzy", "yxz"])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64"])
def test_axis_orders_and_dtypes(order, dtype):
    x3 = (np.random.default_rng(1).random((3, 11, 13)) * 200).astype(dtype)
    xs = np.ascontiguousarray(np.transpose(x3, ["zyx".index(a) for a in order]))
    steps = [{"correlate": {"kernel": K34, "extent": "valid", "stride": {"y": 2}}},
             {"pool": {"size": {"y": 2, "x": 3}, "kind": "max"}}]
    precision = "float64" if dtype == "float64" else "float32"
    chunks = tuple({"z": 1, "y": 4, "x": 5}[a] for a in order)
    check(steps, xs, order, chunks=chunks, precision=precision)


def test_bank_of_differing_shapes_is_refused_for_valid():
    with pytest.raises(SpecError, match="one shape"):
        convpipe.load(make_spec([{"filter_bank": {"kernels": [K34, K55], "extent": "valid"}}])).apply(
            X, axes="yx")


@pytest.mark.parametrize("steps,match", [
    ([{"correlate": {"kernel": K55, "extent": "valid"}}], "no voxel"),
    ([{"pool": {"size": 9}}], "no voxel"),
    ([{"correlate": {"kernel": K34, "extent": "valid", "origin": 1}}], "origin"),
    ([{"correlate": {"kernel": K34, "stride": 0}}], "stride"),
    ([{"correlate": {"kernel": K34, "stride": {"q": 2}}}], "stride"),
    ([{"pool": {"size": 2, "stride": -1}}], "stride"),
])
def test_impossible_windows_are_spec_errors(steps, match):
    with pytest.raises(SpecError, match=match):
        convpipe.load(make_spec(steps)).apply(np.zeros((4, 4)), axes="yx")


def test_explain_shows_each_pass_output_shape():
    steps = [{"filter_bank": {"kernels": np.ones((32, 16, 16)).tolist(), "extent": "valid"}},
             {"zscore": {}}, {"pool": {"size": 2}}]
    plan = make_plan(load_spec_dict(steps).steps, ArrayInfo((256, 256), np.dtype("f4"), (64, 64), "yx"))
    text = str(plan)
    assert "shape     256y x 256x -> 32c x 241y x 241x" in text
    assert "shape     32c x 241y x 241x -> 32c x 120y x 120x" in text
    assert "stride    y: 2, x: 2" in text
    assert plan.output.shape == (32, 120, 120) and plan.output.chunks == (32, 64, 64)
    d = plan.to_dict()
    assert d["passes"][0]["shape_out"] == [32, 241, 241]


def load_spec_dict(steps):
    from convpipe.spec import parse_spec

    return parse_spec(make_spec(steps))


def test_runs_map_each_output_tile_to_exactly_its_windows():
    """Pool 2 every 5 voxels reads 2 of every 5 input voxels: the gaps are not read."""
    from convpipe.tiles import backward

    spec = load_spec_dict([{"pool": {"size": {"x": 2}, "stride": {"x": 5}}}])
    plan = make_plan(spec.steps, ArrayInfo((4, 40), np.dtype("f4"), (4, 40), "yx"))
    p = plan.passes[0]
    need = backward(p.ops, {"x": ((1, 4),)}, p.extents)[0]["x"]
    assert need == ((5, 7), (10, 12), (15, 17))


# --------------------------------------------------------------------------- pool


@pytest.mark.parametrize("kind", ["max", "mean", "min", "sum"])
@pytest.mark.parametrize("size,stride", [(2, None), (3, 1), ({"y": 2, "x": 3}, {"y": 3, "x": 2}), (1, 2)])
@pytest.mark.parametrize("chunks", CHUNKS, ids=["whole", "cut", "tiny"])
def test_pool(kind, size, stride, chunks):
    p = {"size": size, "kind": kind}
    if stride is not None:
        p["stride"] = stride
    check([{"pool": p}], X, "yx", chunks=chunks)


def test_pool_nan_stays_in_its_windows():
    x = X.copy()
    x[4, 6] = np.nan
    out = run([{"pool": {"size": 2}}], x, "yx", chunks=(5, 5))
    assert np.isnan(out[2, 3]) and np.isnan(out).sum() == 1


# --------------------------------------------------------------------------- conv_layer


W = rng0.standard_normal((4, 3, 3, 3)).round(3)
B = [0.1, -0.2, 0.3, 0.0]
XC = rng0.standard_normal((3, 14, 16))


@pytest.mark.parametrize("activation", ["none", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("extent,stride,mode", [("same", 1, "reflect"), ("valid", 1, "reflect"),
                                                ("full", 1, "wrap"), ("same", 2, "constant"),
                                                ("valid", {"x": 3}, "reflect"), ("full", 2, "nearest")])
@pytest.mark.parametrize("chunks", [(3, 14, 16), (1, 5, 4), (2, 2, 2)], ids=["whole", "cut", "tiny"])
def test_conv_layer(activation, extent, stride, mode, chunks):
    steps = [{"conv_layer": {"weights": W.tolist(), "bias": B, "activation": activation, "extent": extent,
                             "stride": stride, "mode": mode, "cval": 0.25}}]
    out, _ = check(steps, XC, "cyx", chunks=chunks)
    assert out.shape[0] == 4


@pytest.mark.parametrize("order", ["cyx", "yxc", "xcy"])
def test_conv_layer_axis_orders(order):
    xs = np.ascontiguousarray(np.transpose(XC, ["cyx".index(a) for a in order]))
    steps = [{"conv_layer": {"weights": W[:, :, :2, :].tolist(), "stride": {"y": 2}, "extent": "valid"}}]
    check(steps, xs, order, chunks=tuple({"c": 3, "y": 5, "x": 4}[a] for a in order))


def test_conv_layer_float32_and_integer_inputs():
    xi = (np.random.default_rng(2).random((3, 12, 12)) * 255).astype(np.uint8)
    steps = [{"conv_layer": {"weights": W.tolist(), "bias": B, "activation": "relu"}}]
    check(steps, xi, "cyx", chunks=(3, 5, 5), precision="float32")
    check(steps, XC.astype(np.float32), "cyx", chunks=(3, 4, 7), precision="float32")


def test_conv_layer_without_c_and_3d_kernels():
    x = rng0.standard_normal((6, 9, 10))
    w3 = rng0.standard_normal((2, 1, 3, 2, 3)).tolist()
    check([{"conv_layer": {"weights": w3, "extent": "valid"}}], x, "zyx", chunks=(2, 4, 4))
    w2 = rng0.standard_normal((3, 1, 3, 3)).tolist()  # 2-D kernels on every plane of a stack
    out, _ = check([{"conv_layer": {"weights": w2, "stride": 2, "mode": "mirror"}}], x, "zyx", chunks=(2, 4, 4))
    assert out.shape == (3, 6, 5, 5)  # c inserted before z


def test_conv_layers_chain_in_one_spec():
    """conv_layer -> relu (activation) -> pool max 2 -> conv_layer, one spec, tiles cutting everything."""
    w2 = rng0.standard_normal((2, 4, 3, 3)).round(3).tolist()
    steps = [{"conv_layer": {"weights": W.tolist(), "bias": B, "activation": "relu"}},
             {"pool": {"size": 2, "kind": "max"}},
             {"conv_layer": {"weights": w2, "extent": "valid", "activation": "sigmoid"}}]
    out, _ = check(steps, XC, "cyx", chunks=(3, 3, 5))
    assert out.shape == (2, 5, 6)


def test_conv_layer_nonfinite_stays_in_footprint():
    x = XC.copy()
    x[1, 7, 8] = np.nan
    steps = [{"conv_layer": {"weights": (np.abs(W) + 0.1).tolist()}}]  # no zero weight: the footprint is 3x3
    out = run(steps, x, "cyx", chunks=(3, 5, 5))
    ref, _ = oracle(steps, x, "cyx")
    assert np.array_equal(np.isnan(out), np.isnan(ref)) and np.isnan(out).sum() == 4 * 9
    ok = ~np.isnan(ref)
    assert_conforms(out[ok], ref[ok], "float64")


@pytest.mark.parametrize("weights,bias,match", [
    (W.tolist(), [1.0], "bias"),
    (W[:, :2].tolist(), None, "2 input channels|holds 3"),
    ([[1.0, 2.0]], None, "out_c, in_c"),
])
def test_conv_layer_refusals(weights, bias, match):
    p = {"weights": weights}
    if bias is not None:
        p["bias"] = bias
    with pytest.raises(SpecError, match=match):
        convpipe.load(make_spec([{"conv_layer": p}])).apply(XC, axes="cyx")


def _run_zarr(tmp_path, name, data, axes, steps, chunks):
    import yaml
    import zarr

    zarr.create_array(str(tmp_path / f"{name}-in.zarr"), data=data, chunks=chunks)
    spec = {"convpipe": 1, "input": {"url": f"{name}-in.zarr", "axes": axes}, "output": {"url": f"{name}.zarr"},
            "steps": steps, "execution": {"precision": "float64"}}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    convpipe.load(str(tmp_path / f"{name}.yaml")).run()
    return zarr.open_array(str(tmp_path / f"{name}.zarr"))


def test_weights_from_npy_through_zarr(tmp_path):
    np.save(tmp_path / "w.npy", W)
    steps = [{"conv_layer": {"weights": "w.npy", "bias": B, "extent": "valid"}}]
    out = _run_zarr(tmp_path, "layer", XC, "cyx", steps, (3, 4, 4))
    ref, _ = oracle(steps, XC, "cyx", base_dir=tmp_path)
    assert_conforms(out[...], ref, "float64")
    assert out.shape == (4, 12, 14) and out.chunks == (3, 4, 4)  # the input's chunks, capped at the extent


def test_bank_from_one_npy_through_zarr(tmp_path):
    """filter_bank from one .npy of shape (N, *kernel): output channel i is kernel i."""
    bank = rng0.standard_normal((5, 3, 3))
    np.save(tmp_path / "bank.npy", bank)
    steps = [{"filter_bank": {"kernels": "bank.npy", "stride": 2, "mode": "wrap"}}]
    out = _run_zarr(tmp_path, "bank", XC[0], "yx", steps, (4, 4))
    ref, _ = oracle(steps, XC[0], "yx", base_dir=tmp_path)
    assert_conforms(out[...], ref, "float64")
    assert out.shape == (5, 7, 8) and out.chunks == (5, 4, 4)
    one = run([{"correlate": {"kernel": bank[3].tolist(), "stride": 2, "mode": "wrap"}}], XC[0], "yx")
    assert np.allclose(out[3], one)


# --------------------------------------------------------------------------- property


@st.composite
def _case(draw):
    ny, nx = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    extent = draw(st.sampled_from(["same", "valid", "full"]))
    ky = draw(st.integers(1, max(1, ny if extent == "valid" else 6)))
    kx = draw(st.integers(1, max(1, nx if extent == "valid" else 6)))
    stride = {"y": draw(st.integers(1, 4)), "x": draw(st.integers(1, 4))}
    mode = draw(st.sampled_from(MODES))
    cy, cx = draw(st.integers(1, ny)), draw(st.integers(1, nx))
    ty, tx = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    op = draw(st.sampled_from(["correlate", "convolve", "pool"]))
    seed = draw(st.integers(0, 2**16))
    return ny, nx, extent, ky, kx, stride, mode, (cy, cx), {"y": ty, "x": tx}, op, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_property_extent_stride_tile(case):
    ny, nx, extent, ky, kx, stride, mode, chunks, tile, op, seed = case
    r = np.random.default_rng(seed)
    x = r.standard_normal((ny, nx))
    if op == "pool":
        if ky > ny or kx > nx:
            return
        steps = [{"pool": {"size": {"y": ky, "x": kx}, "stride": stride, "kind": "max"}},
                 {"gaussian": {"sigma": 1.0, "mode": mode}}]
    else:
        steps = [{op: {"kernel": r.standard_normal((ky, kx)).round(3).tolist(), "extent": extent,
                       "stride": stride, "mode": mode, "cval": -0.5}},
                 {"uniform": {"size": 3, "mode": "wrap"}}]
    check(steps, x, "yx", chunks=chunks, tile=tile)


# --------------------------------------------------------------------------- GPU (skipped without one)


def _gpu_ok() -> bool:
    try:
        from convpipe.backends import resolve

        return resolve("gpu").name == "gpu"
    except Exception:  # noqa: BLE001 - no CuPy, no device
        return False


@pytest.mark.skipif(not _gpu_ok(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("steps", [
    [{"conv_layer": {"weights": W.tolist(), "bias": B, "activation": "relu"}}, {"pool": {"size": 2}}],
    [{"conv_layer": {"weights": W.tolist(), "extent": "valid", "stride": 2, "activation": "sigmoid"}}],
    [{"correlate": {"kernel": K34, "extent": "full", "stride": {"x": 2}, "mode": "wrap", "axes": "yx"}}],
])
def test_layers_on_the_gpu_equal_the_oracle(steps):
    import cupy as cp
    import dask.array as da

    spec = make_spec(steps, "float32", execution={"backend": "gpu"})
    arr = da.from_array(cp.asarray(XC.astype(np.float32)), chunks=(3, 5, 7), asarray=False)
    out = cp.asnumpy(convpipe.load(spec).apply(arr, axes="cyx").compute())
    ref, _ = oracle(steps, XC.astype(np.float32), "cyx")
    assert_conforms(out, ref, "float32")


@pytest.mark.parametrize("in_c", [1, 3, 16])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_layer_float32_on_offset_data_keeps_the_tolerance(in_c, stride):
    """A uint16 image near 30 000 under kernels that sum to 0: the float32 products cancel 1e4-fold. The
    engine centres each channel (the offset term exact in float64) and reruns a tile in float64 where its
    rounding bound says so; before, float32 missed SPEC's tolerance by 10-35x here."""
    rng = np.random.default_rng(in_c)
    x = (30000 + rng.integers(0, 50, (in_c, 40, 36))).astype(np.uint16)
    w = rng.standard_normal((4, in_c, 3, 3))
    w -= w.mean(axis=(1, 2, 3), keepdims=True)
    check([{"conv_layer": {"weights": w.tolist(), "stride": stride}}], x, "cyx", chunks=(in_c, 16, 16),
          precision="float32")


def test_conv_channels_bound_tries_the_first_blocks_max_then_the_tiles(monkeypatch):
    """The float32 bound needs the tile's max |out|; the engine tries the first block's (a lower bound) and
    takes the whole tile's only when that is not enough: quiet first rows, loud rest, float32 kept, exact."""
    from convpipe.engines import gemm

    rng = np.random.default_rng(3)
    x = (3 * rng.standard_normal((16, 120, 90))).astype(np.float32)
    x[:, :12] *= 1e-3  # the first block's outputs near 0: its max says nothing
    w = rng.standard_normal((8, 16, 3, 3)) / 12
    calls = []
    real = gemm._products
    monkeypatch.setattr(gemm, "BLOCK_BYTES", 64 << 10)  # blocks of a few rows
    monkeypatch.setattr(gemm, "_products", lambda xc, *a, **k: calls.append(np.dtype(xc.dtype)) or real(xc, *a, **k))
    y = gemm.conv_channels(x, w, (1, 1), np)
    ref = np.stack([sum(ndi.correlate(x[i].astype(np.float64), w[o, i], mode="constant")[1:-1, 1:-1]
                        for i in range(16)) for o in range(8)])
    assert calls == [np.dtype(np.float32)]  # no float64 rerun
    assert y.dtype == np.float32 and np.abs(y - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
