"""Interrupted runs and ``--resume`` (SPEC.md, Command line), for real: ``python -m convpipe run SPEC`` runs as a
subprocess on a 32x512x512 float32 stack in 512 tiles and is SIGKILLed at a random moment (after a random
number of tiles were recorded, plus a random few milliseconds so the kill lands anywhere in a tile's write).

Then: a plain ``run`` is refused with exit 1 and a one-line message naming ``--resume``; ``--resume``
finishes the output, recomputes only the tiles the manifest did not record (the summary says
"(N resumed)", and the recorded tiles' chunk files are not rewritten), and the result is bit-identical to an
uninterrupted run. A changed spec or input refuses ``--resume``, including an input rewritten with other values
of the same shape, dtype, chunks and attributes (the fingerprint sees the stored chunk objects).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import convpipe

SHAPE = (32, 512, 512)
CHUNKS = (4, 64, 64)  # 8 x 8 x 8 = 512 chunks; the tile is the chunk, so tile p0.i.j.k owns chunk c/i/j/k
N_TILES = 512
STEPS = """\
  - gaussian: {sigma: {y: 2, x: 1.5}}
  - sobel: {axes: yx}
  - median: {size: 3}
  - scale: {factor: 2.0, offset: 1.0}
"""


def _spec_text(steps: str = STEPS, inp: str = "in.zarr", out: str = "out.zarr") -> str:
    return (f"convpipe: 1\nname: resume-test\ninput: {{url: {inp}}}\noutput: {{url: {out}}}\nsteps:\n{steps}"
            "execution: {cluster: threads, tile: {z: 4, y: 64, x: 64}}\n")


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """The input stack and the output of an uninterrupted run of the same spec."""
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(7)
    a = rng.standard_normal(SHAPE, dtype=np.float32)
    z = zarr.create_array(str(root / "in.zarr"), shape=SHAPE, chunks=CHUNKS, dtype="float32")
    z[...] = a
    (root / "spec.yaml").write_text(_spec_text(out="ref.zarr"))
    convpipe.load(root / "spec.yaml").run()
    ref = zarr.open_array(str(root / "ref.zarr"), mode="r")
    assert ref.attrs["convpipe"]["complete"] is True
    return root, ref[...]


def _job(workload, tmp_path, copy_input=False) -> Path:
    root, _ = workload
    if copy_input:
        shutil.copytree(root / "in.zarr", tmp_path / "in.zarr")
        inp = "in.zarr"
    else:
        inp = str(root / "in.zarr")
    (tmp_path / "spec.yaml").write_text(_spec_text(inp=inp))
    return tmp_path / "spec.yaml"


def _cli(spec: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convpipe", "run", str(spec), *args], cwd=spec.parent,
                          check=False, capture_output=True, text=True, timeout=timeout)


def _markers(out: Path) -> set[str]:
    try:
        return set(os.listdir(out / ".convpipe" / "done"))
    except FileNotFoundError:
        return set()


def _kill_midway(spec: Path, rng: np.random.Generator, *extra: str, lo: int = 8, hi: int = 440) -> int:
    """Start ``run SPEC`` and SIGKILL it once ``k`` (random in [lo, hi)) tiles are recorded plus 0-40 ms.

    Returns the number of recorded tiles after the kill. Retries with a lower target if the run finished
    before it could be killed (a very fast machine).
    """
    out = spec.parent / "out.zarr"
    for attempt in range(3):
        target = int(rng.integers(lo, hi)) >> attempt
        extra_delay = float(rng.uniform(0, 0.04))
        with open(spec.parent / "killed.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "convpipe", "run", str(spec), *extra],
                                    cwd=spec.parent, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 120
                while proc.poll() is None and len(_markers(out)) < target and time.monotonic() < deadline:
                    time.sleep(0.003)
                time.sleep(extra_delay)
                finished = proc.poll() is not None
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                finished = True
            finally:
                proc.kill()
                proc.wait(timeout=30)
        if not finished:
            break
        assert proc.returncode == 0, (spec.parent / "killed.log").read_text()
        if "--resume" in extra:  # the resume finished first: nothing left to interrupt
            return len(_markers(out))
        shutil.rmtree(out)
    else:
        pytest.skip("the run always finished before it could be killed")
    return len(_markers(out))


def _chunk_mtimes(out: Path, keys: set[str]) -> dict[str, int]:
    """mtime_ns of the chunk file of every tile key ``p0.i.j.k`` (zarr v3 chunk ``c/i/j/k``)."""
    res = {}
    for k in keys:
        parts = k.split(".")
        assert parts[0] == "p0"
        res[k] = (out / "c" / Path(*parts[1:])).stat().st_mtime_ns
    return res


def _check_refused(spec: Path, out: Path, done: int) -> None:
    r = _cli(spec)
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip()
    assert "--resume" in err and "incomplete" in err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [err.splitlines()[-1]]
    assert len(_markers(out)) == done  # the refusal touched nothing
    assert zarr.open_array(str(out), mode="r").attrs["convpipe"]["complete"] is False


def _resume_and_check(spec: Path, ref: np.ndarray, done_before: set[str], *extra: str) -> None:
    out = spec.parent / "out.zarr"
    before = _chunk_mtimes(out, done_before)
    time.sleep(0.01)  # so that a rewrite would show in mtime_ns even on coarse clocks
    r = _cli(spec, "--resume", *extra)
    assert r.returncode == 0, r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    assert summary.startswith("done:"), r.stdout
    if done_before:
        assert f"({len(done_before)} resumed)" in summary, summary
    assert f"{N_TILES} tiles" in summary
    assert len(_markers(out)) == N_TILES
    # only unrecorded tiles were recomputed: recorded tiles' chunks were not rewritten
    assert _chunk_mtimes(out, done_before) == before
    z = zarr.open_array(str(out), mode="r")
    assert z.attrs["convpipe"]["complete"] is True
    got = z[...]
    assert got.dtype == ref.dtype
    assert np.array_equal(got, ref), f"max diff {np.nanmax(np.abs(got - ref))}"


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])  # ~12 s each
def test_kill_then_resume_is_identical(workload, tmp_path, seed):
    _, ref = workload
    spec = _job(workload, tmp_path)
    out = tmp_path / "out.zarr"
    rng = np.random.default_rng(seed)
    done = _kill_midway(spec, rng)
    assert 0 < done <= N_TILES
    done_keys = _markers(out)
    _check_refused(spec, out, done)
    # seed 1 also changes what is not part of the spec hash: where the output is named from and the scheduler
    extra = ("--output", str(out), "--cluster", "sync") if seed == 1 else ()
    _resume_and_check(spec, ref, done_keys, *extra)

    # resuming a complete output is a no-op that succeeds
    logs = []
    res = convpipe.load(spec).run(resume=True, log=logs.append)
    assert res.skipped_tiles == N_TILES and any("already complete" in m for m in logs)


def test_resume_refuses_changed_spec_and_input(workload, tmp_path):
    _, ref = workload
    spec = _job(workload, tmp_path, copy_input=True)
    out = tmp_path / "out.zarr"
    done = _kill_midway(spec, np.random.default_rng(2))
    done_keys = _markers(out)

    changed = tmp_path / "changed.yaml"
    changed.write_text(_spec_text(steps=STEPS.replace("x: 1.5", "x: 1.25"), out=str(out)))
    r = _cli(changed, "--resume")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot resume")
    assert "spec changed" in r.stderr and "Traceback" not in r.stderr

    # same values, different input: its metadata changed (the fingerprint is URL, shape, dtype, chunks, attrs)
    inp = zarr.open_array(str(tmp_path / "in.zarr"), mode="r+")
    inp.attrs["edited"] = True
    with pytest.raises(convpipe.InputError, match="input changed"):
        convpipe.load(spec).run(resume=True)
    assert len(_markers(out)) == done

    del inp.attrs["edited"]  # back to the input the run started on: resume works again (Python API this time)
    res = convpipe.load(spec).run(resume=True)
    assert res.skipped_tiles == len(done_keys) == done
    z = zarr.open_array(str(out), mode="r")
    assert z.attrs["convpipe"]["complete"] is True
    assert np.array_equal(z[...], ref)


@pytest.mark.slow  # ~36 s: a killed run; the refusal itself is test_resume_refuses_changed_spec_and_input's
def test_resume_refuses_an_input_whose_data_changed_after_a_kill(workload, tmp_path):
    """Kill, rewrite the input's values (same shape, dtype, chunks, attributes): --resume must not mix them."""
    spec = _job(workload, tmp_path, copy_input=True)
    out = tmp_path / "out.zarr"
    _kill_midway(spec, np.random.default_rng(3))
    done_keys = _markers(out)
    inp = zarr.open_array(str(tmp_path / "in.zarr"), mode="r+")
    meta = (inp.shape, inp.dtype, inp.chunks, dict(inp.attrs))
    new = np.random.default_rng(99).standard_normal(SHAPE, dtype=np.float32)
    inp[...] = new
    again = zarr.open_array(str(tmp_path / "in.zarr"), mode="r")
    assert (again.shape, again.dtype, again.chunks, dict(again.attrs)) == meta
    r = _cli(spec, "--resume")
    assert r.returncode == 1, r.stdout
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot resume") and "input's data changed" in line and "Traceback" not in r.stderr
    assert _markers(out) == done_keys  # the refusal touched nothing
    assert zarr.open_array(str(out), mode="r").attrs["convpipe"]["complete"] is False
    # --resume --overwrite starts again on the new data, and equals an uninterrupted run on it
    r = _cli(spec, "--resume", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert "resumed" not in r.stdout.strip().splitlines()[-1]
    (tmp_path / "ref.yaml").write_text(_spec_text(inp="in.zarr", out="ref.zarr"))
    convpipe.load(tmp_path / "ref.yaml").run()
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...],
                                  zarr.open_array(str(tmp_path / "ref.zarr"), mode="r")[...])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 22))
def test_kill_resume_kill_resume_many_seeds(workload, tmp_path, seed):
    """Many seeds, and the resume itself killed too: still identical, still only unrecorded tiles."""
    _, ref = workload
    spec = _job(workload, tmp_path)
    out = tmp_path / "out.zarr"
    rng = np.random.default_rng(seed)
    first = _kill_midway(spec, rng, lo=1, hi=500)
    _check_refused(spec, out, first)
    if first < N_TILES - 20:
        second = _kill_midway(spec, rng, "--resume", lo=first + 1, hi=N_TILES - 5)
        assert second >= first
    _resume_and_check(spec, ref, _markers(out))
