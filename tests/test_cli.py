"""The command line: exit codes, one-line errors, and what validate / explain / ops / schema / run print.

A few checks run ``python -m convpipe`` in a subprocess (the real entry point: exit status, no traceback);
the rest call ``convpipe.cli.main`` in process, which is much faster.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import convpipe
from convpipe.ops import registry

REPO = Path(__file__).resolve().parents[1]
PIPELINES = sorted((REPO / "pipelines").glob("*.yaml"))

GOOD = """\
convpipe: 1
name: smooth
input: {url: in.zarr}
output: {url: out.zarr}
steps:
  - gaussian: {sigma: {y: 1.5, x: 1.5}}
"""


def make_input(path: Path, shape=(4, 40, 48), chunks=(2, 16, 16)) -> np.ndarray:
    data = (np.random.default_rng(0).random(shape) * 1000).astype("uint16")
    zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype="uint16")[...] = data
    return data


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_input(tmp_path / "in.zarr")
    (tmp_path / "spec.yaml").write_text(GOOD)
    return tmp_path


def one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def pymain(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convpipe", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


# --------------------------------------------------------------------------- end to end (subprocess)


def test_subprocess_run_then_refuse_existing_output(work):
    r = pymain("run", "spec.yaml", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "done:" in r.stdout and "Traceback" not in r.stderr
    before = snapshot(work / "out.zarr")
    r = pymain("run", "spec.yaml", cwd=work)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert one_error(r.stderr) == f"error: output {work / 'out.zarr'} exists; use --overwrite to replace it"
    assert snapshot(work / "out.zarr") == before


def test_subprocess_bad_spec(work, cli):
    (work / "bad.yaml").write_text(GOOD.replace("gaussian:", "gausian:"))
    expected = "error: steps[0].gausian (line 6): unknown op 'gausian' (did you mean 'gaussian'?)"
    r = pymain("run", "bad.yaml", cwd=work)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert one_error(r.stderr) == expected
    for cmd in ("validate", "explain"):  # the same line from every command that reads a spec
        rc, _, err = cli(cmd, work / "bad.yaml")
        assert rc == 1 and one_error(err) == expected
    assert not (work / "out.zarr").exists()


def test_subprocess_python_tag_never_runs(work):
    marker = work / "PWNED"
    (work / "evil.yaml").write_text(GOOD.replace("{sigma: {y: 1.5, x: 1.5}}",
                                                 f"!!python/object/apply:os.system ['touch {marker}']"))
    r = pymain("run", "evil.yaml", cwd=work)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "refused" in one_error(r.stderr)
    assert not marker.exists() and not (work / "out.zarr").exists()


def test_subprocess_missing_input(work):
    (work / "nope.yaml").write_text(GOOD.replace("in.zarr", "missing.zarr"))
    r = pymain("run", "nope.yaml", cwd=work)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert str(work / "missing.zarr") in one_error(r.stderr)  # names the input that is not there


def test_subprocess_validate_ok(work):
    r = pymain("validate", "spec.yaml", cwd=work)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "valid: 'smooth', 1 step(s)", "")


@pytest.mark.parametrize("args", [["run"], ["validate", "spec.yaml", "--bogus"]], ids=["missing-arg", "bad-option"])
def test_usage_error_is_not_a_traceback(work, cli, args):
    rc, _, err = cli(*args)
    assert rc == 2
    assert "Traceback" not in err and "Usage" in err


# --------------------------------------------------------------------------- run errors (in process)


def test_run_missing_input(work, cli):
    (work / "spec.yaml").write_text(GOOD.replace("in.zarr", "nothere.zarr"))
    rc, out, err = cli("run", work / "spec.yaml")
    assert rc == 1 and out == ""
    assert str(work / "nothere.zarr") in one_error(err)
    assert not (work / "out.zarr").exists()


def test_run_missing_input_override(work, cli):
    rc, _, err = cli("run", work / "spec.yaml", "--input", work / "other.zarr")
    assert rc == 1
    assert str(work / "other.zarr") in one_error(err)
    assert not (work / "out.zarr").exists()


def test_existing_output_untouched_without_overwrite(work, cli):
    out = work / "out.zarr"
    arr = zarr.create_array(store=str(out), shape=(3,), chunks=(3,), dtype="int8", attributes={"precious": 1})
    arr[...] = [1, 2, 3]
    before = snapshot(out)
    rc, stdout, err = cli("run", work / "spec.yaml")
    assert rc == 1 and "done:" not in stdout
    assert one_error(err) == f"error: output {out} exists; use --overwrite to replace it"
    assert snapshot(out) == before
    # --resume does not adopt an array convpipe did not write
    rc, _, err = cli("run", work / "spec.yaml", "--resume")
    assert rc == 1 and "not written by convpipe" in one_error(err)
    assert snapshot(out) == before


def test_overwrite_replaces(work, cli):
    out = work / "out.zarr"
    zarr.create_array(store=str(out), shape=(3,), chunks=(3,), dtype="int8")[...] = [1, 2, 3]
    rc, stdout, err = cli("run", work / "spec.yaml", "--overwrite")
    assert rc == 0, err
    assert stdout.strip().splitlines()[-1].startswith(f"done: {out}")
    res = zarr.open_array(str(out), mode="r")
    assert res.shape == (4, 40, 48) and res.attrs["convpipe"]["complete"] is True
    ref = ndi.gaussian_filter(zarr.open_array(str(work / "in.zarr"))[...].astype(float), (0, 1.5, 1.5))
    assert np.abs(res[...] - ref).max() <= 1e-5 * max(1, np.abs(ref).max())


def test_output_override(work, cli):
    rc, _, err = cli("run", work / "spec.yaml", "--output", work / "elsewhere.zarr")
    assert rc == 0, err
    assert zarr.open_array(str(work / "elsewhere.zarr")).attrs["convpipe"]["complete"] is True
    assert not (work / "out.zarr").exists()


def test_output_is_input(work, cli):
    rc, _, err = cli("run", work / "spec.yaml", "--output", work / "in.zarr", "--overwrite")
    assert rc == 1 and "is the input" in one_error(err)
    assert zarr.open_array(str(work / "in.zarr")).dtype == np.uint16


def test_output_chunks_of_wrong_length(work, cli):
    (work / "spec.yaml").write_text(GOOD.replace("{url: out.zarr}", "{url: out.zarr, chunks: [16, 16]}"))
    rc, _, err = cli("run", work / "spec.yaml")
    assert rc == 1
    assert one_error(err) == ("error: output.chunks (line 4): chunks has 2 values but the output has 3 axes "
                              "('zyx')")
    assert not (work / "out.zarr").exists()


@pytest.mark.parametrize("change", [
    ("{url: out.zarr}", "{url: out.zarr, chunks: [16, 16]}"),
    ("{url: in.zarr}", "{url: gone.zarr}"),
    ("- gaussian: {sigma: {y: 1.5, x: 1.5}}", "- sobel: {axes: ty}"),
], ids=["chunks", "missing-input", "axes"])
def test_overwrite_does_not_touch_the_output_when_the_run_cannot_start(work, cli, change):
    out = work / "out.zarr"
    zarr.create_array(store=str(out), shape=(3,), chunks=(3,), dtype="int8")[...] = [1, 2, 3]
    before = snapshot(out)
    (work / "spec.yaml").write_text(GOOD.replace(*change))
    rc, stdout, err = cli("run", work / "spec.yaml", "--overwrite")
    assert rc == 1 and "done:" not in stdout
    one_error(err)
    assert snapshot(out) == before


def test_missing_input_names_the_yaml_path(work, cli):
    (work / "spec.yaml").write_text(GOOD.replace("in.zarr", "nothere.zarr"))
    rc, _, err = cli("run", work / "spec.yaml")
    assert rc == 1
    assert one_error(err).startswith("error: input.url (line 3): ")


def test_output_chunks_naming_unknown_axis(work, cli):
    (work / "spec.yaml").write_text(GOOD.replace("{url: out.zarr}", "{url: out.zarr, chunks: {t: 1}}"))
    rc, _, err = cli("run", work / "spec.yaml")
    assert rc == 1
    assert one_error(err).startswith("error: output.chunks (line 4): chunks name axis 't'")
    assert not (work / "out.zarr").exists()


def test_axes_checked_against_the_data(work, cli):
    """Without input.axes the op's axes are checked against the input's own axes at run time."""
    (work / "spec.yaml").write_text(GOOD + "  - sobel:\n      axes: tx\n")
    rc, _, err = cli("validate", work / "spec.yaml")
    assert rc == 0  # validate cannot know the input's axes without reading it
    rc, _, err = cli("run", work / "spec.yaml")
    assert rc == 1
    assert one_error(err) == "error: steps[1].sobel.axes (line 8): axis 't' is not one of the input axes 'zyx'"
    assert not (work / "out.zarr").exists()


def test_input_axes_of_wrong_length(work, cli):
    (work / "spec.yaml").write_text(GOOD.replace("{url: in.zarr}", "{url: in.zarr, axes: yx}"))
    rc, _, err = cli("run", work / "spec.yaml")
    assert rc == 1
    assert "has 3 axes" in one_error(err) and "input.axes" in err
    assert not (work / "out.zarr").exists()


def test_unknown_cluster(work, cli):
    (work / "spec.yaml").write_text(GOOD + "execution: {cluster: bogus}\n")
    rc, _, err = cli("run", work / "spec.yaml")
    assert rc == 1 and "unknown cluster 'bogus'" in one_error(err)


def test_tile_naming_unknown_axis(work, cli):
    (work / "spec.yaml").write_text(GOOD + "execution: {tile: {q: 4}}\n")
    rc, _, err = cli("run", work / "spec.yaml")
    assert rc == 1
    assert one_error(err).startswith("error: execution.tile (line 7): tile names axis 'q'")


def test_gpu_backend_without_gpu(work, cli):
    from convpipe.backends import gpu_available

    if gpu_available():
        pytest.skip("this machine has a GPU")
    rc, _, err = cli("run", work / "spec.yaml", "--backend", "gpu")
    assert rc == 1 and "no usable GPU" in one_error(err)
    assert not (work / "out.zarr").exists()


def test_incomplete_output_refused_then_resumed(work, cli):
    rc, _, _ = cli("run", work / "spec.yaml")
    assert rc == 0
    out = zarr.open_array(str(work / "out.zarr"), mode="r+")
    ref = out[...]
    prov = dict(out.attrs["convpipe"], complete=False)
    out.attrs["convpipe"] = prov  # as a killed run leaves it
    before = snapshot(work / "out.zarr")
    rc, stdout, err = cli("run", work / "spec.yaml")
    assert rc == 1 and "done:" not in stdout
    line = one_error(err)
    assert "incomplete" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(work / "out.zarr") == before
    rc, stdout, err = cli("run", work / "spec.yaml", "--resume")
    assert rc == 0, err
    res = zarr.open_array(str(work / "out.zarr"), mode="r")
    assert res.attrs["convpipe"]["complete"] is True
    np.testing.assert_array_equal(res[...], ref)


# --------------------------------------------------------------------------- the other commands


def test_ops_lists_every_registered_op(cli):
    rc, out, err = cli("ops")
    assert rc == 0 and err == ""
    listed = {line.split()[0] for line in out.splitlines() if line and not line[0].isspace()}
    assert listed == set(registry.names())
    gauss = out.splitlines()[[ln.split()[0] if ln.strip() else "" for ln in out.splitlines()].index("gaussian") + 1]
    assert "sigma" in gauss and "truncate=4.0" in gauss and "mode='reflect'" in gauss


def test_readme_mentions_every_op():
    readme = (REPO / "README.md").read_text()
    missing = [n for n in registry.names() if f"`{n}`" not in readme]
    assert not missing, f"README.md does not list {missing}"


def test_schema_is_json_schema(cli):
    rc, out, err = cli("schema")
    assert rc == 0 and err == ""
    schema = json.loads(out)
    assert {"convpipe", "input", "output", "steps", "execution"} <= set(schema["properties"])
    assert schema["required"] == ["convpipe", "input", "steps"]
    variants = schema["properties"]["steps"]["items"]["oneOf"]
    assert {next(iter(v["properties"])) for v in variants} == set(registry.names())


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_example_pipelines_match_the_schema(path, cli):
    import yaml

    jsonschema = pytest.importorskip("jsonschema")
    _, out, _ = cli("schema")
    schema = json.loads(out)
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == []
    bad = yaml.safe_load(path.read_text())
    bad["steps"][0] = {"gausian": {"sigma": 1}}
    assert list(validator.iter_errors(bad))


def test_explain(work, cli):
    (work / "spec.yaml").write_text(GOOD + "  - sobel: {axes: yx}\n")
    rc, out, err = cli("explain", work / "spec.yaml")
    assert rc == 0, err
    for word in ("plan for 'smooth'", "halo", "y: 7+7", "x: 7+7", "tile", "tasks", "memory",
                 "read amplification", "separable"):
        assert word in out, (word, out)
    assert not (work / "out.zarr").exists()  # explain reads metadata only
    rc, out, err = cli("explain", work / "spec.yaml", "--json")
    assert rc == 0
    plan = json.loads(out)
    assert plan["passes"][0]["halo"] == {"y": [7, 7], "x": [7, 7]}  # gaussian radius 6 + sobel 1
    assert plan["tasks"] >= plan["passes"][0]["tiles"] >= 1
    assert plan["output"]["shape"] == [4, 40, 48]


def test_explain_recalibrate_measures_again_and_caches(work, cli, monkeypatch, tmp_path):
    """``explain --recalibrate`` measures this machine's costs again (a calibration taken while the machine
    was busy otherwise stays until a version or the machine changes) and estimates from the new ones; a spec
    mistake is reported before any measuring."""
    import convpipe.calibrate  # noqa: F401 - hands its measure_costs in on import: before the fake replaces it
    import convpipe.estimate as E

    costs = json.loads((Path(os.environ[E.CACHE_ENV]) / E.CACHE_FILE).read_text())["costs"]  # conftest's
    monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / "cache"))
    calls: list = []

    def fake(side: int = 512) -> dict:
        calls.append(side)
        return {**costs, "run_fixed_s": 1234.0}

    monkeypatch.setattr(E, "measure_costs", fake)
    (work / "spec.yaml").write_text(GOOD)
    rc, out, err = cli("explain", work / "spec.yaml", "--recalibrate")
    assert rc == 0, err
    assert calls == [512], calls
    assert "estimate  20 min" in out, out  # the new costs' fixed 1234 s is in the estimate
    cached = json.loads((tmp_path / "cache" / E.CACHE_FILE).read_text())
    assert cached["costs"]["run_fixed_s"] == 1234.0 and cached["measured_at"] > 0
    rc, out, err = cli("explain", work / "spec.yaml")  # cached now: no second measurement
    assert rc == 0 and calls == [512]
    (work / "bad.yaml").write_text(GOOD.replace("gaussian", "gausian"))
    rc, out, err = cli("explain", work / "bad.yaml", "--recalibrate")
    assert rc == 1 and calls == [512] and "gaussian" in err


def test_explain_missing_input(work, cli):
    rc, _, err = cli("explain", work / "spec.yaml", "--input", work / "gone.zarr")
    assert rc == 1 and str(work / "gone.zarr") in one_error(err)


def test_demo_command(tmp_path, cli):
    rc, out, err = cli("demo", "--out", tmp_path / "d")
    assert rc == 0, err
    for path in PIPELINES:
        name = convpipe.load(path).spec.name
        assert any(line.startswith(name) for line in out.splitlines()), (name, out)
    assert (tmp_path / "d" / "preview.png").is_file()
