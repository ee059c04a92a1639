"""The spec, parsed and validated: typed models, :class:`Spec` and :class:`Step`, JSON Schema. Pure: reads no
file but the spec itself, imports neither dask nor zarr.

A spec is data: YAML is read with the safe loader (no python tags, no pickles, :mod:`convpipe.spec_yaml`),
and nothing in it is evaluated. Every error names the YAML path and line (:mod:`convpipe.spec_messages`),
e.g. ``steps[1].sobel.axes (line 17): axis 'q' is not one of the input axes 'zyx'``. What the spec names
(kernel files, a profile) is read only by :mod:`convpipe.bind`; :mod:`convpipe.spec` does both.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import limits
from .digest import digest
from .errors import SpecError, SpecErrors
from .params import catalog
from .params.base import NUMERIC_DTYPES, check_dtype, suggest  # noqa: F401  (spec's own names too)
from .spec_cluster import check_cluster
from .spec_locations import Location, spec_locations
from .spec_messages import _line, _pydantic_errors, format_path, step_errors, unknown_op
from .spec_yaml import MAX_SPEC_BYTES, parse_yaml

SPEC_VERSION = 1
AXES_ORDER = "tczyx"


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


_TIFF = (".tif", ".tiff", ".btf", ".tf8")
_IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".czi", ".nd2", ".lif", ".ims", ".h5", ".hdf5", ".npy")


def check_url(v: str, *, reads: bool) -> str:
    """Syntactic checks of a location (no file is touched): not empty, no NUL; an input that is a TIFF or
    another image file points at ``convpipe ingest``."""
    if not v or not v.strip():
        raise ValueError("the location is empty")
    if "\x00" in v:
        raise ValueError("the location holds a NUL character")
    name = v.rstrip("/").lower()
    if reads and name.endswith(_TIFF):
        stem = os.path.basename(v.rstrip("/")).rsplit(".", 1)[0]
        raise ValueError(f"{v!r} is a TIFF file; convpipe reads Zarr: convert it once with "
                         f"'convpipe ingest {v} --output {stem}.zarr', then use the .zarr as input")
    if reads and name.endswith(_IMAGES):
        raise ValueError(f"{v!r} is not a Zarr array or OME-Zarr group (convpipe reads Zarr; "
                         "'convpipe ingest' converts TIFF stacks)")
    return v


class InputSpec(_Model):
    url: str = Field(description="path or fsspec URL of a Zarr array or OME-Zarr group")
    level: int = Field(0, ge=0, le=64, description="OME-Zarr multiscale level")
    axes: str | None = Field(None, description="one letter per axis from 'tczyx'")
    storage_options: dict[str, Any] = Field(default_factory=dict)

    _url = field_validator("url")(lambda v: check_url(v, reads=True))

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: str | None) -> str | None:
        if v is not None:
            check_axes_string(v)
        return v


class OutputSpec(_Model):
    url: str
    dtype: str | None = Field(None, description="default: the compute dtype (float32, or float64 when "
                                                     "computing in float64)")
    chunks: list[int] | dict[str, int] | None = None
    zarr_format: Literal[2, 3] = 3
    overwrite: bool = False
    ome: bool | None = None
    pyramid: int = Field(0, ge=0, le=16)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    labels_of: str | None = Field(None, description="an OME-Zarr image: the (integer) output is written as an "
                                                    "NGFF label image into its labels/<label_name> group")
    label_name: str | None = Field(None, description="the label image's name under labels_of's labels/ group")

    _url = field_validator("url")(lambda v: check_url(v, reads=False))

    @model_validator(mode="before")
    @classmethod
    def _labels_url(cls, data: Any) -> Any:
        """``labels_of`` + ``label_name`` name the output's place: ``url`` defaults to IMAGE/labels/NAME."""
        if isinstance(data, dict) and data.get("labels_of") and data.get("url") is None \
                and isinstance(data.get("label_name"), str):
            data = dict(data, url=f"{str(data['labels_of']).rstrip('/')}/labels/{data['label_name']}")
        return data

    @model_validator(mode="after")
    def _labels(self):
        if (self.labels_of is None) != (self.label_name is None):
            raise ValueError("labels_of and label_name go together (the image, and the name under its labels/)")
        if self.labels_of is not None:
            n = self.label_name
            if not n or "/" in n or "\\" in n or n in (".", "..") or n.strip() != n or "\x00" in n:
                raise ValueError(f"label_name {n!r} must be one plain name (no '/', not '.' or '..')")
            want = f"{str(self.labels_of).rstrip('/')}/labels/{n}"
            if self.url.rstrip("/") != want:
                raise ValueError(f"output.url {self.url!r} and labels_of name different places (labels_of writes "
                                 f"{want!r}); give one of them")
            if self.ome is False:
                raise ValueError("labels_of writes an NGFF label image: drop ome: false")
        return self

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str | None) -> str | None:
        if v is not None:
            check_dtype(v)
        return v

    @field_validator("chunks")
    @classmethod
    def _chunks(cls, v):
        vals = v.values() if isinstance(v, dict) else (v or [])
        if any(int(c) <= 0 for c in vals):
            raise ValueError("chunk sizes must be positive")
        if any(int(c) > 1 << 31 for c in vals):
            raise ValueError(f"chunk sizes must be at most {1 << 31}")
        return v


class ExecutionSpec(_Model):
    backend: Literal["cpu", "gpu", "auto"] = "auto"
    cluster: str = "threads"
    tile: Literal["auto"] | dict[str, int] | list[int] = "auto"
    precision: Literal["auto", "float32", "float64"] = Field(
        "auto", description="compute dtype; auto: float32 when the input dtype is exact in float32 (<= 16-bit "
                            "ints, bool, float16/32), else float64")
    memory_limit: str | int | None = Field(None, description="per worker, e.g. '4GiB'; default: from the machine")

    @field_validator("tile")
    @classmethod
    def _tile(cls, v):
        if v != "auto":
            vals = v.values() if isinstance(v, dict) else v
            if any(int(c) <= 0 for c in vals):
                raise ValueError("tile sizes must be positive")
            if any(int(c) > 1 << 40 for c in vals):
                raise ValueError(f"tile sizes must be at most {1 << 40}")
        return v


class _TopLevel(_Model):
    convpipe: int
    name: str = "pipeline"
    input: InputSpec
    output: OutputSpec | None = None
    steps: list[Any] = Field(min_length=1, max_length=limits.MAX_STEPS)
    execution: ExecutionSpec = ExecutionSpec()

    @field_validator("convpipe")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SPEC_VERSION:
            raise ValueError(f"spec version {v} is not supported (this convpipe reads version {SPEC_VERSION})")
        return v


class _TopLevelNoInput(_TopLevel):
    """A spec for the Python API (:func:`convpipe.load`): ``input`` may be left out, for ``Pipeline.apply``
    takes the array itself; ``run`` and ``explain`` then need ``input=``."""

    input: InputSpec | None = None  # type: ignore[assignment]


def check_axes_string(v: str) -> None:
    if not v or any(a not in AXES_ORDER for a in v) or len(set(v)) != len(v):
        raise ValueError(f"axes {v!r} must be distinct letters from 'tczyx'")


def plain_copy(v: Any, *, strict: bool = False) -> Any:
    """A deep copy of spec data as plain JSON types: a numpy array becomes nested lists, a numpy scalar its
    Python number, a path its string (a spec given as a dict in Python may hold all three).

    ``strict``: anything else that JSON cannot hold raises TypeError (a canonical form must not guess);
    otherwise it is kept as it is, for validation to judge.
    """
    import numpy as np

    if isinstance(v, dict):
        return {k: plain_copy(x, strict=strict) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain_copy(x, strict=strict) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, str):
        return str(v)  # a bound KernelFile is the path as written
    if v is None or isinstance(v, bool | int | float):
        return v
    if strict:
        raise TypeError(f"not JSON serialisable: {type(v).__name__}")
    return v


class Step:
    """One parsed step: its op name, validated parameters, and where it sits in the YAML."""

    def __init__(self, name: str, params: Any, index: int, spec: "Spec | None" = None):
        self.name = name
        self.params = params
        self.index = index
        self.spec = spec

    @property
    def path(self) -> str:
        return f"steps[{self.index}].{self.name}"

    def error(self, message: str, field: str | None = None) -> SpecError:
        """A SpecError located at this step (or one of its fields)."""
        loc = ("steps", self.index, self.name) + ((field,) if field else ())
        line = self.spec.line_of(loc) if self.spec is not None else None
        return SpecError(message, path=format_path(loc), line=line)

    def canonical(self) -> dict:
        """JSON-ready parameters (a kernel given as a numpy array becomes nested lists)."""
        return {self.name: plain_copy(self.params.model_dump(mode="python"), strict=True)}

    def __repr__(self) -> str:
        return f"Step({self.name}, {self.params!r})"


class Spec:
    """A validated spec. Build it with :func:`convpipe.spec.load_spec` (parse and bind) or :func:`parse_spec`
    (parse only).

    ``bound`` tells whether what the spec names (kernel and template ``.npy`` files, a cluster profile) was
    read and checked (:func:`convpipe.bind.bind`); a parsed spec has read no file but the spec itself.
    """

    def __init__(self, top: _TopLevel, steps: list[Step], raw: dict, lines: dict, base_dir: Path, source: str,
                 input_required: bool = True):
        self.top = top
        self.input_required = input_required
        self.steps = steps
        self.raw = raw
        self.lines = lines
        self.base_dir = base_dir
        self.source = source
        self.bound = False
        #: How a copy of this bound spec is bound (set by :func:`convpipe.bind.bind`, which this layer does not
        #: import): a new ``profile:`` cluster is read, bound steps are kept.
        self.rebind: Callable[[Spec], Spec] | None = None
        for s in steps:
            s.spec = self

    name = property(lambda self: self.top.name)
    input = property(lambda self: self.top.input)
    output = property(lambda self: self.top.output)
    execution = property(lambda self: self.top.execution)

    def line_of(self, loc: tuple) -> int | None:
        return _line(self.lines, tuple(loc))

    def error(self, message: str, loc: tuple) -> SpecError:
        return SpecError(message, path=format_path(loc), line=self.line_of(loc))

    def resolve(self, url: str) -> str:
        """Resolve a relative path against the spec's folder; URLs and absolute paths pass through."""
        if "://" in url or os.path.isabs(url):
            return url
        return str((self.base_dir / os.path.expanduser(url)).resolve())

    def locations(self) -> list["Location"]:
        """Every location the spec names, each with its YAML path and line: the input, the output, each
        table, each kernel / template / weights ``.npy`` file, a ``profile:`` file (see
        :func:`convpipe.bind.spec_locations`). Reads nothing."""
        return spec_locations(self)

    def canonical(self) -> dict:
        d = self.top.model_dump(mode="json", exclude={"steps"})
        d["steps"] = [s.canonical() for s in self.steps]
        return d

    def hash(self, *, compute: str | None = None, dtype: str | None = None) -> str:
        """Hash of what determines the output values (not where they go, not how they are scheduled).

        ``compute`` / ``dtype``: the compute and output dtypes the plan resolved (``precision: auto`` and a
        default ``output.dtype`` depend on the input's dtype). With them the hash names the arithmetic
        actually done, so a resume never mixes tiles computed in float32 and float64, even if the rule
        that resolves ``auto`` changed in between.
        """
        c = self.canonical()
        keep = {"steps": c["steps"], "precision": compute or c["execution"]["precision"],
                "dtype": dtype or (c.get("output") or {}).get("dtype")}
        return digest(keep, 16)

    def with_overrides(self, **overrides: Any) -> "Spec":
        """A copy with CLI-style overrides: input, output, cluster, backend, overwrite, tile.

        The steps are not overridden: a bound spec's copy keeps its bound steps (kernel files are not read
        again); a new ``profile:`` cluster is bound.
        """
        steps = self.raw.get("steps")
        raw = plain_copy({k: v for k, v in self.raw.items() if k != "steps"})
        raw["steps"] = steps
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "input":
                raw.setdefault("input", {})["url"] = value
            elif key == "output":
                raw.setdefault("output", {})["url"] = value
            elif key == "overwrite":
                raw.setdefault("output", {})["overwrite"] = bool(value)
            elif key in ("cluster", "backend", "tile", "precision", "memory_limit"):
                raw.setdefault("execution", {})[key] = value
            else:
                raise TypeError(f"unknown override {key!r}")
        kw = {"input_required": self.input_required}
        if not self.bound:
            return build_spec(raw, self.lines, self.base_dir, self.source, **kw)
        new = build_spec(raw, self.lines, self.base_dir, self.source, **kw)
        for mine, theirs in zip(new.steps, self.steps):
            mine.params = theirs.params
        return self.rebind(new)






def _shorthand(raw: dict, lines: dict) -> dict:
    """``input: URL`` and ``output: URL`` are short for ``{url: URL}`` (SPEC.md)."""
    raw = dict(raw)
    for key in ("input", "output"):
        if isinstance(raw.get(key), str):
            raw[key] = {"url": raw[key]}
            if (key,) in lines:
                lines[(key, "url")] = lines[(key,)]
    return raw


def build_spec(raw: Any, lines: dict, base_dir: Path, source: str, *, input_required: bool = True) -> Spec:
    """Validate parsed YAML/dict data into a :class:`Spec`; collect every error. Reads no file.

    ``input_required=False`` (the Python API) accepts a spec without ``input`` (``spec.input`` is None).

    Each step is validated by its op's parameters in the catalog (:mod:`convpipe.params`); no op is bound
    here. A ``.npy`` kernel or template is only checked as a path; :func:`convpipe.bind.bind` reads it and
    checks the steps against the input's axes.
    """
    ops = catalog()

    if not isinstance(raw, dict):
        keys = "'convpipe', 'input' and 'steps'" if input_required else "'convpipe' and 'steps'"
        raise SpecError(f"a spec must be a mapping with {keys}", path=source, line=1)
    if "convpipe" not in raw:
        raise SpecError("missing 'convpipe: 1' (the spec version)", path="convpipe", line=1)
    lines = dict(lines)
    raw = _shorthand(raw, lines)
    errors: list[SpecError] = []
    top = None
    try:
        top = (_TopLevel if input_required else _TopLevelNoInput).model_validate(raw)
    except ValidationError as e:
        errors.extend(_pydantic_errors(e, (), lines))
        if any(err.path == "convpipe" for err in errors):
            raise SpecErrors([err for err in errors if err.path == "convpipe"]) from None

    steps: list[Step] = []
    raw_steps = raw.get("steps")
    if isinstance(raw_steps, list):
        for i, item in enumerate(raw_steps):
            loc = ("steps", i)
            if isinstance(item, str):
                item = {item: {}}
            if not isinstance(item, dict) or len(item) != 1:
                errors.append(SpecError("each step is a one-key mapping like '- gaussian: {sigma: 2}'",
                                        path=format_path(loc), line=_line(lines, loc)))
                continue
            (name, params), = item.items()
            if not isinstance(name, str) or name not in ops:
                errors.append(SpecError(unknown_op(name, list(ops)),
                                        path=format_path(loc + (name,)), line=_line(lines, loc + (name,))))
                continue
            if params is None:
                params = {}
            if not isinstance(params, dict):
                errors.append(SpecError(f"parameters of {name!r} must be a mapping, got {type(params).__name__}",
                                        path=format_path(loc + (name,)), line=_line(lines, loc + (name,))))
                continue
            entry = ops[name]
            try:
                p = entry.Params.model_validate(params, context={"base_dir": base_dir})
            except ValidationError as e:
                errors.extend(step_errors(e, entry, name, params, loc + (name,), lines, raw))
                continue
            except (OverflowError, ZeroDivisionError, TypeError, MemoryError, RecursionError) as e:
                # pydantic passes on what a validator raises other than ValueError: a number out of any range
                errors.append(SpecError(f"a parameter is out of range ({type(e).__name__}: {str(e)[:200]})",
                                        path=format_path(loc + (name,)), line=_line(lines, loc + (name,))))
                continue
            steps.append(Step(name, p, i))
    if top is not None:
        try:
            check_cluster(top.execution.cluster)
        except SpecError as e:
            loc = ("execution", "cluster")
            errors.append(SpecError(e.message, path=format_path(loc), line=_line(lines, loc)))
    total = sum(ops[st.name].expanded_count(st.params) for st in steps)
    if total > limits.MAX_EXPANDED_STEPS:
        errors.append(SpecError(f"the steps expand into {total} ops (diffusion steps count one each); at most "
                                f"{limits.MAX_EXPANDED_STEPS}", path="steps", line=_line(lines, ("steps",))))
    if errors:
        raise SpecErrors(errors) if len(errors) > 1 else errors[0]
    assert top is not None
    return Spec(top, steps, raw, lines, base_dir, source, input_required)




def parse_spec(source: str | os.PathLike | dict, *, input_required: bool = True) -> Spec:
    """Parse and validate a spec (YAML/JSON file path, or a dict) reading no file but the spec itself.

    Kernel and template ``.npy`` files and cluster profiles are checked only as names; :func:`load_spec`
    also binds them (:func:`convpipe.bind.bind`).
    """
    if isinstance(source, dict):
        # numpy numbers and paths outside the steps become plain values (a step's arrays stay arrays: kernels)
        raw = {k: v if k == "steps" else plain_copy(v) for k, v in source.items()}
        return build_spec(raw, {}, Path.cwd(), "<dict>", input_required=input_required)
    path = Path(source)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}", path=str(path)) from None
    except (IsADirectoryError, PermissionError, OSError) as e:
        raise SpecError(f"cannot read spec file: {e}", path=str(path)) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is larger than {MAX_SPEC_BYTES / 2**20:g} MiB (put large kernels in a .npy "
                        "file)", path=str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"cannot read spec file: not UTF-8 text ({e})", path=str(path)) from None
    return parse_spec_text(text, base_dir=path.resolve().parent, source=str(path), input_required=input_required)


def parse_spec_text(text: str, *, base_dir: Path | None = None, source: str = "<spec>",
                    input_required: bool = True) -> Spec:
    """:func:`parse_spec` for YAML/JSON text (relative paths resolve against ``base_dir``, default cwd)."""
    data, lines = parse_yaml(text, source)
    return build_spec(data, lines, base_dir or Path.cwd(), source, input_required=input_required)




def _plain_json(v: Any) -> bool:
    """A default that is JSON already: None, bool, int, str, a finite float, or lists / tuples / str-keyed dicts
    of them (exact types: an enum or a subclass may serialise otherwise)."""
    t = type(v)
    if v is None or t in (bool, int, str):
        return True
    if t is float:
        return v == v and v not in (float("inf"), float("-inf"))
    if t in (list, tuple):
        return all(_plain_json(x) for x in v)
    if t is dict:
        return all(type(k) is str and _plain_json(x) for k, x in v.items())
    return False


def _schema_generator() -> type:
    """pydantic's GenerateJsonSchema, but a plain default (:func:`_plain_json`) skips the TypeAdapter pydantic
    builds for every default to dump it as JSON: for these values that dump is the value itself (a tuple a
    list, which ``to_jsonable_python`` does too). ~230 defaults made the adapters half of ``convpipe schema``'s
    time after the imports (issue 17 item 5); the schema printed is the same."""
    import pydantic_core
    from pydantic.json_schema import GenerateJsonSchema

    class _Generator(GenerateJsonSchema):
        def encode_default(self, dft: Any) -> Any:
            if not _plain_json(dft):
                return super().encode_default(dft)
            config = self._config
            return pydantic_core.to_jsonable_python(dft, timedelta_mode=config.ser_json_timedelta,
                                                    bytes_mode=config.ser_json_bytes, by_alias=self.by_alias)

    return _Generator


def json_schema() -> dict:
    """JSON Schema of the spec, with every op's parameters."""
    gen = _schema_generator()
    schema = _TopLevel.model_json_schema(schema_generator=gen)
    step_variants = []
    for name, entry in catalog().items():
        ps = entry.Params.model_json_schema(schema_generator=gen)
        defs = ps.pop("$defs", {})
        schema.setdefault("$defs", {}).update(defs)
        step_variants.append({"type": "object", "properties": {name: ps}, "required": [name],
                              "additionalProperties": False})
    schema["properties"]["steps"] = {"type": "array", "minItems": 1, "maxItems": limits.MAX_STEPS,
                                     "items": {"oneOf": step_variants}}
    for key in ("input", "output"):  # 'input: URL' is short for '{url: URL}'
        prop = dict(schema["properties"][key])
        variants = prop.pop("anyOf", None) or [{"$ref": prop.pop("$ref")}]
        schema["properties"][key] = {"anyOf": [{"type": "string", "description": "short for {url: ...}"},
                                               *variants], **prop}
    schema["title"] = "convpipe pipeline spec, version 1"
    return schema
