"""Shared by the safety tests (test_safety*.py): a small input, specs, the CLI in-process, and byte snapshots."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import yaml
import zarr

from convpipe.cli import main
from convpipe.io import Manifest

SHAPE = (4, 40, 48)
CHUNKS = (2, 16, 16)
STEPS = [{"gaussian": {"sigma": {"y": 1.5, "x": 1.5}}}]


# --------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> content digest (or link target, or 'dir') of everything below ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _data(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32)


def _array(path, data=None, chunks=CHUNKS, **kw) -> zarr.Array:
    data = _data() if data is None else data
    z = zarr.create_array(store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, **kw)
    z[...] = data
    return z


def _ome(path: Path, data=None, zarr_format: int = 3) -> None:
    """A two-level OME-Zarr image group at ``path``."""
    from convpipe.ome import write_multiscales

    data = _data() if data is None else data
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    kw = {"dimension_names": tuple("zyx")} if zarr_format == 3 else {}
    g.create_array("0", shape=data.shape, chunks=CHUNKS, dtype=data.dtype, **kw)[...] = data
    g.create_array("1", shape=(4, 20, 24), chunks=CHUNKS, dtype=data.dtype, **kw)[...] = data[:, ::2, ::2]
    write_multiscales(g, "zyx", ["0", "1"], [[1, 1, 1], [1, 2, 2]])


def _spec(folder: Path, inp: str, out: str, steps=None, name: str = "spec.yaml", execution=None,
          **output) -> Path:
    d = {"convpipe": 1, "name": "safety", "input": {"url": inp}, "output": {"url": out, **output},
         "steps": steps or STEPS, "execution": execution or {"tile": dict(zip("zyx", CHUNKS))}}
    p = folder / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def _cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap.out, cap.err


def _one_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _interrupt(out: Path, keep: int) -> set[str]:
    """Make a complete output look interrupted: incomplete, only ``keep`` tiles recorded. Returns those."""
    node = zarr.open(str(out), mode="r+")
    node.attrs["convpipe"] = dict(node.attrs["convpipe"], complete=False)
    m = Manifest(str(out))
    done = sorted(m.done())
    assert done, "a complete plain output keeps its manifest"
    kept = set(done[:keep])
    for k in done[keep:]:
        m.fs.rm(f"{m.dir}/{k}")
    return kept


def _chunk_mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "c").rglob("*") if p.is_file()}


def make_work(tmp_path: Path) -> Path:
    w = tmp_path / "w"
    w.mkdir()
    _array(w / "in.zarr")
    _ome(w / "img.zarr")
    (w / "sub").mkdir()
    os.symlink(w, tmp_path / "link")  # a symlinked folder: link/in.zarr is w/in.zarr
    os.symlink(w / "in.zarr", w / "alias.zarr")  # a symlinked array
    return w
