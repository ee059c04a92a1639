"""The automatic tile obeys the planner's own warnings (issue 17, item 4).

For any shape, chunking and halo: if some legal tile (whole output chunks, fitting a worker's memory) draws
neither the read-amplification nor the tiny-task warning, the tile the planner picks draws neither; in
general it draws no more warnings than the best legal tile. Checked against a brute force over every
whole-chunk tile, costed by the planner's own per-tile cost function.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convpipe import plan as planmod
from convpipe import tilechoice
from convpipe.errors import PlanError
from convpipe.plan import ArrayInfo, make_plan
from convpipe.spec import load_spec


def _steps(steps):
    return load_spec({"convpipe": 1, "input": {"url": "in.zarr"}, "steps": steps}).steps


def _warnings(plan):
    return [w for w in plan.warnings if "read amplification" in w or "per-task overhead" in w]


def _brute_force_best(plan, steps, info, mem):
    """Fewest warnings over every legal whole-chunk tile of the (single) pass, by the planner's cost function
    and its rules."""
    pp = plan.passes[0]
    ext, out_axes, full = pp.extents, pp.out_axes, pp.full_axes
    chunks = dict(zip(plan.output.axes, plan.output.chunks))
    opts = []
    for a in out_axes:
        n, c = ext[-1][a], chunks[a]
        opts.append([n] if a in full else sorted({min(k * c, n) for k in range(1, -(-n // c) + 1)}))
    best = None
    # the tiny-task warning only where a tile could avoid it: the whole pass as one task reaches 20 ms
    whole = planmod._whole_pass_seconds(pp.ops, ext, pp.halo, full, planmod.canonical_info(info),
                                        plan.compute_dtype, out_axes)
    for combo in itertools.product(*opts):
        t = dict(zip(out_axes, combo))
        amp, m, secs = planmod._tile_costs(pp.ops, t, ext, pp.halo, full, planmod.canonical_info(info),
                                           plan.compute_dtype, out_axes)
        if m > mem:
            continue
        w = int(amp > 1.5) + int(secs < 0.02 and whole >= 0.02)
        best = w if best is None else min(best, w)
    return best


OPS = st.sampled_from([
    lambda s: {"gaussian": {"sigma": s}},
    lambda s: {"uniform": {"size": 2 * s + 1}},
    lambda s: {"gaussian_laplace": {"sigma": s}},
])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nz=st.integers(1, 6), ny=st.integers(1, 6), nx=st.integers(1, 6),
       cz=st.sampled_from([1, 4, 16]), cy=st.sampled_from([64, 128, 512]), cx=st.sampled_from([64, 128, 512]),
       sz=st.integers(0, 3), sy=st.integers(1, 6), op=OPS, sobel=st.booleans(),
       workers=st.integers(1, 16), mem_mib=st.sampled_from([64, 256, 1024, 4096]))
def test_auto_tile_draws_no_warning_a_legal_tile_avoids(nz, ny, nx, cz, cy, cx, sz, sy, op, sobel, workers, mem_mib):
    shape = (nz * cz, ny * cy - (cy // 3 if ny > 1 else 0), nx * cx)
    info = ArrayInfo(shape, np.dtype("uint16"), (cz, cy, cx), "zyx")
    sigma = {"z": sz, "y": sy, "x": sy} if sz else {"y": sy, "x": sy}
    if "uniform" in str(op(1)):
        steps = [{"uniform": {"size": {"z": 2 * sz + 1, "y": 2 * sy + 1, "x": 2 * sy + 1}}}]
    else:
        steps = [{next(iter(op(1))): {"sigma": sigma}}]
    if sobel:
        steps.append({"sobel": {"axes": "yx"}})
    mem = mem_mib << 20
    try:
        plan = make_plan(_steps(steps), info, workers=workers, memory_per_worker=mem)
    except PlanError as e:
        assume("a task needs about" in str(e))  # (a halo far wider than the array is refused whatever the tile)
        assert _brute_force_best_any(steps, info, mem) is None  # not even the smallest tile fits: none is legal
        return
    best = _brute_force_best(plan, steps, info, mem)
    got = len(_warnings(plan))
    assert best is not None and got == best, (plan.passes[0].tile, plan.warnings, best)
    if best == 0:
        assert not _warnings(plan)


def _brute_force_best_any(steps, info, mem):
    """The brute force on a plan built with a huge memory limit (to get the pass's geometry), at ``mem``."""
    plan = make_plan(_steps(steps), info, workers=1, memory_per_worker=1 << 50)
    return _brute_force_best(plan, steps, info, mem)


def test_factored_costs_match_the_planner_on_every_candidate():
    """The chooser's per-axis products equal the planner's per-tile costs (so its choice is what explain shows)."""
    info = ArrayInfo((40, 700, 900), np.dtype("uint16"), (8, 128, 256), "zyx")
    steps = _steps([{"gaussian": {"sigma": {"z": 1, "y": 3, "x": 2}, "mode": "wrap"}}, {"sobel": {"axes": "yx"}},
                    {"uniform": {"size": {"z": 3, "y": 1, "x": 5}, "mode": "constant"}}])
    plan = make_plan(steps, info, memory_per_worker=1 << 40)
    pp = plan.passes[0]
    cinfo = planmod.canonical_info(info)
    opts = {a: tilechoice.axis_options(pp.extents[-1][a], c) for a, c in zip("zyx", (8, 128, 256))}
    g = tilechoice.score_grid(pp.ops, opts, pp.extents, pp.full_axes, plan.compute_dtype, cinfo,
                              planmod.ns_per_voxel(pp.ops))
    seen = 0
    for idx in itertools.product(*(range(len(v)) for v in opts.values())):
        t = {a: opts[a][j] for a, j in zip(opts, idx)}
        amp, mem, secs = planmod._tile_costs(pp.ops, t, pp.extents, pp.halo, pp.full_axes, cinfo,
                                             plan.compute_dtype, pp.out_axes)
        assert g["amp"][idx] == pytest.approx(amp) and g["mem"][idx] == pytest.approx(mem)
        assert g["secs"][idx] == pytest.approx(secs)
        assert g["n_tiles"][idx] == math.prod(math.ceil(pp.extents[-1][a] / t[a]) for a in t)
        seen += 1
    assert seen == 5 * 6 * 4


HEAVY = [{"gaussian": {"sigma": {"z": 1, "y": 3, "x": 3}}}, {"gaussian_laplace": {"sigma": 2}}, {"uniform": {"size": 5}}]
LIGHT = [{"gaussian": {"sigma": {"y": 2, "x": 2}}}, {"sobel": {"axes": "yx"}}]


@pytest.mark.parametrize("steps", [[{"gaussian": {"sigma": {"z": 1, "y": 3, "x": 3}}}], HEAVY, LIGHT],
                         ids=["gaussian3d", "heavy", "light"])
@pytest.mark.parametrize("shape", [(32, 2048, 2048), (4096, 32768, 32768)], ids=["bench", "8TB"])
def test_issue_cases_draw_no_warnings(steps, shape):
    info = ArrayInfo(shape, np.dtype("uint16"), (16, 512, 512), "zyx")
    plan = make_plan(_steps(steps), info, workers=2, memory_per_worker=4 << 30)
    assert not _warnings(plan), (plan.passes[0].tile, plan.warnings)
    assert plan.passes[0].read_amplification <= 1.5


def test_choice_scores_axes_not_their_product(monkeypatch):
    """Plan building stays fast: the chain is walked once per axis option, never once per combination."""
    calls = []
    real = tilechoice.backward
    monkeypatch.setattr(tilechoice, "backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    info = ArrayInfo((64, 4096, 32768, 32768), np.dtype("uint16"), (1, 16, 512, 512), "tzyx")
    plan = make_plan(_steps(HEAVY), info, workers=64, memory_per_worker=8 << 30)
    opts = sum(len(tilechoice.axis_options(n, c)) for n, c in zip(info.shape, info.chunks))
    combos = math.prod(len(tilechoice.axis_options(n, c)) for n, c in zip(info.shape, info.chunks))
    assert combos > 1000 and len(calls) <= opts + 2
    assert not _warnings(plan)


def test_small_array_still_plans_and_an_explicit_tile_is_kept():
    info = ArrayInfo((64, 64), np.dtype("float32"), (32, 32), "yx")
    steps = _steps([{"gaussian": {"sigma": 2}}])
    auto = make_plan(steps, info)
    assert auto.passes[0].n_tiles >= 1
    pinned = make_plan(steps, info, tile={"y": 32, "x": 32})
    assert pinned.passes[0].tile == {"y": 32, "x": 32} and pinned.passes[0].n_tiles == 4


def test_tiny_task_warning_only_where_a_tile_could_avoid_it():
    """A small image's whole pass is one short task: no tile helps, so explain says nothing (each example's
    explain used to); small tiles of a large array still draw it."""
    small = ArrayInfo((64, 96), np.dtype("uint16"), (16, 16), "yx")
    plan = make_plan(_steps(LIGHT), small, workers=2, memory_per_worker=1 << 30, tile={"y": 16, "x": 16})
    pp = plan.passes[0]
    whole = planmod._whole_pass_seconds(pp.ops, pp.extents, pp.halo, pp.full_axes, planmod.canonical_info(small),
                                        plan.compute_dtype, pp.out_axes)
    assert whole < tilechoice.MIN_TASK_SECONDS and pp.est_seconds_per_task < tilechoice.MIN_TASK_SECONDS
    assert not [w for w in plan.warnings if "per-task overhead" in w]
    big = ArrayInfo((32, 2048, 2048), np.dtype("uint16"), (1, 64, 64), "zyx")
    plan = make_plan(_steps(LIGHT), big, workers=2, memory_per_worker=1 << 30, tile={"z": 1, "y": 64, "x": 64})
    assert [w for w in plan.warnings if "per-task overhead" in w]
