"""Extra row ``service`` (``convpipe bench --suite extra``): :func:`convpipe.bench.service.throughput` at full
counts. A module of its own, so the measurement (:mod:`.service`) imports nothing of the extra suite, which
imports the harness, which runs the main table's service section (:mod:`.summary`)."""

from __future__ import annotations

from .extra import ExtraCtx, extra_row
from .service import TARGET_JOBS_PER_S, throughput

__all__ = ["extra_service"]


@extra_row("service", title="service jobs/s: tiny jobs (64×64 gaussian) submitted at once, submit → succeeded, "
                            "warm runner vs a fresh interpreter per job",
           target=f"warm ≥ {TARGET_JOBS_PER_S:g} jobs/s end to end; every job succeeded; outputs equal the oracle")
def extra_service(sx: ExtraCtx) -> dict:
    n_warm, n_cold = sx.size((100, 12), (20, 6))
    return throughput(sx.workdir / "service", n_warm, n_cold, sx.say)
