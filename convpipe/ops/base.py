"""The Op protocol: what every op declares, and how the tiling engine (:mod:`convpipe.tiles`) calls it.

An op is a catalog entry (:mod:`convpipe.params`: name and parameters) bound to the axes of its input. Its
class implements the entry on the members of :class:`Op`; every capability the engine, the planner, the
backends or the run look at is declared there with its default, so an op says what it needs by setting a
class attribute, never by growing a method someone finds with ``getattr``.

Kinds
-----
``point``   value-wise, no halo, fused anywhere.
``local``   needs a halo of ``halo()[axis] = (lo, hi)`` voxels, padded at the whole array's edges by
            ``boundary(axis)``; ``apply`` receives the block padded by exactly that halo and returns the
            valid part (the block shrunk by ``lo + hi`` along each halo axis).
``full``    needs whole extents along ``full_axes()`` (FFT filters, sequential time filters).
``global``  point op that needs statistics of the whole input first (``zscore``, ``rescale``).

The dtype rule (for every op)
-----------------------------
``apply`` receives its block in the pipeline's compute dtype (float32, or float64 for ``precision:
float64`` and for inputs float32 cannot hold exactly; integer inputs are cast before the first op), except
an op with ``raw_input``, which receives the stored values (:func:`convpipe.tiles.stored_values`). It
returns ``out_dtype(compute)``: the compute dtype unless the op says otherwise (``threshold`` uint8,
``astype`` its dtype). An op that computes in float64 inside (tables, ``match_template``, the global ops)
may return float64; the chain casts the result to ``out_dtype(compute)`` before the next op.

Table rows
----------
An op with ``emits_table`` computes its rows with its image in :meth:`Op.apply_rows`: columns of local
indices into the returned image (one per input axis) and named values. The engine maps the indices to
global coordinates, keeps the rows the tile owns (its core) and writes them; ``merge_rows`` (when set)
combines all the tiles' rows once at the end of a run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from ..axes import insert_axis  # noqa: F401  (ops import it from here)
from ..errors import SpecError
from ..params.base import OpParams

#: Table rows of one block: column name -> 1-D array (``Op.apply_rows``).
Rows = dict[str, np.ndarray]


@dataclass(frozen=True)
class Context:
    """What the tiling engine knows about a block beyond its values (``Op.apply(x, ctx)``).

    The engine fills a field only for the ops that declare they want it (``Op.wants_coords``, ...), so the
    others pay nothing; a field an op did not ask for is None.
    """

    xp: Any = np
    """The array module of the block (numpy, or cupy for a device block). Ops whose numpy calls CuPy
    implements (``np.sqrt``, ``np.stack``, ...) reach CuPy through numpy's dispatch protocols and need not use it."""
    coords: Mapping[str, np.ndarray] | None = None
    """Per input axis: the global coordinate of every index of the op's output along that axis (entries
    between two gathered runs are garbage that the engine discards). ``wants_coords``; table ops always."""
    outside: Mapping[int, np.ndarray] | None = None
    """Per axis index: boolean mask of the block's positions beyond the whole array (padding of mode
    ``constant``). ``wants_outside``; only axes that have such positions."""
    extent: Mapping[str, int] | None = None
    """The whole array's length along each of the op's input axes. ``wants_extent``, or ``rows_context``."""
    core: Mapping[str, slice] | None = None
    """For rows only: per axis, the slice of the op's output that the tile owns (it is larger than the core
    when a later op of the pass needs a halo). ``rows_context``."""
    shift: float = 0.0
    """The constant the engine subtracted from the block's values (:mod:`convpipe.centring`): the block holds
    the true values minus ``shift``. Ops that reset constant padding before each 1-D pass pad the centred
    intermediates with ``cval - shift * (sum of the earlier passes' kernels)``, the true ``cval`` centred."""


#: The context of a block seen alone (numpy, no coordinates): what ``op.apply(x)`` gets.
NO_CONTEXT = Context()


class Op:
    """A step bound to the axes of its input. Subclasses set ``name`` and ``Params`` (their catalog entry's),
    ``kind``, the capabilities they have, and implement ``apply`` (and ``halo`` for a local op)."""

    name: ClassVar[str]
    """The catalog name (``convpipe.params``) this class implements; internal ops (``merged``) have their own."""
    Params: ClassVar[type[OpParams]] = OpParams
    """The catalog entry's parameter model."""
    kind: ClassVar[str] = "local"
    """``point``, ``local``, ``full`` or ``global`` (module docstring); an op may set it per instance."""
    linear: ClassVar[bool] = False
    """Linear in its input (the planner may merge consecutive linear filters)."""
    gpu_path: ClassVar[bool] = False
    """``apply`` runs unchanged on CuPy blocks: it reaches kernels only through :mod:`convpipe.engines` and
    otherwise uses numpy functions CuPy implements. A GPU plan runs a pass on the device only when every op
    of the pass has it (:func:`convpipe.backends.pass_backend`)."""
    raw_input: ClassVar[bool | Literal["exact"]] = False
    """Read the stored values, not their rounding to the compute dtype (statistics, tables, ``threshold``):
    True gives integers as a float type that holds them exactly, ``"exact"`` the block untouched."""
    emits_table: ClassVar[bool] = False
    """Writes table rows: the engine calls :meth:`apply_rows` when the run has a table for it."""
    rows_context: ClassVar[bool] = False
    """Its rows need ``ctx.core`` (the part of the output the tile owns) and ``ctx.extent``."""
    wants_coords: ClassVar[bool] = False
    """``apply`` needs ``ctx.coords`` (values that depend on where a voxel is: stochastic draws, array edges)."""
    wants_outside: ClassVar[bool] = False
    """``apply`` needs ``ctx.outside`` (scipy pads each 1-D pass of mode constant with cval)."""
    wants_extent: ClassVar[bool] = False
    """``apply`` needs ``ctx.extent`` (where the array ends, when a NaN of the data must not pass for padding)."""
    domain_nonfinite: ClassVar[bool] = False
    """Gives NaN/inf for finite input outside its domain (sqrt(-1), log1p(-2)): the reference's answer, not an
    overflow (:mod:`convpipe.finite`)."""
    hides_nonfinite: ClassVar[bool] = False
    """Can turn NaN/inf into finite values (threshold, integer casts, arctan2): the overflow check looks at
    its input (:mod:`convpipe.finite`)."""
    new_pass: ClassVar[bool] = False
    """Starts a pass of its own, reading the previous pass's tiles (a distance transform's second and later
    axes: whole lines along another axis than the pass before); the planner cuts the chain before it."""
    merge_rows: ClassVar[Callable[[Any], Any] | None] = None
    """None, or ``merge_rows(table)``: the final table from the concatenated rows of every tile (a
    ``pyarrow.Table`` or None when no tile had a row), for rows that combine across tiles (whole-plane
    statistics, blob pruning). Called once at the end of a run."""
    isolated: ClassVar[bool] = False
    """Only point ops may share its pass (the planner cuts the chain before any other op after it): ``label``
    relabels exactly the tiles its pre-pass saw, never a block grown by a later op's halo."""
    tiled_prepass: ClassVar[bool] = False
    """A ``global`` op whose pre-pass runs over the tiles of the pass it starts: the run calls
    :meth:`prepare_pass` (``label``) instead of ``prepare_from`` (statistics of ``zscore``, ``rescale``)."""
    passes_dtype: ClassVar[bool] = False
    """Its image passes through with its own type: the planner sets ``op.in_dtype`` (the dtype the op
    receives) before it asks ``out_dtype`` (``regionprops``: an int32 label image stays int32)."""
    cost_ns: ClassVar[float] = 0.0
    """Nanoseconds per voxel for the planner's tile size and time estimate; 0: its kind's default."""

    def estimate_work(self) -> dict[str, float] | None:
        """The op's work per voxel of its input, for ``explain``'s estimate only (:mod:`convpipe.estimate`;
        the planner's tile choice never sees it): ``point`` elementwise passes in units of ``x * 2 + 1``,
        ``taps`` of a direct kernel, ``macs`` multiply-adds of a matrix product, ``fft`` FFT filters of the
        block. None: the planner's model, scaled by its kind's measured factor."""
        return None

    def __init__(self, params: Any, axes: str, *, step: Any = None):
        self.params = params
        self.in_axes = axes
        self.step = step
        self.setup()

    # ---- hooks for subclasses
    def setup(self) -> None:
        """Check parameters against the input axes and precompute (kernels, radii)."""

    @property
    def out_axes(self) -> str:
        """The axes of the op's output (an op that adds ``c`` inserts it)."""
        return self.in_axes

    def halo(self) -> dict[str, tuple[int, int]]:
        """Voxels ``(lo, hi)`` the op reads beyond its output along each axis (local ops)."""
        return {}

    def boundary(self, axis: str) -> tuple[str, float]:
        """``(mode, cval)`` that pads the halo beyond the whole array's edges along ``axis``."""
        mode = getattr(self.params, "mode", "reflect")
        return mode, float(getattr(self.params, "cval", 0.0) or 0.0)

    def full_axes(self) -> str:
        """Axes the op needs whole (kind ``full``)."""
        return ""

    def shift_gain(self) -> float | None:
        """How the op answers a constant shift of its input: ``g`` with ``op(x - c) = op(x) - g * c`` for every
        constant ``c`` (its padding shifted alike), in the oracle's float64 arithmetic; None: unknown.

        0 for shift-invariant ops (derivatives, edges, high-pass), the kernel's sum for linear filters (1 for
        normalized smoothing; the exact float64 sum, which for a second-derivative Gaussian is not 0), 1 for rank
        filters. The tile engine centres float32 runs of ops that declare it (:mod:`convpipe.centring`); the
        default, None, means the op always sees the true values (abs, clip, thresholds, statistics, tables).
        """
        return None

    def out_dtype(self, compute: np.dtype) -> np.dtype:
        """The dtype of the op's output for a chain computing in ``compute`` (the dtype rule above)."""
        return compute

    def out_extent(self, axis: str, n: int) -> int:
        """Length of a new output axis this op adds (only ops that add an axis, like ``c``)."""
        raise NotImplementedError

    # ---- output extents that change (SPEC.md, "Convolutional layers"; the planner and convpipe.tiles)
    def strides(self) -> dict[str, int]:
        """Stride per axis where it is not 1 (default: none; ``stride``, ``pool``).

        Output voxel ``i`` along a strided axis reads the input window ``[i*s - lo, i*s + hi]`` with
        ``(lo, hi) = halo()[axis]``; the tiling engine gathers exactly those windows, and ``apply`` returns
        ``(length - lo - hi - 1) // s + 1`` voxels along that axis of a block of ``length``.
        """
        return {}

    def out_length(self, axis: str, n: int) -> int:
        """Length of output axis ``axis`` for an input of length ``n`` along it (default ``n``: the op keeps
        the extent). ``extent: valid | full``, strides, ``pool`` and ``conv_layer``'s channels change it; the
        planner refuses a result with no voxel along an axis."""
        return n

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The op on one block.

        Parameters
        ----------
        x : numpy.ndarray or cupy.ndarray
            The block, axes ``in_axes``, padded by ``halo()`` (local ops) or whole along ``full_axes()``;
            dtype by the dtype rule (module docstring).
        ctx : Context
            What the engine knows about the block (the fields the op declared it wants).

        Returns
        -------
        array
            Axes ``out_axes``, ``x``'s shape less the halo (``lo + hi`` along each halo axis), dtype
            ``out_dtype(compute)`` (or float64, cast by the chain).
        """
        raise NotImplementedError

    def apply_rows(self, x: Any, ctx: Context = NO_CONTEXT) -> tuple[Any, Rows]:
        """The op's output and its table rows for one block (ops with ``emits_table``).

        Parameters
        ----------
        x, ctx
            As for :meth:`apply`; ``ctx.coords`` is always given, ``ctx.core`` and ``ctx.extent`` for ops with
            ``rows_context``.

        Returns
        -------
        (array, Rows)
            The array :meth:`apply` returns, and the rows: one integer column per input axis holding local
            indices into that array, plus the op's value columns (all of one length).
        """
        raise NotImplementedError(f"{self.name} writes no table")

    def prepare_pass(self, darr: Any, compute: Callable | None, pp: Any) -> None:
        """``tiled_prepass`` ops: compute what the op needs over its whole input ``darr`` (the previous pass's
        result) on the tiles of ``pp`` (the :class:`convpipe.plan.PassPlan` the op starts), before it runs."""
        raise NotImplementedError(f"{self.name} has no tiled pre-pass")

    def check_source(self, darr: Any, compute: Callable | None) -> None:
        """Refuse, before any tile is written, an input the op cannot answer (raise InputError).

        Called by a run that writes (a sink) when the op is the first of the first pass, so ``darr`` is the
        input as stored (in the op's axes): ``distance_transform`` of a sub-array without background. One
        reduction over the input; nothing for most ops."""

    def plan_notes(self, tile: Mapping[str, int], extent: Mapping[str, int]) -> list[str]:
        """Lines ``explain`` adds to the op's pass on this tiling (``label``: its border table)."""
        return []

    def bind_input(self, array: Any, axes: str) -> None:
        """Read what the op takes from the pipeline's input itself (a ``crop`` template) from ``array`` (the
        input being processed, with ``axes``), before the graph is built. Nothing for most ops."""

    def bind_voxel_sizes(self, sizes: Mapping[str, float]) -> None:
        """Take defaults from the input's OME metadata: ``sizes`` is the voxel size per axis letter of the level
        read (distance_transform's default sampling). Metadata only, so explain calls it too. Nothing for most
        ops."""

    def channel_labels(self, labels: list[str] | None) -> list[str] | None:
        """The names of the output's ``c`` channels, given the input's (None: unknown or no ``c`` axis).

        Default: an op that keeps ``c`` channel for channel (no window, stride or length change along it)
        keeps the labels; one that adds, mixes or removes ``c`` knows none. Ops that make channels
        (``filter_bank``, ``conv_layer``, ``sobel``'s components) name them.
        """
        if labels is None or "c" not in self.in_axes or "c" not in self.out_axes:
            return None
        if self.halo().get("c", (0, 0)) != (0, 0) or "c" in self.strides() or "c" in self.full_axes():
            return None
        return labels if self.out_length("c", len(labels)) == len(labels) else None

    def method(self) -> str:
        """How the op computes (``explain``)."""
        return "direct"

    def expand(self) -> list["Op"]:
        """The ops that actually run (diffusion with steps becomes one op per step)."""
        return [self]

    def describe(self) -> str:
        p = self.params.model_dump(exclude_defaults=True)
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in p.items())})" if p else self.name

    # ---- helpers
    def error(self, message: str, field: str | None = None) -> SpecError:
        if self.step is not None:
            return self.step.error(message, field)
        return SpecError(message, path=self.name + (f".{field}" if field else ""))

    def axis_index(self, letter: str) -> int:
        return self.in_axes.index(letter)

    def resolve_axes(self, axes: str | None, *, field: str = "axes", default: str = "yx",
                     **per_axis: Any) -> str:
        """The axes an op acts on: explicit ``axes``, else the keys of a per-axis map, else ``default``.

        ``per_axis`` are the op's per-axis parameters by name (for error locations). The default ``yx``
        falls back to the input's trailing axes when it has no y/x (a 1-D signal).
        """
        if axes is None:
            for name, v in per_axis.items():
                if isinstance(v, dict):
                    axes = "".join(a for a in self.in_axes if a in v)
                    unknown = [a for a in v if a not in self.in_axes]
                    if unknown:
                        raise self.error(f"axis {unknown[0]!r} is not one of the input axes {self.in_axes!r}",
                                         name)
                    break
        if axes is None:
            axes = "".join(a for a in default if a in self.in_axes)
            if not axes:
                axes = self.in_axes[-len(default):]
            return axes
        for a in axes:
            if a not in self.in_axes:
                raise self.error(f"axis {a!r} is not one of the input axes {self.in_axes!r}", field)
        if "c" in axes and self.kind == "local":
            raise self.error("filters do not act along the channel axis 'c'", field)
        return "".join(a for a in self.in_axes if a in axes)

    def per_axis(self, value: Any, axes: str, field: str) -> dict[str, float]:
        """Expand a number or per-axis map into ``{axis: value}`` over ``axes``."""
        if isinstance(value, dict):
            for a in value:
                if a not in self.in_axes:
                    raise self.error(f"axis {a!r} is not one of the input axes {self.in_axes!r}", field)
                if a not in axes:
                    raise self.error(f"axis {a!r} is not among the op's axes {axes!r}", field)
            missing = [a for a in axes if a not in value]
            if missing:
                raise self.error(f"no value for axis {missing[0]!r} (the op acts on {axes!r})", field)
            return {a: value[a] for a in axes}
        return {a: value for a in axes}

    def crop(self, y: Any, halo: Mapping[str, tuple[int, int]] | None = None) -> Any:
        """``y`` without the halo (default ``halo()``): the valid region of a result computed on the padded block."""
        sl = [slice(None)] * y.ndim
        for a, (lo, hi) in (self.halo() if halo is None else halo).items():
            i = self.in_axes.index(a)
            sl[i] = slice(lo, y.shape[i] - hi)
        return y[tuple(sl)]
