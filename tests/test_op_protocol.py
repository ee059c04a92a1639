"""The op catalog (convpipe.params) and the one Op protocol (convpipe.ops.base).

The spec validates steps through the catalog, which imports no op implementation; every catalog entry has
exactly one implementing class, and the classes declare their capabilities on the protocol (no ``getattr``
for a capability, no hand-over between ``apply`` and the rows through thread-locals or ``id()``).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import convpipe
from convpipe import params
from convpipe.ops import registry
from convpipe.ops.base import NO_CONTEXT, Context, Op

PKG = Path(convpipe.__file__).parent

#: every capability some part of convpipe asks an op about
CAPABILITIES = ("emits_table", "raw_input", "wants_coords", "wants_outside", "wants_extent", "rows_context",
                "merge_rows", "domain_nonfinite", "hides_nonfinite", "gpu_path", "linear", "kind",
                "isolated", "tiled_prepass", "passes_dtype", "cost_ns")


def _classes() -> list[type[Op]]:
    from convpipe.ops.local.diffusion import HeatStep
    from convpipe.ops.local.merged import MergedSeparable

    return [registry.get(n) for n in registry.names()] + [HeatStep, MergedSeparable]


# --------------------------------------------------------------------------- the catalog


def test_catalog_names_are_the_implemented_ops():
    assert set(params.names()) == set(registry.IMPLEMENTATIONS) == set(registry.names())
    for name, entry in params.catalog().items():
        cls = registry.get(name)
        assert issubclass(cls, Op) and cls.name == name
        assert cls.Params is entry.Params, name  # the op implements its entry's parameters
        assert cls.kind == entry.kind, name
        assert entry.summary and entry.summary == entry.summary.strip()
    with pytest.raises(KeyError):
        registry.get("gaussian_filter")


def test_catalog_entries_are_pure_data():
    e = params.entry("diffusion")
    assert e.expanded_count(e.Params(steps=7, dt=0.1)) == 7
    assert params.entry("gaussian").expanded_count(params.entry("gaussian").Params(sigma=1)) == 1
    with pytest.raises(TypeError):
        params.catalog()["x"] = e  # read-only


_IMPORTS = textwrap.dedent("""
    import importlib.util, json, sys, types
    # the package's own __init__ imports the API (that is the layers pass's business): load the submodules alone
    spec = importlib.util.find_spec("convpipe")
    pkg = types.ModuleType("convpipe"); pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["convpipe"] = pkg
    import convpipe.spec, convpipe.params
    from convpipe.spec import json_schema, parse_spec_text
    text = '''convpipe: 1
    input: {url: in.zarr, axes: zyx}
    steps:
      - gaussian: {sigma: 1}
      - correlate: {kernel: [[1, 2], [3, 4]]}
      - peaks: {radius: 1, table: p.parquet}
      - stats: {per: plane, table: s.parquet}
      - match_template: {template: {crop: {y: [0, 4], x: [0, 4]}}}
      - fft_filter: {cutoff: 0.2}
      - zscore: {}
      - diffusion: {steps: 3, dt: 0.1}
    '''
    s = parse_spec_text(text)
    json_schema()
    mods = sorted(m for m in sys.modules if m.startswith(("convpipe.ops", "convpipe.engines", "scipy.ndimage",
                                                         "dask", "zarr", "cv2", "cupy")))
    print(json.dumps([len(s.steps), mods]))
""")


def test_spec_and_catalog_import_no_op_and_no_engine():
    """``import convpipe.spec`` and validating every op family's parameters load no op, no scipy.ndimage,
    no OpenCV, no dask, no zarr."""
    r = subprocess.run([sys.executable, "-c", _IMPORTS], capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    n, mods = json.loads(r.stdout.strip().splitlines()[-1])
    assert n == 8 and mods == []


def test_axis_errors_wait_for_binding_and_keep_their_words():
    """Steps are bound to axes by bind (through the ops), not by parsing; validate's errors are unchanged."""
    from convpipe.errors import SpecError
    from convpipe.spec import load_spec_text, parse_spec_text

    text = "convpipe: 1\ninput: {url: in.zarr, axes: zyx}\nsteps:\n  - sobel: {axes: yt}\n"
    parse_spec_text(text)  # parameters are valid: parsing binds nothing
    with pytest.raises(SpecError) as e:
        load_spec_text(text)
    assert e.value.format() == "steps[0].sobel.axes (line 4): axis 't' is not one of the input axes 'zyx'"


# --------------------------------------------------------------------------- the protocol


def test_every_capability_is_declared_on_op_with_a_docstring():
    src = inspect.getsource(Op)
    for name in CAPABILITIES:
        assert name in vars(Op), name
        # an attribute docstring right after the declaration
        assert f'    {name}: ClassVar' in src and '"""' in src.split(f"    {name}: ClassVar", 1)[1].split("\n", 2)[1]
    for meth in ("apply", "apply_rows", "bind_input", "halo", "boundary", "full_axes", "out_dtype", "out_axes"):
        assert (getattr(Op, meth).__doc__ or getattr(getattr(Op, meth), "fget", None).__doc__), meth


def _own_modules() -> list[Path]:
    """The modules that call into the protocol (the API facade's run code belongs to the run layer)."""
    names = ["tiles.py", "finite.py", "execute.py", "backends.py", "gpu.py", "plan.py", "bind.py", "spec.py"]
    return [PKG / n for n in names] + sorted((PKG / "ops").rglob("*.py")) + sorted((PKG / "engines").rglob("*.py"))


def test_no_capability_is_looked_up_with_getattr():
    for path in _own_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in CAPABILITIES + ("rows", "apply_rows", "bind_input", "expanded_count")):
                if path.name == "backends.py" and node.args[1].value == "gpu_path":
                    continue  # has_gpu_path takes any object (a plan's internal op, a test's stand-in)
                raise AssertionError(f"{path.relative_to(PKG)}:{node.lineno}: getattr(..., {node.args[1].value!r})")


def test_no_thread_local_hand_over_and_no_id_keyed_state():
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        assert "threading.local" not in text, path
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "id":
                raise AssertionError(f"{path.relative_to(PKG)}:{node.lineno}: a value keyed by id()")


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.name)
def test_apply_has_one_signature_and_numpydoc(cls):
    sig = inspect.signature(cls.apply)
    assert list(sig.parameters) == ["self", "x", "ctx"], cls
    assert sig.parameters["ctx"].default is NO_CONTEXT
    doc = inspect.getdoc(cls.apply) or ""
    assert "Parameters" in doc and "Returns" in doc and "dtype" in doc, cls.name
    if cls.emits_table:
        assert cls.apply_rows is not Op.apply_rows and inspect.getdoc(cls.apply_rows), cls.name
        assert list(inspect.signature(cls.apply_rows).parameters) == ["self", "x", "ctx"]
    else:
        assert cls.apply_rows is Op.apply_rows and cls.merge_rows is None, cls.name


def test_gpu_path_is_declared_by_the_ops_not_listed_by_the_backend():
    from convpipe import backends

    assert not hasattr(backends, "GPU_OPS")
    on = {c.name for c in _classes() if c.gpu_path}
    assert "gaussian" in on and "threshold" in on and "merged" in on
    assert not on & {"peaks", "stats", "blobs", "match_template", "fft_filter", "zscore", "stochastic"}


def test_rows_come_back_with_the_image(rng):
    """``apply_rows`` gives the image ``apply`` gives and the rows computed from it, on one call."""
    from convpipe.spec import load_spec

    x = rng.random((20, 24))
    for step in ({"peaks": {"radius": 1, "threshold": 0.5, "table": "p.parquet"}},
                 {"match_template": {"template": [[0, 1, 0], [1, 2, 1], [0, 1, 0]], "radius": 1,
                                     "table": "m.parquet"}},
                 {"stats": {"per": "tile", "table": "s.parquet"}},
                 {"blobs": {"min_sigma": 1, "max_sigma": 2, "num_sigma": 2, "threshold": 0.01, "table": "b.parquet"}}):
        s = load_spec({"convpipe": 1, "input": {"url": "u.zarr"}, "steps": [step]})
        (name, _), = step.items()
        op = registry.get(name)(s.steps[0].params, "yx", step=s.steps[0])
        # the block is the whole array; the tile is its interior (the halo lies inside the array)
        coords = {a: np.arange(lo, n - hi) for a, n, (lo, hi) in
                  zip("yx", x.shape, (op.halo().get(a, (0, 0)) for a in "yx"))}
        ctx = Context(coords=coords, extent={"y": 20, "x": 24})
        y, rows = op.apply_rows(x, ctx)
        np.testing.assert_array_equal(y, op.apply(x, ctx))
        assert set(op.in_axes) <= set(rows) and len({len(v) for v in rows.values()}) == 1, name


def test_ops_modules_stay_small():
    """The families are split: no op, engine or catalog module over 700 lines."""
    for path in sorted((PKG / "ops").rglob("*.py")) + sorted((PKG / "engines").rglob("*.py")) + \
            sorted((PKG / "params").rglob("*.py")) + [PKG / n for n in ("backends.py", "gpu.py", "stats.py",
                                                                        "tiles.py", "kernels.py", "bind.py")]:
        n = len(path.read_text().splitlines())
        assert n <= 700, f"{path.relative_to(PKG)}: {n} lines"


def test_registry_imports_lazily():
    code = ("import sys, convpipe.ops.registry as r; r.get('gaussian'); "
            "print(sorted(m for m in sys.modules if m.startswith('convpipe.ops.features')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120,
                       env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
