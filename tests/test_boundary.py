"""The service's boundary (issue 13, items 2, 9, 10, 11): nothing a spec names is read before it is checked
against the roots, and again when the job opens it; outputs lie strictly inside a root; the token is exact.

Every path field a spec has is tried (input, output, each table op's table, each kernel / template / kernels[i]
file, a profile file), outside the roots both existing and missing: each is refused with 403 naming the field,
and the two answers are the same (no existence probe). Parsing is shown to open no file but the spec.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from harness import same_data

from convpipe.errors import InputError, SpecError
from convpipe.roots import ROOTS_ENV, Roots, guard
from convpipe.service.policy import Forbidden, prepare_submission, token_ok
from convpipe.spec import load_spec_text, parse_spec_text

SECRET = "TOPSECRET-3141592653"


def _input(path: Path) -> Path:
    a = zarr.create_array(str(path), shape=(16, 16), chunks=(8, 8), dtype="float32")
    a[:] = np.random.default_rng(0).random((16, 16)).astype("float32")
    return path


@pytest.fixture
def place(tmp_path):
    """A root with an input and a valid kernel; an outside folder with a secret kernel, template and profile."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    _input(root / "in.zarr")
    np.save(root / "k.npy", np.full((3, 3), 1 / 9))
    np.save(outside / "secret.npy", np.full((3, 3), 0.5))      # sums to 4.5: stochastic would say so
    (outside / "profile.yaml").write_text(f"kind: slurm\nqueue: {SECRET}\ncores: [{SECRET}]\n")
    return root, outside


def spec(steps, *, inp="in.zarr", out="o.zarr", execution=None) -> str:
    d = {"convpipe": 1, "input": {"url": inp}, "output": {"url": out}, "steps": steps}
    if execution:
        d["execution"] = execution
    return yaml.safe_dump(d, sort_keys=False)


# every field of a spec that names a file: (field path in the error, steps using location L)
FIELDS = {
    "steps[0].correlate.kernel": lambda L: [{"correlate": {"kernel": L}}],
    "steps[0].convolve.kernel": lambda L: [{"convolve": {"kernel": L}}],
    "steps[0].stochastic.kernel": lambda L: [{"stochastic": {"kernel": L}}],
    "steps[0].filter_bank.kernels[1]": lambda L: [{"filter_bank": {"kernels": [[[1.0]], L]}}],
    "steps[0].match_template.template": lambda L: [{"match_template": {"template": L}}],
    "steps[1].match_template.table": lambda L: [{"abs": {}}, {"match_template": {"template": [[1, 2], [3, 4]],
                                                                                 "table": L}}],
    "steps[0].peaks.table": lambda L: [{"peaks": {"radius": 1, "table": L}}],
    "steps[0].blobs.table": lambda L: [{"blobs": {"max_sigma": 2, "table": L}}],
    "steps[0].stats.table": lambda L: [{"stats": {"table": L}}],
}


def _outside_value(field: str, outside: Path, exists: bool) -> str:
    if field.endswith("table"):
        return str(outside / ("t.parquet" if exists else "missing/t.parquet"))
    return str(outside / ("secret.npy" if exists else "missing.npy"))


@pytest.mark.parametrize("field", list(FIELDS))
def test_every_path_field_outside_the_roots_is_403_without_reading_it(place, field):
    root, outside = place
    roots = Roots([root])
    answers = []
    for exists in (True, False):
        text = spec(FIELDS[field](_outside_value(field, outside, exists)))
        with pytest.raises(Forbidden) as e:
            prepare_submission(text, roots)
        assert field in str(e.value) and "outside" in str(e.value)
        answers.append(str(e.value).replace("secret.npy", "X").replace("missing.npy", "X")
                       .replace("missing/t.parquet", "X").replace("t.parquet", "X"))
    assert answers[0] == answers[1]  # whether the file exists is never told


@pytest.mark.parametrize("field", ["input.url", "output.url"])
def test_input_and_output_outside_the_roots(place, field):
    root, outside = place
    roots = Roots([root])
    for where in (outside / "secret.zarr", outside / "missing.zarr"):
        text = spec([{"abs": {}}], **({"inp": str(where)} if field == "input.url" else {"out": str(where)}))
        with pytest.raises(Forbidden, match=field.replace(".", r"\.")):
            prepare_submission(text, roots)


@pytest.mark.parametrize("how", ["path", "relative", "name"])
def test_a_profile_is_never_read_nor_echoed(place, how, monkeypatch):
    root, outside = place
    roots = Roots([root])
    monkeypatch.setenv("CONVPIPE_PROFILES", str(outside))
    cluster = {"path": f"profile:{outside / 'profile.yaml'}", "relative": "profile:../outside/profile.yaml",
               "name": "profile:profile"}[how]
    text = spec([{"abs": {}}], execution={"cluster": cluster})
    if how == "name":
        # a bare name is the operator's business (its folders); the service drops the spec's cluster unread
        sub = prepare_submission(text, roots)
        assert "cluster" not in yaml.safe_load(sub.spec_text).get("execution", {})
        assert SECRET not in sub.spec_text
        return
    with pytest.raises(Forbidden) as e:
        prepare_submission(text, roots)
    assert "execution.cluster" in str(e.value) and SECRET not in str(e.value)


def test_a_profile_inside_the_roots_is_dropped_unread(place):
    root, _ = place
    (root / "p.yaml").write_text(f"kind: bogus\nx: {SECRET}\n")  # invalid: reading it would be a 422 echoing it
    sub = prepare_submission(spec([{"abs": {}}], execution={"cluster": f"profile:{root / 'p.yaml'}"}), Roots([root]))
    assert SECRET not in sub.spec_text and "cluster" not in yaml.safe_load(sub.spec_text)["execution"]


def test_kernels_inside_the_roots_are_bound_and_their_errors_are_422(place):
    root, _ = place
    roots = Roots([root])
    sub = prepare_submission(spec([{"correlate": {"kernel": "k.npy", "normalize": "sum"}}]), roots)
    assert sub.locations["steps[0].correlate.kernel"] == str(root / "k.npy")
    assert yaml.safe_load(sub.spec_text)["steps"][0]["correlate"]["kernel"] == str(root / "k.npy")
    with pytest.raises(SpecError) as e:
        prepare_submission(spec([{"correlate": {"kernel": "nope.npy"}}]), roots)
    assert e.value.path == "steps[0].correlate.kernel" and "not found" in e.value.message
    np.save(root / "zero.npy", np.array([[1.0, -1.0]]))
    text = spec([{"correlate": {"kernel": "zero.npy", "normalize": "sum"}}])
    with pytest.raises(SpecError) as e:
        prepare_submission(text, roots)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "normalize" in t)
    assert "sums to 0" in e.value.message and e.value.line == line


@pytest.mark.parametrize("kind", ["output", "table"])
def test_an_output_is_strictly_inside_a_root(place, kind):
    root, _ = place
    roots = Roots([root])
    for target in (str(root), f"file://{root}", str(root) + "/", str(root / "sub" / "..")):
        if kind == "output":
            text = spec([{"abs": {}}], out=target)
        else:
            text = spec([{"peaks": {"radius": 1, "table": target}}])
        with pytest.raises(Forbidden, match="strictly inside a root"):
            prepare_submission(text, roots)
    assert (root / "in.zarr").exists()


def test_parsing_opens_no_file_but_the_spec(tmp_path):
    """An audit hook records every file opened while a spec naming kernels, a template and a profile is parsed:
    parse_spec opens only the spec; load_spec (validate) then reads exactly the named files."""
    np.save(tmp_path / "a.npy", np.ones((3, 3)) / 9)
    np.save(tmp_path / "b.npy", np.ones((3, 3)))
    np.save(tmp_path / "t.npy", np.arange(9.0).reshape(3, 3))
    (tmp_path / "p.yaml").write_text("kind: remote\naddress: tcp://127.0.0.1:8786\n")
    (tmp_path / "s.yaml").write_text(spec([
        {"correlate": {"kernel": "a.npy", "normalize": "sum"}}, {"stochastic": {"kernel": "a.npy"}},
        {"filter_bank": {"kernels": ["b.npy", [[1.0]]]}}, {"match_template": {"template": "t.npy"}},
    ], execution={"cluster": f"profile:{tmp_path / 'p.yaml'}"}).replace("convpipe: 1", "convpipe: 1\nname: audit"))
    script = textwrap.dedent(f"""
        import sys, json
        from convpipe.spec import parse_spec, load_spec
        from convpipe.ops import registry
        registry.names()
        parse_spec({str(tmp_path / 's.yaml')!r})  # warm up imports
        opened, on = [], [False]
        def hook(event, args):
            if on[0] and event == "open" and isinstance(args[0], str):
                opened.append(args[0])
        sys.addaudithook(hook)
        on[0] = True
        parse_spec({str(tmp_path / 's.yaml')!r})
        parsed = list(opened); opened.clear()
        load_spec({str(tmp_path / 's.yaml')!r})
        on[0] = False
        print(json.dumps([parsed, opened]))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    parsed, loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert [os.path.basename(p) for p in parsed] == ["s.yaml"]
    names = {os.path.basename(p) for p in loaded}
    assert {"a.npy", "b.npy", "t.npy", "p.yaml"} <= names


def test_locations_lists_every_named_location_with_its_line(tmp_path):
    text = textwrap.dedent("""\
        convpipe: 1
        input: data/in.zarr
        output: {url: out/o.zarr}
        steps:
          - correlate: {kernel: k/a.npy}
          - filter_bank: {kernels: [[[1]], b.npy]}
          - match_template: {template: t.npy, table: tabs/m.parquet}
          - peaks: {radius: 1, table: s3://bucket/p.parquet}
        execution: {cluster: "profile:conf/p.yaml"}
        """)
    s = parse_spec_text(text, base_dir=tmp_path)
    got = [(x.field, x.kind, x.writes, x.line) for x in s.locations()]
    assert got == [
        ("input.url", "input", False, 2), ("output.url", "output", True, 3),
        ("steps[0].correlate.kernel", "kernel", False, 5), ("steps[1].filter_bank.kernels[1]", "kernel", False, 6),
        ("steps[2].match_template.table", "table", True, 7), ("steps[2].match_template.template", "template", False, 7),
        ("steps[3].peaks.table", "table", True, 8), ("execution.cluster", "profile", False, 9)]
    by = {x.field: x for x in s.locations()}
    assert by["input.url"].resolved == str((tmp_path / "data" / "in.zarr").resolve())
    assert by["steps[3].peaks.table"].resolved == "s3://bucket/p.parquet"
    assert by["execution.cluster"].resolved == os.path.abspath("conf/p.yaml")


# --------------------------------------------------------------------------- moment of use (item 10)


def test_guard_does_nothing_outside_a_service_job(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    guard(str(tmp_path / "anything"), what="x", write=True)


def test_each_io_entry_point_checks_the_roots_when_it_opens(place, monkeypatch):
    """With the roots in the environment (as the runner sets them), the input open, output create (plain and
    OME), resume reopen, table sink and kernel load each refuse a location that now lies outside."""
    from convpipe.io import create_output, open_input, output_state
    from convpipe.kernels import kernel_from_source
    from convpipe.outputs import create_ome_output, open_sink
    from convpipe.tables import TableSink

    root, outside = place
    _input(outside / "secret.zarr")
    monkeypatch.setenv(ROOTS_ENV, json.dumps([str(root)]))
    link = root / "link"
    link.symlink_to(outside)  # a folder swapped for a symlink after the submission was checked
    out = dict(shape=(4, 4), chunks=(4, 4), dtype="float32", zarr_format=3, attrs={}, overwrite=True)
    calls = {
        "input": lambda: open_input(str(link / "secret.zarr")),
        "output state": lambda: output_state(str(link / "o.zarr")),
        "output": lambda: create_output(str(link / "o.zarr"), **out),
        "ome output": lambda: create_ome_output(str(link / "o.zarr"), axes="yx", **out),
        "resume": lambda: open_sink(str(link / "secret.zarr")),
        "table": lambda: TableSink(str(link / "t.parquet")),
        "kernel": lambda: kernel_from_source(str(link / "secret.npy")),
        "output is a root": lambda: create_output(str(root), **out),
    }
    for what, call in calls.items():
        with pytest.raises((InputError, ValueError), match="outside the service's roots|root itself"):
            call()
    assert not (outside / "o.zarr").exists() and not (outside / "t.parquet.parts").exists()
    assert (root / "in.zarr").exists() and np.asarray(zarr.open_array(str(outside / "secret.zarr"))).any()
    open_input(str(root / "in.zarr"))  # inside: fine
    assert kernel_from_source(str(root / "k.npy")).shape == (3, 3)


def test_a_job_refuses_a_folder_swapped_after_its_check(place):
    """The job process (as the runner starts it: roots in the environment) re-checks when it opens: a folder
    re-pointed outside between the service's check and the run ends the job with exit 1 and nothing written."""
    root, outside = place
    (root / "dest").mkdir()
    roots = Roots([root])
    sub = prepare_submission(spec([{"gaussian": {"sigma": 1}}], out="dest/o.zarr"), roots)
    assert sub.locations["output.url"] == str(root / "dest" / "o.zarr")
    (root / "job.yaml").write_text(sub.spec_text)
    (root / "dest").rename(root / "was-dest")
    (root / "dest").symlink_to(outside)  # the swap
    env = dict(os.environ, **roots.env())
    r = subprocess.run([sys.executable, "-m", "convpipe", "run", str(root / "job.yaml")], capture_output=True,
                       text=True, env=env, check=False, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "outside the service's roots" in r.stderr and "Traceback" not in r.stderr
    assert not (outside / "o.zarr").exists()


def test_the_runner_hands_its_roots_to_every_job(tmp_path, monkeypatch):
    from convpipe.service import runner as runner_mod
    from convpipe.service.store import JobStore

    seen = {}

    class Stop(Exception):
        pass

    def fake_popen(cmd, **kw):
        seen.update(kw["env"])
        raise Stop

    store = JobStore(tmp_path / "j.sqlite")
    job = store.add("x", "convpipe: 1", [])
    roots = Roots([tmp_path])
    r = runner_mod.Runner(store, tmp_path / "jobs", env=roots.env())
    monkeypatch.setattr(runner_mod.subprocess, "Popen", fake_popen)
    with pytest.raises(Stop):
        r._spawn(store.claim_next())
    assert json.loads(seen[ROOTS_ENV]) == [str(tmp_path)] and job.id
    store.close()


# --------------------------------------------------------------------------- the token (item 11)


@pytest.mark.parametrize("header, ok", [
    ("Bearer T0KEN-abcdefghijkl", True), ("bearer T0KEN-abcdefghijkl", True), ("BEARER T0KEN-abcdefghijkl", True),
    ("Bearer T0KEN-abcdefghijkl ", False), ("Bearer T0KEN-abcdefghijkl\t", False),
    ("Bearer T0KEN-abcdefghijkl\x0b", False), ("Bearer T0KEN-abcdefghijkl\n", False),
    ("Bearer  T0KEN-abcdefghijkl", False), (" Bearer T0KEN-abcdefghijkl", False),
    ("Bearer\tT0KEN-abcdefghijkl", False), ("Bearer T0KEN-abcdefghijk", False), ("Bearer T0KEN-abcdefghijklm", False),
    ("BearerT0KEN-abcdefghijkl", False), ("Basic T0KEN-abcdefghijkl", False), ("T0KEN-abcdefghijkl", False),
    ("", False), (None, False),
])
def test_the_token_compares_exactly(header, ok):
    assert token_ok(header, b"T0KEN-abcdefghijkl") is ok
    if header is not None:
        assert token_ok(header.encode("latin-1"), b"T0KEN-abcdefghijkl") is ok


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from convpipe.service.testing import running_service

    base = tmp_path_factory.mktemp("b")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    _input(root / "in.zarr")
    np.save(outside / "secret.npy", np.full((3, 3), 0.5))
    (outside / "profile.yaml").write_text(f"kind: slurm\nqueue: {SECRET}\n")
    with running_service(base / "svc", [root]) as s:
        yield s, root, outside


def test_http_answers_tell_nothing_about_outside_files(served):
    s, root, outside = served
    bodies = []
    with s.http() as h:
        for k in ("secret.npy", "missing.npy"):
            for steps in ([{"stochastic": {"kernel": str(outside / k)}}], [{"correlate": {"kernel": str(outside / k)}}]):
                r = h.post("/jobs", content=spec(steps))
                assert r.status_code == 403, r.text
                assert "4.5" not in r.text and "sum" not in r.text and "not found" not in r.text
                bodies.append(r.text.replace(k, "K"))
        r = h.post("/jobs", content=spec([{"abs": {}}], execution={"cluster": f"profile:{outside / 'profile.yaml'}"}))
        assert r.status_code == 403 and SECRET not in r.text
        r = h.post("/jobs", content=spec([{"abs": {}}], out=str(root)))
        assert r.status_code == 403 and "strictly inside" in r.text
        # a token with a trailing character more is another token
        assert h.get("/jobs", headers={"Authorization": f"Bearer  {s.token}"}).status_code == 401
    assert bodies[0] == bodies[2] and bodies[1] == bodies[3]
    assert (root / "in.zarr").exists()


def test_serve_refuses_a_cluster_address_without_a_port(tmp_path, capsys):
    from convpipe.cli.service import main

    token = tmp_path / "token.txt"
    token.write_text("x" * 32)
    rc = main(["serve", "--port", "0", "--token-file", str(token), "--db", str(tmp_path / "j.sqlite"),
               "--root", str(tmp_path), "--cluster", "tcp://scheduler"])
    assert rc == 1 and "has no port" in capsys.readouterr().err



from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.text(min_size=1, max_size=8), _values, min_size=1, max_size=5),
       st.lists(st.dictionaries(st.text(min_size=1, max_size=8), _values, min_size=1, max_size=1), max_size=3))
def test_the_stored_spec_reads_back_as_the_data_it_holds(top, steps):
    """What the service stores for the job is the checked spec, value for value (nan, inf, -0.0, unicode,
    control characters, huge integers), in the loader the job uses."""
    from convpipe.service.policy import dump_spec
    from convpipe.spec import parse_yaml

    raw = dict(top)
    raw["steps"] = steps
    data, _ = parse_yaml(dump_spec(raw))
    assert same_data(data, raw), (raw, data)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.text(min_size=1, max_size=8), _values, min_size=1, max_size=5),
       st.lists(st.dictionaries(st.text(min_size=1, max_size=8), _values, min_size=1, max_size=1), max_size=3),
       st.data())
def test_the_stored_spec_keeps_the_lines_it_was_given(top, steps, data):
    """With the spec's line map (dump_spec keeps the user's lines), the same data reads back, whatever the
    lines: increasing, shared, missing or behind the text written so far."""
    from convpipe.service.policy import dump_spec
    from convpipe.spec import parse_yaml

    raw = dict(top)
    raw["steps"] = steps
    paths = []

    def walk(v, path):
        paths.append(path)
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, path + (k,))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, path + (i,))

    walk(raw, ())
    lines = {p: data.draw(st.integers(1, 60)) for p in paths if data.draw(st.booleans())}
    back, _ = parse_yaml(dump_spec(raw, lines))
    assert same_data(back, raw), (raw, lines, back)


@pytest.mark.timeout(120)
def test_a_large_inline_kernel_survives_submission_and_the_recheck(place):
    root, _ = place
    k = np.round(np.random.default_rng(1).random((250, 250)), 3)
    text = ("convpipe: 1\ninput: in.zarr\noutput: o.zarr\nsteps:\n  - correlate: {kernel: "
            + json.dumps(k.tolist()).replace(" ", "") + ", normalize: sum}\n")
    sub = prepare_submission(text, Roots([root]))
    assert len(sub.spec_text) <= len(text) + 200
    again = prepare_submission(sub.spec_text, Roots([root]))  # the check when the job starts
    assert again.spec_text == sub.spec_text
    assert np.array_equal(np.asarray(load_spec_text(sub.spec_text).steps[0].params.kernel), k)
