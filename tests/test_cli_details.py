"""Command-line details (issue 18, item 3; issue 14's cli/ package; issue 17, item 5):

- ``--input`` / ``--output`` resolve against the working directory (SPEC.md), and an error about them
  names the flag, not the spec's line;
- ``--help`` of every command without typer's ``<bool>`` / ``<list[str]>`` labels;
- ``convpipe ops NAME``: each parameter's meaning and unit, nested keys, enum values;
- "backend auto chose cpu" only when it tells something; explain's long totals in h / min;
- ``cluster show`` and ``explain`` print the same memory per worker;
- ``import convpipe``, ``--help`` and ``validate`` load neither dask nor zarr (subprocesses, sys.modules);
- typer, rich, click and argparse are imported only inside ``convpipe/cli`` (and rich by the API's progress bar).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr
from hypothesis import given
from hypothesis import strategies as st

from convpipe.humanize import duration
from convpipe.params import catalog
from convpipe.params.describe import op_params

REPO = Path(__file__).resolve().parents[1]
SPEC = """\
convpipe: 1
name: smooth
input: {url: in.zarr}
output: {url: out.zarr}
steps:
  - gaussian: {sigma: 1.5}
"""
HAS_CUPY = importlib.util.find_spec("cupy") is not None


def _image(path: Path, shape=(40, 48), chunks=(16, 16)) -> np.ndarray:
    data = (np.random.default_rng(3).random(shape) * 1000).astype("uint16")
    zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype="uint16")[...] = data
    return data


@pytest.fixture
def specdir(tmp_path: Path) -> Path:
    """A spec in its own folder whose input.url (relative) names nothing there."""
    d = tmp_path / "specs"
    d.mkdir()
    (d / "spec.yaml").write_text(SPEC)
    return d


# --------------------------------------------------------------------------- --input / --output


def test_input_and_output_flags_resolve_against_the_working_directory(cli, specdir, tmp_path, monkeypatch):
    """SPEC.md: URLs given on the command line resolve against the working directory, the spec's own
    relative paths against its folder; the output equals the oracle (scipy's gaussian_filter)."""
    work = tmp_path / "work"
    work.mkdir()
    data = _image(work / "here.zarr")
    monkeypatch.chdir(work)
    rc, out, err = cli("run", specdir / "spec.yaml", "--input", "here.zarr", "--output", "res.zarr")
    assert rc == 0, err
    assert f"done: {work / 'res.zarr'}" in out
    assert not (specdir / "res.zarr").exists()
    got = zarr.open_array(str(work / "res.zarr"), mode="r")[...]
    want = ndi.gaussian_filter(data.astype(np.float64), 1.5, mode="reflect")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    # explain reads the same flag the same way
    rc, out, err = cli("explain", specdir / "spec.yaml", "--input", "here.zarr")
    assert rc == 0 and "40y x 48x" in out, err


@pytest.mark.parametrize("command", ["run", "explain"])
def test_an_error_about_the_input_flag_names_the_flag(cli, specdir, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(command, specdir / "spec.yaml", "--input", "missing.zarr")
    assert rc == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: --input {tmp_path / 'missing.zarr'}: "), err
    assert "line" not in line and "spec's folder" not in line and "input.url" not in line, line


def test_an_error_about_the_spec_input_still_names_its_line(cli, specdir):
    """Without the flag the error is the spec's: its YAML path and line, and where relative paths went."""
    rc, _, err = cli("explain", specdir / "spec.yaml")
    assert rc == 1
    assert "error: input.url (line 3): " in err and "spec's folder" in err, err


def test_an_output_flag_that_exists_is_refused_at_the_working_directory(cli, specdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _image(tmp_path / "in.zarr")
    _image(tmp_path / "taken.zarr")
    rc, _, err = cli("run", specdir / "spec.yaml", "--input", "in.zarr", "--output", "taken.zarr")
    assert rc == 1
    assert str(tmp_path / "taken.zarr") in err and "--overwrite" in err, err


# --------------------------------------------------------------------------- --help


def _commands() -> list[list[str]]:
    import typer

    from convpipe.cli import app

    group = typer.main.get_command(app)
    out = [[]]
    for name, cmd in group.commands.items():
        out.append([name])
        out.extend([name, sub] for sub in getattr(cmd, "commands", {}))
    return out


NOISE = re.compile(r"<(bool|str|int|float|path|list\[[^\]]*\])>")


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a) or "convpipe")
def test_help_has_no_type_noise(cli, argv):
    rc, out, err = cli(*argv, "--help")
    assert rc == 0, err
    assert "Usage: " in out and "--help" in out
    assert not NOISE.search(out), NOISE.search(out).group(0)


def test_help_labels_values_and_leaves_flags_bare(cli):
    _, out, _ = cli("run", "--help")
    assert re.search(r"--input\s+TEXT\s", out) and re.search(r"--report\s+PATH\s", out), out
    assert re.search(r"--overwrite\s+replace", out), out
    assert "SPEC" in out
    _, out, _ = cli("preview", "--help")
    assert re.search(r"--index\s+TEXT\s", out) and re.search(r"--level\s+INTEGER\s", out), out


def test_bench_is_listed_without_loading_it_and_runs_as_itself(cli):
    """The root help lists bench from a stub; `bench --help` is the real command with its options."""
    _, out, _ = cli("--help")
    assert "bench" in out and "Side-by-side benchmark" in out
    rc, out, err = cli("bench", "--help")
    assert rc == 0, err
    assert "--pipelines" in out and "--suite" in out and "light" in out


# --------------------------------------------------------------------------- ops NAME


def test_ops_name_shows_meanings_units_keys_and_values(cli):
    rc, out, err = cli("ops", "fft_filter")
    assert rc == 0, err
    assert re.search(r"cutoff: .*required\n\s+fraction of Nyquist", out), out
    assert "kind: one of lowpass | highpass | bandpass, default 'lowpass'" in out
    _, out, _ = cli("ops", "filter_bank")
    assert "keys: orientations, frequencies, sigma, radius, offset" in out
    assert re.search(r"frequencies: .*\n\s+spatial frequencies in cycles per voxel", out), out
    _, out, _ = cli("ops", "stats")
    assert "per: one of plane | tile | all, default 'all'" in out
    assert "keys: bins, weight" in out


def test_ops_unknown_name_is_one_line_with_a_suggestion(cli):
    rc, _, err = cli("ops", "gausian")
    assert rc == 1
    assert err.strip() == "error: unknown op 'gausian'; did you mean 'gaussian'? (convpipe ops lists them)"


@pytest.mark.parametrize("name", sorted(catalog()))
def test_every_parameter_of_every_op_has_a_meaning(name):
    e = catalog()[name]
    missing = [p.name for p in op_params(name, e.Params) if not p.meaning]
    assert not missing, f"{name}: no meaning for {missing} (a Field description or params.describe.MEANINGS)"


def test_ops_lists_every_op_as_before(cli):
    rc, out, _ = cli("ops")
    assert rc == 0
    assert {line.split()[0] for line in out.splitlines() if line and not line[0].isspace()} == set(catalog())


# --------------------------------------------------------------------------- backend auto, durations


@pytest.mark.skipif(HAS_CUPY, reason="with CuPy installed the note always matters")
def test_auto_chose_cpu_only_when_asked_for_auto(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _image(tmp_path / "in.zarr")
    (tmp_path / "spec.yaml").write_text(SPEC)
    rc, out, err = cli("explain", "spec.yaml")
    assert rc == 0 and "auto chose cpu" not in out
    rc, out, err = cli("run", "spec.yaml")
    assert rc == 0 and "auto chose cpu" not in err, err
    rc, out, err = cli("run", "spec.yaml", "--output", "again.zarr", "--backend", "auto")
    assert rc == 0 and "backend auto chose cpu" in err, err
    (tmp_path / "auto.yaml").write_text(SPEC.replace("output: {url: out.zarr}", "output: {url: o2.zarr}")
                                        + "execution: {backend: auto}\n")
    _, out, _ = cli("explain", "auto.yaml")
    assert "backend auto chose cpu" in out


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_duration_reads_back(seconds):
    text = duration(seconds)
    if seconds < 90:
        assert text == f"{seconds:.1f} s"
        return
    m = re.fullmatch(r"(?:(\d+) h (\d\d) min|(\d+) min (\d\d) s) \((\d+) s\)", text)
    assert m, text
    total = int(m.group(5))
    assert total == round(seconds)
    if m.group(1):
        assert int(m.group(1)) * 3600 + int(m.group(2)) * 60 <= total < int(m.group(1)) * 3600 + (int(m.group(2)) + 1) * 60
    else:
        assert int(m.group(3)) * 60 + int(m.group(4)) == total and int(m.group(4)) < 60


def test_explain_prints_long_totals_in_hours_and_minutes(cli, tmp_path):
    """A metadata-only archive (no chunk written): its totals run to hours."""
    zarr.create_array(store=str(tmp_path / "big.zarr"), shape=(512, 16384, 16384), chunks=(16, 512, 512),
                      dtype="uint16")
    (tmp_path / "big.yaml").write_text(SPEC.replace("in.zarr", "big.zarr"))
    rc, out, err = cli("explain", tmp_path / "big.yaml")
    assert rc == 0, err
    assert re.search(r"est\. run  \d+ (h \d\d min|min \d\d s) \(\d+ s\) on ", out), out
    assert re.search(r"estimate  \d+ (h \d\d min|min \d\d s) \(\d+ s\), peak", out), out


# --------------------------------------------------------------------------- cluster show vs explain


@pytest.mark.parametrize("cluster", ["threads", "processes", "local:3"])
def test_cluster_show_and_explain_print_the_same_memory_per_worker(cli, tmp_path, cluster):
    _image(tmp_path / "in.zarr")
    (tmp_path / "spec.yaml").write_text(SPEC)
    rc, shown, err = cli("cluster", "show", cluster)
    assert rc == 0, err
    fields = dict(line.split(":", 1) for line in shown.splitlines())
    rc, plan, err = cli("explain", tmp_path / "spec.yaml", "--cluster", cluster)
    assert rc == 0, err
    mem = fields["memory"].strip().removesuffix(" per worker")
    assert f"({fields['workers'].strip()} workers, {mem} each)" in plan.splitlines()[0], (shown, plan)
    rc, js, _ = cli("explain", tmp_path / "spec.yaml", "--cluster", cluster, "--json")
    from dask.utils import format_bytes

    assert format_bytes(json.loads(js)["memory_per_worker"]) == mem


# --------------------------------------------------------------------------- start-up


def _modules_after(code: str, *args: str) -> dict:
    probe = ("import json, sys\n" + code +
             "\nprint(json.dumps({m: m in sys.modules for m in ('dask', 'zarr', 'scipy', 'convpipe.api')}),"
             " file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stderr.strip().splitlines()[-1])


def test_import_convpipe_loads_neither_dask_nor_zarr():
    code = ("import convpipe\nassert {'load', 'Pipeline', 'RunResult', 'SpecError', '__version__'} <= set(dir(convpipe))\n"
            "assert convpipe.__version__")
    seen = _modules_after(code)
    assert not seen["dask"] and not seen["zarr"] and not seen["convpipe.api"], seen
    seen = _modules_after("import convpipe\nassert callable(convpipe.load) and convpipe.Pipeline.__name__ == 'Pipeline'")
    assert seen["convpipe.api"]


@pytest.mark.parametrize("argv", [["--help"], ["validate", "pipelines/edges.yaml"],
                                  ["validate", "pipelines/blur-and-sharpen.yaml"], ["ops"], ["schema"]],
                         ids=" ".join)
def test_instant_commands_load_neither_dask_nor_zarr(argv):
    code = ("from convpipe.cli import main\nimport contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            "    rc = main(sys.argv[1:])\nassert rc == 0, rc")
    seen = _modules_after(code, *argv)
    assert not seen["dask"] and not seen["zarr"], (argv, seen)


def test_python_m_convpipe_and_the_console_script_entry():
    from convpipe.cli import _entry

    assert callable(_entry)
    r = subprocess.run([sys.executable, "-m", "convpipe", "validate", "pipelines/edges.yaml"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("valid: 'edges'"), r.stderr
    r = subprocess.run([sys.executable, "-m", "convpipe.service", "cluster", "show", "threads"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "kind:       threads" in r.stdout, r.stderr


FRAMEWORKS = {"typer", "rich", "click", "argparse"}


def test_only_the_cli_package_imports_typer_rich_click_or_argparse():
    """Every import, at the top of a module or inside a function."""
    offenders = []
    for f in sorted((REPO / "convpipe").rglob("*.py")):
        rel = f.relative_to(REPO / "convpipe")
        if rel.parts[0] == "cli" or str(rel) == "progress.py":  # the API's run(progress=True) bar is rich's
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{rel}:{node.lineno} {n}" for n in names if n.split(".")[0] in FRAMEWORKS]
    assert not offenders, offenders


def test_the_catalog_families_list_exactly_their_entries():
    """params.FAMILIES names each family's ops without importing it; each family defines exactly those."""
    import importlib

    from convpipe import params

    for family, names in params.FAMILIES.items():
        mod = importlib.import_module(f"convpipe.params.{family}")
        assert sorted(e.name for e in mod.ENTRIES) == sorted(names), family
    assert sorted(params.names()) == sorted(n for ns in params.FAMILIES.values() for n in ns)


def test_validating_a_spec_loads_only_the_families_it_uses():
    code = ("from convpipe.spec import load_spec\nload_spec(sys.argv[1])\n"
            "fams = sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('convpipe.params.') "
            "and m.rsplit('.', 1)[1] not in ('base', 'describe'))\nprint('FAMILIES', fams)")
    r = subprocess.run([sys.executable, "-c", "import sys\n" + code, "pipelines/edges.yaml"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    fams = eval(r.stdout.split("FAMILIES", 1)[1])  # noqa: S307 - our own print of a list of names
    assert "local" in fams and not {"features", "morphology", "objects", "spectral"} & set(fams), fams


@given(st.floats(min_value=0.05, max_value=60), st.integers(min_value=0, max_value=4),
       st.sampled_from([2.0, 3.0, 4.0]))
def test_gaussian_weights_are_scipys_bit_for_bit(sigma, order, truncate):
    """ops.local.base computes scipy.ndimage's Gaussian weights itself (explain must not import scipy);
    they are scipy's, bit for bit."""
    filters = pytest.importorskip("scipy.ndimage._filters")
    if not hasattr(filters, "_gaussian_kernel1d"):
        pytest.skip("scipy's private _gaussian_kernel1d is gone; compare with gaussian_filter1d instead")
    from convpipe.ops.local.base import gaussian_kernel1d

    radius = int(truncate * sigma + 0.5)
    want = filters._gaussian_kernel1d(sigma, order, radius)[::-1]
    assert np.array_equal(gaussian_kernel1d(sigma, order, radius), want)


def test_memory_limit_is_distributeds_without_importing_distributed():
    code = ("from convpipe.sysinfo import memory_limit\nm = memory_limit()\nassert 'distributed' not in sys.modules\n"
            "import distributed.system\nassert m == distributed.system.MEMORY_LIMIT, (m, distributed.system.MEMORY_LIMIT)")
    r = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_validate_accepts_a_spec_without_input_as_run_input_does(cli, tmp_path, monkeypatch):
    """A spec without ``input`` is a template ``run SPEC --input URL`` runs: validate says valid, and why it
    cannot run alone; run without --input refuses it in one line naming the missing input."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text("convpipe: 1\nsteps:\n  - gaussian: {sigma: 1.5}\n")
    rc, out, err = cli("validate", tmp_path / "t.yaml")
    assert rc == 0 and "1 step(s) (no input: give --input URL" in out, err
    rc, out, err = cli("run", tmp_path / "t.yaml", "--output", "o.zarr")
    assert rc == 1 and err.count("\n") == 1 and "names no input" in err, err
    x = _image(tmp_path / "in.zarr")
    rc, out, err = cli("run", tmp_path / "t.yaml", "--input", "in.zarr", "--output", "o.zarr")
    assert rc == 0, err
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "o.zarr"))[...], ndi.gaussian_filter(x.astype(float), 1.5),
                               rtol=1e-5, atol=1e-5 * x.max())
