"""The warm runner: one process that imports convpipe once and forks a fresh process for every job.

Started by the service (:class:`convpipe.service.warm.WarmPool`) as ``python launch.py PID python -m
convpipe.service.zygote FD``: it dies with the service (``PR_SET_PDEATHSIG``), imports what a job run needs,
then serves requests on the ``AF_UNIX`` ``SOCK_SEQPACKET`` socket ``FD``: one JSON message each, the job's
output pipe and events pipe attached as file descriptors (``SCM_RIGHTS``).

Why a fork server and not a pool of long-lived runners, nor jobs in the service's own cluster: a job forked
from a process that never ran one starts with the libraries imported (milliseconds instead of seconds of
imports) but shares nothing with any other job: it has its own process, session and process group (cancel
kills that group only), cwd, environment, memory and file descriptors, and it exits when its job ends, so a
crash, an OOM kill or state a job leaves behind (a changed global, a leaked thread or file) dies with it.
The server itself never runs a job; it stays single-threaded at the Python level so that forking it is safe
(it refuses to serve when an import started a thread).

Messages, server to service: ``ready`` (imports done), ``started`` / ``refused`` (the answer to a ``spawn``,
with the request's ``req``), ``exited`` (a job process ended: its pid and exit code, the way ``Popen`` gives
it: negative for a signal). Service to server: ``spawn`` (``req``, ``argv``, ``cwd``, ``env``; two fds) and
``signal`` (``pid``, ``sig``: sent to that job's process group, only while the job is not yet reaped, so a
pid the kernel reused is never signalled). When a job process exits, the server first SIGKILLs what is left
of its process group (e.g. Dask workers it started), then reaps it and says ``exited``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import threading

MAX_MESSAGE = 1 << 20
#: the folder the server started in, which ``python -m`` put first on ``sys.path``
_START_DIR: str | None = None
_PR_SET_PDEATHSIG = 1

#: what a job run imports, loaded before the warm-up job finds the rest
_PRELOAD = ("convpipe.cli", "convpipe.api", "convpipe.run", "convpipe.cluster", "convpipe.io", "dask.array",
            "zarr", "numpy", "scipy.ndimage", "yaml", "typer", "rich.console", "runpy")


def _send(sock: socket.socket, msg: dict) -> None:
    if msg.get("op") == "failed":  # also in the runner's own log (warm-runner.log beside the job folders)
        print(f"error: {msg.get('message')}; jobs start in a fresh interpreter", file=sys.stderr, flush=True)
    sock.send(json.dumps(msg).encode())


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies; exit at once if the parent is already gone."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - Linux only; the service uses no warm runner elsewhere
        pass
    if os.getppid() != parent:
        os._exit(137)


def preload() -> int:
    """Import what a job run needs; return how many modules are loaded.

    Beyond :data:`_PRELOAD`, a warm-up job (a real ``convpipe run`` of a tiny spec, in a throwaway forked
    child, so that nothing it starts lives here) reports the modules it loaded, and they are imported too:
    the list follows what ``run`` imports today, whoever changes it.
    """
    import importlib
    import warnings

    warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)  # we checked: no threads
    for name in _PRELOAD:
        importlib.import_module(name)
    from convpipe.ops import registry

    registry.load_all()
    for name in _warm_up_modules():
        if name not in sys.modules and not name.startswith("__"):
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - a module only importable as a side effect: skip it
                pass
    return len(sys.modules)


def _warm_up_modules() -> list[str]:
    """The modules a tiny ``convpipe run`` loads, from a forked child that runs it in a temporary folder."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run it, report, never return
        code = 1
        try:
            os.close(r)
            import tempfile

            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            from convpipe.roots import ROOTS_ENV
            from convpipe.run.events import EVENTS_FD_ENV

            for var in (ROOTS_ENV, EVENTS_FD_ENV):  # a warm-up in a temporary folder, outside any root
                os.environ.pop(var, None)
            with tempfile.TemporaryDirectory(prefix="convpipe-warmup-") as tmp:
                os.chdir(tmp)
                import numpy as np
                import zarr

                zarr.create_array("in.zarr", shape=(16, 16), chunks=(16, 16), dtype="float32")[:] = np.ones(
                    (16, 16), "float32")
                with open("spec.yaml", "w") as f:
                    f.write("convpipe: 1\ninput: {url: in.zarr}\noutput: {url: out.zarr}\n"
                            "steps: [{gaussian: {sigma: 1}}]\n")
                try:
                    _run_cli(["run", "spec.yaml", "--cluster", "threads"])
                except BaseException:  # noqa: BLE001 - whatever it loaded before failing still counts
                    pass
                os.chdir("/")
            with os.fdopen(w, "w") as out:
                out.write("\n".join(sorted(sys.modules)))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        names = f.read().split()
    os.waitpid(pid, 0)
    return names


def _run_cli(args: list[str]) -> int:
    """``python -m convpipe ARGS`` in this process; the exit code it would have."""
    import runpy

    sys.argv = ["convpipe", *args]
    try:
        runpy.run_module("convpipe", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return _exit_code(e.code)
    return 0


def _exit_code(code: object) -> int:
    """What the interpreter makes of ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


class Server:
    """The fork server's loop (see the module's docstring)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.children: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a signal handler must never block on a full pipe
        os.set_blocking(self._wake_r, False)  # drained until empty, never waited on

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd hears every exit
        signal.set_wakeup_fd(self._wake_w)
        while True:
            self._reap()
            try:
                ready, _, _ = select.select([self.sock, self._wake_r], [], [], 1.0)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                continue
            if self._wake_r in ready:
                while True:
                    try:
                        if not os.read(self._wake_r, 512):
                            break
                    except BlockingIOError:
                        break
            if self.sock in ready:
                try:
                    data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
                except (ConnectionError, OSError):
                    data, fds = b"", []
                if not data:  # the service closed its end (or is gone): stop every job and leave
                    for fd in fds:
                        os.close(fd)
                    self._stop_all()
                    return
                self._handle(data, fds)

    def _handle(self, data: bytes, fds: list[int]) -> None:
        try:
            msg = json.loads(data)
            op = msg["op"]
        except (ValueError, KeyError, TypeError):
            for fd in fds:
                os.close(fd)
            return
        if op == "signal":
            pid = int(msg["pid"])
            if pid in self.children:  # not yet reaped: the pid (and the group id) is still this job's
                try:
                    os.killpg(pid, int(msg["sig"]))
                except (ProcessLookupError, PermissionError):
                    pass
        elif op == "spawn":
            try:
                if len(fds) != 2:
                    raise ValueError(f"a spawn takes 2 file descriptors, got {len(fds)}")
                pid = self._fork(msg, fds[0], fds[1])
            except (OSError, ValueError, KeyError) as e:
                _send(self.sock, {"op": "refused", "req": msg.get("req"), "message": str(e)})
            else:
                _send(self.sock, {"op": "started", "req": msg.get("req"), "pid": pid})
            finally:
                for fd in fds:
                    os.close(fd)

    def _fork(self, msg: dict, out_fd: int, events_fd: int) -> int:
        argv, cwd, env = list(msg["argv"]), str(msg["cwd"]), dict(msg["env"])
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._child(parent, argv, cwd, env, out_fd, events_fd)
            except BaseException:  # noqa: BLE001 - anything the job's own handling let through
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        self.children.add(pid)
        return pid

    def _child(self, parent: int, argv: list[str], cwd: str, env: dict, out_fd: int, events_fd: int) -> int:
        """In the forked job process: become the job (session, fds, cwd, environment), run it, its exit code."""
        import atexit
        import io

        from convpipe.run.events import EVENTS_FD_ENV

        os.setsid()  # its own session and process group: cancelling the job stops it and its workers only
        _die_with_parent(parent)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.sock.close()  # a job has no business with the server
        os.close(self._wake_r)
        os.close(self._wake_w)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        enc = sys.stdout.encoding or "utf-8"
        # what PYTHONUNBUFFERED=1 gives a fresh interpreter: every line reaches the log as it is printed
        sys.stdin = open(0, encoding=enc, closefd=False)  # noqa: SIM115
        sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0, closefd=False), encoding=enc,  # noqa: SIM115
                                      errors="strict", line_buffering=True, write_through=True)
        sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False), encoding=enc,  # noqa: SIM115
                                      errors="backslashreplace", line_buffering=True, write_through=True)
        os.chdir(cwd)
        if _START_DIR is not None and sys.path and sys.path[0] == _START_DIR:
            sys.path[0] = cwd  # as ``python -m`` started in the job's folder would have it
        env[EVENTS_FD_ENV] = str(events_fd)
        os.environ.clear()
        os.environ.update(env)
        try:
            code = _run_cli(argv)
        except KeyboardInterrupt:
            code = 130
        atexit._run_exitfuncs()  # what the interpreter's exit would do (os._exit skips it)
        return code

    def _reap(self) -> None:
        for pid in list(self.children):
            try:
                # WNOWAIT: see the exit but keep the zombie, so that its pid (the group's id) is not reused
                # before the group's leftovers are killed
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                    continue
            except ChildProcessError:
                self.children.discard(pid)
                continue
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            _, status = os.waitpid(pid, 0)
            self.children.discard(pid)
            _send(self.sock, {"op": "exited", "pid": pid, "rc": _returncode(status)})

    def _stop_all(self) -> None:
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _returncode(status: int) -> int:
    """A wait status as ``Popen.returncode`` has it: the exit code, or minus the signal that killed it."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main(argv: list[str]) -> int:
    global _START_DIR
    _START_DIR = os.getcwd()
    sock = socket.socket(fileno=int(argv[0]))
    os.set_inheritable(sock.fileno(), False)  # no job, nor anything it starts, inherits the server's socket
    try:
        modules = preload()
    except BaseException as e:  # noqa: BLE001 - say why, so that the service runs jobs the cold way
        _send(sock, {"op": "failed", "message": f"the warm runner could not import convpipe: {e!r}"})
        return 1
    threads = threading.active_count()
    if threads > 1:  # forking a process with other Python threads can deadlock the child: refuse to serve
        _send(sock, {"op": "failed", "message": f"the warm runner has {threads} threads after its imports: "
                                                f"{[t.name for t in threading.enumerate()]}"})
        return 1
    _send(sock, {"op": "ready", "pid": os.getpid(), "modules": modules})
    Server(sock).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
