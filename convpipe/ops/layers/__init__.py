"""Convolutional layers: pooling and conv_layer (output extents that change; see convpipe.tiles).

``params`` holds their parameters (and the ``extent``/``stride`` mixin correlate, convolve and filter_bank
share); ``window`` the extent/stride arithmetic of kernel ops.
"""

from . import conv_layer, pool  # noqa: F401  (they register on import)
