"""Reading back what a run wrote: the output, its ``convpipe`` provenance, the spec's steps and tables."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import InputError


def open_output(url: str, storage_options: dict | None) -> tuple[Any, dict]:
    """The output array and its ``convpipe`` provenance (an OME-Zarr group: its level 0)."""
    import zarr

    from ..io import zarr_location

    try:
        node = zarr.open(**zarr_location(url, storage_options), mode="r")
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - zarr and fsspec raise many types for a missing or unreadable store
        msg = str(e)
        if isinstance(e, (FileNotFoundError, KeyError)) or "not found" in msg.lower():
            raise InputError(f"output not found: {url}") from None
        raise InputError(f"cannot open output {url}: {type(e).__name__}: {msg}") from None
    attrs: dict[str, Any] = dict(node.attrs)
    prov: dict[str, Any] = dict(attrs.get("convpipe") or {})
    if isinstance(node, zarr.Group):
        ms: Any = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
        if not ms:
            if not prov:
                raise InputError(f"{url} is not a convpipe output: a Zarr group with no convpipe provenance "
                                 "(verify checks what `convpipe run` wrote)")
            raise InputError(f"{url} is a Zarr group without OME-Zarr multiscales; point verify at the output array")
        node = node[str(ms[0]["datasets"][0]["path"])]
        prov = prov or dict(dict(node.attrs).get("convpipe") or {})  # type: ignore[arg-type]
    if not prov:
        raise InputError(f"{url} is not a convpipe output: it has no convpipe provenance (verify checks what "
                         "`convpipe run` wrote)")
    if "spec" not in prov:
        what = "an image `convpipe ingest` wrote" if "ingest" in prov else "not a run's output"
        raise InputError(f"{url} is not a convpipe run output ({what}: its provenance has no spec); verify checks "
                         "what `convpipe run` wrote")
    missing = [k for k in ("spec", "input_url", "tile", "axes") if k not in prov]
    if missing:
        raise InputError(f"{url}: the provenance lacks {', '.join(missing)}; it cannot be verified")
    return node, prov


def spec_dir(prov: dict) -> Path | None:
    """The spec's folder (relative kernel paths resolve against it).

    Recorded as ``spec_dir`` when the writer knows it; otherwise inferred from the relative ``input.url`` as
    written in the spec and the resolved ``input_url``.
    """
    if prov.get("spec_dir"):
        return Path(prov["spec_dir"])
    raw = ((prov.get("spec") or {}).get("input") or {}).get("url", "")
    full = str(prov.get("input_url", ""))
    if raw and "://" not in raw and not raw.startswith("/") and "://" not in full:
        parts = PurePosixPath(raw).parts
        if ".." not in parts:
            full_parts = PurePosixPath(full).parts
            n = len([q for q in parts if q != "."])
            if n and len(full_parts) > n:
                return Path(*full_parts[: len(full_parts) - n])
    return None


def steps_of(prov: dict) -> list[tuple[str, dict]]:
    out = []
    for st in (prov.get("spec") or {}).get("steps") or []:
        if isinstance(st, str):
            st = {st: {}}
        (name, params), = st.items()
        out.append((str(name), dict(params or {})))
    return out


def read_table(url: str, storage_options: dict | None) -> dict[str, np.ndarray]:
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        t = pq.read_table(f)
    return {c: t.column(c).to_numpy() for c in t.column_names}
