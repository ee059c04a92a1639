"""Non-finite values in a tile: what an op may make of finite input, and the overflow check.

SPEC.md: where an output voxel's footprint holds a NaN or inf, the output there is what the arithmetic
gives; a finite input whose result overflows the compute dtype is an error naming the step and
``execution.precision: float64``, never a silent NaN/inf.

The rule, per tile (:class:`Guard`, run by :func:`convpipe.tiles.run_chain`):

- The tile's input is checked once. A tile holding NaN/inf is never checked again: its non-finite values
  are the user's, and every op keeps them within their footprints.
- While the values are finite, a non-finite result is an overflow of the compute dtype, except where an op
  leaves its domain (``sqrt`` of a negative value, ``log1p`` of a value <= -1 give NaN/-inf exactly as numpy
  does: ops with ``domain_nonfinite``). From such an op on, the tile is treated as non-finite.
- Checking every intermediate would cost a reduction per op per tile. NaN/inf reach the end of a chain
  through every op except a few that can turn them into finite values (``threshold``, ``astype`` to an
  integer type, an edge ``orientation``: ops with ``hides_nonfinite``), so the chain's result is checked,
  and the input of those few ops and of domain ops. When a check fails, the tile is run again with a check
  after every op (only on the way to an error or a rescue, so its cost does not matter): an op whose result
  is not finite runs once more in float64; its result is kept when it fits the compute dtype (OpenCV adds
  the two taps of a symmetric kernel before weighting them, so a blur of values near 3e38 overflows although
  the blur fits), else the error names the step.
- Rank filters, ``peaks``, ``blobs``, spectral and global ops keep NaN/inf within their footprints in their own
  ways (numpy's NaN rule for window maxima, whole planes for FFTs, whole arrays for statistics); see there.

Meanwhile :data:`convpipe.engines.ASSUME_FINITE` tells the engines that an op's input is finite, so they
skip their own checks (OpenCV and FFT paths are exact only for finite blocks).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ExecutionError


def is_finite(x: Any) -> bool:
    """True when ``x`` (numpy or CuPy) holds no NaN/inf; exact, whatever ``ASSUME_FINITE`` says.

    The maximum and the minimum: they propagate NaN, cannot overflow (a sum of finite values can), allocate
    nothing, and both together take 0.1 ms per million float32 values here, less than one ``sum``.
    """
    if not getattr(x, "size", 0) or getattr(x, "dtype", np.dtype(np.float64)).kind not in "fc":
        return True
    if x.dtype.kind == "c":
        return is_finite(x.real) and is_finite(x.imag)
    return math.isfinite(float(x.max())) and math.isfinite(float(x.min()))


def step_name(op: Any) -> str:
    """``steps[i].op`` of an op (every part of a merged run of filters)."""
    parts = getattr(op, "parts", None) or [op]
    names = []
    for p in parts:
        st = getattr(p, "step", None)
        name = st.path if st is not None else p.name
        if name not in names:
            names.append(name)
    return " + ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}"


def overflow_error(op: Any, compute: np.dtype) -> ExecutionError:
    target = getattr(op, "name", None) == "astype" and np.dtype(op.params.dtype)
    if target is not False and target.kind == "f":
        return ExecutionError(f"{step_name(op)}: the values exceed what {target} can hold (magnitudes up to "
                              f"{float(np.finfo(target).max):.3g}): cast to a wider type")
    compute = np.dtype(compute)
    big = float(np.finfo(compute).max) if compute.kind == "f" else float("inf")
    msg = (f"{step_name(op)}: the result overflows {compute} (magnitudes beyond {big:.3g}) although its "
           "input is finite")
    if compute.itemsize < 8:
        msg += "; compute in float64 with execution.precision: float64"
    else:
        msg += "; the values are beyond what float64 can hold: scale the input down first"
    return ExecutionError(msg)


def cast_overflow_error(src: np.dtype, dst: np.dtype) -> ExecutionError:
    return ExecutionError(f"output.dtype {np.dtype(dst)}: the result (computed in {np.dtype(src)}) holds values "
                          f"beyond what {np.dtype(dst)} can hold (magnitudes up to {float(np.finfo(dst).max):.3g}); "
                          "choose a wider output.dtype")


class Attribute(Exception):
    """Internal: the chain's result is non-finite; run the tile again checking every op."""


class Guard:
    """Tracks, op by op, whether a tile's values are still finite (see the module docstring).

    ``every``: check after every op (the second run that names the step that overflowed).
    """

    def __init__(self, ops: list, block: Any, compute: np.dtype, *, every: bool = False):
        self.ops = ops
        self.compute = np.dtype(compute)
        self.every = every
        real = getattr(block, "size", 0) and getattr(block, "dtype", np.dtype(bool)).kind == "f"
        #: (min, max) of a real float block, which the finiteness check computes anyway (centring reuses it)
        self.range = (float(block.min()), float(block.max())) if real else None
        # the values of the current op's input are known to be finite
        self.finite = is_finite(block) if self.range is None else all(math.isfinite(v) for v in self.range)

    def before(self, i: int, u: Any) -> None:
        """Before op ``i`` runs on ``u``: check its input when it could hide an overflow (and before a domain
        op, whose NaN would pass for its own: sqrt of an overflowed inf is inf, not a domain error)."""
        op = self.ops[i]
        if self.finite and i > 0 and not self.every and (op.hides_nonfinite or op.domain_nonfinite) \
                and not is_finite(u):
            raise Attribute()

    def overflowed(self, i: int, y: Any) -> bool:
        """In the op-by-op run: whether op ``i`` (not a domain op) made a non-finite ``y`` of finite values
        in a compute dtype narrower than float64, so that it is worth running once more in float64."""
        op = self.ops[i]
        return (self.every and self.finite and not op.domain_nonfinite
                and self.compute.itemsize < 8 and getattr(y, "dtype", self.compute).kind == "f"
                and not is_finite(y))

    def after(self, i: int, y: Any, *, last: bool) -> None:
        """After op ``i`` produced ``y``."""
        if not self.finite:
            return
        op = self.ops[i]
        domain = op.domain_nonfinite
        if not (self.every or domain or last):
            return
        if is_finite(y):
            return
        if domain:
            self.finite = False  # sqrt(-1), log1p(-2): numpy's NaN, not an overflow
        elif self.every:
            raise overflow_error(op, self.compute)
        else:
            raise Attribute()
