"""Object ops: ``label`` (connected components, scipy's numbering on any tiling: :mod:`.label`, the algorithm
in :mod:`.components`) and ``regionprops`` (skimage's regionprops_table from per-tile moments: :mod:`.regionprops`).
Their parameters are the catalog's (:mod:`convpipe.params.objects`)."""
