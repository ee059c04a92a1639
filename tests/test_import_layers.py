"""convpipe's imports go one way: down the layers below, never up, never round in a cycle.

The layer table is the architecture in one look. Each row is a layer, lowest first; a module may import its own
layer or a lower one. Names are module names; ``pkg.*`` means every module of that package (the package's
``__init__`` included). Every module under ``convpipe/`` must match exactly one row.

How the import graph is read (from the source, with :mod:`ast`; nothing is imported):

* every ``import`` and ``from ... import``, at module level *and* inside functions (a function-level import is
  a dependency all the same); only ``if TYPE_CHECKING:`` blocks are left out, as they never run;
* relative imports are resolved; ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
  else to ``pkg`` (its ``__init__``);
* importing ``a.b.c`` also runs ``a`` and ``a.b``: those implicit edges count too, except to the module's own
  ancestor packages (Python has already imported them). An explicit ``from . import name`` or
  ``from convpipe.pkg import name`` that resolves to a package's ``__init__`` counts, whoever writes it.

Modules that name a module as a string (the op registry's lazy entries) are not followed: they load ops by
name, the ops' own layer.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "convpipe"

# --------------------------------------------------------------------------- the architecture

LAYERS: list[tuple[str, list[str]]] = [
    # lowest first: (layer, its modules)
    # -- leaves: errors, axis letters, limits, hashing, version, root guards, NaN tracking, kernel sources,
    #    Parquet rows, streaming statistics, RSS sampling, checks before replacing an output
    ("leaves",  ["convpipe.errors", "convpipe.axes", "convpipe.limits", "convpipe.digest", "convpipe.version",
                 "convpipe.humanize", "convpipe.sysinfo", "convpipe.lazy_exports", "convpipe.heap",
                 "convpipe.roots", "convpipe.finite", "convpipe.kernels", "convpipe.tables", "convpipe.stats",
                 "convpipe.monitor", "convpipe.replace"]),
    # -- each op's parameters (pydantic), the op catalog
    ("params",  ["convpipe.params.*"]),
    # -- the pure spec: YAML with lines, error words, cluster form, named locations, the models; no file
    #    read but the spec, no dask or zarr
    ("spec",    ["convpipe.spec_yaml", "convpipe.spec_messages", "convpipe.spec_cluster", "convpipe.spec_locations",
                 "convpipe.spec_model"]),
    # -- the whole-array references: numpy, scipy, scikit-image only (INDEPENDENT below)
    ("oracles", ["convpipe.oracles.*"]),
    # -- what computes: the ops, their engines (dispatch on the array type), the exact halo runs, centring
    ("ops",     ["convpipe.engines.*", "convpipe.ops.*", "convpipe.tiles", "convpipe.centring"]),
    # -- reading what a spec names (kernel files, profiles) and binding steps to ops on the input's axes;
    #    convpipe.spec = parse + bind (load_spec), with every name of the spec layer; the JSON Schema document
    ("bind",    ["convpipe.profiles", "convpipe.bind", "convpipe.spec", "convpipe.schema_doc"]),
    # -- the plan: passes, tiles, costs and estimates, composite kernels, where each pass runs, channel names
    ("plan",    ["convpipe.tilechoice", "convpipe.composite", "convpipe.placement", "convpipe.estimate",
                 "convpipe.plan", "convpipe.display", "convpipe.channels"]),
    # -- storage: Zarr, OME-NGFF, TIFF, outputs, where locations are
    ("io",      ["convpipe.ome.*", "convpipe.locations", "convpipe.io", "convpipe.tiff", "convpipe.outputs"]),
    # -- a run: its phases and events, the dask graph, backends, clusters, resume; calibration runs pipelines
    ("run",     ["convpipe.backends", "convpipe.gpu", "convpipe.cluster", "convpipe.execute", "convpipe.resume",
                 "convpipe.apply_tables", "convpipe.run.*", "convpipe.calibrate"]),
    # -- the facade (convpipe itself is the package's __init__); the progress bar run(progress=True) draws
    ("api",     ["convpipe.api", "convpipe.progress", "convpipe"]),
    # -- tools built on the API
    ("tools",   ["convpipe.report.*", "convpipe.preview", "convpipe.verify.*", "convpipe.ingest",
                 "convpipe.kernelview", "convpipe.demo"]),
    # -- what users start: the command line (convpipe.cli, module or package), the job service and its client,
    # and the benchmark, which measures everything below it (the service's jobs/s included)
    ("entry",   ["convpipe.cli.*", "convpipe.__main__", "convpipe.service.*", "convpipe.client", "convpipe.bench.*"]),
]

#: Modules that must import nothing of convpipe: the whole-array references the results are checked against.
INDEPENDENT = ["convpipe.oracles.*"]

#: Importing these must not load dask or zarr (validate a spec without the array stack).
PURE = ["convpipe.spec", "convpipe.bind", "convpipe.params", "convpipe.schema_doc"]



# --------------------------------------------------------------------------- the import graph


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (p, is_pkg)
    return mods


MODULES = _modules()


def _type_checking_only(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If):
            t = n.test
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skip.update(id(d) for c in n.body for d in ast.walk(c))
    return skip


def _imports(mod: str, path: Path, is_pkg: bool) -> dict[str, int]:
    """``{module it imports: first line}`` for one module of convpipe."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_only(tree)
    parts = mod.split(".")
    own_ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
    out: dict[str, int] = {}

    def add(target: str, line: int, explicit: bool) -> None:
        tp = target.split(".")
        for i in range(1, len(tp) + 1):
            name = ".".join(tp[:i])
            if name not in MODULES or name == mod:
                continue
            implicit = i < len(tp) or not explicit
            if implicit and name in own_ancestors:
                continue  # Python imported the module's own packages before the module itself
            out.setdefault(name, line)

    for n in ast.walk(tree):
        if id(n) in skip:
            continue
        if isinstance(n, ast.Import):
            for a in n.names:
                if a.name.split(".")[0] == "convpipe":
                    add(a.name, n.lineno, explicit=False)
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - (n.level - 1)]
                pkg = ".".join(base + ([n.module] if n.module else []))
            else:
                pkg = n.module or ""
            if pkg.split(".")[0] != "convpipe":
                continue
            subs = [f"{pkg}.{a.name}" for a in n.names if f"{pkg}.{a.name}" in MODULES]
            for s in subs:
                add(s, n.lineno, explicit=False)
            if len(subs) < len(n.names):  # a name defined in pkg's __init__
                add(pkg, n.lineno, explicit=True)
    return out


GRAPH = {m: _imports(m, p, is_pkg) for m, (p, is_pkg) in MODULES.items()}


def _layer_of(mod: str) -> list[int]:
    return [i for i, (_, pats) in enumerate(LAYERS) for pat in pats
            if fnmatch.fnmatchcase(mod, pat) or (pat.endswith(".*") and mod == pat[:-2])]


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycle_path(comp: list[str], graph: dict[str, dict[str, int]]) -> str:
    """One cycle through the component, written as ``a (line) -> b (line) -> ... -> a``."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    queue = [start]
    while queue:  # breadth first from start, back to start
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                path.reverse()
                hops = [f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:] + [start])]
                return " -> ".join(hops + [start])
            if w not in prev and w != start:
                prev[w] = v
                queue.append(w)
    return " <-> ".join(comp)


# --------------------------------------------------------------------------- the tests


def test_the_graph_is_read():
    """The reader sees what is plainly there (so the checks below cannot pass on an empty graph)."""
    assert len(MODULES) > 100
    assert "convpipe.errors" in GRAPH["convpipe.spec_model"]
    assert "convpipe.params" in GRAPH["convpipe.spec_model"]  # from .params import catalog: the package's __init__
    assert "convpipe.ops.registry" in GRAPH["convpipe.bind"]  # a function-level import
    assert "convpipe.ome" not in GRAPH["convpipe.ome.read"]  # its own package: implicit
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(_cycle_path(c, GRAPH) for c in cycles)


def test_every_module_has_one_layer():
    problems = {m: [LAYERS[i][0] for i in _layer_of(m)] for m in MODULES if len(_layer_of(m)) != 1}
    assert not problems, f"each module needs exactly one row in LAYERS: {problems}"


def test_imports_go_down_the_layers():
    up = []
    for mod, deps in sorted(GRAPH.items()):
        mine = _layer_of(mod)
        for dep, line in sorted(deps.items()):
            theirs = _layer_of(dep)
            if len(mine) == 1 and len(theirs) == 1 and theirs[0] > mine[0]:
                up.append(f"{mod} ({LAYERS[mine[0]][0]}) imports {dep} ({LAYERS[theirs[0]][0]}) "
                          f"at line {line}")
    assert not up, "imports up the layers:\n" + "\n".join(up)


def test_oracles_import_nothing_of_convpipe():
    bad = {m: sorted(d for d in deps if not any(fnmatch.fnmatchcase(d, p) or d == p[:-2] for p in INDEPENDENT))
           for m, deps in GRAPH.items() if any(fnmatch.fnmatchcase(m, p) or m == p[:-2] for p in INDEPENDENT)}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"the oracles must stand alone: {bad}"


def _loaded_by(module: str, *, package_init: bool) -> str:
    """The heavy libraries ``import module`` loads in a fresh interpreter; without ``package_init`` the
    package's own ``__init__`` is not run (what the module itself needs)."""
    stub = ("" if package_init else
            "import types; pkg = types.ModuleType('convpipe'); pkg.__path__ = [%r]; sys.modules['convpipe'] = pkg\n"
            % str(ROOT))
    code = (f"import sys\n{stub}import {module}\n"
            "print(','.join(sorted(m for m in ('dask', 'zarr', 'distributed') if m in sys.modules)))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("module", PURE)
def test_spec_layers_load_neither_dask_nor_zarr(module):
    assert _loaded_by(module, package_init=False) == ""


def _eager_package() -> bool:
    """Whether convpipe/__init__.py imports its API at module level (then every import loads dask and zarr)."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    return any(isinstance(n, ast.ImportFrom) and n.level == 1 and n.module == "api" for n in tree.body)


@pytest.mark.xfail(_eager_package(), reason="convpipe/__init__.py imports the API eagerly (PEP 562 laziness: "
                                            "the cli change)", strict=True)
@pytest.mark.parametrize("module", PURE)
def test_importing_the_spec_through_the_package_loads_neither_dask_nor_zarr(module):
    assert _loaded_by(module, package_init=True) == ""


def test_one_version():
    import tomllib

    import convpipe
    from convpipe.version import __version__

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert convpipe.__version__ == __version__ == project["version"]


def test_the_readme_draws_these_layers():
    text = (ROOT.parent / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Architecture"):]
    drawn = [line.split()[0] for line in section.split("```")[1].strip().splitlines() if line[:1].isalpha()]
    assert drawn == [name for name, _ in reversed(LAYERS)]
