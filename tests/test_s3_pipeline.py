"""A whole pipeline from S3 to S3 (image + Parquet table), and resume on S3, against moto's server."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

pytest.importorskip("moto.server", reason="moto[server] is not installed")
pytest.importorskip("s3fs", reason="s3fs is not installed")

import convpipe  # noqa: E402
from convpipe.io import Manifest  # noqa: E402
from test_s3 import BUCKET, _options, endpoint  # noqa: E402,F401  (the module's moto fixture)


def _spec(so: dict, out: str) -> dict:
    return {"convpipe": 1, "name": "s3",
            "input": {"url": f"s3://{BUCKET}/pipe-in.zarr", "storage_options": so},
            "output": {"url": out, "storage_options": so},
            "steps": [{"gaussian": {"sigma": 1.5, "mode": "wrap"}},
                      {"peaks": {"radius": 2, "threshold": 0.6, "table": f"s3://{BUCKET}/peaks.parquet"}}],
            "execution": {"tile": [16, 16], "precision": "float64"}}


def test_pipeline_s3_to_s3_with_table_and_resume(endpoint):  # noqa: F811
    import pyarrow.parquet as pq
    import s3fs

    so = _options(endpoint)
    x = np.random.default_rng(5).random((48, 40))
    zarr.create_array(store=f"s3://{BUCKET}/pipe-in.zarr", data=x, chunks=(16, 16), storage_options=so,
                      overwrite=True)
    out = f"s3://{BUCKET}/pipe-out.zarr"
    p = convpipe.load(_spec(so, out))
    res = p.run(overwrite=True)
    g = ndi.gaussian_filter(x, 1.5, mode="wrap")
    got = zarr.open_array(store=out, storage_options=so, mode="r")
    np.testing.assert_allclose(got[...], g, rtol=0, atol=1e-10)
    assert got.attrs["convpipe"]["complete"] is True
    fs = s3fs.S3FileSystem(**so)
    with fs.open(f"{BUCKET}/peaks.parquet", "rb") as f:
        t = pq.read_table(f).to_pydict()
    mx = ndi.maximum_filter(g, size=5, mode="nearest")
    assert set(zip(t["y"], t["x"])) == set(map(tuple, np.argwhere((g == mx) & (g > 0.6))))
    assert res.outputs["steps[1].peaks"]["rows"] == len(t["y"])

    # interrupt: forget most finished tiles, mark incomplete, damage their chunks; --resume repairs exactly
    arr = zarr.open_array(store=out, storage_options=so, mode="r+")
    arr.attrs["convpipe"] = dict(arr.attrs["convpipe"], complete=False)
    man = Manifest(out, so)
    done = sorted(man.done())
    keep = set(done[:2])
    for key in done:
        if key not in keep:
            man.fs.rm(f"{man.dir}/{key}")
    arr[16:, :] = np.nan
    with pytest.raises(convpipe.InputError, match="--resume"):
        p.run()
    res2 = p.run(resume=True)
    assert res2.skipped_tiles == len(keep)
    final = zarr.open_array(store=out, storage_options=so, mode="r")
    np.testing.assert_allclose(final[...], g, rtol=0, atol=1e-10)
    assert final.attrs["convpipe"]["complete"] is True
