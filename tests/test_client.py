"""The service client (convpipe.client) and the client commands, against a real service subprocess."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from convpipe.client import ServiceClient, ServiceError
from convpipe.errors import InputError, SpecError, SpecErrors
from convpipe.service.cli import main as service_main
from convpipe.service.testing import RunningService, running_service


def spec(inp: str, out: str, steps: list | None = None) -> str:
    return yaml.safe_dump({"convpipe": 1, "name": "client-test", "input": {"url": inp}, "output": {"url": out},
                           "steps": steps or [{"uniform": {"size": 3}}]})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("croot")
    a = zarr.create_array(str(root / "in.zarr"), shape=(40, 48), chunks=(20, 24), dtype="float32")
    a[:] = np.arange(40 * 48, dtype="float32").reshape(40, 48)
    return root


@pytest.fixture(scope="module")
def svc(tmp_path_factory, root) -> RunningService:
    with running_service(tmp_path_factory.mktemp("csvc"), [root]) as s:
        yield s


@pytest.fixture()
def env(svc, monkeypatch):
    monkeypatch.setenv("CONVPIPE_SERVER", svc.url)
    monkeypatch.setenv("CONVPIPE_TOKEN", svc.token)


def test_client_round_trip(svc, root):
    seen = []
    with ServiceClient(svc.url, svc.token) as c:
        job = c.submit(spec("in.zarr", "rt.zarr"))
        assert job["state"] == "queued" and len(job["id"]) == 12
        final = c.wait(job["id"], poll=0.05, timeout=120, on_update=lambda j: seen.append(j["state"]))
        assert final["state"] == "succeeded" and final["progress"] == 1.0
        assert seen[-1] == "succeeded" and set(seen) <= {"queued", "running", "succeeded"}
        assert c.jobs()[0]["id"] == job["id"]
        assert [j["id"] for j in c.jobs(state="succeeded", limit=1)] == [job["id"]]
        text, end = c.log(job["id"])
        assert "progress:" in text and end == len(text.encode())
        assert c.log(job["id"], offset=end) == ("", end)  # follow a log by offsets
    assert zarr.open_array(str(root / "rt.zarr"), mode="r").attrs["convpipe"]["complete"] is True


def test_client_errors_are_typed(svc, env):
    with ServiceClient() as c:  # server and token from the environment
        with pytest.raises(SpecErrors) as e:
            c.submit("convpipe: 1\ninput: {url: in.zarr}\nsteps:\n  - gausian: {}\n  - sobel: {axes: q}\n")
        assert [x.line for x in e.value.errors] == [4, 5] and "did you mean 'gaussian'" in e.value.errors[0].message
        with pytest.raises(SpecError):
            c.submit("convpipe: 2\ninput: {url: in.zarr}\nsteps: [abs]\n")
        with pytest.raises(InputError, match="outside the service's roots"):
            c.submit(spec("in.zarr", "/etc/out.zarr"))
        with pytest.raises(ServiceError, match="no job") as e:
            c.job("doesnotexist")
        assert e.value.status == 404
    with pytest.raises(ServiceError, match="refused the token") as e:
        ServiceClient(svc.url, "not-the-token-at-all").jobs()
    assert e.value.status == 401
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ServiceError, match="cannot reach the convpipe service"):
        ServiceClient(dead, "x" * 20).jobs()


def test_client_needs_a_token(monkeypatch):
    monkeypatch.delenv("CONVPIPE_TOKEN", raising=False)
    with pytest.raises(ServiceError, match="CONVPIPE_TOKEN"):
        ServiceClient("http://127.0.0.1:1")


def test_cli_commands(svc, root, env, tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(spec("in.zarr", "cli.zarr"))
    assert service_main(["submit", str(good), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and f"output: {root / 'cli.zarr'}" in out
    job_id = re.search(r"submitted job (\w+)", out).group(1)

    assert service_main(["status", job_id]) == 0
    out = capsys.readouterr().out
    assert "state:      succeeded" in out and "progress:   100%" in out
    assert service_main(["status", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == job_id
    assert service_main(["status", job_id, "--log"]) == 0
    assert "progress:" in capsys.readouterr().out
    assert service_main(["jobs"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("ID") and job_id in out
    assert service_main(["jobs", "--json", "--limit", "1"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [job_id]
    assert service_main(["cancel", job_id]) == 1
    assert "already succeeded" in capsys.readouterr().err

    assert service_main(["submit", str(good), "--json"]) == 0
    queued = json.loads(capsys.readouterr().out)
    assert queued["state"] == "queued"

    bad = tmp_path / "bad.yaml"
    bad.write_text("convpipe: 1\ninput: {url: in.zarr}\nsteps:\n  - gausian: {}\n")
    assert service_main(["submit", str(bad)]) == 1
    assert "steps[0].gausian (line 4): unknown op" in capsys.readouterr().err
    failing = tmp_path / "failing.yaml"
    failing.write_text(spec("nothing-here.zarr", "f.zarr"))
    assert service_main(["submit", str(failing), "--wait"]) == 2  # the job failed: exit 2, like `run`
    err = capsys.readouterr().err
    assert "failed" in err and "nothing-here.zarr" in err and "Traceback" not in err
    assert service_main(["status", "nope"]) == 1
    assert "no job 'nope'" in capsys.readouterr().err
    assert service_main(["status", "../jobs\n"]) == 1  # odd ids are quoted into the URL, never break it
    assert "404" in capsys.readouterr().err


def test_commands_are_part_of_the_convpipe_cli(svc, env, capsys):
    from convpipe.cli import main

    assert main(["jobs", "--limit", "1"]) == 0
    assert main(["jobs", "--server", "http://127.0.0.1:1"]) == 1
    assert "cannot reach" in capsys.readouterr().err
