"""The spec: load one (parse, then bind what it names), and every name of the parsed spec.

Loading is two steps in two layers. :mod:`convpipe.spec_model` parses and validates, reading no file but
the spec itself (typed models, :class:`Spec`, JSON Schema; YAML lines in :mod:`convpipe.spec_yaml`, the
words of errors in :mod:`convpipe.spec_messages`). :mod:`convpipe.bind` then reads the kernel and
template files and the profile the spec names, and binds the steps to the input's axes. The job service
checks every location between the two (:func:`spec_locations`), so nothing outside its roots is read.

This module joins them (:func:`load_spec`) and keeps every name the spec's modules define importable from
here. Importing it loads neither dask nor zarr.
"""

from __future__ import annotations

import os
from pathlib import Path

from .bind import bind
from .spec_locations import FILE_FIELDS, FILE_LIST_FIELDS, TABLE_FIELDS, Location, spec_locations  # noqa: F401
from .spec_messages import _line, _pydantic_errors, format_path  # noqa: F401
from .spec_model import (  # noqa: F401
    AXES_ORDER,
    NUMERIC_DTYPES,
    SPEC_VERSION,
    ExecutionSpec,
    InputSpec,
    OutputSpec,
    Spec,
    Step,
    _TopLevel,
    build_spec,
    check_axes_string,
    check_dtype,
    check_url,
    json_schema,
    parse_spec,
    parse_spec_text,
    plain_copy,
    suggest,
)
from .spec_yaml import MAX_SPEC_BYTES, MAX_YAML_NODES, _LineLoader, parse_yaml  # noqa: F401


def load_spec(source: str | os.PathLike | dict, *, input_required: bool = True) -> Spec:
    """Load and validate a spec from a YAML/JSON file path or a dict: parse, then bind.

    Binding reads the kernel / template files and the cluster profile the spec names (:func:`convpipe.bind.bind`).

    Raises
    ------
    SpecError, SpecErrors
        At the YAML path and line of each problem.
    """
    return bind(parse_spec(source, input_required=input_required))


def load_spec_text(text: str, *, base_dir: Path | None = None, source: str = "<spec>") -> Spec:
    """:func:`load_spec` for YAML/JSON text (relative paths resolve against ``base_dir``, default cwd)."""
    return bind(parse_spec_text(text, base_dir=base_dir, source=source))
