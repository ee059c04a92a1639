"""Bind a parsed spec to what it names: kernel and template ``.npy`` files, a cluster profile, and its
steps to the axes of the input.

Parsing (:func:`convpipe.spec.parse_spec`) reads nothing but the spec and validates each step's parameters
through the op catalog: a ``.npy`` path is only checked as a name, a ``profile:`` only as a form, and no op is
bound to axes. :func:`bind` then reads what the spec names and checks it, and binds every step to its input's
axes through the ops (:func:`check_spec_axes`), raising SpecError at the YAML path and line of the field
that names the problem. ``load_spec`` (``convpipe validate`` and
``run``, the Python API) parses and binds; the job service parses, checks every location of
:func:`spec_locations` against its roots, and binds only then, so nothing outside the roots is ever read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SpecError, SpecErrors
from .spec_locations import FILE_FIELDS, FILE_LIST_FIELDS, TABLE_FIELDS, Location, spec_locations  # noqa: F401
from .spec_messages import step_errors

if TYPE_CHECKING:
    from .spec_model import Spec


def bind(spec: "Spec", *, kernels: bool = True, cluster: bool = True) -> "Spec":
    """Read and check what ``spec`` names; returns ``spec``, now ``bound``.

    ``kernels``: load every kernel / template ``.npy`` file (its header first: dtype and size within
    :mod:`convpipe.limits`), re-validate the step with the weights (``normalize``, probabilities, template
    dimensions) and check the steps' axes. ``cluster``: load a ``profile:`` cluster's profile.

    Raises
    ------
    SpecError
        At the field that named a file that cannot be read or whose contents do not fit the step.
    """
    errors: list[SpecError] = []
    if kernels:
        errors.extend(_bind_kernels(spec))
        if not errors:
            check_spec_axes(spec)
    if cluster:
        errors.extend(_bind_cluster(spec))
    if errors:
        raise SpecErrors(errors) if len(errors) > 1 else errors[0]
    spec.bound = True
    spec.rebind = _rebind  # what with_overrides() does to its copies (the spec layer cannot import this one)
    return spec


def _rebind(spec: "Spec") -> "Spec":
    """Bind an overridden copy of a bound spec: its steps keep their bound values; a new profile is read."""
    return bind(spec, kernels=False)


def _bind_kernels(spec: "Spec") -> list[SpecError]:
    from pydantic import ValidationError

    from .kernels import KernelFile, load_kernel_file
    from .params import entry

    files: dict[int, list[Location]] = {}
    for loc in spec.locations():
        if loc.kind in ("kernel", "template") and not isinstance(_param_at(spec, loc.loc), KernelFile):
            files.setdefault(loc.loc[1], []).append(loc)
    errors: list[SpecError] = []
    by_index = {s.index: s for s in spec.steps}
    for index, locs in files.items():
        step = by_index[index]
        params = dict(_raw_params(spec, index, step.name))
        failed = False
        for loc in locs:
            rel = spec.base_dir if not os.path.isabs(os.path.expanduser(loc.url)) and "://" not in loc.url else None
            try:
                array = load_kernel_file(Path(loc.resolved), relative_to=rel)
            except ValueError as e:
                errors.append(SpecError(str(e), path=loc.field, line=loc.line))
                failed = True
                continue
            value = KernelFile(loc.url, array, loc.resolved)
            field = loc.loc[3]
            if len(loc.loc) > 4:
                items = list(params[field])
                items[loc.loc[4]] = value
                params[field] = items
            else:
                params[field] = value
        if failed:
            continue
        op = entry(step.name)
        try:
            step.params = op.Params.model_validate(params, context={"base_dir": spec.base_dir})
        except ValidationError as e:
            errors.extend(step_errors(e, op, step.name, params, ("steps", index, step.name), spec.lines,
                                      spec.raw))
    return errors


def _param_at(spec: "Spec", loc: tuple):
    step = next(s for s in spec.steps if s.index == loc[1])
    v = getattr(step.params, loc[3], None)
    if len(loc) > 4 and isinstance(v, list):
        v = v[loc[4]]
    return v


def _raw_params(spec: "Spec", index: int, name: str) -> dict:
    item = spec.raw["steps"][index]
    if isinstance(item, str):
        return {}
    params = item[name]
    return params if isinstance(params, dict) else {}


def _bind_cluster(spec: "Spec") -> list[SpecError]:
    cluster = spec.execution.cluster
    if not cluster.startswith("profile:"):
        return []
    from .profiles import load_profile  # only for profile: clusters (its models cost validate's start-up)

    loc = ("execution", "cluster")
    try:
        load_profile(cluster)
    except SpecErrors as e:
        return [SpecError(f"profile {cluster.removeprefix('profile:')}: {x.format()}", path="execution.cluster",
                          line=spec.line_of(loc)) for x in e.errors]
    except SpecError as e:
        msg = e.message if e.path == "execution.cluster" else f"profile {cluster.removeprefix('profile:')}: {e.format()}"
        return [SpecError(msg, path="execution.cluster", line=spec.line_of(loc))]
    return []


# --------------------------------------------------------------------------- steps bound to axes


def check_spec_axes(spec: "Spec") -> None:
    """Check the steps against ``input.axes`` and the output's chunks (SpecError); with no ``input.axes``,
    bind the steps to assumed axes only to refuse halos beyond the limits (other errors wait for the input)."""
    top = spec.top
    if top.input is not None and top.input.axes:
        out_axes = check_step_axes(spec, top.input.axes)
        chunks = top.output.chunks if top.output is not None else None
        if isinstance(chunks, list) and len(chunks) != len(out_axes):
            raise spec.error(f"chunks has {len(chunks)} values but the output has {len(out_axes)} axes "
                             f"({out_axes!r})", ("output", "chunks"))
    else:
        check_step_axes(spec, "tzyx", probe=True)


def check_step_axes(spec: "Spec", axes: str, *, probe: bool = False) -> str:
    """Check every step's axis parameters against the input's axes (raises SpecError); the output axes.

    Each step is bound to its input's axes through its op (:mod:`convpipe.ops`), and each bound op's halo is
    checked against :data:`convpipe.limits.MAX_HALO`. ``probe``: ``axes`` are assumed, not known; only
    limit errors are raised, and the walk stops at the first step the assumed axes do not fit.
    """
    from .limits import check_op_halo
    from .ops import registry

    errors = []
    cur = axes
    for step in spec.steps:
        op_cls = registry.get(step.name)
        try:
            op = op_cls(step.params, cur, step=step)
            for sub in op.expand():
                check_op_halo(sub)
        except SpecError as e:
            if probe and not getattr(e, "limit", False):
                break  # the assumed axes do not fit this step: the input's real axes decide, at run time
            errors.append(e)
            if probe:
                break
            continue
        except (ValueError, TypeError, OverflowError, ZeroDivisionError, MemoryError, IndexError) as e:
            # a parameter no validator caught (an absurd value): one line at the step, never a traceback; on
            # assumed axes only what no axes could fix (a number out of range), the rest waits for the input
            if not probe or isinstance(e, (OverflowError, ZeroDivisionError, MemoryError)):
                errors.append(step.error(f"cannot be set up with these parameters: {e}"))
            break
        cur = op.out_axes
    if errors:
        raise SpecErrors(errors) if len(errors) > 1 else errors[0]
    return cur


def bind_ops(steps: list, axes: str) -> list:
    """Bind each step to the axes of its input (the previous step's output), expanding composite ops."""
    from .ops import registry

    ops = []
    cur = axes
    for step in steps:
        op = registry.get(step.name)(step.params, cur, step=step)
        ops.extend(op.expand())
        cur = op.out_axes
    return ops
