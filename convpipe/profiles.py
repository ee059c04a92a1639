"""Deployment profiles of ``execution.cluster: profile:NAME``: find, validate, and turn into cluster kwargs.

A profile is a YAML file: ``kind: slurm`` (dask-jobqueue's ``SLURMCluster``), ``kind: kubernetes`` (the
dask-kubernetes operator's ``KubeCluster``), ``kind: cuda`` (dask-cuda's ``LocalCUDACluster``) or
``kind: remote`` (a scheduler address with TLS files). Named profiles are looked up in
``$CONVPIPE_PROFILES``, ``./deploy/profiles``, ``~/.config/convpipe/profiles`` and the ``deploy/profiles``
folder of a source checkout. Nothing here needs the optional packages except :func:`cluster_script`
(dask-jobqueue renders the batch script) and :func:`import_class` (which names the extra to install).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InputError, SpecError
from .spec_cluster import PROFILE_NAME
from .spec_messages import _pydantic_errors
from .spec_yaml import parse_yaml

#: profile kind -> (class the profile builds, the pip extra that provides it)
PROFILE_KINDS: dict[str, tuple[str, str | None]] = {
    "slurm": ("dask_jobqueue.SLURMCluster", "slurm"),
    "kubernetes": ("dask_kubernetes.operator.KubeCluster", "kubernetes"),
    "cuda": ("dask_cuda.LocalCUDACluster", "gpu"),
    "remote": ("distributed.Client", None),
}

#: the distribution that provides each optional module, for the error message
_PACKAGE_OF = {"dask_jobqueue": "dask-jobqueue", "dask_kubernetes": "dask-kubernetes", "dask_cuda": "dask-cuda"}


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
    from .humanize import parse_bytes  # dask.utils.parse_bytes, without importing dask

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
    if not PROFILE_NAME.match(name) or len(name) > 200:
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


def slurm_processes(s: SlurmProfile) -> int:
    """Worker processes per SLURM job: the profile's, else dask-jobqueue's default split of its cores."""
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
        kw["processes"] = slurm_processes(s)
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


def import_class(cls_path: str, profile_name: str) -> Any:
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


def cluster_script(profile: str | os.PathLike | dict | Profile, *, scheduler: str = SCHEDULER_PLACEHOLDER) -> str:
    """The SLURM batch script a ``kind: slurm`` profile submits for each worker job.

    Rendered by dask-jobqueue's ``SLURMJob.job_script()``, what ``SLURMCluster.job_script()`` calls, so the
    script is exactly what the cluster submits; the job alone renders text, where constructing a
    ``SLURMCluster`` would start a scheduler just to print it. Nothing is started or submitted.

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
        When the profile is not a SLURM profile, or dask-jobqueue (the ``slurm`` extra) is not installed.
    """
    p = load_profile(profile)
    if p.kind != "slurm":
        raise InputError(f"cluster profile {p.name!r} is kind {p.kind!r}: only SLURM profiles have a batch script")
    _, kwargs = profile_cluster_kwargs(p)
    try:
        from dask_jobqueue.slurm import SLURMJob
    except ImportError:
        raise InputError(f"the batch script of cluster profile {p.name!r} is rendered by dask-jobqueue, which is "
                         "not installed: pip install 'convpipe[slurm]'") from None
    job_kwargs = {k: v for k, v in kwargs.items() if k != "scheduler_options"}
    return SLURMJob(scheduler=scheduler, name="dask-worker", **job_kwargs).job_script()
