"""Local filters: every output voxel depends on a bounded neighbourhood (the halo). One module per family:
:mod:`.correlate` (correlate, convolve), :mod:`.gaussian` (the Gaussian family, unsharp mask), :mod:`.rank`
(uniform, median, minimum, maximum), :mod:`.edges` (sobel, prewitt, scharr, laplace), :mod:`.diffusion`,
:mod:`.merged` (consecutive linear filters merged by the planner); :mod:`.base` holds what they share.

Each op's oracle is the scipy.ndimage / scikit-image function named in SPEC.md, applied to the whole array in
float64. ``apply`` receives a block padded by exactly ``halo()`` (boundary modes already applied by the tiling
machinery) and returns the valid part; dtypes follow the rule of :mod:`convpipe.ops.base`.
"""
