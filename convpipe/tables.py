"""Parquet tables from tiles: one part per tile, committed before the tile counts as done, merged at the end.

Parts are written to ``<table>.parts/<tile>.parquet``; the final file is assembled part by part with one
``ParquetWriter`` (one row group per non-empty part), so memory stays bounded by the largest part, never
by the whole table. The spec and input fingerprint go into the file's key-value metadata.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np


def rows_table(columns: dict[str, np.ndarray]) -> Any:
    """One tile's rows as a ``pyarrow.Table`` (a run's Parquet part, ``Pipeline.apply``'s pieces)."""
    import pyarrow as pa

    return pa.table({k: np.asarray(v) for k, v in columns.items()})


class TableSink:
    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        from .roots import guard

        guard(url, what="the table", write=True)
        self.url = url
        self.fs, self.path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.parts = self.path.rstrip("/") + ".parts"

    def write_part(self, key: str, columns: dict[str, np.ndarray]) -> None:
        import pyarrow.parquet as pq

        table = rows_table(columns)
        self.fs.makedirs(self.parts, exist_ok=True)
        tmp = f"{self.parts}/.{key}.tmp"
        with self.fs.open(tmp, "wb") as f:
            pq.write_table(table, f)
        self.fs.mv(tmp, f"{self.parts}/{key}.parquet")  # a part is either whole or absent

    def clear(self) -> None:
        for p in (self.parts, self.path):
            try:
                self.fs.rm(p, recursive=True)
            except FileNotFoundError:
                pass

    def finalize(self, metadata: dict, merge: Callable[[Any], Any] | None = None,
                 columns: Callable[[Any], Any] | None = None) -> int:
        """Merge the parts into the final Parquet file; returns the number of rows.

        ``merge`` combines all parts into one table (whole-array statistics); ``columns`` adds columns to
        each part (or to the merged table) on the way, e.g. the channel names.
        """
        columns = columns or (lambda t: t)
        import pyarrow.parquet as pq

        try:
            names = sorted(p for p in self.fs.ls(self.parts, detail=False) if p.endswith(".parquet"))
        except FileNotFoundError:
            names = []
        meta = {b"convpipe": json.dumps(metadata, default=str).encode()}
        tmp = self.path + ".tmp"
        rows = 0
        if merge is not None:  # ops whose rows combine across tiles (whole-array statistics)
            import pyarrow as pa

            tables = [pq.read_table(self.fs.open(n, "rb")) for n in names]
            merged = columns(merge(pa.concat_tables(tables) if tables else None))
            merged = merged.replace_schema_metadata({**(merged.schema.metadata or {}), **meta})
            with self.fs.open(tmp, "wb") as f:
                pq.write_table(merged, f)
            rows = merged.num_rows
        else:
            writer = None
            with self.fs.open(tmp, "wb") as f:
                for n in names:
                    t = columns(pq.read_table(self.fs.open(n, "rb")))
                    if writer is None:
                        writer = pq.ParquetWriter(f, t.schema.with_metadata(meta))
                    if t.num_rows:
                        writer.write_table(t.replace_schema_metadata(meta))
                        rows += t.num_rows
                if writer is not None:
                    writer.close()
        self.fs.mv(tmp, self.path)
        try:
            self.fs.rm(self.parts, recursive=True)
        except FileNotFoundError:
            pass
        return rows
