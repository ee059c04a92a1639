"""The estimate section's examples part: ``explain``'s estimate of each example pipeline beside its run.

The example specs (``convpipe/pipelines/*.yaml``) run on the demo's sample data, written to the bench's workdir
(``examples/demo-out``) with the specs' file names as ``convpipe demo`` places them. Each runs once to warm up (a
process's first run of an op pays its imports, which no estimate includes), then three times timed (the median is
the actual); its estimate is of the plan those runs ran, from this machine's calibration. An example that fails (or
whose input needs scikit-image's images, absent here) is a row with its status, never the section's end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .machine import loadavg

#: what ``--quick`` runs: one 2-D chain, the diffusion (20 sub-steps), a label pre-pass with a table
QUICK_EXAMPLES = ("edges", "diffusion", "nuclei-3d")
TARGET = (0.5, 2.0)


#: timed runs per example after the warm-up; the median is the actual (one run of a 0.1 s job swung 2-4x with
#: a burst of load from elsewhere, each way)
TIMED_RUNS = 3


def run_timed(pipeline: Any) -> tuple[float, Any]:
    """A warm-up run, then ``TIMED_RUNS`` timed ones: (the median wall seconds, the plan)."""
    pipeline.run(overwrite=True)
    times, res = [], None
    for _ in range(TIMED_RUNS):
        res = pipeline.run(overwrite=True)
        times.append(float(res.elapsed))
    return sorted(times)[len(times) // 2], res.plan


def example_estimates(workdir: Path, costs: dict, names: tuple[str, ...] | None = None,
                      runner: Callable[[Any], tuple[float, Any]] | None = None,
                      folder: Path | None = None) -> dict:
    """Estimate vs actual for each example pipeline (``names``: those only, by spec file stem; None: all).

    ``runner(pipeline)`` runs one and returns (seconds, plan) (default :func:`run_timed`; tests pass a fake).

    Returns
    -------
    dict
        ``rows`` (per example: ``example``, ``status`` ok/skipped/error, ``estimate_s``, ``actual_s``,
        ``ratio``, ``met``, ``loadavg``; ``reason`` where not ok), ``target``, ``met`` (every ok row within
        it), ``ran``, ``data_s`` (writing the sample data).
    """
    from .. import load
    from ..demo import _relocated, pipelines_dir, write_sample_data
    from ..estimate import estimate

    runner = runner or run_timed
    data = Path(workdir) / "examples" / "demo-out"
    t0 = time.perf_counter()
    write_sample_data(data)
    out: dict = {"ratio": "estimate / actual", "target": list(TARGET), "rows": [], "data_dir": str(data),
                 "data_s": time.perf_counter() - t0}
    specs = sorted((Path(folder) if folder is not None else pipelines_dir()).glob("*.yaml"))
    if names is not None:
        specs = [s for s in specs if s.stem in names]
    for path in specs:
        row: dict = {"example": path.stem}
        try:
            p = load(_relocated(path, data))
            if not Path(p.spec.input.url).exists():
                row.update(status="skipped", reason=f"{Path(p.spec.input.url).name} needs scikit-image's images")
            else:
                row["loadavg"] = loadavg()
                actual, plan = runner(p)
                e = estimate(plan, costs)["seconds"]
                ratio = e / actual if actual else None
                row.update(status="ok", estimate_s=e, actual_s=actual, ratio=ratio, tasks=int(plan.tasks),
                           passes=len(plan.passes),
                           met=ratio is not None and TARGET[0] <= ratio <= TARGET[1])
        except Exception as ex:  # noqa: BLE001 - one failing example is a row, not the section's end
            row.update(status="error", reason=f"{type(ex).__name__}: {str(ex)[:300]}")
        out["rows"].append(row)
    ok = [r for r in out["rows"] if r["status"] == "ok"]
    out["ran"] = len(ok)
    out["met"] = bool(ok) and all(r["met"] for r in ok)
    return out
