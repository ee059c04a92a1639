"""Fuzzing the spec loader: whatever a spec holds (random structures, types, op names, axes, nested junk, YAML
text), ``convpipe.spec.load_spec`` / ``load_spec_text`` either succeed or raise a ``SpecError`` with a
non-empty path: never another exception, never a crash, never code evaluated.

The strategies mix three sources: structured near-valid specs (real op names and parameter names, junk
values), free-form nested junk, and YAML text (dumped junk, mutated valid specs, raw text). Inputs that
once crashed the loader (alias bombs, recursive aliases, unhashable keys, named-kernel parameters that
divide by zero or allocate gigabytes) are kept as explicit regressions at the end.
"""

from __future__ import annotations

import math
import os
import string

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from convpipe.errors import SpecError, SpecErrors
from convpipe.spec import Spec, load_spec, load_spec_text

# ~200 examples over the three fuzz tests by default; CONVPIPE_FUZZ_EXAMPLES=N for a long hunt
_N = int(os.environ.get("CONVPIPE_FUZZ_EXAMPLES", "80"))
FUZZ = settings(max_examples=_N, deadline=None, suppress_health_check=list(HealthCheck))


def _op_names() -> list[str]:
    from convpipe.ops import registry

    return registry.names()


def _param_names() -> dict[str, list[str]]:
    from convpipe.ops import registry

    return {n: list(registry.get(n).Params.model_fields) for n in registry.names()}


OPS = _op_names()
PARAMS = _param_names()
ALL_PARAMS = sorted({p for ps in PARAMS.values() for p in ps})

# --------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, -1, 0.5, 1e-300, 1e300, "", "auto", "yx", "zyx", "q", "xx", "tczyx", "float32",
                     "uint8", "object", "reflect", "wrap", "nope", "nan", "inf", "a.npy", "/", ".", "..",
                     "!!python/object:os.system", "${HOME}", "gaussian", "box"]),
    st.text(alphabet=string.printable, max_size=12),
)
keys = st.one_of(st.text(alphabet=string.ascii_letters + "_.[]-", max_size=10),
                 st.sampled_from(["convpipe", "input", "output", "steps", "execution", "url", "axes", "name",
                                  *ALL_PARAMS]),
                 st.integers(-2, 5), st.booleans(), st.none(), st.floats(allow_nan=False))
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(keys, inner, max_size=4)), max_leaves=12)

# named kernels: parameters within ranges that the loader can build cheaply (the huge ones are regressions below)
safe_named_kernel = st.fixed_dictionaries(
    {"name": st.sampled_from(["gaussian", "box", "sobel", "prewitt", "scharr", "laplace", "log", "gabor",
                              "sharpen", "emboss", "disk", "nope", "Gaussian"])},
    optional={"sigma": st.one_of(st.floats(0.1, 4), st.sampled_from([-1, "x", None])),
              "size": st.one_of(st.integers(1, 9), st.sampled_from([-1, "3", 2.5, None])),
              "radius": st.one_of(st.integers(0, 6), st.sampled_from([-2, "x", None])),
              "ndim": st.integers(1, 3),
              "axis": st.sampled_from(["x", "y", "z", 0, 1, 5, "q", None]),
              "truncate": st.floats(0.5, 4),
              "frequency": st.floats(0.05, 0.5), "theta": st.floats(-4, 4),
              "bogus": scalars})
kernels = st.one_of(
    safe_named_kernel,
    st.lists(st.lists(st.one_of(st.floats(-5, 5), scalars), min_size=0, max_size=4), min_size=0, max_size=4),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
    scalars,
)
axes_strings = st.one_of(st.text(alphabet="tczyxq ", max_size=6), st.sampled_from(["yx", "zyx", "x", "c", "tczyx"]))


@st.composite
def params_for(draw, op: str):
    names = PARAMS.get(op, [])
    out = {}
    for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))) if names else []:
        if name == "kernel" or name == "template":
            out[name] = draw(kernels)
        elif name == "kernels":
            out[name] = draw(st.lists(kernels, max_size=3))
        elif name in ("axes", "axis"):
            out[name] = draw(st.one_of(axes_strings, scalars))
        elif name in ("sigma", "size", "low_sigma", "high_sigma", "radius", "order", "window"):
            out[name] = draw(st.one_of(st.floats(0, 5), st.integers(-1, 9),
                                       st.dictionaries(st.sampled_from(list("tczyxq")), st.floats(-1, 5),
                                                       max_size=3),
                                       scalars))
        elif name == "steps":  # diffusion: keep the expansion small
            out[name] = draw(st.one_of(st.integers(-2, 20), scalars.filter(
                lambda v: not (isinstance(v, int) and not isinstance(v, bool) and abs(v) > 20))))
        else:
            out[name] = draw(junk)
    if draw(st.booleans()):
        out[draw(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8))] = draw(scalars)
    return out


@st.composite
def step(draw):
    kind = draw(st.integers(0, 9))
    if kind <= 6:
        op = draw(st.sampled_from(OPS))
        return {op: draw(params_for(op))}
    if kind == 7:  # a typo, a bare string, or an op with non-mapping parameters
        op = draw(st.sampled_from(OPS))
        return draw(st.sampled_from([{op[:-1] or "x": {}}, op, {op: draw(scalars)}, {op: [1, 2]}]))
    return draw(junk)


def _steps_safe(steps: list) -> bool:
    """Keep diffusion's step expansion and similar size knobs small (a sizing limit is not the point here)."""
    for s in steps:
        if isinstance(s, dict) and isinstance(s.get("diffusion"), dict):
            v = s["diffusion"].get("steps")
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) > 50:
                return False
    return True


@st.composite
def near_valid_spec(draw):
    spec: dict = {"convpipe": 1, "name": "fuzz", "input": {"url": "in.zarr"},
                  "steps": draw(st.lists(step(), min_size=0, max_size=4).filter(_steps_safe))}
    if draw(st.booleans()):
        spec["input"]["axes"] = draw(st.one_of(axes_strings, scalars))
    if draw(st.booleans()):
        spec["output"] = draw(st.one_of(
            st.fixed_dictionaries({"url": st.just("out.zarr")},
                                  optional={"dtype": st.one_of(st.sampled_from(["float32", "uint8", "int64",
                                                                                 "complex64", "U3", "bool"]),
                                                               scalars),
                                            "chunks": st.one_of(st.lists(st.integers(-2, 64), max_size=4),
                                                                st.dictionaries(st.sampled_from(list("zyxq")),
                                                                                st.integers(-1, 64)), scalars),
                                            "zarr_format": st.one_of(st.sampled_from([2, 3, 4]), scalars),
                                            "pyramid": st.one_of(st.integers(-1, 20), scalars),
                                            "overwrite": scalars}),
            junk))
    if draw(st.booleans()):
        spec["execution"] = draw(st.one_of(
            st.fixed_dictionaries({}, optional={
                "backend": st.one_of(st.sampled_from(["cpu", "gpu", "auto", "tpu"]), scalars),
                "cluster": st.one_of(st.sampled_from(["threads", "local:2", "local:x", "tcp://", "profile:../x"]),
                                     scalars),
                "tile": st.one_of(st.just("auto"), st.lists(st.integers(-1, 99), max_size=4),
                                  st.dictionaries(st.sampled_from(list("zyxq")), st.integers(-1, 64)), scalars),
                "precision": st.one_of(st.sampled_from(["float32", "float64", "float16"]), scalars),
                "memory_limit": st.one_of(st.sampled_from(["4GiB", "lots", "-1", "0"]), scalars)}),
            junk))
    # mutate: drop or replace a few top-level entries with junk
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(["convpipe", "name", "input", "output", "steps", "execution", "extra"]))
        if draw(st.booleans()):
            spec.pop(key, None)
        else:
            spec[key] = draw(junk)
    return spec


# True kept the inputs of then-open loader bugs out of the random draws; they are fixed, so draw them too.
KNOWN_BUGS_OPEN = False
_UNION_TAG_NAMES = {"float", "int", "str", "bool", "list", "dict", "literal['auto']", "function-after"}


def _bad_key(k) -> bool:
    return isinstance(k, str) and (k in _UNION_TAG_NAMES or "[" in k)


def _dict_ok(data, depth: int = 0) -> bool:
    if not KNOWN_BUGS_OPEN:
        return True
    if depth > 50:
        return False
    if isinstance(data, dict):
        if isinstance(data.get("dtype"), str) and "," in data["dtype"]:
            return False  # numpy's dtype parser raises SyntaxError (pinned below)
        return all(not _bad_key(k) and _dict_ok(v, depth + 1) for k, v in data.items())
    if isinstance(data, list):
        return all(_dict_ok(v, depth + 1) for v in data)
    return True


def _text_ok(text: str) -> bool:
    """False for YAML text with aliases, complex keys, type-like keys or deep nesting (the open bugs)."""
    if not KNOWN_BUGS_OPEN:
        return True
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return True  # the loader reports unparsable YAML as a SpecError itself
    seen: set[int] = set()
    stack = [(node, 0)] if node is not None else []
    while stack:
        n, depth = stack.pop()
        if id(n) in seen or depth > 50:
            return False  # an alias to a collection, or deep nesting
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)):
            seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode) or "[" in k.value or k.value in _UNION_TAG_NAMES:
                    return False
                if k.value == "dtype" and isinstance(v, yaml.ScalarNode) and "," in v.value:
                    return False
                stack.append((v, depth + 1))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend((c, depth + 1) for c in n.value)
    return True


def _check(load, arg) -> None:
    try:
        res = load(arg)
    except SpecErrors as e:
        assert e.errors, "SpecErrors without errors"
        for err in e.errors:
            assert isinstance(err, SpecError) and err.path, f"SpecError without a path: {err!r}"
            assert err.message
        assert str(e)
    except SpecError as e:
        assert e.path, f"SpecError without a path: {e!r}"
        assert e.message and str(e)
    else:
        assert isinstance(res, Spec)
        res.canonical()  # a loaded spec can be hashed and written into provenance
        res.hash()


# --------------------------------------------------------------------------- the fuzz tests


@FUZZ
@given(near_valid_spec())
def test_near_valid_dict_specs(spec):
    assume(_dict_ok(spec))
    _check(load_spec, spec)


@FUZZ
@given(st.one_of(junk, st.dictionaries(keys, junk, max_size=6)))
def test_junk_dict_specs(data):
    assume(_dict_ok(data))
    if not isinstance(data, dict):
        return _check(lambda d: load_spec_text(yaml.safe_dump(d)), data)
    _check(load_spec, data)


def _yaml(spec) -> str:
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)


@settings(max_examples=max(1, _N // 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(near_valid_spec(), st.data())
def test_yaml_text_specs(spec, data):
    text = _yaml(spec)
    how = data.draw(st.integers(0, 3))
    if how == 1:  # splice random characters into the text
        i = data.draw(st.integers(0, len(text)))
        text = text[:i] + data.draw(st.text(alphabet=string.printable + "\t\x00\u2028é", max_size=8)) + text[i:]
    elif how == 2:  # cut it
        text = text[: data.draw(st.integers(0, len(text)))]
    elif how == 3:  # raw text
        text = data.draw(st.text(max_size=60))
    assume(_dict_ok(spec) and _text_ok(text))
    _check(load_spec_text, text)


# --------------------------------------------------------------------------- pinned cases


@pytest.mark.parametrize("text", [
    "", "null", "[]", "convpipe: 1", "convpipe: 2\ninput: {url: a}\nsteps: [abs]",
    "convpipe: 1\ninput: {url: a}\nsteps: [abs]\nsteps: [sqrt]",            # duplicate key
    "convpipe: 1\ninput: !!python/object/apply:os.system ['true']\nsteps: [abs]",  # code in YAML
    "convpipe: 1\ninput: {url: a}\nsteps: [{gaussian: {sigma: .nan}}]",
    "convpipe: 1\ninput: {url: a}\nsteps: [{gaussian: {sigma: {q: 1}}}]",
    "convpipe: 1\ninput: {url: a}\nsteps: [{1: {}}]",
    "convpipe: 1\ninput: {url: a}\nsteps: [{null: {}}]",
    "convpipe: 1\ninput: {url: a}\nsteps: [{correlate: {kernel: [[1, 2], [3]]}}]",
    "convpipe: 1\ninput: {url: a}\nsteps: [{correlate: {kernel: !!binary aGVsbG8=}}]",
    "convpipe: 1\ninput: {url: a}\nsteps: [{correlate: {kernel: 1e400}}]",
    "convpipe: 1\ninput: {url: a}\nsteps: [{diffusion: {steps: 1e9, dt: 0.1}}]",
    "convpipe: 1\ninput: {url: a}\nsteps: [{astype: {dtype: 'V8'}}]",
    "convpipe: 1\ninput: {url: a, axes: zz}\nsteps: [abs]",
    "convpipe: 1\ninput: {url: a}\noutput: {url: b, chunks: [0]}\nsteps: [abs]",
    "convpipe: 1\ninput: {url: a}\nexecution: {tile: [1e99]}\nsteps: [abs]",
    "convpipe: 1\ninput: {url: a, storage_options: &s {a: *s}}\nsteps: [abs]",  # recursive alias (mapping)
    "convpipe: 1\n" + "x: " + "[" * 200 + "]" * 200,                            # nesting
    "convpipe: 1\ninput: {url: a}\nsteps: [gaussian: {sigma: 1}]\nsigma: &s 1\nsize: *s",  # plain aliases
])
def test_pinned_texts(text):
    _check(load_spec_text, text)


@pytest.mark.parametrize("text", [
    pytest.param("convpipe: 1\ninput: {url: a}\nsteps: [{? [a, b] : {}}]", id="complex-key-TypeError"),
    pytest.param("convpipe: 1\ninput: {url: a}\nsteps: [abs]\nint: 3", id="key-named-int-IndexError"),
    pytest.param("convpipe: 1\ni[nput: {url: a}\nsteps: [abs]", id="key-with-bracket-IndexError"),
    pytest.param("&a [*a]", id="recursive-alias-RecursionError"),
    pytest.param("a: &x [*x, *x]\nconvpipe: 1", id="recursive-alias-in-mapping-RecursionError"),
    pytest.param("convpipe: 1\ninput: {url: a}\nsteps: [{correlate: {kernel: &k [*k]}}]",
                 id="recursive-kernel-RecursionError"),
    pytest.param("convpipe: 1\nx: " + "[" * 3000 + "]" * 3000, id="deep-nesting-RecursionError"),
    pytest.param("convpipe: 1\ninput: {url: a}\noutput: {url: b, dtype: ','}\nsteps: [abs]",
                 id="dtype-comma-SyntaxError"),
    pytest.param("convpipe: 1\ninput: {url: a}\nsteps: [{astype: {dtype: ','}}]", id="astype-comma-SyntaxError"),
])
def test_known_loader_crashes(text):
    _check(load_spec_text, text)


def test_unknown_parameter_named_like_a_type_is_named():
    with pytest.raises(SpecError) as e:
        load_spec_text("convpipe: 1\ninput: {url: a}\nsteps: [{gaussian: {sigma: 1, 'dict[x]': 2}}]")
    assert "dict[x]" in str(e.value)


def _billion_laughs(levels: int) -> str:
    lines = ["convpipe: 1", "input: {url: a}", "steps: [abs]", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines)


@pytest.mark.timeout(60)
def test_alias_expansion_is_bounded():
    import signal

    def _alarm(*_):
        raise TimeoutError("load_spec_text took more than 2 s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(2)
    try:
        _check(load_spec_text, _billion_laughs(8))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


KERNEL_CRASHES = [
    pytest.param({"name": "box", "size": 0}, id="box-size-0-ZeroDivisionError"),
    pytest.param({"name": "gabor", "frequency": 0}, id="gabor-frequency-0-ZeroDivisionError"),
    pytest.param({"name": ["box"]}, id="unhashable-name-TypeError"),
    pytest.param({"name": "box", "size": 10**6, "ndim": 3}, id="box-huge-MemoryError"),
    pytest.param({"name": "gaussian", "sigma": 1e6}, id="gaussian-huge-MemoryError"),
    pytest.param({"name": "disk", "radius": 10**5}, id="disk-huge-MemoryError"),
]


@pytest.mark.parametrize("kernel", KERNEL_CRASHES)
def test_named_kernel_parameters_are_spec_errors(kernel):
    _check(load_spec, {"convpipe": 1, "input": {"url": "a"}, "steps": [{"correlate": {"kernel": kernel}}]})


# =========================================================================== paths, aliases, absurd values
#
# Issue 13's classes: whatever numbers, paths and YAML structure a spec holds, ``validate`` answers in seconds
# with "valid" or one error line per mistake, and ``run`` never deletes or changes its input and never says
# "done" for a wrong result. Each case runs under a CPU-time deadline (SIGPROF: load on the machine does not
# count), so a hang fails the case instead of the suite. ``-m slow`` runs ten times the cases.

import contextlib  # noqa: E402
import hashlib  # noqa: E402
import signal  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

_SLOW_N = 10 * _N
CASE_CPU_SECONDS = 20.0  # validate takes milliseconds; a run of a 16 x 16 input well under a second


@contextlib.contextmanager
def cpu_deadline(seconds: float = CASE_CPU_SECONDS):
    """Raise TimeoutError in the main thread once the process has used ``seconds`` of CPU time."""
    def _fire(*_):
        raise TimeoutError(f"a case used more than {seconds} s of CPU time (a hang)")

    old = signal.signal(signal.SIGPROF, _fire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


ABSURD_NUMBERS = [1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324, float("inf"), float("-inf"),
                  float("nan"), -0.0, 0, -1, -7, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63), 10**30, 10**400,
                  1e9, 1e12, 1e30, 0.5, 1e-300, True, False, "1e9", ".inf", "nan", "-0", "0x10", "1_000"]
absurd_number = st.one_of(st.sampled_from(ABSURD_NUMBERS), st.integers(min_value=2**20, max_value=2**300),
                          st.integers(max_value=-1, min_value=-(2**70)), st.floats(min_value=1e6))
absurd_value = st.one_of(absurd_number, st.dictionaries(st.sampled_from(list("tzyxc")), absurd_number, max_size=3),
                         st.lists(absurd_number, max_size=4))

PATH_FORMS = ["in.zarr", "./in.zarr", "sub/../in.zarr", "{root}/in.zarr", "file://{root}/in.zarr",
              "file://{root}/sub/../in.zarr", "link/in.zarr", "{root}/link/in.zarr", "in.zarr/", "in.zarr/c",
              "in.zarr/0", ".", "..", "{root}", "/", "", " ", "~", "~/x.zarr", "a\x00b", "in.zarr\n",
              "memory://x.zarr", "s3://bucket/x.zarr", "simplecache::file://{root}/in.zarr", "http://127.0.0.1:1/x",
              "x" * 5000, "é/ü.zarr", "img.tif", "img.TIFF", "k.npy", "missing.zarr", "../outside.zarr"]
KERNEL_FORMS = ["k.npy", "./k.npy", "sub/../k.npy", "{root}/k.npy", "link/k.npy", "missing.npy", "obj.npy",
                "trunc.npy", "huge.npy", "dir.npy", "text.npy", "k.txt", "", "..", "/dev/zero.npy",
                "file://{root}/k.npy", "s3://bucket/k.npy", "k.npy\x00", "~/k.npy"]


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    """A folder with a small input, a symlinked folder onto itself, and kernel files good and bad."""
    import zarr

    root = tmp_path_factory.mktemp("fuzzroot")
    a = zarr.create_array(str(root / "in.zarr"), shape=(16, 16), chunks=(8, 8), dtype="float32")
    a[:] = np.random.default_rng(7).random((16, 16)).astype("float32")
    (root / "sub").mkdir()
    (root / "link").symlink_to(root)
    np.save(root / "k.npy", np.full((3, 3), 1 / 9))
    np.save(root / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (root / "trunc.npy").write_bytes((root / "k.npy").read_bytes()[:90])
    with open(root / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    (root / "dir.npy").mkdir()
    (root / "text.npy").write_text("not numpy")
    (root / "k.txt").write_text("1 2 3")
    return root


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _fill(form: str, root: Path) -> str:
    return form.replace("{root}", str(root))


@st.composite
def absurd_spec(draw):
    """A near-valid spec whose numeric parameters take absurd values (1e308, inf, nan, -0, huge ints, ...)."""
    spec = draw(near_valid_spec())
    if not isinstance(spec.get("steps"), list):
        spec["steps"] = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(OPS))
        names = PARAMS.get(op, [])
        params = {}
        for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=3)) if names else []:
            params[name] = draw(absurd_value)
        spec["steps"].append({op: params})
    return spec


@st.composite
def path_spec(draw, root: Path):
    """A spec whose input, output, table, kernel, template and profile locations take every form of path."""
    where = draw(st.sampled_from(["input", "output", "table", "kernel", "kernels", "template", "profile", "all"]))
    form = lambda forms: _fill(draw(st.sampled_from(forms)), root)  # noqa: E731
    spec: dict = {"convpipe": 1, "input": {"url": "in.zarr"}, "output": {"url": "out.zarr"}, "steps": [{"abs": {}}]}
    if draw(st.booleans()):
        spec["input"] = spec["input"]["url"]  # the shorthand
    if where in ("input", "all"):
        spec["input"] = {"url": form(PATH_FORMS)}
    if where in ("output", "all"):
        spec["output"] = draw(st.sampled_from([{"url": form(PATH_FORMS)}, form(PATH_FORMS)]))
    if where in ("table", "all"):
        op = draw(st.sampled_from(["peaks", "stats", "blobs"]))
        spec["steps"].append({op: {"table": form(PATH_FORMS), **({"radius": 1} if op == "peaks" else {})}})
    if where in ("kernel", "all"):
        spec["steps"].append({draw(st.sampled_from(["correlate", "convolve", "stochastic"])):
                              {"kernel": form(KERNEL_FORMS)}})
    if where in ("kernels", "all"):
        spec["steps"].append({"filter_bank": {"kernels": [form(KERNEL_FORMS), [[1.0]], form(KERNEL_FORMS)]}})
    if where in ("template", "all"):
        spec["steps"].append({"match_template": {"template": form(KERNEL_FORMS)}})
    if where in ("profile", "all"):
        spec["execution"] = {"cluster": "profile:" + form(PATH_FORMS + ["p.yaml", "{root}/k.npy"])}
    return spec


_ALIAS_TEXTS = [
    # anchors and aliases in every position; merge keys; an alias of the whole steps list; of a kernel
    "convpipe: 1\ninput: &i {{url: {inp}}}\noutput: {{<<: *i, url: out.zarr}}\nsteps: [abs]\n",
    "convpipe: 1\ninput: {{url: &u {inp}}}\noutput: {{url: *u, overwrite: true}}\nsteps: [abs]\n",
    "convpipe: 1\ninput: {{url: {inp}}}\nsteps: &s [abs, {{gaussian: {{sigma: &n {num}}}}}, {{uniform: {{size: *n}}}}]\n",
    "convpipe: 1\ninput: {{url: {inp}}}\nsteps:\n  - gaussian: &g {{sigma: {num}}}\n  - gaussian: {{<<: *g, truncate: {num}}}\n",
    "convpipe: 1\ninput: {{url: {inp}}}\nsteps: [{{correlate: {{kernel: &k [[{num}, 1], [1, 1]]}}}}, {{filter_bank: {{kernels: [*k, *k]}}}}]\n",
    "convpipe: 1\ninput: {{url: {inp}}}\nx: &x [{num}, {num}]\nsteps: [{{gaussian: {{sigma: *x}}}}]\n",
    "convpipe: 1\ninput: {{url: {inp}}}\nsteps: [{{gaussian: &self {{sigma: 1, axes: *self}}}}]\n",
    "convpipe: 1\ninput: {{url: {inp}}}\nsteps: [{{<<: {{gaussian: {{sigma: {num}}}}}}}]\n",
    "convpipe: 1\ninput: {{url: {inp}}}\nexecution: &e {{tile: [{num}, {num}]}}\nsteps: [abs]\nx: *e\n",
]


def _check_fast(load, arg) -> None:
    with cpu_deadline():
        _check(load, arg)


def _yaml_number(v) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ".nan"
    if isinstance(v, float) and math.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _absurd_specs(spec):
    _check_fast(load_spec, spec)
    _check_fast(load_spec_text, _yaml(spec) if _json_safe(spec) else "convpipe: 1\n")


def _json_safe(spec) -> bool:
    try:
        yaml.safe_dump(spec)
        return True
    except (yaml.YAMLError, OverflowError, ValueError):
        return False


@FUZZ
@given(absurd_spec())
def test_absurd_values(spec):
    _absurd_specs(spec)


@pytest.mark.slow
@settings(max_examples=_SLOW_N, deadline=None, suppress_health_check=list(HealthCheck))
@given(absurd_spec())
def test_absurd_values_long(spec):
    _absurd_specs(spec)


def _paths(fuzz_root, data):
    spec = data.draw(path_spec(fuzz_root))
    with cpu_deadline():
        try:
            res = load_spec(spec) if data.draw(st.booleans()) else load_spec_text(_yaml(spec), base_dir=fuzz_root)
        except SpecError as e:
            event("refused")
            for err in (e.errors if isinstance(e, SpecErrors) else [e]):
                assert err.path and err.message and "Traceback" not in err.message
        else:
            event("valid")
            assert isinstance(res, Spec)
            for loc in res.locations():  # every location it names is listed, with its YAML path
                assert loc.field and loc.resolved is not None


@FUZZ
@given(st.data())
def test_path_forms(fuzz_root, data):
    os.chdir(fuzz_root)  # dict specs resolve against the working directory
    _paths(fuzz_root, data)


@pytest.mark.slow
@settings(max_examples=_SLOW_N, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_path_forms_long(fuzz_root, data):
    os.chdir(fuzz_root)
    _paths(fuzz_root, data)


def _aliases(data):
    text = data.draw(st.sampled_from(_ALIAS_TEXTS)).format(
        inp=data.draw(st.sampled_from(["in.zarr", "'file:///x/in.zarr'", "a.tif", "''"])),
        num=_yaml_number(data.draw(st.one_of(st.sampled_from(ABSURD_NUMBERS[:24]), st.integers(0, 9)))))
    _check_fast(load_spec_text, text)


@FUZZ
@given(st.data())
def test_yaml_aliases(data):
    _aliases(data)


@pytest.mark.slow
@settings(max_examples=_SLOW_N, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_yaml_aliases_long(data):
    _aliases(data)


@pytest.mark.parametrize("text", [
    "convpipe: 1\ninput: {url: a}\nsteps: [" + ",".join(["abs"] * 1001) + "]\n",                # too many steps
    "convpipe: 1\ninput: {url: a}\nsteps: [" + ",".join(["{diffusion: {steps: 10000, dt: 0.1}}"] * 3) + "]\n",
    "convpipe: 1\ninput: {url: a}\nsteps: [{correlate: {kernel: [" + ",".join(["1"] * 99_000) + "]}}]\n",
    "convpipe: 1\ninput: {url: a}\nsteps: [{correlate: {kernel: [" + ",".join(["[1]"] * 49_000) + "]}}]\n",
    "convpipe: 1\ninput: {url: a}\nsteps: [{filter_bank: {kernels: [" + ",".join(["[[1]]"] * 2000) + "]}}]\n",
    "convpipe: 1\ninput: {url: a}\nsteps: [{autoregressive: {axis: y, coefficients: [" + ",".join(["0.1"] * 70_000) + "]}}]\n",
    "convpipe: 1\ninput: {url: a}\nsteps: [abs]\nx: [" + ",".join(["0"] * 300_000) + "]\n",          # > node limit
    "convpipe: 1\ninput: {url: a}\nsteps: [abs]\n# " + "x" * (2 << 20) + "\n",                     # > byte limit
    "convpipe: 1\ninput: {url: a}\nsteps: [{stats: {spectral_bands: [" + ",".join(map(str, range(50_000))) + "]}}]\n",
    "convpipe: 1\ninput: {url: a}\nsteps: [{blobs: {exclude_border: [" + ",".join(["1"] * 50_000) + "]}}]\n",
], ids=["1001-steps", "30000-diffusion-steps", "99000-taps", "49000x1-kernel", "2000-kernels",
        "70000-coefficients", "300000-values", "2MiB", "50000-bands", "50000-borders"])
def test_huge_lists(text):
    _check_fast(load_spec_text, text)


# --------------------------------------------------------------------------- through the CLI, with data

# Classes of issue 13 not yet fixed where this suite runs: their cases are not drawn. Empty: an output that is
# the input by another name (item 1) is refused with the input untouched, and the cases below cover it.
OPEN_ELSEWHERE: set[str] = set()

RUN_STEPS = [
    {"gaussian": {"sigma": 1}}, {"gaussian": {"sigma": {"y": 0.5, "x": 2}, "mode": "wrap"}},
    {"uniform": {"size": 3}}, {"median": {"size": 3, "mode": "nearest"}}, {"maximum": {"size": {"y": 3, "x": 5}}},
    {"sobel": {}}, {"laplace": {"mode": "mirror"}}, {"abs": {}}, {"scale": {"factor": 2.0, "offset": -1.0}},
    {"clip": {"min": 0.2, "max": 0.8}}, {"correlate": {"kernel": "k.npy"}}, {"correlate": {"kernel": "link/k.npy"}},
    {"convolve": {"kernel": [[0, 1, 0], [1, -4, 1], [0, 1, 0]], "mode": "constant", "cval": 0.5}},
    {"gaussian": {"sigma": 1e300}}, {"uniform": {"size": 1e9}}, {"gaussian": {"sigma": 2000}},
    {"median": {"size": -3}}, {"gaussian": {"sigma": float("nan")}}, {"correlate": {"kernel": "huge.npy"}},
    {"gaussian_filter": {"sigma": 1}}, {"gaussian": {"sigma": 1, "mode": "bounce"}},
]


def _aliases_input(out: str, root: Path) -> bool:
    """Whether an output location is the input, lies inside it or contains it (by any name)."""
    if "://" in out and not out.startswith("file://"):
        return False
    p = out.removeprefix("file://")
    real = Path(os.path.realpath(p if os.path.isabs(p) else root / p))
    inp = Path(os.path.realpath(root / "in.zarr"))
    return real == inp or real.is_relative_to(inp) or inp.is_relative_to(real)


def _cli_case(fuzz_root: Path, data, capsys) -> None:
    import zarr
    from convpipe.oracles import assert_conforms, oracle

    from convpipe.cli import main

    root = fuzz_root
    good, bad = st.sampled_from(RUN_STEPS[:13]), st.sampled_from(RUN_STEPS[13:])
    steps = data.draw(st.lists(st.one_of(good, good, good, bad), min_size=1, max_size=3))
    good_in = st.sampled_from(["in.zarr", "{root}/in.zarr", "file://{root}/in.zarr", "link/in.zarr", "sub/../in.zarr"])
    inp = _fill(data.draw(st.one_of(good_in, good_in, st.sampled_from(["missing.zarr", "img.tif", "in.zarr/c"]))),
                root)
    fresh_out = st.sampled_from(["out.zarr", "{root}/out2.zarr", "file://{root}/out3.zarr", "sub/out.zarr",
                                 "link/out4.zarr"])
    alias_out = st.sampled_from(["in.zarr", "{root}/in.zarr", "file://{root}/in.zarr", "link/in.zarr", "in.zarr/c",
                                 "in.zarr/0", ".", "{root}", "sub/..", "link"])
    out = _fill(data.draw(st.one_of(fresh_out, fresh_out, alias_out)), root)
    overwrite = data.draw(st.booleans())
    if "output-aliases-input" in OPEN_ELSEWHERE and overwrite and _aliases_input(out, root):
        overwrite = False
    if "output-aliases-input" in OPEN_ELSEWHERE and _aliases_input(out, root) and out.rstrip("/").endswith(("/c", "/0")):
        out = "out.zarr"  # zarr writes an output nested in the input's folder without asking: item 1 refuses it
    spec = {"convpipe": 1, "input": inp, "output": {"url": out, "overwrite": overwrite}, "steps": steps}
    (root / "case.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    before = _tree_digest(root / "in.zarr")
    out_path = Path(os.path.realpath(out.removeprefix("file://") if os.path.isabs(out.removeprefix("file://"))
                                     else root / out))
    fresh = not out_path.exists()
    capsys.readouterr()
    with cpu_deadline(120):
        rc = main(["run", str(root / "case.yaml")])
    stdout, stderr = capsys.readouterr()
    assert "Traceback" not in stderr + stdout
    assert _tree_digest(root / "in.zarr") == before, f"the input changed: {spec}"
    event(f"run exit {rc}")
    if rc == 0:
        assert "\ndone: " in "\n" + stdout, stdout
        got = zarr.open_array(str(out_path), mode="r")
        assert got.attrs["convpipe"]["complete"] is True
        x = zarr.open_array(str(root / "in.zarr"), mode="r")[...]
        ref, _ = oracle([json_steps for json_steps in yaml.safe_load(yaml.safe_dump(steps))], x, "yx", base_dir=root)
        assert_conforms(got[...], ref, "float32", what=f"done, but {spec}")
    else:
        assert rc in (1, 2), (rc, stderr)
        errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
        assert errors and "done:" not in stdout, stderr
        if fresh:
            assert not out_path.exists() or rc == 2, f"exit {rc} left an output behind: {spec}"
    import shutil

    for name in ("out.zarr", "out2.zarr", "out3.zarr", "out4.zarr", "sub/out.zarr"):
        shutil.rmtree(root / name, ignore_errors=True)


@settings(max_examples=max(4, _N // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_cli_runs_never_lose_the_input_nor_say_done_wrongly(fuzz_root, capsys, data):
    _cli_case(fuzz_root, data, capsys)


@pytest.mark.slow
@settings(max_examples=_SLOW_N // 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_cli_runs_never_lose_the_input_nor_say_done_wrongly_long(fuzz_root, capsys, data):
    _cli_case(fuzz_root, data, capsys)
