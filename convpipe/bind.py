"""Bind a parsed spec to what it names: kernel and template ``.npy`` files, a cluster profile.

Parsing (:func:`convpipe.spec.parse_spec`) reads nothing but the spec: a ``.npy`` path is only checked as a
name, a ``profile:`` only as a form. :func:`bind` then reads what the spec names and checks it, raising
SpecError at the YAML path and line of the field that named it. ``load_spec`` (``convpipe validate`` and
``run``, the Python API) parses and binds; the job service parses, checks every location of
:func:`spec_locations` against its roots, and binds only then, so nothing outside the roots is ever read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SpecError, SpecErrors

if TYPE_CHECKING:
    from .spec import Location, Spec

#: Step parameters that name a file the op reads: one kernel source, or a list of them.
FILE_FIELDS = {"kernel": "kernel", "template": "template", "footprint": "kernel"}  # footprint: morphology
FILE_LIST_FIELDS = {"kernels": "kernel"}
#: Step parameters that name a file the op writes.
TABLE_FIELDS = ("table",)


def spec_locations(spec: "Spec") -> list["Location"]:
    """Every location ``spec`` names, in spec order, each with its YAML path, line and resolved form.

    The input, the output, each step's table, kernel, template and ``kernels[i]`` ``.npy`` files (inline
    and named kernels name no file), and the file of a ``profile:PATH`` cluster (a bare profile name is
    looked up in the profile folders, not in the spec's). Relative paths resolve against the spec's folder
    (a profile path, as the cluster code opens it, against the working directory). Reads nothing.
    """
    from .cluster import check_cluster
    from .spec import Location, format_path

    out: list[Location] = []

    def add(loc: tuple, url: str, kind: str, writes: bool, resolved: str | None = None) -> None:
        out.append(Location(format_path(loc), loc, str(url), resolved or spec.resolve(str(url)), kind, writes,
                            spec.line_of(loc)))

    add(("input", "url"), spec.input.url, "input", False)
    if spec.output is not None:
        add(("output", "url"), spec.output.url, "output", True)
    for step in spec.steps:
        base = ("steps", step.index, step.name)
        p = step.params
        for field in TABLE_FIELDS:
            v = getattr(p, field, None)
            if isinstance(v, str):
                add(base + (field,), v, "table", True)
        for field, kind in FILE_FIELDS.items():
            v = getattr(p, field, None)
            if isinstance(v, str):  # a bound KernelFile too: the location stays what it was
                add(base + (field,), v, kind, False)
        for field, kind in FILE_LIST_FIELDS.items():
            vals = getattr(p, field, None)
            if isinstance(vals, list):
                for j, v in enumerate(vals):
                    if isinstance(v, str):
                        add(base + (field, j), v, kind, False)
    try:
        profile = check_cluster(spec.execution.cluster)
    except SpecError:
        profile = None
    if profile is not None:
        add(("execution", "cluster"), spec.execution.cluster, "profile", False,
            resolved=os.path.abspath(os.path.expanduser(profile)))
    return out


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
            from .spec import check_spec_axes

            check_spec_axes(spec)
    if cluster:
        errors.extend(_bind_cluster(spec))
    if errors:
        raise SpecErrors(errors) if len(errors) > 1 else errors[0]
    spec.bound = True
    return spec


def _bind_kernels(spec: "Spec") -> list[SpecError]:
    from pydantic import ValidationError

    from .kernels import KernelFile, load_kernel_file
    from .ops import registry
    from .spec_messages import step_errors

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
        op_cls = registry.get(step.name)
        try:
            step.params = op_cls.Params.model_validate(params, context={"base_dir": spec.base_dir})
        except ValidationError as e:
            errors.extend(step_errors(e, op_cls, step.name, params, ("steps", index, step.name), spec.lines,
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
    from .cluster import load_profile

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
