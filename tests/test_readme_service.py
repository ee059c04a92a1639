"""The README's "The job service" section, followed word by word in a fresh copy of the repository.

The commands are read from README.md itself (its first bash block under "## The job service") and run by
bash in a folder holding only what a clone holds after ``make demo``: ``pipelines/edges.yaml`` and the demo's
``demo-out/`` (made by the demo's own code). The only edits: ``ID`` becomes the id ``submit`` printed, and
the port 8765 a free one (tests run side by side; a user's 8765 is theirs).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import zarr

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BIN = Path(sys.executable).parent


def service_commands() -> list[str]:
    """The command lines of the README's job-service block, comments dropped, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## The job service\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [re.sub(r"\s+#.*$", "", ln).strip() for ln in block.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (REPO / "pipelines" / "edges.yaml").exists() or not README.exists(),
                    reason="needs a source checkout (README.md, pipelines/)")
@pytest.mark.skipif(not (BIN / "convpipe").exists(), reason=f"no convpipe command beside {sys.executable}")
def test_the_readme_service_section_word_by_word(tmp_path: Path) -> None:
    from scipy import ndimage as ndi

    from convpipe.demo import run_demo

    cmds = service_commands()
    assert [c.split()[:2] for c in cmds] == [["convpipe", "serve"], ["export", "CONVPIPE_SERVER=http://127.0.0.1:8765"],
                                             ["convpipe", "submit"], ["convpipe", "jobs;"]], cmds
    serve, export, submit, rest = cmds

    clone = tmp_path / "convpipe"
    (clone / "pipelines").mkdir(parents=True)
    shutil.copy(REPO / "pipelines" / "edges.yaml", clone / "pipelines")
    run_demo(clone / "demo-out", pipelines=clone / "pipelines", echo=lambda _: None)  # `make demo`, for edges
    before = zarr.open_array(str(clone / "demo-out" / "edges.zarr"))[...]

    port = _free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for k in ("CONVPIPE_SERVER", "CONVPIPE_TOKEN"):
        env.pop(k, None)
    server = subprocess.Popen(["bash", "-c", f"exec {serve} --port {port}"], cwd=clone, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(url + "/", timeout=5, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not answer"
            time.sleep(0.2)
        assert (clone / "token.txt").exists()  # written by serve, as the README's comment says
        # the dashboard's sign-in page, where the README sends a browser
        page = httpx.get(url + "/", trust_env=False).text
        assert 'for="token"' in page.lower() or "Token" in page
        assert "Sign in" in page

        export_here = export.replace(":8765", f":{port}")
        assert export_here != export
        r = subprocess.run(["bash", "-e", "-c", f"{export_here}\n{submit}"], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "succeeded" in r.stdout, r.stdout
        job_id = re.search(r"\b([0-9a-f]{12})\b", r.stdout + r.stderr).group(1)
        got = zarr.open_array(str(clone / "demo-out" / "edges.zarr"), mode="r")
        assert got.attrs["convpipe"]["complete"] is True
        # the oracle: scipy on the whole demo image, as the spec's comments say
        img = zarr.open_array(str(clone / "demo-out" / "image.zarr"))[...].astype(np.float32)
        g = ndi.gaussian_filter(img, 2, mode="reflect")
        want = np.hypot(ndi.sobel(g, 0, mode="nearest"), ndi.sobel(g, 1, mode="nearest"))
        np.testing.assert_allclose(got[...], want, rtol=1e-4, atol=1e-3 * float(want.max()))
        np.testing.assert_array_equal(got[...], before)  # the same answer the demo's run gave

        line = rest.replace("ID", job_id)
        assert line.count(job_id) == 2
        # each command of the list, as a shell runs them: jobs and status succeed; cancelling a job that ended
        # is one clear line (exit 1)
        outs = []
        for one in line.split(";"):
            r = subprocess.run(["bash", "-c", f"{export_here}\n{one.strip()}"], cwd=clone, env=env,
                               capture_output=True, text=True, timeout=120)
            outs.append(r)
        jobs, status, cancel = outs
        assert jobs.returncode == 0 and job_id in jobs.stdout and "edges" in jobs.stdout, jobs.stdout + jobs.stderr
        assert status.returncode == 0 and "succeeded" in status.stdout, status.stdout + status.stderr
        assert cancel.returncode == 1 and "Traceback" not in cancel.stderr
        assert cancel.stderr.strip().count("\n") == 0 and "already succeeded" in cancel.stderr, cancel.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_a_relative_root_means_the_folder_serve_was_started_in(tmp_path: Path, monkeypatch) -> None:
    """``serve --root demo-out``: the job processes, which run elsewhere, get the folder it meant."""
    import json

    from convpipe.errors import InputError
    from convpipe.roots import ROOTS_ENV, Roots, guard

    (tmp_path / "demo-out").mkdir()
    (tmp_path / "elsewhere" / "demo-out").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    roots = Roots(["demo-out", "s3://bucket/data"])
    handed = json.loads(roots.env()[ROOTS_ENV])
    assert handed == [str((tmp_path / "demo-out").resolve()), "s3://bucket/data"]
    monkeypatch.chdir(tmp_path / "elsewhere")  # a job's own folder
    monkeypatch.setenv(ROOTS_ENV, roots.env()[ROOTS_ENV])
    guard(str(tmp_path / "demo-out" / "edges.zarr"), what="output.url", write=True)
    guard("s3://bucket/data/x.zarr", what="input.url")
    with pytest.raises(InputError, match="outside the service's roots"):
        guard(str(tmp_path / "elsewhere" / "demo-out" / "edges.zarr"), what="output.url", write=True)


@pytest.mark.skipif(not README.exists(), reason="needs a source checkout (README.md)")
def test_the_readme_shows_the_dashboard_in_pictures_that_exist() -> None:
    from PIL import Image

    section = README.read_text(encoding="utf-8").split("\n## The job service\n", 1)[1].split("\n## ", 1)[0]
    pics = re.findall(r"!\[([^\]]+)\]\((docs/[^)]+\.png)\)", section)
    assert {Path(p).stem for _, p in pics} >= {"dashboard-signin", "dashboard-jobs", "dashboard-submit-error",
                                               "dashboard-job-running", "dashboard-job"}
    for alt, p in pics:
        assert len(alt) > 10, p  # says what the picture shows
        with Image.open(REPO / p) as im:
            im.load()
            assert im.width >= 800 and im.height >= 400, p
