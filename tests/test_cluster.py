"""Clusters from ``execution.cluster``: local:N, tls:// and profile:NAME (slurm, kubernetes, cuda, remote)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import convpipe
from convpipe.cluster import (
    describe,
    find_profile,
    load_profile,
    open_cluster,
    profile_cluster_kwargs,
)
from convpipe.errors import InputError, SpecError

STEPS = [{"gaussian": {"sigma": 1.5}}, {"sobel": {"axes": "yx"}}]


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "in.zarr"
    a = zarr.create_array(str(path), shape=(96, 80), chunks=(32, 32), dtype="float32")
    a[:] = np.random.default_rng(3).random((96, 80)).astype("float32")
    return path


def run(image: Path, out: Path, cluster: str, **kw) -> np.ndarray:
    p = convpipe.load({"convpipe": 1, "input": {"url": str(image)}, "output": {"url": str(out)}, "steps": STEPS})
    res = p.run(cluster=cluster, **kw)
    return zarr.open_array(res.output_url, mode="r")[...]


def test_local2_equals_threads_and_stays_on_loopback(image, tmp_path):
    logs: list[str] = []
    on_cluster = run(image, tmp_path / "local.zarr", "local:2", log=logs.append)
    np.testing.assert_array_equal(on_cluster, run(image, tmp_path / "threads.zarr", "threads"))
    dash = [m for m in logs if "dashboard" in m]
    assert dash and "2 workers" in dash[0] and "http://127.0.0.1:" in dash[0], logs


@pytest.fixture()
def tls_scheduler(tmp_path):
    """A TLS-only Dask scheduler + worker on 127.0.0.1, and certificate files for clients."""
    from distributed import LocalCluster
    from distributed.security import Security

    sec = Security.temporary()  # a throwaway self-signed CA; the same cert serves every role here
    files = {}
    for name, pem in (("ca.pem", sec.tls_ca_file), ("cert.pem", sec.tls_client_cert), ("key.pem", sec.tls_client_key)):
        (tmp_path / name).write_text(pem)
        files[name] = tmp_path / name
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tls", host="127.0.0.1",
                      security=sec, dashboard_address=None) as lc:
        assert lc.scheduler_address.startswith("tls://127.0.0.1:")
        yield lc.scheduler_address, files


def test_tls_scheduler_from_dask_config(tls_scheduler, image, tmp_path):
    import dask

    address, files = tls_scheduler
    with pytest.raises(InputError, match="ca-file"):  # no certificates configured: a clear error, no hang
        with open_cluster(address):
            pass
    with dask.config.set({"distributed.comm.tls.ca-file": str(files["ca.pem"]),
                          "distributed.comm.tls.client.cert": str(files["cert.pem"]),
                          "distributed.comm.tls.client.key": str(files["key.pem"])}):
        with open_cluster(address) as handle:
            assert handle.kind == "remote" and handle.workers == 2
        got = run(image, tmp_path / "tls.zarr", address)
    np.testing.assert_array_equal(got, run(image, tmp_path / "threads.zarr", "threads"))


def test_remote_profile_with_tls_files(tls_scheduler, tmp_path):
    import dask.array as da

    address, _ = tls_scheduler
    prof = tmp_path / "profiles" / "secure.yaml"
    prof.parent.mkdir()
    # relative certificate paths resolve against the profile's folder
    prof.write_text(yaml.safe_dump({"kind": "remote", "address": address,
                                    "tls": {"ca_file": "../ca.pem", "cert": "../cert.pem", "key": "../key.pem"}}))
    cls, kw = profile_cluster_kwargs(f"profile:{prof}")
    assert cls == "distributed.Client" and kw["security"]["tls_ca_file"] == str(prof.parent / "../ca.pem")
    with open_cluster(f"profile:{prof}") as handle:
        assert handle.client is not None
        assert int(handle.compute(da.ones((10, 10), chunks=5).sum())[0]) == 100


def test_unreachable_scheduler_is_an_input_error():
    import socket

    import dask

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"convpipe.connect-timeout": "1s"}):
        with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
            with open_cluster(f"tcp://127.0.0.1:{port}"):
                pass


# --------------------------------------------------------------------------- profiles


def test_profiles_by_name_path_and_search_path(tmp_path, monkeypatch):
    assert find_profile("profile:slurm").name == "slurm.yaml"  # the shipped deploy/profiles
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "gpu-box.yaml").write_text("kind: cuda\ndevices: [0, 1]\n")
    monkeypatch.setenv("CONVPIPE_PROFILES", str(mine))
    p = load_profile("profile:gpu-box")
    assert p.kind == "cuda" and p.source == mine / "gpu-box.yaml"
    assert profile_cluster_kwargs(p)[1]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert describe("profile:gpu-box")[:2] == ("profile", 2)
    assert load_profile(f"profile:{mine / 'gpu-box.yaml'}").kind == "cuda"


@pytest.mark.parametrize("text, match, line", [
    ("kind: slurm\ncores: 4\nmemory: 8GiB\nwaltime: '01:00:00'\n", "unknown parameter 'waltime'", 4),
    ("kind: slurm\ncores: 4\nmemory: lots\n", "not an amount of memory", 3),
    ("kind: pbs\n", "kind 'pbs' is not one of", 1),
    ("kind: remote\naddress: http://x:1\n", "must start with tcp:// or tls://", 2),
    ("kind: slurm\ncores: 4\nmemory: 8GiB\nadaptive: {maximum: 0}\n", "greater than or equal to 1", 4),
    ("- just\n- a list\n", "a mapping with a 'kind'", 1),
])
def test_bad_profiles_name_the_field_and_line(tmp_path, text, match, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=match) as e:
        load_profile(f"profile:{path}")
    assert e.value.line == line and str(path) in e.value.format()


def test_unknown_profiles(tmp_path):
    with pytest.raises(SpecError, match="unknown cluster profile 'nope'.*known profiles:.*slurm"):
        describe("profile:nope")
    with pytest.raises(SpecError, match="not found"):
        load_profile(f"profile:{tmp_path}/missing.yaml")
    with pytest.raises(SpecError, match="may hold only"):
        load_profile("profile:bad name")
    with pytest.raises(SpecError, match="needs a name"):
        load_profile("profile:")


def test_profile_kwargs_need_no_optional_package(monkeypatch):
    for mod in ("dask_jobqueue", "dask_kubernetes", "dask_cuda"):
        monkeypatch.setitem(sys.modules, mod, None)  # as if not installed: importing it raises ImportError
    cls, kw = profile_cluster_kwargs({"kind": "slurm", "cores": 8, "memory": "16GiB",
                                      "adaptive": {"minimum": 1, "maximum": 4}})
    assert cls == "dask_jobqueue.SLURMCluster"
    assert kw["cores"] == 8 and kw["memory"] == "16GiB" and kw["processes"] == 4  # dask-jobqueue's default split
    assert "adaptive" not in kw  # applied after start, not a constructor argument
    assert describe("profile:slurm")[1:] == (2 * 8, (32 << 30) // 2)  # 2 processes x 8 jobs, 32 GiB / 2
    cls, kw = profile_cluster_kwargs({"kind": "kubernetes", "n_workers": 3, "image": "x:1"})
    assert cls == "dask_kubernetes.operator.KubeCluster" and kw["n_workers"] == 3 and kw["image"] == "x:1"
    cls, kw = profile_cluster_kwargs({"kind": "cuda", "rmm_pool_size": "4GiB"})
    assert cls == "dask_cuda.LocalCUDACluster" and kw["rmm_pool_size"] == "4GiB"


@pytest.mark.parametrize("profile, extra", [("slurm", "slurm"), ("kubernetes", "kubernetes"), ("cuda", "gpu")])
def test_missing_extra_names_what_to_install(monkeypatch, profile, extra):
    for mod in ("dask_jobqueue", "dask_kubernetes", "dask_kubernetes.operator", "dask_cuda"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(InputError, match=rf"pip install 'convpipe\[{extra}\]'"):
        with open_cluster(f"profile:{profile}"):
            pass


def test_cluster_commands(capsys):
    from convpipe.cli.service import main

    if importlib.util.find_spec("dask_jobqueue") is not None:  # the batch script is dask-jobqueue's
        assert main(["cluster", "script", "profile:slurm"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("#!/usr/bin/env bash") and "#SBATCH --cpus-per-task=8" in out
        assert "${DASK_SCHEDULER_ADDRESS}" in out
        assert main(["cluster", "script", "slurm", "--scheduler", "tcp://10.0.0.5:8786"]) == 0
        assert "tcp://10.0.0.5:8786 --name" in capsys.readouterr().out
    assert main(["cluster", "script", "profile:cuda"]) == 1
    assert "only SLURM profiles" in capsys.readouterr().err
    assert main(["cluster", "show", "local:3"]) == 0
    assert "workers:    3" in capsys.readouterr().out
    assert main(["cluster", "show", "profile:kubernetes"]) == 0
    assert "dask_kubernetes.operator.KubeCluster" in capsys.readouterr().out
    assert main(["cluster", "show", "profile:nope"]) == 1
    assert "unknown cluster profile" in capsys.readouterr().err


def test_memory_and_cpus_are_dasks_container_aware_numbers():
    """Plans use what Dask detects (cgroup limits of a container or Kubernetes pod, CPU affinity and quota,
    RLIMIT_RSS), not the host's totals: in a child whose RSS limit is 1 GiB, a worker has 1 GiB at most."""
    import resource
    import subprocess

    import dask.system
    import distributed.system

    assert describe("threads")[1:] == (dask.system.CPU_COUNT, distributed.system.MEMORY_LIMIT)
    assert describe("local:2")[2] == distributed.system.MEMORY_LIMIT // 2

    def limit():
        resource.setrlimit(resource.RLIMIT_RSS, (1 << 30, 1 << 30))  # Dask reads the hard limit

    code = ("from convpipe.cluster import describe; import convpipe; p = convpipe.load({'convpipe': 1, "
            "'input': {'url': 'x.zarr'}, 'steps': [{'gaussian': {'sigma': 1}}]}); "
            "from convpipe.run.prepare import cluster_resources; "
            "print(describe('threads')[2], cluster_resources(p.spec)[1] * describe('threads')[1])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit, check=False,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    total, split = (int(v) for v in r.stdout.split())
    assert total == 1 << 30 and split <= 1 << 30


@pytest.mark.parametrize("cluster", ["threads", "sync", "processes", "local:3", "tcp://127.0.0.1:8786",
                                     "profile:slurm", "profile:kubernetes", "profile:cuda"])
def test_cluster_show_and_explain_agree_on_memory_per_worker(cluster, image, capsys):
    """Both print convpipe.cluster.resources: the workers and memory per worker the plan is sized for
    (`threads` once showed the whole machine's memory while explain planned with a thread's share)."""
    from dask.utils import format_bytes

    from convpipe.cli.service import main

    assert main(["cluster", "show", cluster]) == 0
    shown = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines() if ":" in line)
    plan = convpipe.load({"convpipe": 1, "input": str(image), "steps": STEPS}).explain(cluster=cluster)
    assert int(shown["workers"]) == plan.workers
    assert shown["memory"].strip() == f"{format_bytes(plan.memory_per_worker)} per worker"
    assert f"{plan.workers} workers, {format_bytes(plan.memory_per_worker)} each" in str(plan)
