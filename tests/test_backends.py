"""The backend layer without a GPU: backend choice and its errors, CuPy never imported on the CPU path,
placement of passes and their dask annotations, the warm-up plan, and the GPU code itself run against a
CuPy test double.

The double (``FakeCupy``) keeps arrays in host memory but refuses what CuPy refuses (checked against
CuPy's sources): numpy arrays mixed into ufuncs, including 0-d ones; implicit conversion to numpy
(``np.asarray(device_array)``); numpy functions CuPy lacks; ``flags.writeable``; numpy arrays as
``cupyx.scipy.ndimage`` inputs or weights. Its kernels are scipy's, so it proves the wiring (dispatch,
transfers, meta, warm-up), not CuPy's numerics: tests/test_gpu.py does that on a real device.
"""

from __future__ import annotations

import importlib.machinery
import inspect
import json
import os
import subprocess
import sys
import textwrap
import threading
import types
from typing import ClassVar

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage as ndi
import scipy.signal

import convpipe
from convpipe import backends, engines, gpu
from convpipe.bench.gpu import bench_gpu
from convpipe.errors import BackendError
from convpipe.plan import ArrayInfo, make_plan
from convpipe.spec import load_spec

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")

# Every op with a GPU path, with parameters that exercise it; ``modes`` says whether it takes ``mode``.
OP_CASES: list[tuple[str, dict, bool]] = [
    ("gaussian", {"sigma": 1.5}, True),
    ("gaussian", {"sigma": {"y": 1.0, "x": 2.0}, "order": {"y": 1, "x": 0}}, True),
    ("gaussian_laplace", {"sigma": 1.2}, True),
    ("gaussian_gradient_magnitude", {"sigma": 1.2}, True),
    ("difference_of_gaussians", {"low_sigma": 1.0, "high_sigma": 2.0}, True),
    ("unsharp_mask", {"radius": 1.5, "amount": 0.7}, False),
    ("uniform", {"size": 4}, True),
    ("median", {"size": 3}, True),
    ("minimum", {"size": {"y": 3, "x": 4}}, True),
    ("maximum", {"size": 5}, True),
    ("sobel", {}, True),
    ("sobel", {"output": "components"}, False),
    ("sobel", {"output": "orientation"}, False),
    ("prewitt", {}, True),
    ("scharr", {}, True),
    ("laplace", {}, True),
    ("correlate", {"kernel": [[1, 2, 0], [0, 1, -1], [2, 0, 1]], "method": "direct"}, True),
    ("correlate", {"kernel": [[1, 2, 1], [2, 4, 2], [1, 2, 1]], "normalize": "sum"}, True),
    ("correlate", {"kernel": [[1, 0, 2, 0], [0, 3, 0, 1], [1, 1, 0, 2]], "method": "fft"}, True),
    ("convolve", {"kernel": [[0, 1, 0], [1, -4, 1], [0, 1, 0]], "origin": [0, 1]}, True),
    ("diffusion", {"diffusivity": 0.5, "time": 1.0}, True),
    ("diffusion", {"steps": 3, "dt": 0.2}, True),
    ("scale", {"factor": 0.5, "offset": 1.0}, False),
    ("clip", {"min": 10.0, "max": 2000.0}, False),
    ("clip", {"max": 1000.0}, False),
    ("abs", {}, False),
    ("log1p", {}, False),
    ("sqrt", {}, False),
    ("threshold", {"value": 1000.0}, False),
    ("astype", {"dtype": "uint8"}, False),
    ("conv_layer", {"weights": [[[[1, 0, -1], [2, 0, -2], [1, 0, -1]]], [[[0, 1, 0], [1, -4, 1], [0, 1, 0]]]],
                    "bias": [0.5, -1.0], "activation": "tanh", "stride": {"x": 2}}, True),
    ("conv_layer", {"weights": [[[[0.5, -1, 0.25], [1, 2, 0]]]], "activation": "sigmoid", "extent": "valid"}, False),
    ("pool", {"size": {"y": 2, "x": 3}, "kind": "mean"}, False),
]


def op_steps() -> list[tuple[str, list[dict]]]:
    """(id, steps) for every op and every mode it takes; point ops follow a gaussian (float input)."""
    out = []
    for name, params, modes in OP_CASES:
        for mode in (MODES if modes else (None,)):
            p = dict(params)
            if mode is not None:
                p["mode"] = mode
                if mode == "constant":
                    p["cval"] = 1.5
            steps = [{name: p}]
            if name in ("scale", "clip", "abs", "threshold", "astype"):  # float input of both signs
                steps = [{"gaussian": {"sigma": 1.0}}, {"scale": {"factor": 1.0, "offset": -900.0}}, {name: p}]
            elif name in ("log1p", "sqrt"):  # well inside their domain: positive float input
                steps = [{"gaussian": {"sigma": 1.0}}, {"scale": {"factor": 0.5, "offset": 10.0}}, {name: p}]
            out.append((f"{name}-{json.dumps(params, sort_keys=True)}-{mode}", steps))
    for mode in ("reflect", "mirror", "wrap"):  # chains the planner merges into one sum of separable terms
        out.append((f"merged-chain-{mode}", [{"gaussian": {"sigma": 1.0, "mode": mode}},
                                             {"gaussian_laplace": {"sigma": 1.0, "mode": mode}},
                                             {"uniform": {"size": 3, "mode": mode}}]))
    out.append(("heat-steps-then-sobel-nearest", [{"diffusion": {"steps": 2, "dt": 0.2, "mode": "nearest"}},
                                                  {"sobel": {"mode": "nearest"}}]))
    return out


def tolerance(steps: list[dict], ref: np.ndarray) -> float:
    fft = any(isinstance(v, dict) and v.get("method") == "fft" for s in steps for v in s.values())
    return (1e-4 if fft else 1e-5) * max(1.0, float(np.max(np.abs(ref.astype(np.float64)))))


def assert_close(steps: list[dict], got: np.ndarray, ref: np.ndarray, before: np.ndarray | None = None) -> None:
    """SPEC.md's tolerance. After a discontinuous last step (threshold, astype to an integer type) two
    correct float results a rounding apart may land on either side of the step: a voxel may then differ
    only where the float input of that step (``before``) lies within the tolerance of the step."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    (name, params), = steps[-1].items()
    if before is None or name not in ("threshold", "astype"):
        assert np.max(np.abs(got - ref), initial=0.0) <= tolerance(steps, ref)
        return
    bad = got != ref
    b = np.asarray(before, dtype=np.float64)[bad]
    tol = tolerance(steps[:-1], np.asarray(before))
    edge = np.abs(b - params["value"]) if name == "threshold" else np.abs(b - np.round(b))
    if name == "astype":
        info = np.iinfo(np.dtype(params["dtype"]))
        edge = np.minimum(edge, np.minimum(np.abs(b - info.min), np.abs(b - info.max)))
        edge = np.minimum(edge, np.abs(b - np.trunc(b)))
    assert np.all(edge <= tol), (int(bad.sum()), float(np.max(edge, initial=0)))


def hooks_present() -> bool:
    """The lead-owned hooks (engines dispatch, device-aware execute) are in this tree."""
    from convpipe import execute

    return hasattr(engines, "on_device") and "device_out" in inspect.signature(execute.execute).parameters


needs_hooks = pytest.mark.skipif(not hooks_present(), reason="GPU hooks in engines/execute/api not applied yet")


def spec(steps, backend="cpu", **execution):
    return {"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": steps,
            "execution": {"backend": backend, **execution}}


# --------------------------------------------------------------------------- the CuPy test double

_SCALARS = (bool, int, float, complex, np.generic)
# numpy functions CuPy implements (reached through __array_function__); anything else is refused
_CUPY_FUNCS = {
    "take", "stack", "concatenate", "clip", "nan_to_num", "where", "ascontiguousarray", "moveaxis",
    "transpose", "reshape", "squeeze", "expand_dims", "empty_like", "zeros_like", "ones_like", "full_like",
    "max", "min", "amax", "amin", "sum", "mean", "any", "all", "diff", "pad", "flip", "broadcast_to",
    "copyto", "round", "around", "real", "imag", "cumsum", "sort", "argsort", "nonzero", "count_nonzero",
    "isclose", "allclose", "array_equal", "abs", "ravel", "atleast_1d", "fft",
}
_INDEX_ARGS = {"take": 1}  # positional arguments that may be host index arrays (CuPy copies them over)


class FakeFlags:
    def __init__(self, a: np.ndarray):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata  # no 'writeable': CuPy's flags do not have it


class FakeArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A 'device' array: host memory inside, CuPy's rules outside."""

    __array_priority__ = 100
    counts: ClassVar[dict] = {"h2d": 0, "d2h": 0, "index_h2d": 0}

    def __init__(self, a: np.ndarray, base: FakeArray | None = None):
        assert isinstance(a, np.ndarray)
        self._a = a
        self.base = base

    # --- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: FakeFlags(self._a))
    T = property(lambda self: FakeArray(self._a.T, self))

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"FakeArray({self._a!r})"

    def __array__(self, *a, **k):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                        "construct a NumPy array explicitly.")

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def item(self):
        return self._a.item()

    # --- methods
    def get(self, stream=None, order="C", out=None, blocking=True):
        FakeArray.counts["d2h"] += 1
        return np.array(self._a, order=order)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        FakeArray.counts["h2d"] += 1
        self._a[...] = arr

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        return FakeArray(self._a.astype(dtype, copy=copy))

    def copy(self, order="C"):
        return FakeArray(self._a.copy(order=order))

    def reshape(self, *shape, **kw):
        r = self._a.reshape(*shape, **kw)
        return FakeArray(r, self if r.base is not None else None)

    def transpose(self, *axes):
        return FakeArray(self._a.transpose(*axes), self)

    def ravel(self):
        return FakeArray(self._a.ravel())

    def view(self, dtype):
        return FakeArray(self._a.view(dtype), self)

    def fill(self, v):
        self._a.fill(v)

    def any(self, *a, **k):
        return _wrap(self._a.any(*a, **k))

    def all(self, *a, **k):
        return _wrap(self._a.all(*a, **k))

    def max(self, *a, **k):
        return _wrap(self._a.max(*a, **k))

    def min(self, *a, **k):
        return _wrap(self._a.min(*a, **k))

    def sum(self, *a, **k):
        return _wrap(self._a.sum(*a, **k))

    # --- indexing: host index arrays are copied over (as CuPy does); host values are refused
    def __getitem__(self, idx):
        r = self._a[_index(idx)]
        if not isinstance(r, np.ndarray):
            return FakeArray(np.asarray(r))
        return FakeArray(r, self if r.base is not None else None)

    def __setitem__(self, idx, value):
        if isinstance(value, np.ndarray):
            raise TypeError(f"Unsupported type {type(value)}")
        self._a[_index(idx)] = value._a if isinstance(value, FakeArray) else value

    # --- the protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        if method != "__call__":
            return NotImplemented
        out = kw.get("out") or ()
        for x in inputs + tuple(out):
            if isinstance(x, (FakeArray, *_SCALARS)):
                continue
            if isinstance(x, np.ndarray):
                raise TypeError(f"Unsupported type {type(x)}")  # CuPy: no implicit host-to-device copies
            return NotImplemented
        if out:
            kw["out"] = tuple(o._a for o in out)
        res = ufunc(*[_un(x) for x in inputs], **kw)
        if out:
            return out[0] if len(out) == 1 else out
        return _wrap(res)

    def __array_function__(self, func, types_, args, kwargs):
        name = func.__name__
        if name not in _CUPY_FUNCS:
            return NotImplemented
        allowed = _INDEX_ARGS.get(name)
        for i, a in enumerate(_flat(args)):
            if isinstance(a, np.ndarray) and i != allowed:
                raise TypeError(f"Unsupported type {type(a)} in cupy.{name}")
        return _wrap(func(*_un_tree(args), **_un_tree(kwargs)))


# Not "cupy.<...>": dask (and convpipe.engines) register their CuPy dispatch lazily, once, on the first type from
# a module named "cupy"; the double must not use up that registration for a real CuPy. The fixture registers
# the double with the engines' dispatch itself (engines.register_device_type).
FakeArray.__module__ = "cupy_testdouble"


def _flat(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _flat(a) if any(isinstance(b, (list, tuple, np.ndarray, FakeArray)) for b in a) else [a]
        else:
            yield a


def _un(x):
    return x._a if isinstance(x, FakeArray) else x


def _un_tree(x):
    if isinstance(x, FakeArray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_un_tree(v) for v in x)
    if isinstance(x, dict):
        return {k: _un_tree(v) for k, v in x.items()}
    return x


def _wrap(r):
    if isinstance(r, np.ndarray):
        return FakeArray(r)
    if isinstance(r, np.generic):
        return FakeArray(np.asarray(r))  # CuPy returns 0-d arrays, never numpy scalars
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    return r


def _index(idx):
    def one(s):
        if isinstance(s, FakeArray):
            return s._a
        if isinstance(s, (np.ndarray, list)):
            FakeArray.counts["index_h2d"] += 1
        return s
    return tuple(one(s) for s in idx) if isinstance(idx, tuple) else one(idx)


def _need_device(*xs):
    for x in xs:
        if not isinstance(x, FakeArray):
            raise TypeError(f"cupyx.scipy.ndimage needs cupy.ndarray, got {type(x)}")


def _make_fake_modules() -> dict[str, types.ModuleType]:
    def mod(name):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        return m

    cp, cuda, runtime, fft = mod("cupy"), mod("cupy.cuda"), mod("cupy.cuda.runtime"), mod("cupy.fft")
    compiler = mod("cupy.cuda.compiler")  # CuPy < 14: the kernel cache folder comes from get_cache_dir()
    compiler.get_cache_dir = lambda: os.environ.get("CUPY_CACHE_DIR", os.path.expanduser("~/.cupy/kernel_cache"))
    cpx, sc, nd, sig, sfft = (mod("cupyx"), mod("cupyx.scipy"), mod("cupyx.scipy.ndimage"),
                              mod("cupyx.scipy.signal"), mod("cupyx.scipy.fft"))
    cp.ndarray = FakeArray
    cp.__version__ = "0.0-fake"

    def asarray(a, dtype=None, order=None):
        if isinstance(a, FakeArray):
            return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
        if isinstance(a, np.ndarray):
            FakeArray.counts["h2d"] += 1
        return FakeArray(np.array(a, dtype=dtype, copy=True))

    cp.asarray = cp.array = asarray
    cp.empty = lambda shape, dtype=float, order="C": FakeArray(np.empty(shape, dtype=dtype))
    cp.zeros = lambda shape, dtype=float, order="C": FakeArray(np.zeros(shape, dtype=dtype))
    cp.ones = lambda shape, dtype=float, order="C": FakeArray(np.ones(shape, dtype=dtype))
    cp.asnumpy = lambda a, stream=None: a.get() if isinstance(a, FakeArray) else np.asarray(a)
    cp.ascontiguousarray = lambda a, dtype=None: FakeArray(np.ascontiguousarray(_un(a), dtype=dtype))
    cp.get_array_module = lambda *a: cp if any(isinstance(x, FakeArray) for x in a) else np
    cp.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None)
    for n in ("take", "stack", "concatenate", "clip", "nan_to_num", "where", "sqrt", "abs", "arctan2", "isnan",
              "isfinite", "add", "subtract", "maximum", "minimum", "matmul", "moveaxis", "exp", "tanh", "reciprocal", "negative"):
        setattr(cp, n, getattr(np, n))  # the numpy function; FakeArray's protocols route the call

    class _Stream:
        def synchronize(self):
            pass

    class Device:
        def __init__(self, i=0):
            self.id = i

        def synchronize(self):
            pass

    runtime.getDeviceCount = lambda: 1
    runtime.getDevice = lambda: 0
    runtime.getDeviceProperties = lambda i: {"name": b"Fake GPU 80GB"}
    cuda.runtime = runtime
    cuda.compiler = compiler
    cuda.Device = Device
    cuda.get_current_stream = lambda: _Stream()
    cp.cuda = cuda

    def wrap_host(f, reject_workers=False):
        def call(x, *a, **k):
            if reject_workers and "workers" in k:
                raise TypeError(f"{f.__name__}() got an unexpected keyword argument 'workers'")
            _need_device(x)
            return _wrap(f(x._a, *a, **k))
        call.__name__ = f.__name__
        return call

    for n in ("rfftn", "irfftn", "fftn", "ifftn", "rfft", "irfft", "fft", "ifft"):
        setattr(fft, n, wrap_host(getattr(np.fft, n)))
        setattr(sfft, n, wrap_host(getattr(scipy.fft, n), reject_workers=True))
    for n in ("fftshift", "ifftshift"):
        setattr(fft, n, wrap_host(getattr(np.fft, n)))
        setattr(sfft, n, wrap_host(getattr(scipy.fft, n)))
    cp.fft = fft

    def nd_filter(f, weighted):
        def call(x, *a, **k):
            if weighted:
                w, rest = a[0], a[1:]
                _need_device(x, w)
                return FakeArray(f(x._a, w._a, *rest, **k))
            _need_device(x)
            return FakeArray(f(x._a, *a, **k))
        return call

    nd.correlate1d = nd_filter(ndi.correlate1d, True)
    nd.correlate = nd_filter(ndi.correlate, True)
    nd.median_filter = nd_filter(ndi.median_filter, False)
    nd.minimum_filter1d = nd_filter(ndi.minimum_filter1d, False)
    nd.maximum_filter1d = nd_filter(ndi.maximum_filter1d, False)

    def fftconvolve(a, b, mode="full", axes=None):
        _need_device(a, b)
        return FakeArray(scipy.signal.fftconvolve(a._a, b._a, mode=mode, axes=axes))

    sig.fftconvolve = fftconvolve
    cpx.empty_pinned = lambda shape, dtype=float: np.empty(shape, dtype=dtype)
    cpx.scipy, sc.ndimage, sc.signal, sc.fft = sc, nd, sig, sfft
    return {"cupy": cp, "cupy.cuda": cuda, "cupy.cuda.runtime": runtime, "cupy.cuda.compiler": compiler,
            "cupy.fft": fft, "cupyx": cpx,
            "cupyx.scipy": sc, "cupyx.scipy.ndimage": nd, "cupyx.scipy.signal": sig, "cupyx.scipy.fft": sfft}


@pytest.fixture
def fake_cupy(monkeypatch, tmp_path):
    """Install the CuPy double as ``cupy`` / ``cupyx`` for one test; leave no device state behind."""
    for name, m in _make_fake_modules().items():
        monkeypatch.setitem(sys.modules, name, m)
    monkeypatch.setenv("CONVPIPE_PINNED", "0")
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "fake-kernel-cache"))
    engines.register_device_type(FakeArray)  # the engines' dispatch sends it to the CuPy engines
    monkeypatch.setitem(gpu._CACHE_DIR, "passed", None)
    FakeArray.counts.update(h2d=0, d2h=0, index_h2d=0)
    gpu.reset_transfer_counts()
    gpu._forget_warmup()
    gpu._WEIGHTS.clear()
    yield sys.modules["cupy"]
    gpu._forget_warmup()
    gpu._WEIGHTS.clear()  # never hand a fake array to a real CuPy later in this process
    gpu._PINNED_FREE.clear()


def dev(a) -> FakeArray:
    return FakeArray(np.array(a))


# --------------------------------------------------------------------------- the double is faithful


def test_double_refuses_what_cupy_refuses(fake_cupy):
    x = dev(np.arange(6, dtype=np.float32))
    with pytest.raises(TypeError):
        x * np.asarray(2.0, dtype=np.float32)  # 0-d numpy array in a ufunc
    with pytest.raises(TypeError):
        np.asarray(2.0, dtype=np.float32) * x
    with pytest.raises(TypeError):
        np.asarray(x)  # implicit device -> host
    with pytest.raises(TypeError):
        np.interp(x, x, x)  # not a CuPy function
    assert not hasattr(x.flags, "writeable")
    y = x * np.float32(2.0) + 1  # numpy and Python scalars are fine
    assert isinstance(y, FakeArray) and y.dtype == np.float32
    z = np.take(x, np.array([0, 2]), axis=0)  # host index arrays are fine
    assert isinstance(z, FakeArray) and z.get().tolist() == [0.0, 2.0]
    assert backends.on_device(x) and not backends.on_device(np.zeros(1))


# --------------------------------------------------------------------------- never import CuPy on the CPU


def test_cpu_path_never_imports_cupy(tmp_path):
    """With an importable ``cupy`` on the path, importing convpipe (every op, the GPU module too) and
    running a CPU pipeline (apply, explain, run) leaves ``cupy``/``cupyx`` out of ``sys.modules``."""
    pkg = tmp_path / "site"
    log = tmp_path / "imports.log"
    # dask.array itself tries ``import cupy`` (and cupyx) when it is installed: the stub records only
    # imports made directly by convpipe's code, then refuses, as a missing CuPy would
    stub = textwrap.dedent("""
        import os, traceback
        stack = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<frozen")]
        # convpipe's own code is what lies in its package folder, wherever the checkout is and whatever it is
        # called (a checkout named convpipe/ holds dask and zarr in convpipe/.venv/ too)
        if stack and os.path.realpath(stack[-1].filename).startswith(os.environ["CONVPIPE_TEST_PKG_DIR"]):
            with open(os.environ["CONVPIPE_TEST_IMPORT_LOG"], "a") as fh:
                fh.write(__name__ + " imported by " + stack[-1].filename + ":" + str(stack[-1].lineno) + "\\n")
        raise ImportError("test stub")
    """)
    for name in ("cupy", "cupyx"):
        (pkg / name).mkdir(parents=True)
        (pkg / name / "__init__.py").write_text(stub)
    import zarr

    data = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    zarr.create_array(str(tmp_path / "in.zarr"), data=data, chunks=(2, 8, 8))
    script = textwrap.dedent(f"""
        import sys, json
        import numpy as np
        import convpipe, convpipe.backends, convpipe.gpu, convpipe.engines
        from convpipe.ops import registry
        registry.names()
        steps = [{{"gaussian": {{"sigma": 1}}}}, {{"sobel": {{}}}}, {{"median": {{"size": 3}}}}]
        p = convpipe.load({{"convpipe": 1, "input": {{"url": {str(tmp_path / 'in.zarr')!r}}},
                           "output": {{"url": {str(tmp_path / 'out.zarr')!r}}},
                           "steps": steps, "execution": {{"backend": "cpu"}}}})
        y = p.apply(np.ones((2, 16, 16), np.float32), axes="zyx").compute()
        p.explain()
        p.run()
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx"))))
    """)
    import convpipe

    pkg_dir = os.path.realpath(os.path.dirname(convpipe.__file__)) + os.sep
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pkg), *sys.path]), CONVPIPE_TEST_IMPORT_LOG=str(log),
               CONVPIPE_TEST_PKG_DIR=pkg_dir)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
    assert not log.exists(), log.read_text()
    # the stub does record convpipe's own imports: asking for the GPU does import CuPy
    r = subprocess.run([sys.executable, "-c", "import convpipe.backends as b; b.gpu_available()"],
                       capture_output=True, text=True, env=env, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "convpipe" in log.read_text() and "backends.py" in log.read_text()


def test_gpu_module_import_is_lazy():
    code = "import sys, convpipe.gpu, convpipe.backends; print(any(m.startswith('cupy') for m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# --------------------------------------------------------------------------- choosing a backend


def test_cpu_never_looks_for_a_gpu(monkeypatch):
    def boom():
        raise AssertionError("looked for a GPU")

    monkeypatch.setattr(backends, "gpu_available", boom)
    monkeypatch.setattr(backends, "device_name", boom)
    assert backends.resolve("cpu").name == "cpu"
    assert backends.get_backend("cpu") is backends.CPU


def test_gpu_without_a_gpu_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(backends, "gpu_available", lambda: False)
    with pytest.raises(BackendError, match="no usable GPU"):
        backends.resolve("gpu")
    with pytest.raises(BackendError, match="no usable GPU"):
        backends.get_backend("gpu")
    choice = backends.resolve("gpu", strict=False)  # explain shows the plan and says what is missing
    assert choice.name == "gpu" and "no usable GPU" in choice.reason
    import zarr

    zarr.create_array(str(tmp_path / "in.zarr"), data=np.zeros((8, 8), np.float32), chunks=(4, 4))
    p = convpipe.load({"convpipe": 1, "input": {"url": str(tmp_path / "in.zarr")},
                       "output": {"url": str(tmp_path / "out.zarr")}, "steps": [{"gaussian": {"sigma": 1}}],
                       "execution": {"backend": "gpu"}})
    with pytest.raises(BackendError, match="no usable GPU") as e:
        p.run()
    assert str(e.value).count("\n") == 0 and e.value.exit_code == 1
    assert not (tmp_path / "out.zarr").exists()


def test_no_cupy_means_no_gpu():
    if backends.gpu_available():
        pytest.skip("this machine has a GPU")
    assert backends.device_name() == ""
    c = backends.resolve("auto")
    assert c.name == "cpu" and c.requested == "auto" and "chose cpu" in c.reason
    assert backends.get_backend("auto") is backends.CPU


def test_auto_picks_the_gpu_and_says_so(fake_cupy):
    assert backends.gpu_available()
    c = backends.resolve("auto")
    assert c.name == "gpu" and "auto chose gpu" in c.reason and "Fake GPU" in c.reason
    assert backends.get_backend("auto") is gpu.GPU
    assert backends.resolve("gpu").name == "gpu"


def test_broken_cupy_is_no_gpu(monkeypatch):
    """CuPy installed without a driver or device: no GPU, never an exception."""
    mods = _make_fake_modules()

    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver")

    mods["cupy.cuda.runtime"].getDeviceCount = no_driver
    for name, m in mods.items():
        monkeypatch.setitem(sys.modules, name, m)
    assert not backends.gpu_available()
    assert backends.resolve("auto").name == "cpu"
    with pytest.raises(BackendError):
        backends.resolve("gpu")


def test_unknown_backend_name():
    with pytest.raises(BackendError, match="not one of"):
        backends.resolve("tpu")


def test_cpu_backend_is_memory_and_the_engines_dispatch(rng):
    """A backend places blocks; the kernels are the engines' alone (one dispatch mechanism)."""
    x = rng.random((3, 20, 18)).astype(np.float32)
    be = backends.CPU
    assert be.xp is np and be.to_host(x) is x and be.asarray(x) is x
    for name in ("sep_correlate", "correlate_nd", "rank_filter", "fftconvolve", "fft"):
        assert not hasattr(be, name) and not hasattr(gpu.GPU, name)
    assert be.meta(3, np.float32).shape == (0, 0, 0) and be.meta(3, np.float32).dtype == np.float32
    import pickle

    assert pickle.loads(pickle.dumps(be)) is be
    w = {1: (np.array([1.0, 2.0, 1.0]) / 4, 1), 2: (np.array([-1.0, 0.0, 1.0]), 1)}
    np.testing.assert_allclose(_crop(engines.sep_correlate(x, w), 1),
                               _crop(ndi.correlate1d(ndi.correlate1d(x, w[1][0], 1), w[2][0], 2), 1), atol=1e-6)
    k = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(_crop(engines.correlate_nd(x, k, (1, 1), (1, 2)), (0, 2, 2)),
                               _crop(ndi.correlate(x, k[None], origin=(0, 0, 0)), (0, 2, 2)), atol=1e-5)
    assert not engines.on_device(x) and not engines.on_device(None) and engines.array_module(x) is np


def test_engine_dispatch_is_dask_dispatch_with_lazy_cupy():
    """dask-image's pattern: one dask.utils.Dispatch per engine, numpy registered, CuPy lazily (the CPU path
    never imports it: see test_cpu_path_never_imports_cupy)."""
    from dask.utils import Dispatch

    engines.sep_correlate(np.zeros((3, 3), np.float32), {1: (np.ones(1), 0)})
    for name in ("sep_correlate", "correlate_nd", "rank_filter", "fftconvolve", "on_device", "array_module"):
        d = engines._dispatch(name)
        assert isinstance(d, Dispatch)
        assert d.dispatch(np.ndarray) is not None
    assert 'register_lazy("cupy"' in inspect.getsource(engines)
    from convpipe.engines import cpu as cpu_engines
    from convpipe.engines import gpu as gpu_engines

    assert "on_device" not in inspect.getsource(cpu_engines)  # no type checks inside the engines
    for fn in (gpu_engines.sep_correlate, gpu_engines.correlate_nd, gpu_engines.rank_filter):
        assert "on_device" not in inspect.getsource(fn)


# --------------------------------------------------------------------------- GPU engines (on the double)


def _crop(a, r):
    """The valid region: ``r`` voxels off each side of every axis (``r`` an int or one per axis)."""
    rs = (r,) * a.ndim if isinstance(r, int) else r
    out = a[tuple(slice(k, s - k) for k, s in zip(rs, a.shape))]
    assert out.size, "cropped to nothing"
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_sep_correlate_matches_cpu(fake_cupy, rng, dtype):
    x = rng.random((6, 23, 19)).astype(dtype)
    cases = [
        {2: (np.array([1.0, 2.0, 1.0]), 1)},
        {1: (np.array([1.0, 3.0, -2.0, 1.0]), 2), 2: (np.array([0.5, 0.5]), 0)},
        {0: (np.array([1.0, -1.0, 2.0]), 1), 1: (np.array([1.0, 2.0, 1.0]), 1), 2: (np.array([2.0, 1.0, 0.0]), 2)},
        {1: (np.ones(1), 0)},
    ]
    for w in cases:
        ref = engines.sep_correlate(x, w)
        got = engines.sep_correlate(dev(x), w)
        assert isinstance(got, FakeArray) and got.dtype == x.dtype
        np.testing.assert_allclose(_crop(got.get(), (2, 3, 3)), _crop(ref, (2, 3, 3)), rtol=1e-5, atol=1e-5)
    d = dev(x)
    assert engines.sep_correlate(d, {}) is d
    # scipy's constant mode pads every pass's input with cval: the engines reset the outside voxels
    outside = {1: np.zeros(23, bool), 2: np.zeros(19, bool)}
    outside[1][:2] = outside[1][-1:] = outside[2][:3] = True
    w = {1: (np.array([1.0, -2.0, 1.0]), 1), 2: (np.array([0.5, 1.0, 0.25]), 1)}
    for order in ([1, 2], [2, 1]):
        ref = engines.sep_correlate(x, w, fill=(outside, 2.5), order=order)
        got = engines.sep_correlate(dev(x), w, fill=(outside, 2.5), order=order)
        np.testing.assert_allclose(_crop(got.get(), (0, 3, 3)), _crop(ref, (0, 3, 3)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(_crop(engines.sep_correlate(x, w, fill=(outside, 2.5), order=[1, 2]), (0, 3, 3)),
                           _crop(engines.sep_correlate(x, w), (0, 3, 3)))  # the fill matters here


def test_gpu_correlate_nd_and_rank_filters_match_cpu(fake_cupy, rng):
    x = rng.random((7, 21, 17)).astype(np.float32)
    k = rng.random((3, 4))
    for centers in [(1, 1), (0, 3), (2, 0)]:
        ref = engines.correlate_nd(x, k, centers, (1, 2))
        got = engines.correlate_nd(dev(x), k, centers, (1, 2)).get()
        np.testing.assert_allclose(_crop(got, (0, 4, 4)), _crop(ref, (0, 4, 4)), rtol=1e-5, atol=1e-5)
    k3 = rng.random((2, 3, 3))
    np.testing.assert_allclose(_crop(engines.correlate_nd(dev(x), k3, (1, 1, 1), (0, 1, 2)).get(), (2, 3, 3)),
                               _crop(engines.correlate_nd(x, k3, (1, 1, 1), (0, 1, 2)), (2, 3, 3)), rtol=1e-5)
    for kind, sizes in [("median", {1: 3, 2: 3}), ("median", {0: 3, 2: 4}), ("minimum", {1: 3, 2: 4}),
                        ("maximum", {0: 2, 1: 5}), ("maximum", {1: 1})]:
        ref = engines.rank_filter(x, kind, sizes)
        got = engines.rank_filter(dev(x), kind, sizes).get()
        np.testing.assert_array_equal(got, ref)  # order statistics: exact, borders included
    with pytest.raises(ValueError):
        engines.rank_filter(dev(x), "mode", {1: 3})
    xn = x.copy()
    xn[3, 10, 8] = np.nan  # a window holding a NaN is NaN, on the device as on the host
    np.testing.assert_array_equal(engines.rank_filter(dev(xn), "median", {1: 3, 2: 3}).get(),
                                  engines.rank_filter(xn, "median", {1: 3, 2: 3}))


def test_gpu_fftconvolve(fake_cupy, rng):
    x = rng.random((2, 16, 12)).astype(np.float32)
    k = rng.random((1, 3, 5)).astype(np.float32)
    got = engines.fftconvolve(dev(x), k, mode="valid", axes=(1, 2))  # a host kernel goes to the device
    assert isinstance(got, FakeArray)
    np.testing.assert_allclose(got.get(), scipy.signal.fftconvolve(x, k, mode="valid", axes=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(engines.fftconvolve(x, k, mode="valid", axes=(1, 2)), got.get(), rtol=1e-5)


def test_transfers_are_counted_and_pinned_staging(fake_cupy, monkeypatch):
    gpu.reset_transfer_counts()
    h = np.arange(2 * 700 * 800, dtype=np.float32).reshape(2, 700, 800)  # > 1 MiB
    view = h[:, ::2, 1:]  # strided host view
    monkeypatch.setenv("CONVPIPE_PINNED", "1")
    try:
        d = gpu.to_device(view)
        assert isinstance(d, FakeArray) and d.flags.c_contiguous
        np.testing.assert_array_equal(d.get(), view)
        assert gpu.to_device(d) is d  # already there: no copy
        small = gpu.to_device(np.ones(3))
        back = gpu.to_host(small)
        assert isinstance(back, np.ndarray) and gpu.to_host(back) is back
        c = gpu.transfer_counts()
        assert c["h2d"] == 2 and c["d2h"] == 1 and c["h2d_bytes"] == view.nbytes + 24
        assert len(gpu._PINNED_FREE) == 1 and gpu._PINNED_FREE[0].nbytes >= view.nbytes  # kept for reuse
        buf = gpu._PINNED_FREE[0]
        gpu.to_device(view[:, :-3])
        assert len(gpu._PINNED_FREE) == 1 and gpu._PINNED_FREE[0] is buf  # reused, not reallocated
        gpu.to_device(h)  # larger than the buffer: a second, larger one
        assert len(gpu._PINNED_FREE) == 2 and gpu._PINNED_FREE[1].nbytes >= h.nbytes
    finally:
        gpu._PINNED_FREE.clear()


def test_gpu_backend_interface(fake_cupy):
    be = gpu.GPU
    assert be.name == "gpu" and be.device and be.xp is fake_cupy
    h = [np.zeros((2, 2)), np.ones((2, 2))]
    assert be.gather(h)[0] is h[0]  # host chunks stay on the host: the assembled block crosses once
    mixed = be.gather([dev(h[0]), h[1]])
    assert all(isinstance(c, FakeArray) for c in mixed)
    assert isinstance(be.output(np.ones(2), device=True), FakeArray)
    assert isinstance(be.output(dev(np.ones(2)), device=False), np.ndarray)
    m = be.meta(3, np.float32)
    assert isinstance(m, FakeArray) and m.shape == (0, 0, 0) and m.dtype == np.float32
    import pickle

    assert pickle.loads(pickle.dumps(be)) is be
    with be.task():
        pass
    assert backends.for_array(dev(h[0])) is be and backends.for_array(h[0]) is backends.CPU
    assert isinstance(backends.to_host(dev(h[1])), np.ndarray)
    assert backends.array_module(dev(h[0])) is fake_cupy and backends.array_module(h[0]) is np


def test_device_constants_are_cached(fake_cupy):
    w = np.array([1.0, 2.0, 1.0])
    a = gpu._dev_const(w, np.float32)
    assert gpu._dev_const(w, np.float32) is a
    assert gpu._dev_const(w, np.float64) is not a
    assert a.dtype == np.float32


# --------------------------------------------------------------------------- placement and annotations


def _plan(steps, shape=(4, 32, 32), chunks=(2, 16, 16), backend="gpu", dtype=np.uint16, tile=None):
    s = load_spec(spec(steps, backend))
    info = ArrayInfo(shape, np.dtype(dtype), chunks, "zyx"[-len(shape):])
    return make_plan(s.steps, info, tile=tile or dict(zip(info.axes, chunks)), backend=backend)


def test_passes_run_on_the_gpu_only_when_every_op_can():
    p = _plan([{"gaussian": {"sigma": 2}}, {"sobel": {}}, {"threshold": {"value": 3}}])
    assert backends.pass_backends(p) == ["gpu"] and backends.placement_notes(p) == []
    q = _plan([{"gaussian": {"sigma": 2}}, {"fft_filter": {"kind": "lowpass", "cutoff": 0.2}}])
    assert backends.pass_backends(q) == ["cpu"]
    assert backends.placement_notes(q) == ["pass 0 runs on the CPU: fft_filter has no GPU path"]
    r = _plan([{"gaussian": {"sigma": 1}}, {"zscore": {}}, {"gaussian": {"sigma": 1}}])
    assert backends.pass_backends(r) == ["gpu", "cpu"]
    assert backends.pass_backends(_plan([{"gaussian": {"sigma": 2}}], backend="cpu")) == ["cpu"]
    d = _plan([{"diffusion": {"steps": 2, "dt": 0.1}}, {"gaussian": {"sigma": 1}}, {"uniform": {"size": 3}}])
    assert all(op.gpu_path for op in d.passes[0].ops)  # the internal ops it expands into
    assert backends.pass_backends(d) == ["gpu"]


def test_every_op_with_a_gpu_path_is_tested_on_it():
    """Each op declares its GPU path (``Op.gpu_path``); the cases above cover exactly those ops."""
    from convpipe.ops import registry
    from convpipe.ops.local.diffusion import HeatStep
    from convpipe.ops.local.merged import MergedSeparable

    declared = {n for n in registry.names() if registry.get(n).gpu_path}
    assert {name for name, _, _ in OP_CASES} == declared
    assert HeatStep.gpu_path and MergedSeparable.gpu_path  # the internal ops the planner makes of them
    assert not registry.get("fft_filter").gpu_path and not registry.get("peaks").gpu_path


def test_backend_note_for_explain(monkeypatch):
    q = _plan([{"gaussian": {"sigma": 2}}, {"fft_filter": {"kind": "lowpass", "cutoff": 0.2}}])
    monkeypatch.setattr(backends, "device_name", lambda: "Fake GPU")
    note = backends.backend_note(backends.resolve("auto"), q)
    assert note == "auto chose gpu: CuPy sees Fake GPU; pass 0 runs on the CPU: fft_filter has no GPU path"
    assert backends.backend_note(backends.resolve("cpu"), _plan([{"gaussian": {"sigma": 1}}], backend="cpu")) == ""


def test_pass_annotations_only_on_mixed_clusters():
    mixed = _plan([{"gaussian": {"sigma": 1}}, {"zscore": {}}, {"gaussian": {"sigma": 1}}])
    assert backends.pass_annotations(mixed, []) == [{}, {}]  # local / no worker declares GPU
    assert backends.pass_annotations(mixed, [{}, {}]) == [{}, {}]  # CPU-only or profile:cuda workers
    assert backends.pass_annotations(mixed, [{"GPU": 1}, {}]) == [{"resources": {"GPU": 1}}, {}]
    assert backends.pass_annotations(mixed, [{"GPU": 1}, {"GPU": 1}]) == [{"resources": {"GPU": 1}}, {}]
    cpu = _plan([{"gaussian": {"sigma": 1}}], backend="cpu")
    assert backends.pass_annotations(cpu, [{"GPU": 1}]) == [{}]
    assert backends.pass_annotations(mixed, [{"gpu": 2}], gpu_resource="gpu")[0] == {"resources": {"gpu": 1}}


def test_annotations_reach_the_graph_and_the_scheduler(rng, fake_cupy):
    """``dask.annotate(**ann)`` around ``build_pass`` annotates its tile layer, and on a cluster with one
    GPU worker and one CPU worker every annotated tile runs on the GPU worker (in-process workers: they
    see the CuPy double)."""
    import dask
    import dask.array as da
    from distributed import Client, Scheduler, SpecCluster, Worker

    from convpipe.execute import build_pass

    p = _plan([{"gaussian": {"sigma": 1}}], shape=(4, 32, 32), chunks=(1, 16, 16), dtype=np.float32)
    src = da.from_array(rng.random((4, 32, 32)).astype(np.float32), chunks=(1, 16, 16))
    workers = [{"GPU": 1}, {}]
    ann = backends.pass_annotations(p, workers)[0]
    with dask.annotate(**ann):
        arr = build_pass(p.passes[0], p, src)
    assert arr.dask.layers[arr.name].annotations == {"resources": {"GPU": 1}}
    specs = {"gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
             "cpu": {"cls": Worker, "options": {"nthreads": 2}}}
    with SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}) as cl, \
            Client(cl) as client:
        assert sorted(map(sorted, (r.items() for r in backends.worker_resources(client)))) == \
            sorted(map(sorted, (r.items() for r in workers)))
        gpu_addr = next(a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["resources"])
        # dask's array optimization drops layer annotations: annotated graphs go unoptimized
        futs = client.compute(arr.to_delayed(optimize_graph=False).ravel().tolist())
        client.gather(futs)
        where = client.who_has(futs)
        assert len(where) == int(np.prod(arr.numblocks)) and all(list(v) == [gpu_addr] for v in where.values())

        def restrictions(dask_scheduler):
            return {str(k): ts.resource_restrictions for k, ts in dask_scheduler.tasks.items()}

        seen = client.run_on_scheduler(restrictions)
        assert all(r == {"GPU": 1} for k, r in seen.items() if arr.name in k)
        assert all(not r for k, r in seen.items() if arr.name not in k)  # reads go anywhere


# --------------------------------------------------------------------------- warm-up


def test_warmup_plan_shapes_and_dtypes():
    p = _plan([{"gaussian": {"sigma": 2}}, {"sobel": {}}], shape=(20, 64, 64), chunks=(4, 32, 32))
    cases = gpu.plan_warmup(p)
    assert [c.where for c in cases] == ["first", "interior", "last"]
    h = p.passes[0].halo
    assert h == {"y": (9, 9), "x": (9, 9)}  # gaussian radius int(4 * 2 + 0.5) = 8, plus sobel's 1
    for c in cases:
        assert c.in_dtype == np.uint16 and c.compute == np.float32 and c.out_dtype == np.float32
        assert c.voxels < 4096
    # z has no halo: 2 planes; inside, y and x read a 2-voxel core plus the halo on both sides; at an
    # edge the reflected halo reads voxels the block already holds
    assert cases[1].block_shape == (2, 2 + sum(h["y"]), 2 + sum(h["x"]))
    assert cases[0].block_shape == cases[2].block_shape == (2, 2 + 9, 2 + 9)
    first = dict(cases[0].core)
    assert first == {"z": (0, 2), "y": (0, 2), "x": (0, 2)}
    assert dict(cases[-1].core)["y"] == (62, 64)
    assert len({c.key for c in cases}) == 3
    tiny = _plan([{"gaussian": {"sigma": 1}}], shape=(2, 2), chunks=(2, 2), dtype=np.float32)
    assert [c.where for c in gpu.plan_warmup(tiny)] == ["first"]  # everything coincides
    assert gpu.plan_warmup(_plan([{"gaussian": {"sigma": 1}}], backend="cpu")) == []
    one = _plan([{"median": {"size": 3}}], shape=(4, 32, 32), chunks=(1, 16, 16), tile={"z": 1, "y": 16, "x": 16})
    assert all(c.block_shape[0] == 1 for c in gpu.plan_warmup(one))  # tiles one plane deep stay one deep


def test_warmup_plan_of_later_passes_and_added_axes(monkeypatch):
    from convpipe.ops import registry

    monkeypatch.setattr(registry.get("zscore"), "gpu_path", True)
    p = _plan([{"gaussian": {"sigma": 1}}, {"zscore": {}}, {"sobel": {"output": "components"}}],
              shape=(4, 32, 32), chunks=(2, 16, 16))
    cases = gpu.plan_warmup(p)
    assert {c.pass_index for c in cases} == {0, 1}
    later = [c for c in cases if c.pass_index == 1]
    assert all(c.in_dtype == np.float32 for c in later)  # a later pass reads the compute dtype
    assert all(dict(c.core)["c"] == (0, 2) for c in later)  # the axis sobel adds is whole


def test_warmup_cases_run_on_the_cpu_to_the_core_shape():
    """The planned blocks and targets are consistent: each case runs through run_chain to its core."""
    from convpipe.tiles import run_chain

    for steps in ([{"gaussian": {"sigma": 2}}, {"sobel": {}}],
                  [{"median": {"size": 3, "mode": "wrap"}}, {"uniform": {"size": 4, "mode": "constant"}}],
                  [{"diffusion": {"steps": 2, "dt": 0.1}}, {"threshold": {"value": 0}}]):
        p = _plan(steps, shape=(5, 40, 33), chunks=(2, 16, 16))
        for c in gpu.plan_warmup(p):
            y = run_chain(np.zeros(c.block_shape, c.in_dtype), list(c.ops), list(c.targets), list(c.extents),
                          c.compute)
            assert y.shape == tuple(e - s for _, (s, e) in c.core), (steps, c.where)


def test_warmup_runs_each_case_once_serialised(fake_cupy, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVPIPE_KERNEL_CACHE", str(tmp_path / "kc"))
    monkeypatch.delenv("CUPY_CACHE_DIR", raising=False)
    env = dict(os.environ)
    gpu._forget_warmup()
    ran, active, peak = [], [0], [0]
    lock = threading.Lock()

    def fake_run(case):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        ran.append(case.key)
        import time

        time.sleep(0.01)
        with lock:
            active[0] -= 1

    monkeypatch.setattr(gpu, "_run_case", fake_run)
    p = _plan([{"gaussian": {"sigma": 2}}, {"sobel": {}}], shape=(20, 64, 64), chunks=(4, 32, 32))
    threads = [threading.Thread(target=gpu.warmup, args=(p,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ran) == sorted(c.key for c in gpu.plan_warmup(p)) and peak[0] == 1
    # the folder is passed to CuPy's compiler, not exported: the environment is as it was
    assert fake_cupy.cuda.compiler.get_cache_dir() == str(tmp_path / "kc") and (tmp_path / "kc").is_dir()
    assert dict(os.environ) == env
    info = gpu.warmup(p)
    assert info["compiled"] == 0 and len(ran) == 3  # once per process
    # the per-task check: same kernels -> nothing to do, and it remembers the program
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Prog:
        ops: tuple
        extents: tuple
        compute: np.dtype
        out_dtype: np.dtype

    pp = p.passes[0]
    prog = Prog(tuple(pp.ops), tuple(pp.extents), p.compute_dtype, p.output.dtype)
    gpu.ensure_warm(prog, np.uint16)
    assert len(ran) == 3 and prog.ops in gpu._WARM_OPS
    gpu.ensure_warm(prog, np.float32)  # fast path keyed on the program: no recomputation
    gpu._forget_warmup()
    gpu.ensure_warm(prog, np.uint16)  # a cold process warms up in its first task
    assert len(ran) == 6
    gpu._forget_warmup()


def test_kernel_cache_dir_is_passed_to_cupy_never_exported(fake_cupy, monkeypatch, tmp_path):
    env = dict(os.environ)
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "users"))
    assert gpu.kernel_cache_dir() == str(tmp_path / "users")  # by default: CuPy's own choice, untouched
    monkeypatch.delenv("CUPY_CACHE_DIR")
    assert gpu.kernel_cache_dir() == os.path.expanduser("~/.cupy/kernel_cache")
    assert gpu.set_kernel_cache_dir(tmp_path / "forced") == str(tmp_path / "forced")
    assert fake_cupy.cuda.compiler.get_cache_dir() == str(tmp_path / "forced") == gpu.kernel_cache_dir()
    assert (tmp_path / "forced").is_dir() and "CUPY_CACHE_DIR" not in os.environ
    env.pop("CUPY_CACHE_DIR", None)
    assert {k: v for k, v in os.environ.items() if k != "CUPY_CACHE_DIR"} == env

    # newer CuPy builds its disk cache backend at import: the folder goes in as a new backend
    class Disk:
        def __init__(self, d):
            self.d = d

    got = []
    monkeypatch.setattr(fake_cupy.cuda.compiler, "_set_kernel_cache_backend", got.append, raising=False)
    monkeypatch.setitem(sys.modules, "cupy.cuda._compiler_cache", types.SimpleNamespace(DiskKernelCacheBackend=Disk))
    gpu.set_kernel_cache_dir(tmp_path / "newer")
    assert [b.d for b in got] == [str(tmp_path / "newer")]


def test_warmup_plugin_is_a_worker_plugin():
    import pickle

    from distributed.diagnostics.plugin import WorkerPlugin

    p = _plan([{"gaussian": {"sigma": 1}}])
    plug = gpu.WarmupPlugin(p)
    assert isinstance(plug, WorkerPlugin) and plug.name == "convpipe-gpu-warmup"
    assert pickle.loads(pickle.dumps(plug)).plan.backend == "gpu"

    class FakeClient:
        plugins: ClassVar[list] = []

        def register_plugin(self, plugin):
            self.plugins.append(plugin)

    c = FakeClient()
    gpu.register_warmup(c, _plan([{"gaussian": {"sigma": 1}}], backend="cpu"))
    assert c.plugins == []
    gpu.register_warmup(c, p)
    assert len(c.plugins) == 1


# --------------------------------------------------------------------------- benchmark harness


def test_bench_gpu_harness_on_the_cpu(tmp_path):
    rep = bench_gpu(shape=(4, 48, 40), chunks=(2, 24, 20), workdir=tmp_path, repeat=1, backends=("cpu",))
    assert rep["shape"] == [4, 48, 40] and rep["end_to_end"]["cpu"]["warm_s"] > 0
    assert rep["kernel"]["cpu"]["voxels_per_s"] > 0 and rep["kernel"]["cpu"]["shape"] == [4, 48, 40]
    assert "speedup_kernel" not in rep
    again = bench_gpu(shape=(4, 48, 40), chunks=(2, 24, 20), workdir=tmp_path, repeat=1, backends=("cpu",))
    assert again["end_to_end"]["cpu"]["tasks"] == rep["end_to_end"]["cpu"]["tasks"]  # input reused


# --------------------------------------------------------------------------- the wired GPU path (double)


def _input(shape=(2, 24, 20), seed=3):
    return (np.random.default_rng(seed).random(shape) * 2000).astype(np.uint16)


@needs_hooks
@pytest.mark.parametrize("case", op_steps(), ids=lambda c: c[0])
def test_every_op_every_mode_on_the_gpu_path(fake_cupy, case):
    """Each op with a GPU path runs through the device path (one copy each way per tile) and equals the
    CPU result within SPEC.md's tolerance."""
    import dask.array as da

    _, steps = case
    a = da.from_array(_input(), chunks=(1, 12, 10))  # 8 tiles; halos cross chunks, wrap spans the array
    ref = convpipe.load(spec(steps, "cpu")).apply(a, axes="zyx").compute(scheduler="sync")
    before = (convpipe.load(spec(steps[:-1], "cpu")).apply(a, axes="zyx").compute(scheduler="sync")
              if len(steps) > 1 else None)
    gpu.reset_transfer_counts()
    y = convpipe.load(spec(steps, "gpu")).apply(a, axes="zyx")
    got = y.compute(scheduler="sync")
    assert isinstance(got, np.ndarray) and got.dtype == ref.dtype and got.shape == ref.shape
    n_tiles = int(np.prod(y.numblocks))
    c = gpu.transfer_counts()
    assert c["h2d"] == n_tiles and c["d2h"] == n_tiles, c  # one block in, one core out, per tile
    assert_close(steps, got, ref, before)


@needs_hooks
def test_apply_on_dask_arrays_of_device_chunks(fake_cupy):
    import dask.array as da

    a = _input((3, 30, 26)).astype(np.float32)
    steps = [{"gaussian": {"sigma": 1.5, "mode": "wrap"}}, {"sobel": {}}]
    ref = convpipe.load(spec(steps, "cpu")).apply(a, axes="zyx").compute(scheduler="sync")
    x = da.from_array(FakeArray(a.copy()), chunks=(1, 15, 13), asarray=False,
                      meta=FakeArray(np.empty((0, 0, 0), np.float32)))
    assert backends.meta_on_device(x)
    y = convpipe.load(spec(steps, "cpu")).apply(x, axes="zyx")  # device input runs on the device
    assert isinstance(y._meta, FakeArray)
    got = y.compute(scheduler="sync")
    assert isinstance(got, FakeArray)
    assert np.max(np.abs(got.get() - ref)) <= tolerance(steps, ref)
    z = convpipe.load(spec(steps, "cpu")).apply(FakeArray(a.copy()), axes="zyx")  # a bare device array
    assert isinstance(z._meta, FakeArray)
    assert np.max(np.abs(z.compute(scheduler="sync").get() - ref)) <= tolerance(steps, ref)


@needs_hooks
def test_run_on_the_gpu_path_warm_and_logged(fake_cupy, tmp_path, monkeypatch):
    import zarr

    monkeypatch.setenv("CONVPIPE_KERNEL_CACHE", str(tmp_path / "kc"))
    monkeypatch.delenv("CUPY_CACHE_DIR", raising=False)
    a = _input((4, 40, 36))
    zarr.create_array(str(tmp_path / "in.zarr"), data=a, chunks=(2, 20, 18))
    steps = [{"gaussian": {"sigma": 1.0, "mode": "mirror"}}, {"sobel": {}}, {"astype": {"dtype": "uint16"}}]
    outs = {}
    for be in ("cpu", "gpu"):
        logs: list[str] = []
        p = convpipe.load({"convpipe": 1, "input": {"url": str(tmp_path / "in.zarr")},
                           "output": {"url": str(tmp_path / f"{be}.zarr")}, "steps": steps,
                           "execution": {"backend": "auto" if be == "gpu" else "cpu", "cluster": "threads"}})
        gpu.reset_transfer_counts()
        res = p.run(log=logs.append)
        outs[be] = zarr.open_array(str(tmp_path / f"{be}.zarr"), mode="r")[...]
        if be == "gpu":
            assert any("auto chose gpu" in line for line in logs), logs
            assert gpu._WARMED  # warmed up before the first task
            c = gpu.transfer_counts()
            assert c["h2d"] == res.tiles and c["d2h"] == res.tiles
            assert (tmp_path / "kc").is_dir()
            text = str(p.explain())
            assert "auto chose gpu" in text
    assert np.array_equal(outs["cpu"], outs["gpu"]) or np.max(np.abs(outs["cpu"].astype(int) - outs["gpu"])) <= 1


@needs_hooks
def test_explain_names_passes_that_stay_on_the_cpu(fake_cupy, tmp_path):
    import zarr

    zarr.create_array(str(tmp_path / "in.zarr"), data=np.zeros((32, 32), np.float32), chunks=(16, 16))
    p = convpipe.load({"convpipe": 1, "input": {"url": str(tmp_path / "in.zarr")},
                       "steps": [{"fft_filter": {"kind": "lowpass", "cutoff": 0.2}}],
                       "execution": {"backend": "gpu"}})
    text = str(p.explain())
    assert "fft_filter has no GPU path" in text


@needs_hooks
def test_bench_gpu_on_the_double(fake_cupy, tmp_path):
    rep = bench_gpu(shape=(4, 48, 40), chunks=(2, 24, 20), workdir=tmp_path, repeat=1)
    assert rep["max_rel_diff_gpu_vs_cpu"] <= 1e-5
    assert rep["end_to_end"]["gpu"]["transfers"]["h2d"] > 0 and "note" not in rep["end_to_end"]["gpu"]
    assert rep["speedup_end_to_end"] > 0 and rep["speedup_kernel"] > 0
