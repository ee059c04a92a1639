"""``convpipe verify OUTPUT``: recompute a sample of an output's tiles with the oracle and compare.

An output written by ``convpipe run`` carries its provenance in the ``convpipe`` attribute (the canonical
spec, the resolved input URL, the input fingerprint, the work tile and the output axes). ``verify`` reads
it, opens the input, and recomputes the pipeline's *oracle* with :mod:`convpipe.oracles` (SPEC.md's
whole-array references in float64, which share no code with the ops they check):

* for a chain of local, point and whole-axis ops (filters, edges, moving_average / autoregressive,
  spectral ops, stochastic, filter banks, match_template without a table), per sampled tile on a window
  around it: along an axis the tile widened by the sum of the chain's reaches (plus one) on each side,
  clipped to the array, so where the window meets the array's edge the boundary handling is the oracle's
  own ``mode``, and where it stops inside the array the error the cut introduces cannot reach the tile;
  the whole extent along an axis where an op needs it (``mode: wrap``, FFTs, recursive filters);
* for a chain with a global op (zscore, rescale: statistics of the whole array) or a table (peaks, blobs,
  match_template, stats), on the whole input, once (refused beyond ``max_bytes``): then every table the run
  wrote is compared with the oracle's, row for row (exactly the oracle's set of rows; values within the
  tolerance).

``blobs`` and ``match_template`` need scikit-image (their references are skimage's); without it, verify
says so in one line. An op the oracle module does not know is reported as *not verifiable*, never passed.

Tolerance (SPEC.md): ``max|out - oracle| <= rel * max(1, max|oracle|)`` with rel 1e-5 in float32
(1e-4 for FFT methods) and 1e-10 in float64 (1e-8 FFT); ``max|oracle|`` is taken over the checked tiles
(a table column: over the column). NaN and inf must sit where the oracle has them. When the chain ends in
quantizing point ops (``threshold``, ``astype`` to an integer type, or an integer output dtype), a voxel
whose pre-quantization oracle value lies within the tolerance of a step boundary may land on either side
of it; such voxels are accepted when the output lies in the image of ``[v - tol, v + tol]`` under the
(monotone) tail of point ops.
"""

from __future__ import annotations

from .check import MAX_WHOLE_BYTES, TOL, TOL_FFT, verify
from .reach import effective_precision, oracle_ops, reach
from .results import TableCheck, TileCheck, VerificationFailed, VerifyResult

__all__ = ["MAX_WHOLE_BYTES", "TOL", "TOL_FFT", "TableCheck", "TileCheck", "VerificationFailed", "VerifyResult",
           "effective_precision", "oracle_ops", "reach", "verify"]
