"""Runs queued jobs, each in its own OS process, at most ``max_running`` at a time.

Each job is ``python -m convpipe run SPEC --cluster C [--resume]`` in a new session (its own process
group, so cancelling it also stops any Dask workers it started). With ``warm`` (the service's default on
Linux) the job process is forked from a warm runner that imported convpipe once (:mod:`.warm`,
:mod:`.zygote`): the same job in a fresh process of its own, without seconds of imports; a fresh interpreter
is the fallback while no warm runner is ready. Its merged stdout/stderr goes to the
job's log, as text for people. Its progress comes on a pipe of its own: the run's events as JSON lines
(:mod:`convpipe.run.events`), on the file descriptor the job finds in ``CONVPIPE_EVENTS_FD``; nothing a
job prints can move its progress.

One thread (the loop) starts and reaps every job process: on Linux a job is killed by the kernel when
the thread that started it ends, so that thread must live as long as the service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..run.events import EVENTS_FD_ENV, Failed, RunStarted, TileDone, from_json
from .warm import WarmPool, WarmProc, WarmUnavailable, kill_group as _kill_group
from .store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Job,
    JobStore,
)

_LAUNCHER = Path(__file__).with_name("launch.py")
#: a job whose process died with the warm runner this many times fails instead of resuming once more
MAX_LOST_ATTEMPTS = 3


def child_pythonpath(env: dict[str, str]) -> str | None:
    """PYTHONPATH for a child process that must import this same convpipe.

    A source checkout (not installed) needs its folder on the path; an installed convpipe does not, and
    putting site-packages ahead of the standard library could shadow stdlib modules, so it is left out.
    """
    import site

    root = Path(__file__).resolve().parent.parent.parent
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    parts = [p for p in (None if root in installed else str(root), env.get("PYTHONPATH")) if p]
    return os.pathsep.join(parts) or None


class _ColdProc:
    """A job process in a fresh interpreter (``Popen``), watched the way a :class:`~.warm.WarmProc` is."""

    lost = False

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid
        self.stdout = popen.stdout

    def exited(self) -> bool:
        try:
            # WNOWAIT: see the exit but leave the zombie, so its pid (the group id) cannot be reused
            # before the group's leftovers (e.g. Dask workers) are killed in finish().
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # already reaped: it has exited
            return True

    def finish(self) -> int:
        _signal_group(self.pid, signal.SIGKILL)
        return self.popen.wait()

    def signal(self, sig: int) -> None:
        _signal_group(self.pid, sig)


@dataclass
class _Live:
    """A job process the loop is watching."""

    job_id: str
    proc: _ColdProc | WarmProc
    log: IO[bytes]
    stdout: IO[bytes] | None = None
    reader: threading.Thread | None = None
    events: threading.Thread | None = None
    #: the message of the run's ``Failed`` event: the job's error, when it sent one
    failure: str | None = None
    tail: deque = field(default_factory=lambda: deque(maxlen=30))
    cancel: bool = False
    term_sent: float | None = None
    stopping: bool = False


class Runner:
    """Starts, watches, cancels and recovers job processes.

    Parameters
    ----------
    store : JobStore
        The job table.
    jobs_dir : Path
        One folder per job holds its spec and log.
    cluster : str
        The ``--cluster`` every job runs on.
    max_running : int
        Most job processes alive at once.
    check : callable, optional
        ``check(job)`` raises to refuse a job at start (paths re-checked against the roots, since a
        symlink may have changed since submission).
    kill_grace : float
        Seconds between SIGTERM and SIGKILL when stopping a job.
    env : dict, optional
        Extra environment of every job process: the service hands its roots this way, so the job checks
        each location again when it opens it (:func:`convpipe.roots.guard`).
    warm : bool
        Fork job processes from a warm runner (started with the loop, replaced when it dies) instead of
        starting a fresh interpreter for each; ignored where :func:`~.warm.warm_supported` is false.
    """

    def __init__(self, store: JobStore, jobs_dir: Path, *, cluster: str = "threads", max_running: int = 2,
                 check: Callable[[Job], None] | None = None, kill_grace: float = 5.0,
                 python: str = sys.executable, poll_interval: float = 0.1, env: dict[str, str] | None = None,
                 warm: bool = False):
        if max_running < 1:
            raise ValueError("max_running must be >= 1")
        self.store = store
        self.jobs_dir = Path(jobs_dir)
        self.cluster = cluster
        self.max_running = max_running
        self.check = check
        self.kill_grace = kill_grace
        self.python = python
        self.poll_interval = poll_interval
        self.env = dict(env or {})
        self._live: dict[str, _Live] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pool: WarmPool | None = None
        if warm:
            from .warm import warm_supported

            if warm_supported():
                self.pool = WarmPool(python, self._base_env(), self.jobs_dir / "warm-runner.log", on_change=self.wake)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Recover jobs a previous service left running, then start the loop thread."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="convpipe-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop; running jobs are stopped and queued again, to resume at the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Look at the queue now (after a submission)."""
        self._wake.set()

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "log.txt"

    def running_count(self) -> int:
        with self._lock:
            return len(self._live)

    def recover(self) -> None:
        """Jobs marked running belong to a service that died: kill what is left of them, queue them to resume."""
        for job in self.store.running():
            if job.pid:
                _kill_group(job.pid, since=(job.last_start or job.submitted) - 1.0)
            if job.cancel_requested:
                self.store.finish(job.id, CANCELLED)
                self._note(job.id, "cancelled while the service was down")
            else:
                self.store.requeue(job.id, resume=True)
                self._note(job.id, "the service restarted while this job ran: it will resume from its finished chunks")

    # ------------------------------------------------------------------ cancel

    def cancel(self, job_id: str, *, wait: float = 10.0) -> Job | None:
        """Cancel a job: a queued one at once, a running one by stopping its process group.

        Returns the job after the cancellation (or when ``wait`` seconds passed), None if unknown.
        """
        with self._lock:  # the loop claims and spawns under this lock: a job is queued or has a process
            if self.store.cancel_queued(job_id):
                self._note(job_id, "cancelled before it started")
                return self.store.get(job_id)
            live = self._live.get(job_id)
            if live is not None and self.store.request_cancel(job_id):
                live.cancel = True
                self._terminate(live)
        deadline = time.monotonic() + wait
        while True:
            job = self.store.get(job_id)
            if job is None or job.state in TERMINAL or time.monotonic() > deadline:
                return job
            self._wake.set()
            time.sleep(0.05)

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if self.pool is not None:
                        self.pool.maintain()  # here: the warm runner must be started by this thread
                    self._reap()
                    self._escalate()
                    self._fill()
                except Exception:  # noqa: BLE001 - the loop must outlive any one failure (disk full, ...)
                    traceback.print_exc(file=sys.stderr)
                    time.sleep(1.0)
                self._wake.wait(self.poll_interval)
                self._wake.clear()
        finally:
            self._shutdown()

    def _fill(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if len(self._live) >= self.max_running:
                    return
                if self.pool is not None and self.pool.starting():
                    return  # it is ready in seconds; a fresh interpreter now would only compete with it
                job = self.store.claim_next()
                if job is None:
                    return
                try:
                    self._spawn(job)
                except OSError as e:  # e.g. the job folder cannot be written: fail the job, not the loop
                    self.store.finish(job.id, FAILED, error=f"cannot start the job: {e}")

    def _spawn(self, job: Job) -> None:
        jdir = self.job_dir(job.id)
        jdir.mkdir(parents=True, exist_ok=True)
        spec_path = jdir / "spec.yaml"
        spec_path.write_text(job.spec)
        log = open(self.log_path(job.id), "ab", buffering=0)  # noqa: SIM115 - closed when the job ends
        cmd = [self.python, "-m", "convpipe", "run", str(spec_path), "--cluster", self.cluster]
        if job.resume:
            cmd.append("--resume")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        head = f"=== {stamp} attempt {job.attempts}: {' '.join(cmd[2:])}"
        try:
            if self.check is not None:
                self.check(job)
        except Exception as e:  # noqa: BLE001 - any refusal ends the job with its message
            log.write(f"{head}\nerror: {e}\n".encode())
            log.close()
            self.store.finish(job.id, FAILED, error=str(e))
            return
        env = self._base_env()
        env["CONVPIPE_JOB_ID"] = job.id
        events_r, events_w = os.pipe()  # the run's events, apart from what the job prints
        proc: _ColdProc | WarmProc | None = None
        stdout: IO[bytes] | None = None
        if self.pool is not None and self.pool.ready():
            proc, stdout = self._spawn_warm(cmd[3:], jdir, env, events_w, log)
        if proc is None:
            log.write(f"{head}\n".encode())
            proc, stdout = self._spawn_cold(cmd, jdir, env, events_r, events_w, log, job)
            if proc is None:
                return
        else:
            # the attempt line names the warm runner that forked the job (written once that is certain)
            log.write(f"{head} (warm runner {proc.runner})\n".encode())
            os.close(events_w)
        self.store.set_pid(job.id, proc.pid)
        live = _Live(job.id, proc, log, stdout)
        live.reader = threading.Thread(target=self._read, args=(live,), name=f"convpipe-log-{job.id}", daemon=True)
        live.events = threading.Thread(target=self._read_events, args=(live, events_r),
                                       name=f"convpipe-events-{job.id}", daemon=True)
        live.reader.start()
        live.events.start()
        self._live[job.id] = live

    def _base_env(self) -> dict[str, str]:
        """A job's environment, less what is its own (its id, its events pipe)."""
        env = dict(os.environ)
        env.pop("CONVPIPE_TOKEN", None)  # a job has no business with the service's credentials
        env.pop(EVENTS_FD_ENV, None)
        env["PYTHONUNBUFFERED"] = "1"  # log lines must arrive as they happen
        env.update(self.env)
        pythonpath = child_pythonpath(env)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        return env

    def _spawn_warm(self, argv: list[str], jdir: Path, env: dict[str, str], events_w: int,
                    log: IO[bytes]) -> tuple[WarmProc | None, IO[bytes] | None]:
        """Fork the job from the warm runner; (None, None) when it cannot (the job then starts cold)."""
        assert self.pool is not None
        out_r, out_w = os.pipe()
        try:
            proc = self.pool.spawn(argv, jdir, env, out_w, events_w)
        except WarmUnavailable as e:
            os.close(out_r)
            log.write(f"note: {e}; the job starts in a fresh interpreter\n".encode())
            return None, None
        finally:
            os.close(out_w)  # the job holds its own copy now: its exit ends the reader
        return proc, open(out_r, "rb")  # noqa: SIM115 - read to its end by the job's reader thread

    def _spawn_cold(self, cmd: list[str], jdir: Path, env: dict[str, str], events_r: int, events_w: int,
                    log: IO[bytes], job: Job) -> tuple[_ColdProc | None, IO[bytes] | None]:
        """Start the job in a fresh interpreter; (None, None) when that fails (the job has failed)."""
        env[EVENTS_FD_ENV] = str(events_w)
        try:
            proc = subprocess.Popen([self.python, str(_LAUNCHER), str(os.getpid()), *cmd], cwd=jdir, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, pass_fds=(events_w,))
        except OSError as e:
            os.close(events_r)
            log.write(f"error: cannot start the job process: {e}\n".encode())
            log.close()
            self.store.finish(job.id, FAILED, error=f"cannot start the job process: {e}")
            return None, None
        except BaseException:
            os.close(events_r)
            raise
        finally:
            os.close(events_w)  # the job holds the write end now: its exit ends the reader
        return _ColdProc(proc), proc.stdout

    def _read(self, live: _Live) -> None:
        """Copy the job's output to its log (and keep its last lines for the error of a failed job)."""
        assert live.stdout is not None
        stdout = live.stdout
        with stdout:
            # Lines are capped so a job printing without newlines cannot grow this process's memory.
            for line in iter(lambda: stdout.readline(1 << 16), b""):
                live.log.write(line)
                if line.strip():
                    live.tail.append(line.decode("utf-8", "replace").rstrip())

    def _read_events(self, live: _Live, fd: int) -> None:
        """Turn the run's events into the job's progress: the final pass's tiles, of the output's tiles."""
        tiles = skipped = 0
        last_write = 0.0
        pending: float | None = None
        with open(fd, "rb") as pipe:
            for line in iter(lambda: pipe.readline(1 << 16), b""):
                ev = from_json(line)
                if isinstance(ev, RunStarted):
                    tiles, skipped = max(ev.tiles, 0), max(ev.skipped, 0)
                elif isinstance(ev, TileDone) and ev.final:
                    # a resume counts the tiles it computes from zero: add those it found written
                    pending = (min(skipped + ev.done, tiles) / tiles if tiles else
                               ev.done / ev.total if ev.total > 0 else 0.0)
                    now = time.monotonic()
                    if now - last_write > 0.2:  # throttle: a run may send thousands of tiles
                        self.store.set_progress(live.job_id, pending)
                        last_write, pending = now, None
                elif isinstance(ev, Failed):
                    live.failure = ev.message
        if pending is not None:
            self.store.set_progress(live.job_id, pending)

    def _reap(self) -> None:
        with self._lock:
            items = list(self._live.items())
        for job_id, live in items:
            if not live.proc.exited():
                continue
            rc = live.proc.finish()  # the group's leftovers are killed, the process reaped
            for reader in (live.reader, live.events):
                if reader is not None:
                    reader.join(5.0)
            if live.proc.lost:
                self._lost(live)
            else:
                self._finalize(live, rc)
            with self._lock:
                self._live.pop(job_id, None)

    def _finalize(self, live: _Live, rc: int) -> None:
        job = self.store.get(live.job_id)
        if live.stopping and rc != 0:  # the service is shutting down: resume this job at the next start
            self._write(live, f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} stopped by the service shutting down; "
                              "it resumes at the next start\n")
            live.log.close()
            self.store.requeue(live.job_id, resume=True)
            return
        if rc == 0:
            state, error = SUCCEEDED, None
        elif live.cancel or (job is not None and job.cancel_requested):
            state, error = CANCELLED, None
        else:
            state, error = FAILED, _error_of(live, rc)
        self._write(live, f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {state}"
                          + (f" (exit code {rc})" if rc else "") + "\n")
        live.log.close()
        self.store.finish(live.job_id, state, error=error)

    def _lost(self, live: _Live) -> None:
        """The job died with the warm runner (killed, out of memory), through no fault of its own: queue it to
        resume from its finished chunks, as after a restart of the service, unless it was being stopped."""
        job = self.store.get(live.job_id)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if live.cancel or (job is not None and job.cancel_requested):
            self._write(live, f"=== {stamp} cancelled\n")
            live.log.close()
            self.store.finish(live.job_id, CANCELLED)
        elif live.stopping or (job is not None and job.attempts < MAX_LOST_ATTEMPTS):
            why = "stopped by the service shutting down" if live.stopping else \
                "the warm runner died while this job ran (its process with it)"
            self._write(live, f"=== {stamp} {why}; it resumes from its finished chunks\n")
            live.log.close()
            self.store.requeue(live.job_id, resume=True)
        else:
            error = f"the job process died with the warm runner {MAX_LOST_ATTEMPTS} times"
            self._write(live, f"=== {stamp} failed: {error}\n")
            live.log.close()
            self.store.finish(live.job_id, FAILED, error=error)

    def _escalate(self) -> None:
        now = time.monotonic()
        with self._lock:
            for live in self._live.values():
                if live.term_sent is not None and now - live.term_sent > self.kill_grace:
                    live.proc.signal(signal.SIGKILL)

    def _terminate(self, live: _Live) -> None:
        if live.term_sent is None:
            live.term_sent = time.monotonic()
            live.proc.signal(signal.SIGTERM)

    def _shutdown(self) -> None:
        with self._lock:
            for live in self._live.values():
                live.stopping = True
                self._terminate(live)
        deadline = time.monotonic() + self.kill_grace + 5.0
        while self._live and time.monotonic() < deadline:
            self._reap()
            self._escalate()
            time.sleep(0.05)
        if self.pool is not None:
            self.pool.close()

    # ------------------------------------------------------------------ logs

    @staticmethod
    def _write(live: _Live, text: str) -> None:
        try:
            live.log.write(text.encode())
        except (OSError, ValueError):
            pass

    def _note(self, job_id: str, text: str) -> None:
        path = self.log_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n".encode())


def _error_of(live: _Live, rc: int) -> str:
    """The job's error: what its run's ``Failed`` event said, else its last message line, or how it ended."""
    if live.failure:
        return f"error: {live.failure}"[:1000]
    if rc < 0:  # killed (OOM killer, a crash, kill -9): its last line is progress, not its error
        try:
            return f"the job process was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"the job process was killed by signal {-rc}"
    for line in reversed(live.tail):
        if line.startswith(("error", "Error")) or ": " in line:
            return line[:1000]
    return f"the job process exited with code {rc}" + (f": {live.tail[-1][:1000]}" if live.tail else "")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


__all__ = ["QUEUED", "RUNNING", "Runner"]
