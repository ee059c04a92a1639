"""The label / regionprops rows of ``convpipe bench --suite extra`` (convpipe.bench.objects)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

from convpipe import bench
from convpipe.bench import objects


def _z(path, a):
    zarr.create_array(str(path), shape=a.shape, chunks=(2, 8, 8), dtype=a.dtype)[...] = a
    return str(path)


def test_the_checks_can_fail(tmp_path):
    rng = np.random.default_rng(0)
    lab, n = ndi.label(rng.random((4, 20, 20)) < 0.4)
    perm = np.r_[0, rng.permutation(n) + 1].astype(np.int32)
    a, b = _z(tmp_path / "a.zarr", lab.astype(np.int32)), _z(tmp_path / "b.zarr", perm[lab])
    assert objects._equal(a, a) and not objects._equal(a, b)
    assert objects._same_partition(a, b)  # another numbering of the same components
    merged = np.where(lab == 2, 1, lab).astype(np.int32)
    assert not objects._same_partition(a, _z(tmp_path / "m.zarr", merged))
    split = lab.astype(np.int32).copy()
    split[split == 1] = np.where(np.arange((split == 1).sum()) % 2, 1, n + 1)
    assert not objects._same_partition(a, _z(tmp_path / "s.zarr", split))


def test_inputs_are_deterministic(tmp_path):
    u = objects.make_binary(str(tmp_path / "x.zarr"), (6, 40, 40), (4, 16, 16), 0.3, seed=2)
    x = zarr.open_array(u)[...]
    assert x.dtype == np.uint8 and set(np.unique(x)) == {0, 1} and abs(x.mean() - 0.3) < 0.03
    v = objects.make_binary(str(tmp_path / "y.zarr"), (6, 40, 40), (4, 16, 16), 0.3, seed=2)
    assert np.array_equal(x, zarr.open_array(v)[...])
    b = zarr.open_array(objects.make_balls(str(tmp_path / "b.zarr"), (8, 40, 40), (4, 20, 20), 6, seed=1))[...]
    assert b.dtype == np.uint16 and (b > 12000).sum() > 100 and np.median(b) < 5000


def test_rows_are_registered():
    assert {"label", "regionprops"} <= set(bench.EXTRA_ROWS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_rows(tmp_path):
    report = bench.run_extra(("label", "regionprops"), tmp_path, quick=True)
    lab, rp = report["rows"]["label"], report["rows"]["regionprops"]
    assert lab["status"] == "ok" and lab["convpipe_equals_scipy"] and lab["dask_image_same_partition"]
    assert rp["status"] == "ok" and rp["met"], rp["tables_equal_oracle"]
