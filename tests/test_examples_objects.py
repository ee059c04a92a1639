"""The object examples of pipelines/: coins -> distances (runs in the demo), and the coins segmentation
(label and regionprops).

Each runs through Zarr on scikit-image's coins with tiles far smaller than a coin, and is compared with the
chain of SPEC.md's oracles on the whole image (float64 compute, so that the Otsu threshold is computed from
the same values as the oracle's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
import zarr

import convpipe
from convpipe.oracles import assert_conforms, oracle

skimage = pytest.importorskip("skimage")
from skimage import data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _relocate(path: Path, tmp: Path) -> dict:
    """The example spec with its input, output and tables in ``tmp`` (their file names kept)."""
    spec = yaml.safe_load(path.read_text())
    spec["input"] = {"url": str(tmp / Path(spec["input"]["url"]).name)}
    out = spec["output"] if isinstance(spec["output"], dict) else {"url": spec["output"]}
    spec["output"] = dict(out, url=str(tmp / Path(out["url"]).name))
    for st in spec["steps"]:
        (name, p), = st.items()
        if isinstance(p, dict) and p.get("table"):
            p["table"] = str(tmp / Path(p["table"]).name)
    spec["execution"] = {"tile": {"y": 48, "x": 64}, "precision": "float64"}
    return spec


def _coins(tmp: Path) -> np.ndarray:
    x = data.coins()
    z = zarr.create_array(str(tmp / "coins.zarr"), shape=x.shape, chunks=(48, 64), dtype=x.dtype)
    z[...] = x
    return x


def test_coins_distance_example(tmp_path):
    x = _coins(tmp_path)
    spec = _relocate(REPO / "pipelines" / "coins-distance.yaml", tmp_path)
    p = convpipe.load(spec)
    res = p.run()
    assert len(res.plan.passes) == 3  # threshold's pre-pass cuts; the transform's y axis is a pass of its own
    out = zarr.open_array(res.output_url, mode="r")[...]
    ref, _ = oracle(spec["steps"], x, "yx")
    assert_conforms(out, ref, "float64", what="coins-distance")
    assert ref.max() > 20 and (ref == 0).mean() > 0.3  # objects tens of voxels across, tiles 48 x 64


def test_coins_segmentation_example(tmp_path):
    x = _coins(tmp_path)
    spec = _relocate(REPO / "pipelines" / "coins-segmentation.yaml", tmp_path)
    res = convpipe.load(spec).run()
    g = zarr.open_group(res.output_url, mode="r")
    labels = g["0"][...]
    want: dict = {}
    ref, _ = oracle(spec["steps"], x, "yx", tables=want)
    assert np.array_equal(labels, ref)  # scipy's numbers, whatever the tiling
    assert 15 <= labels.max() <= 30  # the coins (24 of them), not specks
    attrs = g.attrs.asdict()
    assert "image-label" in attrs.get("ome", {})
    table = pq.read_table(spec["steps"][-1]["regionprops"]["table"]).to_pydict()
    (i, cols), = want.items()
    assert sorted(table["label"]) == sorted(np.asarray(cols["label"]).tolist())
    order = np.argsort(table["label"])
    wo = np.argsort(cols["label"])
    for c in cols:
        got = np.asarray(table[c], dtype=np.float64)[order]
        exp = np.asarray(cols[c], dtype=np.float64)[wo]
        assert np.allclose(got, exp, rtol=1e-9, atol=0), c
