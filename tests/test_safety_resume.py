"""SPEC.md, Safety: a resume sees the input's data (not only its metadata), and ``--resume`` wins over
``overwrite`` for an output of the same spec and input (the job service re-runs jobs that way)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import yaml
import zarr

import convpipe
from convpipe.errors import InputError
from convpipe.io import Manifest, data_digest, fingerprint
from safety_helpers import CHUNKS, _array, _chunk_mtimes, _cli, _data, _interrupt, _ome, _one_error, _spec, snapshot


# --------------------------------------------------------------------------- 4. a resume sees the input's data

LAYOUTS = {
    "v3": {},
    "v3-uncompressed": {"compressors": None},
    "v2-dot": {"zarr_format": 2, "compressors": None},
    "v2-slash": {"zarr_format": 2, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
    "sharded": {"chunks": (1, 8, 8), "shards": (2, 16, 16), "compressors": None},
}


def _chunk_file(arr_path: Path) -> Path:
    """The stored object holding the voxel (0, 0, 0) (a chunk, or the shard around it)."""
    files = sorted(p for p in arr_path.rglob("*") if p.is_file() and p.name not in ("zarr.json", ".zarray", ".zattrs"))
    return files[0]


def _mutate(arr_path: Path, how: str) -> None:
    """Change the stored data of the array at ``arr_path`` without changing its shape, dtype, chunks or attrs."""
    z = zarr.open_array(str(arr_path), mode="r+")
    if how == "rewrite":
        z[0:2, 0:16, 0:16] = z[0:2, 0:16, 0:16] + 1
    elif how == "same-size-same-mtime":  # other values, same byte count, and the old mtime put back
        f = _chunk_file(arr_path)
        st = f.stat()
        z[0:2, 0:16, 0:16] = z[0:2, 0:16, 0:16][::-1]
        assert f.stat().st_size == st.st_size
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif how == "delete":  # a missing chunk reads as the fill value
        _chunk_file(arr_path).unlink()
    elif how == "add":  # a chunk that was never written (all fill value) gets data
        z[2:4, 32:40, 32:48] = 5.0
    else:
        raise ValueError(how)


def _with_hole(data: np.ndarray) -> np.ndarray:
    """The data with one chunk of zeros (the fill value: zarr stores no object for it)."""
    d = data.copy()
    d[2:4, 32:40, 32:48] = 0
    return d


@pytest.mark.parametrize("how", ["rewrite", "same-size-same-mtime", "delete", "add"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_data_digest_sees_every_change_of_the_stored_data(tmp_path, layout, how):
    kw = dict(LAYOUTS[layout])
    chunks = kw.pop("chunks", CHUNKS)
    if how == "same-size-same-mtime" and kw.get("compressors", 1) is not None:
        pytest.skip("needs fixed-size (uncompressed) chunks")
    path = tmp_path / "in.zarr"
    z = _array(path, _with_hole(_data()), chunks=chunks, **kw)
    before, meta = data_digest(z, str(path)), fingerprint(z, str(path))
    assert before["digest"] and before["objects"] > 0
    z2 = zarr.open_array(str(path), mode="r")
    assert data_digest(z2, str(path)) == before  # reading changes nothing
    z2 = zarr.open_array(str(path), mode="r+")
    z2.attrs["note"] = "edited"  # metadata is the fingerprint's business, not the data digest's
    assert data_digest(z2, str(path))["digest"] == before["digest"]
    del z2.attrs["note"]
    _mutate(path, how)
    z3 = zarr.open_array(str(path), mode="r")
    assert fingerprint(z3, str(path)) == meta  # the metadata did not change ...
    assert data_digest(z3, str(path))["digest"] != before["digest"]  # ... the data did


def test_data_digest_of_an_ome_level_covers_that_level(tmp_path):
    _ome(tmp_path / "img.zarr")
    arr0, _, _ = convpipe.io.open_input(str(tmp_path / "img.zarr"), level=0)
    arr1, _, _ = convpipe.io.open_input(str(tmp_path / "img.zarr"), level=1)
    d0, d1 = data_digest(arr0, str(tmp_path / "img.zarr")), data_digest(arr1, str(tmp_path / "img.zarr"))
    assert d0["digest"] != d1["digest"] and d0["objects"] == 18 and d1["objects"] == 8
    _mutate(tmp_path / "img.zarr" / "1", "rewrite")
    assert data_digest(arr0, str(tmp_path / "img.zarr")) == d0
    assert data_digest(arr1, str(tmp_path / "img.zarr"))["digest"] != d1["digest"]


def test_data_digest_on_a_memory_store():
    url = "memory://digest/in.zarr"
    z = _array(url)
    before = data_digest(z, url)
    assert before["objects"] == 18 and before["versions"]
    z[0:2, 0:16, 0:16] = 7.0
    assert data_digest(z, url)["digest"] != before["digest"]
    import fsspec

    fsspec.filesystem("memory").rm("/digest", recursive=True)


@pytest.mark.parametrize("how", ["rewrite", "same-size-same-mtime", "delete"])
@pytest.mark.parametrize("input_kind", ["array", "ome-level-0", "ome-level-1"])
def test_resume_refuses_an_input_whose_data_changed(tmp_path, capsys, input_kind, how):
    w = tmp_path
    if input_kind == "array":
        _array(w / "in.zarr", compressors=None)
        inp, level, arr_dir = str(w / "in.zarr"), 0, w / "in.zarr"
    else:
        _ome(w / "img.zarr")
        level = int(input_kind[-1])
        inp, arr_dir = str(w / "img.zarr"), w / "img.zarr" / str(level)
        if how == "same-size-same-mtime":
            pytest.skip("the OME fixture's chunks are compressed")
    spec = _spec(w, inp, str(w / "out.zarr"), ome=False)
    text = yaml.safe_load(spec.read_text())
    text["input"]["level"] = level
    spec.write_text(yaml.safe_dump(text))
    convpipe.load(spec).run()
    kept = _interrupt(w / "out.zarr", keep=2)
    _mutate(arr_dir, how)
    before = snapshot(w / "out.zarr")
    rc, _, err = _cli(capsys, "run", spec, "--resume")
    assert rc == 1
    line = _one_error(err)
    assert "cannot resume" in line and "input's data changed" in line and "--overwrite" in line, line
    assert snapshot(w / "out.zarr") == before  # not marked complete, no tile added
    assert Manifest(str(w / "out.zarr")).done() == kept
    # with overwrite too, it starts again on the new data (and is right)
    res = convpipe.load(spec).run(resume=True, overwrite=True)
    assert res.skipped_tiles == 0
    new = zarr.open_array(str(arr_dir), mode="r")[...].astype(np.float64)
    ref = ndi.gaussian_filter(new, (0, 1.5, 1.5))
    got = zarr.open_array(str(w / "out.zarr"), mode="r")
    assert got.attrs["convpipe"]["complete"] is True
    assert np.abs(got[...] - ref).max() <= 1e-5 * max(1, np.abs(ref).max())


def test_an_input_changed_during_the_run_is_never_marked_complete(tmp_path):
    _array(tmp_path / "in.zarr")
    spec = _spec(tmp_path, "in.zarr", "out.zarr")
    changed = []

    def progress(done, total):
        if not changed:
            _mutate(tmp_path / "in.zarr", "rewrite")
            changed.append(done)

    with pytest.raises(convpipe.ExecutionError, match="changed while the run read it"):
        convpipe.load(spec).run(progress=progress)
    assert changed
    assert zarr.open_array(str(tmp_path / "out.zarr"), mode="r").attrs["convpipe"]["complete"] is False


def test_resume_of_an_output_from_before_data_digests_is_refused(tmp_path):
    _array(tmp_path / "in.zarr")
    spec = _spec(tmp_path, "in.zarr", "out.zarr")
    convpipe.load(spec).run()
    _interrupt(tmp_path / "out.zarr", keep=1)
    node = zarr.open_array(str(tmp_path / "out.zarr"), mode="r+")
    prov = dict(node.attrs["convpipe"])
    del prov["input_data"]
    node.attrs["convpipe"] = dict(prov, version="0.0.1")
    with pytest.raises(InputError, match="did not record the input's data"):
        convpipe.load(spec).run(resume=True)


# --------------------------------------------------------------------------- 5. --resume wins over overwrite


@pytest.mark.parametrize("how", ["api", "cli-flags", "spec-overwrite"])
def test_resume_wins_over_overwrite(tmp_path, capsys, how):
    data = _data(3)
    _array(tmp_path / "in.zarr", data)
    spec = _spec(tmp_path, "in.zarr", "out.zarr", **({"overwrite": True} if how == "spec-overwrite" else {}))
    convpipe.load(spec).run(overwrite=True)
    ref = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...]
    kept = _interrupt(tmp_path / "out.zarr", keep=5)
    mt = _chunk_mtimes(tmp_path / "out.zarr")
    time.sleep(0.01)
    if how == "api":
        res = convpipe.load(spec).run(resume=True, overwrite=True)
        assert res.skipped_tiles == 5 and res.tiles == 18
    else:
        rc, out, err = _cli(capsys, "run", spec, "--resume", *(["--overwrite"] if how == "cli-flags" else []))
        assert rc == 0, err
        assert "(5 resumed)" in out.splitlines()[-1]
    got = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert got.attrs["convpipe"]["complete"] is True
    np.testing.assert_array_equal(got[...], ref)
    # the recorded tiles' chunks were not written again
    now = _chunk_mtimes(tmp_path / "out.zarr")
    for key in kept:
        rel = "c/" + "/".join(key.split(".")[1:])
        assert now[rel] == mt[rel], key
    assert len(Manifest(str(tmp_path / "out.zarr")).done()) == 18


def test_resume_with_overwrite_of_a_complete_output_does_nothing(tmp_path, capsys):
    _array(tmp_path / "in.zarr")
    spec = _spec(tmp_path, "in.zarr", "out.zarr", overwrite=True)
    convpipe.load(spec).run()
    before = snapshot(tmp_path / "out.zarr")
    rc, out, _ = _cli(capsys, "run", spec, "--resume", "--overwrite")
    assert rc == 0 and "already complete; nothing to do" in out
    assert snapshot(tmp_path / "out.zarr") == before


def test_resume_with_overwrite_starts_again_when_the_spec_changed(tmp_path):
    data = _data(4)
    _array(tmp_path / "in.zarr", data)
    convpipe.load(_spec(tmp_path, "in.zarr", "out.zarr")).run()
    _interrupt(tmp_path / "out.zarr", keep=5)
    other = _spec(tmp_path, "in.zarr", "out.zarr", steps=[{"gaussian": {"sigma": {"y": 2.5, "x": 2.5}}}])
    with pytest.raises(InputError, match="spec changed"):
        convpipe.load(other).run(resume=True)
    logs: list[str] = []
    res = convpipe.load(other).run(resume=True, overwrite=True, log=logs.append)
    assert res.skipped_tiles == 0 and any("again: the spec changed" in m for m in logs)
    ref = ndi.gaussian_filter(data.astype(np.float64), (0, 2.5, 2.5))
    got = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...]
    assert np.abs(got - ref).max() <= 1e-5 * max(1, np.abs(ref).max())


def test_service_restart_resumes_a_job_whose_spec_says_overwrite(tmp_path):
    """A job submitted with ``output.overwrite: true`` and cut by a service kill resumes: recorded tiles are skipped."""
    pytest.importorskip("httpx")
    from convpipe.service.testing import running_service, start_service

    data = tmp_path / "data"
    data.mkdir()
    a = np.random.default_rng(1).random((16, 256, 256)).astype("float32")
    zarr.create_array(str(data / "slow.zarr"), shape=a.shape, chunks=(1, 256, 256), dtype="float32")[...] = a
    out = data / "resumed.zarr"
    text = yaml.safe_dump({"convpipe": 1, "name": "slow", "input": {"url": str(data / "slow.zarr")},
                           "output": {"url": str(out), "overwrite": True}, "steps": [{"median": {"size": 7}}],
                           "execution": {"tile": {"z": 1, "y": 256, "x": 256}}})
    work = tmp_path / "svc"
    svc = start_service(work, [data], max_running=1)
    try:
        with svc.http() as h:
            job = h.post("/jobs", content=text).json()
            deadline = time.monotonic() + 120
            while len(Manifest(str(out)).done()) < 3:
                assert h.get(f"/jobs/{job['id']}").json()["state"] in ("queued", "running")
                assert time.monotonic() < deadline
                time.sleep(0.02)
        svc.kill()
        time.sleep(0.5)  # the job process dies with the service
    finally:
        svc.kill()
    recorded = Manifest(str(out)).done()
    assert 3 <= len(recorded) < 16, "the job finished before the service was killed"
    assert zarr.open_array(str(out), mode="r").attrs["convpipe"]["complete"] is False
    mt = {k: (out / "c" / k.split(".")[1] / "0" / "0").stat().st_mtime_ns for k in recorded}
    with running_service(work, [data], db=svc.db, max_running=1) as again, again.http() as h:
        deadline = time.monotonic() + 300
        while (j := h.get(f"/jobs/{job['id']}").json())["state"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        log = h.get(f"/jobs/{job['id']}/log").text
    assert j["state"] == "succeeded", log
    assert f"({len(recorded)} already done)" in log and f"({len(recorded)} resumed)" in log, log
    assert {k: (out / "c" / k.split(".")[1] / "0" / "0").stat().st_mtime_ns for k in recorded} == mt
    ref = ndi.median_filter(a, size=(1, 7, 7), mode="reflect")
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...], ref)




def test_resume_with_another_tile_in_the_spec_keeps_every_table_row(tmp_path):
    """Interrupted (Ctrl-C in the API), resumed with a spec naming another tile: the recorded tile is kept, and the
    table holds exactly the rows of an uninterrupted run."""
    import pyarrow.parquet as pq

    from convpipe.errors import RunInterrupted

    a = np.random.default_rng(11).random((4, 64, 64)).astype(np.float32)
    _array(tmp_path / "in.zarr", a, chunks=(1, 16, 16))
    steps = [{"gaussian": {"sigma": 1}}, {"peaks": {"radius": 2, "threshold": 0.55, "table": "t.parquet"}}]
    tile = {"z": 1, "y": 16, "x": 16}
    convpipe.load(_spec(tmp_path, "in.zarr", "ref.zarr", steps=[steps[0], {"peaks": {**steps[1]["peaks"],
                                                                                     "table": "ref.parquet"}}],
                        name="ref.yaml", execution={"tile": tile})).run()
    spec = _spec(tmp_path, "in.zarr", "out.zarr", steps=steps, execution={"tile": tile})

    def stop(done, total):
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as e:
        convpipe.load(spec).run(progress=stop)
    assert e.value.written >= 10 and e.value.tiles == 64
    other = _spec(tmp_path, "in.zarr", "out.zarr", steps=steps, execution={"tile": {"z": 2, "y": 32, "x": 32}})
    res = convpipe.load(other).run(resume=True)
    assert res.skipped_tiles >= 10

    def rows(path):
        t = pq.read_table(path)
        return sorted(zip(*[t.column(c).to_pylist() for c in t.column_names]))

    ref = rows(tmp_path / "ref.parquet")
    assert len(ref) > 0 and rows(tmp_path / "t.parquet") == ref
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"))[...],
                                  zarr.open_array(str(tmp_path / "ref.zarr"))[...])
