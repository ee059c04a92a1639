"""A run owns everything between a validated spec and a complete output.

==============  =====================================================================================
``prepare``     open the input, plan, check the places, decide create / replace / resume / nothing
``write``       create or reopen the output; pyramid, tables and the provenance's completeness mark
``loop``        compute the plan's graph on the cluster, counting tiles into events
``source``      the input as the run reads it (naming a damaged chunk)
``failure``     what a failed run says
``events``      the typed events a run emits, their subscribers, their JSON-lines form
``core``        :func:`run_pipeline`: the phases in order, :class:`RunResult`
==============  =====================================================================================

``convpipe.run.events`` imports only the standard library (and pydantic to read JSON lines back), so the
job service and the command line can use it without loading dask or zarr; the rest loads on first use.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

#: the event names, from :mod:`.events`; loaded on first use (PEP 562) like :mod:`.core`'s, so that
#: ``explain`` (which imports :mod:`.plan_input` of this package) does not build the event classes
_EVENTS = ("Event", "EventBus", "Failed", "Finished", "Interrupted", "LogLine", "PassDone", "PassStarted",
           "PhaseDone", "PhaseStarted", "RunStarted", "TileDone", "WarningLine")

__all__ = ["Event", "EventBus", "Failed", "Finished", "Interrupted", "LogLine", "PassDone", "PassStarted",
           "PhaseDone", "PhaseStarted", "RunResult", "RunStarted", "TileDone", "WarningLine", "run_pipeline"]


__getattr__, _ = lazy_exports(__name__, __package__,
                              {**dict.fromkeys(_EVENTS, "events"), "RunResult": "core", "run_pipeline": "core"})
