"""``convpipe verify`` on every op of SPEC.md, tables included: a good output passes, a damaged one fails.

Each case is a real ``Pipeline.run`` through Zarr (tiles that cut the kernels, tables next to the data);
``verify`` recomputes it with :mod:`convpipe.oracles`. Then one tile value or one table row is damaged and
verify must name it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

import convpipe
from convpipe.cli import main
from convpipe.ops import registry
from convpipe.verify import oracle_ops, verify

rng0 = np.random.default_rng(3)
K35 = rng0.standard_normal((3, 5)).round(3).tolist()
TPL = rng0.standard_normal((4, 5)).round(3).tolist()

# name: (steps, precision); every op of the registry appears in at least one
CASES: dict[str, tuple[list[dict], str]] = {
    "correlate-convolve": ([{"correlate": {"kernel": K35, "mode": "wrap"}},
                            {"convolve": {"kernel": K35, "method": "fft"}}], "float64"),
    "gaussian-uniform-median": ([{"gaussian": {"sigma": {"y": 1.5, "x": 0.7}}}, {"uniform": {"size": 3}},
                                 {"median": {"size": 3, "mode": "nearest"}}], "float32"),
    "minimum-maximum": ([{"minimum": {"size": {"y": 2, "x": 3}}}, {"maximum": {"size": 3, "mode": "mirror"}}],
                        "float64"),
    "edges": ([{"sobel": {}}, {"prewitt": {"output": "components"}}], "float64"),
    "scharr-orientation": ([{"scharr": {"output": "orientation"}}], "float32"),
    "laplace-family": ([{"laplace": {}}, {"gaussian_laplace": {"sigma": 1.0}},
                        {"gaussian_gradient_magnitude": {"sigma": 0.8}}], "float64"),
    "dog-unsharp-diffusion": ([{"difference_of_gaussians": {"low_sigma": 1.0}},
                               {"unsharp_mask": {"radius": 1.2, "amount": 0.5}},
                               {"diffusion": {"steps": 2, "dt": 0.2}}], "float64"),
    "stochastic": ([{"stochastic": {"kernel": [[0, 1, 2], [1, 4, 1], [2, 1, 0]], "normalize": "sum",
                                    "seed": 4}}], "float64"),
    "moving_average-autoregressive": ([{"moving_average": {"window": 3, "align": "trailing"}},
                                       {"autoregressive": {"coefficients": [0.5]}}], "float64"),
    "fft_filter": ([{"fft_filter": {"kind": "bandpass", "cutoff": [0.1, 0.5], "shape": "gaussian"}}], "float32"),
    "butterworth": ([{"butterworth": {"cutoff_frequency_ratio": 0.1, "high_pass": False}}], "float64"),
    "log_spectrum": ([{"log_spectrum": {}}], "float32"),
    "point": ([{"abs": {}}, {"log1p": {}}, {"sqrt": {}}, {"scale": {"factor": 3}}, {"clip": {"max": 2.5}},
               {"astype": {"dtype": "float32"}}], "float64"),
    "threshold": ([{"gaussian": {"sigma": 1}}, {"threshold": {"value": 0.1}}], "float64"),
    "zscore": ([{"gaussian": {"sigma": 1}}, {"zscore": {}}], "float64"),
    "rescale": ([{"rescale": {"percentiles": [1, 99]}}, {"uniform": {"size": 3}}], "float64"),
    "filter_bank": ([{"filter_bank": {"kernels": [K35, [[0, 1, 0], [1, -4, 1], [0, 1, 0]]]}}], "float64"),
    "peaks": ([{"gaussian": {"sigma": 1.5}}, {"peaks": {"radius": 2, "threshold": 0.1, "table": "p.parquet"}}],
              "float64"),
    "blobs": ([{"blobs": {"min_sigma": 1.5, "max_sigma": 4, "num_sigma": 4, "threshold": 0.02,
                          "table": "b.parquet"}}], "float64"),
    "match_template": ([{"match_template": {"template": TPL, "radius": 2, "threshold": 0.4,
                                            "table": "m.parquet"}}], "float64"),
    "match_template-crop-image": ([{"match_template": {"template": {"crop": {"z": 1, "y": [3, 9], "x": [4, 12]}}}}],
                                  "float32"),
    "stats": ([{"stats": {"per": "plane", "orientation_histogram": {"bins": 6},
                          "spectral_bands": [0.0, 0.4, 1.5], "table": "s.parquet"}}], "float64"),
    "stats-tile": ([{"stats": {"per": "tile", "table": "s.parquet"}}], "float64"),
    "layers": ([{"conv_layer": {"weights": [[[[0.5, -1, 0.25], [1, 2, 0]]], [[[1, 0, 0], [0, 0, -1]]]],
                                "bias": [0.1, 0], "activation": "relu", "extent": "valid"}},
                {"pool": {"size": 2, "kind": "max"}},
                {"correlate": {"kernel": K35, "extent": "full", "stride": {"x": 2}, "mode": "wrap"}}], "float64"),
    "label": ([{"threshold": {"value": 0.3}}, {"label": {"connectivity": 2}}], "float64"),
    "label-regionprops": ([{"threshold": {"value": 0.3}}, {"label": {"axes": "yx"}},
                           {"regionprops": {"intensity": "input", "axes": "yx", "table": "r.parquet"}}], "float64"),
    "threshold-otsu-binary": ([{"threshold": {"method": "otsu"}}, {"binary_opening": {"connectivity": 2}},
                               {"binary_closing": {"footprint": [[0, 1], [1, 1]], "axes": "yx"}},
                               {"binary_erosion": {"iterations": 2, "axes": "yx"}},
                               {"binary_dilation": {"connectivity": 3}}], "float64"),
    "grey-morphology": ([{"grey_erosion": {"size": {"y": 2, "x": 3}}}, {"grey_dilation": {"size": 3}},
                         {"grey_opening": {"footprint": [[0, 1, 1], [1, 1, 0]], "axes": "yx", "mode": "wrap"}},
                         {"grey_closing": {"size": 2, "mode": "nearest"}}], "float64"),
    "distance_transform": ([{"threshold": {"value": 0.3}}, {"distance_transform": {"sampling": {"z": 2, "y": 1, "x": 0.5}}},
                            {"distance_transform": {"axes": "yx"}}], "float64"),
    "tophats": ([{"white_tophat": {"size": {"y": 3, "x": 2}}}, {"black_tophat": {"size": 3, "axes": "yx",
                                                                                "mode": "mirror"}}], "float32"),
}


def _data(shape=(3, 30, 34)) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 0.2
    g = np.indices(shape[1:]).astype(float)
    for cy, cx, s in ((8, 9, 2.0), (20, 25, 1.5), (15, 5, 2.5)):
        x += np.exp(-((g[0] - cy) ** 2 + (g[1] - cx) ** 2) / (2 * s * s))  # spots for blobs and peaks
    return x


def _run(tmp: Path, steps, precision, *, tile=None, name="out.zarr") -> Path:
    z = zarr.create_array(str(tmp / "in.zarr"), shape=(3, 30, 34), chunks=(1, 8, 8), dtype="f8", overwrite=True)
    z[...] = _data()
    steps = [{op: dict(p, table=str(tmp / p["table"])) if p.get("table") else p for op, p in st.items()}
             for st in steps]
    spec = {"convpipe": 1, "input": {"url": str(tmp / "in.zarr")},
            "output": {"url": str(tmp / name), "overwrite": True}, "steps": steps,
            "execution": {"cluster": "threads", "precision": precision, "tile": tile or {"z": 1, "y": 16, "x": 16}}}
    convpipe.load(spec).run()
    return tmp / name


@pytest.mark.parametrize("case", sorted(CASES))
def test_verify_passes_then_catches_damage(tmp_path, case):
    steps, precision = CASES[case]
    out = _run(tmp_path, steps, precision)
    res = verify(str(out), all=True)
    assert res.ok, res.summary()
    assert not res.not_verifiable and res.checked
    has_table = [s for s in steps if next(iter(s.values())).get("table")]
    assert len(res.tables) == len(has_table)
    # damage one voxel of one tile (in a 0/1 output, threshold or binary morphology: a flip)
    z = zarr.open_array(str(out), mode="r+")
    idx = (0,) * (z.ndim - 2) + (5, 7)
    v = z[idx]
    if case == "threshold":
        z[idx] = 1 - v
    elif z.dtype.kind in "iu":  # labels: an integer store would truncate half a step away
        z[idx] = v + 1
    else:
        z[idx] = v + 0.5 * max(1.0, abs(float(v)))
    z[idx] = (1 - v) if case == "threshold" or z.dtype == np.uint8 else v + 0.5 * max(1.0, abs(float(v)))
    bad = verify(str(out), all=True)
    assert not bad.ok and len(bad.differing) == 1, bad.summary()
    assert bad.differing[0].worst == idx


@pytest.mark.parametrize("case", ["peaks", "blobs", "match_template", "stats", "stats-tile", "label-regionprops"])
def test_verify_catches_a_damaged_table(tmp_path, case):
    steps, precision = CASES[case]
    out = _run(tmp_path, steps, precision)
    assert verify(str(out), sample=1).ok
    url = next(iter(next(iter(s.values()))["table"] for s in steps if next(iter(s.values())).get("table")))
    path = tmp_path / Path(url).name
    t = pq.read_table(path)
    cols = {c: t.column(c).to_numpy().copy() for c in t.column_names}
    meta = t.schema.metadata
    value = [c for c in cols if c not in "tczyx" and not c.endswith("_stop") and c != "label"][0]
    cols[value][0] += 1.0  # one value off
    pq.write_table(pa.table(cols).replace_schema_metadata(meta), path)
    res = verify(str(out), sample=1)
    assert not res.ok and "values differ" in res.summary()
    if len(cols[value]) > 1:
        cols = {c: v[1:] for c, v in cols.items()}  # one row gone
        pq.write_table(pa.table(cols).replace_schema_metadata(meta), path)
        res = verify(str(out), sample=1)
        assert not res.ok and "missing" in res.summary()


def test_every_op_has_an_oracle_and_a_case():
    assert set(registry.names()) <= set(oracle_ops())
    used = {next(iter(s)) for steps, _ in CASES.values() for s in steps}
    assert set(registry.names()) <= used, sorted(set(registry.names()) - used)


def test_without_scikit_image_verify_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    out = _run(tmp_path, *CASES["blobs"])
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    res = verify(str(out), all=True)
    assert not res.ok and res.checked == []
    assert res.not_verifiable == ["steps[0].blobs (its reference is scikit-image's, which is not installed: "
                                  "pip install scikit-image)"]
    assert main(["verify", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "scikit-image" in line]) == 1 and "Traceback" not in "\n".join(err)


def test_whole_array_checks_have_a_memory_bound(tmp_path):
    out = _run(tmp_path, *CASES["zscore"])
    res = verify(str(out), sample=2, max_bytes=1000)
    assert not res.ok and any("whole input in memory" in p for p in res.problems)


def test_verify_a_reordered_input_and_an_incomplete_output(tmp_path):
    """axes xzy: tiles are keyed in tczyx order in the manifest; verify finds the recorded ones."""
    xs = np.ascontiguousarray(np.transpose(_data(), (2, 0, 1)))
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=xs.shape, chunks=(8, 1, 8), dtype="f8")
    z[...] = xs
    spec = {"convpipe": 1, "input": {"url": str(tmp_path / "in.zarr"), "axes": "xzy"},
            "output": {"url": str(tmp_path / "o.zarr")}, "steps": [{"correlate": {"kernel": K35}}],
            "execution": {"precision": "float64", "tile": [16, 1, 16]}}
    convpipe.load(spec).run()
    assert verify(str(tmp_path / "o.zarr"), all=True).ok
    o = zarr.open_array(str(tmp_path / "o.zarr"), mode="r+")
    prov = dict(o.attrs["convpipe"])
    prov["complete"] = False
    o.attrs["convpipe"] = prov
    done = tmp_path / "o.zarr" / ".convpipe" / "done"
    keep = sorted(p.name for p in done.iterdir())[:3]
    for p in done.iterdir():
        if p.name not in keep:
            p.unlink()
    res = verify(str(tmp_path / "o.zarr"), all=True)
    assert sorted(t.key for t in res.checked) == keep and not res.differing
