"""Linear-filter merging: merged only where exact (wrap / reflect / mirror), and exact at the edges."""

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

import convpipe
from convpipe.execute import execute
from convpipe.ops.local.merged import MergedSeparable, merge_linear
from convpipe.plan import ArrayInfo, make_plan

STEPS = [{"gaussian": {"sigma": 2}}, {"uniform": {"size": 3}}, {"gaussian": {"sigma": {"y": 1, "x": 3}}}]


def _steps(mode):
    return [{k: {**v, "mode": mode}} for s in STEPS for k, v in s.items()]


def _oracle(x, mode):
    g = ndi.gaussian_filter(x, (0, 2, 2), mode=mode)
    u = ndi.uniform_filter(g, (1, 3, 3), mode=mode)
    return ndi.gaussian_filter(u, (0, 1, 3), mode=mode)


@pytest.mark.parametrize("mode", ["wrap", "reflect", "mirror", "nearest", "constant"])
@pytest.mark.parametrize("shape", [(3, 41, 29), (2, 6, 5), (1, 1, 3)])
def test_merged_chain_equals_scipy_at_edges(mode, shape):
    x = np.random.default_rng(7).random(shape)
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused"}, "steps": _steps(mode),
                       "execution": {"precision": "float64"}})
    y = p.apply(da.from_array(x, chunks=(1, 4, 3)), axes="zyx", tile=[1, 4, 3]).compute()
    np.testing.assert_allclose(y, _oracle(x, mode), rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode,merged", [("wrap", True), ("reflect", True), ("mirror", True),
                                         ("nearest", False), ("constant", False)])
def test_merge_only_where_exact(mode, merged):
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused"}, "steps": _steps(mode)})
    plan = make_plan(p.spec.steps, ArrayInfo((4, 64, 64), np.dtype("float32"), (4, 32, 32), "zyx"))
    ops = plan.passes[0].ops
    assert (len(ops) == 1 and isinstance(ops[0], MergedSeparable)) == merged
    assert ("merged" in str(plan)) == merged


def test_derivative_gaussians_are_not_merged():
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused"},
                       "steps": [{"gaussian": {"sigma": 1, "order": 1, "mode": "wrap"}},
                                 {"gaussian": {"sigma": 1, "mode": "wrap"}}]})
    plan = make_plan(p.spec.steps, ArrayInfo((32, 32), np.dtype("float32"), (16, 16), "yx"))
    assert len(plan.passes[0].ops) == 2


@pytest.mark.parametrize("mode", ["reflect", "mirror", "wrap"])
def test_gaussian_laplace_chain_merges_into_two_terms_exactly(mode):
    """The benchmark's heavy chain: 3-D gaussian -> per-plane LoG -> per-plane box, folded into 2 terms."""
    x = np.random.default_rng(3).random((5, 37, 29))
    steps = [{"gaussian": {"sigma": {"z": 1, "y": 3, "x": 3}, "mode": mode}},
             {"gaussian_laplace": {"sigma": {"y": 2, "x": 2}, "mode": mode}},
             {"uniform": {"size": {"y": 5, "x": 5}, "mode": mode}}]
    p = convpipe.load({"convpipe": 1, "input": {"url": "unused"}, "steps": steps,
                       "execution": {"precision": "float64"}})
    plan = make_plan(p.spec.steps, ArrayInfo(x.shape, np.dtype("float64"), (2, 8, 8), "zyx"), precision="float64")
    assert len(plan.passes[0].ops) >= 2  # folding the 3-D gaussian in would cost more taps than it saves passes
    (op,) = merge_linear(plan.passes[0].ops, only_if_cheaper=False)
    assert isinstance(op, MergedSeparable) and len(op.terms) == 2 and "z" in op.common
    plan.passes[0].ops[:] = [op]  # the forced merge must still be exact
    y = execute(plan, da.from_array(x, chunks=(2, 8, 8))).compute()
    g = ndi.gaussian_filter(x, (1, 3, 3), mode=mode)
    log = sum(ndi.gaussian_filter(g, (0, 2, 2), order=o, mode=mode) for o in ((0, 2, 0), (0, 0, 2)))
    ref = ndi.uniform_filter(log, (1, 5, 5), mode=mode)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10 * max(1, np.abs(ref).max()))
