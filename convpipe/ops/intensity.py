"""Global point ops: ``zscore`` and ``rescale``, parameterised by statistics of their whole input.

They declare ``needs()`` (keys of :func:`convpipe.stats.summarize`), take the statistics with
``prepare(stats)`` (or ``prepare_from(darr, compute)``, which computes them in a pre-pass), and then ``apply``
is a point op on the stored values (``raw_input``: never their float32 rounding), computed in float64 and
cast to the compute dtype by the chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..params.intensity import RescaleParams, ZScoreParams
from ..stats import percentile_key, summarize
from .base import NO_CONTEXT, Context, Op

class _GlobalOp(Op):
    """A point op parameterised by whole-array statistics of its input (computed in a pre-pass)."""

    kind = "global"
    raw_input = True  # float64 statistics and arithmetic on the stored values, never on their float32 rounding

    def setup(self) -> None:
        self.stats: dict[str, float] | None = None

    #: keys of :func:`summarize` the op uses when given (more accurate), but does without
    extra_needs: tuple[str, ...] = ()

    def needs(self) -> list[str]:
        """Keys of :func:`summarize` this op needs."""
        raise NotImplementedError

    def prepare(self, stats: dict[str, float]) -> None:
        missing = [k for k in self.needs() if k not in stats]
        if missing:
            raise ValueError(f"{self.name}: statistics {missing} were not computed")
        self.stats = {k: float(stats[k]) for k in [*self.needs(), *self.extra_needs] if k in stats}
        self._prepared()

    def _prepared(self) -> None:
        """Derive the point op's constants from ``self.stats``."""

    def prepare_from(self, darr, compute: Callable | None = None) -> None:
        """Compute the statistics this op needs over ``darr`` (its whole input) and prepare."""
        needs = self.needs()
        self.prepare(summarize(darr, [*needs, *self.extra_needs], compute=compute) if needs else {})

    @property
    def domain_nonfinite(self) -> bool:
        """The op's footprint is the whole input: statistics of an input holding NaN/inf are NaN/inf (as
        numpy's), and so is the output of every tile, legitimately (convpipe.finite)."""
        return self.stats is not None and not all(math.isfinite(v) for v in self.stats.values())

    def _need_prepared(self):
        if self.stats is None:
            raise RuntimeError(f"{self.name} runs after a statistics pre-pass: call prepare() first")

    def apply(self, x: Any, ctx: Context = NO_CONTEXT) -> Any:
        """The op's point function (:meth:`_point`) of the stored values, in float64, once prepared.

        One ``apply`` for the float64 global ops (zscore, rescale): what they share is the module's rule,
        float64 arithmetic on the stored values (``raw_input``) and never before the pre-pass, kept here
        once; they differ only in :meth:`_point`. (``threshold`` with a method compares the stored values
        themselves, so it has its own.)

        Parameters
        ----------
        x : array, any shape; the stored values (raw_input)
        ctx : Context, unused

        Returns
        -------
        array, ``x``'s shape, float64 (the chain casts to the compute dtype)
        """
        self._need_prepared()
        return self._point(x.astype(np.float64))

    def _point(self, v: np.ndarray) -> np.ndarray:
        """The point function of ``v``, the stored values in float64 (float64 out)."""
        raise NotImplementedError

    def method(self) -> str:
        return "elementwise (after a statistics pre-pass)"


class ZScore(_GlobalOp):
    """(x - mean) / std over the whole input, population std, float64 statistics.

    A constant input (std 0) gives 0 everywhere (x - mean), rather than NaN.
    """

    name = "zscore"
    Params = ZScoreParams
    linear = True

    extra_needs = ("mean_shift", "mean_rest")

    def needs(self):
        return ["mean", "std"]

    def _prepared(self):
        self.mean = self.stats["mean"]
        self.shift, self.rest = self.stats.get("mean_shift", self.mean), self.stats.get("mean_rest", 0.0)
        s = self.stats["std"]
        self.scale = 1.0 if s == 0 else s

    def _point(self, v):
        """(x - mean) / std."""
        # the mean as a stored value plus a small rest: x - shift is exact, so no digit of the spread is lost
        # to the offset
        return ((v - self.shift) - self.rest) / self.scale


class Rescale(_GlobalOp):
    """skimage.exposure.rescale_intensity(x, in_range, out_range) on float input.

    in_range: explicit, or the two percentiles of the whole input, or (neither given) its min and max
    (skimage's in_range='image'). Values outside in_range are clipped first; a degenerate in_range
    (low == high) gives clip(low, out_range), as skimage.
    """

    name = "rescale"
    Params = RescaleParams
    linear = True

    def needs(self):
        p = self.params
        if p.in_range is not None:
            return []
        if p.percentiles is not None:
            return [percentile_key(q) for q in p.percentiles]
        return ["min", "max"]

    def setup(self):
        super().setup()
        if self.params.in_range is not None:
            self.prepare({})

    def _prepared(self):
        p = self.params
        if p.in_range is not None:
            self.imin, self.imax = (float(v) for v in p.in_range)
        elif p.percentiles is not None:
            self.imin = self.stats[percentile_key(p.percentiles[0])]
            self.imax = self.stats[percentile_key(p.percentiles[1])]
        else:
            self.imin, self.imax = self.stats["min"], self.stats["max"]
        self.omin, self.omax = (float(v) for v in p.out_range)

    def _point(self, v):
        """rescale_intensity: clip to in_range, then map it linearly onto out_range."""
        v = np.clip(v, self.imin, self.imax)
        if self.imin != self.imax:
            v = (v - self.imin) / (self.imax - self.imin)
            v = v * (self.omax - self.omin) + self.omin
        else:
            v = np.clip(v, self.omin, self.omax)
        return v

    def describe(self):
        p = self.params
        src = (f"in_range {p.in_range}" if p.in_range is not None else
               f"percentiles {p.percentiles}" if p.percentiles is not None else "in_range image min/max")
        return f"rescale({src} -> {p.out_range})"
