"""``label``: connected components numbered exactly as scipy.ndimage.label numbers them, on any tiling.

A pass-cutting op (kind ``global``, like ``zscore``): the plan starts a pass at it, and before that pass
runs, :meth:`Label.prepare_pass` computes the first pass over the same tiles (local labels, faces, first
voxels per row), the boundary pairs and the reduction (:mod:`.components`); the pass itself then relabels
each tile with its lookup. Only point ops fuse after it (``isolated``): a later op with a halo would ask
for a block larger than the tile, whose local labels are not the ones the first pass numbered.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from ...params.objects import LabelParams
from ..base import NO_CONTEXT, Context, Op
from .components import (Layout, border_table_size, boundary_pairs, label_bits, reduce_tiles, relabel_tile,
                         summarize_tile)

SPATIAL = "zyx"


def _fmt_count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def label_axes(op: Op, axes: str | None) -> str:
    """The axes of ``label`` and ``regionprops``: explicit ``axes``, else the input's spatial axes z, y, x
    present, else (an input with none of them) its last axis.

    One rule for both, so a regionprops after a label measures the objects over the axes they were found
    on. (The morphology and distance ops refuse an input without a spatial axis instead:
    :func:`convpipe.ops.objects.morphology.object_axes`.)
    """
    default = "".join(a for a in SPATIAL if a in op.in_axes) or op.in_axes[-1]
    return op.resolve_axes(axes, default=default)


class Label(Op):
    """scipy.ndimage.label(x != 0, structure=generate_binary_structure(len(axes), connectivity)) on every
    sub-array over ``axes``: the same numbers, in raster order of each component's first voxel."""

    name = "label"
    kind = "global"  # the plan cuts the chain before it; execute runs prepare_pass first
    isolated = True  # only point ops may share its pass (the plan cuts before any other op after it)
    tiled_prepass = True  # execute calls prepare_pass over this pass's tiles
    Params = LabelParams
    raw_input = "exact"  # x != 0 on the stored values (a float64 1e-50 is foreground, not its float32 0)
    hides_nonfinite = True  # NaN != 0: foreground, a finite label
    wants_coords = True
    # per voxel, both passes (scipy.ndimage.label ~15 ns twice, first voxels, faces, relabel): steers the tile
    # size, so tiles stay a few million voxels whatever the array's size (flat memory)
    cost_ns = 40.0
    summary = "connected components of x != 0, numbered as scipy.ndimage.label (two passes over the tiles)"

    def setup(self) -> None:
        p = self.params
        self.axes = label_axes(self, p.axes)
        if p.connectivity > len(self.axes):
            raise self.error(f"connectivity {p.connectivity} is more than the number of axes the op acts on "
                             f"({len(self.axes)}: {self.axes!r})", "connectivity")
        self.numbering = None

    def out_dtype(self, compute: np.dtype) -> np.dtype:
        return np.dtype(self.params.dtype)

    def method(self) -> str:
        return "local labels, union-find over tile faces, raster-order numbering (2 passes)"

    def describe(self) -> str:
        p = self.params
        return f"label(connectivity {p.connectivity} over {self.axes}, {p.dtype})"

    def layout(self, extent: tuple[int, ...]) -> Layout:
        return Layout(tuple(int(n) for n in extent), tuple(self.in_axes.index(a) for a in self.axes),
                      int(self.params.connectivity))

    def plan_notes(self, tile: dict[str, int], extent: dict[str, int]) -> list[str]:
        """What explain says about the first pass and the reduction on this tiling."""
        ext = tuple(extent[a] for a in self.in_axes)
        t = tuple(min(tile.get(a, n), n) for a, n in zip(self.in_axes, ext))
        lay = self.layout(ext)
        faces, biggest = border_table_size(ext, t, lay.on)
        n_tiles = int(np.prod([-(-n // k) for n, k in zip(ext, t)], dtype=np.int64))
        rows = int(np.prod(ext, dtype=np.int64)) // max(ext[lay.last], 1)
        boundaries = sum(-(-ext[a] // t[a]) - 1 for a in lay.on)
        return [f"label pre-pass: labels each of the {n_tiles} tiles and keeps its faces; border table "
                f"{_fmt_count(faces)} face voxels (~{faces * 8 / 2**20:.1f} MiB, {boundaries} boundaries, the "
                f"largest {_fmt_count(biggest)} voxels), {_fmt_count(rows)} row counts; one reduction numbers "
                f"the components ({n_tiles + boundaries + 1} tasks), then this pass relabels each tile"]

    # ---------------------------------------------------------------- the first pass and the reduction
    def prepare_pass(self, darr: Any, compute: Callable | None, pp: Any) -> None:
        """Pass 1 over the tiles of ``pp`` (the pass this op starts), the boundary pairs, the numbering."""
        grid = pp.tile_grid()
        self._prepare(darr, compute, [[(int(s), int(e)) for s, e in g] for g in grid])

    def prepare_from(self, darr: Any, compute: Callable | None = None) -> None:
        """Prepare on the chunks of ``darr`` (the pass's tiles must be these chunks)."""
        grid = []
        for c in darr.chunks:
            b = np.r_[0, np.cumsum(c)]
            grid.append([(int(b[i]), int(b[i + 1])) for i in range(len(c))])
        self._prepare(darr, compute, grid)

    def _prepare(self, darr: Any, compute: Callable | None, grid: list[list[tuple[int, int]]]) -> None:
        import operator

        import dask
        from dask.base import tokenize
        from dask.delayed import Delayed
        from dask.highlevelgraph import HighLevelGraph

        chunks = tuple(tuple(e - s for s, e in g) for g in grid)
        arr = darr if tuple(darr.chunks) == chunks else darr.rechunk(chunks, method="tasks")
        lay = self.layout(arr.shape)
        gshape = tuple(len(g) for g in grid)
        bits = label_bits(max(int(np.prod([max(c) for c in chunks], dtype=np.int64)), 1))
        limit = int(_max_label(self.params.dtype))
        written = self._written_as()
        if written is not None:
            limit = min(limit, _max_label(written))
        # the graph by hand (one task per tile, per boundary, and the reduction): dask.delayed would walk
        # every boundary's list of tiles again, quadratic in tiles
        name = f"convpipe-label-{tokenize(arr.name, lay, limit)}"
        dsk: dict = {}
        origins = {}
        for idx in itertools.product(*[range(n) for n in gshape]):
            flat = int(np.ravel_multi_index(idx, gshape)) if gshape else 0
            origins[idx] = (flat, tuple(grid[i][j][0] for i, j in enumerate(idx)))
            dsk[(name + "-tile", flat)] = (summarize_tile, (arr.name, *idx), flat, origins[idx][1], lay)
            dsk[(name + "-summary", flat)] = (operator.getitem, (name + "-tile", flat), 0)
            dsk[(name + "-faces", flat)] = (operator.getitem, (name + "-tile", flat), 1)
        pair_keys = []
        for a in lay.on:
            for i in range(gshape[a] - 1):
                low = [origins[idx] for idx in origins if idx[a] == i]
                up = [origins[idx] for idx in origins if idx[a] == i + 1]
                key = (name + "-pairs", a, i)
                dsk[key] = (_pairs, a, [o for _, o in low], [f for f, _ in low],
                            [(name + "-faces", f) for f, _ in low], [o for _, o in up], [f for f, _ in up],
                            [(name + "-faces", f) for f, _ in up], lay, bits)
                pair_keys.append(key)
        dsk[name] = (_reduce, [(name + "-summary", f) for f, _ in origins.values()], pair_keys, lay, bits, gshape,
                     limit)
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[arr])
        (res,) = (compute or dask.compute)(Delayed(name, graph))
        if isinstance(res, str):  # the count did not fit: a SpecError at the dtype, before anything is written
            if written is not None and _max_label(written) < _max_label(self.params.dtype):
                # located at the label step (its line), as every other refusal of a step; output.dtype's
                # line is named too, since widening it is the fix
                spec = self.step.spec
                at = spec.line_of(("output", "dtype")) if spec is not None else None
                raise self.error(f"{res}: the labels are written as output.dtype {written}"
                                 f"{f' (line {at})' if at is not None else ''}, which would merge objects; use a "
                                 "wider output.dtype (or leave it unset)")
            raise self.error(f"{res}: use dtype: int64" if self.params.dtype == "int32" else res, "dtype")
        self.numbering = res

    def _written_as(self) -> str | None:
        """The ``output.dtype`` this label image is written in, when it reaches the output unchanged.

        A label does not survive a cast into fewer bits: saturating (the output cast's rule for magnitudes)
        would merge every object beyond the largest number into one, and a run would say done.
        """
        spec = self.step.spec if self.step is not None else None
        dtype = getattr(getattr(spec, "output", None), "dtype", None)
        if spec is None or dtype is None:
            return None
        later = spec.steps[self.step.index + 1:]
        return str(dtype) if all(st.name in _KEEP_LABELS for st in later) else None

    # ---------------------------------------------------------------- the second pass
    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The tile's components in the whole array's numbering (pass 2).

        Parameters
        ----------
        x : numpy.ndarray
            The tile, exactly as the pre-pass saw it (``isolated``: no later op grows it), stored values.
        ctx : Context
            ``ctx.coords`` says where the tile lies (its lookup is keyed by its origin).

        Returns
        -------
        numpy.ndarray
            Labels, dtype ``params.dtype`` (int32 or int64); 0 is background.
        """
        coords = ctx.coords
        if self.numbering is None:
            raise RuntimeError("label runs after its first pass over the tiles: call prepare_pass() first")
        origin = tuple(int(coords[a][0]) if coords is not None and a in coords and len(coords[a]) else 0
                       for a in self.in_axes)
        lk = self.numbering.lookups.get(origin)
        lay = self.numbering.layout
        if lk is None or tuple(lk.base.shape) != tuple(x.shape[i] for i in lay.row_axes()):
            raise RuntimeError(f"label: the block at {origin} (shape {x.shape}) is not a tile of the first pass")
        try:
            return relabel_tile(np.asarray(x), lk, lay, np.dtype(self.params.dtype))
        except ValueError as e:
            from ...errors import ExecutionError

            raise ExecutionError(f"{self.step.path if self.step is not None else self.name}: {e}: the input "
                                 "changed while the run read it") from None


def _max_label(dtype: str) -> int:
    """The largest label ``dtype`` holds: every integer up to it, exactly (floats: up to 2**(mantissa + 1))."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return 2 ** (np.finfo(dt).nmant + 1)
    if dt.kind == "b":
        return 1
    return int(np.iinfo(dt).max)


#: Steps that hand a label image on unchanged (their tables are beside it), so that its numbers reach the output
_KEEP_LABELS = frozenset({"regionprops"})


def _pairs(axis, low_origins, low_flat, low_faces, up_origins, up_flat, up_faces, lay, bits):
    # the high face of each tile below the boundary, the low face of each tile above it
    return boundary_pairs(axis, [(o, f, d[(axis, 1)]) for o, f, d in zip(low_origins, low_flat, low_faces)],
                          [(o, f, d[(axis, 0)]) for o, f, d in zip(up_origins, up_flat, up_faces)], lay, bits)


def _reduce(summaries, pairs, lay, bits, gshape, limit):
    try:
        res = reduce_tiles(summaries, pairs, lay, bits, gshape, max_label=limit)
    except OverflowError as e:
        return str(e).removeprefix("label: ")
    res.layout = lay
    return res
