"""The first phase of a run: open the input, plan, check the places, decide — before anything is written.

:func:`prepare` does, in this order (issue 13 fixed it; each check can refuse the run and nothing is
written before the last one passes): the spec has an output; the backend is usable; the input opens; the
plan; the output and every table lie apart from the input and from each other; whether the output is an
OME-Zarr group; the provenance this run would write; :func:`convpipe.resume.decide` on what is at the
output; and for a new output, that only Zarr data would be replaced.

The helpers shared with ``Pipeline.explain`` and ``Pipeline.apply`` (:func:`open_spec_input`, :func:`plan_for`,
...) live in :mod:`.plan_input`, which loads neither dask nor zarr; :func:`bind_input` is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..version import __version__
from ..errors import SpecError
from ..io import Manifest, data_digest, fingerprint, output_state
from ..outputs import is_ome_output, ome_output_problem
from ..plan import ArrayInfo, Plan
from ..replace import check_replaceable, check_table
from ..resume import Decision, decide
from ..spec import Spec
from .events import EventBus
from .plan_input import array_info, bind_voxel_sizes, cluster_resources, open_spec_input, plan_for  # noqa: F401

__all__ = ["Prepared", "bind_input", "check_places", "cluster_resources", "open_spec_input", "plan_for",
           "prepare", "table_name", "table_sinks", "want_ome"]


# --------------------------------------------------------------------------- shared with explain / apply


def bind_input(plan: Plan, array: Any, axes: str) -> None:
    """Ops that read part of the pipeline's input at plan time (match_template's crop template) read it here,
    from the array actually being processed (explain never calls this: it reads no data)."""
    for pp in plan.passes:
        for op in pp.ops:
            bind = getattr(op, "bind_input", None)
            if bind is not None:
                bind(array, axes)


# --------------------------------------------------------------------------- the places a run writes


def table_name(op: Any) -> str:
    """How messages and ``RunResult.outputs`` name an op's table: its step path (``steps[1].peaks``)."""
    return op.step.path if op.step is not None else op.name


def table_sinks(plan: Plan, spec: Spec, storage_options: dict) -> dict:
    """(pass index, op index) -> (op, TableSink) for every op writing a table (nothing is touched yet).

    Keyed by place in the plan, not by ``id(op)``: an id can be reused once an op is freed, and a
    replanned run (resume) must find its sinks by position in the new plan.
    """
    from ..tables import TableSink

    tables = {}
    for pp in plan.passes:
        for i, op in enumerate(pp.ops):
            if op.emits_table and getattr(op.params, "table", None):
                tables[(pp.index, i)] = (op, TableSink(spec.resolve(op.params.table), storage_options))
    return tables


def check_places(spec: Spec, in_url: str, in_is_group: bool, out_url: str, tables: dict) -> None:
    """Refuse (InputError) an output or table that equals, contains or lies inside the input, or another one.

    The input is its whole OME-Zarr image when it names one level of one (``img.zarr/0``): writing
    another level of that group would replace part of the image. A table also owns its ``.parts`` folder
    and ``.tmp`` file.
    """
    from ..locations import check_apart, enclosing_image, locate

    iso, oso = spec.input.storage_options, spec.output.storage_options
    reads = [("the input", locate(in_url, iso))]
    if not in_is_group:
        image = enclosing_image(in_url, iso)
        if image is not None:
            reads.append(("the OME-Zarr image of the input", locate(image, iso)))
    writes = [("output.url", locate(out_url, oso))]
    for op, ts in tables.values():
        base = ts.url.rstrip("/")
        writes += [(f"{table_name(op)}.table", locate(u, oso)) for u in (ts.url, base + ".parts", base + ".tmp")]
    check_apart(reads, writes)


def label_image_kind(spec: Spec, plan: Plan, ome_out: bool) -> tuple[str | None, Any]:
    """Whether the output is an NGFF label image: ``"under"`` an image (``output.labels_of``, checked here: an
    OME-Zarr image of the output's Zarr format, axes and shape, an integer output), ``"alone"`` (an OME output
    of a label dtype, int32 / int64 / uint32 / uint64), else None; and the image's multiscale metadata (its
    voxel sizes and number of levels are the labels'). Reads the image's metadata only."""
    from ..ome.labels import check_label_parent, is_label_dtype

    out = spec.output
    if out.labels_of is None:
        return ("alone" if ome_out and is_label_dtype(plan.output.dtype) else None), None
    where = dict(path="output.labels_of", line=spec.line_of(("output", "labels_of")))
    if plan.output.dtype.kind not in "iu":
        raise SpecError(f"a label image holds integers, but the output is {plan.output.dtype}: end with a label "
                        "step, or set output.dtype to an integer type", **where)
    fmt, info, shape = check_label_parent(spec.resolve(out.labels_of), out.storage_options)
    if fmt != out.zarr_format:
        raise SpecError(f"the image {out.labels_of} is Zarr v{fmt} (NGFF {'0.4' if fmt == 2 else '0.5'}): its "
                        f"labels must be too; set output.zarr_format: {fmt}", **where)
    if info.axes != plan.output.axes or shape != tuple(plan.output.shape):
        raise SpecError(f"the labels ({plan.output.axes} {tuple(plan.output.shape)}) would not lie on the image "
                        f"{out.labels_of} ({info.axes} {shape}): a label image has its image's axes and shape", **where)
    if out.pyramid and out.pyramid != len(info.levels) - 1:
        raise SpecError(f"output.pyramid {out.pyramid}: a label image has as many levels as its image "
                        f"({len(info.levels)}); drop output.pyramid", path="output.pyramid",
                        line=spec.line_of(("output", "pyramid")))
    return "under", info


def want_ome(spec: Spec, ome: dict, axes: str, bus: EventBus | None = None) -> bool:
    """Whether the output is an OME-Zarr group: ``output.ome``, default true for OME input or a pyramid."""
    out = spec.output
    if out.labels_of is not None and out.ome is None:  # an NGFF label image under an image
        problem = ome_output_problem(axes)
        if problem:
            raise SpecError(f"output.labels_of: {problem}", path="output.labels_of",
                            line=spec.line_of(("output", "labels_of")))
        return True
    if out.ome is False:
        if out.pyramid:
            raise SpecError("output.pyramid needs an OME-Zarr output; drop output.ome: false",
                            path="output.pyramid", line=spec.line_of(("output", "pyramid")))
        return False
    problem = ome_output_problem(axes)
    if out.ome is None:
        if not (ome or out.pyramid):
            return False
        if problem:
            if out.pyramid:
                raise SpecError(f"output.pyramid needs an OME-Zarr output, but {problem}", path="output.pyramid",
                                line=spec.line_of(("output", "pyramid")))
            if bus is not None:
                bus.warn(f"note: writing a plain Zarr array, not OME-Zarr: {problem}")
            return False
    elif problem:
        raise SpecError(f"output.ome: {problem}", path="output.ome", line=spec.line_of(("output", "ome")))
    return True


def provenance(spec: Spec, plan: Plan, arr: Any, in_url: str, fp: str) -> dict:
    """What the output's ``convpipe`` attribute holds while the run goes (``complete`` false until the end)."""
    return {"complete": False, "spec": spec.canonical(),
            "spec_hash": spec.hash(compute=str(plan.compute_dtype), dtype=str(plan.output.dtype)),
            "version": __version__, "input_fingerprint": fp,
            "input_data": data_digest(arr, in_url, spec.input.storage_options), "input_url": in_url,
            "tile": final_tile(plan), "axes": plan.output.axes, "spec_dir": str(spec.base_dir),
            "compute": str(plan.compute_dtype)}


def final_tile(plan: Plan) -> list[int]:
    return [plan.passes[-1].tile[a] for a in plan.output.axes]


# --------------------------------------------------------------------------- the phase


@dataclass
class Prepared:
    """Everything a run decided before writing: what it reads, plans, writes, and whether it resumes."""

    spec: Spec
    choice: Any  # backends.Choice
    in_url: str
    arr: Any
    axes: str
    ome: dict
    info: ArrayInfo
    plan: Plan
    out_url: str
    tables: dict  # (pass index, op index) -> (op, TableSink)
    want_ome: bool
    fingerprint: str
    manifest: Manifest
    prov: dict
    decision: Decision
    #: the final pass's tiles a resume finds recorded
    skip: set[str] = field(default_factory=set)
    #: an NGFF label image: "under" an image (output.labels_of), "alone" (an OME output of a label dtype), None
    label_image: str | None = None
    #: the image of output.labels_of (OmeInfo): the label image takes its voxel sizes and number of levels
    label_parent: Any = None

    @property
    def pyramid(self) -> int:
        """The output's extra pyramid levels (a label image under an image: as many as the image has)."""
        if self.label_parent is not None:
            return len(self.label_parent.levels) - 1
        return int(self.spec.output.pyramid)

    @property
    def physical(self) -> tuple[Any, int]:
        """(OME metadata, level) the output's voxel sizes come from: the image it labels, else the input's."""
        if self.label_parent is not None:
            return self.label_parent, 0
        return self.ome.get("info"), int(self.spec.input.level)

    @property
    def backend(self) -> str:
        return self.choice.name

    @property
    def storage_options(self) -> dict:
        return self.spec.output.storage_options


def prepare(spec: Spec, *, resume: bool, bus: EventBus) -> Prepared:
    """Open, plan, check and decide (see the module's docstring); raises the refusal, writes nothing.

    A ``complete`` decision is returned as it is: the caller reports that there is nothing to do.
    """
    if spec.output is None:
        raise SpecError("the spec has no output section: add output.url or pass --output", path="output")
    from ..backends import resolve

    choice = resolve(spec.execution.backend)  # BackendError for gpu without a usable GPU
    in_url, arr, axes, ome = open_spec_input(spec)
    info = array_info(arr, axes)
    plan = plan_for(spec, info, choice.name, ome)
    out_url = spec.resolve(spec.output.url)
    so = spec.output.storage_options
    tables = table_sinks(plan, spec, so)
    check_places(spec, in_url, bool(ome), out_url, tables)  # before anything is opened for writing
    ome_out = want_ome(spec, ome, plan.output.axes, bus)
    label_image, label_parent = label_image_kind(spec, plan, ome_out)
    fp = fingerprint(arr, in_url)
    prov = provenance(spec, plan, arr, in_url, fp)
    state = output_state(out_url, so)
    decision = decide(state, prov, out_url=out_url, resume=resume, overwrite=bool(spec.output.overwrite))
    p = Prepared(spec, choice, in_url, arr, axes, ome, info, plan, out_url, tables, ome_out, fp,
                 Manifest(out_url, so), prov, decision, label_image=label_image, label_parent=label_parent)
    if decision.action == "complete":
        return p
    if decision.note:
        bus.warn(decision.note)
    if decision.action == "resume":
        if list(state.get("tile", [])) != prov["tile"]:  # finish in the tiles the interrupted run recorded
            p.plan = plan_for(spec.with_overrides(tile=dict(zip(plan.output.axes, state["tile"]))), info,
                              choice.name, ome)
            p.tables = table_sinks(p.plan, spec, so)  # the same places, keyed by the new plan's ops
        p.want_ome = is_ome_output(out_url, so)  # finish in the layout the interrupted run started
        p.skip = p.manifest.done()
    else:  # create or replace: refused here, before anything is deleted, unless only Zarr data is there
        check_replaceable(out_url, so)
        for op, ts in p.tables.values():
            check_table(ts.url, so, what=f"{table_name(op)}.table")
    return p
