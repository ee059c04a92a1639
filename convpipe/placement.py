"""Where each pass of a plan runs: on the GPU when the plan's backend is ``gpu`` and every op of the pass has a GPU
path (``Op.gpu_path``), else on the CPU. Pure: reads the plan only; the GPU backend's warm-up uses it too.
"""

from __future__ import annotations

from typing import Any


def has_gpu_path(op: Any) -> bool:
    """Whether ``op`` runs on a device block as it is (``Op.gpu_path``)."""
    return bool(getattr(op, "gpu_path", False))


def pass_backend(plan: Any, pp: Any) -> str:
    """Where one pass of ``plan`` runs: ``"gpu"`` when the plan's backend is gpu and every op has a GPU path."""
    if getattr(plan, "backend", "cpu") != "gpu":
        return "cpu"
    return "gpu" if all(has_gpu_path(op) for op in pp.ops) else "cpu"


def pass_backends(plan: Any) -> list[str]:
    return [pass_backend(plan, pp) for pp in plan.passes]


def placement_notes(plan: Any) -> list[str]:
    """One line per pass of a GPU plan that runs on the CPU, naming the ops without a GPU path."""
    if getattr(plan, "backend", "cpu") != "gpu":
        return []
    notes = []
    for pp in plan.passes:
        missing = sorted({op.name for op in pp.ops if not has_gpu_path(op)})
        if missing:
            notes.append(f"pass {pp.index} runs on the CPU: {', '.join(missing)} "
                         f"{'has' if len(missing) == 1 else 'have'} no GPU path")
    return notes
