"""``stats``: statistics of the image per plane, per tile or over the whole array -> table (float64 partials per
tile, merged exactly at the end); the image passes through."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from ...params.features import StatsParams
from ..base import NO_CONTEXT, Context, Op, Rows
from ..local.edges import orientation

class Stats(Op):
    """Statistics of the image, per plane / per tile / over the whole array -> table; the image passes through.

    Tiles compute float64 partials (count, sum, sum of squared deviations from the tile mean, min, max,
    energy = sum of squares, histogram and band sums); ``merge_rows`` combines them exactly (Chan et al.'s
    pairwise update for the variance) and writes the requested metrics. ``orientation_histogram``: histogram
    of arctan2(sobel_y, sobel_x) (scipy.ndimage.sobel with ``mode``) over [-pi, pi], ``bins`` bins, weighted by
    the gradient magnitude (or counts). ``spectral_bands: [e0, e1, ...]``: sum of |FFT|^2 / N over each band
    e_i <= r < e_(i+1) of the radial frequency r = sqrt(sum (f_i / 0.5)^2) (fft_filter's radius), per plane
    (per tile: of the tile); with bands covering every r the bands sum to the energy (Parseval).
    """

    raw_input = True  # float64 statistics of the stored values, not of their float32 rounding
    name = "stats"
    rows_context = True  # the part of its output the tile owns (ctx.core): never count a voxel twice
    kind = "point"
    Params = StatsParams
    emits_table = True

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes)
        if p.orientation_histogram is not None:
            if len(self.axes) != 2:
                raise self.error(f"orientation_histogram needs exactly 2 axes, got {self.axes!r}", "axes")
            self.kind = "local"
        if p.spectral_bands is not None and p.per != "tile":
            self.kind = "local" if p.orientation_histogram is not None else "full"

    def halo(self):
        if self.params.orientation_histogram is not None:
            return {a: (1, 1) for a in self.axes}
        return {}

    def full_axes(self):
        if self.params.spectral_bands is not None and self.params.per != "tile":
            return self.axes
        return ""

    def out_dtype(self, compute):
        return compute

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The block without its halo (the image passes through).

        Parameters
        ----------
        x : numpy.ndarray, axes ``in_axes`` (padded by one voxel along ``axes`` for an orientation
            histogram, whole along ``axes`` for spectral bands); stored values
        ctx : Context, unused

        Returns
        -------
        numpy.ndarray, ``x``'s shape less the halo, ``x``'s dtype (the chain casts to the compute dtype)
        """
        return self.crop(x)

    def method(self):
        return "float64 partials, exact merge"

    # ---------------------------------------------------------------- tile: partials
    def _partials(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Partials of one region (y, with x its padded block for the gradient), as 1-element arrays."""
        v = np.asarray(y, dtype=np.float64)
        n = v.size
        out: dict[str, Any] = {"_count": np.array([n], dtype=np.int64)}
        if n:
            # deviations from a stored value of the region (exact for integers, Sterbenz for floats): on an
            # offset much larger than the spread, region means rounded to float64 would cost the merge's
            # between-region term its digits (an int64 near 2**40: std off by 3e-8 relative)
            shift = float(v.flat[0])
            shift = shift if math.isfinite(shift) else 0.0
            d = v - shift
            ds = float(np.sum(d))
            out["_sum"] = [float(np.sum(v))]
            out["_shift"] = [shift]
            out["_dsum"] = [ds]
            out["_m2"] = [float(np.sum((d - ds / n) ** 2))]
            out["_min"] = [float(np.min(v))]
            out["_max"] = [float(np.max(v))]
            out["_energy"] = [float(np.sum(v * v))]
        else:
            out.update(_sum=[0.0], _shift=[0.0], _dsum=[0.0], _m2=[0.0], _min=[np.inf], _max=[-np.inf],
                       _energy=[0.0])
        oh = self.params.orientation_histogram
        if oh is not None:
            hist = self._orientation(np.asarray(x, dtype=np.float64))
            for i in range(oh.bins):
                out[f"_orientation_{i}"] = [hist[i]]
        if self.params.spectral_bands is not None:
            bands = self._bands(v)
            for i, b in enumerate(bands):
                out[f"_band_{i}"] = [b]
        return {k: np.asarray(val) for k, val in out.items()}

    def _orientation(self, x: np.ndarray) -> np.ndarray:
        """Histogram of arctan2(sobel_y, sobel_x) over the region; ``x`` is padded by 1 along the two axes."""
        oh = self.params.orientation_histogram
        ay, ax = (self.in_axes.index(a) for a in self.axes)
        # scipy.ndimage.sobel of each plane: the derivative along one axis, [1, 2, 1] along the other
        dy = ndi.correlate1d(ndi.correlate1d(x, [-1, 0, 1], axis=ay, mode="reflect"), [1, 2, 1], axis=ax,
                             mode="reflect")
        dx = ndi.correlate1d(ndi.correlate1d(x, [-1, 0, 1], axis=ax, mode="reflect"), [1, 2, 1], axis=ay,
                             mode="reflect")
        dy, dx = self.crop(dy), self.crop(dx)
        theta = orientation(dy, dx)  # in (-pi, pi], 0 where both are 0 (weight count: bin of 0)
        w = np.hypot(dy, dx) if oh.weight == "magnitude" else None
        h, _ = np.histogram(theta, bins=oh.bins, range=(-np.pi, np.pi), weights=w)
        return h.astype(np.float64)

    def _bands(self, v: np.ndarray) -> np.ndarray:
        """Band energies summed over the planes of ``v`` (acted axes = the FFT axes)."""
        acted = [self.in_axes.index(a) for a in self.axes]
        edges = self.params.spectral_bands
        nb = len(edges) - 1
        if v.size == 0:
            return np.zeros(nb)
        F = np.fft.fftn(v, axes=acted)
        power = (F.real ** 2 + F.imag ** 2) / float(np.prod([v.shape[i] for i in acted]))
        r2 = 0.0
        for i in acted:
            f = np.fft.fftfreq(v.shape[i]) / 0.5
            shape = [1] * v.ndim
            shape[i] = -1
            r2 = r2 + (f * f).reshape(shape)
        r = np.sqrt(np.broadcast_to(r2, v.shape))
        return np.array([float(np.sum(power[(r >= edges[i]) & (r < edges[i + 1])])) for i in range(nb)])

    def apply_rows(self, x: Any, ctx: Context = NO_CONTEXT) -> tuple[Any, Rows]:
        """The image and the float64 partials of the region the tile owns. Each row also carries the region's
        global bounds (``_g0_a``, ``_g1_a``) so the merge can prove that no voxel was counted twice."""
        y = self.crop(x)
        return y, self._rows(x, y, ctx)

    def _rows(self, x: Any, y: Any, ctx: Context) -> Rows:
        per = self.params.per
        coords = {a: np.asarray(v) for a, v in (ctx.coords or {}).items()}
        if ctx.core is not None:
            # the engine says which part of y the tile owns (y is larger when later ops need a halo)
            sy, sx = [slice(None)] * y.ndim, [slice(None)] * y.ndim
            pad = 1 if self.params.orientation_histogram is not None else 0
            for i, a in enumerate(self.in_axes):
                if a in ctx.core:
                    sl = ctx.core[a]
                    sy[i] = sl
                    sx[i] = slice(sl.start, sl.stop + (2 * pad if a in self.axes else 0))
                    if a in coords:
                        coords[a] = coords[a][sl]
            x, y = x[tuple(sx)], y[tuple(sy)]
        bounds: dict[str, tuple[int, int, bool]] = {}
        for i, a in enumerate(self.in_axes):
            g = coords.get(a)
            if g is None or g.size != y.shape[i] or g.size == 0:
                bounds[a] = (-1, -1, False)
            else:
                bounds[a] = (int(g[0]), int(g[-1]) + 1, bool(np.any(np.diff(g) != 1)))

        def with_bounds(cols, box_axes):
            n = len(cols["_count"])
            multi = False
            for a in box_axes:
                g0, g1, m = bounds[a]
                cols[f"_g0_{a}"] = np.full(n, g0, dtype=np.int64)
                cols[f"_g1_{a}"] = np.full(n, g1, dtype=np.int64)
                multi |= m
            cols["_split"] = np.full(n, multi, dtype=bool)
            return cols

        if per == "all":
            return with_bounds(self._partials(x, y), self.in_axes)
        if per == "tile":
            cols = self._partials(x, y)
            for i, a in enumerate(self.in_axes):  # the row sits at the region's centre: inside the core
                cols[a] = np.array([y.shape[i] // 2], dtype=np.int64)
                cols[f"_len_{a}"] = np.array([y.shape[i]], dtype=np.int64)
            return with_bounds(cols, self.in_axes)
        # per plane: one row per plane index (the axes the op does not act on)
        plane_ax = [i for i, a in enumerate(self.in_axes) if a not in self.axes]
        rows: dict[str, list] = {}
        for lead in np.ndindex(*[y.shape[i] for i in plane_ax]):
            sl = [slice(None)] * y.ndim
            for i, j in zip(plane_ax, lead):
                sl[i] = slice(j, j + 1)
            part = self._partials(x[tuple(sl)], y[tuple(sl)])
            for i, j in zip(plane_ax, lead):
                part[self.in_axes[i]] = np.array([j], dtype=np.int64)
            for k, v in part.items():
                rows.setdefault(k, []).append(v)
        return with_bounds({k: np.concatenate(v) for k, v in rows.items()}, self.axes)

    # ---------------------------------------------------------------- end: exact merge
    def merge_rows(self, table):
        import pyarrow as pa

        p = self.params
        per = p.per
        if per == "plane":
            keys = [a for a in self.in_axes if a not in self.axes]
        elif per == "tile":
            keys = list(self.in_axes)
        else:
            keys = []
        if table is None or table.num_rows == 0:
            return pa.table({**{k: np.zeros(0, np.int64) for k in keys}, **self._finish(None)})
        c = {k: table.column(k).to_numpy() for k in table.column_names}
        nrows = table.num_rows
        if per == "tile":
            groups = [np.array([i]) for i in range(nrows)]
            keyvals = {k: c[k] for k in keys}
        elif keys:
            kv = np.stack([c[k] for k in keys], axis=1)
            uniq, inv = np.unique(kv, axis=0, return_inverse=True)
            inv = inv.ravel()
            order = np.argsort(inv, kind="stable")
            splits = np.cumsum(np.bincount(inv, minlength=len(uniq)))[:-1]
            groups = np.split(order, splits)
            keyvals = {k: uniq[:, i] for i, k in enumerate(keys)}
        else:
            groups = [np.arange(nrows)]
            keyvals = {}
        if per != "tile":
            box = list(self.in_axes) if per == "all" else list(self.axes)
            for g in groups:
                self._check_disjoint(c, g, box)
        merged = [self._merge_group(c, g) for g in groups]
        out = self._finish(merged)
        cols = {k: np.asarray(v, dtype=np.int64) for k, v in keyvals.items()}
        if per == "tile":
            for a in self.in_axes:
                known = c[f"_g0_{a}"] >= 0
                start = np.where(known, c[f"_g0_{a}"], c[a] - c[f"_len_{a}"] // 2)
                cols[a] = start
                cols[f"{a}_stop"] = start + c[f"_len_{a}"]
        cols.update(out)
        return pa.table(cols)

    def _check_disjoint(self, c, g, box_axes) -> None:
        """The regions the partials cover must not overlap (else voxels would count twice)."""
        from ...errors import ExecutionError

        if "_split" not in c:
            return
        bad = bool(np.any(c["_split"][g]))
        lo = [c[f"_g0_{a}"][g] for a in box_axes]
        hi = [c[f"_g1_{a}"][g] for a in box_axes]
        if not bad and all(np.all(v >= 0) for v in lo):
            vol = np.prod([h - l for l, h in zip(lo, hi)], axis=0) if box_axes else np.ones(len(g), np.int64)
            bbox = int(np.prod([int(h.max()) - int(l.min()) for l, h in zip(lo, hi)])) if box_axes else 1
            bad = int(np.sum(vol)) > bbox
        if bad:
            raise ExecutionError(
                f"{self.step.path if self.step is not None else self.name}: the tiles' regions overlap, so "
                "voxels would count twice: an op after stats in the same pass needs a halo, and this engine "
                "does not tell stats which part of its block the tile owns. Put stats last (or after the "
                "filters), or run it in its own pipeline.")

    def _merge_group(self, c, g) -> dict[str, float]:
        n_k = c["_count"][g].astype(np.float64)
        N = float(n_k.sum())
        S = float(np.sum(c["_sum"][g]))
        res: dict[str, float] = {"count": int(N), "sum": S}
        nz = n_k > 0
        if N > 0:
            if "_shift" in c:  # region means relative to one stored value K: no digit lost to the offset
                shift, dsum = c["_shift"][g][nz], c["_dsum"][g][nz]
                k = float(shift[0])
                dev = (shift - k) + dsum / n_k[nz]
                mean_dev = float(np.sum((shift - k) * n_k[nz]) + np.sum(dsum)) / N
                mean = k + mean_dev
                between = np.sum(n_k[nz] * (dev - mean_dev) ** 2)
            else:  # partials of an older run (resume)
                mean = S / N
                between = np.sum(n_k[nz] * (c["_sum"][g][nz] / n_k[nz] - mean) ** 2)
            m2 = float(np.sum(c["_m2"][g][nz]) + between)
            res.update(mean=mean, std=math.sqrt(max(m2, 0.0) / N))
        else:
            res.update(mean=float("nan"), std=float("nan"))
        res["min"] = float(np.min(c["_min"][g])) if N else float("nan")
        res["max"] = float(np.max(c["_max"][g])) if N else float("nan")
        res["energy"] = float(np.sum(c["_energy"][g]))
        if self.params.orientation_histogram is not None:
            for i in range(self.params.orientation_histogram.bins):
                res[f"orientation_{i}"] = float(np.sum(c[f"_orientation_{i}"][g]))
        if self.params.spectral_bands is not None:
            for i in range(len(self.params.spectral_bands) - 1):
                res[f"band_{i}"] = float(np.sum(c[f"_band_{i}"][g]))
        return res

    def _finish(self, merged: list[dict] | None) -> dict[str, np.ndarray]:
        p = self.params
        names = list(p.metrics)
        if p.orientation_histogram is not None:
            names += [f"orientation_{i}" for i in range(p.orientation_histogram.bins)]
        if p.spectral_bands is not None:
            names += [f"band_{i}" for i in range(len(p.spectral_bands) - 1)]
        out = {}
        for k in names:
            dt = np.int64 if k == "count" else np.float64
            out[k] = np.array([m[k] for m in merged] if merged else [], dtype=dt)
        return out
