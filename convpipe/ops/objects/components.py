"""Connected components across tiles with scipy.ndimage.label's exact numbering, whatever the tiling.

scipy numbers components 1, 2, ... in the raster (C) order of their first voxel. Over tiles:

pass 1, per tile (:func:`summarize_tile`)
    label the tile alone (scipy.ndimage.label, same structure); keep the local labels on each *internal*
    tile face (the outermost layer; faces on the array's edge touch nothing), and for every local label the
    row of its first voxel. A *row* is a line along the last acted axis ``l``: every coordinate but ``l``.
    Keep only a histogram of first voxels per row (``hist``, one count per row of the tile), and, for the
    labels on a face, their first voxel and their rank among the tile's first voxels in that row.
boundaries (:func:`boundary_pairs`)
    for each internal boundary between two layers of tiles along an acted axis ``a``, the two layers'
    faces are laid out as two whole cross-sections of the array; every neighbour offset ``s`` of the
    structure with ``s_a = +1`` pairs voxel ``q`` of the lower layer with ``q + s`` of the upper one, so
    contacts through a face, an edge or a corner (diagonal touches across a tile corner) are all seen.
reduction (:func:`reduce_tiles`)
    connected components (scipy.sparse.csgraph) over the face labels and those pairs only; each merged
    component's *owner* is the part holding its first voxel (the smallest raster key). Every other part
    counts for nothing. The number of a component is then the number of owners before it in raster order
    + 1: owners in earlier rows of its sub-array (a prefix sum over the array's rows), owners in the same
    row in tiles before it along ``l``, and owners in the same row of its own tile with a smaller ``l``.
    The reduction hands each tile its row offsets and the numbers of its non-owner face labels.
pass 2, per tile (:func:`relabel_tile`)
    label the tile again (the same labels: scipy is deterministic), number its owners from the row
    offsets, its non-owners from the reduction, and write.

Memory: a tile task holds its tile; the reduction holds the faces' labels and one count per array row
(never a voxel of the data); the graph is one task per tile and per boundary. Sub-arrays (``axes: yx`` on a
``zyx`` stack): the structure has no extent along the other axes, so no component leaves its plane, and
numbering restarts in each sub-array (raster keys order the other axes first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi


def structure(ndim: int, on: tuple[int, ...], connectivity: int) -> np.ndarray:
    """generate_binary_structure(len(on), connectivity) over the axes ``on`` of an ``ndim``-D block, with no
    extent along the other axes (their sub-arrays stay apart)."""
    s = ndi.generate_binary_structure(len(on), connectivity)
    full = np.zeros((3,) * ndim, dtype=bool)
    sl = [1] * ndim
    for i in on:
        sl[i] = slice(None)
    full[tuple(sl)] = s
    return full


def local_labels(block: np.ndarray, struct: np.ndarray) -> tuple[np.ndarray, int]:
    """scipy.ndimage.label(block != 0) (NaN counts as foreground, as ``x != 0`` says)."""
    lab, n = ndi.label(np.asarray(block) != 0, structure=struct)
    return lab, int(n)


def first_voxels(lab: np.ndarray, n: int) -> np.ndarray:
    """Flat (C order) index of each label's first voxel, labels 1..n. scipy numbers labels by first
    appearance, so a label's first voxel is where the running maximum of the labels met so far grows."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    v = lab.ravel()
    nz = np.flatnonzero(v)
    vals = v[nz]
    new = np.empty(vals.size, dtype=bool)
    new[0] = True
    np.greater(vals[1:], np.maximum.accumulate(vals)[:-1], out=new[1:])
    first = nz[new]
    if first.size != n:  # not scipy's numbering: the algorithm's premise fails (never seen)
        raise RuntimeError(f"scipy.ndimage.label gave {n} labels but {first.size} first appearances")
    return first.astype(np.int64)


def rank_in_group(g: np.ndarray) -> np.ndarray:
    """For items in order, how many earlier items share each item's group id."""
    if g.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(g, kind="stable")
    gs = g[order]
    start = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
    lens = np.diff(np.r_[start, g.size])
    pos = np.arange(g.size, dtype=np.int64) - np.repeat(start, lens)
    out = np.empty(g.size, dtype=np.int64)
    out[order] = pos
    return out


@dataclass(frozen=True)
class Layout:
    """What every tile shares: the array's extent, the acted axes, the structure, the raster order."""

    extent: tuple[int, ...]
    on: tuple[int, ...]  # acted axes (indices, ascending)
    connectivity: int

    @property
    def ndim(self) -> int:
        return len(self.extent)

    @property
    def last(self) -> int:
        """The axis along which a row runs (the last acted axis)."""
        return self.on[-1]

    @property
    def others(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.ndim) if i not in self.on)

    @property
    def key_order(self) -> tuple[int, ...]:
        """Raster order of the sub-arrays: the other axes first, then the acted axes (array order)."""
        return self.others + self.on

    def struct(self) -> np.ndarray:
        return structure(self.ndim, self.on, self.connectivity)

    def row_axes(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.ndim) if i != self.last)

    def keys(self, coords: np.ndarray) -> np.ndarray:
        """Raster keys (int64) of global coordinates ``coords`` (n, ndim)."""
        if coords.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        order = self.key_order
        return np.ravel_multi_index(tuple(coords[:, i] for i in order),
                                    tuple(self.extent[i] for i in order)).astype(np.int64)


@dataclass
class TileSummary:
    """Pass 1's result for one tile, without its faces."""

    flat: int  # tile index in the grid (C order)
    origin: tuple[int, ...]
    shape: tuple[int, ...]
    n: int
    hist: np.ndarray  # first voxels per row of the tile, shape = tile shape without the row axis
    border: np.ndarray  # sorted local labels on an internal face
    border_row: np.ndarray  # flat tile-row index of each one's first voxel
    border_rank: np.ndarray  # its rank among the tile's first voxels in that row
    border_key: np.ndarray  # raster key of its first voxel


def _row_of(coords_local: np.ndarray, shape: tuple[int, ...], lay: Layout) -> np.ndarray:
    rows = lay.row_axes()
    if coords_local.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if not rows:
        return np.zeros(coords_local.shape[0], dtype=np.int64)
    return np.ravel_multi_index(tuple(coords_local[:, i] for i in rows),
                                tuple(shape[i] for i in rows)).astype(np.int64)


def _faces(lab: np.ndarray, origin: tuple[int, ...], lay: Layout) -> dict[tuple[int, int], np.ndarray]:
    """The tile's outermost layers on internal boundaries: (axis, 0 low | 1 high) -> labels of that layer."""
    out = {}
    for a in lay.on:
        if origin[a] > 0:
            out[(a, 0)] = np.take(lab, 0, axis=a).copy()
        if origin[a] + lab.shape[a] < lay.extent[a]:
            out[(a, 1)] = np.take(lab, lab.shape[a] - 1, axis=a).copy()
    return out


def _tile_components(block: np.ndarray, lay: Layout) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """A tile's local labels, their count, each label's first voxel (local coordinates, (n, ndim) int64)
    and the layout row it falls in.

    One function for both passes: pass 2 numbers each component from what pass 1 recorded for it (by local
    label and row), which holds only if both label the tile and place its components identically.
    """
    lab, n = local_labels(block, lay.struct())
    first = first_voxels(lab, n)
    loc = np.stack(np.unravel_index(first, lab.shape), axis=1) if n else np.zeros((0, lab.ndim), np.int64)
    return lab, n, loc, _row_of(loc, tuple(lab.shape), lay)


def summarize_tile(block: np.ndarray, flat: int, origin: tuple[int, ...], lay: Layout
                   ) -> tuple[TileSummary, dict[tuple[int, int], np.ndarray]]:
    """Pass 1 on one tile: its summary and its internal faces."""
    lab, n, loc, rows = _tile_components(block, lay)
    shape = tuple(lab.shape)
    hist_shape = tuple(shape[i] for i in lay.row_axes())
    hist = np.bincount(rows, minlength=int(np.prod(hist_shape, dtype=np.int64))).astype(np.int32)
    faces = _faces(lab, origin, lay)
    if faces:
        border = np.unique(np.concatenate([f.ravel() for f in faces.values()]))
        border = border[border > 0].astype(np.int64)
    else:
        border = np.zeros(0, dtype=np.int64)
    rank = rank_in_group(rows)
    b = border - 1
    keys = lay.keys(loc[b] + np.asarray(origin, dtype=np.int64)) if b.size else np.zeros(0, np.int64)
    s = TileSummary(flat, tuple(origin), shape, n, hist.reshape(hist_shape), border, rows[b], rank[b], keys)
    return s, faces


def label_bits(max_tile_voxels: int) -> int:
    """Bits of a local label in a provisional id ``tile << bits | label``."""
    return max(1, int(max_tile_voxels).bit_length())


def boundary_pairs(axis: int, lower: list[tuple[tuple[int, ...], int, np.ndarray]],
                   upper: list[tuple[tuple[int, ...], int, np.ndarray]], lay: Layout, bits: int) -> np.ndarray:
    """Pairs of provisional ids touching across one boundary along ``axis``.

    ``lower`` / ``upper``: (tile origin, tile flat index, face labels) of the tiles just below / above the
    boundary (their high / low faces). Returns unique pairs (k, 2), int64.
    """
    plane_shape = tuple(n for i, n in enumerate(lay.extent) if i != axis)
    dims = [i for i in range(lay.ndim) if i != axis]

    def layer(items):
        p = np.full(plane_shape, -1, dtype=np.int64)
        for origin, flat, face in items:
            sl = tuple(slice(origin[i], origin[i] + face.shape[j]) for j, i in enumerate(dims))
            ids = face.astype(np.int64) + (np.int64(flat) << bits)
            p[sl] = np.where(face > 0, ids, -1)
        return p

    A, B = layer(lower), layer(upper)
    offs = np.argwhere(lay.struct()) - 1
    offs = offs[offs[:, axis] == 1]
    parts = []
    for s in offs:
        sa, sb = [], []
        for i in dims:
            d = int(s[i])
            sa.append(slice(0, plane_shape[len(sa)] - 1) if d == 1 else slice(1, None) if d == -1 else slice(None))
            sb.append(slice(1, None) if d == 1 else slice(0, plane_shape[len(sb)] - 1) if d == -1 else slice(None))
        a, b = A[tuple(sa)], B[tuple(sb)]
        m = (a >= 0) & (b >= 0)
        if m.any():
            parts.append(np.stack([a[m], b[m]], axis=1))
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(parts), axis=0)


@dataclass
class TileLookup:
    """What pass 2 needs for one tile: the number before each row's first owner, and the non-owners' numbers."""

    n: int  # local labels (pass 2 must find the same)
    base: np.ndarray  # int64, shape = tile shape without the row axis
    nonowner: np.ndarray  # sorted local labels whose component's first voxel is in another part
    numbers: np.ndarray  # their global numbers


@dataclass
class Numbering:
    lookups: dict[tuple[int, ...], TileLookup]  # by tile origin
    counts: np.ndarray  # components per sub-array (in raster order of the sub-arrays)
    face_labels: int = 0
    pairs: int = 0
    merged: int = 0
    layout: Layout | None = None

    @property
    def max_count(self) -> int:
        return int(self.counts.max()) if self.counts.size else 0


def reduce_tiles(summaries: list[TileSummary], pairs: list[np.ndarray], lay: Layout, bits: int,
                 grid_shape: tuple[int, ...], max_label: int | None = None, what: str = "label") -> Numbering:
    """Merge the face labels over ``pairs`` and number every component in raster order of its first voxel."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    summaries = sorted(summaries, key=lambda s: s.flat)
    nodes = np.concatenate([(np.int64(s.flat) << bits) + s.border for s in summaries]) if summaries else \
        np.zeros(0, np.int64)
    tile_of = np.concatenate([np.full(s.border.size, k, dtype=np.int64) for k, s in enumerate(summaries)]) \
        if summaries else np.zeros(0, np.int64)
    keys = np.concatenate([s.border_key for s in summaries]) if summaries else np.zeros(0, np.int64)
    pr = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    N = nodes.size
    if N:
        ij = np.searchsorted(nodes, pr)
        if pr.size and not (np.all(ij < N) and np.array_equal(nodes[np.minimum(ij, N - 1)], pr)):
            raise RuntimeError("label: a face pair names a label that is on no face (internal error)")
        g = coo_matrix((np.ones(len(ij), dtype=np.int8), (ij[:, 0], ij[:, 1])), shape=(N, N))
        ncomp, comp = connected_components(g, directed=False)
        order = np.lexsort((keys, comp))
        head = np.r_[True, comp[order][1:] != comp[order][:-1]]
        owner_of_comp = order[head]  # node holding each component's smallest raster key
        is_owner = np.zeros(N, dtype=bool)
        is_owner[owner_of_comp] = True
        owner = owner_of_comp[comp]
    else:
        ncomp, is_owner, owner = 0, np.zeros(0, bool), np.zeros(0, np.int64)

    # owners per row: the tile's histogram less its non-owner face labels
    start = np.r_[0, np.cumsum([s.border.size for s in summaries])].astype(np.int64)
    owner_hist = []
    for k, s in enumerate(summaries):
        non = ~is_owner[start[k]:start[k + 1]]
        h = s.hist.astype(np.int64).ravel()
        if non.any():
            h = h - np.bincount(s.border_row[non], minlength=h.size)
        owner_hist.append(h.reshape(s.hist.shape))

    # rows of the whole array (every axis but the row axis), counted, then numbered per sub-array
    rows_axes = lay.row_axes()
    R = np.zeros(tuple(lay.extent[i] for i in rows_axes), dtype=np.int64)
    for s, h in zip(summaries, owner_hist):
        R[tuple(slice(s.origin[i], s.origin[i] + s.shape[i]) for i in rows_axes)] += h
    # order the row axes as the raster keys do (others first), split into sub-arrays
    perm = [rows_axes.index(i) for i in lay.key_order if i != lay.last]
    Rp = np.transpose(R, perm)
    n_other = int(np.prod([lay.extent[i] for i in lay.others], dtype=np.int64))
    flat = Rp.reshape(n_other, -1)
    counts = flat.sum(axis=1)
    if max_label is not None and counts.size and int(counts.max()) > max_label:
        worst = int(np.argmax(counts))
        raise OverflowError(f"{what}: {int(counts[worst])} components in sub-array {worst}, more than the "
                            f"output dtype holds ({max_label})")
    off = np.cumsum(flat, axis=1) - flat  # owners in earlier rows of the same sub-array
    offsets = np.transpose(off.reshape(Rp.shape), np.argsort(perm))
    del R, Rp, flat, off

    # per tile: its rows' offsets plus the owners of the same rows in tiles before it along the row axis
    lookups: dict[tuple[int, ...], TileLookup] = {}
    run: dict[tuple[int, ...], np.ndarray] = {}
    by_index = {}
    for k, s in enumerate(summaries):
        idx = np.unravel_index(s.flat, grid_shape)
        by_index[tuple(int(i) for i in idx)] = k
    bases = [None] * len(summaries)
    for idx in sorted(by_index, key=lambda t: t[:lay.last] + t[lay.last + 1:] + (t[lay.last],)):
        k = by_index[idx]
        s = summaries[k]
        col = idx[:lay.last] + idx[lay.last + 1:]
        prev = run.get(col)
        reg = offsets[tuple(slice(s.origin[i], s.origin[i] + s.shape[i]) for i in rows_axes)]
        bases[k] = reg + (prev if prev is not None else 0)
        run[col] = owner_hist[k] + (prev if prev is not None else 0)

    # the owners' numbers (a face label owning a component numbers it); non-owners take their owner's
    number = np.zeros(N, dtype=np.int64)
    for k, s in enumerate(summaries):
        sl = slice(start[k], start[k + 1])
        own = is_owner[sl]
        if not own.any():
            continue
        non_rows, non_ids = s.border_row[~own], s.border[~own]
        # non-owner face labels before each owner in its row (same row, smaller local label)
        ck = np.sort(non_rows * (s.n + 1) + non_ids)
        q_rows, q_ids = s.border_row[own], s.border[own]
        before = np.searchsorted(ck, q_rows * (s.n + 1) + q_ids) - np.searchsorted(ck, q_rows * (s.n + 1))
        number[np.flatnonzero(own) + start[k]] = bases[k].ravel()[q_rows] + (s.border_rank[own] - before) + 1
    if N:
        number = number[owner]
    for k, s in enumerate(summaries):
        sl = slice(start[k], start[k + 1])
        non = ~is_owner[sl]
        lookups[s.origin] = TileLookup(s.n, bases[k], s.border[non], number[sl][non])
    return Numbering(lookups, counts, face_labels=N, pairs=len(pr), merged=N - ncomp)


def relabel_tile(block: np.ndarray, lk: TileLookup, lay: Layout, dtype: np.dtype) -> np.ndarray:
    """Pass 2 on one tile: the tile's labels in the whole array's numbering."""
    lab, n, _, rows = _tile_components(block, lay)
    if n != lk.n:
        raise ValueError(f"the tile has {n} components now but had {lk.n} in the first pass")
    lut = np.zeros(n + 1, dtype=np.int64)
    is_non = np.zeros(n + 1, dtype=bool)
    is_non[lk.nonowner] = True
    owners = np.flatnonzero(~is_non[1:]) + 1
    r = rows[owners - 1]
    lut[owners] = lk.base.ravel()[r] + rank_in_group(r) + 1
    lut[lk.nonowner] = lk.numbers
    return lut.astype(dtype, copy=False)[lab]


def border_table_size(extent: tuple[int, ...], tile: tuple[int, ...], on: tuple[int, ...]) -> tuple[int, int]:
    """(face voxels the reduction holds, voxels of the largest boundary cross-section) for a tiling."""
    total, biggest = 0, 0
    for a in on:
        nb = math.ceil(extent[a] / tile[a]) - 1
        if nb > 0:
            cross = int(np.prod([n for i, n in enumerate(extent) if i != a], dtype=np.int64))
            total += 2 * nb * cross
            biggest = max(biggest, cross)
    return total, biggest
