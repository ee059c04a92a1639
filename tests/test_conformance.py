"""Conformance: every op, every mode, every chunking, axis order and table equals the whole-array oracle,
on every executor.

The contract: ``max|out - oracle| <= tol * max(1, max|oracle|)`` with tol 1e-10 in float64 and 1e-5 in
float32 (1e-8 / 1e-4 for FFT methods). The oracles live in ``convpipe.oracles`` (scipy / scikit-image in
float64 on the whole array, per sub-array over the axes an op does not act on).

The suite is written once, as zarr-python's ``StoreTests`` are: tests/conformance_cases.py holds the one
case list, tests/executors.py the executors (threads, sync, processes, a distributed LocalCluster, the
CuPy double, real CuPy) and how each runs a case through its real entry path (``Pipeline.apply`` in
memory, ``Pipeline.run`` Zarr to Zarr on schedulers and clusters). ``test_conforms`` runs every case on
threads and a sample of the matrix on the others by default (every op and every group on each); ``-m slow``
runs the whole matrix. The tests after it check what a case list cannot: graph keys, refusals, output
locations.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conformance_cases import MODES, all_cases
from executors import EXECUTORS, run_check, sample
from harness import check, make_spec

from convpipe.oracles import assert_conforms, oracle, step_parts
from test_backends import fake_cupy  # noqa: F401  (the CuPy double: a fixture the cupy-double executor uses)

# sqrt / log1p of negative values give NaN, in the oracle as in the pipeline
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

CASES = all_cases()


def _params() -> list:
    out = []
    for name, ex in EXECUTORS.items():
        for case, checks, slow, part in sample(CASES, ex):
            marks = [*case.marks, *ex.marks, *([pytest.mark.slow] if slow else [])]
            out.append(pytest.param(name, checks, marks=marks, id=f"{name}-{case.id}{part}"))
    return out


PARAMS = _params()


def pytest_generate_tests(metafunc):
    """Parametrize ``test_conforms``; under the default ``-m 'not slow'`` only with the default sample: the
    whole matrix is ~25,000 items, and collecting them to deselect them costs every worker ~10 s."""
    if metafunc.definition.name != "test_conforms":
        return
    default_run = (metafunc.config.getoption("markexpr") or "").replace(" ", "") == "notslow"
    params = [p for p in PARAMS if not (default_run and any(m.name == "slow" for m in p.marks))]
    metafunc.parametrize("executor,checks", params, indirect=["executor"])


def test_conforms(executor, checks, tmp_path):
    for i, c in enumerate(checks):
        run_check(executor, c, tmp_path / f"check{i}")


def test_case_counts():
    """Every executor runs every group and every op in the default run, and the whole matrix under slow
    (the counts are printed: ``pytest -s -k test_case_counts``)."""
    from convpipe.ops import registry

    ops = set(registry.names())
    counts = {}
    for name, ex in EXECUTORS.items():
        fast = [(c, ch) for c, ch, slow, _ in sample(CASES, ex) if not slow]
        slow = [(c, ch) for c, ch, s, _ in sample(CASES, ex) if s]
        assert {c.group for c, _ in fast} == {c.group for c in CASES if not c.slow}, name
        covered = {step_parts(s)[0] for _, checks in fast for c in checks for s in c.steps}
        assert ops <= covered, (name, sorted(ops - covered))
        every = [id(ch) for _, checks in fast + slow for ch in checks]  # each check of each case exactly once
        assert len(every) == len(set(every)) == sum(len(c.checks) for c in CASES), name
        counts[name] = (len(fast), len(fast) + len(slow))
    print("executor: (default cases, all cases under -m slow)", counts)
    assert counts["threads"][1] >= 1300  # what test_conformance ran on threads before the executors came
    assert 2 * counts["threads"][0] >= sum(not c.slow for c in CASES)  # half of each group by default


# --------------------------------------------------------------------------- what a case list cannot check


def test_fused_chain_each_op_keeps_its_mode():
    """The same op twice with different modes is not the same as either mode twice."""
    x = np.random.default_rng(5).standard_normal((9, 12))
    steps = [{"gaussian": {"sigma": 2.0, "mode": "wrap"}}, {"gaussian": {"sigma": 2.0, "mode": "constant"}}]
    _, ref = check(steps, x, "yx", (2, 3))
    for m in ("wrap", "constant"):
        other, _ = oracle([{"gaussian": {"sigma": 2.0, "mode": m}}] * 2, x, "yx")
        assert np.abs(other - ref).max() > 1e-3


@pytest.mark.parametrize("name", ["correlate", "convolve"])
def test_origin_outside_kernel_is_refused(name):
    import convpipe
    from convpipe.errors import ConvpipeError

    with pytest.raises((ConvpipeError, ValueError), match="origin"):
        p = convpipe.load(make_spec([{name: {"kernel": [[1.0, 2.0, 3.0]], "origin": [0, 2]}}]))
        p.apply(np.zeros((4, 4)), axes="yx").compute()


# --------------------------------------------------------------------------- the dask tokenize trap


def _orientation_pair(kind: str):
    K = np.random.default_rng(20).standard_normal((1, 3, 3))
    if kind == "swap-yx":
        return K, K.transpose(0, 2, 1)  # same shape, a transposed view
    return K, K.T  # (1, 3, 3) and (3, 3, 1)


@pytest.mark.parametrize("kind", ["swap-yx", "full-transpose"])
def test_kernel_and_its_transpose_in_one_graph(kind):
    import dask
    import dask.array as da

    import convpipe

    K, KT = _orientation_pair(kind)
    assert not np.allclose(np.ascontiguousarray(K).ravel(), np.ascontiguousarray(KT).ravel())
    x = np.random.default_rng(21).standard_normal((4, 9, 11))
    arr = da.from_array(x, chunks=(2, 4, 5))
    pa = convpipe.load(make_spec([{"correlate": {"kernel": K.tolist(), "axes": "zyx"}}]))
    pb = convpipe.load(make_spec([{"correlate": {"kernel": KT.tolist(), "axes": "zyx"}}]))
    a, b = dask.compute(pa.apply(arr, axes="zyx"), pb.apply(arr, axes="zyx"))
    ra, _ = oracle([{"correlate": {"kernel": K.tolist()}}], x, "zyx")
    rb, _ = oracle([{"correlate": {"kernel": KT.tolist()}}], x, "zyx")
    assert np.abs(ra - rb).max() > 1e-3
    assert_conforms(a, ra, what="K")
    assert_conforms(b, rb, what="K transposed")
    # both in one fused chain, and one graph holding both orders
    c1 = convpipe.load(make_spec([{"correlate": {"kernel": K.tolist()}}, {"correlate": {"kernel": KT.tolist()}}]))
    c2 = convpipe.load(make_spec([{"correlate": {"kernel": KT.tolist()}}, {"correlate": {"kernel": K.tolist()}}]))
    o1, o2 = dask.compute(c1.apply(arr, axes="zyx"), c2.apply(arr, axes="zyx"))
    r1, _ = oracle([{"correlate": {"kernel": K.tolist()}}, {"correlate": {"kernel": KT.tolist()}}], x, "zyx")
    r2, _ = oracle([{"correlate": {"kernel": KT.tolist()}}, {"correlate": {"kernel": K.tolist()}}], x, "zyx")
    assert_conforms(o1, r1, what="K then KT")
    assert_conforms(o2, r2, what="KT then K")


def test_kernel_and_its_transpose_as_numpy_arrays():
    import dask
    import dask.array as da

    import convpipe

    K, KT = _orientation_pair("swap-yx")
    x = np.random.default_rng(22).standard_normal((4, 9, 11))
    arr = da.from_array(x, chunks=(2, 4, 5))
    pa = convpipe.load(make_spec([{"correlate": {"kernel": K}}]))
    pb = convpipe.load(make_spec([{"correlate": {"kernel": KT}}]))
    a, b = dask.compute(pa.apply(arr, axes="zyx"), pb.apply(arr, axes="zyx"))
    assert_conforms(a, oracle([{"correlate": {"kernel": K}}], x, "zyx")[0])
    assert_conforms(b, oracle([{"correlate": {"kernel": KT}}], x, "zyx")[0])


def test_kernel_and_its_transpose_as_npy_files(tmp_path):
    import dask
    import dask.array as da

    import convpipe

    K, KT = _orientation_pair("swap-yx")
    np.save(tmp_path / "k.npy", K)
    np.save(tmp_path / "kt.npy", np.ascontiguousarray(KT))
    x = np.random.default_rng(23).standard_normal((4, 9, 11))
    arr = da.from_array(x, chunks=(2, 4, 5))
    pa = convpipe.load(make_spec([{"correlate": {"kernel": str(tmp_path / "k.npy")}}]))
    pb = convpipe.load(make_spec([{"correlate": {"kernel": str(tmp_path / "kt.npy")}}]))
    a, b = dask.compute(pa.apply(arr, axes="zyx"), pb.apply(arr, axes="zyx"))
    assert_conforms(a, oracle([{"correlate": {"kernel": K.tolist()}}], x, "zyx")[0])
    assert_conforms(b, oracle([{"correlate": {"kernel": KT.tolist()}}], x, "zyx")[0])


def test_same_relative_npy_name_in_two_spec_folders(tmp_path):
    import dask
    import dask.array as da
    import yaml

    import convpipe

    K, KT = _orientation_pair("swap-yx")
    pipes = []
    for sub, k in (("a", K), ("b", KT)):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "k.npy", np.ascontiguousarray(k))
        (tmp_path / sub / "spec.yaml").write_text(yaml.safe_dump(make_spec([{"correlate": {"kernel": "k.npy"}}])))
        pipes.append(convpipe.load(tmp_path / sub / "spec.yaml"))
    x = np.random.default_rng(24).standard_normal((4, 9, 11))
    arr = da.from_array(x, chunks=(2, 4, 5))
    a, b = dask.compute(pipes[0].apply(arr, axes="zyx"), pipes[1].apply(arr, axes="zyx"))
    assert_conforms(a, oracle([{"correlate": {"kernel": K.tolist()}}], x, "zyx")[0], what="folder a")
    assert_conforms(b, oracle([{"correlate": {"kernel": KT.tolist()}}], x, "zyx")[0], what="folder b")


def test_apply_accepts_numpy_and_default_axes():
    import dask.array as da

    import convpipe

    x = np.random.default_rng(38).standard_normal((6, 7))
    steps = [{"gaussian": {"sigma": 1.0, "mode": "wrap"}}, {"laplace": {}}]
    out = convpipe.load(make_spec(steps)).apply(x).compute()
    assert_conforms(out, oracle(steps, x, "yx")[0])
    x3 = np.random.default_rng(39).standard_normal((3, 6, 7))
    out = convpipe.load(make_spec(steps)).apply(x3, tile=[1, 4, 4]).compute()  # default axes: zyx
    assert_conforms(out, oracle(steps, x3, "zyx")[0])
    spec = make_spec(steps, execution={"tile": {"y": 2, "x": 3}})  # the spec's tile, when apply gets none
    out = convpipe.load(spec).apply(da.from_array(x3, chunks=(1, 1, 2)), axes="zyx").compute()
    assert_conforms(out, oracle(steps, x3, "zyx")[0])


# --------------------------------------------------------------------------- full runs through Zarr


def _write_input(url: str, x: np.ndarray, chunks, zarr_format: int = 3):
    import zarr

    if url.startswith("memory://"):
        from zarr.storage import FsspecStore

        store = FsspecStore.from_url(url, read_only=False)
    else:
        store = url.removeprefix("file://")
    a = zarr.create_array(store=store, shape=x.shape, chunks=chunks, dtype=x.dtype, zarr_format=zarr_format,
                          overwrite=True)
    a[...] = x


def _read(url: str):
    import zarr

    if url.startswith("memory://"):
        from zarr.storage import FsspecStore

        return zarr.open_array(FsspecStore.from_url(url, read_only=True), mode="r")
    return zarr.open_array(url.removeprefix("file://"), mode="r")


ZARR_CASES = {
    "gauss-wrap>sobel-constant f64": dict(
        steps=[{"gaussian": {"sigma": 1.5, "mode": "wrap"}}, {"sobel": {"mode": "constant"}}],
        shape=(4, 11, 13), chunks=(1, 2, 3), dtype="float64", precision="float64"),
    "median>log f32 tile": dict(
        steps=[{"median": {"size": 3, "mode": "mirror"}}, {"gaussian_laplace": {"sigma": 1.0, "mode": "nearest"}}],
        shape=(3, 12, 10), chunks=(2, 3, 4), dtype="float32", precision="float32",
        execution={"tile": [2, 6, 8]}, output={"chunks": [1, 6, 4]}),
    "uint8 diffusion v2": dict(
        steps=[{"diffusion": {"steps": 3, "dt": 0.2, "mode": "wrap"}}, {"uniform": {"size": 4}}],
        shape=(2, 9, 14), chunks=(1, 4, 5), dtype="uint8", precision="float64", output={"zarr_format": 2}),
    "threshold uint8 out": dict(
        steps=[{"gaussian": {"sigma": 1.0}}, {"threshold": {"value": 0.1}}],
        shape=(2, 10, 10), chunks=(1, 3, 3), dtype="float64", precision="float64"),
    "components": dict(
        steps=[{"prewitt": {"output": "components", "axes": "zyx", "mode": "reflect"}}],
        shape=(3, 7, 8), chunks=(1, 3, 3), dtype="float64", precision="float64"),
    "halo > array, wrap": dict(
        steps=[{"gaussian": {"sigma": 8.0, "mode": "wrap"}}, {"maximum": {"size": 3, "mode": "constant", "cval": 0.3}}],
        shape=(2, 5, 6), chunks=(1, 1, 2), dtype="float64", precision="float64", output={"dtype": "float64"}),
}


@pytest.mark.parametrize("where", ["local", "file-url", "memory"])
@pytest.mark.parametrize("case", list(ZARR_CASES))
def test_zarr_run(case, where, tmp_path, request):
    import convpipe

    c = ZARR_CASES[case]
    rng = np.random.default_rng(34)
    x = rng.standard_normal(c["shape"])
    x = (np.clip(x * 40 + 120, 0, 255).astype(c["dtype"]) if c["dtype"] == "uint8" else x.astype(c["dtype"]))
    tag = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)
    if where == "memory":
        in_url, out_url = f"memory://convpipe-tests/{tag}/in.zarr", f"memory://convpipe-tests/{tag}/out.zarr"
    else:
        in_url, out_url = str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr")
        if where == "file-url":
            in_url, out_url = "file://" + in_url, "file://" + out_url
    _write_input(in_url, x, c["chunks"])
    spec = make_spec(c["steps"], c["precision"], input={"url": in_url},
                     output={"url": out_url, **c.get("output", {})}, execution=c.get("execution", {}))
    res = convpipe.load(spec).run()
    got = _read(out_url)
    ref, _ = oracle(c["steps"], x, "zyx" if len(c["shape"]) == 3 else None)
    out = got[...]
    want_dtype = c.get("output", {}).get("dtype") or (
        "uint8" if "threshold" in step_parts(c["steps"][-1])[0] else c["precision"])
    assert out.dtype == np.dtype(want_dtype)
    if "output" in c and "chunks" in c["output"]:
        assert tuple(got.chunks) == tuple(c["output"]["chunks"])
    if out.dtype == np.uint8:
        pre, _ = oracle(c["steps"][:-1], x, "zyx")
        thr = step_parts(c["steps"][-1])[1]["value"]
        ambiguous = np.abs(pre - thr) <= 1e-5 * max(1.0, np.abs(pre).max())
        assert np.array_equal(out[~ambiguous], ref[~ambiguous])
    else:
        assert_conforms(out, ref, c["precision"], what=f"zarr run {case} at {where}")
    assert got.attrs["convpipe"]["complete"] is True
    assert res.voxels == int(np.prod(ref.shape))


def test_zarr_run_overwrite_and_refuse(tmp_path):
    import convpipe
    from convpipe.errors import ConvpipeError

    x = np.random.default_rng(35).standard_normal((5, 9))
    in_url, out_url = str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr")
    _write_input(in_url, x, (2, 4))
    steps = [{"uniform": {"size": 3, "mode": "wrap"}}]
    p = convpipe.load(make_spec(steps, "float64", input={"url": in_url}, output={"url": out_url}))
    p.run()
    with pytest.raises(ConvpipeError):
        p.run()
    steps2 = [{"gaussian": {"sigma": 2.0, "mode": "mirror"}}]
    p2 = convpipe.load(make_spec(steps2, "float64", input={"url": in_url}, output={"url": out_url}))
    p2.run(overwrite=True)
    assert_conforms(_read(out_url)[...], oracle(steps2, x, "yx")[0])


@pytest.mark.parametrize("mode", MODES)
def test_rank_oracle_agrees_with_scipy(mode):
    """The brute-force rank oracle is scipy's median/minimum/maximum_filter wherever scipy's N-D path runs
    (2-D and 3-D, even and odd sizes, windows longer than the array)."""
    import scipy.ndimage as ndi
    from convpipe.oracles import rank_filter

    rng = np.random.default_rng(36)
    fns = {"median": ndi.median_filter, "minimum": ndi.minimum_filter, "maximum": ndi.maximum_filter}
    for shape, size in (((7, 9), (3, 4)), ((4, 5), (9, 2)), ((2, 3, 4), (3, 1, 5)), ((1, 6), (5, 3))):
        x = rng.standard_normal(shape)
        for kind, fn in fns.items():
            want = fn(x, size=size, mode=mode, cval=0.3)
            assert np.array_equal(rank_filter(x, size, kind, mode, 0.3), want), (kind, shape, size)


def test_oracle_module_does_not_import_convpipe():
    """The oracle must not share code with what it checks: the ``convpipe.oracles`` package imports numpy,
    scipy and scikit-image only (and the standard library), nothing of convpipe but its own family modules,
    not even lazily."""
    import ast
    import sys

    import convpipe.oracles

    pkg = Path(convpipe.oracles.__file__).parent
    files = sorted(pkg.glob("*.py"))
    assert len(files) > 5 and not list(pkg.glob("*/*.py"))  # one flat package of family modules
    own = {f.stem for f in files}
    roots = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                roots.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: only a sibling module of the package itself
                    assert node.level == 1 and node.module in own, f"{f.name} line {node.lineno} leaves the package"
                else:
                    roots.add(node.module.split(".")[0])
    allowed = {"numpy", "scipy", "skimage", "__future__"} | set(sys.stdlib_module_names)
    assert roots <= allowed, roots - allowed
