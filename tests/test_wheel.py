"""A wheel of convpipe installs and runs ``convpipe demo`` from any folder: the example specs, ``py.typed``
and the report templates ship as package data.

The wheel is built from this checkout (pip, as a user would), installed without dependencies into a fresh
virtual environment that borrows this environment's installed packages through a ``.pth`` line (a plain
path: the editable install of convpipe there, a ``.pth`` hook itself, stays inactive), and its console
script runs the demo from an unrelated folder with no ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, timeout=600, **kw)


def _build_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "-q", "-w", dest]
    # offline and fast when this environment can build it; else pip's isolated build (setuptools from the index)
    import setuptools

    if int(setuptools.__version__.split(".")[0]) >= 77:  # SPDX `license = "..."` (PEP 639) needs 77
        cmd.append("--no-build-isolation")
    r = _run(cmd)
    assert r.returncode == 0, r.stdout + r.stderr
    # a quiet build: setuptools once warned three times that the license table is deprecated
    noise = [ln for ln in (r.stdout + r.stderr).splitlines() if "license" in ln.lower() or "Warning" in ln]
    assert not noise, "\n".join(noise)
    (whl,) = dest.glob("convpipe-*.whl")
    return whl


def test_wheel_installs_and_runs_the_demo_from_any_folder(tmp_path):
    whl = _build_wheel(tmp_path / "dist")
    names = set(zipfile.ZipFile(whl).namelist())
    shipped = sorted(n.removeprefix("convpipe/pipelines/") for n in names if n.startswith("convpipe/pipelines/"))
    # the specs and the .npy kernels and weights they read beside them
    assert shipped == sorted(p.name for g in ("*.yaml", "*.npy") for p in (REPO / "pipelines").glob(g))
    assert "convpipe/py.typed" in names and "convpipe/report/templates/report.html.j2" in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: BSD-3-Clause" in zipfile.ZipFile(whl).read(meta).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, symlinks=os.name != "nt")
    py = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    borrowed = [p for p in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")} if p]
    (site / "borrowed-test-env.pth").write_text("\n".join(borrowed) + "\n")
    r = _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", whl])
    assert r.returncode == 0, r.stdout + r.stderr

    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    r = _run([py, "-c", "import convpipe, json; print(json.dumps(convpipe.__file__))"], cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)).is_relative_to(site), r.stdout  # the wheel's copy, not this checkout
    # the shipped JSON Schema document is current in the installed copy: schema prints it without pydantic
    r = _run([py, "-c", "import convpipe.schema_doc as d; print(d.is_current())"], cwd=elsewhere, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stdout + r.stderr

    script = env_dir / ("Scripts/convpipe.exe" if os.name == "nt" else "bin/convpipe")
    r = _run([script, "demo", "--out", "demo-here"], cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = elsewhere / "demo-here"
    assert "preview: " in r.stdout and (out / "preview.png").read_bytes()[:4] == b"\x89PNG"
    import yaml
    import zarr

    for spec in (REPO / "pipelines").glob("*.yaml"):
        name = yaml.safe_load(spec.read_text())["name"]
        line = next((ln for ln in r.stdout.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None, (name, r.stdout)
        if "skipped" not in line:
            url = line.split()[-1]
            node = zarr.open(url, mode="r")  # an array, or an OME-Zarr group (a label image) holding level 0
            attrs = node.attrs if "convpipe" in node.attrs else node["0"].attrs
            assert attrs["convpipe"]["complete"] is True, name


def test_package_data_names_only_what_exists():
    """pyproject's package-data globs each match a file of the package (a glob that matches nothing ships
    nothing, silently: what once left the wheel without its example specs)."""
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["convpipe"]
    for g in globs:
        assert list((REPO / "convpipe").glob(g)), g
    if os.name != "nt":
        assert (REPO / "convpipe" / "pipelines").resolve() == (REPO / "pipelines").resolve()  # one copy
