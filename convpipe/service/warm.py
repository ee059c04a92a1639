"""The service's side of the warm runner (:mod:`.zygote`): start it, ask it for job processes, watch it.

:class:`WarmPool` owns one fork server. It is started (and restarted, when it dies) by the runner's loop
thread, since on Linux a process started with ``PR_SET_PDEATHSIG`` dies when the *thread* that started it
ends. A job process it forks is a :class:`WarmProc`, which the runner watches the way it watches a
``Popen``: :meth:`~WarmProc.exited`, :meth:`~WarmProc.finish` (the exit code), :meth:`~WarmProc.signal`.

When the server dies (killed, out of memory) its job processes die with it (their own ``PR_SET_PDEATHSIG``):
their :class:`WarmProc` ends with ``lost`` set, and the runner queues those jobs to resume, as after a
restart of the service; the next loop starts a new server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .zygote import MAX_MESSAGE

_LAUNCHER = Path(__file__).with_name("launch.py")

STARTING, READY, DOWN = "starting", "ready", "down"


class WarmUnavailable(Exception):
    """The warm runner cannot start this job now (not ready, died, refused): start it the cold way."""


def warm_supported() -> bool:
    """Whether jobs can be forked from a warm runner here: Linux (fork, ``PR_SET_PDEATHSIG``, ``SCM_RIGHTS``)."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds") and hasattr(os, "fork")


class WarmProc:
    """A job process forked by the warm runner: what the runner needs of a ``Popen``."""

    def __init__(self, pool: WarmPool, pid: int, runner: int):
        self.pool = pool
        self.pid = pid
        #: the pid of the warm runner that forked it
        self.runner = runner
        self.started = time.time()
        self.returncode: int | None = None
        #: the warm runner died before this job's end was reported: the job was killed with it
        self.lost = False
        self._done = threading.Event()

    def _end(self, rc: int, *, lost: bool = False) -> None:
        self.returncode, self.lost = rc, lost
        self._done.set()

    def exited(self) -> bool:
        return self._done.is_set()

    def finish(self) -> int:
        """The exit code (the server has killed the group's leftovers and reaped the process already)."""
        self._done.wait()
        if self.lost:  # nobody reaped it for us in order: kill what may be left of its group ourselves
            kill_group(self.pid, since=self.started - 1.0)
        assert self.returncode is not None
        return self.returncode

    def signal(self, sig: int) -> None:
        """Signal the job's process group (through the server, which knows whether the pid is still its)."""
        if not self._done.is_set():
            self.pool._signal(self.pid, sig)


class WarmPool:
    """One warm runner process and the job processes it forked.

    Parameters
    ----------
    python : str
        The interpreter (the one job processes would run).
    env : dict
        The environment it starts with: a job's, less what is the job's own (its id, its events pipe).
    log_path : Path
        Where the runner's own output goes (import warnings, a crash).
    on_change : callable, optional
        Called (from the pool's reader thread) when the runner becomes ready, a job process exits or the
        runner dies: the runner's loop wakes up.
    start_timeout : float
        Seconds the runner may take to import convpipe before it is given up on (jobs then start cold).
    retry_after : float
        Seconds before a runner that failed or died is started again.
    """

    def __init__(self, python: str, env: dict[str, str], log_path: Path, *, on_change: Callable[[], None] | None = None,
                 start_timeout: float = 120.0, retry_after: float = 5.0):
        self.python = python
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.on_change = on_change or (lambda: None)
        self.start_timeout = start_timeout
        self.retry_after = retry_after
        self.state = DOWN
        self.reason: str | None = None
        #: how many runners were started (1 + restarts)
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._procs: dict[int, WarmProc] = {}
        self._pending: dict[int, list] = {}  # req -> [Event, reply]
        self._req = 0
        self._started_at = 0.0
        self._down_at: float | None = None
        self._log: IO[bytes] | None = None
        self._failures = 0  # runners in a row that failed to start or died: the wait before the next doubles

    # ------------------------------------------------------------------ lifecycle (the loop thread)

    def maintain(self) -> None:
        """Start the runner if none runs (first time, or ``retry_after`` after one died); give up on one
        that takes too long to start."""
        if self.state == STARTING and time.monotonic() - self._started_at > self.start_timeout:
            self._give_up(f"the warm runner did not start in {self.start_timeout:.0f} s")
        if self.state == DOWN and (self._down_at is None or time.monotonic() - self._down_at >= self._backoff()):
            self._start()

    def _backoff(self) -> float:
        # the first death: a new runner at once; then a runner that keeps failing costs seconds of imports
        # each time, so the wait doubles (jobs start the cold way meanwhile)
        if self._failures <= 1:
            return 0.0
        return min(self.retry_after * 2 ** (self._failures - 2), 600.0)

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - the runner's output, closed when it ends
        env = dict(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [self.python, str(_LAUNCHER), str(os.getpid()), self.python, "-m", "convpipe.service.zygote",
               str(child.fileno())]
        try:
            proc = subprocess.Popen(cmd, env=env, cwd=self.log_path.parent, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    pass_fds=(child.fileno(),), start_new_session=True)
        except OSError as e:
            parent.close()
            log.close()
            self._down(f"cannot start the warm runner: {e}")
            return
        finally:
            child.close()
        self._proc, self._sock, self._log = proc, parent, log
        self.state, self._started_at, self.reason = STARTING, time.monotonic(), None
        self.starts += 1
        threading.Thread(target=self._read, args=(parent, proc, log), name="convpipe-warm-reader", daemon=True).start()

    def _give_up(self, reason: str) -> None:
        proc = self._proc
        if proc is not None:
            _kill(proc)
        self._down(reason)

    def _down(self, reason: str) -> None:
        if self.state != DOWN:
            self._failures += 1
        self.state, self.reason, self._down_at = DOWN, reason, time.monotonic()

    def close(self) -> None:
        """Stop the runner (its job processes die with it: stop them first)."""
        sock, proc = self._sock, self._proc
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the server reads the end and leaves
            except OSError:
                pass
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                _kill(proc)
        self._down("closed")
        self._failures = 0

    def ready(self) -> bool:
        return self.state == READY

    def starting(self) -> bool:
        return self.state == STARTING

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.state != DOWN else None

    # ------------------------------------------------------------------ jobs

    def spawn(self, argv: list[str], cwd: Path, env: dict[str, str], out_fd: int, events_fd: int, *,
              timeout: float = 30.0) -> WarmProc:
        """Fork ``python -m convpipe ARGV`` as a job process (stdout and stderr to ``out_fd``, its events to
        ``events_fd``, both only lent: the caller closes them). Raises WarmUnavailable."""
        sock = self._sock
        if self.state != READY or sock is None:
            raise WarmUnavailable(self.reason or f"the warm runner is {self.state}")
        with self._lock:
            self._req += 1
            req = self._req
            slot = self._pending[req] = [threading.Event(), None]
        msg = json.dumps({"op": "spawn", "req": req, "argv": list(argv), "cwd": str(cwd), "env": env}).encode()
        if len(msg) > MAX_MESSAGE:
            raise WarmUnavailable("the job's environment is too large for the warm runner")
        try:
            with self._send_lock:
                socket.send_fds(sock, [msg], [out_fd, events_fd])
        except OSError as e:
            with self._lock:
                self._pending.pop(req, None)
            raise WarmUnavailable(f"the warm runner is gone: {e}") from None
        if not slot[0].wait(timeout):
            with self._lock:
                self._pending.pop(req, None)
            # a runner that does not fork within the timeout is stuck: replace it
            self._give_up(f"the warm runner did not answer in {timeout:.0f} s")
            raise WarmUnavailable(self.reason)
        reply = slot[1]
        if isinstance(reply, WarmProc):
            return reply
        raise WarmUnavailable(str(reply))

    def _signal(self, pid: int, sig: int) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            with self._send_lock:
                sock.send(json.dumps({"op": "signal", "pid": pid, "sig": int(sig)}).encode())
        except OSError:
            pass  # the runner is gone, and its job processes with it

    # ------------------------------------------------------------------ the reader thread

    def _read(self, sock: socket.socket, proc: subprocess.Popen, log: IO[bytes]) -> None:
        try:
            while True:
                try:
                    data = sock.recv(MAX_MESSAGE)
                except OSError:
                    data = b""
                if not data:
                    break
                try:
                    msg = json.loads(data)
                except ValueError:
                    continue
                self._dispatch(msg, proc.pid)
        finally:
            self._lost(sock, proc, log)

    def _dispatch(self, msg: dict, runner: int) -> None:
        op = msg.get("op")
        if op == "ready":
            self.state = READY
        elif op == "failed":
            self.reason = str(msg.get("message"))
        elif op in ("started", "refused"):
            with self._lock:
                slot = self._pending.pop(msg.get("req"), None)
                if op == "started":
                    wp = WarmProc(self, int(msg["pid"]), runner)
                    self._procs[wp.pid] = wp
                    reply: object = wp
                else:
                    reply = msg.get("message")
            if slot is not None:
                slot[1] = reply
                slot[0].set()
            elif isinstance(reply, WarmProc):  # the caller gave up waiting: nobody will watch this job
                self._signal(reply.pid, signal.SIGKILL)
        elif op == "exited":
            with self._lock:
                wp = self._procs.pop(int(msg["pid"]), None)
            if wp is not None:
                wp._end(int(msg["rc"]))
            self._failures = 0  # it ran a job to its end: a death after this one is not a start-up failure
        self.on_change()

    def _lost(self, sock: socket.socket, proc: subprocess.Popen, log: IO[bytes]) -> None:
        """The runner ended: its unreported job processes were killed with it; fail what waits on it."""
        _kill(proc)
        sock.close()
        log.close()
        with self._lock:
            procs, self._procs = list(self._procs.values()), {}
            pending, self._pending = list(self._pending.values()), {}
        for wp in procs:
            wp._end(-signal.SIGKILL, lost=True)
        for slot in pending:
            slot[1] = "the warm runner died"
            slot[0].set()
        if self._proc is proc:
            rc = proc.returncode
            self._down(self.reason or f"the warm runner ended (exit code {rc})")
            self._sock = None
        self.on_change()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
        pass


def kill_group(pgid: int, *, since: float) -> None:
    """SIGKILL every process still in group ``pgid`` that started after ``since`` (a dead service's job)."""
    import psutil

    victims = []
    for p in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["create_time"] >= since:
                p.kill()
                victims.append(p)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    psutil.wait_procs(victims, timeout=5)
