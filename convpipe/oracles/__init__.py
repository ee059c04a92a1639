"""The whole-array references of SPEC.md, one per op: what every result of convpipe must equal.

Each op has one function ``opname(x, dims, **params) -> (y, out_dims)`` taking the *spec's* parameters
(same names and defaults; parameters that only steer how convpipe computes, such as ``method`` or
``table``, are accepted and ignored) and returning the reference applied to the whole array in float64,
independently to every sub-array over the axes the op does not act on. Ops that emit a table also have
``TABLES[opname](x, dims, **params) -> {column: values}`` (one column per axis letter in global voxel
coordinates, plus the named values).

Axis order (SPEC.md: every op is exact for every order of the input's axes): every function transposes
its input to canonical ``tczyx`` order, applies the reference there, and transposes the result back to the
input's order (an axis the op adds, ``c``, goes before the first input axis that comes after it in
``tczyx``). So a kernel's dimensions and an orientation's (d/dy, d/dx) follow the axis letters.

This module uses numpy and scipy only (scikit-image for ``blobs`` and ``match_template``, imported when
they run) and imports nothing of convpipe: the oracle must not share code with what it checks. The
tests and ``convpipe verify`` both use it.

``oracle(steps, x, dims)`` chains the references; ``assert_conforms`` applies the contract's tolerance:

    max|out - oracle| <= 1e-5 * max(1, max|oracle|)   in float32   (1e-4 for FFT methods)
    max|out - oracle| <= 1e-10 * max(1, max|oracle|)  in float64   (1e-8 for FFT methods)

One module per family (``local``, ``stochastic``, ``axis``, ``spectral``, ``point``, ``features``, ``layers``,
``objects``, ``morphology``), beside
``base`` (axes, the registries ``OPS`` / ``TABLES``), ``kernels``, ``chain`` (``oracle``) and ``compare``
(``assert_conforms``); every name is importable from the package.
"""

from __future__ import annotations

from .base import (  # noqa: F401
    AXES_ORDER, canonical, default_dims, insert_axis, MODES, NEEDS_SKIMAGE, op, OPS, output_dims, per_axis,
    per_plane, planes, resolve_on, SPECTRAL_OPS, table, TABLES, TOL, TOL_FFT, transpose_to
)
from .kernels import EDGE_SMOOTH, kernel_array, named_kernel, normalize_kernel, orientation  # noqa: F401
from .local import (  # noqa: F401
    convolve, correlate, difference_of_gaussians, diffusion, edge_components, gaussian,
    gaussian_gradient_magnitude, gaussian_laplace, laplace, maximum, median, minimum, NUMPY_PAD, pad, prewitt,
    rank_filter, scharr, sobel, uniform, unsharp_mask
)
from .stochastic import stochastic  # noqa: F401
from .axis import _along, autoregressive, moving_average  # noqa: F401
from .spectral import butterworth, fft_filter, log_spectrum, radius_grid  # noqa: F401
from .point import (  # noqa: F401
    abs, astype, clip, GLOBAL_OPS, LOCAL_OPS, log1p, POINT_OPS, rescale, scale, sqrt, threshold, zscore
)
from .features import (  # noqa: F401
    bank_kernels, blobs, blobs_table, filter_bank, match_template, match_template_table, peaks, peaks_table,
    stats, stats_table, template_array
)
from .layers import conv_layer, correlate_extent, kernel_extent, pool, pool_sub  # noqa: F401
from .objects import acted_axes as object_axes, label, regionprops, regionprops_table, WHOLE_ARRAY_OPS  # noqa: F401
from .morphology import auto_threshold, distance_transform  # noqa: F401  (morphology: registered in OPS)
from .chain import fft_based, oracle, step_parts, uses_fft  # noqa: F401
from .compare import assert_conforms, max_error, tolerance, undefined_orientation  # noqa: F401
