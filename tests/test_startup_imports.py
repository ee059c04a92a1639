"""The instant commands (issue 17 item 5) load only what they use: checked on sys.modules, never on the clock.

``--help``, ``validate``, ``ops``, ``schema`` and ``explain`` must start within twice the time of
``python -c "import numpy, yaml, pydantic"``. What made them slow was what they imported: zarr (via the run
machinery, ~0.2 s), dask (cpu count, byte formatting: ~0.17 s), typer with a pydantic TypeAdapter per
parameter (~0.08 s), numpy.ma. Each command runs here as ``python -m convpipe ...`` in a fresh interpreter,
which writes its sys.modules at exit; the modules it must not have loaded are asserted absent. Also: the
typer-free path prints what the typer commands print, and the stand-ins for dask's helpers agree with dask.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import zarr

ROOT = Path(__file__).resolve().parent.parent

#: never needed to validate a spec, list the ops, print the schema or plan on a local input
HEAVY = ("zarr", "numcodecs", "fsspec", "dask", "dask.array", "distributed", "scipy", "typer", "click", "rich",
         "numpy.ma", "cupy", "pandas", "pyarrow")


def _modules(args: list[str], cwd: Path) -> tuple[set[str], str]:
    out = cwd / "modules.json"
    code = ("import atexit, json, runpy, sys\n"
            f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
            f"sys.argv = ['convpipe', *{args!r}]\n"
            "runpy.run_module('convpipe', run_name='__main__', alter_sys=True)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                       env={**_env(), "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    return set(json.loads(out.read_text())), p.stdout


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> set[str]:
    """What ``import numpy, yaml, pydantic`` loads itself (a library may load a module the list names)."""
    d = tmp_path_factory.mktemp("base")
    out = d / "m.json"
    subprocess.run([sys.executable, "-c", "import json, sys, numpy, yaml, pydantic; "
                    f"open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules)))"], check=True, timeout=60)
    return set(json.loads(out.read_text()))


def _heavy(mods: set[str], baseline: set[str]) -> list[str]:
    return sorted(m for m in HEAVY if m in mods and m not in baseline)


def _spec(tmp_path: Path, url: str) -> Path:
    spec = {"convpipe": 1, "name": "startup", "input": {"url": url}, "output": {"url": str(tmp_path / "out.zarr")},
            "steps": [{"gaussian": {"sigma": {"y": 2, "x": 2}}}, {"sobel": {"axes": "yx"}}],
            "execution": {"cluster": "threads", "backend": "cpu"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def v3_spec(tmp_path: Path) -> Path:
    url = str(tmp_path / "in.zarr")
    zarr.create_array(store=url, shape=(8, 256, 256), chunks=(4, 128, 128), dtype="u2")
    return _spec(tmp_path, url)


@pytest.mark.parametrize("args", [["validate", "SPEC"], ["ops"], ["ops", "gaussian"], ["schema"],
                                  ["explain", "SPEC"], ["explain", "SPEC", "--json"]])
def test_instant_commands_load_no_heavy_module(tmp_path: Path, v3_spec: Path, baseline: set[str], args) -> None:
    mods, out = _modules([str(v3_spec) if a == "SPEC" else a for a in args], tmp_path)
    assert _heavy(mods, baseline) == []
    assert "convpipe.run.core" not in mods  # the run machinery: a run's, not a plan's
    if args[0] in ("validate", "explain"):
        # a few ms each: difflib only for a mistake, platformdirs not on Linux, the layer models not for gaussians
        light = ["difflib", "convpipe.params.layers"] + (["platformdirs"] if sys.platform == "linux" else [])
        assert sorted(m for m in light if m in mods and m not in baseline) == []
    # schema prints the shipped document and builds no model at all
    if args == ["schema"]:
        assert "pydantic.main" not in mods and "convpipe.params.local" not in mods
    if args[0] == "explain":
        assert "convpipe.calibrate" in mods and "estimate " in out or '"estimate"' in out  # cached, not measured
    assert out.strip()


def test_explain_of_an_ome_zarr_group_loads_no_zarr(tmp_path: Path, baseline: set[str]) -> None:
    from convpipe.ome import write_multiscales

    url = str(tmp_path / "img.zarr")
    g = zarr.open_group(url, mode="w", zarr_format=2)
    for i, n in enumerate((128, 64)):
        g.create_array(str(i), shape=(4, n, n), chunks=(2, 64, 64), dtype="u2",
                       chunk_key_encoding={"name": "v2", "separator": "/"})
    write_multiscales(g, "zyx", ["0", "1"], [[1, 1, 1], [1, 2, 2]])
    mods, out = _modules(["explain", str(_spec(tmp_path, url))], tmp_path)
    assert _heavy(mods, baseline) == [] and "4z x 128y x 128x" in out


def test_help_loads_no_array_stack(tmp_path: Path, baseline: set[str]) -> None:
    mods, out = _modules(["--help"], tmp_path)
    assert "explain" in out
    assert [m for m in ("zarr", "dask", "distributed", "scipy", "pydantic.main") if m in mods and m not in baseline] == []


def test_explain_with_an_option_goes_to_typer_and_says_the_same(tmp_path: Path, v3_spec: Path) -> None:
    mods, out = _modules(["explain", str(v3_spec), "--cluster", "threads"], tmp_path)
    assert "typer" in mods  # an option: typer parses the line
    assert out == _modules(["explain", str(v3_spec)], tmp_path)[1]


def _run(main, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", [["validate", "SPEC"], ["validate", "BAD"], ["validate", "MISSING"], ["ops"],
                                  ["ops", "sobel"], ["ops", "gausian"], ["schema"], ["explain", "SPEC"],
                                  ["explain", "SPEC", "--json"], ["explain", "BAD"], ["explain", "NOINPUT"]])
def test_typer_free_path_prints_what_typer_prints(tmp_path: Path, v3_spec: Path, argv) -> None:
    """cli.main runs these lines itself (cli.instant); cli.commands.main is the typer app: same bytes, same code."""
    from convpipe.cli import main
    from convpipe.cli.commands import main as typer_main
    from convpipe.cli.instant import _plain

    bad = tmp_path / "bad.yaml"
    bad.write_text("convpipe: 1\nsteps:\n  - gaussian: {sigma: -1}\n  - sobelx: {}\n")
    noinput = tmp_path / "noinput.yaml"
    noinput.write_text("convpipe: 1\nsteps:\n  - gaussian: {sigma: 1}\n")
    names = {"SPEC": v3_spec, "BAD": bad, "MISSING": tmp_path / "missing.yaml", "NOINPUT": noinput}
    argv = [str(names.get(a, a)) for a in argv]
    assert _plain(argv) is not None
    fast, slow = _run(main, argv), _run(typer_main, argv)
    assert fast == slow
    assert (fast[0] == 0) == (fast[2] == "")  # an error: one line per error on stderr, exit 1


@pytest.mark.parametrize("argv", [[], ["--help"], ["validate"], ["validate", "a", "b"], ["validate", "--help"],
                                  ["explain", "--json", "s.yaml"], ["explain", "s.yaml", "--input", "x"],
                                  ["ops", "a", "b"], ["schema", "x"], ["run", "s.yaml"], ["validate", "-"],
                                  ["explain", "s.yaml", "--json", "--json"], ["validate", "--json"]])
def test_everything_else_is_typers(argv) -> None:
    from convpipe.cli.instant import _plain

    assert _plain(argv) is None


def test_cpu_count_is_dasks() -> None:
    import dask.system

    from convpipe import sysinfo

    assert sysinfo.cpu_count() == dask.system.CPU_COUNT
    code = "from convpipe import sysinfo; import sys; print(sysinfo.cpu_count(), 'dask' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                       env={**_env(), "PYTHONPATH": str(ROOT)})
    assert p.stdout.split() == [str(dask.system.CPU_COUNT), "False"]  # computed, not imported


@pytest.mark.parametrize("n", [0, 1, 921, 922, 1023, 1024, 1234, 10**6, 12345678, 1234567890, 2**40 - 1,
                               1234567890000, 1234567890000000, 2**62])
def test_format_bytes_is_dasks(n: int) -> None:
    from dask.utils import format_bytes

    from convpipe.humanize import format_bytes as ours

    assert ours(n) == format_bytes(n)


@pytest.mark.parametrize("s", ["100", "100 MB", "100M", "5kB", "5.4 kB", "1kiB", "1e6", "1e6 kB", "MB", 123, 4.5,
                               "4GiB", "2 TiB", "1.5pb", "7 b", "3Ki", "5 foos", "x GB", ""])
def test_parse_bytes_is_dasks(s) -> None:
    from dask.utils import parse_bytes

    from convpipe.humanize import BYTE_SIZES, parse_bytes as ours
    import dask.utils

    assert BYTE_SIZES == dask.utils.byte_sizes
    try:
        want = parse_bytes(s)
    except ValueError as e:
        with pytest.raises(ValueError, match=str(e).replace("'", ".")):
            ours(s)
    else:
        assert ours(s) == want


def test_memory_limit_is_distributeds() -> None:
    code = ("from convpipe import sysinfo; import sys; m = sysinfo.memory_limit(); "
            "print(m, 'distributed' in sys.modules or 'convpipe._distributed_system' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                       env={**_env(), "PYTHONPATH": str(ROOT)})
    import distributed.system

    got, loaded = p.stdout.split()
    assert int(got) == distributed.system.MEMORY_LIMIT
    assert loaded == str(sys.platform != "linux")  # computed on Linux, distributed's module elsewhere


def test_machine_key_reads_what_importlib_and_platform_say(tmp_path: Path, v3_spec: Path, baseline: set[str]) -> None:
    """The calibration key is read faster (METADATA's headers; uname -p once a boot), never differently."""
    import importlib.metadata
    import platform

    from convpipe import estimate as E

    for name in E._VERSIONED:
        try:
            want = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        assert E._version(name) == want
    E.calibration()  # a cache hit records this boot
    key = E.machine_key()
    assert key["processor"] == platform.processor()
    mods, _ = _modules(["explain", str(v3_spec)], tmp_path)
    if E._boot_id() is not None:
        assert "subprocess" not in mods or "subprocess" in baseline  # uname -p did not run again
