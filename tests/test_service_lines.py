"""Errors of jobs run by the service name the lines of the spec as the user wrote it.

The service (and the client, for relative paths) rewrites a submitted spec before the job runs it
(absolute locations, compact YAML: :func:`convpipe.service.policy.dump_spec`). Errors found only at run
time (a label count that does not fit output.dtype, ...) are located by the job in the text it reads, so
the rewrite keeps every key and item on its original line.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from harness import same_data

from convpipe.service.conflicts import pinned_input, pinned_output
from convpipe.service.policy import dump_spec
from convpipe.service.testing import RunningService, running_service
from convpipe.spec import parse_yaml

#: a spec as people write it: comments, block style, values on lines of their own, a kernel over 3 lines
WRITTEN = [
    "# labels of a thresholded image\nconvpipe: 1\nname: cells\n\ninput:\n  # the camera's file\n"
    "  url: in.zarr\noutput:\n  url: out.zarr\n  dtype: uint8\nsteps:\n  - gaussian: {sigma: 0.1}\n"
    "  - threshold:\n      value: 0.5\n\n  - label: {}\n",
    "convpipe: 1\ninput: in.zarr\nsteps:\n  - correlate:\n      kernel:\n        - [0.1, 0.2]\n\n"
    "        - [0.3, 0.4]\n      mode: constant\n      cval: .nan\n  - sobel:\n      axes: yx\n"
    "execution:\n  tile: {y: 16,\n         x: 16}\n",
    '{"convpipe": 1, "input": {"url": "in.zarr"},\n "steps": [{"abs": {}},\n   {"gaussian": {"sigma": 1}}]}\n',
    "convpipe: 1\nx: &a {sigma: 1}\ninput: in.zarr\nsteps:\n  - gaussian: *a\n  - gaussian: {<<: *a, truncate: 2}\n",
]



@pytest.mark.parametrize("text", WRITTEN, ids=["block", "kernel", "json", "aliases"])
def test_the_rewrite_keeps_every_path_on_its_line(text):
    """Same data, and every path whose line lies ahead of the text written so far on its original line."""
    raw, lines = parse_yaml(text)
    out = dump_spec(raw, lines)
    data, lines2 = parse_yaml(out)
    assert same_data(data, raw), out
    aliased = "*a" in text
    for path, line in lines.items():
        if path and path in lines2 and not aliased:
            assert lines2[path] == line, (path, line, lines2[path], out)
    if aliased:  # an alias' values have the anchor's lines: those behind stay where they fall
        assert lines2[("steps", 1, "gaussian")] == lines[("steps", 1, "gaussian")]
    assert dump_spec(raw) == dump_spec(raw, {})  # no lines: the one-line-per-key form as before


def test_the_pinned_input_and_output_read_values_over_several_lines():
    raw, lines = parse_yaml(WRITTEN[0])
    out = dump_spec(raw, lines)
    assert pinned_input(out) == "in.zarr" and pinned_output(out) == "out.zarr"
    assert pinned_input(dump_spec(raw)) == "in.zarr"
    raw, lines = parse_yaml(WRITTEN[2])  # JSON: one flow mapping
    assert dump_spec(raw, lines).startswith("{") and pinned_input(dump_spec(raw, lines)) == "in.zarr"


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lroot")
    x = (np.random.default_rng(0).random((128, 128)) > 0.7).astype(np.uint8)  # 2165 components
    zarr.create_array(str(root / "in.zarr"), data=x, chunks=(64, 64))
    return root


@pytest.fixture(scope="module")
def svc(tmp_path_factory, root) -> RunningService:
    with running_service(tmp_path_factory.mktemp("lsvc"), [root]) as s:
        yield s


def _final(http, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while (job := http.get(f"/jobs/{job_id}").json())["state"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


LABEL_ERROR = "steps[2].label (line 16): 2165 components"
DTYPE_LINE = "written as output.dtype uint8 (line 10)"


def test_a_jobs_run_time_error_names_the_lines_as_written(svc, root):
    """Submitted over HTTP as written (relative paths: the service pins them): the label refusal names the
    label step and its line, and output.dtype's line, of the text sent."""
    with svc.http() as h:
        r = h.post("/jobs", content=WRITTEN[0].replace("out.zarr", "http-out.zarr"))
        assert r.status_code == 201, r.text
        job = _final(h, r.json()["id"])
    assert job["state"] == "failed"
    assert LABEL_ERROR in job["error"] and DTYPE_LINE in job["error"], job["error"]
    assert not (root / "http-out.zarr").exists()


def test_the_client_keeps_the_files_lines_too(svc, root, monkeypatch, capsys):
    """``convpipe submit --wait`` of a file with relative paths (the client rewrites them, then the service):
    the job's error names the file's lines; exit 2 (a failed job, as a failed ``run``)."""
    from convpipe.cli.service import main as service_main

    monkeypatch.setenv("CONVPIPE_SERVER", svc.url)
    monkeypatch.setenv("CONVPIPE_TOKEN", svc.token)
    specs = root / "specs"
    specs.mkdir(exist_ok=True)
    path = specs / "cells.yaml"
    path.write_text(WRITTEN[0].replace("in.zarr", "../in.zarr").replace("out.zarr", "../client-out.zarr"))
    rc = service_main(["submit", str(path), "--wait"])
    err = capsys.readouterr().err
    assert rc == 2 and LABEL_ERROR in err and DTYPE_LINE in err, err
    assert not (root / "client-out.zarr").exists()


def test_a_distance_transform_without_background_is_refused_by_the_job_at_the_users_line(svc, root):
    """distance_transform of an input without background (one plane): the job fails with the InputError
    (before writing: no output left), naming the step at the line of the text sent."""
    x = np.ones((3, 16, 16), np.uint8)
    x[0, 0, 0] = x[2, 5, 5] = 0
    zarr.create_array(str(root / "fg.zarr"), data=x, chunks=(1, 8, 8), overwrite=True)
    text = ("# distances\nconvpipe: 1\n\ninput: fg.zarr\noutput:\n  url: fg-out.zarr\nsteps:\n\n"
            "  - distance_transform:\n      axes: yx\n")
    with svc.http() as h:
        r = h.post("/jobs", content=text)
        assert r.status_code == 201, r.text
        job = _final(h, r.json()["id"])
    assert job["state"] == "failed"
    assert "steps[0].distance_transform (line 9): the sub-array z=1 (over axes yx) holds no background" \
        in job["error"], job["error"]
    assert not (root / "fg-out.zarr").exists()
