"""What a failed run says: the errors a run raises are typed, and say what to do next."""

from __future__ import annotations

import numpy as np

from ..plan import Plan

__all__ = ["memory_message"]


def memory_message(e: MemoryError, plan: Plan) -> str:
    """What ran out of memory, on what, and what to change: a MemoryError alone often says nothing."""
    from ..ops.base import Op
    from ..plan import _fmt_bytes

    op = None
    tb = e.__traceback__
    while tb is not None:  # the innermost op on the stack (in-process schedulers keep the frames)
        s = tb.tb_frame.f_locals.get("self")
        if isinstance(s, Op):
            op = s
        tb = tb.tb_next
    pp = next((p for p in plan.passes if op is not None and op in p.ops),
              max(plan.passes, key=lambda p: p.mem_per_task))
    if op is None:
        op = max(pp.ops, key=lambda o: int(np.prod([lo + hi + 1 for lo, hi in o.halo().values()] or [1])))
    step = op.step
    where = step.path if step is not None else op.name
    line = step.spec.line_of(("steps", step.index, step.name)) if step is not None and step.spec is not None \
        else None
    tile = ", ".join(f"{a}: {n}" for a, n in pp.tile.items())
    halo = {a: lo + hi + 1 for a, (lo, hi) in op.halo().items() if lo or hi}
    what = (f"with a window of {', '.join(f'{a}: {n}' for a, n in halo.items())} "
            f"({int(np.prod(list(halo.values()))):,} voxels per output voxel)") if halo else op.describe()
    detail = f" ({e})" if str(e) else ""
    return (f"out of memory in {where}{f' (line {line})' if line else ''} on tiles of {{{tile}}}, {what}: the "
            f"plan estimated {_fmt_bytes(pp.mem_per_task)} per task and {_fmt_bytes(plan.memory_per_worker)} per "
            f"worker, the step needed more{detail}. Use a smaller window or a smaller execution.tile, or give "
            "each worker more memory (fewer workers, execution.memory_limit); the output is left incomplete "
            "(--resume finishes it)")
