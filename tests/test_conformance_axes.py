"""Conformance for every order of the input's axes (SPEC.md: a kernel's dimensions follow the axis letters).

The oracle of an input with axes ``xy`` (``zxy``, ``ycx``, ...) is: transpose to canonical ``tczyx`` order,
apply the op's whole-array reference, transpose back (``convpipe.oracles`` does exactly that); the output
keeps the input's order for shared axes, a new ``c`` axis goes before the first axis after it in tczyx.
Never our own output. Every op family: local filters (separable and n-D kernels, direct / separable /
FFT), edges with every output kind, moving_average / autoregressive along an axis, spectral, point and
global ops, stochastic, filter_bank, and the tables of peaks, blobs, match_template and stats. Chunkings
cut the kernels. Each case also checks that it can fail: the reference differs from reading the stored
array as if its axes were in canonical order.

The cases are the conformance suite's (tests/conformance_cases.py, groups ``axis_order`` and ``tables``):
``test_conforms`` in tests/test_conformance.py runs them on every executor, one order, chunking and
precision per case by default (rotating over the cases, so each is covered), every combination under
``-m slow``. This file checks what is particular to axis orders: that each case can tell a wrong order,
the output's layout, explain, and a run that keeps the stored order.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from conformance_cases import A24 as K24
from conformance_cases import A35 as K35
from conformance_cases import AXIS_CASES as CASES
from conformance_cases import ORDERS, TABLE_CASES, axis_data, axis_params
from harness import is_orientation, make_spec

import convpipe
from convpipe.oracles import (assert_conforms, auto_threshold, canonical, oracle, step_parts, undefined_orientation,
                              uses_fft)

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")



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
        thr = p["value"] if p.get("method") is None else float(auto_threshold(pre, p["method"]))
        ignore = np.abs(pre - thr) <= 1e-5 * max(1.0, float(np.abs(pre).max()))
    assert_conforms(out, ref, prec, fft=uses_fft(steps), what=what, circular=is_orientation(steps),
                    ignore=ignore)


ORDER_FREE = ("log_spectrum-3d",)  # |FFT| over every axis commutes with permuting them


@pytest.mark.parametrize("family,cid,canon,steps", [pytest.param(*c, id=c[1]) for c in CASES + TABLE_CASES
                                                    if c[0] not in ("global", "tables") and c[1] not in ORDER_FREE])
def test_every_case_can_fail(family, cid, canon, steps):
    """For some order of the case, reading the stored array by position gives a different result."""
    x = axis_data(canon)
    found = []
    for order in ORDERS[canon][1]:
        xs = np.transpose(x, [canon.index(a) for a in order])
        ref, _ = oracle(steps, xs, order)
        found.append(_discriminates(steps, xs, order, ref))
    assert any(found), "no order of this case can tell a wrong axis order"


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

    x = axis_data("zyx", seed=9)
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
    fast = axis_params(CASES, slow=False) + axis_params(TABLE_CASES, slow=False)
    slow = axis_params(CASES, slow=True) + axis_params(TABLE_CASES, slow=True)
    per_family = {}
    for p in fast:
        per_family[p[0]] = per_family.get(p[0], 0) + 1
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
