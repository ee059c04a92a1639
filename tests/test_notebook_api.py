"""The Python API in a notebook (issue 18, item 4): ``load`` without an input, ``apply`` with tables, numpy
values in a dict spec, and a library that prints nothing unless asked."""

from __future__ import annotations

import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.ndimage as ndi
import zarr
from skimage import data as skdata

import convpipe
from convpipe.errors import SpecError
from convpipe.spec import load_spec


@pytest.fixture(scope="module")
def coins() -> np.ndarray:
    """A real image: scikit-image's coins, 96 × 128, scaled to [0, 1] (float32)."""
    return (skdata.coins()[100:196, 100:228] / 255.0).astype(np.float32)


# --------------------------------------------------------------------------- load without an input


def test_apply_needs_no_input_and_matches_scipy(coins, tmp_path):
    p = convpipe.load({"convpipe": 1, "steps": [{"gaussian": {"sigma": 2}}]})
    assert p.spec.input is None
    got = p.apply(da.from_array(coins, chunks=(32, 48)), axes="yx").compute()
    ref = ndi.gaussian_filter(coins.astype(np.float64), 2)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    (tmp_path / "s.yaml").write_text("convpipe: 1\nsteps:\n  - gaussian: {sigma: 2}\n")
    q = convpipe.load(tmp_path / "s.yaml")  # a YAML file without an input too
    np.testing.assert_array_equal(q.apply(coins, axes="yx").compute(), p.apply(coins, axes="yx").compute())


def test_run_and_explain_without_input_say_so_and_take_one(coins, tmp_path):
    p = convpipe.load({"convpipe": 1, "output": str(tmp_path / "out.zarr"), "steps": [{"gaussian": {"sigma": 2}}]})
    for call in (p.run, p.explain):
        with pytest.raises(SpecError) as e:
            call()
        assert e.value.path == "input" and "input=" in str(e.value)
    assert not (tmp_path / "out.zarr").exists()
    zarr.create_array(str(tmp_path / "in.zarr"), data=coins, chunks=(32, 32))
    assert p.explain(input=str(tmp_path / "in.zarr")).input.shape == coins.shape
    p.run(input=str(tmp_path / "in.zarr"))
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "out.zarr"))[...],
                               ndi.gaussian_filter(coins.astype(np.float64), 2), atol=1e-5)


def test_validate_and_the_service_still_require_an_input():
    """Only the Python API's load accepts a spec without an input: a spec file for `run`, `validate` or the
    job service names its input (load_spec, parse_spec_text keep requiring one)."""
    with pytest.raises(SpecError, match="input"):
        load_spec({"convpipe": 1, "steps": [{"gaussian": {"sigma": 2}}]})


# --------------------------------------------------------------------------- apply with tables

TABLE_STEPS = {
    "peaks": {"peaks": {"radius": 3, "threshold": 0.6}},
    "blobs": {"blobs": {"min_sigma": 1, "max_sigma": 4, "num_sigma": 4, "threshold": 0.05}},
    "stats": {"stats": {"per": "plane", "orientation_histogram": {"bins": 4}}},
    "match_template": {"match_template": {"template": {"crop": {"y": [40, 56], "x": [40, 56]}}, "radius": 3,
                                          "threshold": 0.5}},
}


def _with_table(step: dict, url: str) -> dict:
    (name, params), = step.items()
    return {name: dict(params, table=url)}


def _frames_equal(a, b, exact: bool = True) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for c in a.columns:
        x, y = np.asarray(a[c]), np.asarray(b[c])
        assert x.dtype == y.dtype, c
        if exact:
            np.testing.assert_array_equal(x, y, err_msg=c)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=c)


@pytest.mark.parametrize("op", sorted(TABLE_STEPS))
def test_apply_tables_equal_the_runs_parquet_table(op, coins, tmp_path):
    """apply(tables=True) gives the rows a run writes, in the same order, and the same image."""
    zarr.create_array(str(tmp_path / "in.zarr"), data=coins, chunks=(32, 32))
    steps = [{"gaussian": {"sigma": 1}}, _with_table(TABLE_STEPS[op], str(tmp_path / "t.parquet"))]
    spec = {"convpipe": 1, "input": str(tmp_path / "in.zarr"), "output": str(tmp_path / "out.zarr"),
            "steps": steps, "execution": {"tile": {"y": 32, "x": 32}}}
    p = convpipe.load(spec)
    res = p.run()
    image, tables = p.apply(da.from_array(coins, chunks=(32, 32)), axes="yx", tables=True)
    assert isinstance(image, np.ndarray)
    np.testing.assert_array_equal(image, zarr.open_array(res.output_url)[...])
    assert set(tables) == {"steps[1]." + op} == {k for k in res.outputs if k != "image"}
    written = pq.read_table(res.outputs["steps[1]." + op]["table"]).to_pandas()
    assert len(written) > 0
    _frames_equal(tables["steps[1]." + op], written)


@pytest.mark.parametrize("op", sorted(TABLE_STEPS))
def test_apply_tables_do_not_depend_on_the_tile(op, coins):
    """A step without `table:` comes back too; one tile and 3 × 4 tiles give the same rows."""
    p = convpipe.load({"convpipe": 1, "steps": [TABLE_STEPS[op]]})
    _, whole = p.apply(coins, axes="yx", tables=True, tile=list(coins.shape))
    _, tiled = p.apply(da.from_array(coins, chunks=(32, 32)), axes="yx", tables=True)
    (name, a), = whole.items()
    b = tiled[name]
    keys = [c for c in a.columns if c in ("y", "x", "sigma")] or list(a.columns[:1])
    a, b = (t.sort_values(keys, kind="stable").reset_index(drop=True) for t in (a, b))
    # stats' merged partials and match_template's window sums round differently per tile (1e-12)
    _frames_equal(a, b, exact=op in ("peaks", "blobs"))


def test_apply_tables_across_passes(coins, tmp_path):
    """Tables before and after a global op (two passes) both come back, keyed by their step paths."""
    p = convpipe.load({"convpipe": 1, "steps": [{"peaks": {"radius": 3, "threshold": 0.6}}, {"zscore": {}},
                                                {"stats": {"per": "all"}}]})
    image, tables = p.apply(da.from_array(coins, chunks=(48, 64)), axes="yx", tables=True)
    assert set(tables) == {"steps[0].peaks", "steps[2].stats"}
    ref = (coins.astype(np.float64) - coins.mean()) / coins.std()
    np.testing.assert_allclose(image, ref, atol=1e-5)
    s = tables["steps[2].stats"]
    np.testing.assert_allclose(s["mean"], [0.0], atol=1e-6)
    np.testing.assert_allclose(s["std"], [1.0], atol=1e-5)
    fp = ndi.maximum_filter(coins, size=7, mode="nearest")
    want = set(zip(*np.nonzero((coins == fp) & (coins > 0.6))))
    assert set(zip(tables["steps[0].peaks"]["y"], tables["steps[0].peaks"]["x"])) == want


def test_apply_refuses_to_drop_named_tables(coins):
    p = convpipe.load({"convpipe": 1, "steps": [{"peaks": {"radius": 3, "table": "a.parquet"}}, {"gaussian": {"sigma": 1}},
                                                {"stats": {"table": "b.parquet"}}]})
    with pytest.raises(SpecError) as e:
        p.apply(coins, axes="yx")
    msg = str(e.value)
    assert "steps[0].peaks" in msg and "steps[2].stats" in msg and "tables=True" in msg
    assert e.value.path == "steps[0].peaks.table"


def test_apply_without_tables_keeps_working(coins):
    """A chain without table steps, or with table ops that name no table, gives the lazy image as before;
    tables=True on a chain without table ops gives no tables."""
    p = convpipe.load({"convpipe": 1, "steps": [{"gaussian": {"sigma": 1}}, {"peaks": {"radius": 2}}]})
    lazy = p.apply(coins, axes="yx")
    assert isinstance(lazy, da.Array)
    q = convpipe.load({"convpipe": 1, "steps": [{"gaussian": {"sigma": 1}}]})
    image, tables = q.apply(coins, axes="yx", tables=True)
    assert tables == {}
    np.testing.assert_array_equal(image, lazy.compute())


def test_tables_are_pyarrow_without_pandas(coins, monkeypatch):
    import pyarrow as pa

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    p = convpipe.load({"convpipe": 1, "steps": [{"peaks": {"radius": 3, "threshold": 0.6}}]})
    _, tables = p.apply(coins, axes="yx", tables=True)
    t = tables["steps[0].peaks"]
    assert isinstance(t, pa.Table) and t.num_rows > 0 and t.column_names[:2] == ["y", "x"]


# --------------------------------------------------------------------------- numpy values in a dict spec

K = np.array([[0.0, 1.0, 0.5], [2.0, -1.0, 0.25], [0.0, 3.0, 1.0]])


def _np_cases(d: Path, coins: np.ndarray) -> dict:
    ref_k = ndi.correlate(coins.astype(np.float64), K, mode="reflect")
    ref_g = ndi.gaussian_filter(coins.astype(np.float64), 1.5)
    return {
        "kernel array": ({"steps": [{"correlate": {"kernel": K}}]}, ref_k),
        "kernel rows as arrays": ({"steps": [{"correlate": {"kernel": [K[0], K[1], K[2]]}}]}, ref_k),
        "filter_bank arrays": ({"steps": [{"filter_bank": {"kernels": [K, K.T]}}]},
                               np.stack([ref_k, ndi.correlate(coins.astype(np.float64), K.T, mode="reflect")])),
        "numpy scalars": ({"steps": [{"gaussian": {"sigma": {"y": np.float32(1.5), "x": np.float64(1.5)}}}],
                           "execution": {"tile": {"y": np.int64(32), "x": np.int64(64)}}}, ref_g),
        "numpy chunks and level, paths": ({"input": {"url": d / "in.zarr", "level": np.int64(0)},
                                           "output": {"url": d / "np.zarr", "chunks": np.array([32, 64])},
                                           "steps": [{"gaussian": {"sigma": np.float64(1.5)}}]}, ref_g),
    }


@pytest.mark.parametrize("case", ["kernel array", "kernel rows as arrays", "filter_bank arrays", "numpy scalars",
                                  "numpy chunks and level, paths"])
def test_run_takes_numpy_values_through_every_override(case, coins, tmp_path):
    """run() overrides the spec (with_overrides), a second run overrides again (overwrite, tile), explain
    plans it: numpy values survive each, and the output is the whole-array reference."""
    zarr.create_array(str(tmp_path / "in.zarr"), data=coins, chunks=(32, 32))
    extra, ref = _np_cases(tmp_path, coins)[case]
    spec = {"convpipe": 1, "input": str(tmp_path / "in.zarr"), "output": str(tmp_path / "out.zarr"), **extra}
    p = convpipe.load(spec)
    out = str(p.spec.resolve(p.spec.output.url))
    p.run()
    first = zarr.open_array(out)[...]
    p.run(overwrite=True, tile={"y": 48, "x": 64})
    again = zarr.open_array(out)
    np.testing.assert_allclose(again[...], ref, atol=1e-5)
    np.testing.assert_array_equal(first, again[...])
    assert again.attrs["convpipe"]["complete"] is True
    assert p.explain().output.shape == ref.shape
    assert p.spec.hash() == convpipe.load(spec).spec.hash()


# --------------------------------------------------------------------------- nothing printed unless asked


def test_library_prints_nothing_by_default(coins, tmp_path, capfd):
    zarr.create_array(str(tmp_path / "in.zarr"), data=coins, chunks=(32, 32))
    p = convpipe.load({"convpipe": 1, "input": str(tmp_path / "in.zarr"), "output": str(tmp_path / "o.zarr"),
                       "steps": [{"gaussian": {"sigma": 1}}, {"peaks": {"radius": 2, "table": str(tmp_path / "p.parquet")}}]})
    p.run()
    p.explain()
    p.apply(coins, axes="yx", tables=True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_run_progress_true_draws_a_bar(coins, tmp_path, capsys):
    zarr.create_array(str(tmp_path / "in.zarr"), data=coins, chunks=(32, 32))
    p = convpipe.load({"convpipe": 1, "name": "bar-test", "input": str(tmp_path / "in.zarr"),
                       "output": str(tmp_path / "o.zarr"), "steps": [{"gaussian": {"sigma": 1}}],
                       "execution": {"tile": {"y": 32, "x": 32}}})
    res = p.run(progress=True)
    out = capsys.readouterr().out
    assert "bar-test" in out and f"{res.tiles}/{res.tiles}" in out
