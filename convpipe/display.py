"""How a :class:`~convpipe.api.Pipeline` and a :class:`~convpipe.plan.Plan` show themselves: a short
``repr`` in a terminal and an HTML table in Jupyter (``_repr_html_``).

Everything shown comes from the spec (names, parameters, paths a user wrote), so the HTML is rendered by
jinja2 with autoescaping on: a step name or URL holding ``<script>`` is text, never markup. Parameters are
shown as the user set them (defaults left out), an array kernel as its shape and dtype, never its values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["params_text", "pipeline_html", "pipeline_text", "plan_html"]

_MAX_VALUE = 80  # characters of one parameter's value before it is cut


def _value(v: Any) -> str:
    from .kernels import KernelFile

    if isinstance(v, KernelFile):
        return f"{str(v)!r} ({'×'.join(map(str, v.array.shape))} {v.array.dtype})"
    if isinstance(v, np.ndarray):
        return f"array({'×'.join(map(str, v.shape))} {v.dtype})"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        if len(v) > 8 and all(isinstance(x, int | float) for x in v):
            return f"[{', '.join(map(_value, v[:4]))}, … {len(v)} values]"
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if hasattr(v, "model_dump"):  # a nested parameter model (a gabor bank, an orientation histogram)
        return _value(_set_fields(v))
    text = repr(v)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def _set_fields(model: Any) -> dict:
    """The fields a user set (pydantic's ``model_fields_set``), objects kept as they are (kernels)."""
    return {k: getattr(model, k) for k in type(model).model_fields if k in model.model_fields_set}


def params_text(step: Any) -> str:
    """``sigma: {y: 2, x: 2}, mode: 'nearest'``: the parameters a step sets, defaults left out."""
    return ", ".join(f"{k}: {_value(v)}" for k, v in _set_fields(step.params).items())


def _steps(spec: Any) -> list[tuple[str, str, str]]:
    return [(s.path, s.name, params_text(s)) for s in spec.steps]


def pipeline_text(p: Any) -> str:
    """``Pipeline 'edges' (2 steps): gaussian(sigma: 2) -> sobel(axes: 'yx')`` plus its input and output."""
    spec = p.spec
    chain = " -> ".join(f"{name}({params})" for _, name, params in _steps(spec))
    lines = [f"Pipeline {spec.name!r} ({len(spec.steps)} step{'s' if len(spec.steps) != 1 else ''}): {chain}"]
    lines.append(f"  input:  {spec.input.url if spec.input is not None else '(none: apply(array) or run(input=...))'}")
    if spec.output is not None:
        lines.append(f"  output: {spec.output.url}")
    return "\n".join(lines)


_ENV = None


def _env() -> Any:
    global _ENV
    if _ENV is None:
        import jinja2

        _ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                  lstrip_blocks=True)
    return _ENV


_STYLE = ("<style>.convpipe-nb table{border-collapse:collapse;margin:.3em 0}"
          ".convpipe-nb th,.convpipe-nb td{text-align:left;padding:.15em .6em;border-bottom:1px solid #ddd;"
          "vertical-align:top}.convpipe-nb code{white-space:pre-wrap}.convpipe-nb .warn{color:#a40}</style>")

_PIPELINE = """<div class="convpipe-nb">{{ style|safe }}
<b>Pipeline</b> <code>{{ name }}</code> ({{ steps|length }} step{{ '' if steps|length == 1 else 's' }})
<table><tr><th>step</th><th>op</th><th>parameters</th></tr>
{% for path, op, params in steps %}<tr><td>{{ path }}</td><td><code>{{ op }}</code></td><td><code>{{ params }}</code></td></tr>
{% endfor %}</table>
<table>
<tr><th>input</th><td><code>{{ input }}</code></td></tr>
{% if output %}<tr><th>output</th><td><code>{{ output }}</code></td></tr>{% endif %}
<tr><th>execution</th><td><code>{{ execution }}</code></td></tr>
</table></div>"""


def pipeline_html(p: Any) -> str:
    spec = p.spec
    ex = spec.execution
    return _env().from_string(_PIPELINE).render(
        style=_STYLE, name=spec.name, steps=_steps(spec),
        input=spec.input.url if spec.input is not None else "none: apply(array) or run(input=...)",
        output=spec.output.url if spec.output is not None else "",
        execution=f"backend {ex.backend}, cluster {ex.cluster}, tile {ex.tile}, precision {ex.precision}")


_PLAN = """<div class="convpipe-nb">{{ style|safe }}
<b>Plan</b> for <code>{{ name }}</code>: {{ d.cluster }} ({{ d.workers }} workers, {{ mem }} each),
backend {{ d.backend }}, compute {{ d.compute_dtype }}{% if d.backend_note %} ({{ d.backend_note }}){% endif %}
<table><tr><th></th><th>shape</th><th>axes</th><th>dtype</th><th>chunks</th></tr>
{% for label, a in arrays %}<tr><th>{{ label }}</th><td>{{ a.shape|join(' × ') }}</td><td>{{ a.axes }}</td>
<td>{{ a.dtype }}</td><td>{{ a.chunks|join(' × ') }}</td></tr>
{% endfor %}</table>
<table><tr><th>pass</th><th>ops [method]</th><th>halo</th><th>tile</th><th>tiles</th><th>tasks</th>
<th>memory / task</th><th>read ampl.</th><th>ms / task</th></tr>
{% for p in passes %}<tr><td>{{ loop.index0 }}</td>
<td>{% for op, m in p.ops %}<code>{{ op }}</code> [{{ m }}]{% if not loop.last %}<br>{% endif %}{% endfor %}</td>
<td>{{ p.halo }}</td><td>{{ p.tile }}</td><td>{{ p.tiles }}</td><td>{{ p.tasks }}</td><td>{{ p.mem }}</td>
<td>{{ p.amp }}</td><td>{{ p.ms }}</td></tr>
{% endfor %}</table>
{% for w in d.warnings %}<div class="warn">warning: {{ w }}</div>
{% endfor %}
<details><summary>explain</summary><pre>{{ text }}</pre></details></div>"""


def plan_html(plan: Any) -> str:
    from .humanize import format_bytes

    d = plan.to_dict()
    passes = []
    for p, pp in zip(d["passes"], plan.passes):
        passes.append({
            "ops": list(zip(p["ops"], p["methods"])),
            "halo": ", ".join(f"{a}: {lo}+{hi}" for a, (lo, hi) in p["halo"].items()) or "none",
            "tile": " × ".join(f"{p['tile'][a]}{a}" for a in pp.out_axes if a in p["tile"]),
            "tiles": p["tiles"], "tasks": p["tasks"], "mem": format_bytes(int(p["memory_per_task"])),
            "amp": f"{p['read_amplification']:.3f}", "ms": f"{1e3 * p['est_seconds_per_task']:.0f}",
        })
    name = plan.spec.name if plan.spec is not None else "pipeline"
    return _env().from_string(_PLAN).render(
        style=_STYLE, name=name, d=d, mem=format_bytes(int(d["memory_per_worker"])),
        arrays=[("input", d["input"]), ("output", d["output"])], passes=passes, text=str(plan))
