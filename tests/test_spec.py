"""Spec validation: every mistake is one line naming the YAML path, its line and the cause.

Each bad spec goes through ``convpipe validate`` and ``convpipe run --overwrite`` (in process): both
exit 1 with the same single ``error:`` line, no traceback, and nothing on disk changes (the existing
output is not replaced, no output is created, no code in the YAML runs).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from convpipe.cli import main
from convpipe.errors import SpecError, SpecErrors
from convpipe.spec import load_spec, load_spec_text

REPO = Path(__file__).resolve().parents[1]


def make_spec(steps: str, *, axes: str = "zyx", output: str = "{url: out.zarr}", extra: str = "") -> str:
    """A spec whose first step is on line 6 (``steps`` is the YAML under ``steps:``)."""
    ax = f", axes: {axes}" if axes else ""
    return (
        "convpipe: 1\n"                            # 1
        "name: t\n"                                # 2
        f"input: {{url: in.zarr{ax}}}\n"           # 3
        f"output: {output}\n"                      # 4
        "steps:\n"                                 # 5
        + steps + extra                            # 6...
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with an input (4z x 32y x 32x uint16) and an existing output that must survive."""
    a = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=(4, 32, 32), chunks=(2, 16, 16), dtype="uint16")
    a[...] = (np.arange(4 * 32 * 32).reshape(4, 32, 32) % 997).astype("uint16")
    o = zarr.create_array(store=str(tmp_path / "out.zarr"), shape=(4, 32, 32), chunks=(2, 16, 16), dtype="float32",
                          attributes={"mine": "do not touch"})
    o[...] = 7.0
    return tmp_path


def snapshot(folder: Path) -> dict[str, str]:
    """Hash of every file under ``folder`` except the specs themselves."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix not in (".yaml", ".yml")}


@pytest.fixture
def cli(capsys):
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


# (spec text, fragments the one error line must contain)
BAD = [
    pytest.param(make_spec("  - gaussain: {sigma: 1}\n"),
                 ["steps[0].gaussain (line 6)", "unknown op 'gaussain'", "did you mean 'gaussian'"], id="op-typo"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n  - sobell: {}\n"),
                 ["steps[1].sobell (line 7)", "did you mean 'sobel'"], id="op-typo-second-step"),
    pytest.param(make_spec("  - gaussian: {sigma: 1, sigm: 2}\n"),
                 ["steps[0].gaussian.sigm (line 6)", "unknown parameter 'sigm'", "did you mean 'sigma'"],
                 id="unknown-param"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n  - sobel:\n      output: magnitude\n      axes: yt\n"),
                 ["steps[1].sobel.axes (line 9)", "axis 't' is not one of the input axes 'zyx'"], id="axes-not-in-input"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n  - sobel: {axes: yq}\n"),
                 ["steps[1].sobel.axes (line 7)", "'yq'", "tczyx"], id="axes-bad-letter"),
    pytest.param(make_spec("  - gaussian: {sigma: -1}\n"),
                 ["steps[0].gaussian.sigma (line 6)", "sigma must be >= 0"], id="negative-sigma"),
    pytest.param(make_spec("  - gaussian:\n      sigma: {y: 2, x: -0.5}\n"),
                 ["steps[0].gaussian.sigma (line 7)", "-0.5"], id="negative-per-axis-sigma"),
    pytest.param(make_spec("  - uniform: {size: -3}\n"),
                 ["steps[0].uniform.size (line 6)", "positive integer", "-3"], id="negative-size"),
    pytest.param(make_spec("  - median: {size: 0}\n"),
                 ["steps[0].median.size (line 6)", "positive integer"], id="zero-size"),
    pytest.param(make_spec("  - gaussian: {sigma: 1, truncate: -4}\n"),
                 ["steps[0].gaussian.truncate (line 6)", "greater than 0"], id="negative-truncate"),
    pytest.param(make_spec("  - correlate:\n      kernel: [[1, 2, 3], [4, 5]]\n"),
                 ["steps[0].correlate", "ragged"], id="ragged-kernel"),
    pytest.param(make_spec("  - correlate: {kernel: [[1, 0, -1]], normalize: sum}\n"),
                 ["steps[0].correlate", "(line 6)", "sum", "0"], id="zero-sum-normalize"),
    pytest.param(make_spec("  - correlate: {kernel: [[1, 2]], normalize: softmax, temperature: 0}\n"),
                 ["steps[0].correlate", "temperature must be > 0"], id="softmax-zero-temperature"),
    pytest.param(make_spec("  - correlate: {kernel: [[1, .nan]]}\n"),
                 ["steps[0].correlate", "NaN"], id="nan-kernel"),
    pytest.param(make_spec("  - correlate: {kernel: {name: gausian, sigma: 2}}\n"),
                 ["steps[0].correlate", "unknown kernel 'gausian'", "did you mean 'gaussian'"], id="named-kernel-typo"),
    pytest.param(make_spec("  - gaussian: {sigma: 1, mode: wrapp}\n"),
                 ["steps[0].gaussian.mode (line 6)", "'reflect'"], id="bad-mode"),
    pytest.param(make_spec("  - diffusion: {steps: 5, dt: 0.3, axes: yx}\n"),
                 ["steps[0].diffusion.dt (line 6)", "stability limit 0.25"], id="diffusion-unstable-dt"),
    pytest.param(make_spec("  - diffusion: {steps: 5, dt: 0.1, time: 2}\n"),
                 ["steps[0].diffusion", "either"], id="diffusion-two-forms"),
    pytest.param(make_spec("  - clip: {min: 2, max: 1}\n"),
                 ["steps[0].clip", "min 2.0 is above max 1.0"], id="clip-min-above-max"),
    # (threshold takes value or method since SPEC.md's automatic thresholds: astype's dtype is required)
    pytest.param(make_spec("  - astype: {}\n"),
                 ["steps[0].astype.dtype (line 6)", "required"], id="missing-param"),
    pytest.param(make_spec("  - threshold: {}\n"),
                 ["steps[0].threshold (line 6)", "either value or method"], id="threshold-value-or-method"),
    pytest.param(make_spec("  - gaussian:\n      sigma: {z: 1, y: 2, x: 2}\n", axes="yx"),
                 ["steps[0].gaussian", "axis 'z' is not one of the input axes 'yx'"], id="sigma-axis-not-in-input"),
    pytest.param(make_spec("  - {gaussian: {sigma: 1}, sobel: {}}\n"),
                 ["steps[0] (line 6)", "one-key mapping"], id="step-two-keys"),
    pytest.param(make_spec("  - [gaussian, sobel]\n"),
                 ["steps[0] (line 6)", "one-key mapping"], id="step-is-a-list"),
    pytest.param(make_spec("  - gaussian: 2\n"),
                 ["steps[0].gaussian (line 6)", "must be a mapping"], id="params-not-a-mapping"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n", output="{url: out.zarr, chunks: [0, 16, 16]}"),
                 ["output.chunks (line 4)", "positive"], id="zero-chunks"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n", output="{url: out.zarr, dtype: complex64}"),
                 ["output.dtype (line 4)", "complex64"], id="output-dtype"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n", axes="zyq"),
                 ["input.axes (line 3)", "'zyq'"], id="input-axes-letters"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n", extra="execution: {precision: float16}\n"),
                 ["execution.precision (line 7)", "float32"], id="precision"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n", extra="exection: {cluster: threads}\n"),
                 ["exection (line 7)", "unknown"], id="unknown-top-level-key"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n").replace("convpipe: 1", "convpipe: 2"),
                 ["convpipe (line 1)", "version 2 is not supported"], id="unknown-version"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n").replace("convpipe: 1\n", ""),
                 ["convpipe", "missing 'convpipe: 1'"], id="missing-version"),
    pytest.param(make_spec("").replace("steps:\n", "steps: []\n"), ["steps (line 5)", "at least 1"], id="no-steps"),
    pytest.param(make_spec(""), ["steps (line 5)", "list"], id="steps-empty-value"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n", extra="input: {url: other.zarr}\n"),
                 ["(line 7)", "duplicate key 'input'", "first on line 3"], id="duplicate-key"),
    pytest.param(make_spec("  - gaussian: {sigma: 1, sigma: 2}\n"),
                 ["(line 6)", "duplicate key 'sigma'"], id="duplicate-param"),
    pytest.param(make_spec("  - gaussian: {sigma: 1\n"), ["(line 7)", "invalid YAML"], id="yaml-syntax"),
    pytest.param(make_spec("\t- gaussian: {sigma: 1}\n"), ["(line 6)", "invalid YAML"], id="yaml-tab"),
    # issue 13, item 14: what a newcomer writes
    pytest.param(make_spec("  - gaussian: {sigma: 1, mode: bounce}\n"),
                 ["steps[0].gaussian.mode (line 6)", "'bounce'", "'reflect'", "'constant'"], id="enum-value-named"),
    pytest.param(make_spec("  - sobel: {output: magnitud}\n"),
                 ["steps[0].sobel.output (line 6)", "'magnitud'", "did you mean 'magnitude'"], id="enum-suggestion"),
    pytest.param(make_spec("  - gaussian_filter: {sigma: 1}\n"),
                 ["steps[0].gaussian_filter (line 6)", "did you mean 'gaussian'?"], id="scipy-gaussian_filter"),
    pytest.param(make_spec("  - uniform_filter: {size: 3}\n"), ["did you mean 'uniform'?"], id="scipy-uniform_filter"),
    pytest.param(make_spec("  - median_filter: {size: 3}\n"), ["did you mean 'median'?"], id="scipy-median_filter"),
    pytest.param(make_spec("  - maximum_filter: {size: 3}\n"), ["did you mean 'maximum'?"], id="scipy-maximum_filter"),
    pytest.param(make_spec("  - scipy.ndimage.sobel: {}\n"), ["convpipe's op is 'sobel'"], id="scipy-module-prefix"),
    pytest.param(make_spec("  - sobel_h: {}\n"), ["did you mean 'sobel'?"], id="skimage-sobel_h"),
    pytest.param(make_spec("  - peak_local_max: {radius: 1}\n"), ["did you mean 'peaks'?"], id="skimage-peak_local_max"),
    pytest.param(make_spec("  - blob_log: {}\n"), ["did you mean 'blobs'?"], id="skimage-blob_log"),
    pytest.param(make_spec("  - uniform_filter1d: {window: 3}\n"), ["did you mean 'moving_average'?"],
                 id="scipy-uniform_filter1d"),
    pytest.param(make_spec("  - gaussian: {sigma: [1, 2, 2]}\n"),
                 ["steps[0].gaussian.sigma (line 6)", "per-axis map", "sigma: {z: 1, y: 2, x: 2}"], id="sigma-list"),
    pytest.param(make_spec("  - gaussian: {sigma: [1, 2]}\n", axes="tyx"),
                 ["sigma: {y: 1, x: 2}"], id="sigma-list-short"),
    pytest.param(make_spec("  - uniform: {size: [3, 5, 5]}\n", axes="tyx"),
                 ["steps[0].uniform.size (line 6)", "size: {t: 3, y: 5, x: 5}"], id="size-list"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n", output="{url: out.zarr, dtype: unit16}"),
                 ["output.dtype (line 4)", "'unit16'", "did you mean 'uint16'"], id="dtype-typo"),
    pytest.param(make_spec("  - astype: {dtype: flaot32}\n"),
                 ["steps[0].astype.dtype (line 6)", "did you mean 'float32'"], id="astype-dtype-typo"),
    pytest.param(make_spec("  - gaussian: {sigam: 2}\n"),
                 ["steps[0].gaussian.sigam (line 6)", "unknown parameter 'sigam'", "did you mean 'sigma'"],
                 id="typo-only-once"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n").replace("{url: in.zarr, axes: zyx}", "stack.tif"),
                 ["input.url (line 3)", "TIFF", "convpipe ingest stack.tif --output stack.zarr"], id="tiff-input"),
    pytest.param(make_spec("  - correlate: {kernel: kernels/k.npy}\n"),
                 ["steps[0].correlate.kernel (line 6)", "kernel file not found",
                  "relative paths resolve against the spec's folder"], id="kernel-relative-path"),
    pytest.param(make_spec("  - gaussian: {sigma: 1}\n", extra="execution: {cluster: 'tcp://host'}\n"),
                 ["execution.cluster (line 7)", "no port"], id="cluster-without-port"),
    pytest.param("", ["a spec must be a mapping"], id="empty-file"),
    pytest.param("# only a comment\n", ["a spec must be a mapping"], id="comment-only-file"),
    pytest.param("- gaussian\n- sobel\n", ["(line 1)", "a spec must be a mapping"], id="top-level-list"),
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("text, fragments", BAD)
def test_bad_spec_is_one_line_and_touches_nothing(workdir, cli, command, text, fragments):
    spec = workdir / "spec.yaml"
    spec.write_text(text)
    before = snapshot(workdir)
    args = [command, spec] + (["--overwrite"] if command == "run" else [])
    rc, out, err = cli(*args)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
    assert "Traceback" not in err and "Traceback" not in out
    assert "done:" not in out and "valid:" not in out
    assert snapshot(workdir) == before  # the existing output survives, nothing new is written


PYTHON_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
    "!!python/object/apply:builtins.exec ['open(\"{marker}\", \"w\").close()']",
]


@pytest.mark.parametrize("tag", PYTHON_TAGS, ids=["apply", "new", "name", "exec"])
def test_python_tags_are_refused_and_never_run(workdir, cli, tag):
    marker = workdir / "PWNED"
    spec = workdir / "spec.yaml"
    spec.write_text(make_spec(f"  - gaussian: {tag.format(marker=marker)}\n"))
    for cmd in (["validate", spec], ["run", spec, "--overwrite"]):
        rc, _, err = cli(*cmd)
        assert rc == 1
        assert len(err.strip().splitlines()) == 1, err
        assert "(line 6)" in err and "python" in err and "refused" in err
        assert "Traceback" not in err
    assert not marker.exists()


def test_several_mistakes_are_all_reported(workdir, cli):
    spec = workdir / "spec.yaml"
    spec.write_text(make_spec("  - gaussain: {sigma: 1}\n  - sobel: {axis: yx}\n"))
    rc, _, err = cli("validate", spec)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: steps[0].gaussain (line 6)")
    assert lines[1].startswith("error: steps[1].sobel.axis (line 7)") and "did you mean 'axes'" in lines[1]
    with pytest.raises(SpecErrors) as e:
        load_spec(spec)
    assert [x.path for x in e.value.errors] == ["steps[0].gaussain", "steps[1].sobel.axis"]


def test_spec_error_carries_path_and_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(make_spec("  - gaussian: {sigma: 1}\n  - sobel:\n      axes: yt\n"))
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert (e.value.path, e.value.line) == ("steps[1].sobel.axes", 8)
    assert str(e.value) == "steps[1].sobel.axes (line 8): axis 't' is not one of the input axes 'zyx'"


def test_missing_spec_file(tmp_path, cli):
    rc, _, err = cli("validate", tmp_path / "nope.yaml")
    assert rc == 1
    path = tmp_path / "nope.yaml"
    assert err.strip().splitlines() == [f"error: {path}: spec file not found: {path}"]


def test_valid_spec_exit_0(workdir, cli):
    spec = workdir / "spec.yaml"
    spec.write_text(make_spec("  - gaussian: {sigma: {y: 2, x: 2}}\n  - sobel: {axes: yx}\n"))
    rc, out, err = cli("validate", spec)
    assert (rc, err) == (0, "")
    assert out.strip() == "valid: 't', 2 step(s)"


def test_validate_reads_no_data(tmp_path, cli):
    """validate checks the spec alone: a missing input is not its business."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(make_spec("  - gaussian: {sigma: 1}\n"))
    rc, _, err = cli("validate", spec)
    assert rc == 0 and err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_pipelines_validate(path, cli):
    rc, _, err = cli("validate", path)
    assert rc == 0, err
    spec = load_spec(path)
    assert spec.input.url.startswith("../demo-out/")  # runs as it is from a checkout, after `convpipe demo`
    assert spec.resolve(spec.input.url) == str((REPO / "demo-out" / Path(spec.input.url).name).resolve())


def test_bare_op_name_is_a_step_without_parameters():
    s = load_spec_text(make_spec("  - sobel\n  - abs\n"))
    assert [st.name for st in s.steps] == ["sobel", "abs"]


def test_json_spec_is_yaml_too(tmp_path):
    import json

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"convpipe": 1, "input": {"url": "in.zarr"}, "steps": [{"gaussian": {"sigma": 2}}]}))
    s = load_spec(spec)
    assert s.steps[0].params.sigma == 2
    assert s.resolve("in.zarr") == str(tmp_path / "in.zarr")


def test_yaml_anchors_are_plain_data():
    s = load_spec_text(make_spec("  - gaussian: &g {sigma: 1.5}\n  - gaussian: *g\n"))
    assert [st.params.sigma for st in s.steps] == [1.5, 1.5]


def test_dict_spec_errors_have_paths():
    with pytest.raises(SpecError) as e:
        load_spec({"convpipe": 1, "input": {"url": "x.zarr"}, "steps": [{"gaussian": {"sigma": -2}}]})
    assert e.value.path == "steps[0].gaussian.sigma" and e.value.line is None


def test_hash_ignores_where_and_how():
    a = load_spec_text(make_spec("  - gaussian: {sigma: 1}\n"))
    b = load_spec_text(make_spec("  - gaussian: {sigma: 1}\n", output="{url: elsewhere.zarr}",
                                 extra="execution: {cluster: processes}\n"))
    c = load_spec_text(make_spec("  - gaussian: {sigma: 1.5}\n"))
    assert a.hash() == b.hash() != c.hash()


# --------------------------------------------------------------------------- known library bugs


@pytest.mark.parametrize("steps, field", [
    ("  - correlate:\n      kernel: [[1, 2, 3], [4, 5]]\n", "steps[0].correlate.kernel (line 7)"),
    ("  - correlate:\n      kernel: [[1, 0, -1]]\n      normalize: sum\n", "steps[0].correlate.normalize (line 8)"),
    ("  - gaussian:\n      sigma: {z: 1, y: 2, x: 2}\n", "steps[0].gaussian.sigma (line 7)"),
], ids=["ragged-kernel", "zero-sum", "sigma-axis"])
def test_error_names_the_offending_field(tmp_path, cli, steps, field):
    spec = tmp_path / "s.yaml"
    spec.write_text(make_spec(steps, axes="yx"))
    rc, _, err = cli("validate", spec)
    assert rc == 1
    assert err.startswith(f"error: {field}:"), err


@pytest.mark.parametrize("steps", ["  - gaussian: {sigma: big}\n", "  - median: {size: 2.5}\n"], ids=["sigma", "size"])
def test_wrong_type_is_one_line(tmp_path, cli, steps):
    spec = tmp_path / "s.yaml"
    spec.write_text(make_spec(steps))
    rc, _, err = cli("validate", spec)
    assert rc == 1
    assert len(err.strip().splitlines()) == 1, err


def test_validate_checks_chunk_length_when_axes_are_known(tmp_path, cli):
    spec = tmp_path / "s.yaml"
    spec.write_text(make_spec("  - gaussian: {sigma: 1}\n", output="{url: out.zarr, chunks: [16, 16]}"))
    rc, _, err = cli("validate", spec)
    assert rc == 1
    assert "output.chunks (line 4)" in err


def test_input_and_output_urls_may_be_given_as_plain_strings(workdir, cli):
    """SPEC.md: ``input: URL`` and ``output: URL`` are short for ``{url: URL}``, everywhere a spec is read."""
    spec = workdir / "short.yaml"
    spec.write_text("convpipe: 1\ninput: in.zarr\noutput: short.zarr\nsteps: [{gaussian: {sigma: 1}}]\n")
    assert cli("validate", spec)[0] == 0
    rc, out, err = cli("run", spec)
    assert rc == 0, err
    assert zarr.open_array(str(workdir / "short.zarr")).shape == (4, 32, 32)
    rc, _, err = cli("run", spec, "--output", str(workdir / "other.zarr"))  # overrides apply to the shorthand
    assert rc == 0 and (workdir / "other.zarr").exists(), err
    s = load_spec(spec)
    assert s.input.url == "in.zarr" and s.output.url == "short.zarr" and s.line_of(("input", "url")) == 2


def test_a_missing_relative_input_says_where_relative_paths_resolve(workdir, cli):
    spec = workdir / "sub" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text("convpipe: 1\ninput: in.zarr\noutput: o.zarr\nsteps: [abs]\n")
    rc, _, err = cli("run", spec)
    assert rc == 1 and err.startswith("error: input.url (line 2):")
    assert f"relative paths resolve against the spec's folder, {spec.parent}" in err


def test_json_schema_accepts_the_url_shorthand():
    jsonschema = pytest.importorskip("jsonschema")
    from convpipe.spec import json_schema

    schema = json_schema()
    jsonschema.validate({"convpipe": 1, "input": "a.zarr", "output": "b.zarr", "steps": [{"abs": {}}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"convpipe": 1, "input": 3, "steps": [{"abs": {}}]}, schema)
