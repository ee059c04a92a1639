"""deploy/: every manifest and profile parses, says what it must, and the profiles become cluster kwargs."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from convpipe.cluster import (
    cluster_script,
    describe,
    load_profile,
    profile_cluster_kwargs,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for d in _docs(path):
            if d.get("kind") != "Kustomization":
                out[(d["kind"], d["metadata"]["name"])] = d
    return out


def test_deploy_tree_is_complete():
    for rel in ("Dockerfile", "Dockerfile.gpu", "slurm/run.sbatch", "profiles/slurm.yaml", "profiles/kubernetes.yaml",
                "profiles/cuda.yaml", "kubernetes/daskcluster.yaml", "kubernetes/service.yaml"):
        assert (DEPLOY / rel).is_file(), rel


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path):
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)
    if path.parent.name == "kubernetes":
        for d in docs:
            assert d["apiVersion"] and d["kind"], path
            if d["kind"] != "Kustomization":
                assert d["metadata"]["name"], path


def test_kustomization_lists_every_manifest():
    kust = _docs(DEPLOY / "kubernetes" / "kustomization.yaml")[0]
    files = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_daskcluster_scheduler_is_internal_only():
    objs = _k8s()
    dc = objs[("DaskCluster", "convpipe-dask")]
    assert dc["apiVersion"] == "kubernetes.dask.org/v1"
    svc = dc["spec"]["scheduler"]["service"]
    assert svc["type"] == "ClusterIP"  # never a LoadBalancer or NodePort
    assert {p["port"] for p in svc["ports"]} == {8786, 8787}
    worker = dc["spec"]["worker"]["spec"]["containers"][0]
    assert worker["command"] == ["dask", "worker"] and dc["spec"]["worker"]["replicas"] >= 1
    assert any(m["mountPath"] == "/data" for m in worker["volumeMounts"])
    pol = objs[("NetworkPolicy", "convpipe-dask-scheduler")]
    assert pol["spec"]["podSelector"]["matchLabels"]["dask.org/component"] == "scheduler"
    for kind, _ in objs:
        assert kind != "Ingress"  # exposing anything is the operator's decision, with TLS


def test_service_deployment_reads_its_token_from_a_secret():
    objs = _k8s()
    dep = objs[("Deployment", "convpipe-service")]
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # SQLite: one writer
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    assert args[0] == "serve"
    opt = {args[i]: args[i + 1] for i in range(1, len(args) - 1) if args[i].startswith("--")}
    token_file = Path(opt["--token-file"])
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (name,) = [n for n, m in mounts.items() if token_file.parent == Path(m["mountPath"])]
    assert mounts[name]["readOnly"] is True
    secret = volumes[name]["secret"]
    assert secret["secretName"] == "convpipe-token" and secret["items"][0]["path"] == token_file.name
    assert not secret["defaultMode"] & 0o007  # not world-readable
    # the service runs jobs on the DaskCluster's in-cluster scheduler, under the shared data root
    assert opt["--cluster"] == f"tcp://{objs[('DaskCluster', 'convpipe-dask')]['metadata']['name']}-scheduler:8786"
    assert opt["--root"] == "/data" and any(m["mountPath"] == "/data" for m in c["volumeMounts"])
    assert Path(opt["--db"]).parent == Path(mounts["state"]["mountPath"])
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    # the Service reaches the container's port and stays inside the cluster
    service = objs[("Service", "convpipe-service")]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port[service["spec"]["ports"][0]["targetPort"]] == int(opt["--port"])
    # and the service's own command line accepts these arguments
    import typer
    from typer.testing import CliRunner

    from convpipe.cli.service import register

    app = typer.Typer()
    register(app)
    res = CliRunner().invoke(app, ["serve", "--help"])
    for flag in opt:
        assert flag in res.output, flag


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles(name):
    ins = _instructions(DEPLOY / name)
    known = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL"}
    assert {w for w, _ in ins} <= known
    assert ins[0][0] == "FROM"
    assert [r for w, r in ins if w == "USER"][-1] not in ("root", "0")
    assert [r for w, r in ins if w == "ENTRYPOINT"] == ['["convpipe"]']
    for w, r in ins:
        if w == "COPY" and "--from" not in r:  # everything copied exists in the build context (the repo)
            for src in shlex.split(r)[:-1]:
                assert (DEPLOY.parent / src).exists(), src
    runs = " ".join(r for w, r in ins if w == "RUN")
    if name == "Dockerfile.gpu":
        assert ins[0][1].startswith("nvidia/cuda:12") and '".[gpu]"' in runs  # cupy-cuda12x + dask-cuda
    else:
        cmd = next(r for w, r in ins if w == "CMD")
        assert '"serve"' in cmd and '"--token-file"' in cmd and '"--root"' in cmd


def test_run_sbatch_is_valid_shell_running_convpipe():
    path = DEPLOY / "slurm" / "run.sbatch"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "#SBATCH --nodes=" in text and "#SBATCH --time=" in text
    assert 'convpipe run "$SPEC" --cluster "$ADDRESS"' in text and "srun" in text
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(path)], check=True)


# --------------------------------------------------------------------------- profiles


def test_shipped_profiles_become_cluster_kwargs():
    cls, kw = profile_cluster_kwargs("profile:slurm")
    assert cls == "dask_jobqueue.SLURMCluster"
    assert kw["cores"] == 8 and kw["processes"] == 2 and kw["memory"] == "32GiB" and kw["queue"] == "normal"
    assert kw["walltime"] == "02:00:00" and kw["job_extra_directives"] == ["--constraint=cpu"]
    assert load_profile("profile:slurm").settings.adaptive.maximum == 8
    assert describe("profile:slurm")[1] == 16  # 2 processes x at most 8 jobs

    cls, kw = profile_cluster_kwargs("profile:kubernetes")
    assert cls == "dask_kubernetes.operator.KubeCluster"
    assert kw["namespace"] == "convpipe" and kw["resources"]["limits"]["memory"] == "8Gi"
    assert kw["scheduler_service_type"] == "ClusterIP"
    assert describe("profile:kubernetes")[1:] == (10, 8 << 30)

    cls, kw = profile_cluster_kwargs("profile:cuda")
    assert cls == "dask_cuda.LocalCUDACluster"
    assert kw["rmm_pool_size"] == "8GiB" and kw["device_memory_limit"] == 0.8
    assert kw["dashboard_address"].startswith("127.0.0.1:")  # a local cluster stays on loopback


def test_kubernetes_profile_can_use_the_daskcluster_manifest(tmp_path):
    prof = tmp_path / "k.yaml"
    prof.write_text(f"kind: kubernetes\nnamespace: convpipe\ncustom_cluster_spec: {DEPLOY}/kubernetes/daskcluster.yaml\n")
    _, kw = profile_cluster_kwargs(f"profile:{prof}")
    assert kw["custom_cluster_spec"]["kind"] == "DaskCluster" and kw["namespace"] == "convpipe"


def test_slurm_script_is_dask_jobqueues():
    pytest.importorskip("dask_jobqueue")
    script = cluster_script("profile:slurm")
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for want in ("#SBATCH -J dask-worker", "#SBATCH -p normal", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G",
                 "#SBATCH -t 02:00:00", "#SBATCH --constraint=cpu", "source ~/convpipe-env/bin/activate"):
        assert want in lines, want
    assert "-m distributed.cli.dask_worker ${DASK_SCHEDULER_ADDRESS} --name dask-worker --nthreads 4 " \
           "--memory-limit 16.00GiB --nworkers 2 --nanny --death-timeout 60 --local-directory $TMPDIR" in script
    assert "tcp://10.0.0.5:8786 --name" in cluster_script("profile:slurm", scheduler="tcp://10.0.0.5:8786")


def test_slurm_script_without_dask_jobqueue_is_one_clear_error(monkeypatch):
    from convpipe.errors import InputError

    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # as if not installed: importing it raises
    monkeypatch.setitem(sys.modules, "dask_jobqueue.slurm", None)
    with pytest.raises(InputError, match=r"dask-jobqueue, which is not installed: pip install 'convpipe\[slurm\]'$"):
        cluster_script("profile:slurm")
    from convpipe.cli.service import main

    assert main(["cluster", "script", "profile:slurm"]) == 1  # the CLI's one line, no traceback


def test_slurm_profile_kwargs_are_accepted_by_slurmcluster():
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster

    _, kw = profile_cluster_kwargs("profile:slurm")
    # The real class with the profile's kwargs; a loopback scheduler, and nothing is submitted (no scale()).
    kw["scheduler_options"] = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    with SLURMCluster(**kw) as cluster:
        text = cluster.job_script()
    assert "#SBATCH --cpus-per-task=8" in text and "--nworkers 2" in text
