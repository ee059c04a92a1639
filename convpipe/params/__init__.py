"""The op catalog: every op a spec may name, with its parameters and what it means.

This is the spec layer's view of the ops: :mod:`convpipe.spec` validates each step through it and
``convpipe ops`` / the JSON Schema list it, without importing a single op implementation (no scipy, no
engines, no dask). :mod:`convpipe.ops` implements each entry (``ops.registry`` maps a name to its class,
and a test checks that the two agree name for name).

One module per op family: :mod:`.local`, :mod:`.point`, :mod:`.axis`, :mod:`.spectral`,
:mod:`.stochastic`, :mod:`.intensity`, :mod:`.features`, :mod:`.layers`, :mod:`.objects`, :mod:`.morphology`;
:mod:`.base` holds what they share.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from .base import AxesParam, Entry, Mode, ModeParams, OpParams, PerAxis, PerAxisInt

__all__ = ["AxesParam", "Entry", "Mode", "ModeParams", "OpParams", "PerAxis", "PerAxisInt", "catalog", "entry",
           "names"]

#: family module -> the ops its ``ENTRIES`` define. Listed here so that a spec with three gaussians loads
#: only :mod:`.local`: building the pydantic models of every family is most of ``validate``'s start-up. A test
#: checks that every family's ENTRIES are exactly these names.
FAMILIES: dict[str, tuple[str, ...]] = {
    "local": ("correlate", "convolve", "gaussian", "gaussian_laplace", "gaussian_gradient_magnitude",
              "difference_of_gaussians", "unsharp_mask", "uniform", "median", "minimum", "maximum", "sobel",
              "prewitt", "scharr", "laplace", "diffusion"),
    "point": ("astype", "scale", "clip", "abs", "log1p", "sqrt", "threshold"),
    "axis": ("moving_average", "autoregressive"),
    "spectral": ("fft_filter", "butterworth", "log_spectrum"),
    "stochastic": ("stochastic",),
    "intensity": ("zscore", "rescale"),
    "features": ("peaks", "filter_bank", "blobs", "match_template", "stats"),
    "layers": ("pool", "conv_layer"),
    "objects": ("label", "regionprops"),
    "morphology": ("binary_erosion", "binary_dilation", "binary_opening", "binary_closing", "grey_erosion",
                   "grey_dilation", "grey_opening", "grey_closing", "white_tophat", "black_tophat",
                   "distance_transform"),
}
_FAMILY_OF = {name: fam for fam, ops in FAMILIES.items() for name in ops}
if len(_FAMILY_OF) != sum(map(len, FAMILIES.values())):  # pragma: no cover - a name in two families
    raise RuntimeError("an op is listed in two families")


class _Catalog(Mapping[str, Entry]):
    """The catalog: every name known at once, each family's entries loaded with the first of its ops asked for."""

    def __init__(self) -> None:
        self._names = sorted(_FAMILY_OF)
        self._loaded: dict[str, Entry] = {}

    def _load(self, family: str) -> None:
        mod = importlib.import_module(f".{family}", __name__)
        got = {e.name: e for e in mod.ENTRIES}
        if sorted(got) != sorted(FAMILIES[family]) or len(got) != len(mod.ENTRIES):
            raise RuntimeError(f"params.{family} defines {sorted(got)}, FAMILIES lists {sorted(FAMILIES[family])}")
        self._loaded.update(got)

    def __getitem__(self, name: str) -> Entry:
        if name not in _FAMILY_OF:
            raise KeyError(name)
        if name not in self._loaded:
            self._load(_FAMILY_OF[name])
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:  # no family loads to answer it
        return name in _FAMILY_OF

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


_CATALOG = _Catalog()


def catalog() -> Mapping[str, Entry]:
    """Every op of the catalog by name (sorted, read-only; a family's models are built on first use)."""
    return _CATALOG


def names() -> list[str]:
    """The op names a spec may use, sorted (loads no family)."""
    return list(_CATALOG)


def entry(name: str) -> Entry:
    """The catalog entry of ``name`` (KeyError for an unknown op)."""
    return _CATALOG[name]
