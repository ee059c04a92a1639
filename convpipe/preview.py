"""``convpipe preview``: one plane of a zarr array / OME-Zarr level as a PNG.

The plane is the ``y``/``x`` slice at ``index`` (one integer per other axis) of level ``level``.
Only the chunks that plane touches are read. Contrast is a linear stretch between two percentiles
of the plane (of its finite values). ``spectrum=True`` shows ``log1p(|fftshift(fft2(plane))|)``
instead, the same quantity as the ``log_spectrum`` op. ``overlay_table`` draws the rows of a
Parquet table (one column per axis letter, global voxel coordinates of level 0, as the feature ops
write them) that lie on the plane; a ``blobs`` table (a ``sigma`` column) is drawn as circles of radius
``sigma * sqrt(n)`` for blobs found over ``n`` axes (``σ√2`` in 2-D), the blob's radius as scikit-image
defines it.

Rendering uses matplotlib's Agg canvas on a private ``Figure`` (no pyplot, so no global figure
registry and no GUI backend); the PNG has exactly one pixel per plane pixel unless the plane is
larger than ``max_size``, when every ``stride``-th pixel is read and shown, keeping memory bounded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError
from .ome import AXES_ORDER, OmeInfo, open_level

__all__ = ["Marks", "Plane", "PreviewResult", "array_axes", "parse_index", "read_marks", "read_plane",
           "render_preview"]


@dataclass(frozen=True)
class PreviewResult:
    """What :func:`render_preview` drew.

    Attributes
    ----------
    png : str
        The PNG written.
    axes : str
        Axis letters of the array.
    index : dict of str to int
        The index used for every non-plane axis (defaults filled in).
    plane_shape : tuple of int, shape (2,)
        ``(ny, nx)`` of the plane read.
    image_shape : tuple of int, shape (2,)
        ``(height, width)`` of the PNG in pixels.
    vmin, vmax : float
        The display range (the percentiles of what was shown).
    points : int
        Overlay points drawn (0 without an overlay).
    labels : int
        Distinct labels drawn from a label image overlay (0 without one).
    """

    png: str
    axes: str
    index: dict[str, int]
    plane_shape: tuple[int, int]
    image_shape: tuple[int, int]
    vmin: float
    vmax: float
    points: int
    labels: int = 0


def parse_index(text: str | Sequence[str] | None) -> dict[str, int]:
    """Parse ``--index`` values: ``"z=10"``, ``"z=10,t=3"`` or several such strings.

    Raises
    ------
    InputError
        An item that is not ``letter=integer``, or an axis given twice.
    """
    if text is None:
        return {}
    items = [text] if isinstance(text, str) else list(text)
    out: dict[str, int] = {}
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, val = part.partition("=")
            key = key.strip().lower()
            try:
                num = int(val)
            except ValueError:
                num = None
            if not sep or num is None or len(key) != 1 or key not in AXES_ORDER:
                raise InputError(f"--index {part!r}: expected AXIS=INTEGER with AXIS one of {AXES_ORDER!r}, e.g. z=10")
            if key in out:
                raise InputError(f"--index: axis {key!r} given twice")
            out[key] = num
    return out


def recorded_axes(arr: Any) -> str | None:
    """The axis letters convpipe recorded on an output it wrote (``attrs["convpipe"]["axes"]``), or None.

    A plain Zarr output carries no dimension names; without this a channel axis that an op added (``cyx``)
    would be taken for ``z`` (``zyx``, the last letters of ``tczyx``), and ``--index c=3`` refused.
    """
    try:
        prov = arr.attrs.get("convpipe")
    except Exception:  # noqa: BLE001 - attributes that cannot be read: nothing recorded
        return None
    axes = prov.get("axes") if isinstance(prov, Mapping) else None
    if (isinstance(axes, str) and len(axes) == arr.ndim and len(set(axes)) == len(axes)
            and all(a in AXES_ORDER for a in axes)):
        return axes
    return None


def array_axes(url: str, arr: Any, found: str | None = None, axes: str | None = None) -> tuple[str, tuple[int, ...]]:
    """(axis letters, shape) of an opened array: ``axes`` if given, else the OME / dimension names (``found``),
    else what convpipe recorded on its output, else the last ``ndim`` letters of ``"tczyx"``.

    Raises
    ------
    InputError
        The axes do not match the array's dimensions, or there are more dimensions than ``tczyx``.
    """
    if axes is None:
        axes = found or recorded_axes(arr)
    if axes is None:
        if arr.ndim > len(AXES_ORDER):
            raise InputError(f"{url}: {arr.ndim}-D array; give its axes")
        axes = AXES_ORDER[len(AXES_ORDER) - arr.ndim :]
    if len(axes) != arr.ndim:
        raise InputError(f"{url}: axes {axes!r} do not match the array's {arr.ndim} dimensions")
    return axes, tuple(int(n) for n in arr.shape)


def _default_position(axis: str, n: int) -> int:
    # the middle of a stack shows typical content; the first time point / channel is the natural one
    return n // 2 if axis == "z" else 0


@dataclass(frozen=True)
class Plane:
    """A plane read by :func:`read_plane`.

    Attributes
    ----------
    data : numpy.ndarray, shape (ceil(ny / stride), ceil(nx / stride))
        The plane (every ``stride``-th pixel along y and x), in the array's dtype, y down.
    axes : str
        The array's axis letters.
    index : dict of str to int
        The (non-negative) index used for each non-plane axis.
    info : OmeInfo or None
        OME-Zarr metadata when present.
    shape : tuple of int, shape (2,)
        ``(ny, nx)`` of the full plane.
    stride : int
        Sampling step along y and x (1: every pixel).
    """

    data: np.ndarray
    axes: str
    index: dict[str, int]
    info: OmeInfo | None
    shape: tuple[int, int]
    stride: int


def read_plane(
    url: str,
    *,
    index: Mapping[str, int] | None = None,
    level: int = 0,
    axes: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_size: int | None = None,
) -> Plane:
    """Read the ``y``/``x`` plane at ``index`` of level ``level``, reading only the chunks it touches.

    Parameters
    ----------
    url : str
        Zarr array or OME-Zarr group (path or fsspec URL).
    index : mapping of str to int, optional
        Position along every other axis, in the level's voxels; negative counts from the end.
        Missing axes: the middle of ``z``, 0 for ``t`` and ``c``.
    level : int
        OME-Zarr level (0 for a plain array).
    axes : str, optional
        Axis letters, when the data do not say (default: from OME-Zarr / dimension names, else the axes
        convpipe recorded on its output, else the last ``ndim`` letters of ``"tczyx"``).
    storage_options : mapping, optional
        Handed to fsspec.
    max_size : int, optional
        Read every ``stride``-th pixel, with the smallest stride that keeps both sides of the
        result at most ``max_size``: memory stays bounded for planes far larger than a screen.

    Returns
    -------
    Plane
        The pixels and what was read.

    Raises
    ------
    InputError
        Unknown axes in ``index``, an index out of range, an array without ``y``/``x``.
    """
    arr, found_axes, info = open_level(url, level, storage_options)
    if axes is None and found_axes is None and level > 0:
        found_axes = recorded_axes(open_level(url, 0, storage_options)[0])
    axes, _ = array_axes(url, arr, found_axes, axes)
    if "y" not in axes or "x" not in axes:
        raise InputError(f"{url}: axes {axes!r} have no y/x plane to show")
    if max_size is not None and max_size < 1:
        raise InputError(f"max_size must be >= 1, got {max_size}")
    index = dict(index or {})
    for a in index:
        if a not in axes:
            raise InputError(f"{url}: --index names axis {a!r}, which is not one of its axes {axes!r}")
        if a in "yx":
            raise InputError(f"{url}: --index cannot fix {a!r}; the plane is y/x")
    ny, nx = arr.shape[axes.index("y")], arr.shape[axes.index("x")]
    stride = max(1, math.ceil(max(ny, nx) / max_size)) if max_size else 1
    sel: list[int | slice] = []
    used: dict[str, int] = {}
    for a, n in zip(axes, arr.shape, strict=True):
        if a in "yx":
            sel.append(slice(None, None, stride))
            continue
        i = index.get(a, _default_position(a, n))
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise InputError(f"{url}: index {a}={i} is out of range; axis {a!r} has {n} positions (0..{n - 1})")
        sel.append(j)
        used[a] = j
    try:
        data = np.asarray(arr[tuple(sel)])
    except Exception as err:  # noqa: BLE001 - codec / storage errors while reading the chunks
        raise InputError(f"{url}: cannot read the plane {used} ({type(err).__name__}: {err})") from err
    if axes.index("y") > axes.index("x"):
        data = data.T  # an "xy"-ordered array: show y down, x across
    return Plane(data=data, axes=axes, index=used, info=info, shape=(int(ny), int(nx)), stride=stride)


@dataclass(frozen=True)
class Marks:
    """The rows of a table that lie on a plane (see :func:`read_marks`).

    Attributes
    ----------
    y, x : numpy.ndarray, shape (n,)
        Their coordinates in the level's voxels.
    radius : numpy.ndarray or None, shape (n,)
        Blob radii (``sigma * sqrt(ndim)``) in the level's voxels along x; None for a table of points.
    rows : int
        Rows in the whole table.
    """

    y: np.ndarray
    x: np.ndarray
    radius: np.ndarray | None
    rows: int


def _blob_dims(schema_metadata: Mapping[bytes, bytes] | None) -> int:
    """How many axes the ``blobs`` step that wrote a table searched over (2 unless its metadata says)."""
    import json
    import re

    try:
        meta = json.loads((schema_metadata or {}).get(b"convpipe", b"{}"))
        m = re.fullmatch(r"steps\[(\d+)\]\.(\w+)", str(meta.get("step", "")))
        step = meta["spec"]["steps"][int(m.group(1))][m.group(2)] if m else {}
        axes = step.get("axes") if isinstance(step, Mapping) else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return 2
    return len(axes) if isinstance(axes, str) and 1 <= len(axes) <= 3 else 2


def read_marks(
    table: str,
    index: Mapping[str, int],
    factors: Mapping[str, float],
    storage_options: Mapping[str, Any] | None,
) -> Marks:
    """The rows of a Parquet table on the plane at ``index``, in the level's voxel coordinates.

    A table with a ``sigma`` column (``blobs``) also gives each row's radius ``sigma * sqrt(n)``, ``n`` the
    number of axes the blobs were found over (from the table's metadata; 2 when it does not say).

    Raises
    ------
    InputError
        A missing or unreadable table, or one without ``y`` and ``x`` columns (e.g. a ``stats`` table).
    """
    y, x, rows, t, keep = _rows_on_plane(table, index, factors, storage_options)
    radius = None
    if "sigma" in t.column_names:
        sigma = np.asarray(t.column("sigma").to_numpy(zero_copy_only=False), dtype=np.float64)[keep]
        radius = sigma * math.sqrt(_blob_dims(t.schema.metadata)) / factors.get("x", 1.0)
    return Marks(y, x, radius, rows)


def read_points(
    table: str,
    index: Mapping[str, int],
    factors: Mapping[str, float],
    storage_options: Mapping[str, Any] | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(y, x) of the table rows on the plane, in the level's voxel coordinates, and the table's row count."""
    y, x, rows, _, _ = _rows_on_plane(table, index, factors, storage_options)
    return y, x, rows


def _rows_on_plane(
    table: str,
    index: Mapping[str, int],
    factors: Mapping[str, float],
    storage_options: Mapping[str, Any] | None,
) -> tuple[np.ndarray, np.ndarray, int, Any, np.ndarray]:
    import fsspec
    import pyarrow.parquet as pq

    try:
        with fsspec.open(table, "rb", **dict(storage_options or {})) as fh:
            t = pq.read_table(fh)
    except FileNotFoundError as err:
        raise InputError(f"{table}: no such overlay table") from err
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid & co for a non-Parquet file
        raise InputError(f"{table}: cannot read as Parquet ({type(err).__name__}: {err})") from err
    cols = set(t.column_names)
    if not {"y", "x"} <= cols:
        raise InputError(f"{table}: an overlay table needs columns 'y' and 'x'; it has {sorted(cols)}")
    keep = np.ones(t.num_rows, dtype=bool)
    for a, i in index.items():
        if a in cols:
            # a row is on the plane when its coordinate rounds to the plane's (blob centres are
            # fractional); the table is in level-0 voxels, the index in this level's
            v = np.asarray(t.column(a).to_numpy(zero_copy_only=False), dtype=np.float64) / factors.get(a, 1.0)
            keep &= np.rint(v) == i
    y = np.asarray(t.column("y").to_numpy(zero_copy_only=False), dtype=np.float64)[keep] / factors.get("y", 1.0)
    x = np.asarray(t.column("x").to_numpy(zero_copy_only=False), dtype=np.float64)[keep] / factors.get("x", 1.0)
    return y, x, int(t.num_rows), t, keep


def _level_factors(info: OmeInfo | None, axes: str, level: int) -> dict[str, float]:
    """Level-0 voxels per voxel of ``level`` along each axis (from the OME scales; 1 if unknown)."""
    if info is None or level == 0 or info.axes != axes:
        return {a: 1.0 for a in axes}
    s0, sl = info.levels[0].scale, info.levels[level].scale
    return {a: (b / a0 if a0 > 0 else 1.0) for a, a0, b in zip(axes, s0, sl, strict=True)}


def render_preview(
    url: str,
    *,
    png: str | os.PathLike[str],
    index: Mapping[str, int] | None = None,
    level: int = 0,
    spectrum: bool = False,
    overlay_table: str | None = None,
    percentiles: tuple[float, float] = (1, 99.8),
    cmap: str = "gray",
    axes: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_size: int = 4096,
    marker_color: str = "red",
    overlay_labels: str | None = None,
) -> PreviewResult:
    """Render one plane (or its log spectrum) of a zarr array / OME-Zarr level to a PNG.

    Parameters
    ----------
    url : str
        Zarr array or OME-Zarr group (path or fsspec URL).
    png : str or path
        PNG file to write (its folder is created).
    index : mapping of str to int, optional
        Position along each non-plane axis, e.g. ``{"z": 10}`` (see :func:`read_plane`).
    level : int
        OME-Zarr level.
    spectrum : bool
        Show ``log1p(abs(fftshift(fft2(plane))))`` (float64) instead of the plane.
    overlay_table : str, optional
        Parquet table whose rows on this plane are drawn as markers: columns ``y``, ``x`` and any
        other axis letters in level-0 voxel coordinates; a ``blobs`` table's rows as circles of the
        blobs' radius (``sigma * sqrt(2)`` in 2-D). Not with ``spectrum``.
    percentiles : (float, float)
        Display range: these percentiles of the plane's finite values (0 <= low < high <= 100).
    cmap : str
        A matplotlib colormap name.
    axes : str, optional
        Axis letters when the data do not record them.
    storage_options : mapping, optional
        Handed to fsspec (for ``url`` and ``overlay_table``).
    max_size : int
        Planes taller or wider are read and shown at an integer stride so neither side exceeds
        it (the spectrum is then that of the subsampled plane, aliased above its Nyquist).
    marker_color : str
        Colour of the overlay markers.
    overlay_labels : str, optional
        A label image (an NGFF ``labels/NAME`` group, or an integer Zarr array) with the plane's shape: its
        labels are drawn in colour over the plane (a fixed colour per label, background transparent).

    Returns
    -------
    PreviewResult
        The PNG path, the index used, shapes, display range and number of points drawn.

    Raises
    ------
    InputError
        Bad URL, level, index, colormap, percentiles, overlay table, or overlay with spectrum.
    """
    import matplotlib

    # Agg via the object API: works headless, touches no pyplot state
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lo, hi = (float(p) for p in percentiles)
    if not 0 <= lo < hi <= 100:
        raise InputError(f"percentiles {percentiles!r}: need 0 <= low < high <= 100")
    if spectrum and (overlay_table or overlay_labels):
        raise InputError("an overlay cannot be drawn on a spectrum; drop --spectrum or --overlay")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as err:
        raise InputError(f"unknown colormap {cmap!r} (e.g. gray, viridis, magma)") from err

    view = read_plane(
        url, index=index, level=level, axes=axes, storage_options=storage_options, max_size=max_size
    )
    plane = view.data.astype(np.uint8) if view.data.dtype == np.bool_ else view.data
    if spectrum:
        shown = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(plane.astype(np.float64)))))
    else:
        shown = np.abs(plane) if np.iscomplexobj(plane) else plane.astype(np.float64)
    stride = view.stride

    finite = shown[np.isfinite(shown)]
    if finite.size:
        vmin, vmax = (float(v) for v in np.percentile(finite, [lo, hi]))
    else:
        vmin, vmax = 0.0, 1.0
    if not vmax > vmin:
        # a flat plane: centre it in the colormap rather than dividing by zero
        vmin, vmax = vmin - 0.5, vmin + 0.5

    h, w = shown.shape
    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.imshow(shown, cmap=colormap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)

    n_labels = 0
    if overlay_labels:
        n_labels = _draw_labels(ax, overlay_labels, view, level, storage_options, max_size)

    n_points = 0
    if overlay_table:
        factors = _level_factors(view.info, view.axes, level)
        marks = read_marks(overlay_table, view.index, factors, storage_options)
        n_points = int(marks.y.size)
        if n_points:
            draw_marks(ax, marks, stride, color=marker_color, linewidth=1.0, marker_size=max(4.0, min(w, h) / 64.0))

    out = os.fspath(png)
    folder = os.path.dirname(out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    try:
        fig.savefig(out, dpi=dpi, format="png")
    except OSError as err:
        raise InputError(f"{out}: cannot write the PNG ({err})") from err
    return PreviewResult(
        png=out,
        axes=view.axes,
        index=view.index,
        plane_shape=view.shape,
        image_shape=(int(h), int(w)),
        vmin=vmin,
        vmax=vmax,
        points=n_points,
        labels=n_labels,
    )


def _draw_labels(ax: Any, url: str, view: Plane, level: int, storage_options: Mapping[str, Any] | None,
                 max_size: int) -> int:
    """Draw the label image ``url``'s plane at the image plane's index in colour; the number of labels."""
    from .ome.labels import label_rgba

    lab = read_plane(url, index={a: i for a, i in view.index.items()}, level=level,
                     storage_options=storage_options, max_size=max_size)
    if lab.data.shape != view.data.shape:
        raise InputError(f"--overlay {url}: its plane is {lab.data.shape[0]}x{lab.data.shape[1]}, the image's "
                         f"{view.data.shape[0]}x{view.data.shape[1]}: a label image has its image's shape")
    if lab.data.dtype.kind not in "biu":
        raise InputError(f"--overlay {url}: a label image holds integers, not {lab.data.dtype}")
    ax.imshow(label_rgba(lab.data), interpolation="nearest", aspect="auto")
    values = np.unique(lab.data)
    return int(np.count_nonzero(values))


def is_zarr(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``url`` holds a Zarr array or group (an overlay of labels, not a Parquet table)."""
    import zarr

    from .ome import zarr_storage_options

    if str(url).rstrip("/").lower().endswith(".parquet"):
        return False
    so = zarr_storage_options(url, storage_options)
    try:
        zarr.open(mode="r", store=url, **({"storage_options": so} if so else {}))
    except Exception:  # noqa: BLE001 - not zarr (a Parquet file, nothing)
        return False
    return True


def draw_marks(ax: Any, marks: Marks, stride: int, *, color: str, linewidth: float, marker_size: float,
               label: str | None = None) -> None:
    """Draw table rows on an image axes whose pixels are every ``stride``-th voxel.

    Points are fixed-size rings (``marker_size`` points across); blobs are circles of their radius in the
    image's own coordinates, so they scale with the image (at least one pixel, to stay visible).
    """
    py, px = marks.y / stride, marks.x / stride
    if marks.radius is None:
        ax.scatter(px, py, s=marker_size**2, facecolors="none", edgecolors=color, linewidths=linewidth, label=label)
        return
    from matplotlib.collections import EllipseCollection

    d = 2.0 * np.maximum(marks.radius / stride, 1.0)
    ax.add_collection(EllipseCollection(d, d, np.zeros_like(d), units="xy", offsets=np.column_stack([px, py]),
                                        offset_transform=ax.transData, facecolors="none", edgecolors=color,
                                        linewidths=linewidth, label=label))
