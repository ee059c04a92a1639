"""convpipe.digest: the one content hash. The spec hash and the input fingerprint are stored in outputs (a
resume compares them), so they must stay SHA-256 of the sorted-key JSON they always were."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import zarr

import convpipe
from convpipe.digest import digest
from convpipe.io import fingerprint


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def test_digest_is_sha256_of_sorted_json():
    obj = {"b": [1, 2.5, "x"], "a": {"z": None, "y": True}}
    assert digest(obj) == _sha(obj) and digest(obj, 16) == _sha(obj)[:16]
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})


def test_arrays_hash_by_content_shape_and_dtype():
    k = np.arange(6.0).reshape(2, 3)
    assert digest([k]) == digest([k.copy()]) == digest([np.ascontiguousarray(k.T).T.copy()])
    assert digest([k]) != digest([k.T])  # same bytes of a view, other array
    assert digest([k]) != digest([k.reshape(3, 2)]) != digest([k.astype(np.float32)])


def test_stored_hashes_keep_their_formula(tmp_path):
    p = convpipe.load({"convpipe": 1, "input": {"url": "in.zarr"}, "steps": [{"gaussian": {"sigma": 2}}]})
    c = p.spec.canonical()
    keep = {"steps": c["steps"], "precision": "float32", "dtype": "float32"}
    assert p.spec.hash(compute="float32", dtype="float32") == _sha(keep)[:16]
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=(4, 5), chunks=(2, 2), dtype="f4")
    z.attrs["note"] = {"b": 1, "a": [1, 2]}
    meta = {"url": "u", "shape": [4, 5], "dtype": "float32", "chunks": [2, 2], "attrs": {"note": {"b": 1, "a": [1, 2]}}}
    assert fingerprint(z, "u") == _sha(meta)[:16]
