"""The ``convpipe bench`` command: options in, report out, one exit code (0 ok, 1 bad options, 2 a failure).

:func:`bench` is the command's body (plain arguments, printed with rich); :func:`register` adds it to a
typer app. Three suites of :mod:`convpipe.bench`: ``main`` (the side-by-side table), ``extra`` (the issue
rows) and ``gpu`` (GPU vs CPU, :mod:`convpipe.bench.gpu`).

The help texts name the registered cases, contenders and extra rows, and importing those registries loads
the benchmark (numpy, scipy, dask, zarr): this module imports them only inside its functions, and the main
app lists ``bench`` from a stub (:func:`register_stub`) that :func:`build` replaces when it runs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import typer

__all__ = ["GPU_SHAPE", "HELP", "bench", "build", "register", "register_stub"]

#: the command's one-line help (also the stub's, in the main app's list of commands)
HELP = "Side-by-side benchmark: I/O roofline, dask-image, scipy and convpipe on a generated stack."

#: the GPU suite's default stack (deeper than the main table's, so the device has work to hide transfers in)
GPU_SHAPE = (64, 2048, 2048)
#: the largest difference of the GPU output from the CPU one, relative to max(1, max|cpu|), that passes
GPU_REL_TOL = 1e-4


def escape(text: str) -> str:
    """``text`` for a rich console: a bracket in a message (``convpipe[gpu]``) is text, not a style tag."""
    from rich.markup import escape as _escape

    return _escape(text)


def _parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace("×", ",").replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what}: expected numbers like 32,2048,2048, got {text!r}") from None
    return vals


def _parse_names(text: str | None) -> tuple[str, ...] | None:
    if text is None or not text.strip():
        return None
    return tuple(n.strip() for n in text.split(",") if n.strip())


def bench(
    shape: str | None = None,
    chunks: str | None = None,
    pipelines: str | None = None,
    repeat: int = 1,
    workdir: Path = Path("bench-out"),
    json_path: Path | None = None,
    backend: str = "cpu",
    only: str | None = None,
    quick: bool = False,
    keep_outputs: bool = False,
    suite: str = "main",
    run_limit: float = 240.0,
    sections: str | None = None,
    examples: bool = True,
) -> int:
    """Run the benchmark and print its table; return the exit code (0 ok, 1 bad options, 2 a check failed).

    The arguments are the command's options (``convpipe bench --help``), as text where the command takes text.
    """
    from rich.console import Console

    from ..bench.harness import run_benchmark, selected_cases, selected_contenders, validate_config
    from ..bench.registry import DEFAULT_CHUNKS, DEFAULT_PIPELINES, DEFAULT_SHAPE, QUICK_CHUNKS, QUICK_SHAPE, BenchConfig
    from ..bench.render import render_notes
    from ..bench.summary import parse_sections, section_notes
    from .bench_tables import render_sections, render_table

    console = Console()
    if not console.is_terminal and console.width < 150:
        console = Console(width=150)  # a log file gets the whole table, not 80 squeezed columns
    err = Console(stderr=True)
    if suite == "extra":
        return _bench_extra(pipelines, workdir, quick, json_path, run_limit, console, err)
    if suite == "gpu":
        return _bench_gpu(shape, chunks, only, repeat, workdir, quick, json_path, console, err)
    if suite != "main":
        err.print(f"[red]error:[/] --suite is main, extra or gpu, got {escape(repr(suite))}")
        return 1
    if pipelines is None:
        pipelines = ",".join(DEFAULT_PIPELINES)
    try:
        d_shape = QUICK_SHAPE if quick else DEFAULT_SHAPE
        d_chunks = QUICK_CHUNKS if quick else DEFAULT_CHUNKS
        cfg = BenchConfig(
            shape=_parse_ints(shape, "--shape") if shape else d_shape,
            chunks=_parse_ints(chunks, "--chunks") if chunks else d_chunks,
            pipelines=_parse_names(pipelines) or (),
            repeat=repeat, workdir=workdir, json_path=json_path, backend=backend,
            only=_parse_names(only), keep_outputs=keep_outputs,
            sections=parse_sections(sections), preset="quick" if quick else "default", examples=examples,
        )
        validate_config(cfg)
        selected_cases(cfg)
        selected_contenders(cfg)
    except ValueError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        return 1
    report = run_benchmark(cfg, console)
    console.print(render_table(report))
    for table in render_sections(report):
        console.print(table)
    for note in [*render_notes(report), *section_notes(report)]:
        console.print(f"  {note}", highlight=False, markup=False)
    if json_path is not None:
        console.print(f"report: {json_path}")
    if not report["all_ok"]:
        bad = [f"{r['pipeline']}/{r['contender']}" for r in report["rows"]
               if r["status"] == "error" or r.get("check_ok") is False]
        bad += [note.split(":")[0] for note in section_notes(report)]
        err.print(f"[red]failed:[/] {escape(', '.join(bad))}")
        return 2
    return 0


def _bench_extra(pipelines: str | None, workdir: Path, quick: bool, json_path: Path | None, run_limit: float,
                 console: Any, err: Any) -> int:
    from ..bench.extra import EXTRA_ROWS, run_extra
    from .bench_tables import render_conv_layer_table, render_extra_table

    names = _parse_names(pipelines)
    unknown = [n for n in (names or ()) if n not in EXTRA_ROWS]
    if unknown:
        err.print(f"[red]error:[/] unknown extra row(s) {escape(', '.join(unknown))}; known: {', '.join(EXTRA_ROWS)}")
        return 1
    json_path = json_path if json_path is not None else Path(workdir) / ("extra-quick.json" if quick else "extra.json")
    report = run_extra(names, workdir, quick=quick, json_path=json_path, console=console,
                       archive_run_limit_s=run_limit)
    console.print(render_extra_table(report))
    if report["rows"].get("conv_layer", {}).get("status") == "ok":  # its contenders side by side
        console.print(render_conv_layer_table(report["rows"]["conv_layer"]))
    console.print(f"report: {json_path}")
    bad = [n for n, r in report["rows"].items() if r.get("status") != "ok"]
    if bad:
        err.print(f"[red]failed:[/] {escape(', '.join(bad))}")
        return 2
    return 0


def _bench_gpu(shape: str | None, chunks: str | None, only: str | None, repeat: int, workdir: Path, quick: bool,
               json_path: Path | None, console: Any, err: Any) -> int:
    from ..bench.gpu import bench_gpu
    from ..bench.harness import json_default
    from ..bench.registry import DEFAULT_CHUNKS, QUICK_CHUNKS, QUICK_SHAPE
    from .bench_tables import render_gpu_table

    try:
        sh = _parse_ints(shape, "--shape") if shape else (QUICK_SHAPE if quick else GPU_SHAPE)
        ch = _parse_ints(chunks, "--chunks") if chunks else (QUICK_CHUNKS if quick else DEFAULT_CHUNKS)
        backends = _parse_names(only) or ("cpu", "gpu")
        if len(sh) != len(ch) or not 2 <= len(sh) <= 5 or min(*sh, *ch) < 1:
            raise ValueError("--shape and --chunks take as many positive numbers, 2 to 5 of them")
        unknown = [b for b in backends if b not in ("cpu", "gpu")]
        if unknown:
            raise ValueError(f"--suite gpu: --only takes backends cpu, gpu; got {', '.join(unknown)}")
        if "gpu" in backends and importlib.util.find_spec("cupy") is None:
            raise ValueError("--suite gpu: CuPy is not installed (pip install 'convpipe[gpu]'), or use --only cpu")
    except ValueError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        return 1
    report = bench_gpu(sh, ch, workdir=workdir, repeat=repeat, backends=backends, log=console.print)
    console.print(render_gpu_table(report))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2, default=json_default) + "\n")
        console.print(f"report: {json_path}")
    bad = [f"{name}: {row['note']}" for name, row in report["end_to_end"].items() if row.get("note")]
    diff = report.get("max_rel_diff_gpu_vs_cpu")
    if diff is not None and not diff <= GPU_REL_TOL:
        bad.append(f"GPU output differs from the CPU's by {diff:.2e} (relative; tolerance {GPU_REL_TOL:g})")
    if bad:
        err.print(f"[red]failed:[/] {escape('; '.join(bad))}")
        return 2
    return 0


def register(app: Any) -> None:
    """Add the ``bench`` command to a typer app (:func:`build` does, for the main app)."""
    from ..bench.extra import EXTRA_ROWS
    from ..bench.registry import CASES, CONTENDERS, QUICK_CHUNKS, QUICK_SHAPE
    from ..bench.summary import SECTIONS

    cases = ", ".join(c for c in CASES if c != "io")
    quick_help = (f"small preset {'×'.join(map(str, QUICK_SHAPE))}, chunks {'×'.join(map(str, QUICK_CHUNKS))}, "
                  "for tests")
    # typer's option-as-default style (not Annotated[...]): the help texts name the registered cases and
    # contenders, which are locals here
    opt = typer.Option

    @app.command("bench", help=HELP)
    def bench_command(
        shape: str | None = opt(None, "--shape", help="z,y,x of the generated uint16 stack [32,2048,2048]"),
        chunks: str | None = opt(None, "--chunks", help="zarr chunks z,y,x [16,512,512]"),
        pipelines: str | None = opt(None, "--pipelines",
                                    help=f"comma-separated: {cases} (default light,heavy); with --suite extra: "
                                         f"{', '.join(EXTRA_ROWS)} (default all)"),
        repeat: int = opt(1, "--repeat", min=1, help="rounds (round-robin over the rows); the best time is reported"),
        workdir: Path = opt(Path("bench-out"), "--workdir", help="the input (cached) and outputs go here"),  # noqa: B008
        json_path: Path | None = opt(None, "--json", help="write the full report as JSON"),  # noqa: B008
        backend: str = opt("cpu", "--backend", help="cpu | gpu (convpipe and dask-image)"),
        only: str | None = opt(None, "--only", help="comma-separated contenders: " + ", ".join(CONTENDERS)),
        quick: bool = opt(False, "--quick", help=quick_help),
        keep_outputs: bool = opt(False, "--keep-outputs", help="keep each contender's output"),
        suite: str = opt("main", "--suite", help="main (the side-by-side table) | extra (issue rows: "
                                                 f"{', '.join(EXTRA_ROWS)}; JSON to <workdir>/extra.json unless "
                                                 "--json) | gpu (GPU vs CPU end to end and kernel time; "
                                                 f"default shape {','.join(map(str, GPU_SHAPE))}; --only cpu,gpu)"),
        run_limit: float = opt(240.0, "--run-limit", help="extra/archive: a run expected past this many seconds "
                                                          "is extrapolated, not run"),
        sections: str | None = opt(None, "--sections",
                                   help="main suite: what follows the table, comma-separated: "
                                        f"{', '.join(SECTIONS)} (explain's estimate vs each convpipe row; "
                                        "start-up of the instant commands vs import numpy, yaml, pydantic; "
                                        "service jobs/s, warm runner vs fresh interpreter), all or none [all]"),
        no_examples: bool = opt(False, "--no-examples", help="main suite: leave the example pipelines out of the "
                                                             "estimate section (each runs twice on the demo's data)"),
    ) -> None:
        code = bench(shape=shape, chunks=chunks, pipelines=pipelines, repeat=repeat, workdir=workdir,
                     json_path=json_path, backend=backend, only=only, quick=quick, keep_outputs=keep_outputs,
                     suite=suite, run_limit=run_limit, sections=sections, examples=not no_examples)
        if code:
            # SystemExit, not typer.Exit: a host CLI calling its app with standalone_mode=False gets typer.Exit's
            # code back as click's return value and may drop it; SystemExit reaches the process either way
            raise SystemExit(code)


def register_stub(app: typer.Typer) -> None:
    """List ``bench`` in ``app`` without loading the benchmark: :class:`~.lazy.LazyGroup` swaps in :func:`build`."""

    @app.command("bench", help=HELP, add_help_option=False,
                 context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def bench_stub() -> None:  # never runs: the group resolves "bench" to the real command first
        raise RuntimeError("the bench stub ran; LazyGroup should have replaced it")


def build() -> Any:
    """The real ``bench`` click command (what :class:`~.lazy.LazyGroup` resolves the stub to)."""
    one = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(one)
    cmd = typer.main.get_command(one)
    cmd.name = "bench"
    return cmd
