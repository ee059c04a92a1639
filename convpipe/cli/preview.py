"""``convpipe preview URL --png FILE``: one plane of a zarr array or OME-Zarr level as a PNG
(:func:`convpipe.preview.render_preview` does the work; numpy, zarr and matplotlib load inside the command)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``preview`` command to ``app`` (errors propagate to the main CLI)."""

    @app.command("preview")
    def preview_command(
        url: Annotated[str, typer.Argument(metavar="URL", help="zarr array or OME-Zarr group (path or fsspec URL)")],
        png: Annotated[str, typer.Option("--png", help="PNG file to write")],
        index: Annotated[
            list[str] | None, typer.Option("--index", help="AXIS=N for a non-plane axis, e.g. z=10 (repeatable)")
        ] = None,
        level: Annotated[int, typer.Option("--level", help="OME-Zarr level")] = 0,
        spectrum: Annotated[bool, typer.Option("--spectrum", help="show log1p(|fftshift(fft2(plane))|)")] = False,
        overlay: Annotated[
            str | None, typer.Option("--overlay", help="Parquet table of points (columns named by axis), or a "
                                                       "label image (Zarr) drawn in colour")
        ] = None,
        cmap: Annotated[str, typer.Option("--cmap", help="matplotlib colormap")] = "gray",
        percentiles: Annotated[
            str, typer.Option("--percentiles", help="display range as LOW,HIGH percentiles")
        ] = "1,99.8",
    ) -> None:
        """Render one plane of a zarr array or OME-Zarr level (or its spectrum) to a PNG."""
        from ..errors import InputError
        from ..preview import is_zarr, parse_index, render_preview

        labels = bool(overlay) and is_zarr(overlay)
        try:
            lo, hi = (float(v) for v in percentiles.split(","))
        except ValueError as err:
            raise InputError(f"--percentiles {percentiles!r}: expected LOW,HIGH such as 1,99.8") from err
        res = render_preview(
            url,
            png=png,
            index=parse_index(index),
            level=level,
            spectrum=spectrum,
            overlay_table=None if labels else overlay,
            overlay_labels=overlay if labels else None,
            percentiles=(lo, hi),
            cmap=cmap,
        )
        where = ", ".join(f"{k}={v}" for k, v in res.index.items()) or "the only plane"
        extra = (f", {res.labels} label(s)" if labels else f", {res.points} point(s)") if overlay else ""
        typer.echo(f"wrote {res.png}: {res.image_shape[1]}x{res.image_shape[0]} px of {where}{extra}")
