"""``convpipe bench``: the side-by-side benchmark, a package of one purpose per module.

One process run, on a generated uint16 stack (default 32×2048×2048 in zarr chunks (16, 512, 512)), times
for each *case* (a pipeline, or the bare I/O) every *contender* that can run it:

- ``roofline``    read the input, cast to float32, write it (dask ``from_zarr`` → ``astype`` → ``to_zarr``)
- ``dask-image``  the same pipeline written with ``dask_image.ndfilters`` (map_overlap), ``to_zarr``
- ``scipy``       read the whole array into memory, scipy.ndimage, write (skipped when it would not fit
                  in half the RAM)
- ``convpipe``    ``convpipe.load(spec).run()``

and reports wall time, ratios (to the roofline and to dask-image), the task count of each dask graph,
peak RSS (psutil, sampled in a thread) and, for correctness, each output's max abs difference from the
float64 scipy oracle on a sub-volume that crosses chunk borders and touches an array edge.

Every output is float32, zarr v3, in the input's chunks and zarr's default codec (no ``compressors``
argument anywhere), and every dask contender runs on the threaded scheduler with all cores.

Extending the benchmark
-----------------------
A new row is one small registration:

- a new *case* (e.g. FFT convolution with a 41×41 kernel) is ``add_case(Case(name=..., steps=[...],
  oracle=..., impls={"dask-image": ..., "scipy": ...}, halo=...))``: ``steps`` feeds convpipe, ``oracle``
  is the scipy reference (dtype preserving, used in float64 for the check and in float32 as the
  ``scipy`` contender unless ``impls["scipy"]`` says otherwise), ``impls`` holds per-contender
  implementations;
- a new *contender* (e.g. a numpy.fft loop, a resumed run, the GPU) is a function
  ``fn(ctx, case) -> Outcome`` decorated with ``@contender("name", applies=...)``; it writes
  ``ctx.out_url(case, name)`` and the harness times it, samples RSS and checks the output.

Modules: :mod:`.registry` (config, cases and contenders registries), :mod:`.cases`, :mod:`.contenders`,
:mod:`.data` (input, check region, oracle), :mod:`.harness` (the timed rounds), :mod:`.extra` and
:mod:`.child` (the extra suite and its measurement subprocesses), :mod:`.objects` (the extra suite's
``label`` and ``regionprops`` rows against dask-image, scipy and skimage), :mod:`.service` (the job service's
jobs/s; its extra row is :mod:`.service_row`), :mod:`.summary` (the main table's sections after the rows:
estimate vs actual, start-up, service jobs/s), :mod:`.gpu` (GPU vs CPU),
:mod:`.render` (text pieces of the report); the ``bench`` command and its rich tables are
:mod:`convpipe.cli.bench` and :mod:`convpipe.cli.bench_tables`. Peak RSS is sampled by the run
monitor's :class:`convpipe.monitor.RssSampler`.
"""

from __future__ import annotations

from . import cases, contenders  # noqa: F401 - importing them registers the cases and the contenders
from . import objects  # noqa: F401 - the label / regionprops rows of the extra suite
from .cases import FFT_LOWPASS, fft_lowpass_mask, fft_lowpass_planes
from .data import check_region, ensure_input
from .extra import EXTRA_ROWS, ExtraCtx, extra_row, run_extra
from . import layers  # noqa: F401,E402 - registers the extra row conv_layer (issue 15)
from . import service_row  # noqa: F401,E402 - registers the extra row service (jobs/s, issue 17)
from .harness import run_benchmark
from .registry import (CASES, CONTENDERS, DEFAULT_CHUNKS, DEFAULT_PIPELINES, DEFAULT_SHAPE, NA, QUICK_CHUNKS,
                       QUICK_SHAPE, BenchConfig, Case, Contender, Ctx, Outcome, Skip, add_case, contender)
from .render import render_notes

__all__ = [
    "CASES", "CONTENDERS", "DEFAULT_CHUNKS", "DEFAULT_PIPELINES", "DEFAULT_SHAPE", "EXTRA_ROWS", "FFT_LOWPASS", "NA",
    "QUICK_CHUNKS", "QUICK_SHAPE", "BenchConfig", "Case", "Contender", "Ctx", "ExtraCtx", "Outcome", "Skip",
    "add_case", "check_region", "contender", "ensure_input", "extra_row", "fft_lowpass_mask",
    "fft_lowpass_planes", "render_notes", "run_benchmark",
    "run_extra",
]


def __getattr__(name: str):  # noqa: ANN202
    if name == "bench_gpu":  # the GPU suite imports the planner, spec and backends: only when asked
        from .gpu import bench_gpu

        return bench_gpu
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
