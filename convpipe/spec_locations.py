"""Every location a spec names -- input, output, tables, kernel and template files, a profile -- read from the
parsed spec alone (nothing is opened).

The job service checks each against its roots before anything is bound (:mod:`convpipe.bind` reads the
files only then); ``convpipe run`` checks that no output lies inside the input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SpecError
from .spec_cluster import check_cluster
from .spec_messages import format_path

if TYPE_CHECKING:
    from .spec_model import Spec

#: Step parameters that name a file the op reads: one kernel source, or a list of them.
FILE_FIELDS = {"kernel": "kernel", "template": "template", "weights": "kernel", "kernels": "kernel",
               "footprint": "kernel"}  # footprint: morphology
FILE_LIST_FIELDS = {"kernels": "kernel"}
#: Step parameters that name a file the op writes.
TABLE_FIELDS = ("table",)

@dataclass(frozen=True)
class Location:
    """One location a spec names (see :meth:`Spec.locations <convpipe.spec_model.Spec.locations>`).

    ``field`` is its YAML path (``steps[2].correlate.kernel``), ``loc`` the same as a tuple, ``url`` as
    written, ``resolved`` the absolute path or URL it means, ``kind`` one of ``input``, ``output``,
    ``table``, ``kernel``, ``template``, ``profile``, and ``writes`` whether a run creates or replaces it.
    """

    field: str
    loc: tuple
    url: str
    resolved: str
    kind: str
    writes: bool
    line: int | None


def spec_locations(spec: "Spec") -> list["Location"]:
    """Every location ``spec`` names, in spec order, each with its YAML path, line and resolved form.

    The input, the output, each step's table, kernel, template and ``kernels[i]`` ``.npy`` files (inline
    and named kernels name no file), and the file of a ``profile:PATH`` cluster (a bare profile name is
    looked up in the profile folders, not in the spec's). Relative paths resolve against the spec's folder
    (a profile path, as the cluster code opens it, against the working directory). Reads nothing.
    """
    out: list[Location] = []

    def add(loc: tuple, url: str, kind: str, writes: bool, resolved: str | None = None) -> None:
        out.append(Location(format_path(loc), loc, str(url), resolved or spec.resolve(str(url)), kind, writes,
                            spec.line_of(loc)))

    if spec.input is not None:  # a spec for Pipeline.apply may name none
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
