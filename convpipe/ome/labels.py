"""NGFF label images: ``image-label`` metadata, the ``labels/`` group of an image, colours for previews.

A label image is an integer multiscale image whose levels are made by nearest sampling (the top-left voxel
of each 2x2 block, never a mean), with ``image-label`` metadata beside ``multiscales``: NGFF 0.4 (Zarr v2)
puts ``{"image-label": {"version": "0.4", ...}}`` at the top of the group's attributes, NGFF 0.5 (Zarr v3)
puts ``"image-label"`` inside ``"ome"``. Placed under an image, it lives at ``IMAGE/labels/NAME`` and
``IMAGE/labels`` lists it (``{"labels": [NAME, ...]}``, inside ``"ome"`` for 0.5): what napari-ome-zarr and
ome-zarr-py open. Writing a label image under an image touches only the ``labels`` group (created when
missing, its list extended) and ``labels/NAME``: never the image's own arrays or attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["LABEL_DTYPES", "add_label_name", "check_label_parent", "is_label_dtype", "is_label_image",
           "label_rgba", "labels_url", "write_image_label"]

#: integer types that make an output a label image under ``output.ome`` (label's int32 / int64); 8- and
#: 16-bit outputs stay images (masks, intensities), unless written with ``output.labels_of``
LABEL_DTYPES = tuple(np.dtype(t) for t in ("int32", "int64", "uint32", "uint64"))


def is_label_dtype(dtype: Any) -> bool:
    return np.dtype(dtype) in LABEL_DTYPES


def labels_url(image_url: str, name: str) -> str:
    """Where ``output.labels_of: image_url`` with ``label_name: name`` writes: ``image_url/labels/name``."""
    return f"{str(image_url).rstrip('/')}/labels/{name}"


def _kwargs(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    from .read import zarr_storage_options

    so = zarr_storage_options(url, storage_options)
    return {"store": url, **({"storage_options": so} if so else {})}


def _attrs_root(attrs: Mapping[str, Any], zarr_format: int) -> Mapping[str, Any]:
    return (attrs.get("ome") or {}) if zarr_format == 3 else attrs


def check_label_parent(image_url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[int, Any]:
    """(Zarr format, multiscale metadata :class:`~convpipe.ome.OmeInfo`, level-0 shape) of the OME-Zarr image
    ``image_url`` that a label image will be placed under.

    Raises
    ------
    InputError
        Nothing there, not a group, or a group without ``multiscales`` (not an NGFF image).
    """
    import zarr

    from .read import read_multiscales

    try:
        g = zarr.open_group(mode="r", **_kwargs(image_url, storage_options))
    except Exception as e:  # noqa: BLE001 - missing, an array, unreadable: zarr raises many types
        raise InputError(f"output.labels_of {image_url}: not an OME-Zarr image group ({type(e).__name__}: "
                         f"{e})") from None
    info = read_multiscales(g)
    if info is None or not info.levels:
        raise InputError(f"output.labels_of {image_url}: the group has no NGFF multiscales metadata; labels go "
                         "under an OME-Zarr image")
    try:
        shape = tuple(int(n) for n in g[info.levels[0].path].shape)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"output.labels_of {image_url}: cannot read its level {info.levels[0].path!r} ({e})") from None
    return int(g.metadata.zarr_format), info, shape


def ensure_labels_group(image_url: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Create ``image_url/labels`` (an empty list of labels) when it does not exist; never touches the image."""
    import zarr

    from ..roots import guard

    fmt = check_label_parent(image_url, storage_options)[0]
    url = f"{image_url.rstrip('/')}/labels"
    guard(url, what="the image's labels group", write=True)
    try:
        zarr.open_group(mode="r", **_kwargs(url, storage_options))
        return
    except Exception:  # noqa: BLE001 - not there yet
        pass
    g = zarr.open_group(mode="w-", zarr_format=fmt, **_kwargs(url, storage_options))
    g.attrs.update({"ome": {"version": "0.5", "labels": []}} if fmt == 3 else {"labels": []})


def add_label_name(image_url: str, name: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """List ``name`` in ``image_url/labels`` (keeping the names already there)."""
    import zarr

    from ..roots import guard

    url = f"{image_url.rstrip('/')}/labels"
    guard(url, what="the image's labels group", write=True)
    g = zarr.open_group(mode="r+", **_kwargs(url, storage_options))
    fmt = int(g.metadata.zarr_format)
    attrs = g.attrs.asdict()
    if fmt == 3:
        ome = dict(attrs.get("ome") or {"version": "0.5"})
        names = list(ome.get("labels") or [])
        if name not in names:
            names.append(name)
        ome["labels"] = names
        ome.setdefault("version", "0.5")
        g.attrs.update({"ome": ome})
    else:
        names = list(attrs.get("labels") or [])
        if name not in names:
            names.append(name)
        g.attrs.update({"labels": names})


def write_image_label(url: str, *, under_image: bool, storage_options: Mapping[str, Any] | None = None) -> None:
    """Add ``image-label`` metadata to the OME group ``url`` (written by convpipe.outputs, levels by nearest);
    ``under_image``: it lives at ``IMAGE/labels/NAME``, so its source image is ``../../``."""
    import zarr

    g = zarr.open_group(mode="r+", **_kwargs(url, storage_options))
    fmt = int(g.metadata.zarr_format)
    label: dict[str, Any] = {}
    if under_image:
        label["source"] = {"image": "../../"}
    if fmt == 3:
        ome = dict(g.attrs.get("ome") or {})
        ome["image-label"] = label
        g.attrs.update({"ome": ome})
    else:
        g.attrs.update({"image-label": {"version": "0.4", **label}})


def is_label_image(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``url`` is an NGFF label image (a group with ``image-label`` metadata)."""
    import zarr

    try:
        g = zarr.open_group(mode="r", **_kwargs(url, storage_options))
    except Exception:  # noqa: BLE001
        return False
    a = g.attrs.asdict()
    return "image-label" in a or "image-label" in (a.get("ome") or {})


def label_rgba(labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """An RGBA image of integer ``labels``: a fixed, well-spread colour per label value (the same in every
    preview and report), transparent background (0)."""
    v = np.asarray(labels).astype(np.uint64, copy=False)
    # a multiplicative hash of the value (Knuth's golden ratio) spread over the hue circle
    h = ((v * np.uint64(2654435761)) % np.uint64(4294967296)).astype(np.float64) / 4294967296.0
    rgb = np.stack([0.5 + 0.5 * np.cos(2 * np.pi * (h + k / 3.0)) for k in range(3)], axis=-1)
    out = np.empty(v.shape + (4,), dtype=np.float64)
    out[..., :3] = 0.15 + 0.85 * rgb
    out[..., 3] = np.where(v == 0, 0.0, alpha)
    return out
