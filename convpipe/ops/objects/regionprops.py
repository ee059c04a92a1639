"""``regionprops``: skimage.measure.regionprops_table of a label image, from per-tile moments merged exactly.

Each tile reports, for every (sub-array, label) it owns voxels of, float64/int64 partials: the voxel count,
the sum, minimum and maximum of each coordinate (global voxel coordinates), and with ``intensity: input``
the sum, minimum and maximum of the pipeline's input over those voxels. Partials only cover the voxels the
tile owns (its core), so an object cut by tile borders is counted once; :meth:`Regionprops.merge_rows` adds
them up by (sub-array, label) at the end of the run: one row per label per sub-array, as skimage gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...params.objects import INTENSITY_PROPERTIES, RegionpropsParams
from ..base import NO_CONTEXT, Context, Op, Rows
from .label import label_axes


class Regionprops(Op):
    """skimage.measure.regionprops_table on every sub-array over ``axes``; the label image passes through."""

    name = "regionprops"
    kind = "point"
    Params = RegionpropsParams
    raw_input = "exact"  # the labels as stored (an int32 label above 2**24 is not a float32)
    passes_dtype = True  # the plan hands over the label image's dtype (in_dtype): the image passes unchanged
    emits_table = True
    rows_context = True
    cost_ns = 30.0  # per voxel: a sort of the tile's labels and reductions by label
    summary = "skimage regionprops_table (label, area, centroid, bbox, intensity_*) -> table; labels pass through"

    def setup(self) -> None:
        p = self.params
        self.axes = label_axes(self, p.axes)
        props = list(p.properties) if p.properties is not None else (
            ["label", "area", "centroid", "bbox"] + (list(INTENSITY_PROPERTIES) if p.intensity == "input" else []))
        bad = [q for q in props if q in INTENSITY_PROPERTIES and p.intensity != "input"]
        if bad:
            raise self.error(f"{bad[0]} needs intensity values: add intensity: input", "properties")
        self.properties = props
        self._in_dtype: np.dtype | None = None
        self._source: Any = None
        self._perm: tuple[int, ...] = ()

    # the plan tells the op what it receives (passes_dtype); labels must be integers, as skimage's are
    @property
    def in_dtype(self) -> np.dtype | None:
        return self._in_dtype

    @in_dtype.setter
    def in_dtype(self, dt: Any) -> None:
        dt = np.dtype(dt)
        if dt.kind not in "iu":
            raise self.error(f"needs an integer label image (a label step before it, or an integer input), "
                             f"not {dt}")
        self._in_dtype = dt

    def out_dtype(self, compute: np.dtype) -> np.dtype:
        return self._in_dtype if self._in_dtype is not None else compute

    def bind_input(self, array: Any, axes: str) -> None:
        """The pipeline's input, for ``intensity: input`` (in compute order: the op's own axes)."""
        if self.params.intensity != "input":
            return
        from ...axes import canonical, permutation

        if canonical(axes) != self.in_axes:
            raise self.error(f"intensity: input needs the label image on the input's axes ({canonical(axes)!r}), "
                             f"but it has {self.in_axes!r}", "intensity")
        self._source = array  # read box by box in the tiles' tasks (a zarr, dask or numpy array)
        self._perm = permutation(axes, self.in_axes)  # compute axis k is stored axis perm[k]

    def method(self) -> str:
        return "per-tile moments, exact merge by label"

    def describe(self) -> str:
        return f"regionprops({', '.join(self.properties)} over {self.axes}" + \
            (", intensity of the input)" if self.params.intensity == "input" else ")")

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The label image, unchanged.

        Parameters
        ----------
        x : numpy.ndarray
            Integer labels as stored (``raw_input`` exact).
        ctx : Context
            Unused by the image.

        Returns
        -------
        numpy.ndarray
            ``x`` itself: its dtype (``passes_dtype``: the plan keeps the label image's type).
        """
        return x

    def apply_rows(self, x: Any, ctx: Context = NO_CONTEXT) -> tuple[Any, Rows]:
        """The label image, and per (sub-array, label) of the part the tile owns (``ctx.core``) its partials:
        ``_label``, ``_count``, coordinate ``_sum_k`` / ``_min_k`` / ``_max_k`` (global, int64), with
        ``intensity: input`` ``_isum`` / ``_imin`` / ``_imax`` (float64), and ``_o_<axis>`` per other axis.
        No axis column: the rows are partials that :meth:`merge_rows` adds up, not voxels."""
        return x, self._rows(x, ctx)

    # ---------------------------------------------------------------- tile: partials
    def _intensity(self, box: tuple[slice, ...], extent: dict | None) -> np.ndarray:
        src, perm = self._source, self._perm
        if src is None:
            raise RuntimeError("regionprops with intensity: input needs the pipeline's input (bind_input)")
        shape = tuple(int(src.shape[i]) for i in perm)
        if extent is not None and shape != tuple(extent[a] for a in self.in_axes):
            from ...errors import ExecutionError

            raise ExecutionError(f"{self.step.path if self.step is not None else self.name}: intensity: input "
                                 f"needs the label image to have the input's shape {shape}, not "
                                 f"{tuple(extent[a] for a in self.in_axes)}")
        stored = [slice(None)] * len(perm)
        for k, i in enumerate(perm):
            stored[i] = box[k]
        part = src[tuple(stored)]
        if hasattr(part, "compute"):  # a dask array: read this box here, in the tile's own task
            part = part.compute(scheduler="sync")
        return np.transpose(np.asarray(part), perm).astype(np.float64)

    def _rows(self, y: Any, ctx: Context) -> Rows:
        coords = {a: np.asarray(v) for a, v in (ctx.coords or {}).items()}
        core = ctx.core or {}
        sl, g0 = [], []
        for i, a in enumerate(self.in_axes):
            s = core.get(a, slice(0, y.shape[i]))
            sl.append(s)
            g = coords.get(a)
            g0.append(int(g[s.start]) if g is not None and s.stop > s.start else 0)
        lab = np.asarray(y[tuple(sl)])
        if lab.dtype.kind not in "iu":
            raise self.error(f"needs an integer label image, not {lab.dtype}")
        intens = None
        if self.params.intensity == "input" and lab.size:
            intens = self._intensity(tuple(slice(g, g + n) for g, n in zip(g0, lab.shape)), ctx.extent)
        on = [self.in_axes.index(a) for a in self.axes]
        others = [i for i in range(lab.ndim) if i not in on]
        cols: dict[str, list] = {}
        for lead in np.ndindex(*[lab.shape[i] for i in others]):
            sub = [slice(None)] * lab.ndim
            for i, j in zip(others, lead):
                sub[i] = j
            part = _partials(lab[tuple(sub)], None if intens is None else intens[tuple(sub)],
                             [g0[i] for i in on])
            if part is None:
                continue
            n = part["_label"].size
            for i, j in zip(others, lead):
                part[f"_o_{self.in_axes[i]}"] = np.full(n, g0[i] + j, dtype=np.int64)
            for k, v in part.items():
                cols.setdefault(k, []).append(v)
        if not cols:
            return self._empty_partials()
        # one column order for every tile, empty or not (the parts are concatenated as one table)
        return {k: np.concatenate(cols[k]) for k in self._partial_names()}

    def _partial_names(self) -> dict[str, Any]:
        names: dict[str, Any] = {f"_o_{a}": np.int64 for a in self.in_axes if a not in self.axes}
        names.update({"_label": np.int64, "_count": np.int64})
        for k in range(len(self.axes)):
            names.update({f"_sum_{k}": np.int64, f"_min_{k}": np.int64, f"_max_{k}": np.int64})
        if self.params.intensity == "input":
            names.update({"_isum": np.float64, "_imin": np.float64, "_imax": np.float64})
        return names

    def _empty_partials(self) -> dict[str, np.ndarray]:
        return {k: np.zeros(0, dtype=t) for k, t in self._partial_names().items()}

    # ---------------------------------------------------------------- end: exact merge
    def merge_rows(self, table):  # noqa: D102  (Op.merge_rows)
        import pyarrow as pa

        names = self._partial_names()
        c = {k: (table.column(k).to_numpy() if table is not None and k in table.column_names
                 else np.zeros(0, dtype=t)) for k, t in names.items()}
        others = [a for a in self.in_axes if a not in self.axes]
        keys = [c[f"_o_{a}"] for a in others] + [c["_label"]]
        n = c["_label"].size
        if n:
            order = np.lexsort(keys[::-1])
            kk = [k[order] for k in keys]
            new = np.zeros(n, dtype=bool)
            new[0] = True
            for k in kk:
                new[1:] |= k[1:] != k[:-1]
            starts = np.flatnonzero(new)
        else:
            order = np.zeros(0, dtype=np.int64)
            starts = np.zeros(0, dtype=np.int64)

        def red(ufunc, name):
            v = c[name][order]
            return ufunc.reduceat(v, starts) if n else v[:0]

        count = red(np.add, "_count")
        out: dict[str, np.ndarray] = {a: c[f"_o_{a}"][order][starts].astype(np.int64) for a in others}
        k = len(self.axes)
        for prop in self.properties:
            if prop == "label":
                out["label"] = c["_label"][order][starts].astype(np.int64)
            elif prop == "area":
                out["area"] = count.astype(np.float64)
            elif prop == "centroid":
                for i in range(k):
                    out[f"centroid-{i}"] = red(np.add, f"_sum_{i}").astype(np.float64) / count
            elif prop == "bbox":
                for i in range(k):
                    out[f"bbox-{i}"] = red(np.minimum, f"_min_{i}").astype(np.int64)
                for i in range(k):
                    out[f"bbox-{k + i}"] = red(np.maximum, f"_max_{i}").astype(np.int64) + 1
            elif prop == "intensity_mean":
                out["intensity_mean"] = red(np.add, "_isum") / count
            elif prop == "intensity_sum":
                out["intensity_sum"] = red(np.add, "_isum")
            elif prop == "intensity_min":
                out["intensity_min"] = red(np.minimum, "_imin")
            elif prop == "intensity_max":
                out["intensity_max"] = red(np.maximum, "_imax")
        return pa.table(out)


def _partials(lab: np.ndarray, intens: np.ndarray | None, origin: list[int]) -> dict[str, np.ndarray] | None:
    """Per label (> 0) of one sub-array block: count, coordinate sums / minima / maxima (global), intensities."""
    fg = lab > 0
    pos = np.nonzero(fg)
    v = lab[pos]
    if v.size == 0:
        return None
    order = np.argsort(v, kind="stable")
    sv = v[order]
    starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])
    out = {"_label": sv[starts].astype(np.int64),
           "_count": np.diff(np.r_[starts, sv.size]).astype(np.int64)}
    for k, (p, g) in enumerate(zip(pos, origin)):
        q = p[order].astype(np.int64) + g
        out[f"_sum_{k}"] = np.add.reduceat(q, starts)
        out[f"_min_{k}"] = np.minimum.reduceat(q, starts)
        out[f"_max_{k}"] = np.maximum.reduceat(q, starts)
    if intens is not None:
        w = intens[pos][order]
        out["_isum"] = np.add.reduceat(w, starts)
        out["_imin"] = np.minimum.reduceat(w, starts)
        out["_imax"] = np.maximum.reduceat(w, starts)
    return out
