"""The side-by-side benchmark (`convpipe bench`): its --quick preset end to end, and its parts."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

typer = pytest.importorskip("typer")
pytest.importorskip("dask_image")
pytest.importorskip("psutil")

from typer.testing import CliRunner

from convpipe import bench
from convpipe.bench import cases as bench_cases
from convpipe.bench import extra as bench_extra
from convpipe.bench.contenders import create_output
from convpipe.bench.data import oracle_on_region
from convpipe.bench.render import fmt_bytes
from convpipe.cli import bench as bench_cli

ROOT = Path(__file__).resolve().parents[1]
REL_TOL = 1e-4


def _convpipe_api() -> bool:
    try:
        import convpipe
    except ImportError:
        return False
    return hasattr(convpipe, "load")


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    bench_cli.register(app)

    @app.command("noop")  # a second command, so `bench` is a subcommand as in the main CLI
    def noop() -> None:
        pass

    return app


@pytest.mark.timeout(300)
@pytest.mark.slow  # ~35 s: the table, then start-up subprocesses and two job services
def test_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    res = CliRunner().invoke(_app(), ["bench", "--quick", "--workdir", str(tmp_path / "w"), "--json", str(out)])
    report = json.loads(out.read_text())
    rows = {(r["pipeline"], r["contender"]): r for r in report["rows"]}

    expected = [("io", "roofline"), ("light", "dask-image"), ("light", "scipy"), ("light", "convpipe"),
                ("heavy", "dask-image"), ("heavy", "scipy"), ("heavy", "convpipe")]
    assert set(expected) <= set(rows), sorted(rows)
    assert report["config"]["shape"] == list(bench.QUICK_SHAPE)
    assert report["config"]["chunks"] == list(bench.QUICK_CHUNKS)

    api = _convpipe_api()
    for key in expected:
        r = rows[key]
        if key[1] == "convpipe" and not api:
            assert r["status"] == "skipped", r
            continue
        assert r["status"] == "ok", (key, r["reason"], r["extra"].get("traceback"))
        assert r["seconds"] > 0 and r["peak_rss"] > 0
        assert r["rel_diff"] is not None and r["rel_diff"] <= REL_TOL, (key, r["max_abs_diff"], r["rel_diff"])
        assert r["check_ok"] is True
        # fairness: every output float32, zarr v3, the input's chunks, one codec chain
        assert r["output"]["dtype"] == "float32", (key, r["output"])
        assert r["output"]["chunks"] == list(bench.QUICK_CHUNKS), (key, r["output"])
        assert r["output"]["zarr_format"] == 3
        if key[1] != "scipy":
            assert isinstance(r["tasks"], int) and r["tasks"] > 0, key
        if key != ("io", "roofline"):
            assert r["vs_roofline"] == pytest.approx(r["seconds"] / rows[("io", "roofline")]["seconds"])
            assert r["vs_dask_image"] == pytest.approx(r["seconds"] / rows[(key[0], "dask-image")]["seconds"])
    codecs = {tuple(r["output"]["codecs"]) for r in report["rows"] if r["status"] == "ok"}
    assert len(codecs) == 1, codecs

    assert res.exit_code == (0 if report["all_ok"] else 2), res.output
    assert "roofline" in res.output and "dask-image" in res.output

    # the sections after the table (issue 17), in the same run: printed and in the JSON
    from convpipe.bench import summary
    from convpipe.service.warm import warm_supported

    assert report["config"]["sections"] == list(summary.SECTIONS) and report["config"]["preset"] == "quick"
    for title in ("estimate vs actual", "start-up", "service jobs/s"):
        assert title in res.output, title
    est = report["estimate_vs_actual"]
    assert est["status"] == "ok", est.get("traceback")
    assert [r["pipeline"] for r in est["rows"]] == (["light", "heavy"] if api else [])
    for r in est["rows"]:
        row = rows[(r["pipeline"], "convpipe")]
        assert r["status"] == "ok" and r["same_plan"] is True, r
        assert r["estimate_s"] > 0 and r["estimate_peak_bytes"] > 0
        assert r["actual_s"] == row["seconds"] and r["actual_peak_rss"] == row["peak_rss"]
        assert r["seconds_ratio"] == pytest.approx(r["estimate_s"] / r["actual_s"])
        assert r["memory_ratio"] == pytest.approx(r["estimate_peak_bytes"] / r["actual_peak_rss"])
    ex = est["examples"]  # --quick: three example pipelines on the demo's data, estimate vs actual
    assert [r["example"] for r in ex["rows"]] == sorted(summary.QUICK_EXAMPLES), ex
    assert all(r["status"] == "ok" and r["actual_s"] > 0 and r["estimate_s"] > 0 for r in ex["rows"]), ex
    assert "the example pipelines" in res.output
    st = report["startup"]
    runs, n_warm, n_cold = summary.SIZES["quick"]
    assert st["status"] == "ok" and st["all_ok"], st
    assert list(st["commands"]) == ["--help", "validate", "ops", "schema", "explain"]
    for c in st["commands"].values():
        assert len(c["times"]) == runs and c["ratio"] == pytest.approx(c["median_s"] / st["baseline"]["median_s"])
    sv = report["service"]
    assert sv["status"] == "ok" and sv["all_ok"], sv
    assert sv["cold"]["jobs"] == sv["cold"]["succeeded"] == n_cold
    if warm_supported():
        assert sv["warm"]["jobs"] == sv["warm"]["succeeded"] == n_warm and sv["speedup"] > 0
    # outputs are removed unless --keep-outputs; the input stays for the next run
    assert not list((tmp_path / "w").glob("out-*.zarr"))
    assert len(list((tmp_path / "w").glob("input-*.zarr"))) == 1


@pytest.mark.slow  # ~18 s: whole bench runs in subprocesses
def test_script_runs_the_same_code(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_bench.py"), "--quick", "--only", "roofline,dask-image",
         "--pipelines", "light", "--sections", "none", "--workdir", str(tmp_path / "w"), "--json", str(out)],
        check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert not {"estimate_vs_actual", "startup", "service"} & set(report)  # --sections none: the table alone
    rows = report["rows"]
    assert [(r["pipeline"], r["contender"], r["status"]) for r in rows] == [
        ("io", "roofline", "ok"), ("light", "dask-image", "ok")]


def test_bad_options_exit_1(tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (["--shape", "1,2"], ["--only", "nope"], ["--pipelines", "nope"], ["--backend", "tpu"],
                 ["--sections", "nope"]):
        res = runner.invoke(_app(), ["bench", "--quick", "--workdir", str(tmp_path), *args])
        assert res.exit_code == 1, (args, res.output)


def test_sub_volume_oracle_is_exact(tmp_path: Path) -> None:
    """The oracle on the grown sub-volume equals the whole-array oracle there; a halo one short does not."""
    import zarr

    cfg = bench.BenchConfig(shape=(10, 300, 280), chunks=(4, 64, 64), workdir=tmp_path)
    url, _, reused = bench.ensure_input(cfg)
    assert not reused and bench.ensure_input(cfg)[2]  # cached the second time
    ctx = bench.Ctx(cfg, url, cfg.shape, cfg.chunks, 1, 1 << 34)
    region = bench.check_region(cfg.shape, cfg.chunks)
    assert region[1].start % 64 != 0 and region[2].stop == 280  # crosses a chunk border, touches the edge
    a = zarr.open_array(url)[...].astype(np.float64)
    for name in ("light", "heavy"):
        case = bench.CASES[name]
        full = case.oracle(a)[region]
        assert np.abs(oracle_on_region(ctx, case, region) - full).max() <= 1e-9 * max(1, np.abs(full).max())
        short = dataclasses.replace(case, halo=tuple(max(0, h - 1) for h in case.halo))
        assert np.abs(oracle_on_region(ctx, short, region) - full).max() > 1e-9


def test_check_region_full_size() -> None:
    z, y, x = bench.check_region((32, 2048, 2048), (16, 512, 512))
    assert (z.start, z.stop) == (0, 32)
    assert y.start < 1024 < y.stop
    assert x.stop == 2048 and x.start < 2048 - 512


def test_light_dask_image_is_per_plane_sobel() -> None:
    """The dask-image light pipeline equals the per-plane oracle (and dodges the transposed-kernel key clash)."""
    import dask.array as da

    rng = np.random.default_rng(1)
    a = rng.random((4, 70, 90)) * 1000
    got = bench_cases._light_dask_image(da.from_array(a, chunks=(2, 32, 32))).compute()
    assert np.abs(got - bench.CASES["light"].oracle(a)).max() < 1e-9 * np.abs(got).max()
    got = bench_cases._heavy_dask_image(da.from_array(a, chunks=(2, 32, 32))).compute()
    assert np.abs(got - bench.CASES["heavy"].oracle(a)).max() < 1e-9 * max(1, np.abs(got).max())


@pytest.fixture
def registries():
    """The case and contender registries restored after the test (registrations are process-wide)."""
    saved = dict(bench.CASES), dict(bench.CONTENDERS)
    yield
    for reg, old in zip((bench.CASES, bench.CONTENDERS), saved):
        reg.clear()
        reg.update(old)


def test_a_new_row_is_one_registration(tmp_path: Path, registries) -> None:
    import scipy.ndimage as ndi

    bench.add_case(bench.Case(name="box3", title="uniform 3 (yx)", steps=[{"uniform": {"size": {"y": 3, "x": 3}}}],
                              oracle=lambda a: ndi.uniform_filter(a, (1, 3, 3)), halo=(0, 1, 1),
                              impls={"numpy-loop": lambda a: ndi.uniform_filter(a, (1, 3, 3))}))

    @bench.contender("numpy-loop", applies=lambda ctx, case: None if "numpy-loop" in case.impls else bench.NA)
    def numpy_loop(ctx: bench.Ctx, case: bench.Case) -> bench.Outcome:
        import zarr

        url = ctx.out_url(case, "numpy-loop")
        out = create_output(ctx, url)
        out[...] = case.impls["numpy-loop"](zarr.open_array(ctx.input_url)[...].astype(np.float32))
        return bench.Outcome(url)

    cfg = bench.BenchConfig.quick(pipelines=("box3",), only=("roofline", "numpy-loop"), workdir=tmp_path)
    report = bench.run_benchmark(cfg, progress=False)
    rows = [(r["pipeline"], r["contender"], r["status"], r["check_ok"]) for r in report["rows"]]
    assert rows == [("io", "roofline", "ok", True), ("box3", "numpy-loop", "ok", True)]
    assert report["rows"][1]["vs_roofline"] > 0


def test_floor_is_the_jobs_own_io(tmp_path: Path) -> None:
    """The per-job floor: zarr reads the input and writes *this job's* output values (checked against the
    oracle like any row); its time is read + write, and every row of the job gets ``vs_floor`` over it."""
    cfg = bench.BenchConfig.quick(pipelines=("light",), only=("floor", "convpipe"), repeat=2, workdir=tmp_path)
    report = bench.run_benchmark(cfg, progress=False)
    rows = {(r["pipeline"], r["contender"]): r for r in report["rows"]}
    assert set(rows) == {("light", "floor"), ("light", "convpipe")}  # no floor for the io case (no steps)
    floor, cp = rows[("light", "floor")], rows[("light", "convpipe")]
    assert floor["status"] == "ok" and floor["check_ok"] is True, floor
    assert floor["rel_diff"] <= REL_TOL
    assert floor["output"]["dtype"] == "float32" and floor["output"]["chunks"] == list(bench.QUICK_CHUNKS)
    assert floor["seconds"] == pytest.approx(min(floor["times"]))
    assert floor["extra"]["read_s"] > 0 and floor["extra"]["write_s"] > 0
    assert floor["vs_floor"] == pytest.approx(1.0)
    assert cp["vs_floor"] == pytest.approx(cp["seconds"] / floor["seconds"])


def test_prepare_runs_before_each_round_untimed(tmp_path: Path, registries, monkeypatch) -> None:
    """A contender's ``prepare`` runs before every round, outside the timed window (its cost is in no row).
    The harness's clock is a fake that only prepare and the body advance, so the test reads no real time."""
    import time
    import types

    import zarr

    from convpipe.bench import harness

    clock = [0.0]
    monkeypatch.setattr(harness, "time", types.SimpleNamespace(perf_counter=lambda: clock[0], strftime=time.strftime))
    calls: list[str] = []

    def prepare(ctx: bench.Ctx, case: bench.Case) -> None:
        calls.append("prepare")
        clock[0] += 100.0

    @bench.contender("copy", applies=lambda ctx, case: None if case.steps else bench.NA, prepare=prepare)
    def copy(ctx: bench.Ctx, case: bench.Case) -> bench.Outcome:
        assert calls and calls[-1] == "prepare"
        calls.append("run")
        url = ctx.out_url(case, "copy")
        out = create_output(ctx, url)
        out[...] = case.oracle(zarr.open_array(ctx.input_url)[...].astype(np.float64))
        clock[0] += 1.0
        return bench.Outcome(url)

    cfg = bench.BenchConfig.quick(pipelines=("light",), only=("copy",), repeat=2, workdir=tmp_path)
    report = bench.run_benchmark(cfg, progress=False)
    (row,) = report["rows"]
    assert row["status"] == "ok" and row["check_ok"] is True, row
    assert calls == ["prepare", "run"] * 2
    assert row["times"] == [1.0, 1.0]


# --------------------------------------------------------------------------- the extra suite (quick versions)


def test_fft_rows_match_the_oracle(tmp_path: Path) -> None:
    """conv41 (method fft vs scipy direct) and fft_lowpass (vs the plain rfft2 loop) through the harness."""
    cfg = bench.BenchConfig(shape=(2, 128, 96), chunks=(1, 64, 64), pipelines=("conv41", "fft_lowpass"),
                            only=("numpy-fft", "scipy", "convpipe"), workdir=tmp_path)
    report = bench.run_benchmark(cfg, progress=False)
    rows = {(r["pipeline"], r["contender"]): r for r in report["rows"]}
    assert set(rows) == {("conv41", "scipy"), ("conv41", "convpipe"), ("fft_lowpass", "numpy-fft"),
                         ("fft_lowpass", "scipy"), ("fft_lowpass", "convpipe")}
    api = _convpipe_api()
    for key, r in rows.items():
        if key[1] == "convpipe" and not api:
            continue
        assert r["status"] == "ok" and r["check_ok"] is True, (key, r["reason"], r["max_abs_diff"])


@pytest.mark.parametrize("shape", [(64, 48), (63, 47)])
def test_floor_mask_is_the_ops_mask(shape: tuple[int, int]) -> None:
    """The floor's plainly written Butterworth mask is the one fft_filter uses (so they compute the same)."""
    spectral = pytest.importorskip("convpipe.ops.spectral")
    ref = spectral.fft_filter_mask(shape, "lowpass", (0.25,), "butterworth", 4.0)
    assert np.allclose(bench.fft_lowpass_mask(*shape, 0.25, 4.0), ref, rtol=1e-12, atol=1e-15)


def _extra(tmp_path: Path, name: str) -> dict:
    report = bench.run_extra((name,), tmp_path, quick=True, json_path=tmp_path / "extra.json")
    row = report["rows"][name]
    assert row["status"] == "ok", row.get("traceback")
    assert json.loads((tmp_path / "extra.json").read_text())["rows"][name]["status"] == "ok"
    return row


@pytest.mark.timeout(300)
@pytest.mark.slow  # ~18 s: whole bench runs in subprocesses
def test_extra_resume_quick(tmp_path: Path) -> None:
    if not _convpipe_api():
        pytest.skip("convpipe.load is not available")
    r = _extra(tmp_path, "resume")
    assert r["resumed_equals_full_run"] and r["resumed_complete"]
    assert r["full_wall_s"] > 0 and r["resume_wall_s"] > 0 and r["noop_resume_wall_s"] > 0
    assert all(0 <= n <= r["tiles"] for n in r["tiles_done_at_kill"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["rss_scale", "peaks"])
def test_extra_memory_rows_quick(tmp_path: Path, name: str) -> None:
    if not _convpipe_api():
        pytest.skip("convpipe.load is not available")
    r = _extra(tmp_path, name)
    small, big = r["runs"].values()
    assert big["shape"][0] == 4 * small["shape"][0]
    assert small["peak_rss"] > small["rss_after_imports"] * 0.5 and big["peak_rss"] > 0
    assert r["ratio"] == pytest.approx(big["peak_rss"] / small["peak_rss"])
    if name == "peaks":
        assert 0 < small["rows"] < big["rows"]


@pytest.mark.timeout(300)
@pytest.mark.slow  # ~14 s: whole bench runs in subprocesses
def test_extra_archive_quick(tmp_path: Path) -> None:
    if not _convpipe_api():
        pytest.skip("convpipe.load is not available")
    sx = bench.ExtraCtx(workdir=tmp_path, quick=True, archive_targets=(200, 400), archive_clusters=("threads",))
    r = bench_extra.extra_archive(sx)
    assert [v["tasks"] for v in r["build"].values()] == [200, 400]
    runs = r["run"]["threads"]
    assert all(v["measured"] and v["tasks"] > 0 and v["run_ms_per_task"] > 0 for v in runs.values())
    assert r["run_fit"]["threads"]["ms_per_task"] is not None
    assert not list(tmp_path.glob("archive-*.zarr"))  # the metadata-only inputs are removed


def test_extra_suite_cli(tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["bench", "--suite", "extra", "--pipelines", "nope", "--workdir", str(tmp_path)])
    assert res.exit_code == 1, res.output
    res = CliRunner().invoke(_app(), ["bench", "--suite", "nope", "--workdir", str(tmp_path)])
    assert res.exit_code == 1, res.output
    res = CliRunner().invoke(_app(), ["bench", "--suite", "extra", "--quick", "--pipelines", "conv41",
                                      "--workdir", str(tmp_path)])
    report = json.loads((tmp_path / "extra-quick.json").read_text())
    assert list(report["rows"]) == ["conv41"] and report["quick"] is True
    (r,) = report["rows"]["conv41"]["sizes"].values()
    assert res.exit_code == 0, res.output
    if _convpipe_api():
        assert r["convpipe"]["check_ok"] and r["scipy_direct"]["check_ok"] and r["speedup"] > 0


# --------------------------------------------------------------------------- the package's shape


def test_gpu_suite_on_the_cpu(tmp_path: Path) -> None:
    """``--suite gpu`` (what ``python -m convpipe.gpu`` was) through the bench command; CPU only here."""
    out = tmp_path / "gpu.json"
    args = ["bench", "--suite", "gpu", "--shape", "4,48,40", "--chunks", "2,24,20", "--only", "cpu",
            "--workdir", str(tmp_path / "w"), "--json", str(out)]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["shape"] == [4, 48, 40] and rep["end_to_end"]["cpu"]["warm_s"] > 0
    assert rep["kernel"]["cpu"]["shape"] == [4, 48, 40]
    assert "cold s" in res.output  # the table
    for bad in (["--only", "tpu"], ["--shape", "4,48", "--chunks", "2,24,20"]):
        res = CliRunner().invoke(_app(), ["bench", "--suite", "gpu", "--workdir", str(tmp_path), *bad])
        assert res.exit_code == 1, (bad, res.output)


def test_gpu_backend_imports_no_benchmark_and_no_cli() -> None:
    """The GPU backend (convpipe/gpu.py) holds the backend only: no planner, spec, zarr or CLI parser for a
    benchmark (those live in convpipe.bench.gpu), and the bench package has no argparse CLI of its own."""
    import ast

    pkg = ROOT / "convpipe"
    tree = ast.parse((pkg / "gpu.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    assert not names & {".plan", ".spec", ".bench", "convpipe", "zarr", "argparse"}, names
    for f in (pkg / "bench").glob("*.py"):
        text = f.read_text()
        assert "argparse" not in text and "ArgumentParser" not in text, f.name
        assert len(text.splitlines()) <= 700, f.name


def test_one_rss_sampler_for_bench_and_monitor() -> None:
    """The benchmark and the run monitor share convpipe.monitor.RssSampler; it sees another process and,
    when asked, that process's children."""
    import time

    from convpipe.bench import child, harness
    from convpipe.monitor import RssSampler, RunMonitor

    assert harness.RssSampler is RssSampler and child.RssSampler is RssSampler
    assert isinstance(RunMonitor().rss, RssSampler)
    # a parent that allocates nothing and a child holding ~200 MiB
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; b = bytearray(200 * 2**20); time.sleep(30)']); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        own, tree = RssSampler(proc.pid), RssSampler(proc.pid, children=True, interval=0.02)
        deadline = time.monotonic() + 20
        with tree:
            while time.monotonic() < deadline and (tree.peak or 0) < 150 * 2**20:
                time.sleep(0.05)
        with own:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert tree.peak >= 150 * 2**20 and tree.peak_own < 100 * 2**20, (tree.peak, tree.peak_own)
    assert own.peak == own.peak_own < 100 * 2**20 and own.samples >= 2
    gone = RssSampler(proc.pid)
    with gone:  # an ended process: nothing read, nothing raised
        pass
    assert gone.peak is None and gone.samples == 0


def test_bytes_are_formatted_by_dask() -> None:
    from dask.utils import format_bytes

    for n in (0, 900, 3 * 2**20 + 5, 5 * 2**30):
        assert fmt_bytes(n) == format_bytes(n)
    assert fmt_bytes(-3 * 2**20) == "-" + format_bytes(3 * 2**20)  # an RSS delta can be negative
    assert fmt_bytes(None) == "—"


# --------------------------------------------------------------------------- the sections after the table


def _fake_rows() -> list[dict]:
    def row(pipeline: str, contender: str, seconds: float, peak: int, status: str = "ok") -> dict:
        return {"pipeline": pipeline, "contender": contender, "status": status, "seconds": seconds,
                "peak_rss": peak, "rss_delta": peak // 4, "extra": {"plan_tasks": 12}}

    return [row("io", "roofline", 1.0, 100), row("light", "dask-image", 2.0, 300), row("light", "convpipe", 4.0, 400),
            row("heavy", "convpipe", 10.0, 1000), row("conv41", "convpipe", 0, 0, status="skipped")]


def _fake_measure(workdir: Path, n: int, *, warm: bool, **kw) -> dict:
    secs = n / (8.0 if warm else 0.5)
    return {"jobs": n, "succeeded": n - (not warm and n > 3), "seconds": secs, "jobs_per_s": n / secs, "submit_s": 0.01,
            "service_start_to_first_job_s": 2.0, "max_running": 2, "sample_max_abs_diff": 1e-7, "sample_ok": True,
            "loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [1.0, 1.0, 1.0]}


@pytest.mark.parametrize("preset", ["quick", "default"])
def test_sections_assemble_and_render(tmp_path: Path, monkeypatch, preset: str) -> None:
    """Estimate vs actual, start-up and service jobs/s from fake measurements: the numbers each section
    derives (ratios, medians, targets), the report's failures, the JSON and the tables."""
    from rich.console import Console

    from convpipe.bench import service, summary
    from convpipe.bench.harness import json_default
    from convpipe.cli.bench_tables import render_sections

    estimates = {"light": {"seconds": 2.0, "peak_memory_bytes": 900, "plan_tasks": 12},   # 0.5× time, 2.25× memory
                 # 1.5×; 2.0× of the run's growth (250) on a run process's footprint (150); other plan
                 "heavy": {"seconds": 15.0, "peak_memory_bytes": 800, "plan_tasks": 13, "process_bytes": 150}}
    monkeypatch.setattr(summary, "plan_estimate", lambda ctx, name, costs=None: dict(estimates[name]))
    monkeypatch.setattr(summary, "_calibrate", lambda: {"costs": {}, "cached": True, "calibration_s": 1.0})
    asked: list = []

    def fake_examples(workdir, costs, names=None):
        asked.append(names)
        return {"target": [0.5, 2.0], "ran": 1, "met": False, "rows": [
            {"example": "edges", "status": "ok", "estimate_s": 0.03, "actual_s": 0.04, "ratio": 0.75, "met": True,
             "passes": 1, "loadavg": [1.0, 1.0, 1.0]},
            {"example": "coins-segmentation", "status": "skipped", "reason": "coins.zarr needs scikit-image"},
            {"example": "diffusion", "status": "error", "reason": "RuntimeError: boom"}]}

    monkeypatch.setattr(summary, "example_estimates", fake_examples)
    base = {"import numpy": [0.5, 0.4, 0.6, 0.5, 0.5], "--help": [0.6, 0.9, 0.7, 0.7, 0.7],
            "explain": [2.0, 1.0, 1.5, 1.5, 1.5]}
    calls: list[str] = []

    def timer(argv: list[str], cwd: Path) -> dict:
        # the baseline's code, or [python -m] convpipe <sub>
        key = "import numpy" if argv[1] == "-c" else argv[3] if argv[1] == "-m" else argv[1]
        calls.append(key)
        seq = base.get(key, [0.8] * 5)
        return {"seconds": seq[sum(c == key for c in calls) - 1], "rc": 3 if key == "ops" else 0, "stderr_tail": "boom"}

    monkeypatch.setattr(summary, "run_timed", timer)
    monkeypatch.setattr(service, "measure", _fake_measure)
    monkeypatch.setattr("convpipe.service.warm.warm_supported", lambda: True)

    cfg = bench.BenchConfig(workdir=tmp_path, pipelines=("light", "heavy"), sections=summary.SECTIONS, preset=preset)
    ctx = bench.Ctx(cfg, str(tmp_path / "in.zarr"), (2, 8, 8), (1, 8, 8), 2, 1 << 30)
    report = {"rows": _fake_rows()}
    summary.add_sections(ctx, report)
    runs, n_warm, n_cold = summary.SIZES[preset]

    est = report["estimate_vs_actual"]
    assert est["status"] == "ok" and [r["pipeline"] for r in est["rows"]] == ["light", "heavy"]
    light, heavy = est["rows"]
    assert light["seconds_ratio"] == pytest.approx(0.5) and light["memory_ratio"] == pytest.approx(2.25)
    assert not light["met"] and light["same_plan"] is True
    assert heavy["seconds_ratio"] == pytest.approx(1.5) and heavy["memory_ratio"] == pytest.approx(2.0)
    assert (heavy["actual_peak_rss"], heavy["process_peak_rss"]) == (400, 1000)  # not the bench process's peak
    assert light["actual_peak_rss"] == 400  # no footprint known: the process's peak
    assert heavy["met"] and heavy["same_plan"] is False and not est["met"]
    assert asked == [summary.QUICK_EXAMPLES if preset == "quick" else None]  # --quick: three examples
    assert [r["status"] for r in est["examples"]["rows"]] == ["ok", "skipped", "error"]

    st = report["startup"]
    assert st["status"] == "ok" and st["runs"] == runs and st["baseline"]["name"] == summary.STARTUP_BASELINE
    assert list(st["commands"]) == ["--help", "validate", "ops", "schema", "explain"]
    assert calls[:6] == ["import numpy", "--help", "validate", "ops", "schema", "explain"]  # round-robin
    # timed as an installed wheel starts: with bytecode, whatever PYTHONDONTWRITEBYTECODE says
    assert st["bytecode_files"] > 100
    assert Path(importlib.util.cache_from_source(summary.__file__)).exists()
    assert len(calls) == 6 * runs
    med = {k: float(np.median(v[:runs])) for k, v in base.items()}
    assert st["baseline"]["median_s"] == pytest.approx(med["import numpy"])
    assert st["commands"]["--help"]["ratio"] == pytest.approx(med["--help"] / med["import numpy"])
    assert st["commands"]["--help"]["met"] and not st["commands"]["explain"]["met"]
    assert st["commands"]["explain"]["ratio"] == pytest.approx(med["explain"] / med["import numpy"])
    assert not st["commands"]["ops"]["ok"] and st["commands"]["ops"]["ratio"] is None and not st["all_ok"]
    spec = (tmp_path / "startup-spec.yaml").read_text()
    assert "in.zarr" in spec and "sobel" in spec  # validate and explain get a spec of the benchmark's input

    sv = report["service"]
    assert sv["status"] == "ok" and sv["warm"]["jobs"] == n_warm and sv["cold"]["jobs"] == n_cold
    assert sv["speedup"] == pytest.approx(16.0) and sv["warm"]["jobs_per_s"] == pytest.approx(8.0)
    lost = n_cold > 3  # the fake loses one cold job of the default preset's 4
    assert sv["all_ok"] is not lost and sv["met"] is not lost

    notes = summary.section_notes(report)
    assert any(n.startswith("startup ops failed: exit 3") for n in notes), notes
    assert any(n.startswith("service failed") for n in notes) is lost
    assert "estimate example diffusion error: RuntimeError: boom" in notes  # skipped is no failure
    assert not any("coins-segmentation" in n for n in notes)
    assert not summary.sections_ok(report)
    json.loads(json.dumps(report, default=json_default))  # the --json report holds all three

    console = Console(record=True, width=220)
    tables = render_sections(report)
    assert len(tables) == 4  # the estimate's rows and its examples, start-up, service
    for t in tables:
        console.print(t)
    text = console.export_text()
    for needle in ("estimate vs actual", "0.50×", "2.25×", "(not the plan run)", "start-up", "convpipe explain",
                   "3.00×", "failed", "service jobs/s", "8.00", "16.0×", "the example pipelines", "0.75×",
                   "skipped", "error"):
        assert needle in text, needle


def test_example_estimates_report_each_example_and_survive_a_failing_one(tmp_path: Path, monkeypatch) -> None:
    """The estimate section's examples part on the demo's data with a fake runner (no timing): the ratio is
    the plan's estimate over the runner's seconds; a failing example and one whose input is absent are rows."""
    import convpipe.demo
    from convpipe.bench import summary
    from convpipe.bench.examples import example_estimates

    costs = {"factor_point": 1.0, "factor_local": 1.0, "factor_full": 1.0, "factor_global": 1.0, "task_s": 1e-3,
             "read_bytes_per_s": 1e8, "write_bytes_per_s": 1e8, "run_fixed_s": 0.05, "process_bytes": 1e8}
    monkeypatch.setattr(convpipe.demo, "_real_images", lambda out: [])  # as without scikit-image: coins absent
    ran: list[str] = []

    def runner(p):
        ran.append(p.spec.name)
        if p.spec.name == "diffusion":
            raise RuntimeError("boom")
        return 0.5, p.explain()

    names = ("edges", "diffusion", "nuclei-3d", "coins-segmentation")
    out = example_estimates(tmp_path, costs, names, runner=runner)
    rows = {r["example"]: r for r in out["rows"]}
    assert sorted(rows) == sorted(names) and sorted(ran) == ["diffusion", "edges", "nuclei-3d"]
    assert rows["diffusion"]["status"] == "error" and "boom" in rows["diffusion"]["reason"]
    assert rows["coins-segmentation"]["status"] == "skipped" and "coins.zarr" in rows["coins-segmentation"]["reason"]
    for name in ("edges", "nuclei-3d"):
        r = rows[name]
        assert r["status"] == "ok" and r["actual_s"] == 0.5
        assert r["ratio"] == pytest.approx(r["estimate_s"] / 0.5) and r["met"] == (0.5 <= r["ratio"] <= 2.0)
    assert rows["nuclei-3d"]["passes"] == 2 and out["ran"] == 2
    assert (tmp_path / "examples" / "demo-out" / "nuclei.zarr").exists()
    notes = summary.section_notes({"estimate_vs_actual": {"status": "ok", "rows": [], "examples": out}})
    assert notes == [f"estimate example diffusion error: {rows['diffusion']['reason']}"]
    # the real runner: a warm-up run (not counted), then TIMED_RUNS timed ones; the median, and the plan
    from convpipe.bench.examples import TIMED_RUNS, run_timed

    elapsed = iter([9.0, 5.0, 1.0, 3.0])

    class P:
        runs = 0

        def run(self, overwrite):
            P.runs += 1
            return type("R", (), {"elapsed": next(elapsed), "plan": "plan"})()

    assert TIMED_RUNS == 3 and run_timed(P()) == (3.0, "plan") and P.runs == 4


def test_a_failing_section_is_recorded_not_raised(tmp_path: Path, monkeypatch) -> None:
    from convpipe.bench import summary
    from convpipe.cli.bench_tables import render_sections

    def broken(*a, **k):
        raise RuntimeError("no calibration")

    monkeypatch.setattr(summary, "_calibrate", broken)
    cfg = bench.BenchConfig(workdir=tmp_path, sections=("estimate",))
    report = {"rows": _fake_rows()}
    summary.add_sections(bench.Ctx(cfg, "in.zarr", (1, 8, 8), (1, 8, 8), 1, 1 << 30), report)
    assert report["estimate_vs_actual"]["status"] == "error" and "startup" not in report
    assert summary.section_notes(report) == ["estimate error: RuntimeError: no calibration"]
    assert render_sections(report) == []
    # one plan failing to estimate is a row of its own, the others still compare
    out = summary.estimate_vs_actual(_fake_rows(), lambda name: broken() if name == "heavy" else
                                     {"seconds": 4.0, "peak_memory_bytes": 400})
    assert [(r["pipeline"], r["status"]) for r in out["rows"]] == [("light", "ok"), ("heavy", "error")]
    assert out["rows"][0]["met"] and out["rows"][0]["same_plan"] is None and not out["met"]


def test_parse_sections_and_run_timed(tmp_path: Path) -> None:
    from convpipe.bench import summary

    assert summary.parse_sections(None) == summary.parse_sections("all") == summary.SECTIONS
    assert summary.parse_sections("none") == ()
    assert summary.parse_sections("service, estimate") == ("estimate", "service")  # the order they print in
    with pytest.raises(ValueError, match="nope"):
        summary.parse_sections("estimate,nope")
    with pytest.raises(ValueError, match="section"):
        bench.run_benchmark(bench.BenchConfig.quick(workdir=tmp_path, sections=("nope",)), progress=False)
    ok = summary.run_timed([sys.executable, "-c", "pass"], tmp_path)
    bad = summary.run_timed([sys.executable, "-c", "import sys; sys.exit('no such spec')"], tmp_path)
    assert ok["rc"] == 0 and ok["seconds"] > 0
    assert bad["rc"] == 1 and "no such spec" in bad["stderr_tail"]
