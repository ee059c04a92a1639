"""SPEC.md, Safety: a run never writes where it reads, and ``overwrite`` replaces only Zarr data.

Every refusal is checked for its exit code (1) or exception (InputError), its one line, *and* that the bytes
of everything it could have touched are unchanged (a snapshot of the whole working folder). The resume side
of Safety is in test_safety_resume.py, the messages around a run in test_safety_messages.py.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import yaml
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convpipe
from convpipe.errors import InputError, OutputExistsError
from convpipe.io import data_digest
from convpipe.locations import locate, relation
from convpipe.replace import foreign_entry
from safety_helpers import CHUNKS, STEPS, _array, _cli, _data, _interrupt, _ome, _one_error, _spec, make_work, snapshot


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return make_work(tmp_path)


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
