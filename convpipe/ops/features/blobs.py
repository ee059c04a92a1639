"""``blobs``: skimage.feature.blob_log on every plane, tile by tile, with the overlap pruning at the end."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from ...params.features import BlobsParams
from ...tiles import map_index
from ..base import NO_CONTEXT, Context, Op, Rows
from .frames import BIG, empty_table
from .frames import frames as block_frames
from .ncc import window_max

_BLOB_COLS_PRIVATE = ("_sigma_index", "_value", "_excluded")


class Blobs(Op):
    """``skimage.feature.blob_log`` on every plane over ``axes`` (2-D or 3-D), tile by tile, exactly.

    Tiles find the candidates (local maxima of the scale-normalised LoG cube over a 3x3(x3)x3 neighbourhood,
    above ``threshold``) with a halo of the largest Gaussian's radius + 1, reproducing skimage's float64
    arithmetic bit for bit (``ndi.gaussian_laplace`` with ``reflect`` at the array's edges, ``nearest`` for
    the maximum filter). The overlap pruning is not local (a chain of overlapping blobs can run across the
    whole plane, and skimage's outcome depends on its pair order), so ``merge_rows`` runs skimage's own
    pruning on each plane's candidates, ordered exactly as ``peak_local_max`` orders them: the same KD-tree,
    the same pairs, the same order, the same survivors. Columns: every input axis, ``sigma``.
    """

    name = "blobs"
    rows_context = True  # where the array ends (ctx.extent): a trailing NaN plane of the data is not padding
    kind = "local"
    raw_input = True  # the LoG in float64 of the stored values, never of their float32 rounding
    Params = BlobsParams
    emits_table = True

    def setup(self):
        p = self.params
        self.axes = self.resolve_axes(p.axes)
        nd = len(self.axes)
        if nd not in (2, 3):
            raise self.error(f"blobs acts on 2 or 3 axes (a plane or a volume), got {self.axes!r}", "axes")
        eb = p.exclude_border
        if isinstance(eb, list):
            if len(eb) != nd:
                raise self.error(f"exclude_border needs one value per axis of {self.axes!r}", "exclude_border")
            self.eb = [int(b) for b in eb]
        else:
            self.eb = [int(eb)] * nd  # skimage treats True as 1 (it is an int)
        mn = np.full(nd, p.min_sigma, dtype=np.float64)
        mx = np.full(nd, p.max_sigma, dtype=np.float64)
        if p.log_scale:
            self.sigma_list = np.logspace(np.log10(mn), np.log10(mx), p.num_sigma)
        else:
            self.sigma_list = np.linspace(mn, mx, p.num_sigma)
        self._radii = [max(int(4.0 * float(v) + 0.5) for v in s) for s in self.sigma_list]
        self.radius = max(self._radii)
        self.h = max(self.radius + 1, max(self.eb))

    def halo(self):
        return {a: (self.h, self.h) for a in self.axes}

    def boundary(self, axis):
        return "constant", float("nan")  # marks the array's edges; reflect is rebuilt from them

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The block without its halo (the image passes through).

        Parameters
        ----------
        x : numpy.ndarray, axes ``in_axes``, padded by ``halo()`` with NaN beyond the array; stored values
        ctx : Context, unused

        Returns
        -------
        numpy.ndarray, ``x``'s shape less the halo, ``x``'s dtype (the chain casts to the compute dtype)
        """
        return self.crop(x)

    def method(self):
        return "LoG scale space + global pruning"

    def describe(self):
        p = self.params
        return (f"blobs(LoG sigma {p.min_sigma}..{p.max_sigma} x{p.num_sigma}, threshold {p.threshold} "
                f"over {self.axes}, halo {self.h})")

    # ---------------------------------------------------------------- tile: candidates
    def apply_rows(self, x: Any, ctx: Context = NO_CONTEXT) -> tuple[Any, Rows]:
        """The image and the tile's blob candidates: local indices per input axis, ``sigma``, and the private
        ``_sigma_index``, ``_value``, ``_excluded`` that :meth:`merge_rows` prunes with."""
        h = self.h
        acted = [self.in_axes.index(a) for a in self.axes]
        frames = block_frames(self, x, self.axes, h, h, ctx.coords)
        if ctx.extent:
            for ax, a in zip(acted, self.axes):
                frames[ax].n = int(ctx.extent[a])
        others = [i for i in range(x.ndim) if i not in acted]
        cols: dict[str, list] = {a: [] for a in self.in_axes}
        for k in ("sigma", *_BLOB_COLS_PRIVATE):
            cols[k] = []
        for combo in itertools.product(*[frames[ax].segments for ax in acted]):
            self._segment(x, acted, others, frames, combo, cols)
        out = {a: (np.concatenate(cols[a]) if cols[a] else np.zeros(0, np.int64)).astype(np.int64)
               for a in self.in_axes}
        out["sigma"] = np.concatenate(cols["sigma"]) if cols["sigma"] else np.zeros(0)
        out["_sigma_index"] = (np.concatenate(cols["_sigma_index"]) if cols["_sigma_index"]
                               else np.zeros(0, np.int64)).astype(np.int64)
        out["_value"] = np.concatenate(cols["_value"]) if cols["_value"] else np.zeros(0)
        out["_excluded"] = (np.concatenate(cols["_excluded"]) if cols["_excluded"] else np.zeros(0, bool)).astype(bool)
        return self.crop(x), out

    def _segment(self, x, acted, others, frames, combo, cols):
        h, R = self.h, self.radius
        sl = [slice(None)] * x.ndim
        for ax, (i0, i1) in zip(acted, combo):
            sl[ax] = slice(i0, i1)
        sub = x[tuple(sl)]
        roi, yreg, gpos, edges = [], [], [], []
        whole = True
        for ax, (i0, i1) in zip(acted, combo):
            fr = frames[ax]
            L = i1 - i0
            if L <= 2 * h:
                return
            p = fr.pos[i0:i1]
            ins = fr.inside(i0, i1)
            k = np.nonzero(ins)[0]
            if k.size == 0:
                return
            k0, k1 = int(k[0]), int(k[-1]) + 1
            if not ins.all():  # rebuild scipy's reflect padding from the in-array part
                src = map_index(p, fr.n if fr.n is not None else BIG, "reflect")
                local = np.clip(src - p[k0] + k0, k0, k1 - 1)
                sub = np.take(sub, local, axis=ax)
            roi.append((max(h - 1, k0, R), min(L - h + 1, k1, L - R)))
            yreg.append((h, L - h))
            gpos.append(p)
            edges.append(fr.n)
            whole = whole and p[k0] == 0 and fr.n is not None and fr.n == p[k1 - 1] + 1
        sub = np.asarray(sub, dtype=np.float64)
        nd = len(acted)
        moved = np.moveaxis(sub, acted, list(range(sub.ndim - nd, sub.ndim)))
        lead_shape = moved.shape[: sub.ndim - nd]
        S = len(self.sigma_list)
        thr = self.params.threshold
        keep_excluded = self.params.threshold_rel is not None
        for lead in np.ndindex(*lead_shape):
            P = np.ascontiguousarray(moved[lead])
            cube = np.empty(tuple(b - a for a, b in roi) + (S,), dtype=np.float64)
            for i, s in enumerate(self.sigma_list):
                # each scale on its own crop (ROI + its radius): the same arithmetic per voxel, less work
                rs = self._radii[i]
                Ps = P[tuple(slice(a - rs, b + rs) for a, b in roi)]
                inner = tuple(slice(rs, rs + b - a) for a, b in roi)
                cube[..., i] = (-ndi.gaussian_laplace(Ps, s) * np.mean(s) ** 2)[inner]
            if cube.size == 1:  # skimage: a one-voxel cube is a peak when above the threshold
                hit = cube > thr
            else:
                mx = window_max(cube, 3)
                hit = cube == mx
                if whole and hit.all():  # skimage: a constant cube has no peaks (decidable: plane in view)
                    continue
                hit &= cube > thr
            # keep the tile's own region (y) only; the ring around it was for the maximum filter
            ysl = tuple(slice(max(ya - ra, 0), yb - ra) for (ya, yb), (ra, rb) in zip(yreg, roi))
            hit_y = np.zeros_like(hit)
            hit_y[ysl] = hit[ysl]
            idx = np.nonzero(hit_y)
            if not idx[0].size:
                continue
            excl = np.zeros(idx[0].size, dtype=bool)
            for d in range(nd):
                xi = idx[d] + roi[d][0]  # segment-local block index
                g = gpos[d][xi]
                w = self.eb[d]
                if w:
                    excl |= g < w
                    if edges[d] is not None:
                        excl |= g >= edges[d] - w
            keep = slice(None) if keep_excluded else ~excl
            m = int(np.count_nonzero(keep)) if not keep_excluded else idx[0].size
            if m == 0:
                continue
            for d, ax in enumerate(acted):
                cols[self.in_axes[ax]].append((idx[d] + roi[d][0] + combo[d][0] - h)[keep])
            for j, ax in enumerate(others):
                cols[self.in_axes[ax]].append(np.full(m, lead[j], dtype=np.int64))
            si = idx[nd][keep]
            cols["sigma"].append(self.sigma_list[si, 0])
            cols["_sigma_index"].append(si)
            cols["_value"].append(cube[idx][keep])
            cols["_excluded"].append(excl[keep])

    # ---------------------------------------------------------------- end: pruning per plane
    def merge_rows(self, table):
        import pyarrow as pa

        schema = {a: np.int64 for a in self.in_axes}
        schema["sigma"] = np.float64
        if table is None or table.num_rows == 0:
            return empty_table(schema)
        c = {k: table.column(k).to_numpy() for k in table.column_names}
        plane_axes = [a for a in self.in_axes if a not in self.axes]
        n = table.num_rows
        if plane_axes:
            keys = np.stack([c[a] for a in plane_axes], axis=1)
            uniq, inv = np.unique(keys, axis=0, return_inverse=True)
            inv = inv.ravel()
        else:
            uniq, inv = np.zeros((1, 0), np.int64), np.zeros(n, np.int64)
        out = {k: [] for k in schema}
        for g in range(len(uniq)):
            sel = np.nonzero(inv == g)[0]
            vals = c["_value"][sel]
            thr = self.params.threshold
            if self.params.threshold_rel is not None:
                thr = max(thr, self.params.threshold_rel * float(vals.max()))
            sel = sel[(vals > thr) & ~c["_excluded"][sel]]
            if not sel.size:
                continue
            # peak_local_max's order: np.nonzero (C order over axes..., sigma), then stable by -intensity
            order = np.lexsort([c["_sigma_index"][sel]] + [c[a][sel] for a in reversed(self.axes)])
            sel = sel[order]
            sel = sel[np.argsort(-c["_value"][sel], kind="stable")]
            lm = np.column_stack([c[a][sel].astype(np.float64) for a in self.axes] + [c["sigma"][sel]])
            alive = _prune_blobs(lm, self.params.overlap)
            sel = sel[alive]
            for a in self.in_axes:
                out[a].append(c[a][sel])
            out["sigma"].append(lm[alive, -1])
        if not out["sigma"]:
            return empty_table(schema)
        return pa.table({k: np.concatenate(v).astype(schema[k]) for k, v in out.items()})


def _compute_disk_overlap(d, r1, r2):
    ratio1 = (d ** 2 + r1 ** 2 - r2 ** 2) / (2 * d * r1)
    ratio1 = np.clip(ratio1, -1, 1)
    acos1 = math.acos(ratio1)
    ratio2 = (d ** 2 + r2 ** 2 - r1 ** 2) / (2 * d * r2)
    ratio2 = np.clip(ratio2, -1, 1)
    acos2 = math.acos(ratio2)
    a = -d + r2 + r1
    b = d - r2 + r1
    c = d + r2 - r1
    d = d + r2 + r1
    area = r1 ** 2 * acos1 + r2 ** 2 * acos2 - 0.5 * math.sqrt(abs(a * b * c * d))
    return area / (math.pi * (min(r1, r2) ** 2))


def _compute_sphere_overlap(d, r1, r2):
    vol = (math.pi / (12 * d) * (r1 + r2 - d) ** 2
           * (d ** 2 + 2 * d * (r1 + r2) - 3 * (r1 ** 2 + r2 ** 2) + 6 * r1 * r2))
    return vol / (4.0 / 3 * math.pi * min(r1, r2) ** 3)


def _blob_overlap(blob1, blob2):
    """skimage.feature.blob._blob_overlap with one sigma column (same arithmetic, same branches)."""
    ndim = len(blob1) - 1
    if ndim > 3:
        return 0.0
    root_ndim = math.sqrt(ndim)
    if blob1[-1] == blob2[-1] == 0:
        return 0.0
    elif blob1[-1] > blob2[-1]:
        max_sigma = blob1[-1:]
        r1 = 1
        r2 = blob2[-1] / blob1[-1]
    else:
        max_sigma = blob2[-1:]
        r2 = 1
        r1 = blob1[-1] / blob2[-1]
    pos1 = blob1[:ndim] / (max_sigma * root_ndim)
    pos2 = blob2[:ndim] / (max_sigma * root_ndim)
    d = np.sqrt(np.sum((pos2 - pos1) ** 2))
    if d > r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return 1.0
    if ndim == 2:
        return _compute_disk_overlap(d, r1, r2)
    return _compute_sphere_overlap(d, r1, r2)


def _prune_blobs(blobs_array: np.ndarray, overlap: float) -> np.ndarray:
    """skimage.feature.blob._prune_blobs, returning the mask of survivors (rows keep their order)."""
    from scipy import spatial

    blobs_array = np.array(blobs_array, dtype=np.float64)
    sigma = blobs_array[:, -1:].max()
    distance = 2 * sigma * math.sqrt(blobs_array.shape[1] - 1)
    tree = spatial.cKDTree(blobs_array[:, :-1])
    pairs = np.array(list(tree.query_pairs(distance)))
    if len(pairs) == 0:
        return np.ones(len(blobs_array), dtype=bool)
    for i, j in pairs:
        blob1, blob2 = blobs_array[i], blobs_array[j]
        if _blob_overlap(blob1, blob2) > overlap:
            if blob1[-1] > blob2[-1]:
                blob2[-1] = 0
            else:
                blob1[-1] = 0
    return blobs_array[:, -1] > 0
