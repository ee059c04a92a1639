"""SPEC.md, Safety: a run never writes where it reads, ``overwrite`` replaces only Zarr data, a resume sees the
input's data, ``--resume`` wins over ``overwrite``, the cluster answers before anything is created; and the
messages around them (Ctrl-C, out of memory, warnings, throughput after a resume).

Every refusal is checked for its exit code (1) or exception (InputError), its one line, *and* that the bytes
of everything it could have touched are unchanged (a snapshot of the whole working folder).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import yaml
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convpipe
from convpipe.cli import main
from convpipe.errors import InputError, OutputExistsError
from convpipe.io import Manifest, data_digest, fingerprint
from convpipe.locations import locate, relation
from convpipe.replace import foreign_entry

SHAPE = (4, 40, 48)
CHUNKS = (2, 16, 16)
STEPS = [{"gaussian": {"sigma": {"y": 1.5, "x": 1.5}}}]


# --------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> content digest (or link target, or 'dir') of everything below ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _data(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32)


def _array(path, data=None, chunks=CHUNKS, **kw) -> zarr.Array:
    data = _data() if data is None else data
    z = zarr.create_array(store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, **kw)
    z[...] = data
    return z


def _ome(path: Path, data=None, zarr_format: int = 3) -> None:
    """A two-level OME-Zarr image group at ``path``."""
    from convpipe.ome import write_multiscales

    data = _data() if data is None else data
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    kw = {"dimension_names": tuple("zyx")} if zarr_format == 3 else {}
    g.create_array("0", shape=data.shape, chunks=CHUNKS, dtype=data.dtype, **kw)[...] = data
    g.create_array("1", shape=(4, 20, 24), chunks=CHUNKS, dtype=data.dtype, **kw)[...] = data[:, ::2, ::2]
    write_multiscales(g, "zyx", ["0", "1"], [[1, 1, 1], [1, 2, 2]])


def _spec(folder: Path, inp: str, out: str, steps=None, name: str = "spec.yaml", execution=None,
          **output) -> Path:
    d = {"convpipe": 1, "name": "safety", "input": {"url": inp}, "output": {"url": out, **output},
         "steps": steps or STEPS, "execution": execution or {"tile": dict(zip("zyx", CHUNKS))}}
    p = folder / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def _cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap.out, cap.err


def _one_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _interrupt(out: Path, keep: int) -> set[str]:
    """Make a complete output look interrupted: incomplete, only ``keep`` tiles recorded. Returns those."""
    node = zarr.open(str(out), mode="r+")
    node.attrs["convpipe"] = dict(node.attrs["convpipe"], complete=False)
    m = Manifest(str(out))
    done = sorted(m.done())
    assert done, "a complete plain output keeps its manifest"
    kept = set(done[:keep])
    for k in done[keep:]:
        m.fs.rm(f"{m.dir}/{k}")
    return kept


def _chunk_mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "c").rglob("*") if p.is_file()}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "w"
    w.mkdir()
    _array(w / "in.zarr")
    _ome(w / "img.zarr")
    (w / "sub").mkdir()
    os.symlink(w, tmp_path / "link")  # a symlinked folder: link/in.zarr is w/in.zarr
    os.symlink(w / "in.zarr", w / "alias.zarr")  # a symlinked array
    return w


# --------------------------------------------------------------------------- 1. the output is the input


def _aliases(w: Path) -> list[tuple[str, str, str]]:
    """(id, input URL, output URL): every spelling of "the output is, contains or lies in the input"."""
    link = w.parent / "link"
    return [
        ("file-url", str(w / "in.zarr"), f"file://{w / 'in.zarr'}"),
        ("file-url-slash", str(w / "in.zarr"), f"file://{w / 'in.zarr'}/"),
        ("input-file-url", f"file://{w / 'in.zarr'}", str(w / "in.zarr")),
        ("trailing-slash", str(w / "in.zarr"), f"{w / 'in.zarr'}/"),
        ("dotdot", str(w / "in.zarr"), f"{w / 'sub'}/../in.zarr"),
        ("dot", str(w / "in.zarr"), f"{w}/./in.zarr"),
        ("double-slash", str(w / "in.zarr"), f"{w}//in.zarr"),
        ("symlinked-folder", str(w / "in.zarr"), str(link / "in.zarr")),
        ("symlinked-array", str(w / "in.zarr"), str(w / "alias.zarr")),
        ("symlinked-input", str(w / "alias.zarr"), str(w / "in.zarr")),
        ("relative", "in.zarr", str(w / "in.zarr")),
        ("relative-dotdot", str(w / "in.zarr"), "sub/../in.zarr"),
        ("inside-chunks", str(w / "in.zarr"), str(w / "in.zarr" / "c")),
        ("inside-new", str(w / "in.zarr"), str(w / "in.zarr" / "new.zarr")),
        ("inside-via-link", str(w / "in.zarr"), str(link / "in.zarr" / "x.zarr")),
        ("containing-folder", str(w / "in.zarr"), str(w)),
        ("containing-via-link", str(w / "in.zarr"), str(link)),
        ("containing-parent", str(w / "in.zarr"), str(w.parent)),
        ("ome-group-to-level", str(w / "img.zarr"), str(w / "img.zarr" / "0")),
        ("ome-group-to-new-level", str(w / "img.zarr"), str(w / "img.zarr" / "2")),
        ("ome-group-to-level-file-url", str(w / "img.zarr"), f"file://{w / 'img.zarr'}/0/"),
        ("ome-level-to-group", str(w / "img.zarr" / "0"), str(w / "img.zarr")),
        ("ome-level-to-sibling", str(w / "img.zarr" / "0"), str(w / "img.zarr" / "1")),
        ("ome-level-to-group-via-link", str(w / "img.zarr" / "1"), str(link / "img.zarr")),
    ]


ALIAS_IDS = [a[0] for a in _aliases(Path("/x/w"))]


@pytest.mark.parametrize("case", ALIAS_IDS)
@pytest.mark.parametrize("entry", ["cli", "api"])
def test_output_that_overlaps_the_input_is_refused(work, capsys, case, entry):
    _, inp, out = next(a for a in _aliases(work) if a[0] == case)
    spec = _spec(work, inp, out, overwrite=True)
    before = snapshot(work.parent)
    if entry == "cli":
        rc, stdout, err = _cli(capsys, "run", spec, "--overwrite")
        assert rc == 1 and "done:" not in stdout
        line = _one_error(err)
    else:
        with pytest.raises(InputError) as e:
            convpipe.load(spec).run(overwrite=True)
        line = str(e.value)
    assert re.search(r"output\.url .* (is|lies inside|contains) the (input|OME-Zarr image of the input)", line), line
    assert "untouched" in line
    assert snapshot(work.parent) == before  # the input, and everything else, byte for byte


@pytest.mark.parametrize("case", ["same", "inside", "parts-is-input", "in-output", "output-in-table", "two-tables"])
def test_table_that_overlaps_the_input_or_the_output_is_refused(work, capsys, case):
    w = work
    tab = {"same": str(w / "in.zarr"), "inside": str(w / "in.zarr" / "t.parquet"),
           "parts-is-input": str(w / "in"), "in-output": str(w / "out.zarr" / "t.parquet"),
           "output-in-table": str(w / "t"), "two-tables": str(w / "t.parquet")}[case]
    if case == "parts-is-input":
        _array(w / "in.parts")  # the table "in" writes its parts to "in.parts"
    inp = str(w / ("in.parts" if case == "parts-is-input" else "in.zarr"))
    out = str(w / "t.parts" / "o.zarr") if case == "output-in-table" else str(w / "out.zarr")
    steps = [{"peaks": {"radius": 2, "threshold": 0.5, "table": tab}}]
    if case == "two-tables":
        steps.append({"peaks": {"radius": 3, "threshold": 0.5, "table": f"file://{tab}"}})
    spec = _spec(w, inp, out, steps=steps)
    before = snapshot(w.parent)
    rc, _, err = _cli(capsys, "run", spec, "--overwrite")
    assert rc == 1
    line = _one_error(err)
    assert ".table " in line and (" is " in line or "inside" in line or "contains" in line), line
    assert snapshot(w.parent) == before


def test_memory_urls_that_overlap_the_input_are_refused():
    import fsspec

    data = _data()
    _array("memory://safety/in.zarr", data)
    fs = fsspec.filesystem("memory")
    before = {k: fs.cat(k) for k in fs.find("/safety")}
    for out in ("memory://safety/in.zarr/", "memory:///safety/in.zarr", "memory://safety/x/../in.zarr",
                "memory://safety//in.zarr", "memory://safety/in.zarr/0", "memory://safety"):
        p = convpipe.load({"convpipe": 1, "input": {"url": "memory://safety/in.zarr"},
                           "output": {"url": out, "overwrite": True}, "steps": STEPS})
        with pytest.raises(InputError, match="the input"):
            p.run()
        assert {k: fs.cat(k) for k in fs.find("/safety")} == before, out
    # a sibling is fine
    p = convpipe.load({"convpipe": 1, "input": {"url": "memory://safety/in.zarr"},
                       "output": {"url": "memory://safety/out.zarr"}, "steps": STEPS})
    p.run()
    np.testing.assert_array_equal(zarr.open_array("memory://safety/in.zarr", mode="r")[...], data)
    fs.rm("/safety", recursive=True)


def test_a_job_of_the_service_refuses_an_alias_of_its_input(tmp_path):
    """The service's job process runs the same run: an output that is the input by another name fails the job."""
    pytest.importorskip("httpx")
    from convpipe.service.testing import running_service

    data = tmp_path / "data"
    data.mkdir()
    _array(data / "in.zarr")
    os.symlink(data / "in.zarr", data / "same.zarr")
    before = snapshot(data)
    text = yaml.safe_dump({"convpipe": 1, "name": "alias", "input": {"url": str(data / "in.zarr")},
                           "output": {"url": str(data / "same.zarr"), "overwrite": True}, "steps": STEPS})
    with running_service(tmp_path / "svc", [data]) as svc, svc.http() as h:
        r = h.post("/jobs", content=text)
        if r.status_code == 201:
            job_id = r.json()["id"]
            deadline = time.monotonic() + 120
            while (job := h.get(f"/jobs/{job_id}").json())["state"] not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert job["state"] == "failed" and "the input" in (job["error"] or ""), job
        else:  # the service may refuse it already at submission; either way nothing is written
            assert r.status_code in (403, 409, 422), r.text
    assert snapshot(data) == before


# --- the relation itself, as a property: every spelling of one place is that place


_NAMES = st.sampled_from(["a", "b", "in.zarr", "c", "0"])


@st.composite
def _spelling(draw, root: str, parts: list[str]) -> str:
    """One of the many ways to write root/parts... (., .., //, trailing /, file://, a symlink to root)."""
    out = [draw(st.sampled_from([root, root + "/.", root + "/sub/..", "LINK"]))]
    for p in parts:
        out.append(draw(st.sampled_from([p, f"./{p}", f"{p}/../{p}", f"/{p}"])))
    s = "/".join(out) + draw(st.sampled_from(["", "/", "//"]))
    return ("file://" if draw(st.booleans()) else "") + s


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), a=st.lists(_NAMES, max_size=3), b=st.lists(_NAMES, max_size=3))
def test_relation_of_any_spellings_is_the_relation_of_the_places(tmp_path, data, a, b):
    root = tmp_path / "r"
    if not root.exists():
        (root / "sub").mkdir(parents=True)
        os.symlink(root, tmp_path / "LINK")
    link = str(tmp_path / "LINK")
    sa = data.draw(_spelling(str(root), a)).replace("LINK", link)
    sb = data.draw(_spelling(str(root), b)).replace("LINK", link)
    want = ("equal" if a == b else "inside" if a[:len(b)] == b else "contains" if b[:len(a)] == a else None)
    assert relation(locate(sa), locate(sb)) == want, (sa, sb)


def test_relation_on_object_store_urls():
    s3 = [locate(u) for u in ("s3://b/x", "s3://b/x/", "s3a://b/x", "s3://b//x", "s3://b/y/../x")]
    for other in s3[1:]:
        assert relation(s3[0], other) == "equal"
    assert relation(locate("s3://b/x/0"), locate("s3://b/x")) == "inside"
    assert relation(locate("s3://b"), locate("s3://b/x")) == "contains"
    assert relation(locate("s3://b/xy"), locate("s3://b/x")) is None
    assert relation(locate("s3://other/x"), locate("s3://b/x")) is None
    assert relation(locate("memory://b/x"), locate("s3://b/x")) is None
    # an object store takes keys literally: "x/../y" is written under the prefix "x/"
    assert relation(locate("s3://b/in.zarr/../o.zarr"), locate("s3://b/in.zarr")) is not None


# --------------------------------------------------------------------------- 3. what overwrite may delete


def _foreign_cases(w: Path) -> dict[str, tuple[Path, str]]:
    """name -> (output path, the foreign entry the refusal must name)."""
    cases = {}
    p = w / "top"
    _array(p)
    (p / "notes.txt").write_text("mine")
    cases["file-at-top"] = (p, "notes.txt")
    p = w / "deep"
    _array(p)
    (p / "c" / "0" / "README").write_text("mine")
    cases["file-among-chunks"] = (p, "c/0/README")
    p = w / "group"
    _ome(p)
    (p / "1" / "thesis.docx").write_text("mine")
    cases["file-in-a-level"] = (p, "1/thesis.docx")
    p = w / "plainfolder"
    (p / "photos").mkdir(parents=True)
    (p / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    cases["folder-without-zarr"] = (p, "photos/a.jpg")
    p = w / "file.zarr"
    p.write_text("not a folder")
    cases["plain-file"] = (p, "is a file")
    p = w / "linked"
    _array(p)
    os.symlink(w / "plainfolder", p / "c" / "elsewhere")
    cases["symlink-inside"] = (p, "c/elsewhere")
    p = w / "zattrs-alone"
    (p / "x").mkdir(parents=True)
    (p / "x" / ".zattrs").write_text("{}")
    cases["metadata-outside-a-node"] = (p, "x/.zattrs")
    return cases


@pytest.mark.parametrize("case", ["file-at-top", "file-among-chunks", "file-in-a-level", "folder-without-zarr",
                                  "plain-file", "symlink-inside", "metadata-outside-a-node"])
@pytest.mark.parametrize("how", ["--overwrite", "spec", "none"])
def test_overwrite_refuses_anything_but_zarr_data(tmp_path, capsys, case, how):
    w = tmp_path
    _array(w / "in.zarr")
    out, foreign = _foreign_cases(w)[case]
    spec = _spec(w, str(w / "in.zarr"), str(out), **({"overwrite": True} if how == "spec" else {}))
    before = snapshot(w)
    rc, _, err = _cli(capsys, "run", spec, *(["--overwrite"] if how == "--overwrite" else []))
    assert rc == 1
    line = _one_error(err)
    if how == "none" and case in ("file-at-top", "file-among-chunks", "file-in-a-level", "symlink-inside"):
        assert "exists; use --overwrite" in line, line  # a Zarr node is there: the usual refusal
    else:
        assert foreign in line and "refusing to write there" in line, line
    assert snapshot(w) == before


@pytest.mark.parametrize("layout", ["convpipe-incomplete", "foreign-v3", "v2-dot", "v2-slash", "sharded",
                                    "ome-with-pyramid", "empty-folder", "partial-leftovers"])
def test_overwrite_replaces_zarr_data(tmp_path, capsys, layout):
    w = tmp_path
    data = _data()
    _array(w / "in.zarr", data)
    out = w / "out.zarr"
    if layout == "convpipe-incomplete":
        convpipe.load(_spec(w, str(w / "in.zarr"), str(out))).run()
        _interrupt(out, keep=2)
    elif layout == "foreign-v3":
        _array(out, np.ones((3, 3), np.int8), chunks=(2, 2), attributes={"someone": "else"})
    elif layout == "v2-dot":
        _array(out, zarr_format=2)
    elif layout == "v2-slash":
        _array(out, zarr_format=2, chunk_key_encoding={"name": "v2", "separator": "/"})
    elif layout == "sharded":
        _array(out, chunks=(1, 8, 8), shards=(2, 16, 16))
    elif layout == "ome-with-pyramid":
        convpipe.load(_spec(w, str(w / "in.zarr"), str(out), ome=True, pyramid=1)).run()
    elif layout == "empty-folder":
        out.mkdir()
    elif layout == "partial-leftovers":  # what zarr leaves when a write is killed mid-way
        _array(out)
        (out / "c" / "0" / "0" / "1.0123456789abcdef0123456789abcdef.partial").write_bytes(b"x")
        (out / "zarr.0123456789abcdef0123456789abcdef.partial").write_bytes(b"{")
    assert foreign_entry(str(out)) is None
    rc, _, err = _cli(capsys, "run", _spec(w, str(w / "in.zarr"), str(out)), "--overwrite")
    assert rc == 0, err
    got = zarr.open_array(str(out), mode="r")
    assert got.attrs["convpipe"]["complete"] is True
    ref = ndi.gaussian_filter(data.astype(np.float64), (0, 1.5, 1.5))
    assert np.abs(got[...] - ref).max() <= 1e-5 * max(1, np.abs(ref).max())


def test_overwrite_on_memory_store_replaces_only_zarr_data():
    import fsspec

    fs = fsspec.filesystem("memory")
    _array("memory://ow/in.zarr")
    _array("memory://ow/out.zarr")
    spec = {"convpipe": 1, "input": {"url": "memory://ow/in.zarr"},
            "output": {"url": "memory://ow/out.zarr", "overwrite": True}, "steps": STEPS}
    convpipe.load(spec).run()  # only zarr data there: replaced
    fs.pipe("/ow/out.zarr/c/notes.txt", b"mine")
    with pytest.raises(OutputExistsError, match="c/notes.txt"):
        convpipe.load(spec).run()
    assert fs.cat("/ow/out.zarr/c/notes.txt") == b"mine"
    assert zarr.open_array("memory://ow/out.zarr", mode="r").attrs["convpipe"]["complete"] is True
    fs.rm("/ow", recursive=True)


@pytest.mark.parametrize("what", ["folder", "text-file"])
def test_a_table_path_holding_something_else_is_refused(tmp_path, capsys, what):
    _array(tmp_path / "in.zarr")
    tab = tmp_path / "t.parquet"
    if what == "folder":
        tab.mkdir()
        (tab / "keep.txt").write_text("mine")
    else:
        tab.write_text("mine")
    spec = _spec(tmp_path, "in.zarr", "out.zarr", steps=[{"peaks": {"radius": 2, "threshold": 0.5,
                                                                     "table": str(tab)}}])
    before = snapshot(tmp_path)
    rc, _, err = _cli(capsys, "run", spec)
    assert rc == 1 and "Parquet" in _one_error(err) and "steps[0].peaks.table" in _one_error(err)
    assert snapshot(tmp_path) == before
    if what == "text-file":  # an earlier table is replaced as before
        tab.unlink()
        assert _cli(capsys, "run", spec)[0] == 0
        assert _cli(capsys, "run", spec, "--overwrite")[0] == 0


def test_ingest_overwrite_refuses_a_zarr_folder_with_foreign_files(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "s.tif", _data())
    out = tmp_path / "o.zarr"
    assert _cli(capsys, "ingest", tmp_path / "s.tif", "--output", out)[0] == 0
    (out / "0" / "mine.txt").write_text("keep")
    before = snapshot(tmp_path)
    rc, _, err = _cli(capsys, "ingest", tmp_path / "s.tif", "--output", out, "--overwrite")
    assert rc == 1 and "0/mine.txt" in _one_error(err)
    assert snapshot(tmp_path) == before


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


# --------------------------------------------------------------------------- the cluster answers first


@pytest.mark.parametrize("existing", [False, True])
def test_an_unreachable_cluster_leaves_nothing_behind(tmp_path, capsys, existing):
    import dask

    _array(tmp_path / "in.zarr")
    if existing:  # an earlier output that --overwrite would replace: still there after the refusal
        convpipe.load(_spec(tmp_path, "in.zarr", "out.zarr")).run()
    spec = _spec(tmp_path, "in.zarr", "out.zarr", execution={"cluster": "tcp://127.0.0.1:1"})
    before = snapshot(tmp_path)
    with dask.config.set({"convpipe.connect-timeout": "1s"}):
        rc, stdout, err = _cli(capsys, "run", spec, "--overwrite")
    assert rc == 1 and "done:" not in stdout
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in _one_error(err)
    assert snapshot(tmp_path) == before
    assert (tmp_path / "out.zarr").exists() == existing


# --------------------------------------------------------------------------- messages


def _slow_spec(tmp_path: Path, cluster: str = "threads") -> Path:
    a = np.random.default_rng(5).random((4, 256, 256)).astype("float32")  # 64 tiles of a few 10 ms each
    zarr.create_array(str(tmp_path / "in.zarr"), shape=a.shape, chunks=(1, 64, 64), dtype="float32")[...] = a
    return _spec(tmp_path, "in.zarr", "out.zarr", steps=[{"median": {"size": 9}}],
                 execution={"cluster": cluster, "tile": {"z": 1, "y": 64, "x": 64}})


@pytest.mark.parametrize("cluster", ["threads", "processes", pytest.param("local:2", marks=pytest.mark.slow)])
def test_ctrl_c_says_how_many_tiles_are_written_and_resume_finishes(tmp_path, cluster):
    spec = _slow_spec(tmp_path, cluster)
    out = tmp_path / "out.zarr"
    # its own process group, as a terminal's foreground job: Ctrl-C reaches every process in it
    proc = subprocess.Popen([sys.executable, "-m", "convpipe", "run", str(spec)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(Manifest(str(out)).done()) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be interrupted")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    m = re.search(r"interrupted: (\d+) of 64 tiles of (\S+) are written; `convpipe run (\S+) --resume` "
                  r"finishes it", err)
    assert m, err
    assert int(m.group(1)) >= 4 and m.group(2) == str(out)
    assert zarr.open_array(str(out), mode="r").attrs["convpipe"]["complete"] is False
    done = len(Manifest(str(out)).done())
    r = subprocess.run([sys.executable, "-m", "convpipe", "run", str(spec), "--resume", "--cluster", "threads"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"({done} resumed)" in r.stdout
    a = zarr.open_array(str(tmp_path / "in.zarr"), mode="r")[...]
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...],
                                  ndi.median_filter(a, size=(1, 9, 9), mode="reflect"))


def test_throughput_counts_only_the_tiles_this_run_computed(tmp_path, capsys):
    _array(tmp_path / "in.zarr")
    spec = _spec(tmp_path, "in.zarr", "out.zarr")
    full = convpipe.load(spec).run()
    assert full.computed_voxels == full.voxels == int(np.prod(SHAPE))
    _interrupt(tmp_path / "out.zarr", keep=12)
    rc, out, err = _cli(capsys, "run", spec, "--resume")
    assert rc == 0, err
    line = out.splitlines()[-1]
    m = re.search(r" ([\d.]+) s, ([\d.]+) Mvoxel/s, .* \(12 resumed\)", line)
    assert m, line
    elapsed, mvps = float(m.group(1)), float(m.group(2))
    assert mvps < 1.2 * (np.prod(SHAPE) * 6 / 18) / max(elapsed, 1e-9) / 1e6 + 0.05, line  # not all 18 tiles' worth
    # the same through the API, exactly: 18 tiles of 2 x 16 x 16 along z, y (y: 16, 16, 8), x; 12 resumed
    kept = _interrupt(tmp_path / "out.zarr", keep=12)
    res = convpipe.load(spec).run(resume=True)
    grid_y = [16, 16, 8]
    skipped = sum(2 * grid_y[int(k.split(".")[2])] * 16 for k in kept)
    assert res.skipped_tiles == 12 and res.computed_voxels == res.voxels - skipped
    assert res.voxels_per_second == pytest.approx(res.computed_voxels / res.elapsed)


def test_out_of_memory_names_the_step_the_window_and_what_to_do(tmp_path, capsys, monkeypatch):
    from convpipe import engines

    def no_memory(*args, **kwargs):
        raise MemoryError()  # as scipy's rank filter does: no message at all

    monkeypatch.setattr(engines, "rank_filter", no_memory)
    _array(tmp_path / "in.zarr")
    spec = _spec(tmp_path, "in.zarr", "out.zarr", steps=[{"gaussian": {"sigma": 1}},
                                                        {"median": {"size": {"z": 3, "y": 21, "x": 21}}}])
    rc, _, err = _cli(capsys, "run", spec)
    assert rc == 2
    line = _one_error(err)
    assert "out of memory in steps[1].median (line " in line, line
    assert "window of z: 3, y: 21, x: 21 (1,323 voxels per output voxel)" in line
    assert "execution.tile" in line and "--resume" in line and "per task" in line


def test_out_of_memory_for_real_under_a_memory_limit(tmp_path):
    """median with a 7x101x101 window: scipy's rank filter raises a bare MemoryError under an 8 GiB address limit."""
    import resource

    _array(tmp_path / "in.zarr")
    spec = _spec(tmp_path, "in.zarr", "out.zarr", steps=[{"median": {"size": {"z": 7, "y": 101, "x": 101}}}])

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    r = subprocess.run([sys.executable, "-m", "convpipe", "run", str(spec)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, preexec_fn=limit)
    if r.returncode == 0:
        pytest.skip("this scipy filtered the window within the limit")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = _one_error(r.stderr)
    assert "out of memory in steps[0].median" in line and "71,407 voxels per output voxel" in line, line


_WARNING_STEPS = {
    "scale-inf": [{"scale": {"factor": float("inf")}}],
    "log-sqrt": [{"scale": {"factor": 0.0}}, {"log1p": {}}, {"scale": {"factor": -1.0}}, {"sqrt": {}}],
    "zscore-constant": [{"zscore": {}}],
    "rescale-constant": [{"rescale": {}}, {"gaussian": {"sigma": 1}}],
}


@pytest.mark.parametrize("cluster,steps", [("threads", k) for k in _WARNING_STEPS]
                         + [("processes", "scale-inf"), ("processes", "log-sqrt")])
def test_no_raw_numpy_warning_reaches_the_terminal(tmp_path, capfd, cluster, steps):
    steps = _WARNING_STEPS[steps]
    a = np.zeros(SHAPE, np.float32)
    a[0, 0, :4] = [np.nan, np.inf, -np.inf, 0]
    _array(tmp_path / "in.zarr", a)
    spec = _spec(tmp_path, "in.zarr", "out.zarr", steps=steps, execution={"cluster": cluster})
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # threads: a warning in any thread lands here
        warnings.simplefilter("always")
        rc = main(["run", str(spec)])
    err = capfd.readouterr().err  # processes: what the workers print on the terminal
    assert rc in (0, 2), err
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert "Warning" not in err and "encountered" not in err, err


def test_verify_on_a_foreign_array_says_it_is_not_a_convpipe_output(tmp_path, capsys):
    _array(tmp_path / "foreign.zarr")
    rc, _, err = _cli(capsys, "verify", tmp_path / "foreign.zarr")
    assert rc == 1 and "is not a convpipe output" in _one_error(err)
    _ome(tmp_path / "img.zarr")
    zarr.open_group(str(tmp_path / "plain-group.zarr"), mode="w")
    rc, _, err = _cli(capsys, "verify", tmp_path / "plain-group.zarr")
    assert rc == 1 and "is not a convpipe output" in _one_error(err)


@pytest.mark.parametrize("compression", [pytest.param(None, marks=pytest.mark.slow), "zlib"])
def test_a_truncated_tiff_gives_one_line_and_no_tifffile_chatter(tmp_path, compression):
    tifffile = pytest.importorskip("tifffile")
    kw = {"compression": compression, "tile": (32, 32)} if compression else {}
    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(0).random((8, 64, 64)).astype("float32"),
                     photometric="minisblack", **kw)
    raw = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: len(raw) // 2])
    # a process of its own: pytest would catch tifffile's log records before they reach the terminal
    r = subprocess.run([sys.executable, "-m", "convpipe", "ingest", str(tmp_path / "t.tif"), "--output",
                        str(tmp_path / "t.zarr")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [_one_error(r.stderr)], r.stderr  # the error line, nothing before
    assert "truncated" in r.stderr


# --------------------------------------------------------------------------- the same on S3 (moto's server)


BUCKET = "convpipe-safety"


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on loopback with one bucket (skipped where moto or s3fs is not installed)."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("s3fs", reason="s3fs is not installed")
    boto3 = pytest.importorskip("boto3", reason="boto3 is not installed")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = "http://127.0.0.1:%d" % port
    boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        server.stop()


def test_s3_aliases_overwrite_and_data_digest(s3_endpoint):
    import s3fs

    endpoint = s3_endpoint
    so = {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint}}
    fs = s3fs.S3FileSystem(key="test", secret="test", client_kwargs={"endpoint_url": endpoint})
    inp, out = f"s3://{BUCKET}/safety/in.zarr", f"s3://{BUCKET}/safety/out.zarr"
    data = _data(8)
    z = zarr.create_array(store=inp, shape=data.shape, chunks=CHUNKS, dtype=data.dtype, compressors=None,
                          storage_options=so)
    z[...] = data

    def state():
        fs.invalidate_cache()
        return {k: fs.info(k)["ETag"] for k in fs.find(f"{BUCKET}/safety")}

    def spec(url):
        return {"convpipe": 1, "input": {"url": inp, "storage_options": so},
                "output": {"url": url, "storage_options": so, "overwrite": True}, "steps": STEPS,
                "execution": {"tile": dict(zip("zyx", CHUNKS))}}

    before = state()
    for alias in (inp + "/", f"s3a://{BUCKET}/safety/in.zarr", f"s3://{BUCKET}//safety/in.zarr", inp + "/c",
                  f"s3://{BUCKET}/safety"):
        with pytest.raises(InputError, match="the input"):
            convpipe.load(spec(alias)).run()
        assert state() == before, alias
    convpipe.load(spec(out)).run()
    convpipe.load(spec(out)).run()  # only Zarr data there: replaced
    fs.pipe(f"{BUCKET}/safety/out.zarr/c/0/README", b"mine")
    with pytest.raises(OutputExistsError, match="c/0/README"):
        convpipe.load(spec(out)).run()
    assert fs.cat(f"{BUCKET}/safety/out.zarr/c/0/README") == b"mine"
    fs.rm(f"{BUCKET}/safety/out.zarr/c/0/README")
    # a resume after the input's values changed (same sizes: the ETags tell) is refused
    convpipe.load(spec(out)).run()
    node = zarr.open_array(store=out, mode="r+", storage_options=so)
    node.attrs["convpipe"] = dict(node.attrs["convpipe"], complete=False)
    d0 = data_digest(z, inp, so)
    assert d0["versions"] and d0["objects"] == 18
    z[0:2, 0:16, 0:16] = data[0:2, 0:16, 0:16][::-1]
    d1 = data_digest(z, inp, so)
    assert d1["bytes"] == d0["bytes"] and d1["digest"] != d0["digest"]
    with pytest.raises(InputError, match="input's data changed"):
        convpipe.load(spec(out)).run(resume=True, overwrite=False)
    fs.rm(f"{BUCKET}/safety", recursive=True)


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
