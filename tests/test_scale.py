"""Archive scale: plans and graphs from metadata alone, <= 2 tasks per tile, linear graph building."""

import time

import numpy as np
import pytest
import zarr

import convpipe
from convpipe.execute import execute
from convpipe.plan import read_chunks

STEPS = [{"gaussian": {"sigma": {"y": 2, "x": 2}}}, {"sobel": {"axes": "yx"}}]


def _empty_input(tmp_path, shape, chunks):
    url = str(tmp_path / "archive.zarr")
    zarr.create_array(url, shape=shape, chunks=chunks, dtype="uint16", fill_value=0)  # no chunk is written
    return url


@pytest.fixture
def no_chunk_reads(monkeypatch):
    """Fail on any read of chunk data: only metadata may be touched."""
    from zarr.core.array import AsyncArray

    async def refuse(self, *a, **k):
        raise AssertionError("chunk data was read")

    monkeypatch.setattr(AsyncArray, "_get_selection", refuse)


def _graph(p, plan, url):
    import dask.array as da

    arr = zarr.open_array(url, mode="r")
    rc = read_chunks(plan.input, plan.passes[0].tile)
    src = da.from_zarr(arr, chunks=tuple(rc[a] for a in plan.input.axes), inline_array=False)
    t = time.perf_counter()
    res = execute(plan, src)
    n = len(res.__dask_graph__())
    return n, time.perf_counter() - t


def test_explain_reads_metadata_only(tmp_path, no_chunk_reads):
    url = _empty_input(tmp_path, (512, 8192, 8192), (16, 512, 512))
    p = convpipe.load({"convpipe": 1, "input": {"url": url}, "output": {"url": str(tmp_path / "o.zarr")},
                       "steps": STEPS})
    plan = p.explain()
    text = str(plan)
    assert "tiles" in text and "scheduler memory" in text and "est. run" in text
    pp = plan.passes[0]
    assert pp.tasks <= 2 * pp.n_tiles


def test_graph_is_two_tasks_per_tile_and_linear(tmp_path):
    sizes = []
    for z in (64, 256):
        url = _empty_input(tmp_path / str(z), (z, 4096, 4096), (16, 512, 512))
        p = convpipe.load({"convpipe": 1, "input": {"url": url}, "steps": STEPS,
                           "execution": {"tile": {"z": 16, "y": 512, "x": 512}}})
        plan = p.explain()
        n, secs = _graph(p, plan, url)
        pp = plan.passes[0]
        assert n - 2 == pp.tasks <= 2 * pp.n_tiles  # +2: the shared program node and the zarr array node
        sizes.append((pp.tasks, secs))
    (n1, t1), (n2, t2) = sizes
    assert n2 == 4 * n1
    assert t2 / n2 < 5 * max(t1 / n1, 2e-6)  # per-task build cost does not grow with the graph


@pytest.mark.slow
def test_8tb_archive_plans_and_builds_in_30s(tmp_path, no_chunk_reads):
    url = _empty_input(tmp_path, (4096, 32768, 32768), (16, 512, 512))
    p = convpipe.load({"convpipe": 1, "input": {"url": url}, "output": {"url": str(tmp_path / "o.zarr")},
                       "steps": STEPS})
    t = time.perf_counter()
    plan = p.explain()
    n, secs = _graph(p, plan, url)
    assert time.perf_counter() - t <= 30
    assert plan.passes[0].tasks <= 2 * plan.passes[0].n_tiles


def test_missing_chunks_read_as_fill_value(tmp_path):
    url = _empty_input(tmp_path, (4, 64, 64), (2, 32, 32))
    out = str(tmp_path / "o.zarr")
    convpipe.load({"convpipe": 1, "input": {"url": url}, "output": {"url": out}, "steps": STEPS}).run()
    assert np.all(zarr.open_array(out)[:] == 0)
