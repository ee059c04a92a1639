"""Open inputs (Zarr v2/v3 arrays, OME-Zarr levels, fsspec URLs), create outputs, fingerprint inputs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from .errors import InputError, OutputExistsError
from .spec import AXES_ORDER


def _is_url(url: str) -> bool:
    return "://" in url


def _storage(url: str, storage_options: dict | None) -> Any:
    """What zarr.open_* takes as ``store``: a path, or an fsspec-backed store for URLs."""
    if _is_url(url) and not url.startswith("file://"):
        from zarr.storage import FsspecStore

        try:
            return FsspecStore.from_url(url, storage_options=storage_options or None, read_only=False)
        except Exception as e:  # fsspec raises many types (ImportError for a missing protocol, ...)
            raise InputError(f"cannot open {url}: {type(e).__name__}: {e}") from None
    return url[len("file://"):] if url.startswith("file://") else url


def open_input(url: str, *, level: int = 0, axes: str | None = None,
               storage_options: dict | None = None) -> tuple[Any, str, dict]:
    """Open the input array; return (zarr array, axes, OME info dict or {}).

    An OME-Zarr group opens at ``level``; axes come from the spec, else OME-Zarr metadata, else the last
    N letters of 'tczyx'.
    """
    from .ome import open_level
    from .roots import guard

    guard(url, what="the input")
    arr, ome_axes, info = open_level(url, level, storage_options)
    ome = {"info": info} if info is not None else {}
    if axes is None:
        axes = ome_axes or (AXES_ORDER[-arr.ndim:] if 0 < arr.ndim <= 5 else None)
    if axes is None or len(axes) != arr.ndim:
        raise InputError(f"input {url} has {arr.ndim} axes {tuple(arr.shape)} but axes is {axes!r}: "
                         "set input.axes to one letter per axis from 'tczyx'")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"input {url} has dtype {arr.dtype}; convpipe reads numeric arrays")
    return arr, axes, ome


def fingerprint(arr: Any, url: str) -> str:
    """A cheap identity of the input: URL, shape, dtype, chunks, and its metadata document."""
    meta = {"url": url, "shape": list(arr.shape), "dtype": str(arr.dtype), "chunks": list(arr.chunks)}
    try:
        meta["attrs"] = json.loads(json.dumps(dict(arr.attrs), default=str))
    except Exception:  # attributes are advisory for the fingerprint
        pass
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def output_state(url: str, storage_options: dict | None = None) -> dict | None:
    """The convpipe attributes of an existing output, ``{}`` for a foreign array, None when absent."""
    import zarr

    from .roots import guard

    guard(url, what="the output", write=True)
    try:
        node = zarr.open(store=_storage(url, storage_options), mode="r")
    except (FileNotFoundError, KeyError):
        return None
    except Exception as e:
        if "not found" in str(e).lower() or "nothing found" in str(e).lower():
            return None
        raise InputError(f"cannot read existing output {url}: {e}") from None
    return dict(node.attrs.get("convpipe", {}) or {})


def create_output(url: str, *, shape, chunks, dtype, zarr_format: int, attrs: dict, overwrite: bool,
                  storage_options: dict | None = None) -> Any:
    import zarr

    from .roots import guard

    guard(url, what="the output", write=True)
    try:
        arr = zarr.create_array(store=_storage(url, storage_options), shape=shape, chunks=chunks, dtype=dtype,
                                zarr_format=zarr_format, overwrite=overwrite, attributes=attrs,
                                fill_value=0)
    except (FileExistsError, zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError):
        raise OutputExistsError(f"output {url} exists; use --overwrite (or output.overwrite: true)") from None
    except PermissionError as e:
        raise InputError(f"cannot write output {url}: {e}") from None
    except OSError as e:
        raise InputError(f"cannot write output {url}: {e}") from None
    return arr


def cast_output(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast to the output dtype; integer targets saturate (no silent wrap-around) and NaN becomes 0."""
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    if dtype.kind in "iu" and x.dtype.kind == "f":
        info = np.iinfo(dtype)
        x = np.clip(np.nan_to_num(x, nan=0.0, posinf=info.max, neginf=info.min), info.min, info.max)
    elif dtype.kind in "iu" and x.dtype.kind in "iu":
        info, src = np.iinfo(dtype), np.iinfo(x.dtype)
        lo, hi = max(info.min, src.min), min(info.max, src.max)
        if lo > src.min or hi < src.max:
            x = np.clip(x, lo, hi)
    return x.astype(dtype)


class Manifest:
    """Finished tiles of a run, stored beside the output's chunks as empty marker objects.

    A marker is written only after the tile's chunks were written, so a crash at any moment leaves the
    manifest a subset of what is on disk; resume recomputes everything else. Writing a tile twice is
    harmless: it owns whole chunks and writes the same values.
    """

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(url if _is_url(url) else str(url), **(storage_options or {}))
        self.dir = self.root.rstrip("/") + "/.convpipe/done"

    def mark(self, key: str) -> None:
        self.fs.makedirs(self.dir, exist_ok=True)
        with self.fs.open(f"{self.dir}/{key}", "wb") as f:
            f.write(b"")

    def done(self) -> set[str]:
        try:
            return {p.rsplit("/", 1)[-1] for p in self.fs.ls(self.dir, detail=False)}
        except FileNotFoundError:
            return set()

    def clear(self) -> None:
        try:
            self.fs.rm(self.root.rstrip("/") + "/.convpipe", recursive=True)
        except FileNotFoundError:
            pass

    def __reduce__(self):
        return (_manifest_from, (self.fs, self.root))


def _manifest_from(fs, root):
    m = Manifest.__new__(Manifest)
    m.fs, m.root = fs, root
    m.dir = root.rstrip("/") + "/.convpipe/done"
    return m
