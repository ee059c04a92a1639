"""Start a real job service in a subprocess on a free loopback port, for tests and integration checks.

>>> with running_service(tmp_path / "svc", roots=[data]) as svc:        # doctest: +SKIP
...     r = svc.http().get("/jobs")

The service always listens on 127.0.0.1 (never another address) on a port the OS picks.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import child_pythonpath


@dataclass
class RunningService:
    """A service subprocess: its URL, token, database and process."""

    url: str
    token: str
    db: Path
    workdir: Path
    proc: subprocess.Popen
    output: Path

    def http(self, *, token: str | None = None, timeout: float = 30.0) -> Any:
        """An ``httpx.Client`` on the service, sending the right token unless told otherwise."""
        import httpx

        tok = self.token if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)

    def kill(self) -> None:
        """SIGKILL the service (its job processes die with it)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the service gracefully (SIGTERM), killing it if it does not stop in time."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        """What the service printed."""
        return self.output.read_text(errors="replace") if self.output.exists() else ""


def start_service(workdir: Path, roots: Sequence[Path | str], *, db: Path | None = None, token: str | None = None,
                  max_running: int = 2, cluster: str = "threads", extra_args: Sequence[str] = (),
                  timeout: float = 60.0, env: dict[str, str] | None = None) -> RunningService:
    """Start ``python -m convpipe.service serve`` on 127.0.0.1 and wait until it accepts requests.

    Parameters
    ----------
    workdir : Path
        Holds the token file, the service's output and (by default) its database.
    roots : list of paths
        The service's ``--root`` folders.
    db : Path, optional
        The job table (reuse one to test a restart).
    token : str, optional
        The bearer token; a random one by default (and the same file is reused on restart).
    env : dict, optional
        More environment for the service (e.g. ``{"CONVPIPE_WARM_RUNNER": "0"}``: no warm runner).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    token_file = workdir / "token.txt"
    if token is not None or not token_file.exists():
        token = token or secrets.token_urlsafe(24)
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    token = token_file.read_text().strip()
    db = Path(db) if db is not None else workdir / "jobs.sqlite"
    ready = workdir / f"ready-{secrets.token_hex(4)}.json"
    output = workdir / f"service-{secrets.token_hex(4)}.log"
    cmd = [sys.executable, "-m", "convpipe.service", "serve", "--host", "127.0.0.1", "--port", "0",
           "--db", str(db), "--token-file", str(token_file), "--cluster", cluster,
           "--max-running", str(max_running), "--ready-file", str(ready), *extra_args]
    for r in roots:
        cmd += ["--root", str(r)]
    env = {**os.environ, **(env or {})}
    pythonpath = child_pythonpath(env)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env.pop("CONVPIPE_TOKEN", None)
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=workdir)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode}:\n{output.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the service did not start in {timeout} s:\n{output.read_text(errors='replace')}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return RunningService(url=info["url"], token=token, db=db, workdir=workdir, proc=proc, output=output)


@contextlib.contextmanager
def running_service(workdir: Path, roots: Sequence[Path | str], **kwargs: Any) -> Iterator[RunningService]:
    """:func:`start_service` as a context manager that stops the service on exit."""
    svc = start_service(workdir, roots, **kwargs)
    try:
        yield svc
    finally:
        svc.stop()
