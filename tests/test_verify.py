"""``convpipe verify``: recompute sampled tiles of a finished output with the oracle and compare.

Outputs are written by the real ``Pipeline.run`` (threads); a corrupted output chunk is written through zarr
directly. The CLI is exercised through ``convpipe.cli.main`` (in-process) for speed, and once as a
subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import convpipe
from convpipe.cli import main
from convpipe.verify import VerifyResult, oracle_ops, verify


def _input(path: Path, shape=(6, 40, 48), chunks=(2, 16, 16), dtype="float32", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * 10).astype(dtype) if np.dtype(dtype).kind == "f" else \
        rng.integers(0, 200, size=shape).astype(dtype)
    z = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=dtype, overwrite=True)
    z[...] = a
    return path


def _run(tmp: Path, steps, *, name="out.zarr", inp: Path | None = None, tile=None, precision="float32",
         dtype=None, **kw) -> Path:
    inp = inp or _input(tmp / "in.zarr", **kw)
    out = tmp / name
    spec = {"convpipe": 1, "name": "verify-test", "input": {"url": str(inp)},
            "output": {"url": str(out), "overwrite": True},
            "steps": steps, "execution": {"cluster": "threads", "precision": precision}}
    if tile is not None:
        spec["execution"]["tile"] = tile
    if dtype is not None:
        spec["output"]["dtype"] = dtype
    convpipe.load(spec).run()
    return out


PIPELINES = {
    "gaussian-sobel-median-scale": [{"gaussian": {"sigma": {"y": 2, "x": 1.5}}}, {"sobel": {"axes": "yx"}},
                                    {"median": {"size": 3}}, {"scale": {"factor": 2.0, "offset": 1.0}}],
    "wrap-across-chunks": [{"uniform": {"size": {"y": 5, "x": 7}, "mode": "wrap"}}],
    "constant-3d": [{"gaussian": {"sigma": {"z": 1, "y": 1, "x": 1}, "mode": "constant", "cval": 2.5}}],
    "mirror-laplace-minimum": [{"laplace": {"mode": "mirror"}}, {"minimum": {"size": 3, "mode": "nearest"}}],
    "correlate-origin": [{"correlate": {"kernel": [[1, 2, 0], [0, -1, 3]], "origin": [0, -1]}}],
    "convolve-named": [{"convolve": {"kernel": {"name": "gaussian", "sigma": 1.5}, "mode": "nearest"}}],
    "components": [{"prewitt": {"output": "components"}}],
    "orientation": [{"scharr": {"output": "orientation"}}],
    "dog-unsharp": [{"difference_of_gaussians": {"low_sigma": 1, "high_sigma": 2}},
                    {"unsharp_mask": {"radius": 1.5, "amount": 0.7}}],
    "log-ggm": [{"gaussian_laplace": {"sigma": 1.2}}, {"gaussian_gradient_magnitude": {"sigma": 0.8}}],
    "diffusion-steps": [{"diffusion": {"steps": 4, "dt": 0.2}}, {"abs": {}}, {"sqrt": {}}],
    "threshold": [{"gaussian": {"sigma": 1}}, {"threshold": {"value": 0.5}}],
    "astype-int8": [{"uniform": {"size": 3}}, {"scale": {"factor": 40}}, {"astype": {"dtype": "int8"}}],
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_verify_passes_on_good_outputs(tmp_path, name):
    out = _run(tmp_path, PIPELINES[name], tile={"z": 2, "y": 16, "x": 16})
    res = verify(str(out), all=True)
    assert isinstance(res, VerifyResult)
    assert res.ok, res.summary()
    assert len(res.checked) == res.n_tiles == 27  # (6, 40, 48) in tiles of (2, 16, 16)
    assert not res.differing and not res.not_verifiable and not res.problems


def test_verify_float64_and_integer_input(tmp_path):
    inp = _input(tmp_path / "in16.zarr", dtype="uint16", chunks=(3, 8, 24))
    out = _run(tmp_path, [{"gaussian": {"sigma": 2}}, {"clip": {"min": 20, "max": 150}}], inp=inp,
               precision="float64", tile={"z": 3, "y": 8, "x": 24})
    res = verify(str(out), sample=5, seed=3)
    assert res.ok, res.summary()
    assert res.precision == "float64" and res.relative_tolerance == 1e-10
    assert len(res.checked) == 5


def test_verify_relative_kernel_path(tmp_path):
    """A ``.npy`` kernel relative to the spec's folder is found again (from the provenance)."""
    (tmp_path / "k").mkdir()
    np.save(tmp_path / "k" / "kern.npy", np.array([[0.0, 1, 0], [1, -3, 1], [0, 2, 0]]))
    _input(tmp_path / "data" / "in.zarr")
    spec = tmp_path / "spec.yaml"
    spec.write_text("convpipe: 1\ninput: {url: data/in.zarr}\noutput: {url: out/o.zarr}\n"
                    "steps:\n  - correlate: {kernel: k/kern.npy, mode: wrap}\n"
                    "execution: {cluster: threads, tile: {z: 2, y: 16, x: 16}}\n")
    convpipe.load(spec).run()
    res = verify(str(tmp_path / "out" / "o.zarr"), all=True)
    assert res.ok, res.summary()


def test_verify_ome_output_with_pyramid(tmp_path):
    """An OME-Zarr output: provenance on the group, level 0 verified."""
    inp = _input(tmp_path / "in.zarr")
    spec = {"convpipe": 1, "input": {"url": str(inp)},
            "output": {"url": str(tmp_path / "ome.zarr"), "ome": True, "pyramid": 1},
            "steps": [{"gaussian": {"sigma": 1}}, {"abs": {}}],
            "execution": {"cluster": "threads", "tile": {"z": 2, "y": 16, "x": 16}}}
    convpipe.load(spec).run()
    res = verify(str(tmp_path / "ome.zarr"), all=True)
    assert res.ok, res.summary()
    assert len(res.checked) == 27


def test_verify_detects_corrupted_chunk(tmp_path, capsys):
    out = _run(tmp_path, PIPELINES["gaussian-sobel-median-scale"], tile={"z": 2, "y": 16, "x": 16})
    assert verify(str(out), all=True).ok
    z = zarr.open_array(str(out), mode="r+")
    block = z[2:4, 16:32, 32:48]
    block[1, 7, 3] += 0.05  # well above 1e-5 * max|oracle|
    z[2:4, 16:32, 32:48] = block

    res = verify(str(out), all=True)
    assert not res.ok
    assert [t.key for t in res.differing] == ["p0.1.1.2"]
    bad = res.differing[0]
    assert bad.region == ((2, 4), (16, 32), (32, 48))
    assert bad.worst == (3, 23, 35)
    assert bad.max_error == pytest.approx(0.05, rel=1e-3)

    # the command line: exit 1, naming the tile, no traceback
    rc = main(["verify", str(out), "--all"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "p0.1.1.2" in err and "z[2:4] y[16:32] x[32:48]" in err and "Traceback" not in err

    # a sample that misses the tile passes; one that includes it fails
    hits = [verify(str(out), sample=9, seed=s) for s in range(10)]
    assert any(h.ok for h in hits) and any(not h.ok for h in hits)
    for h in hits:
        assert h.ok == ("p0.1.1.2" not in {t.key for t in h.checked})


def test_verify_detects_nan_where_oracle_is_finite(tmp_path):
    out = _run(tmp_path, [{"gaussian": {"sigma": 1}}], tile={"z": 2, "y": 16, "x": 16})
    z = zarr.open_array(str(out), mode="r+")
    z[0, 0, 0] = np.nan
    res = verify(str(out), all=True)
    assert [t.key for t in res.differing] == ["p0.0.0.0"]
    assert res.differing[0].nonfinite_mismatch == 1


def test_verify_cli_ok_subprocess(tmp_path):
    out = _run(tmp_path, [{"uniform": {"size": 3}}])
    r = subprocess.run([sys.executable, "-m", "convpipe", "verify", str(out), "--sample", "4", "--seed", "7"],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: all 4 checked tiles")


def _handmade_output(tmp_path, steps, complete=True, inp=None) -> Path:
    inp = inp or _input(tmp_path / "in.zarr")
    a = zarr.open_array(str(inp), mode="r")
    from convpipe.io import fingerprint

    prov = {"complete": complete, "spec": {"convpipe": 1, "input": {"url": str(inp)}, "steps": steps,
                                           "execution": {"precision": "float32"}},
            "spec_hash": "x", "version": convpipe.__version__, "input_fingerprint": fingerprint(a, str(inp)),
            "input_url": str(inp), "tile": [2, 16, 16], "axes": "zyx"}
    out = tmp_path / "hand.zarr"
    zarr.create_array(str(out), shape=a.shape, chunks=(2, 16, 16), dtype="float32", overwrite=True,
                      attributes={"convpipe": prov})
    return out


def test_ops_without_oracle_are_not_verifiable(tmp_path, capsys):
    out = _handmade_output(tmp_path, [{"gaussian": {"sigma": 1}}, {"no_such_oracle_op": {"x": 1}}])
    res = verify(str(out))
    assert not res.ok and not res.verifiable
    assert res.not_verifiable == ["steps[1].no_such_oracle_op"]
    assert res.checked == []  # never silently passed
    assert main(["verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not verifiable" in err and "no_such_oracle_op" in err


def test_oracle_table_covers_local_filters_and_point_ops():
    """SPEC.md's local filters (all but ``stochastic``, whose oracle is statistical) and point ops."""
    local = ["convolve", "correlate", "gaussian", "uniform", "sobel", "prewitt", "scharr", "laplace",
             "gaussian_laplace", "gaussian_gradient_magnitude", "difference_of_gaussians", "unsharp_mask",
             "median", "minimum", "maximum", "diffusion"]
    point = ["astype", "scale", "clip", "abs", "log1p", "sqrt", "threshold"]
    assert set(local + point) <= set(oracle_ops())


def test_verify_incomplete_output_checks_recorded_tiles_only(tmp_path):
    out = _run(tmp_path, [{"gaussian": {"sigma": 1}}], tile={"z": 2, "y": 16, "x": 16})
    z = zarr.open_array(str(out), mode="r+")
    prov = dict(z.attrs["convpipe"])
    prov["complete"] = False
    z.attrs["convpipe"] = prov
    done = out / ".convpipe" / "done"
    keep = sorted(p.name for p in done.iterdir())[:4]
    for p in done.iterdir():
        if p.name not in keep:
            p.unlink()
    res = verify(str(out), all=True)
    assert not res.ok and not res.complete
    assert sorted(t.key for t in res.checked) == keep
    assert not res.differing
    assert any("incomplete" in p for p in res.problems)


def test_verify_reports_changed_input(tmp_path):
    out = _run(tmp_path, [{"gaussian": {"sigma": 1}}])
    a = zarr.open_array(str(tmp_path / "in.zarr"), mode="r+")
    a.attrs["note"] = "edited"
    res = verify(str(out), sample=2)
    assert not res.ok
    assert any("changed" in p for p in res.problems)


def test_verify_errors_are_one_line(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing.zarr")]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0
    plain = _input(tmp_path / "plain.zarr")
    assert main(["verify", str(plain)]) == 1
    err = capsys.readouterr().err
    assert "no convpipe provenance" in err and "Traceback" not in err
