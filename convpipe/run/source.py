"""The input as a run reads it: a dask array over the stored chunks, in the plan's compute order.

A chunk that cannot be read or decoded fails the run with the stored chunk's key, so the user knows what
to restore (``--resume`` then finishes the output).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ExecutionError
from ..plan import Plan

__all__ = ["input_source"]


def input_source(plan: Plan, arr: Any, url: str, fingerprint: str) -> Any:
    """The input as a dask array in the plan's compute order, read in the blocks the first pass wants."""
    import dask.array as da

    from ..plan import read_chunks

    rc = read_chunks(plan.input, plan.passes[0].tile)
    perm = plan.in_perm
    reader = _ChunkReader(arr, url, perm)
    name = f"convpipe-input-{fingerprint}" + ("-t" + "".join(map(str, perm)) if perm else "")
    return da.from_array(reader, chunks=tuple(rc[a] for a in plan.compute_axes), name=name, inline_array=False,
                         lock=False, meta=np.empty((0,) * arr.ndim, dtype=arr.dtype))


class _ChunkReader:
    """The input as dask reads it, naming the stored chunk(s) that cannot be read or decoded.

    With ``perm`` it presents the input transposed (``numpy.transpose(stored, perm)``): selections come in
    the transposed order, and each block read is copied to that order once, C-contiguous
    (:func:`convpipe.engines.transposed_copy`): every tile that shares the chunk then assembles from plain
    memory (assembling tiles from transposed views measured 5x the cost of that one copy), and OpenCV's
    fast paths see the last axis in memory order.
    """

    def __init__(self, arr: Any, url: str, perm: tuple[int, ...] | None = None):
        self.arr, self.url, self.perm = arr, url, perm
        self.dtype, self.ndim = arr.dtype, arr.ndim
        self.shape = tuple(arr.shape[i] for i in perm) if perm else arr.shape

    def __getitem__(self, sel: Any) -> np.ndarray:
        if self.perm is not None:
            sel = sel if isinstance(sel, tuple) else (sel,)
            sel = sel + (slice(None),) * (self.ndim - len(sel))
            stored = [slice(None)] * self.ndim
            for j, i in enumerate(self.perm):
                stored[i] = sel[j]
            from ..engines import transposed_copy

            return transposed_copy(np.asarray(self._read(tuple(stored))), self.perm)
        return self._read(sel)

    def _read(self, sel: Any) -> np.ndarray:
        try:
            return self.arr[sel]
        except Exception as e:
            bad = self._bad_chunks(sel)
            what = (f"chunk {bad[0]}" if len(bad) == 1 else f"chunks {', '.join(bad[:5])}") if bad else \
                f"the region {sel!r}"
            raise ExecutionError(f"cannot read {what} of the input {self.url} ({type(e).__name__}: {e}); "
                                 "output left incomplete: restore the input, then --resume finishes it") from None

    def _bad_chunks(self, sel: Any) -> list[str]:
        """The keys of the stored chunks under ``sel`` that fail on their own (reads them one by one)."""
        import itertools

        sel = sel if isinstance(sel, tuple) else (sel,)
        if len(sel) != self.ndim or not all(isinstance(s, slice) and s.step in (None, 1) for s in sel):
            return []
        ranges = []
        for s, n, c in zip(sel, self.shape, self.arr.chunks):
            start, stop = s.start or 0, n if s.stop is None else s.stop
            ranges.append(range(start // c, -(-stop // c)))
        bad = []
        for idx in itertools.product(*ranges):
            region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, self.arr.chunks, self.shape))
            try:
                self.arr[region]
            except Exception:  # noqa: BLE001 - this one is damaged
                try:
                    bad.append(str(self.arr.metadata.encode_chunk_key(idx)))
                except Exception:  # noqa: BLE001 - the key is advisory
                    bad.append(".".join(map(str, idx)))
        return bad

    def __reduce__(self):
        return (_ChunkReader, (self.arr, self.url, self.perm))
