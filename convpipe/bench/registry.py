"""The benchmark's data model and registries: configuration, cases, contenders, what a contender returns.

A case (a pipeline, or the bare I/O) is registered with :func:`add_case`, a contender (a way to compute
it) with :func:`contender`; the harness (:mod:`.harness`) runs every contender on every case it applies to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CASES", "CONTENDERS", "DEFAULT_CHUNKS", "DEFAULT_PIPELINES", "DEFAULT_SHAPE", "NA", "QUICK_CHUNKS",
    "QUICK_SHAPE", "BenchConfig", "Case", "Contender", "Ctx", "Outcome", "Skip", "add_case", "contender",
]

DEFAULT_SHAPE = (32, 2048, 2048)
DEFAULT_CHUNKS = (16, 512, 512)
QUICK_SHAPE = (8, 512, 512)
QUICK_CHUNKS = (4, 256, 256)
DEFAULT_PIPELINES = ("light", "heavy")
INPUT_VERSION = 1  # bump when the generated input changes, so a cached input is regenerated
REPORT_VERSION = 1


# --------------------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    """One run of the side-by-side benchmark: the generated input, what runs, where the files go."""

    shape: tuple[int, ...] = DEFAULT_SHAPE
    chunks: tuple[int, ...] = DEFAULT_CHUNKS
    pipelines: tuple[str, ...] = DEFAULT_PIPELINES
    repeat: int = 1
    workdir: Path = Path("bench-out")
    json_path: Path | None = None
    backend: str = "cpu"
    only: tuple[str, ...] | None = None  # contender names; None = all
    keep_outputs: bool = False
    seed: int = 0
    # the sections after the table (:data:`convpipe.bench.summary.SECTIONS`: estimate vs actual, start-up,
    # service jobs/s); none by default, so a library caller (the extra suite's rows) times its rows alone;
    # ``convpipe bench`` asks for all of them
    sections: tuple[str, ...] = ()
    preset: str = "default"  # "quick": the sections' smaller counts (start-up runs, service jobs)
    examples: bool = True  # the estimate section's example pipelines (convpipe.bench.examples)

    @classmethod
    def quick(cls, **kw: Any) -> BenchConfig:
        kw.setdefault("shape", QUICK_SHAPE)
        kw.setdefault("chunks", QUICK_CHUNKS)
        kw.setdefault("preset", "quick")
        return cls(**kw)


@dataclass
class Outcome:
    """What a contender returns: the output it wrote, its task count, anything else worth keeping."""

    out_url: str
    graph_tasks: int | None = None  # len of the dask graph the contender built (or its plan's task count)
    seconds: float | None = None  # set when the contender times itself (else the harness's wall time)
    extra: dict = field(default_factory=dict)


class Skip(Exception):
    """Raised by a contender that cannot run here (the reason goes into the report)."""


@dataclass
class Ctx:
    """What a contender sees: the input, the machine, the config."""

    config: BenchConfig
    input_url: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    ncpu: int
    total_ram: int

    @property
    def backend(self) -> str:
        return self.config.backend

    def out_url(self, case: Case, contender: str) -> str:
        return str((self.config.workdir / f"out-{case.name}-{contender}.zarr").resolve())

    @property
    def nvox(self) -> int:
        return int(np.prod(self.shape))




@dataclass
class Case:
    """A row group of the table: a pipeline (or the bare I/O) and its whole-array scipy reference."""

    name: str
    title: str
    steps: list  # convpipe spec steps; empty = convpipe does not run this case
    oracle: Callable[[np.ndarray], np.ndarray]  # whole-array scipy reference; keeps the input's float dtype
    halo: tuple  # per axis reach of the whole chain (None = the whole axis), for the sub-volume oracle
    impls: dict = field(default_factory=dict)  # contender name -> implementation
    tol: float = 1e-4  # relative: max|out - oracle| <= tol * max(1, max|oracle|)
    scipy_temporaries: float = 4.0  # float32 whole-array copies the scipy contender holds at once


CASES: dict[str, Case] = {}


def add_case(case: Case) -> Case:
    """Register ``case`` (a new row group of the table)."""
    CASES[case.name] = case
    return case


# --------------------------------------------------------------------------- contenders

@dataclass
class Contender:
    """A way to compute a case (convpipe, dask-image, scipy in memory, ...)."""

    name: str
    fn: Callable[[Ctx, Case], Outcome]
    # None: runs; a string: skipped, with the reason in the report; NA: does not apply (no row at all)
    applies: Callable[[Ctx, Case], str | None]
    description: str = ""
    prepare: Callable[[Ctx, Case], Any] | None = None  # untimed set-up before each run (e.g. values in memory)

CONTENDERS: dict[str, Contender] = {}
NA = "n/a"  # what ``applies`` returns for a case the contender has nothing to do with (no row)

def contender(name: str, *, applies: Callable[[Ctx, Case], str | None], description: str = "",
              prepare: Callable[[Ctx, Case], Any] | None = None) -> Callable:
    """Register the decorated ``fn(ctx, case) -> Outcome`` as contender ``name``.

    ``applies(ctx, case)`` returns None (it runs), a reason string (a skipped row), or :data:`NA` (no row);
    ``prepare(ctx, case)``, when given, runs before each run outside the timed window.
    """
    def deco(fn: Callable[[Ctx, Case], Outcome]) -> Callable[[Ctx, Case], Outcome]:
        CONTENDERS[name] = Contender(name, fn, applies, description or (fn.__doc__ or "").strip().split("\n")[0],
                                     prepare)
        return fn

    return deco

