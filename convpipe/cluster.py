"""A Dask scheduler from ``execution.cluster``.

Accepted forms:

``threads`` / ``sync``
    dask's threaded (or synchronous) scheduler in this process.
``processes``
    dask's multiprocessing scheduler.
``local:N``
    a ``distributed.LocalCluster`` of N single-threaded worker processes on this machine (loopback only).
``tcp://host:port``
    an existing Dask scheduler.
``tls://host:port``
    an existing Dask scheduler over TLS; certificates come from Dask's configuration
    (``distributed.comm.tls.ca-file``, ``distributed.comm.tls.client.cert``, ``...client.key``).
``profile:NAME`` or ``profile:/path/to/profile.yaml``
    a deployment profile (YAML, :mod:`convpipe.profiles`): ``kind: slurm`` (dask-jobqueue), ``kind: kubernetes`` (the
    dask-kubernetes operator), ``kind: cuda`` (dask-cuda) or ``kind: remote`` (a scheduler address with
    TLS files). Named profiles are looked up in ``$CONVPIPE_PROFILES``, ``./deploy/profiles``,
    ``~/.config/convpipe/profiles`` and the ``deploy/profiles`` folder of a source checkout.

The SLURM, Kubernetes and CUDA packages are optional extras; they are imported only when a profile needs
them, and a missing one is an :class:`~convpipe.errors.InputError` that names the extra to install.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError, SpecError
from .lazy_exports import lazy_exports
from .spec_cluster import check_cluster  # noqa: F401  (re-exported: first defined here)
#: the profile API, first defined here, now in :mod:`convpipe.profiles`; re-exported on first use (PEP 562):
#: its pydantic models are not needed to size a plan on threads / processes / local:N (explain's start-up)
_FROM_PROFILES = ("PROFILE_KINDS", "PROFILE_NAME", "SCHEDULER_PLACEHOLDER", "Profile", "cluster_script",
                  "find_profile", "import_class", "load_profile", "profile_cluster_kwargs", "profile_search_path",
                  "slurm_processes")


__getattr__, _ = lazy_exports(__name__, __package__, dict.fromkeys(_FROM_PROFILES, "profiles"))


def ignore_interrupts() -> None:
    """Worker processes of the ``processes`` scheduler leave Ctrl-C to the run that started them.

    A terminal sends SIGINT to its whole foreground process group: without this every worker printed a
    KeyboardInterrupt traceback while the run itself stopped cleanly and said how far it got.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """Ignore SIGINT while worker processes are started, so that they ignore it for good.

    A terminal's Ctrl-C goes to its whole foreground process group. The run stops cleanly on it and says
    how far it got; worker processes must not print KeyboardInterrupt tracebacks meanwhile. An ignored
    signal stays ignored across fork and exec, and Python then installs no KeyboardInterrupt handler (a
    blocked signal mask does not survive multiprocessing's spawn, measured). The price: a Ctrl-C pressed
    while a local cluster starts (a few seconds) is not seen; the next one is. Only the main thread may
    change signal handlers; elsewhere this does nothing.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _process_pool(workers: int) -> Iterator[Any]:
    """The ``processes`` scheduler's worker pool for one run, its workers deaf to Ctrl-C from their start.

    A process started while SIGINT is ignored keeps ignoring it (Python installs its KeyboardInterrupt
    handler only where SIGINT is not ignored), so every worker is started up front with SIGINT ignored
    for that moment; a worker still importing convpipe would otherwise print a traceback at a Ctrl-C.
    One pool serves every computation of the run (statistics pre-pass, tiles, pyramid).
    """
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from dask.multiprocessing import get_context, initialize_worker_process

    if os.environ.get("PYTHONHASHSEED") in (None, "0"):
        os.environ["PYTHONHASHSEED"] = "6640"  # what dask sets for its own pools: one hash seed in all workers
    pool = ProcessPoolExecutor(workers, mp_context=get_context(),
                               initializer=partial(initialize_worker_process, user_initializer=ignore_interrupts))
    with _interrupts_ignored():
        for _ in range(workers):  # each submit finds no idle worker yet, so it starts one
            pool.submit(int)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class ClusterHandle:
    """What execution needs from a cluster: how to compute, how many workers, memory per worker."""

    kind: str
    workers: int
    memory_per_worker: int
    client: Any = None
    dashboard: str | None = None
    compute_kwargs: dict = field(default_factory=dict)

    def compute(self, *collections: Any, **kwargs: Any) -> Any:
        import dask

        if self.client is not None:
            return self.client.compute(list(collections), sync=True, **kwargs)
        return dask.compute(*collections, **self.compute_kwargs, **kwargs)


def total_memory() -> int:
    """The memory this process may use, as Dask sees it: the least of the machine's memory, the cgroup limit
    (a container's, a Kubernetes pod's) and ``RLIMIT_RSS``; plans split it between workers."""
    from .sysinfo import memory_limit  # distributed.system's MEMORY_LIMIT, without `import distributed`

    return memory_limit()


def cpu_count() -> int:
    """The CPUs this process may use, as Dask sees it: affinity and the cgroup CPU quota included."""
    from .sysinfo import cpu_count as _cpu_count  # dask.system.CPU_COUNT, without `import dask`

    return _cpu_count()


def _profile_size(p: Any) -> tuple[int, int]:
    """(workers, memory per worker) a profile provides at most, from its fields alone."""
    from .humanize import parse_bytes
    from .profiles import slurm_processes

    s = p.settings
    n, mem = cpu_count(), total_memory()
    if p.kind == "slurm":
        procs = slurm_processes(s)
        jobs = s.adaptive.maximum if s.adaptive else (s.jobs or 1)
        return procs * jobs, parse_bytes(s.memory) // procs
    if p.kind == "kubernetes":
        workers = s.adaptive.maximum if s.adaptive else max(1, s.n_workers)
        limits = s.resources.get("limits", {}) or s.resources.get("requests", {})
        m = limits.get("memory")
        try:
            return workers, parse_bytes(str(m)) if m is not None else mem
        except ValueError:
            return workers, mem
    if p.kind == "cuda":
        if s.n_workers:
            k = s.n_workers
        elif s.devices is not None:
            k = len(s.devices.split(",")) if isinstance(s.devices, str) else len(s.devices)
        else:
            k = 1
        return k, mem // k
    return n, mem // n


# --------------------------------------------------------------------------- describe / open




def describe(cluster: str) -> tuple[str, int, int]:
    """(kind, workers, memory per worker) of a cluster string, without starting anything."""
    n = cpu_count()
    mem = total_memory()
    if cluster in ("threads", "sync", "synchronous"):
        return ("threads" if cluster == "threads" else "sync"), (n if cluster == "threads" else 1), mem
    if cluster == "processes":
        return "processes", n, mem // n
    if cluster.startswith("local:"):
        try:
            k = int(cluster.split(":", 1)[1])
        except ValueError:
            raise SpecError(f"cluster {cluster!r}: local:N needs a worker count", path="execution.cluster") from None
        if k < 1:
            raise SpecError("cluster local:N needs N >= 1", path="execution.cluster")
        return "local", k, mem // k
    if cluster.startswith(("tcp://", "tls://")):
        return "remote", n, mem // n
    if cluster.startswith("profile:"):
        from .profiles import load_profile

        workers, per = _profile_size(load_profile(cluster))
        return "profile", workers, per
    raise SpecError(f"unknown cluster {cluster!r}: use threads, processes, local:N, tcp://host:port, "
                    f"tls://host:port or profile:NAME", path="execution.cluster")


def resources(cluster: str, memory_limit: int | None = None) -> tuple[str, int, int]:
    """(kind, workers, memory per worker) that plans are sized for: what ``explain`` and ``cluster show`` print.

    The threads of ``threads`` share one process's memory and each runs one task, so each gets its share;
    ``memory_limit`` (``execution.memory_limit`` in bytes) replaces the cluster's figure. Starts nothing.
    """
    kind, workers, mem = describe(cluster)
    if memory_limit is not None:
        mem = int(memory_limit)
    elif kind == "threads":
        mem = mem // max(workers, 1)
    return kind, workers, mem


def tls_security_from_config() -> Any:
    """A ``distributed.security.Security`` from Dask's TLS configuration, or an InputError saying what is missing."""
    from distributed.security import Security

    sec = Security(require_encryption=True)
    # Security sets its tls_* attributes dynamically from the config, hence getattr.
    missing = [key for key, attr in (("distributed.comm.tls.ca-file", "tls_ca_file"),
                                     ("distributed.comm.tls.client.cert", "tls_client_cert"))
               if not getattr(sec, attr, None)]
    if missing:
        raise InputError("a tls:// scheduler needs TLS certificates in the Dask configuration: set "
                         + ", ".join(missing) + " (and distributed.comm.tls.client.key when the key is a "
                         "separate file), e.g. DASK_DISTRIBUTED__COMM__TLS__CA_FILE=/path/ca.pem")
    return sec


def _connect(address: str, *, security: Any = None, timeout: str | None = None) -> Any:
    """A Client of the scheduler at ``address``; waits ``timeout`` (default: Dask config
    ``convpipe.connect-timeout``, 10 s) for it to answer."""
    import dask
    from distributed import Client

    timeout = timeout or dask.config.get("convpipe.connect-timeout", "10s")
    try:
        return Client(address, timeout=timeout, security=security)
    except (OSError, TimeoutError) as e:
        raise InputError(f"cannot reach the Dask scheduler at {address}: {e}") from None


def _remote_handle(kind: str, client: Any, mem: int) -> ClusterHandle:
    info = client.scheduler_info()
    ws = info.get("workers", {})
    nw = max(1, sum(w.get("nthreads", 1) for w in ws.values()))
    mems = [w.get("memory_limit", 0) for w in ws.values() if w.get("memory_limit")]
    return ClusterHandle(kind, nw, min(mems) if mems else mem, client=client, dashboard=client.dashboard_link)


@contextlib.contextmanager
def _open_profile(cluster: str, log: Callable[[str], Any] | None) -> Iterator[ClusterHandle]:
    from distributed import Client

    from .profiles import import_class, load_profile, profile_cluster_kwargs

    p = load_profile(cluster)
    cls_path, kwargs = profile_cluster_kwargs(p)
    workers, per = _profile_size(p)
    if p.kind == "remote":
        security = None
        if "security" in kwargs:
            from distributed.security import Security

            security = Security(**kwargs["security"])
        elif kwargs["address"].startswith("tls://"):
            security = tls_security_from_config()
        with _connect(kwargs["address"], security=security, timeout=kwargs.get("timeout")) as client:
            yield _remote_handle("remote", client, per)
        return
    cls = import_class(cls_path, p.name)
    try:
        with _interrupts_ignored() if p.kind == "cuda" else contextlib.nullcontext():  # local worker processes
            cm = cls(**kwargs)
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        raise InputError(f"cannot start cluster profile {p.name!r} ({cls_path}): {e}") from None
    with cm as deployed:
        s = p.settings
        if getattr(s, "adaptive", None) is not None:
            if p.kind == "slurm":
                deployed.adapt(minimum_jobs=s.adaptive.minimum, maximum_jobs=s.adaptive.maximum)
            else:
                deployed.adapt(minimum=s.adaptive.minimum, maximum=s.adaptive.maximum)
        elif p.kind == "slurm":
            deployed.scale(jobs=s.jobs or 1)
        with Client(deployed) as client:
            if log:
                log(f"cluster profile {p.name} ({p.kind}): up to {workers} workers, dashboard {client.dashboard_link}")
            yield ClusterHandle(p.kind, workers, per, client=client, dashboard=client.dashboard_link)


@contextlib.contextmanager
def open_cluster(cluster: str = "threads", *, log: Any = None) -> Iterator[ClusterHandle]:
    """Start (or connect to) the cluster for one run; closes what it started on exit."""
    kind, workers, mem = describe(cluster)
    if kind in ("threads", "sync"):
        import dask.local
        import dask.threaded

        # the scheduler itself, not its name: for a name, dask's get_scheduler first imports distributed to
        # look for a current client (0.17-0.25 s of a threaded run's first compute, measured on conv_layer),
        # and "threads"/"sync" mean these two whatever it finds
        get = dask.threaded.get if kind == "threads" else dask.local.get_sync
        yield ClusterHandle(kind, workers, mem, compute_kwargs={"scheduler": get})
        return
    if kind == "processes":
        with _process_pool(workers) as pool:
            yield ClusterHandle(kind, workers, mem, compute_kwargs={"scheduler": "processes", "pool": pool})
        return
    if kind == "profile":
        with _open_profile(cluster, log) as handle:
            yield handle
        return
    import logging

    from distributed import Client, LocalCluster

    if kind == "local":
        # Loopback only: the scheduler and its dashboard are never reachable from other machines.
        # Workers' and the scheduler's own logs stay quiet (a failing task logs 'Compute Failed ... Traceback' at
        # ERROR, a lost worker comm tracebacks): the client re-raises and the CLI reports it in one line.
        with _interrupts_ignored():  # its worker processes start deaf to Ctrl-C, which the run handles
            lc = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=mem,
                              host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL)
        with lc, Client(lc) as client:
            if log:
                log(f"local cluster: {workers} workers, dashboard {client.dashboard_link}")
            yield ClusterHandle(kind, workers, mem, client=client, dashboard=client.dashboard_link)
        return
    if kind == "remote":
        security = tls_security_from_config() if cluster.startswith("tls://") else None
        with _connect(cluster, security=security) as client:
            yield _remote_handle(kind, client, mem)
        return
    raise SpecError(f"cluster {cluster!r} is not available in this build", path="execution.cluster")
