"""The executors the conformance suite runs every case on, each through its real entry path, and the
comparison with the oracle (``convpipe.oracles``, never another executor's output).

==============  =====================================================================================
executor        entry path
==============  =====================================================================================
threads         ``Pipeline.apply(dask array).compute(scheduler="threads")`` (in memory, CPU)
sync            ``Pipeline.run`` Zarr -> Zarr, ``execution.cluster: sync``
processes       ``Pipeline.run``, ``cluster: processes``: tiles pickled to worker processes; the run's
                process pool is started once per test session (``convpipe.cluster._process_pool`` hands
                the session's pool to every run: a pool costs ~2.7 s to start, a run ~0.1 s)
distributed     ``Pipeline.run`` on a ``distributed.LocalCluster`` of 2 single-threaded worker processes
                (what ``cluster: local:2`` starts), one per test session, reached by its tcp:// address
cupy-double     ``Pipeline.apply`` with ``backend: gpu`` on the CuPy test double of tests/test_backends.py
                (host memory, CuPy's refusals): the device wiring on a machine without a GPU
cupy            ``Pipeline.apply`` with ``backend: gpu`` on a real CUDA device (skipped without one)
slabs           as threads, with ``convpipe.tiles.SLAB_BYTES`` at 1: every chain of plane-wise ops runs
                one plane at a time along the tile's first axis (real tiles use a few MiB per slab, which
                the suite's small arrays never reach)
==============  =====================================================================================

A case that writes tables runs through ``Pipeline.run`` on every executor (only a run writes tables): the
in-memory executors use ``cluster: threads`` there, with their backend. Zarr chunks are regular, so a run
stores an irregular chunking as chunks of its largest piece per axis; a run's work tile is the case's
(or, when it names none, the chunks, as ``apply`` defaults to).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from conformance_cases import Case, Check
from harness import is_orientation, make_spec

from convpipe.oracles import (assert_conforms, auto_threshold, canonical, oracle, step_parts, undefined_orientation,
                              uses_fft)


@dataclass(frozen=True)
class Executor:
    name: str
    entry: str  # "apply" | "run"
    backend: str = "cpu"
    scheduler: str = "threads"  # apply: dask's scheduler
    cluster: str = "threads"  # run: execution.cluster (distributed: the session's LocalCluster address)
    #: default run: every how-many-th case of each group (1: all), and whether all of a case's checks run
    every: int = 1
    all_checks: bool = True
    marks: tuple = ()
    slab_bytes: int | None = None  # convpipe.tiles.SLAB_BYTES for the run (None: the library's)

    def with_cluster(self, cluster: str) -> Executor:
        return Executor(self.name, self.entry, self.backend, self.scheduler, cluster, self.every, self.all_checks,
                        self.marks, self.slab_bytes)


# Default samples, sized by what a case costs there (2 cores, measured): threads ~0.19 s a case (1,316 cases:
# 252 s of a 2-core run's test time, so half of each group by default, the other half under -m slow), a run
# through Zarr ~0.4 s on sync,
# ~0.8 s in worker processes, ~1.1 s on a LocalCluster (~3 s under load), ~0.3-0.9 s on the CuPy double; one
# case per group and per op (44) is the floor, which is what processes, distributed and the double take.
EXECUTORS: dict[str, Executor] = {e.name: e for e in (
    Executor("threads", "apply", every=2),
    Executor("sync", "run", cluster="sync", every=60, all_checks=False),
    Executor("processes", "run", cluster="processes", every=10**6, all_checks=False),
    Executor("distributed", "run", cluster="local:2", every=10**6, all_checks=False),
    Executor("cupy-double", "apply", backend="gpu", scheduler="sync", every=10**6, all_checks=False),
    Executor("cupy", "apply", backend="gpu", every=10, all_checks=False),
    Executor("slabs", "apply", every=8, slab_bytes=1),
)}


# --------------------------------------------------------------------------- sampling


def sample(cases: list[Case], ex: Executor) -> list[tuple[Case, tuple[Check, ...], bool, str]]:
    """(case, the checks to run, slow?, id suffix) for one executor.

    The default run takes every ``ex.every``-th case of each group (at least one per group), offset per
    executor so that different executors take different cases, plus a case for every op the others leave
    out; of each such case one check (rotating over the cases) unless ``ex.all_checks``. ``-m slow`` runs
    everything else: every case, every check.
    """
    fast = [c for c in cases if not c.slow]
    offset = sum(map(ord, ex.name))
    groups: dict[str, list[Case]] = {}
    for c in fast:
        groups.setdefault(c.group, []).append(c)
    picked: dict[int, int] = {}  # id(case) -> the check it runs by default (-1: all)
    for members in groups.values():
        chosen = [c for i, c in enumerate(members) if (i + offset) % ex.every == 0] or [members[offset % len(members)]]
        for i, c in enumerate(chosen):
            picked[id(c)] = -1 if ex.all_checks else (i + offset) % len(c.checks)

    def ops(checks) -> set[str]:
        return {step_parts(s)[0] for ch in checks for s in ch.steps}

    covered = set().union(*(ops(c.checks if k < 0 else (c.checks[k],)) for c in fast
                            for k in [picked.get(id(c))] if k is not None))
    for c in fast:  # every op on every executor
        for k, ch in enumerate(c.checks):
            if ops([ch]) - covered and id(c) not in picked:
                picked[id(c)] = -1 if ex.all_checks else k
                covered |= ops(c.checks if ex.all_checks else [ch])
    out = []
    for c in cases:
        k = picked.get(id(c))
        if k is None:
            out.append((c, c.checks, True, ""))
        elif k < 0 or len(c.checks) == 1:
            out.append((c, c.checks, False, ""))
        else:
            out.append((c, (c.checks[k],), False, ""))
            out.append((c, c.checks[:k] + c.checks[k + 1:], True, "-more"))
    return out


# --------------------------------------------------------------------------- running one check


def _regular(chunks: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    if chunks is None:
        return tuple(shape)
    return tuple(max(c) if isinstance(c, tuple) else int(c) for c in chunks)


def _tile_dict(tile: Any, dims: str, chunks: tuple[int, ...]) -> Any:
    if tile is None:
        return dict(zip(dims, chunks))
    if isinstance(tile, list) and len(tile) == len(dims):
        return dict(zip(dims, tile))  # a list follows the input's axes, as apply reads it
    return tile


def _via_apply(ex: Executor, c: Check, x: np.ndarray) -> np.ndarray:
    import dask.array as da

    import convpipe

    arr = da.from_array(x, chunks=c.chunks if c.chunks is not None else x.shape)
    p = convpipe.load(make_spec(c.steps, c.precision, execution={"backend": ex.backend}))
    return np.asarray(p.apply(arr, axes=c.dims, tile=c.tile).compute(scheduler=ex.scheduler))


def _via_run(ex: Executor, c: Check, x: np.ndarray, tmp: Path) -> tuple[np.ndarray, dict, Any]:
    import pyarrow.parquet as pq
    import zarr

    import convpipe

    tmp.mkdir(parents=True, exist_ok=True)
    chunks = _regular(c.chunks, x.shape)
    zarr.create_array(str(tmp / "in.zarr"), data=x, chunks=chunks, overwrite=True)
    steps = [{op: dict(p, table=str(tmp / p["table"])) if isinstance(p, dict) and p.get("table") else p
              for op, p in st.items()} for st in c.steps]
    cluster = ex.cluster if ex.entry == "run" else "threads"
    spec = make_spec(steps, c.precision, input={"url": str(tmp / "in.zarr"), "axes": c.dims},
                     output={"url": str(tmp / "out.zarr"), "overwrite": True},
                     execution={"tile": _tile_dict(c.tile, c.dims, chunks), "cluster": cluster,
                                "backend": ex.backend})
    res = convpipe.load(spec).run()
    tables = {}
    for k, v in res.outputs.items():
        if isinstance(v, dict) and "table" in v:
            t = pq.read_table(v["table"])
            tables[int(k.split("]")[0].split("[")[1])] = {n: t.column(n).to_numpy() for n in t.column_names}
    out = zarr.open_array(str(tmp / "out.zarr"), mode="r")
    assert out.attrs["convpipe"]["complete"] is True
    return out[...], tables, res


def run_check(ex: Executor, c: Check, tmp: Path) -> None:
    """Run one check on ``ex`` and compare the image (and every table) with the oracle."""
    if ex.slab_bytes is not None:
        import convpipe.tiles as tiles

        saved, tiles.SLAB_BYTES = tiles.SLAB_BYTES, ex.slab_bytes
        try:
            return run_check(Executor(ex.name, ex.entry, ex.backend, ex.scheduler, ex.cluster, ex.every,
                                      ex.all_checks, ex.marks), c, tmp)
        finally:
            tiles.SLAB_BYTES = saved
    x = c.make_x()
    tables: dict = {}
    plan_tile = None
    if ex.entry == "run" or c.tables:
        out, tables, res = _via_run(ex, c, x, tmp)
        plan_tile = res.plan.passes[-1].tile
    else:
        out = _via_apply(ex, c, x)
    want: dict = {}
    ref, ref_dims = oracle(c.steps, x, c.dims, tables=want if c.tables else None, tile=plan_tile)
    what = f"{ex.name}: {c.steps} on {c.dims}{x.shape} chunks={c.chunks} tile={c.tile} {c.precision}"
    if plan_tile is not None:  # a run writes the oracle's axes, in the stored order
        assert res.plan.output.axes == ref_dims, f"{what}: output axes {res.plan.output.axes} != {ref_dims}"
    if c.dtype is not None:
        assert out.dtype == np.dtype(c.dtype), f"{what}: dtype {out.dtype}"
    if c.shape is not None:
        assert out.shape == tuple(c.shape), f"{what}: shape {out.shape}"
    if c.compare == "saturate":
        _compare_saturated(out, ref, c, x, what)
    else:
        _compare(out, ref, c, x, what)
    if c.tables:
        assert set(tables) == set(want), f"{what}: tables {sorted(tables)} != oracle's {sorted(want)}"
        for i in want:
            assert_rows(tables[i], want[i], canonical(c.dims), f"{what} step {i}",
                        1e-9 if c.precision == "float64" else 1e-5)
            assert len(want[i][next(iter(want[i]))]) > 0 or step_parts(c.steps[i])[0] == "stats"


def _compare(out, ref, c: Check, x, what: str) -> None:
    circular = is_orientation(c.steps) if c.circular is None else c.circular
    ignore = undefined_orientation(c.steps, x, c.dims) if circular else None
    name, p = step_parts(c.steps[-1])
    if name == "threshold":  # a voxel within rounding of the threshold may flip
        pre, _ = oracle(c.steps[:-1], x, c.dims)
        thr = p["value"] if p.get("method") is None else float(auto_threshold(pre, p["method"]))
        ignore = np.abs(pre - thr) <= 1e-5 * max(1.0, float(np.abs(pre).max()))
    fft = uses_fft(c.steps) if c.fft is None else c.fft
    assert_conforms(out, ref, c.precision, fft=fft, what=what, circular=circular, ignore=ignore)


def _compare_saturated(out, ref, c: Check, x, what: str) -> None:
    """An integer astype after float steps: both ends saturate; exact except where the float value is within
    rounding of an integer (truncation may go either way there)."""
    dtype = np.dtype(step_parts(c.steps[-1])[1]["dtype"])
    pre, _ = oracle(c.steps[:-1], x, c.dims)
    assert ref.min() == np.iinfo(dtype).min and ref.max() == np.iinfo(dtype).max, "the case saturates both ends"
    at_integer = np.abs(pre - np.round(pre)) < 1e-9
    assert np.array_equal(out[~at_integer], ref[~at_integer]), what


def assert_rows(got: dict, want: dict, axes: str, what: str, rel: float = 1e-9) -> None:
    """A table equals the oracle's: the same set of rows (keyed by the axis columns), values within ``rel``."""
    keys = [a for a in want if a in axes or a.endswith("_stop") or a == "label"] or []
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


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]
