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
    a deployment profile (YAML): ``kind: slurm`` (dask-jobqueue), ``kind: kubernetes`` (the
    dask-kubernetes operator), ``kind: cuda`` (dask-cuda) or ``kind: remote`` (a scheduler address with
    TLS files). Named profiles are looked up in ``$CONVPIPE_PROFILES``, ``./deploy/profiles``,
    ``~/.config/convpipe/profiles`` and the ``deploy/profiles`` folder of a source checkout.

The SLURM, Kubernetes and CUDA packages are optional extras; they are imported only when a profile needs
them, and a missing one is an :class:`~convpipe.errors.InputError` that names the extra to install.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InputError, SpecError


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
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- profiles

#: profile kind -> (class the profile builds, the pip extra that provides it)
PROFILE_KINDS: dict[str, tuple[str, str | None]] = {
    "slurm": ("dask_jobqueue.SLURMCluster", "slurm"),
    "kubernetes": ("dask_kubernetes.operator.KubeCluster", "kubernetes"),
    "cuda": ("dask_cuda.LocalCUDACluster", "gpu"),
    "remote": ("distributed.Client", None),
}

#: the distribution that provides each optional module, for the error message
_PACKAGE_OF = {"dask_jobqueue": "dask-jobqueue", "dask_kubernetes": "dask-kubernetes", "dask_cuda": "dask-cuda"}

_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: placeholder for the scheduler address in a rendered SLURM script; a shell variable, so the script is
#: still valid shell (dask-jobqueue fills in the real address when it submits the job itself)
SCHEDULER_PLACEHOLDER = "${DASK_SCHEDULER_ADDRESS}"


class _ProfileModel(BaseModel):
    # defer_build: validators are built on first use, not at import (every `convpipe run` imports this module)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    description: str = Field("", description="free text, shown by `convpipe cluster` commands")


class Adaptive(BaseModel):
    """Adaptive scaling bounds: SLURM jobs for ``kind: slurm``, worker pods for ``kind: kubernetes``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    minimum: int = Field(0, ge=0)
    maximum: int = Field(ge=1)


def _check_bytes(v: Any) -> Any:
    from dask.utils import parse_bytes

    if v is None or v == "auto":
        return v
    try:
        parse_bytes(v)
    except (ValueError, TypeError):
        raise ValueError(f"{v!r} is not an amount of memory like '16GiB'") from None
    return v


class SlurmProfile(_ProfileModel):
    """``kind: slurm``: keyword arguments of ``dask_jobqueue.SLURMCluster`` (one SLURM job per entry)."""

    kind: Literal["slurm"]
    cores: int = Field(ge=1, description="cores per SLURM job")
    memory: str = Field(description="memory per SLURM job, e.g. 32GiB")
    processes: int | None = Field(None, ge=1, description="worker processes per job (default: dask-jobqueue's)")
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    job_name: str = "dask-worker"
    job_extra_directives: list[str] = Field(default_factory=list)
    job_directives_skip: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)
    worker_extra_args: list[str] = Field(default_factory=list)
    local_directory: str | None = None
    log_directory: str | None = None
    interface: str | None = None
    python: str | None = None
    death_timeout: int | None = 60
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    jobs: int | None = Field(None, ge=1, description="a fixed number of jobs (instead of adaptive)")
    adaptive: Adaptive | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        return _check_bytes(v)


class KubernetesProfile(_ProfileModel):
    """``kind: kubernetes``: keyword arguments of ``dask_kubernetes.operator.KubeCluster``."""

    kind: Literal["kubernetes"]
    name: str = "convpipe"
    namespace: str | None = None
    image: str = "convpipe:0.1.0"
    n_workers: int = Field(2, ge=0)
    resources: dict[str, dict[str, str | int]] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    worker_command: str | list[str] | None = None
    scheduler_service_type: str = "ClusterIP"
    port_forward_cluster_ip: bool | None = None
    idle_timeout: int | None = None
    shutdown_on_close: bool | None = None
    custom_cluster_spec: str | None = Field(
        None, description="a DaskCluster manifest (path relative to the profile) used instead of the fields")
    adaptive: Adaptive | None = None


class CudaProfile(_ProfileModel):
    """``kind: cuda``: keyword arguments of ``dask_cuda.LocalCUDACluster`` (one worker per GPU)."""

    kind: Literal["cuda"]
    devices: str | list[int] | None = Field(None, description="CUDA_VISIBLE_DEVICES, e.g. '0,1' or [0, 1]")
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | None = "auto"
    device_memory_limit: str | float | None = None
    rmm_pool_size: str | None = None
    protocol: Literal["tcp", "ucx"] | None = None
    dashboard_address: str = "127.0.0.1:0"

    @field_validator("memory_limit", "rmm_pool_size")
    @classmethod
    def _mem(cls, v: str | None) -> str | None:
        return _check_bytes(v)


class TlsFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    ca_file: str
    cert: str
    key: str


class RemoteProfile(_ProfileModel):
    """``kind: remote``: an existing scheduler, optionally over TLS with these certificate files."""

    kind: Literal["remote"]
    address: str
    tls: TlsFiles | None = None
    timeout: str | None = Field(None, description="how long to wait for the scheduler (default 10 s)")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not v.startswith(("tcp://", "tls://")):
            raise ValueError(f"address {v!r} must start with tcp:// or tls://")
        return v


_MODELS: dict[str, type[_ProfileModel]] = {
    "slurm": SlurmProfile, "kubernetes": KubernetesProfile, "cuda": CudaProfile, "remote": RemoteProfile,
}


@dataclass(frozen=True)
class Profile:
    """A loaded deployment profile.

    Attributes
    ----------
    name : str
        The profile's name (file stem).
    kind : str
        One of :data:`PROFILE_KINDS`.
    settings : pydantic model
        The validated fields (:class:`SlurmProfile`, :class:`KubernetesProfile`, ...).
    source : Path or None
        The file it came from (relative paths in it resolve against its folder).
    """

    name: str
    kind: str
    settings: Any
    source: Path | None = None

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source is not None else Path.cwd()


def profile_search_path() -> list[Path]:
    """Folders searched for ``profile:NAME``, first match wins."""
    dirs = [Path(p) for p in os.environ.get("CONVPIPE_PROFILES", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "deploy" / "profiles")
    dirs.append(Path.home() / ".config" / "convpipe" / "profiles")
    # A source checkout ships its profiles beside the package; an installed wheel has none there.
    dirs.append(Path(__file__).resolve().parent.parent / "deploy" / "profiles")
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL
        return False


def find_profile(ref: str) -> Path:
    """The file of ``profile:NAME``, ``NAME`` or a path to a profile YAML.

    Raises
    ------
    SpecError
        When no such profile exists (the message lists where it looked and what is there).
    """
    name = ref.removeprefix("profile:")
    if not name:
        raise SpecError("profile: needs a name or a path, e.g. profile:slurm", path="execution.cluster")
    if "/" in name or os.sep in name or name.endswith((".yaml", ".yml")):
        path = Path(name).expanduser()
        if not _is_file(path):
            raise SpecError(f"cluster profile file not found: {path}", path="execution.cluster")
        return path
    if not _PROFILE_NAME.match(name) or len(name) > 200:
        raise SpecError(f"profile name {name!r} may hold only letters, digits, '.', '_' and '-'",
                        path="execution.cluster")
    dirs = profile_search_path()
    for d in dirs:
        for ext in (".yaml", ".yml"):
            if _is_file(d / (name + ext)):
                return d / (name + ext)
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.y*ml")})
    hint = f"; known profiles: {', '.join(known)}" if known else ""
    raise SpecError(f"unknown cluster profile {name!r}: no {name}.yaml in "
                    f"{', '.join(str(d) for d in dirs)}{hint}", path="execution.cluster")


def load_profile(profile: str | os.PathLike | dict | Profile) -> Profile:
    """Load and validate a profile from ``profile:NAME``, a name, a path or a dict.

    Raises
    ------
    SpecError
        For a missing file, invalid YAML, an unknown ``kind`` or a bad field (with its line).
    """
    from .spec import _pydantic_errors, parse_yaml

    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, dict):
        data, source, name = profile, None, str(profile.get("kind", "profile"))
        lines: dict[tuple, int] = {}
    else:
        path = find_profile(str(profile)) if not isinstance(profile, os.PathLike) else Path(profile)
        from .limits import MAX_SPEC_BYTES

        try:
            with open(path, "rb") as f:
                data = f.read(MAX_SPEC_BYTES + 1)
            if len(data) > MAX_SPEC_BYTES:
                raise SpecError(f"cluster profile {path} is larger than {MAX_SPEC_BYTES} bytes", path=str(path))
            text = data.decode("utf-8")
        except OSError as e:
            raise SpecError(f"cannot read cluster profile: {e}", path=str(path)) from None
        except UnicodeDecodeError:
            raise SpecError(f"cluster profile {path} is not UTF-8 text (a YAML file)", path=str(path)) from None
        data, lines = parse_yaml(text, str(path))
        source, name = path, path.stem
    where = str(source) if source is not None else "profile"
    if not isinstance(data, dict):
        raise SpecError("a cluster profile is a mapping with a 'kind'", path=where, line=1)
    kind = data.get("kind")
    if kind not in _MODELS:
        raise SpecError(f"kind {kind!r} is not one of {', '.join(_MODELS)}", path=f"{where}: kind",
                        line=lines.get(("kind",)))
    try:
        settings = _MODELS[kind].model_validate(data)
    except ValidationError as e:
        from .errors import SpecErrors

        errs = [SpecError(err.message, path=f"{where}: {err.path}", line=err.line)
                for err in _pydantic_errors(e, (), lines)]
        raise (SpecErrors(errs) if len(errs) > 1 else errs[0]) from None
    return Profile(name=name, kind=kind, settings=settings, source=source)


def _slurm_processes(s: SlurmProfile) -> int:
    from distributed.deploy.utils import nprocesses_nthreads

    return s.processes or nprocesses_nthreads(s.cores)[0]


def profile_cluster_kwargs(profile: str | os.PathLike | dict | Profile) -> tuple[str, dict[str, Any]]:
    """The class a profile builds and its keyword arguments; needs none of the optional packages.

    Scaling (``adaptive`` and ``jobs``) is not a constructor argument: :func:`open_cluster` applies it to
    the cluster after it starts.

    Returns
    -------
    (str, dict)
        The dotted class path (e.g. ``"dask_jobqueue.SLURMCluster"``) and its keyword arguments.
    """
    p = load_profile(profile)
    s = p.settings
    cls_path = PROFILE_KINDS[p.kind][0]
    skip = {"kind", "description", "adaptive", "jobs"}
    if p.kind == "slurm":
        kw = s.model_dump(exclude=skip)
        kw["processes"] = _slurm_processes(s)
        return cls_path, {k: v for k, v in kw.items() if v is not None and v != [] and v != {}}
    if p.kind == "kubernetes":
        kw = s.model_dump(exclude=skip | {"custom_cluster_spec"})
        if s.custom_cluster_spec:
            import yaml

            spec_path = (p.base_dir / s.custom_cluster_spec).expanduser()
            try:
                docs = [d for d in yaml.safe_load_all(spec_path.read_text()) if isinstance(d, dict)]
            except (OSError, yaml.YAMLError) as e:
                raise SpecError(f"cannot read custom_cluster_spec {spec_path}: {e}",
                                path=f"{p.source}: custom_cluster_spec") from None
            # A manifest file may hold more than the DaskCluster (e.g. its NetworkPolicy): take that one.
            found = [d for d in docs if d.get("kind") == "DaskCluster"]
            if not found:
                raise SpecError(f"{spec_path} holds no DaskCluster resource", path=f"{p.source}: custom_cluster_spec")
            kw = {"custom_cluster_spec": found[0], "namespace": s.namespace}
        return cls_path, {k: v for k, v in kw.items() if v is not None}
    if p.kind == "cuda":
        kw = s.model_dump(exclude=skip | {"devices"})
        if s.devices is not None:
            kw["CUDA_VISIBLE_DEVICES"] = (s.devices if isinstance(s.devices, str)
                                          else ",".join(str(d) for d in s.devices))
        return cls_path, {k: v for k, v in kw.items() if v is not None}
    # remote
    kw = {"address": s.address}
    if s.timeout is not None:
        kw["timeout"] = s.timeout
    if s.tls is not None:
        kw["security"] = {
            "tls_ca_file": str(p.base_dir / s.tls.ca_file),
            "tls_client_cert": str(p.base_dir / s.tls.cert),
            "tls_client_key": str(p.base_dir / s.tls.key),
            "require_encryption": True,
        }
    return cls_path, kw


def _import_class(cls_path: str, profile_name: str) -> Any:
    """Import an optional cluster class; a missing package names the extra that provides it."""
    module, _, attr = cls_path.rpartition(".")
    top = module.split(".")[0]
    extra = next((x for k, (c, x) in PROFILE_KINDS.items() if c == cls_path), None)
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as e:
        pkg = _PACKAGE_OF.get(top, top)
        raise InputError(f"cluster profile {profile_name!r} needs {pkg}, which is not installed "
                         f"({e}): pip install 'convpipe[{extra}]'") from None


def _slurm_format_bytes_ceil(n: int) -> str:
    """SLURM's memory notation, rounded up, as dask-jobqueue writes it (K/M/G meaning KiB/MiB/GiB)."""
    for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= size:
            return f"{math.ceil(n / size)}{unit}"
    return "1K"


def _render_slurm_script(s: SlurmProfile, kwargs: dict[str, Any], scheduler: str) -> str:
    """The batch script dask-jobqueue's ``SLURMJob.job_script()`` writes, rendered without it."""
    import sys

    from dask.utils import format_bytes, parse_bytes

    processes = kwargs["processes"]
    memory = parse_bytes(s.memory)
    header = [f"#SBATCH -J {s.job_name}"]
    if s.log_directory is not None:
        header += [f"#SBATCH -e {s.log_directory}/{s.job_name}-%J.err",
                   f"#SBATCH -o {s.log_directory}/{s.job_name}-%J.out"]
    if s.queue is not None:
        header.append(f"#SBATCH -p {s.queue}")
    if s.account is not None:
        header.append(f"#SBATCH -A {s.account}")
    header += ["#SBATCH -n 1", f"#SBATCH --cpus-per-task={s.cores}", f"#SBATCH --mem={_slurm_format_bytes_ceil(memory)}"]
    if s.walltime is not None:
        header.append(f"#SBATCH -t {s.walltime}")
    header = [h for h in header if not any(skip in h for skip in s.job_directives_skip)]
    header += [f"#SBATCH {d}" for d in s.job_extra_directives]
    cmd = [f"{s.python or sys.executable} -m distributed.cli.dask_worker", scheduler, "--name", "dask-worker",
           "--nthreads", str(s.cores // processes),
           "--memory-limit", format_bytes(memory / processes).replace(" ", "")]
    if processes > 1:
        cmd += ["--nworkers", str(processes)]
    cmd.append("--nanny")
    if s.death_timeout is not None:
        cmd += ["--death-timeout", str(s.death_timeout)]
    if s.local_directory is not None:
        cmd += ["--local-directory", s.local_directory]
    extra = list(s.worker_extra_args)
    if s.interface:
        extra += ["--interface", s.interface]
    cmd += extra
    prologue = "\n".join(x for x in s.job_script_prologue if x)
    return "#!/usr/bin/env bash\n\n" + "\n".join(header) + f"\n{prologue}\n" + " ".join(cmd) + "\n"


def cluster_script(profile: str | os.PathLike | dict | Profile, *, scheduler: str = SCHEDULER_PLACEHOLDER) -> str:
    """The SLURM batch script a ``kind: slurm`` profile submits for each worker job.

    Uses dask-jobqueue's own ``job_script()`` when it is installed (so the script is exactly what it
    submits) and renders the same script without it otherwise. Nothing is started or submitted.

    Parameters
    ----------
    profile
        ``profile:NAME``, a name, a path or a dict.
    scheduler
        The scheduler address written into the worker command; by default the shell variable
        ``${DASK_SCHEDULER_ADDRESS}``.

    Raises
    ------
    InputError
        When the profile is not a SLURM profile.
    """
    p = load_profile(profile)
    if p.kind != "slurm":
        raise InputError(f"cluster profile {p.name!r} is kind {p.kind!r}: only SLURM profiles have a batch script")
    _, kwargs = profile_cluster_kwargs(p)
    try:
        from dask_jobqueue.slurm import SLURMJob
    except ImportError:
        return _render_slurm_script(p.settings, kwargs, scheduler)
    job_kwargs = {k: v for k, v in kwargs.items() if k not in ("scheduler_options",)}
    # SLURMJob only renders text; constructing SLURMCluster would start a scheduler just to print this.
    return SLURMJob(scheduler=scheduler, name="dask-worker", **job_kwargs).job_script()


def _profile_size(p: Profile) -> tuple[int, int]:
    """(workers, memory per worker) a profile provides at most, from its fields alone."""
    from dask.utils import parse_bytes

    s = p.settings
    n, mem = cpu_count(), total_memory()
    if p.kind == "slurm":
        procs = _slurm_processes(s)
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


def check_cluster(cluster: str) -> str | None:
    """Check a cluster string's form without reading or connecting to anything (what ``validate`` parses).

    Returns the profile file a ``profile:PATH`` names (``None`` for every other form, a profile name
    included: names are looked up when the spec is bound). Raises SpecError (path ``execution.cluster``).
    """
    if not isinstance(cluster, str) or not cluster:
        raise SpecError("cluster is empty: use threads, processes, local:N, tcp://host:port, tls://host:port "
                        "or profile:NAME", path="execution.cluster")
    if cluster in ("threads", "sync", "synchronous", "processes"):
        return None
    if cluster.startswith("local:"):
        n = cluster.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise SpecError(f"cluster {cluster!r}: local:N needs a worker count N >= 1", path="execution.cluster")
        if int(n) > 4096:
            raise SpecError(f"cluster {cluster!r}: at most 4096 local workers", path="execution.cluster")
        return None
    if cluster.startswith(("tcp://", "tls://")):
        from urllib.parse import urlsplit

        scheme = cluster[:3]
        try:
            parts = urlsplit(cluster)
            host, port = parts.hostname, parts.port
        except ValueError as e:  # a port that is not a number, or out of range
            raise SpecError(f"cluster {cluster!r}: {e} ({scheme}://host:port)", path="execution.cluster") from None
        if not host:
            raise SpecError(f"cluster {cluster!r} names no host ({scheme}://host:port)", path="execution.cluster")
        if port is None or port == 0:
            raise SpecError(f"cluster {cluster!r} has no port: a Dask scheduler address is {scheme}://{host}:PORT "
                            "(8786 by default)", path="execution.cluster")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
            raise SpecError(f"cluster {cluster!r}: a scheduler address is {scheme}://host:port and nothing more",
                            path="execution.cluster")
        return None
    if cluster.startswith("profile:"):
        name = cluster.removeprefix("profile:")
        if not name:
            raise SpecError("profile: needs a name or a path, e.g. profile:slurm", path="execution.cluster")
        if "/" in name or os.sep in name or name.endswith((".yaml", ".yml")):
            if "\x00" in name:
                raise SpecError("a profile path holds a NUL character", path="execution.cluster")
            return name
        if not _PROFILE_NAME.match(name) or len(name) > 200:
            raise SpecError(f"profile name {name[:60]!r} may hold only letters, digits, '.', '_' and '-' "
                            "(at most 200)", path="execution.cluster")
        return None
    raise SpecError(f"unknown cluster {cluster!r}: use threads, processes, local:N, tcp://host:port, "
                    f"tls://host:port or profile:NAME", path="execution.cluster")


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
        workers, per = _profile_size(load_profile(cluster))
        return "profile", workers, per
    raise SpecError(f"unknown cluster {cluster!r}: use threads, processes, local:N, tcp://host:port, "
                    f"tls://host:port or profile:NAME", path="execution.cluster")


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
    cls = _import_class(cls_path, p.name)
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
        yield ClusterHandle(kind, workers, mem,
                            compute_kwargs={"scheduler": "threads" if kind == "threads" else "sync"})
        return
    if kind == "processes":
        with _process_pool(workers) as pool:
            yield ClusterHandle(kind, workers, mem, compute_kwargs={"scheduler": "processes", "pool": pool})
        return
    if kind == "profile":
        with _open_profile(cluster, log) as handle:
            yield handle
        return
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
