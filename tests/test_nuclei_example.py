"""The 3-D nuclei example (pipelines/nuclei-3d.yaml): gaussian -> threshold -> label -> regionprops -> Parquet
on random balls, exact against scipy / scikit-image on the whole stack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import zarr

import convpipe
from convpipe import oracles as O
from convpipe.demo import NUCLEI_CHUNKS, _relocated, _write, make_nuclei
from test_regionprops import assert_same_rows

SPEC = Path(__file__).resolve().parents[1] / "pipelines" / "nuclei-3d.yaml"


def test_nuclei_example_equals_the_oracle(tmp_path):
    stack, centres = make_nuclei()
    _write(tmp_path / "nuclei.zarr", stack, NUCLEI_CHUNKS)
    p = convpipe.load(_relocated(SPEC, tmp_path))
    plan = p.explain()
    assert [op.name for op in plan.passes[1].ops] == ["label", "regionprops"]
    assert plan.passes[1].n_tiles > 1  # tiles cut the nuclei
    res = p.run()
    labels = zarr.open_array(res.output_url, mode="r")[...]
    steps = [{s.name: s.params.model_dump(exclude_defaults=True)} for s in p.spec.steps]
    want: dict = {}
    ref, _ = O.oracle(steps, stack, "zyx", tables=want)
    assert labels.dtype == np.int32 and np.array_equal(labels, ref)
    t = pq.read_table(res.outputs["steps[3].regionprops"]["table"])
    got = {c: t.column(c).to_numpy() for c in t.column_names}
    assert_same_rows(got, want[3], "nuclei")
    # the segmentation found the balls: one object per ball, each ball's centre inside its own object
    assert len(got["label"]) == len(centres)
    inside = labels[tuple(np.round(centres).astype(int).clip(0, np.array(stack.shape) - 1).T)]
    assert (inside > 0).all() and len(set(inside.tolist())) == len(centres)
    assert got["intensity_mean"].min() > 20000 > stack[labels == 0].mean()
