"""Axis letters and orders: the canonical ``tczyx`` order the planner computes in, and the output's order.

Every op is exact for every order of the input's axes (SPEC.md): the planner presents the input to the ops
transposed to canonical order (the letters of the input sorted as in ``tczyx``), so a kernel's dimensions,
a sobel orientation's (d/dy, d/dx) and a stochastic draw's coordinates always follow the axis letters and
never their positions in the stored array. The result is transposed back before it is written.

The output keeps the input's order for the axes they share. An axis an op adds (``c``, from edge
components or a filter bank) goes before the first input axis that comes after it in ``tczyx`` (for an
input in canonical order: its canonical place; ``xy`` -> ``cxy``, ``zxy`` -> ``czxy``, ``tyx`` -> ``tcyx``).
"""

from __future__ import annotations

AXES_ORDER = "tczyx"


def insert_axis(axes: str, letter: str) -> str:
    """Insert ``letter`` into ``axes`` before the first axis that comes after it in 'tczyx' order."""
    rank = AXES_ORDER.index(letter)
    i = 0
    while i < len(axes) and AXES_ORDER.index(axes[i]) < rank:
        i += 1
    return axes[:i] + letter + axes[i:]


def canonical(axes: str) -> str:
    """The letters of ``axes`` in 'tczyx' order (``xy`` -> ``yx``, ``zxy`` -> ``zyx``)."""
    return "".join(a for a in AXES_ORDER if a in axes)


def is_canonical(axes: str) -> bool:
    return canonical(axes) == axes


def permutation(src: str, dst: str) -> tuple[int, ...]:
    """``perm`` with ``numpy.transpose(x, perm)`` turning an array with axes ``src`` into one with ``dst``."""
    if sorted(src) != sorted(dst):
        raise ValueError(f"axes {src!r} and {dst!r} are not the same letters")
    return tuple(src.index(a) for a in dst)


def output_order(in_axes: str, out_axes: str) -> str:
    """The stored order of a result with the letters ``out_axes`` computed from an input with ``in_axes``:
    shared axes in the input's order, new ones placed by :func:`insert_axis`, dropped ones left out."""
    axes = "".join(a for a in in_axes if a in out_axes)
    for a in out_axes:
        if a not in axes:
            axes = insert_axis(axes, a)
    return axes
