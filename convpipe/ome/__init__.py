"""OME-Zarr (NGFF) helpers: read and write ``multiscales`` metadata, open a level, downsample a level.

Two NGFF versions are spoken, one per Zarr format, as the NGFF specification ties them:

* **0.4** with Zarr v2: ``multiscales`` is a top-level key of the group attributes
  (``.zattrs``) and each multiscale carries its own ``"version": "0.4"``.
* **0.5** with Zarr v3: everything lives under the ``"ome"`` key of the group attributes
  (``{"ome": {"version": "0.5", "multiscales": [...]}}``).

Reading is tolerant (:mod:`.read`: both layouts on either format, 0.1-0.3 metadata, missing coordinate
transformations); writing is strict (:mod:`.write`): the metadata is built with ome-zarr-models' models,
so it is valid NGFF by construction. :mod:`.pyramid` makes the levels, :mod:`.names` holds the axis
letters and NGFF units.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

#: public name -> the submodule defining it. Loaded on first use (PEP 562): :mod:`.read`, :mod:`.write` and
#: :mod:`.pyramid` import zarr, and :mod:`.meta` (``explain``'s zarr-free reader) is in this package too.
_LAZY = {
    "AXES_ORDER": "names", "NGFF_SPACE_UNITS": "names", "NGFF_TIME_UNITS": "names", "ngff_axes_problem": "names",
    "normalize_unit": "names",
    "downsample_level": "pyramid", "pyramid_transforms": "pyramid",
    "OmeInfo": "multiscales", "OmeLevel": "multiscales",
    "open_level": "read", "open_node": "read", "read_multiscales": "read", "zarr_storage_options": "read",
    "multiscales_attrs": "write", "write_multiscales": "write",
}

__all__ = [
    "AXES_ORDER",
    "NGFF_SPACE_UNITS",
    "NGFF_TIME_UNITS",
    "OmeInfo",
    "OmeLevel",
    "downsample_level",
    "multiscales_attrs",
    "ngff_axes_problem",
    "normalize_unit",
    "open_level",
    "open_node",
    "pyramid_transforms",
    "read_multiscales",
    "write_multiscales",
    "zarr_storage_options",
]


__getattr__, __dir__ = lazy_exports(__name__, __package__, _LAZY, public=__all__)
