"""The conv_layer bench row (issue 15): its ratios, its oracle, its child scripts and its table, without timing
asserts. torch is optional: its script is run only where torch is installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("psutil")
zarr = pytest.importorskip("zarr")

from convpipe import bench  # noqa: E402
from convpipe.bench import layers  # noqa: E402
from convpipe.bench.child import run_sampled  # noqa: E402


def _fake_rows(torch: str = "ok") -> dict:
    rows = {
        "convpipe": {"zarr_times": [2.0, 1.5, 1.8], "memory_times": [0.5, 0.4], "rel_err": 5e-7},
        "convpipe-memory": {"memory_times": [0.5, 0.4], "rel_err": 5e-7},
        "floor": {"zarr_times": [1.0, 0.75]},
        "torch-conv2d": {"zarr_times": [1.2, 1.0], "memory_times": [0.3, 0.25], "rel_err": 4e-7},
        "scipy-loop": {"zarr_times": [9.0, 10.0], "memory_times": [8.0, 8.5], "rel_err": 2e-7},
    }
    if torch != "ok":
        rows["torch-conv2d"] = {"status": torch, "reason": "torch is not installed"}
    return rows


def test_ratios_use_each_contenders_best_round() -> None:
    s = layers.summarise(_fake_rows())
    assert s["zarr"]["speedup_vs_scipy_loop"] == pytest.approx(9.0 / 1.5)
    assert s["zarr"]["ratio_vs_torch"] == pytest.approx(1.5 / 1.0)
    assert s["zarr"]["x_floor"] == pytest.approx({"convpipe": 2.0, "torch-conv2d": 1.0 / 0.75, "scipy-loop": 12.0})
    assert s["memory"]["speedup_vs_scipy_loop"] == pytest.approx(8.0 / 0.4)
    assert s["memory"]["ratio_vs_torch"] == pytest.approx(0.4 / 0.25)
    assert s["exact"] and s["met_by_mode"] == {"zarr": True, "memory": True} and s["met"]
    assert "convpipe/torch 1.50" in s["summary"] and "floor" in s["summary"]


def test_targets_missed_and_torch_skipped() -> None:
    rows = _fake_rows()
    rows["torch-conv2d"]["memory_times"] = [0.1]  # convpipe 4x torch in memory: missed there only
    s = layers.summarise(rows)
    assert s["met_by_mode"] == {"zarr": True, "memory": False} and not s["met"]
    s = layers.summarise(_fake_rows(torch="skipped"))  # without torch only the scipy target applies
    assert s["zarr"]["ratio_vs_torch"] is None and s["met"] and "torch n/a" in s["summary"]
    rows = _fake_rows()
    rows["scipy-loop"]["rel_err"] = 1e-3  # a contender off the oracle: nothing is met
    assert not layers.summarise(rows)["met"]


def test_corner_oracle_is_the_whole_array_correlation() -> None:
    import scipy.ndimage as ndi

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 120, 130)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    full = np.stack([sum(ndi.correlate(x[i].astype(np.float64), w[o, i].astype(np.float64), mode="reflect")
                         for i in range(3)) for o in range(2)])
    ref = layers._reference(x, w)
    assert np.allclose(ref["tl"], full[:, :80, :80], rtol=0, atol=1e-12)
    assert np.allclose(ref["br"], full[:, -80:, -80:], rtol=0, atol=1e-12)
    got = {k: v.astype(np.float32) for k, v in ref.items()}
    assert layers.rel_err(got, ref) < 1e-6
    got["br"] = got["br"] + 0.5
    assert layers.rel_err(got, ref) == pytest.approx(0.5 / max(1.0, max(np.abs(r).max() for r in ref.values())),
                                                    rel=1e-3)


def _job(tmp_path: Path, n: int = 96) -> tuple[dict, np.ndarray, np.ndarray]:
    """A small input, weights, and a 'convpipe output' template (chunks and codec to copy) holding the oracle."""
    import scipy.ndimage as ndi

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, n, n)).astype(np.float32)
    w = (rng.standard_normal((3, 4, 3, 3)) / 6).astype(np.float32)
    inp, like = str(tmp_path / "in.zarr"), str(tmp_path / "like.zarr")
    zarr.create_array(inp, data=x, chunks=(4, 32, 32))
    y = np.stack([sum(ndi.correlate(x[i], w[o, i], mode="reflect") for i in range(4)) for o in range(3)])
    zarr.create_array(like, data=y.astype(np.float32), chunks=(3, 48, 48), compressors=zarr.codecs.BloscCodec())
    np.save(tmp_path / "w.npy", w)
    job = {"input": inp, "weights": str(tmp_path / "w.npy"), "like": like, "values": like,
           "out": str(tmp_path / "out.zarr"), "corners": str(tmp_path / "c.npz"), "threads": 1, "repeat": 1}
    return job, x, w


@pytest.mark.parametrize("body", ["_FLOOR", "_SCIPY", "_TORCH"])
def test_child_scripts_write_convpipes_output_settings(tmp_path: Path, body: str) -> None:
    if body == "_TORCH" and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (an optional bench dependency)")
    job, x, w = _job(tmp_path)
    r = run_sampled(layers._script(getattr(layers, body), job), timeout=300)
    assert r["rc"] == 0 and r["result"], r["stderr_tail"]
    res = r["result"]
    assert res["seconds"] >= res["read_s"] > 0 and res["write_s"] > 0
    out, like = zarr.open_array(job["out"]), zarr.open_array(job["like"])
    assert out.chunks == like.chunks and out.dtype == like.dtype
    assert [type(c) for c in out.compressors] == [type(c) for c in like.compressors]
    ref = layers._reference(x, w)
    assert layers.rel_err(layers._zarr_corners(job["out"]), ref) <= layers.TOL
    if body != "_FLOOR":
        assert res["compute_s"] > 0 and len(res["compute_times"]) >= 1
        assert layers.rel_err(dict(np.load(job["corners"])), ref) <= layers.TOL


def test_torch_script_skips_cleanly_without_torch(tmp_path: Path) -> None:
    job, _, _ = _job(tmp_path, n=80)
    hide = "import sys; sys.modules['torch'] = None\n"  # an import of torch now raises ImportError
    cmd = layers._script(hide + layers._TORCH, job)
    r = run_sampled(cmd, timeout=120)
    assert r["rc"] == 0 and "skip" in r["result"], r["stderr_tail"]
    assert not Path(job["out"]).exists()


def test_row_is_registered_and_renders() -> None:
    from rich.console import Console

    from convpipe.cli.bench_tables import render_conv_layer_table

    assert "conv_layer" in bench.EXTRA_ROWS
    rows = _fake_rows(torch="skipped")
    r = {"shape": [16, 64, 64], "threads": 2, "rounds": 2, "loadavg": [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)],
         "output": {"chunks": [32, 64, 64], "compressors": ["ZstdCodec(level=0)"]}, "rows": {}}
    for name, row in rows.items():
        row = dict(row, status=row.get("status", "ok"), peak_rss=2**28)
        for key in ("zarr_times", "memory_times"):
            if key in row:
                row[key.replace("_times", "")] = layers._stats(row[key])
        r["rows"][name] = row
    r.update(layers.summarise(rows))
    con = Console(width=200, record=True)
    con.print(render_conv_layer_table(r))
    text = con.export_text()
    assert "scipy-loop" in text and "skipped" in text and "9.00 / 9.50" in text and "256.00 MiB" in text


@pytest.mark.slow  # ~10 s: five subprocesses on a 16 x 256 x 256 stack
@pytest.mark.timeout(300)
def test_quick_row_end_to_end(tmp_path: Path) -> None:
    report = bench.run_extra(("conv_layer",), tmp_path, quick=True, json_path=tmp_path / "extra.json")
    r = report["rows"]["conv_layer"]
    assert r["status"] == "ok", r.get("traceback")
    assert r["exact"], r["rel_err"]
    for name in ("convpipe", "floor", "scipy-loop"):
        assert r["rows"][name]["zarr"]["min"] > 0 and r["rows"][name]["peak_rss"] > 0
    assert r["rows"]["convpipe"]["memory"]["min"] > 0 and r["zarr"]["x_floor"]["convpipe"] > 0
    assert r["rows"]["torch-conv2d"]["status"] == ("ok" if importlib.util.find_spec("torch") else "skipped")
    assert json.loads((tmp_path / "extra.json").read_text())["rows"]["conv_layer"]["status"] == "ok"
    assert not list(tmp_path.glob("out-conv-layer*.zarr"))  # outputs removed
