"""The Python API: ``convpipe.load`` -> ``Pipeline.apply / run / explain``; provenance, overwrite, resume."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import convpipe
from convpipe.errors import InputError, SpecError
from convpipe.io import Manifest

SHAPE, CHUNKS = (4, 40, 48), (2, 16, 16)


def tol(ref: np.ndarray) -> float:
    """SPEC.md's float32 bound."""
    return 1e-5 * max(1.0, float(np.abs(ref).max()))


def make_input(path: Path, shape=SHAPE, chunks=CHUNKS, seed=0) -> np.ndarray:
    data = (np.random.default_rng(seed).random(shape) * 1000).astype("uint16")
    zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype="uint16")[...] = data
    return data


def spec_dict(inp: str | Path, out: str | Path, sigma: float = 1.5) -> dict:
    return {"convpipe": 1, "name": "api-test", "input": {"url": str(inp)}, "output": {"url": str(out)},
            "steps": [{"gaussian": {"sigma": {"y": sigma, "x": sigma}}}, {"sobel": {"axes": "yx"}}]}


def oracle(data: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """gaussian over y, x then the 2-D Sobel magnitude of every plane, in float64."""
    g = ndi.gaussian_filter(data.astype(np.float64), (0, sigma, sigma))
    return np.stack([np.hypot(ndi.sobel(plane, axis=0), ndi.sobel(plane, axis=1)) for plane in g])


@pytest.fixture
def data_dir(tmp_path: Path) -> tuple[Path, np.ndarray]:
    return tmp_path, make_input(tmp_path / "in.zarr")


# --------------------------------------------------------------------------- load


def test_load_from_dict_and_path(tmp_path):
    d = spec_dict("in.zarr", "out.zarr")
    p = convpipe.load(d)
    assert isinstance(p, convpipe.Pipeline)
    assert p.spec.name == "api-test" and [s.name for s in p.spec.steps] == ["gaussian", "sobel"]
    import yaml

    (tmp_path / "p.yaml").write_text(yaml.safe_dump(d))
    for src in (tmp_path / "p.yaml", str(tmp_path / "p.yaml")):
        q = convpipe.load(src)
        assert q.spec.canonical() == p.spec.canonical() and q.spec.hash() == p.spec.hash()
    assert convpipe.load(p.spec).spec is p.spec


def test_load_refuses_a_bad_spec():
    with pytest.raises(SpecError, match=r"steps\[0\].gausian: unknown op 'gausian' \(did you mean 'gaussian'\?\)"):
        convpipe.load({"convpipe": 1, "input": {"url": "x"}, "steps": [{"gausian": {"sigma": 1}}]})


def test_relative_paths_resolve_against_the_spec_folder(tmp_path, monkeypatch):
    data = make_input(tmp_path / "data" / "in.zarr")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "p.yaml").write_text(
        "convpipe: 1\ninput: {url: ../data/in.zarr}\noutput: {url: ../results/out.zarr}\n"
        "steps:\n  - gaussian: {sigma: {y: 1.5, x: 1.5}}\n  - sobel: {axes: yx}\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = convpipe.load(Path("../specs/p.yaml")).run()
    assert res.output_url == str(tmp_path / "results" / "out.zarr")
    out = zarr.open_array(str(tmp_path / "results" / "out.zarr"), mode="r")
    assert out.attrs["convpipe"]["input_url"] == str(tmp_path / "data" / "in.zarr")
    assert np.abs(out[...] - oracle(data)).max() <= tol(oracle(data))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_relative_paths_of_a_dict_resolve_against_the_working_directory(data_dir, monkeypatch):
    folder, _ = data_dir
    monkeypatch.chdir(folder)
    res = convpipe.load(spec_dict("in.zarr", "sub/out.zarr")).run()
    assert res.output_url == str(folder / "sub" / "out.zarr")
    assert zarr.open_array(str(folder / "sub" / "out.zarr")).shape == SHAPE


# --------------------------------------------------------------------------- apply


def test_apply_numpy_is_lazy_and_exact():
    x = np.random.default_rng(1).random((3, 37, 41))
    p = convpipe.load(spec_dict("unused.zarr", "unused.zarr"))
    y = p.apply(x, axes="zyx")
    # precision auto (SPEC.md): a float64 input computes, and by default writes, float64
    assert isinstance(y, da.Array) and y.shape == x.shape and y.dtype == np.float64
    ref = oracle(x)
    assert np.abs(y.compute() - ref).max() <= tol(ref)


def test_apply_dask_small_chunks_and_large_halo():
    """Halo (gaussian radius 12 + sobel 1) larger than the chunks (1 x 7 x 9), uneven edges."""
    x = np.random.default_rng(2).random((2, 30, 31)).astype(np.float32)
    p = convpipe.load({"convpipe": 1, "input": {"url": "u"}, "steps": [
        {"gaussian": {"sigma": {"y": 3, "x": 3}, "mode": "wrap"}}, {"sobel": {"axes": "yx"}}]})
    y = p.apply(da.from_array(x, chunks=(1, 7, 9)), axes="zyx").compute()
    g = ndi.gaussian_filter(x.astype(np.float64), (0, 3, 3), mode="wrap")
    ref = np.stack([np.hypot(ndi.sobel(plane, axis=0), ndi.sobel(plane, axis=1)) for plane in g])
    assert np.abs(y - ref).max() <= tol(ref)


def test_apply_default_axes_and_3d_sigma():
    x = np.random.default_rng(3).random((6, 20, 22))
    p = convpipe.load({"convpipe": 1, "input": {"url": "u"}, "steps": [
        {"gaussian": {"sigma": {"z": 1, "y": 2, "x": 0.5}, "mode": "nearest"}}]})
    y = p.apply(x).compute()  # axes default to the last 3 of 'tczyx'
    ref = ndi.gaussian_filter(x, (1, 2, 0.5), mode="nearest")
    assert np.abs(y - ref).max() <= tol(ref)


def test_apply_axes_of_wrong_length():
    p = convpipe.load(spec_dict("u", "v"))
    with pytest.raises(InputError, match="has 2 letters but the array has 3 axes"):
        p.apply(np.zeros((2, 8, 8)), axes="yx")


def test_apply_checks_step_axes():
    p = convpipe.load({"convpipe": 1, "input": {"url": "u"}, "steps": [{"sobel": {"axes": "zyx"}}]})
    with pytest.raises(SpecError, match="axis 'z' is not one of the input axes 'yx'"):
        p.apply(np.zeros((8, 8)), axes="yx")


def test_apply_components_adds_c_axis():
    x = np.random.default_rng(4).random((20, 24))
    p = convpipe.load({"convpipe": 1, "input": {"url": "u"}, "steps": [{"sobel": {"output": "components"}}]})
    y = p.apply(x, axes="yx").compute()
    assert y.shape == (2, 20, 24)
    assert np.abs(y[0] - ndi.sobel(x, 0)).max() <= tol(y) and np.abs(y[1] - ndi.sobel(x, 1)).max() <= tol(y)


# --------------------------------------------------------------------------- run


def test_run_writes_provenance(data_dir):
    folder, data = data_dir
    p = convpipe.load(spec_dict(folder / "in.zarr", folder / "out.zarr"))
    res = p.run()
    assert res.output_url == str(folder / "out.zarr") and res.voxels == data.size and res.tiles >= 1
    out = zarr.open_array(str(folder / "out.zarr"), mode="r")
    prov = out.attrs["convpipe"]
    assert prov["complete"] is True
    assert prov["version"] == convpipe.__version__
    assert isinstance(prov["input_fingerprint"], str) and len(prov["input_fingerprint"]) >= 8
    assert prov["spec"]["name"] == "api-test"
    assert prov["spec"]["steps"] == p.spec.canonical()["steps"]
    # the hash names the arithmetic done: precision auto as it resolved on this float32 input
    assert prov["compute"] == "float32"
    assert prov["spec_hash"] == p.spec.hash(compute="float32", dtype="float32") != p.spec.hash()
    assert out.dtype == np.float32 and out.shape == SHAPE and out.chunks == CHUNKS
    assert np.abs(out[...] - oracle(data)).max() <= tol(oracle(data))


def test_fingerprint_follows_the_input(tmp_path):
    make_input(tmp_path / "a.zarr")
    make_input(tmp_path / "b.zarr", shape=(4, 40, 40))
    fps = []
    for name in ("a", "b"):
        convpipe.load(spec_dict(tmp_path / f"{name}.zarr", tmp_path / f"{name}-out.zarr")).run()
        fps.append(zarr.open_array(str(tmp_path / f"{name}-out.zarr")).attrs["convpipe"]["input_fingerprint"])
    assert fps[0] != fps[1]


def test_plain_run_refuses_existing_output_and_overwrite_replaces(data_dir):
    folder, data = data_dir
    p = convpipe.load(spec_dict(folder / "in.zarr", folder / "out.zarr"))
    p.run()
    first = zarr.open_array(str(folder / "out.zarr"))[...]
    q = convpipe.load(spec_dict(folder / "in.zarr", folder / "out.zarr", sigma=3.0))
    with pytest.raises(convpipe.InputError, match="exists; use --overwrite"):
        q.run()
    np.testing.assert_array_equal(zarr.open_array(str(folder / "out.zarr"))[...], first)
    q.run(overwrite=True)
    out = zarr.open_array(str(folder / "out.zarr"))
    assert out.attrs["convpipe"]["spec_hash"] == q.spec.hash(compute="float32", dtype="float32")
    assert out.attrs["convpipe"]["complete"] is True
    assert np.abs(out[...] - oracle(data, 3.0)).max() <= tol(oracle(data, 3.0))


def test_overwrite_in_the_spec(data_dir):
    folder, _ = data_dir
    d = spec_dict(folder / "in.zarr", folder / "out.zarr")
    convpipe.load(d).run()
    d["output"]["overwrite"] = True
    convpipe.load(d).run()  # no error


def _interrupt(url: Path, keep: int) -> dict[str, tuple[slice, ...]]:
    """Make a finished output look killed mid-run: incomplete, only ``keep`` tiles recorded as written.

    Returns the regions of the recorded tiles (filled with a sentinel: resume must not recompute them);
    the other tiles are filled with NaN (resume must).
    """
    arr = zarr.open_array(str(url), mode="r+")
    prov = dict(arr.attrs["convpipe"])
    tile, axes = prov["tile"], prov["axes"]
    manifest = Manifest(str(url))
    done = sorted(manifest.done())
    assert len(done) > keep >= 1

    def region(key: str) -> tuple[slice, ...]:
        idx = [int(i) for i in key.split(".")[-len(axes):]]
        return tuple(slice(i * t, min((i + 1) * t, n)) for i, t, n in zip(idx, tile, arr.shape))

    kept = {k: region(k) for k in done[:keep]}
    for k in done[keep:]:
        arr[region(k)] = np.nan
        manifest.fs.rm(f"{manifest.dir}/{k}")
    for sl in kept.values():
        arr[sl] = -1.0
    prov["complete"] = False
    arr.attrs["convpipe"] = prov
    return kept


def test_incomplete_output_refused_then_resumed(data_dir):
    folder, _ = data_dir
    p = convpipe.load(spec_dict(folder / "in.zarr", folder / "out.zarr"))
    p.run()
    ref = zarr.open_array(str(folder / "out.zarr"))[...]
    kept = _interrupt(folder / "out.zarr", keep=2)
    with pytest.raises(convpipe.InputError, match="incomplete .* --resume"):
        p.run()
    assert zarr.open_array(str(folder / "out.zarr")).attrs["convpipe"]["complete"] is False
    res = p.run(resume=True)
    assert res.skipped_tiles == 2
    out = zarr.open_array(str(folder / "out.zarr"))
    assert out.attrs["convpipe"]["complete"] is True
    got = out[...]
    recorded = np.zeros(got.shape, bool)
    for sl in kept.values():
        recorded[sl] = True
    assert np.all(got[recorded] == -1.0)  # recorded tiles are not recomputed
    np.testing.assert_array_equal(got[~recorded], ref[~recorded])  # the rest equals an uninterrupted run
    assert not np.isnan(got).any()


def test_resume_with_nothing_recorded_equals_uninterrupted_run(data_dir):
    folder, _ = data_dir
    p = convpipe.load(spec_dict(folder / "in.zarr", folder / "out.zarr"))
    p.run()
    ref = zarr.open_array(str(folder / "out.zarr"))[...]
    arr = zarr.open_array(str(folder / "out.zarr"), mode="r+")
    arr[...] = np.nan
    arr.attrs["convpipe"] = dict(arr.attrs["convpipe"], complete=False)
    Manifest(str(folder / "out.zarr")).clear()
    p.run(resume=True)
    np.testing.assert_array_equal(zarr.open_array(str(folder / "out.zarr"))[...], ref)


def test_resume_refuses_a_changed_spec_and_overwrite_restarts(data_dir):
    folder, data = data_dir
    convpipe.load(spec_dict(folder / "in.zarr", folder / "out.zarr")).run()
    _interrupt(folder / "out.zarr", keep=1)
    other = convpipe.load(spec_dict(folder / "in.zarr", folder / "out.zarr", sigma=2.5))
    with pytest.raises(convpipe.InputError, match="the spec changed"):
        other.run(resume=True)
    other.run(overwrite=True)
    out = zarr.open_array(str(folder / "out.zarr"))
    assert out.attrs["convpipe"]["complete"] is True
    assert np.abs(out[...] - oracle(data, 2.5)).max() <= tol(oracle(data, 2.5))


def test_run_without_output_section(data_dir):
    folder, _ = data_dir
    p = convpipe.load({"convpipe": 1, "input": {"url": str(folder / "in.zarr")}, "steps": [{"abs": {}}]})
    with pytest.raises(SpecError, match="no output section"):
        p.run()
    p.run(output=str(folder / "o.zarr"))
    assert zarr.open_array(str(folder / "o.zarr")).attrs["convpipe"]["complete"] is True


def test_explain_returns_the_plan(data_dir):
    folder, _ = data_dir
    plan = convpipe.load(spec_dict(folder / "in.zarr", folder / "out.zarr")).explain()
    assert plan.output.shape == SHAPE
    assert plan.passes[0].halo == {"y": (7, 7), "x": (7, 7)}
    assert "halo" in str(plan) and plan.tasks >= 1
    assert not (folder / "out.zarr").exists()
