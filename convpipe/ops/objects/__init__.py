"""Object ops (SPEC.md "Objects"): ``label`` (connected components, scipy's numbering on any tiling:
:mod:`.label`, the algorithm in :mod:`.components`), ``regionprops`` (skimage's regionprops_table from per-tile
moments: :mod:`.regionprops`), morphology (:mod:`.morphology`), the distance transform (:mod:`.distance`) and
``threshold {method}``'s pre-pass (:mod:`.autothreshold`).

Each op reads its input as ``x != 0`` where it needs a mask and acts on every sub-array over ``axes``
(default: every spatial axis z, y, x of the input). Parameters are the catalog's
(:mod:`convpipe.params.objects`, :mod:`convpipe.params.morphology`).
"""
