"""The service client (convpipe.client) and the client commands, against a real service subprocess."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import convpipe
from convpipe.client import ServiceClient, ServiceError
from convpipe.errors import InputError, SpecError, SpecErrors
from convpipe.cli.service import main as service_main
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
    good = root / "good.yaml"  # submit resolves relative paths against the spec's folder (SPEC.md), as run does
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
    failing = root / "failing.yaml"
    failing.write_text(spec("nothing-here.zarr", "f.zarr"))
    assert service_main(["submit", str(failing), "--wait"]) == 2  # the job failed: exit 2, like `run`
    err = capsys.readouterr().err
    assert "failed" in err and "nothing-here.zarr" in err and "Traceback" not in err
    assert err.count("error:") == 1, err  # one error line, its message once (never "error: error: ...")
    assert service_main(["status", "nope"]) == 1
    assert "no job 'nope'" in capsys.readouterr().err
    assert service_main(["status", "../jobs\n"]) == 1  # odd ids are quoted into the URL, never break it
    assert "404" in capsys.readouterr().err


def test_commands_are_part_of_the_convpipe_cli(svc, env, capsys):
    from convpipe.cli import main

    assert main(["jobs", "--limit", "1"]) == 0
    assert main(["jobs", "--server", "http://127.0.0.1:1"]) == 1
    assert "cannot reach" in capsys.readouterr().err


# --------------------------------------------------------------------------- the client as the README says


def test_submit_resolves_paths_against_the_spec_folder(svc, root, env, tmp_path, monkeypatch, capsys):
    """Relative paths mean what `run` makes of them (the spec's folder), whatever the working directory, and
    reach the service as absolute paths; errors the service finds keep the lines of the file as written."""
    specs = root / "project" / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    np.save(specs / "k.npy", np.full((3, 3), 1 / 9, dtype=np.float32))
    path = specs / "rel.yaml"
    path.write_text("# a spec two folders below the data\nconvpipe: 1\nname: relative\n"
                    "input: ../../in.zarr\noutput: {url: ../rel-out.zarr}\nsteps:\n  - correlate: {kernel: k.npy}\n")
    monkeypatch.chdir(tmp_path)  # elsewhere: only the spec's folder may matter
    assert service_main(["submit", os.path.relpath(path, tmp_path), "--wait"]) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"output: {root / 'project' / 'rel-out.zarr'}" in out
    got = zarr.open_array(str(root / "project" / "rel-out.zarr"), mode="r")
    assert got.attrs["convpipe"]["complete"] is True
    ref = convpipe.load({"convpipe": 1, "input": str(root / "in.zarr"), "steps": [{"correlate": {
        "kernel": np.full((3, 3), 1 / 9).tolist()}}]}).apply(zarr.open_array(str(root / "in.zarr"))[...])
    np.testing.assert_allclose(got[...], ref.compute(), rtol=1e-6)

    # the service reads the kernel file (after its roots check): its error names the line in this file
    (specs / "k.npy").write_bytes(b"not npy")
    assert service_main(["submit", str(path)]) == 1
    err = capsys.readouterr().err
    assert "steps[0].correlate.kernel (line 7)" in err and "not a .npy array" in err, err
    # what the client sent is absolute: the server never resolved it against its own first root
    with ServiceClient() as c:
        from convpipe.client import prepare_spec

        sent = yaml.safe_load(prepare_spec(path.read_text(), specs).text)
        assert sent["input"]["url"] == str(root / "in.zarr") and sent["output"]["url"] == str(root / "project" / "rel-out.zarr")
        assert sent["steps"][0]["correlate"]["kernel"] == str(specs / "k.npy")
        assert c.submit_file(path.with_name("none.yaml"), text="convpipe: 1\ninput: ../../in.zarr\noutput: "
                             "../none.zarr\nsteps: [abs]\n")["outputs"] == [str(root / "project" / "none.zarr")]
    # a spec whose paths are absolute is sent as written (comments and lines intact)
    absolute = spec(str(root / "in.zarr"), str(root / "abs.zarr"))
    assert prepare_spec(absolute, tmp_path).text == absolute
    with pytest.raises(SpecError, match=r"steps\[0\].gausian \(line 5\)"):
        prepare_spec("# c\nconvpipe: 1\ninput: a.zarr\nsteps:\n  - gausian: {}\n", tmp_path)


def _slow_input(path: Path) -> Path:
    if not path.exists():
        a = zarr.create_array(str(path), shape=(24, 384, 384), chunks=(1, 384, 384), dtype="float32")
        a[:] = np.random.default_rng(3).random((24, 384, 384), dtype=np.float32)
    return path


def _wait(c: ServiceClient, job_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := c.job(job_id))["state"] not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_submit_overwrite_and_resume(svc, root, env, capsys):
    """--overwrite replaces an output as `run --overwrite` does; --resume finishes one a cancelled job left."""
    _slow_input(root / "slow.zarr")
    (root / "ow.yaml").write_text(spec("in.zarr", "ow.zarr"))
    assert service_main(["submit", str(root / "ow.yaml"), "--wait"]) == 0
    assert service_main(["submit", str(root / "ow.yaml"), "--wait"]) == 2  # it exists now
    assert "use --overwrite" in capsys.readouterr().err
    assert service_main(["submit", str(root / "ow.yaml"), "--overwrite", "--wait"]) == 0
    assert "succeeded" in capsys.readouterr().out

    steps = [{"median": {"size": 5}}]
    (root / "rs.yaml").write_text(spec("slow.zarr", "rs.zarr", steps))
    with ServiceClient() as c:
        job = c.submit_file(root / "rs.yaml")
        deadline = time.monotonic() + 120
        while c.job(job["id"])["progress"] == 0:  # cancel once some tiles are written
            assert time.monotonic() < deadline and c.job(job["id"])["state"] in ("queued", "running")
            time.sleep(0.02)
        assert c.cancel(job["id"])["state"] == "cancelled"
    assert zarr.open_array(str(root / "rs.zarr")).attrs["convpipe"]["complete"] is False
    assert service_main(["submit", str(root / "rs.yaml"), "--wait"]) == 2  # a plain run refuses it
    assert "--resume" in capsys.readouterr().err
    assert service_main(["submit", str(root / "rs.yaml"), "--resume", "--wait", "--json"]) == 0
    final = json.loads(capsys.readouterr().out)
    with ServiceClient() as c:
        log, _ = c.log(final["id"])
    assert "--resume" in log.splitlines()[0] and "already done" in log
    got = zarr.open_array(str(root / "rs.zarr"), mode="r")
    assert got.attrs["convpipe"]["complete"] is True
    ref = convpipe.load({"convpipe": 1, "input": str(root / "slow.zarr"), "steps": steps}).apply(
        zarr.open_array(str(root / "slow.zarr"))[...], axes="zyx").compute()
    np.testing.assert_array_equal(got[...], ref)


def test_status_prints_the_error_once(svc, root, env, capsys):
    (root / "broken.yaml").write_text(spec("no-such-input.zarr", "never.zarr"))
    with ServiceClient() as c:
        job = c.submit_file(root / "broken.yaml")
        final = c.wait(job["id"], poll=0.05, timeout=120)
    assert final["state"] == "failed" and not final["error"].lower().startswith("error")
    assert service_main(["status", job["id"]]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("error:"))
    assert line.split(None, 1)[1] == final["error"] and "no-such-input.zarr" in line
    assert service_main(["cancel", job["id"]]) == 1
    assert capsys.readouterr().err.count("error:") == 1


def test_jobs_are_listed_newest_first_by_submission_time(tmp_path):
    from convpipe.service.store import JobStore

    store = JobStore(tmp_path / "jobs.sqlite")
    a, b, c = (store.add(n, "spec", []) for n in "abc")
    # submission times, not insertion order, decide (a clock set back between two submissions, an import)
    for job, t in ((a, 3000.0), (b, 1000.0), (c, 2000.0)):
        store._db.execute("UPDATE jobs SET submitted = ? WHERE id = ?", (t, job.id))
    assert [j.id for j in store.list_jobs()] == [a.id, c.id, b.id]
    assert [j.id for j in store.list_jobs(limit=2)] == [a.id, c.id]
    d = store.add("d", "spec", [])
    store._db.execute("UPDATE jobs SET submitted = ? WHERE id = ?", (3000.0, d.id))
    assert [j.id for j in store.list_jobs()][:2] == [d.id, a.id]  # equal times: the later submission first
    store.close()


def test_api_lists_newest_first(svc, root):
    with ServiceClient(svc.url, svc.token) as c:
        ids = [c.submit(spec("in.zarr", f"order/o{i}.zarr"))["id"] for i in range(3)]
        listed = [j["id"] for j in c.jobs()]
        assert [i for i in listed if i in ids] == ids[::-1]
        subs = [j["submitted"] for j in c.jobs()]
        assert subs == sorted(subs, reverse=True)
        for i in ids:
            c.wait(i, poll=0.05, timeout=120)


@pytest.fixture(scope="module")
def busy(tmp_path_factory, root) -> RunningService:
    """A service that runs one job at a time: a job submitted behind a running one stays queued."""
    with running_service(tmp_path_factory.mktemp("busy"), [root], max_running=1) as s:
        yield s


def test_a_second_job_on_an_active_output_gets_409(busy, root):
    """While a job is queued or running, another writing the same place (by any name) or what it reads is 409."""
    _slow_input(root / "slow.zarr")
    (root / "aliases").mkdir(exist_ok=True)
    link = root / "aliases" / "link"
    if not link.exists():
        link.symlink_to(root, target_is_directory=True)
    with ServiceClient(busy.url, busy.token) as c:
        running = c.submit(spec("slow.zarr", "busy-a.zarr", [{"median": {"size": 9}}]))
        queued = c.submit(spec("in.zarr", "busy-b.zarr"))
        _wait(c, running["id"], ("running",))
        try:
            for target, other in ((running, "busy-a.zarr"), (queued, "busy-b.zarr")):
                for alias in (other, f"file://{root / other}", f"aliases/link/{other}", f"{other}/", f"x/../{other}"):
                    with pytest.raises(ServiceError, match=f"job {target['id']}") as e:
                        c.submit(spec("in.zarr", alias))
                    assert e.value.status == 409 and "writes it" in str(e.value) and "cancel" in str(e.value)
                with pytest.raises(ServiceError, match=f"job {target['id']}") as e:  # inside it
                    c.submit(spec("in.zarr", f"{other}/inner.zarr"))
                assert e.value.status == 409
            # a table written where a job writes, and an output over the input a job still has to read
            with pytest.raises(ServiceError, match=f"job {running['id']}"):
                c.submit(spec("in.zarr", "elsewhere.zarr", [{"peaks": {"radius": 2, "table": "busy-a.zarr"}}]))
            with pytest.raises(ServiceError, match=f"job {running['id']}.*reads it") as e:
                c.submit(spec("in.zarr", "slow.zarr"))
            assert e.value.status == 409
            # the 409's body names the job too
            r = busy.http().post("/jobs", content=spec("in.zarr", "busy-b.zarr"))
            assert r.status_code == 409 and r.json()["job"]["id"] == queued["id"]
            # racing submissions of one new output: exactly one gets in
            import concurrent.futures as cf

            def one(_: int) -> int:
                return busy.http().post("/jobs", content=spec("in.zarr", "race.zarr")).status_code

            with cf.ThreadPoolExecutor(6) as pool:
                codes = sorted(pool.map(one, range(6)))
            assert codes == [201] + [409] * 5
            assert c.submit(spec("in.zarr", "busy-c.zarr"))["state"] == "queued"  # elsewhere is fine
        finally:
            for j in c.jobs():
                if j["state"] in ("queued", "running"):
                    c.cancel(j["id"])
        # once they ended, the places are free again
        again = c.submit(spec("in.zarr", "busy-b.zarr"))
        assert c.wait(again["id"], poll=0.05, timeout=120)["state"] == "succeeded"
