"""One op of the catalog described for a person (``convpipe ops NAME``): each parameter's meaning and unit,
its type, default, the values of an enum and the keys of a nested mapping.

A parameter's meaning is its field's ``description`` when the model gives one, else :data:`MEANINGS`
(by op and name, then by name: ``axes``, ``mode`` and ``cval`` mean the same for every op). A test checks
that every parameter of every op has a meaning. Pure: reads the pydantic models, imports no op.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = ["MEANINGS", "Param", "describe_op", "op_params", "suggest"]

#: what a parameter means, by ``"op.field"`` (one op) or ``"field"`` (every op that has it)
MEANINGS: dict[str, str] = {
    # shared by many ops
    "axes": "axes the op acts on, letters from tczyx (default: the op's own, usually the spatial axes)",
    "mode": "boundary handling at the whole array's edges, as scipy.ndimage's mode (never at tile borders)",
    "cval": "the value outside the array for mode constant",
    "table": "Parquet file (path or URL) the op's rows are written to",
    "truncate": "the Gaussian kernel's radius, in standard deviations (scipy's truncate)",
    "sigma": "Gaussian standard deviation in voxels: a number, or a per-axis map such as {y: 2, x: 2}",
    "order": "derivative order of the Gaussian per axis (0: smoothing)",
    "origin": "kernel origin offset per axis in voxels (scipy.ndimage's origin)",
    "normalize": "rescale the kernel first: none, sum (weights sum to 1), l1 (|weights| sum to 1) or "
                 "softmax (exp(w / temperature) normalised)",
    "temperature": "softmax temperature (> 0; normalize: softmax only)",
    "method": "how to compute it; auto picks the fastest exact method",
    "extent": "output length per axis: same (the input's), valid (n - k + 1) or full (n + k - 1)",
    "stride": "keep every stride-th output voxel per axis (a number or a per-axis map)",
    "size": "window size per axis in voxels (a number or a per-axis map)",
    "radius": "radius in voxels",
    "threshold": "minimum value a detection must exceed",
    "dtype": "numpy dtype name of the result",
    "iterations": "how many times the structuring element is applied",
    # one op each
    "gaussian.order": "derivative order of the Gaussian per axis (0: smoothing, 1: first derivative, ...)",
    "unsharp_mask.radius": "Gaussian sigma of the blur subtracted, in voxels (skimage's radius)",
    "unsharp_mask.amount": "weight of the detail added back: out = x + amount * (x - blur(x))",
    "difference_of_gaussians.low_sigma": "sigma of the narrower Gaussian, in voxels",
    "difference_of_gaussians.high_sigma": "sigma of the wider Gaussian, in voxels (default 1.6 x low_sigma)",
    "diffusion.diffusivity": "diffusion coefficient D in voxels² per unit time (with time)",
    "diffusion.time": "diffusion time t; the result is a Gaussian of sigma sqrt(2 D t) (with diffusivity)",
    "diffusion.steps": "explicit time steps (with dt): one heat-equation step each",
    "diffusion.dt": "length of one explicit step (stable for dt <= 1 / (2 * number of axes))",
    "sobel.output": "magnitude (sqrt of the squared derivatives), components (one c channel per axis) or "
                    "orientation (arctan2(dy, dx) in radians)",
    "prewitt.output": "magnitude, components (one c channel per axis) or orientation (radians)",
    "scharr.output": "magnitude, components (one c channel per axis) or orientation (radians)",
    "moving_average.align": "centered (the window around each sample) or trailing (the window ending at it)",
    "scale.factor": "multiplier: out = x * factor + offset",
    "scale.offset": "added after the factor: out = x * factor + offset",
    "clip.min": "lower bound (none: no lower bound)",
    "clip.max": "upper bound (none: no upper bound)",
    "threshold.value": "out = x > value (1 or 0); give value or method",
    "threshold.method": "automatic threshold computed on the whole array (skimage.filters.threshold_*)",
    "fft_filter.kind": "which frequencies pass: lowpass, highpass or bandpass",
    "fft_filter.shape": "the filter's profile along the radius: ideal (a step), gaussian or butterworth",
    "butterworth.high_pass": "true: a high-pass filter; false: low-pass",
    "butterworth.order": "Butterworth order (> 0; higher is steeper)",
    "butterworth.squared_butterworth": "use the squared Butterworth response (skimage's squared_butterworth)",
    "stochastic.seed": "seed of the random kernel perturbation (the same seed gives the same output)",
    "rescale.out_range": "[low, high] the array's min and max are mapped to",
    "peaks.radius": "neighbourhood radius in voxels: a peak is the maximum of the (2 * radius + 1) window",
    "peaks.threshold": "a peak's value must exceed this (in the image's units)",
    "blobs.min_sigma": "smallest Gaussian sigma searched, in voxels (blob radius ≈ sigma · sqrt(2) in 2-D)",
    "blobs.max_sigma": "largest Gaussian sigma searched, in voxels",
    "blobs.num_sigma": "number of sigmas between min_sigma and max_sigma",
    "blobs.threshold": "absolute lower bound of the scale-space maxima (skimage's threshold)",
    "blobs.threshold_rel": "lower bound as a fraction of the largest scale-space value (skimage's threshold_rel)",
    "blobs.overlap": "blobs overlapping by more than this fraction of their area are pruned to the larger",
    "blobs.log_scale": "space the sigmas logarithmically (else linearly)",
    "blobs.exclude_border": "drop blobs this many voxels from the edge (false: keep all)",
    "match_template.radius": "peaks table: neighbourhood radius in voxels of a peak",
    "match_template.threshold": "peaks table: minimum normalised correlation of a peak (-1 to 1)",
    "filter_bank.gabor": "a Gabor bank instead of kernels: one kernel per orientation x frequency",
    "gabor.orientations": "number of orientations evenly spaced in [0, pi), or a list of angles in radians",
    "gabor.frequencies": "spatial frequencies in cycles per voxel (0.5 is Nyquist)",
    "gabor.sigma": "Gaussian envelope's sigma in voxels (default 0.56 / frequency)",
    "gabor.radius": "kernel radius in voxels (default 3 x sigma)",
    "gabor.offset": "phase offset of the carrier in radians",
    "stats.per": "rows per plane, per work tile, or one row for the whole array",
    "stats.metrics": "statistics per row; energy is the sum of squares",
    "stats.orientation_histogram": "a histogram of the Sobel gradient's orientation per row",
    "orientation_histogram.bins": "number of orientation bins over [0, pi)",
    "orientation_histogram.weight": "magnitude (each voxel weighs its gradient magnitude) or count",
    "stats.spectral_bands": "band edges as fractions of Nyquist: band i is [edge i, edge i+1); energy per band",
    "pool.kind": "the window's reduction: max, mean, min or sum",
    "conv_layer.bias": "added per output channel (a number or one per channel)",
    "conv_layer.activation": "applied after the bias: none, relu, sigmoid or tanh",
    "label.dtype": "integer type of the labels",
    "astype.dtype": "numpy dtype name to cast to (saturating for integer types)",
}


@dataclass(frozen=True)
class Param:
    """One parameter as ``convpipe ops NAME`` shows it (``name`` dotted for a nested key)."""

    name: str
    type: str
    required: bool
    default: Any
    meaning: str
    choices: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


def _strip_none(ann: Any) -> tuple[Any, bool]:
    args = typing.get_args(ann)
    if typing.get_origin(ann) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return ann, False


def _type_name(ann: Any) -> str:
    ann, optional = _strip_none(ann)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Literal:
        text = "one of " + " | ".join(map(str, args))
    elif origin in (typing.Union, types.UnionType):
        text = " or ".join(_type_name(a) for a in args)
    elif origin is list:
        text = f"list of {_type_name(args[0])}" if args else "list"
    elif origin is dict:
        text = f"per-axis map of {_type_name(args[1])}" if len(args) == 2 else "mapping"
    elif isinstance(ann, type) and issubclass(ann, BaseModel):
        text = "mapping"
    elif ann is Any:
        text = "value"
    else:
        text = getattr(ann, "__name__", str(ann))
    return text + (" (optional)" if optional else "")


def _nested(ann: Any) -> type[BaseModel] | None:
    ann, _ = _strip_none(ann)
    for a in typing.get_args(ann) or (ann,):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _choices(ann: Any) -> tuple[str, ...]:
    ann, _ = _strip_none(ann)
    if typing.get_origin(ann) is list:
        ann = typing.get_args(ann)[0]
    return tuple(map(str, typing.get_args(ann))) if typing.get_origin(ann) is Literal else ()


def _meaning(op: str, prefix: str, name: str, description: str | None) -> str:
    if description:
        return description
    head = prefix.split(".")[0] if prefix else op
    for key in (f"{op}.{prefix}{name}", f"{head}.{name}" if prefix else "", f"{prefix}{name}", name):
        if key and key in MEANINGS:
            return MEANINGS[key]
    return ""


def op_params(op: str, model: type[BaseModel], prefix: str = "") -> list[Param]:
    """Every parameter of ``model`` (the catalog entry ``op``'s), nested mappings' keys after their parent."""
    out: list[Param] = []
    for name, f in model.model_fields.items():
        sub = _nested(f.annotation)
        default = None if f.is_required() else f.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump()
        out.append(Param(prefix + name, _type_name(f.annotation), f.is_required(), default,
                         _meaning(op, prefix, name, f.description), _choices(f.annotation),
                         tuple(sub.model_fields) if sub is not None else ()))
        if sub is not None:
            out.extend(op_params(op, sub, prefix=f"{prefix}{name}."))
    return out


def suggest(name: str, names: list[str]) -> str:
    """``; did you mean 'x'?`` for the nearest of ``names`` ('' when none is near)."""
    near = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def describe_op(name: str) -> str:
    """The text of ``convpipe ops NAME`` (KeyError for a name not in the catalog)."""
    from . import entry

    e = entry(name)
    lines = [f"{e.name} [{e.kind}]: {e.summary}"]
    if e.doc:
        lines.append(f"  {e.doc}")
    params = op_params(e.name, e.Params)
    if not params:
        lines.append("parameters: none")
        return "\n".join(lines)
    lines.append("parameters:")
    for p in params:
        depth = p.name.count(".")
        pad = "  " * (depth + 1)
        head = f"{pad}{p.name.rsplit('.', 1)[-1]}: {p.type}"
        if p.required:
            head += ", required"
        elif p.default is not None and p.default is not PydanticUndefined:
            head += f", default {p.default!r}"
        lines.append(head)
        if p.meaning:
            lines.append(f"{pad}    {p.meaning}")
        if p.keys:
            lines.append(f"{pad}    keys: {', '.join(p.keys)}")
    return "\n".join(lines)
