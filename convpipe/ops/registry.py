"""The ops that implement the catalog (:mod:`convpipe.params`), by name.

Explicit: :data:`IMPLEMENTATIONS` names the class of every catalog entry, and :func:`get` imports its module
on first use (no module is imported only so that it registers, and validating a spec with three gaussians
never imports the feature ops). A test checks that it covers the catalog name for name.
"""

from __future__ import annotations

import importlib

from .. import params
from .base import Op

#: catalog name -> "module:Class" (relative to convpipe.ops) of the op that implements it
IMPLEMENTATIONS: dict[str, str] = {
    # local filters
    "correlate": "local.correlate:Correlate",
    "convolve": "local.correlate:Convolve",
    "gaussian": "local.gaussian:Gaussian",
    "gaussian_laplace": "local.gaussian:GaussianLaplace",
    "gaussian_gradient_magnitude": "local.gaussian:GaussianGradientMagnitude",
    "difference_of_gaussians": "local.gaussian:DifferenceOfGaussians",
    "unsharp_mask": "local.gaussian:UnsharpMask",
    "uniform": "local.rank:Uniform",
    "median": "local.rank:Median",
    "minimum": "local.rank:Minimum",
    "maximum": "local.rank:Maximum",
    "sobel": "local.edges:Sobel",
    "prewitt": "local.edges:Prewitt",
    "scharr": "local.edges:Scharr",
    "laplace": "local.edges:Laplace",
    "diffusion": "local.diffusion:Diffusion",
    # point ops
    "astype": "point:Astype",
    "scale": "point:Scale",
    "clip": "point:Clip",
    "abs": "point:Abs",
    "log1p": "point:Log1p",
    "sqrt": "point:Sqrt",
    "threshold": "point:Threshold",
    # along one axis, spectral, stochastic, global
    "moving_average": "axis:MovingAverage",
    "autoregressive": "axis:Autoregressive",
    "fft_filter": "spectral:FFTFilter",
    "butterworth": "spectral:Butterworth",
    "log_spectrum": "spectral:LogSpectrum",
    "stochastic": "stochastic:Stochastic",
    "zscore": "intensity:ZScore",
    "rescale": "intensity:Rescale",
    # features
    "peaks": "features.peaks:Peaks",
    "filter_bank": "features.filter_bank:FilterBank",
    "blobs": "features.blobs:Blobs",
    "match_template": "features.match_template:MatchTemplate",
    "stats": "features.stats:Stats",
    # convolutional layers: output extents that change
    "pool": "layers.pool:Pool",
    "conv_layer": "layers.conv_layer:ConvLayer",
    # objects
    "label": "objects.label:Label",
    "regionprops": "objects.regionprops:Regionprops",
    # objects: morphology, distance transform
    "binary_erosion": "objects.morphology:BinaryErosion",
    "binary_dilation": "objects.morphology:BinaryDilation",
    "binary_opening": "objects.morphology:BinaryOpening",
    "binary_closing": "objects.morphology:BinaryClosing",
    "grey_erosion": "objects.morphology:GreyErosion",
    "grey_dilation": "objects.morphology:GreyDilation",
    "grey_opening": "objects.morphology:GreyOpening",
    "grey_closing": "objects.morphology:GreyClosing",
    "white_tophat": "objects.morphology:WhiteTophat",
    "black_tophat": "objects.morphology:BlackTophat",
    "distance_transform": "objects.distance:DistanceTransform",
}


def names() -> list[str]:
    """Every op a spec may name, sorted (the catalog's names; imports no op)."""
    return params.names()


def get(name: str) -> type[Op]:
    """The class implementing the catalog entry ``name`` (KeyError for a name the catalog lacks)."""
    params.entry(name)  # KeyError: not an op
    module, cls_name = IMPLEMENTATIONS[name].split(":")
    cls = getattr(importlib.import_module(f"{__package__}.{module}"), cls_name)
    return cls


def load_all() -> list[type[Op]]:
    """Every implementing class (imports every op module: a service does it once at start)."""
    return [get(name) for name in names()]
