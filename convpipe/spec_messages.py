"""The words of spec errors: what a newcomer wrote, what it should be, and the nearest thing we have.

Kept apart from :mod:`convpipe.spec` (which decides *whether* a spec is valid) so that messages can grow
without growing the validator: invalid choices are named with the allowed ones, scipy / scikit-image
function names map to convpipe's op names, a list given for a per-axis parameter is shown as the per-axis
map it should be, and a misspelt parameter is reported once (not also as a missing one).
"""

from __future__ import annotations

import re
import typing
from typing import Any

from .errors import SpecError

if typing.TYPE_CHECKING:
    from pydantic import ValidationError

#: scipy.ndimage / scikit-image / numpy function names -> the convpipe op that computes the same thing.
FOREIGN_NAMES: dict[str, str] = {
    "gaussian_filter": "gaussian", "gaussian_filter1d": "gaussian", "gaussian_blur": "gaussian",
    "GaussianBlur": "gaussian", "blur": "gaussian", "smooth": "gaussian",
    "uniform_filter": "uniform", "box_filter": "uniform", "boxfilter": "uniform", "mean_filter": "uniform",
    "uniform_filter1d": "moving_average", "moving_mean": "moving_average", "rolling_mean": "moving_average",
    "median_filter": "median", "medianBlur": "median", "minimum_filter": "minimum", "maximum_filter": "maximum",
    "min_filter": "minimum", "max_filter": "maximum", "erode": "minimum", "dilate": "maximum",
    "correlate1d": "correlate", "convolve1d": "convolve", "convolve2d": "convolve", "correlate2d": "correlate",
    "fftconvolve": "convolve", "filter2D": "correlate", "sobel_h": "sobel", "sobel_v": "sobel",
    "Sobel": "sobel", "prewitt_h": "prewitt", "prewitt_v": "prewitt", "scharr_h": "scharr", "scharr_v": "scharr",
    "laplacian": "laplace", "Laplacian": "laplace", "log_filter": "gaussian_laplace", "LoG": "gaussian_laplace",
    "gradient_magnitude": "gaussian_gradient_magnitude", "dog": "difference_of_gaussians",
    "DoG": "difference_of_gaussians", "unsharp": "unsharp_mask", "sharpen": "unsharp_mask",
    "butterworth_filter": "butterworth", "fourier_gaussian": "fft_filter", "lowpass": "fft_filter",
    "highpass": "fft_filter", "bandpass": "fft_filter", "fft": "log_spectrum", "spectrum": "log_spectrum",
    "rescale_intensity": "rescale", "normalize": "rescale", "standardize": "zscore", "zscore_normalize": "zscore",
    "peak_local_max": "peaks", "local_maxima": "peaks", "find_peaks": "peaks", "blob_log": "blobs",
    "blob_dog": "blobs", "gabor": "filter_bank", "gabor_filter": "filter_bank", "lfilter": "autoregressive",
    "absolute": "abs", "fabs": "abs", "multiply": "scale", "binarize": "threshold", "heat": "diffusion",
    "random_shift": "stochastic",
}


# --------------------------------------------------------------------------- YAML paths and pydantic's errors

def format_path(loc: tuple | list) -> str:
    """``('steps', 1, 'sobel', 'axes')`` -> ``steps[1].sobel.axes``."""
    s = ""
    for part in loc:
        if isinstance(part, int):
            s += f"[{part}]"
        else:
            s += ("." if s else "") + str(part)
    return s

def _line(lines: dict, loc: tuple) -> int | None:
    """The line of ``loc``, or of its nearest ancestor that has one (a missing key has no line)."""
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None

def _pydantic_errors(e: ValidationError, prefix: tuple, spec_lines: dict) -> list[SpecError]:
    return merge_union_errors(_pydantic_errors_raw(e, prefix, spec_lines))


def _pydantic_errors_raw(e: ValidationError, prefix: tuple, spec_lines: dict) -> list[tuple[SpecError, dict]]:
    out = []
    for err in e.errors():
        raw = tuple(err["loc"])
        # pydantic puts union members' type names into loc ('float', 'dict[str,float]'); they are hidden, but the
        # key an extra_forbidden error is about is the user's own, whatever it looks like ('int', 'a[b')
        last = raw[-1:] if err["type"] == "extra_forbidden" and raw else ()
        body = raw[: len(raw) - len(last)]
        loc = prefix + tuple(p for p in body if not (isinstance(p, str) and _is_union_tag(p))) + last
        msg = pydantic_message(err)
        out.append((SpecError(msg, path=format_path(loc) or "spec", line=_line(spec_lines, loc)), err))
    return out


def _is_union_tag(p: str) -> bool:
    # pydantic puts the union member's type name into loc (e.g. 'float', 'dict[str,float]'); hide them.
    return p in {"float", "int", "str", "bool", "list", "dict", "literal['auto']", "function-after"} or "[" in p

# --------------------------------------------------------------------------- messages


def unknown_op(name: Any, known: list[str]) -> str:
    """``unknown op 'gaussian_filter': convpipe's name for scipy.ndimage.gaussian_filter is 'gaussian'``."""
    text = str(name)
    short = text.rsplit(".", 1)[-1] if isinstance(name, str) else text
    if isinstance(name, str) and short in known:
        return f"unknown op {name!r}: convpipe's op is {short!r} (no module prefix)"
    ours = FOREIGN_NAMES.get(short) if isinstance(name, str) else None
    if ours is None and isinstance(name, str):
        ours = FOREIGN_NAMES.get(short.lower())
    if ours is not None and ours in known:
        return f"unknown op {name!r} (did you mean {ours!r}? that is convpipe's name for it)"
    import difflib  # loaded for a mistake only: ~1 ms of every start-up
    close = difflib.get_close_matches(short, known, n=1, cutoff=0.6)
    if close:
        return f"unknown op {name!r} (did you mean {close[0]!r}?)"
    return f"unknown op {name!r}; 'convpipe ops' lists them all"


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def pydantic_message(err: dict) -> str:
    """One pydantic error in plain words; an invalid choice names what was given and what is allowed."""
    msg = err["msg"]
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown parameter {err['loc'][-1]!r}"
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if kind == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        given = err.get("input")
        hint = ""
        if isinstance(given, str):
            import difflib  # loaded for a mistake only: ~1 ms of every start-up
            close = difflib.get_close_matches(given, choices, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{_short(given)} is not allowed{hint}: use {expected}"
    if kind == "int_parsing_size":
        return f"Input should be an integer of a usable size, got {_short(err.get('input'))}"
    if kind in ("int_from_float", "int_parsing", "int_type", "float_parsing", "float_type", "bool_parsing",
                "bool_type", "string_type", "dict_type", "list_type"):
        return f"{msg}, got {_short(err.get('input'))}"
    return msg


def merge_union_errors(pairs: list[tuple[SpecError, dict]]) -> list[SpecError]:
    """A value that fits none of a union's types gives one error per type: say it once, naming them all."""
    merged: dict[str, tuple[SpecError, list[str], Any]] = {}
    order: list[str] = []
    for err, raw in pairs:
        given = raw.get("input")
        if err.path in merged:
            first, parts, _ = merged[err.path]
            parts.append(_strip_given(err.message).removeprefix("Input should be "))
        else:
            merged[err.path] = (err, [_strip_given(err.message) if raw["type"] != "extra_forbidden"
                                      else err.message], given)
            order.append(err.path)
    out = []
    for path in order:
        first, parts, given = merged[path]
        if len(parts) == 1:
            out.append(first)
            continue
        text = " or ".join(parts)
        if _short(given) not in text:
            text += f", got {_short(given)}"
        out.append(SpecError(text, path=first.path, line=first.line))
    return out


def _strip_given(msg: str) -> str:
    return re.sub(r", got .*$", "", msg) if msg.startswith("Input should be") else msg


def _is_per_axis(annotation: Any) -> bool:
    """A ``float | dict[str, float]`` (or int) field: one number, or one per axis."""
    args = typing.get_args(annotation)
    return any(typing.get_origin(a) is dict for a in args) and any(a in (int, float) for a in args)


def per_axis_example(values: list, axes: str | None) -> str:
    """``{z: 1, y: 2, x: 2}`` for ``[1, 2, 2]``: the input's axes when known, else the last of 'tzyx'."""
    n = len(values)
    letters = None
    if axes and len(axes) == n and "c" not in axes:
        letters = axes
    elif axes:
        spatial = "".join(a for a in axes if a != "c")
        letters = spatial[-n:] if len(spatial) >= n else None
    if letters is None and n <= 4:
        letters = "tzyx"[-n:]
    if letters is None:
        return ""
    return "{" + ", ".join(f"{a}: {v}" for a, v in zip(letters, values)) + "}"


def step_errors(e: Any, op_cls: type, name: str, params: dict, loc: tuple, lines: dict, raw: dict) -> list[SpecError]:
    """The errors of one step's parameters, in plain words.

    A misspelt parameter (``sigam``) is reported once, with its suggestion, not also as the missing one it
    stands for; a list given for a per-axis parameter shows the per-axis map it should be.
    """
    fields = op_cls.Params.model_fields
    known = list(fields)
    errs = _pydantic_errors(e, loc, lines)
    meant: set[str] = set()
    out: list[SpecError] = []
    for err in errs:
        if err.message.startswith("unknown parameter"):
            key = err.path.rsplit(".", 1)[-1]
            import difflib  # loaded for a mistake only: ~1 ms of every start-up
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if close and close[0] not in params:
                meant.add(close[0])
            out.append(SpecError(f"{err.message}{hint}; {name} takes: {', '.join(known)}", path=err.path,
                                 line=err.line))
        else:
            out.append(err)
    axes = None
    inp = raw.get("input")
    if isinstance(inp, dict) and isinstance(inp.get("axes"), str):
        axes = inp["axes"]
    final = []
    for err in out:
        field = err.path[len(format_path(loc)) + 1:].split(".", 1)[0].split("[", 1)[0]
        if field in meant and err.message == "Field required":
            continue  # the misspelt key above stands for it
        value = params.get(field)
        if field in fields and isinstance(value, list) and _is_per_axis(fields[field].annotation):
            example = per_axis_example(value, axes)
            shown = f": write {field}: {example}" if example else ""
            where = " (the input's axes)" if example and axes else ""
            final.append(SpecError(f"{field} is one number for every axis, or a per-axis map, not a list"
                                   f"{shown}{where}", path=format_path(loc + (field,)),
                                   line=_line(lines, loc + (field,))))
            continue
        final.append(err)
    dedup: dict[tuple, SpecError] = {}
    for err in final:
        dedup.setdefault((err.path, err.message), err)
    return list(dedup.values())
