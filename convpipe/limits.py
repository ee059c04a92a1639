"""The sizes a spec may ask for, stated once: what ``validate`` refuses in seconds instead of hanging a run.

A spec is a few kilobytes of numbers, and a few of those numbers decide how much a run allocates: a kernel's
taps, a halo's width, a count of channels. Each limit below is far above what real pipelines use and far
below what would take a worker down; ``validate`` (and the job service, before it queues anything) refuses
a spec beyond one with one line naming the field. What depends on the input's shape (a halo much wider than
the array, which the tiles would pad to a block larger than memory) is checked when the run is planned, by
:func:`check_padded_blocks`.
"""

from __future__ import annotations

import math
from typing import Any

#: Largest spec text (bytes) ``validate`` reads; the job service's default request-body limit is the same, so a
#: spec the service takes is one ``validate`` takes. Larger kernels belong in ``.npy`` files.
MAX_SPEC_BYTES = 1 << 20

#: Most YAML nodes in a spec, counting every alias expansion (a 100 000-number inline kernel is the largest).
MAX_YAML_NODES = 100_000

#: Most weights in one kernel (inline, named or ``.npy``), e.g. 1024 x 1024 or 101 x 101 x 101.
MAX_KERNEL_TAPS = 1 << 20

#: Widest halo on one side of one axis, in voxels: a Gaussian of sigma 16 384 with truncate 4, a uniform or
#: rank filter of size 131 073, a kernel of 131 073 taps along an axis.
MAX_HALO = 1 << 16

#: Most steps in a spec, and most ops they expand into (each explicit ``diffusion`` step is one).
MAX_STEPS = 1000
MAX_EXPANDED_STEPS = 20_000

#: Most channels an op may add (filter_bank kernels, gabor orientations x frequencies) or scales it may
#: compute (blobs num_sigma).
MAX_CHANNELS = 1024


def as_float(v: Any) -> float:
    """``float(v)``, with integers too large for a float as infinity (never OverflowError)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def radius_ok(radius: float, what: str) -> None:
    """Refuse a halo radius beyond :data:`MAX_HALO` (``what`` says what makes it, for the message)."""
    if not math.isfinite(radius) or radius > MAX_HALO:
        shown = f"{radius:.4g}" if math.isfinite(radius) else str(radius)
        raise ValueError(f"{what} needs a halo of {shown} voxels on each side; at most {MAX_HALO} "
                         f"(see convpipe.limits)")


def gaussian_ok(sigmas: Any, truncate: float, name: str = "sigma") -> None:
    """Refuse a Gaussian whose radius ``truncate * sigma + 0.5`` is beyond :data:`MAX_HALO`."""
    vals = sigmas.values() if isinstance(sigmas, dict) else [sigmas]
    for s in vals:
        if s is None or isinstance(s, bool) or not isinstance(s, (int, float)):
            continue  # the field's own validator names a wrong type
        r = as_float(truncate) * as_float(s) + 0.5
        if not math.isfinite(r) or r > MAX_HALO:
            radius_ok(r, f"{name} {as_float(s):g} with truncate {as_float(truncate):g}")


def size_ok(sizes: Any, name: str = "size") -> None:
    """Refuse a filter size whose halo (``size // 2``) is beyond :data:`MAX_HALO`."""
    vals = sizes.values() if isinstance(sizes, dict) else [sizes]
    for s in vals:
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            f = as_float(s)
            if not math.isfinite(f) or f > 2 * MAX_HALO + 1:
                raise ValueError(f"{name} {f:g} needs a halo of {f / 2:.4g} voxels on each side; at most "
                                 f"{MAX_HALO} ({name} <= {2 * MAX_HALO + 1})")


def taps_ok(shape: tuple[int, ...] | float, what: str = "the kernel") -> None:
    """Refuse a kernel of more than :data:`MAX_KERNEL_TAPS` weights or wider than the halo limit."""
    if isinstance(shape, (int, float)):
        n = as_float(shape)
        wide = 0.0
    else:
        n = math.prod(as_float(s) for s in shape)
        wide = max((as_float(s) for s in shape), default=0.0)
    if not math.isfinite(n) or n > MAX_KERNEL_TAPS:
        raise ValueError(f"{what} would hold {n:.4g} weights; at most {MAX_KERNEL_TAPS} "
                         "(use smaller parameters, or a smaller kernel)")
    if wide > 2 * MAX_HALO + 1:
        raise ValueError(f"{what} is {wide:.0f} taps wide; at most {2 * MAX_HALO + 1} along an axis")


def channels_ok(n: float, what: str) -> None:
    n = as_float(n)
    if not math.isfinite(n) or n > MAX_CHANNELS:
        raise ValueError(f"{what} would make {n:.4g} channels; at most {MAX_CHANNELS}")


def check_op_halo(op: Any) -> None:
    """Refuse an op (bound to axes) whose halo on some axis exceeds :data:`MAX_HALO`: a SpecError at its step.

    The catch-all behind the per-parameter checks: every op's halo, whatever parameters make it.
    """
    for a, (lo, hi) in op.halo().items():
        if max(lo, hi) > MAX_HALO:
            err = op.error(f"this step needs a halo of {max(lo, hi)} voxels on each side along {a!r}; at most "
                           f"{MAX_HALO} (see convpipe.limits)")
            err.limit = True  # reported even when the input's axes are only assumed (validate without axes)
            raise err


#: Most multiply-adds one padded tile may take where a halo is wider than the array (about a minute of one
#: core): beyond it the tiles would spend hours on a block far wider than any result on this input needs.
MAX_PADDED_WORK = 1e11


def check_padded_blocks(passes: list[Any], memory_per_worker: int, compute_itemsize: int) -> None:
    """Refuse a plan whose padded tiles (tile + halo, as the tiles gather them) are out of all proportion.

    The planner's estimate counts the voxels a tile reads, which stay within the array; the block an op
    runs on is the tile plus its whole halo. Where a halo is wider than the array (``gaussian {sigma: 1e4}``
    on a 64 x 64 image) that block is many times the array, and no tiling shrinks it: such a plan is refused
    when one padded tile would need more than half a worker's memory or more than :data:`MAX_PADDED_WORK`
    multiply-adds. Raises PlanError naming the step whose halo is widest relative to the array.
    """
    from .errors import PlanError

    for pp in passes:
        ext = pp.extents[0]
        worst, ratio = None, 1.0
        for op in pp.ops:
            for a, (lo, hi) in op.halo().items():
                n = max(ext.get(a, 1), 1)
                if (lo + hi) / n > ratio:
                    worst, ratio = (op, a, lo + hi, n), (lo + hi) / n
        if worst is None:
            continue  # every halo fits within the array: the planner's own estimate holds
        voxels = 1.0
        for a in pp.in_axes:
            lo, hi = pp.halo.get(a, (0, 0))
            voxels *= float(min(pp.tile.get(a, ext[a]), ext[a]) + lo + hi)
        need = voxels * max(compute_itemsize, 8) * 4  # float64 passes, the padded block, result and scratch
        taps = sum(sum(lo + hi + 1 for lo, hi in op.halo().values()) for op in pp.ops)
        work = voxels * taps
        if need <= memory_per_worker / 2 and work <= MAX_PADDED_WORK:
            continue
        op, a, h, n = worst
        step = getattr(op, "step", None)
        where = op.name
        if step is not None:
            line = step.spec.line_of(("steps", step.index, step.name)) if step.spec is not None else None
            where = step.path + (f" (line {line})" if line else "")
        raise PlanError(f"{where}: a halo of {h} voxels along {a!r} on an axis of {n} makes padded tiles of "
                        f"{voxels:.3g} voxels (about {_fmt(need)} and {work:.2g} multiply-adds each; a worker "
                        f"has {_fmt(memory_per_worker)}): far more than any result on this input needs; use a "
                        "smaller kernel, sigma or size")


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} PiB"
