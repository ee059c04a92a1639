"""Object ops: ``label`` (connected components, scipy's numbering on any tiling) and ``regionprops``."""

from . import label, regionprops  # noqa: F401  (they register on import)
