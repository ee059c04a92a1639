"""``convpipe ingest TIFF... --output URL``: TIFF stacks into chunked OME-Zarr (:func:`convpipe.ingest.ingest`
does the work; dask, zarr and tifffile load inside the command)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

__all__ = ["register"]


@contextlib.contextmanager
def _tifffile_notes() -> Any:
    """Hold back what tifffile logs or warns while the command runs (yields the messages).

    tifffile logs what it tolerates in a damaged file ("invalid page offset ...") through the ``logging``
    module, which prints it raw on stderr before convpipe's own one-line error about the same damage.
    Only the command line does this, for the duration of the command: a library caller's logging
    configuration is left alone.
    """
    import logging
    import warnings

    notes: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    lg = logging.getLogger("tifffile")
    handler, propagate = _Keep(logging.WARNING), lg.propagate
    lg.addHandler(handler)
    lg.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield notes
        notes.extend(str(w.message) for w in caught)
    finally:
        lg.removeHandler(handler)
        lg.propagate = propagate


def _terminal_progress(stream: Any) -> Callable[[float], None]:
    last = [-1]

    def report(frac: float) -> None:
        pct = int(frac * 100)
        if pct != last[0]:
            last[0] = pct
            stream.write(f"\ringest {pct:3d}%")
            stream.flush()
            if pct >= 100:
                stream.write("\n")

    return report


def register(app: typer.Typer) -> None:
    """Add the ``ingest`` command to ``app`` (errors propagate to the main CLI)."""

    @app.command("ingest")
    def ingest_command(
        tiff: Annotated[
            list[str], typer.Argument(metavar="TIFF...", help="TIFF files or globs (quote globs), in stack order")
        ],
        output: Annotated[str, typer.Option("--output", "-o", help="OME-Zarr group to create (path or fsspec URL)")],
        chunks: Annotated[
            str | None, typer.Option("--chunks", help="chunk per output axis, e.g. 16,512,512 or z=16,y=512,x=512")
        ] = None,
        zarr_format: Annotated[int, typer.Option("--zarr-format", help="2 (NGFF 0.4) or 3 (NGFF 0.5)")] = 3,
        axes: Annotated[
            str | None, typer.Option("--axes", help="letters from tczyx per source axis (or the stack axis)")
        ] = None,
        pyramid: Annotated[int, typer.Option("--pyramid", help="extra levels, each halving y and x")] = 0,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing zarr output")] = False,
    ) -> None:
        """Copy TIFF / multi-page TIFF / OME-TIFF, or a glob of TIFF planes, into chunked OME-Zarr."""
        from ..ingest import ingest, parse_chunks

        report = _terminal_progress(sys.stderr) if sys.stderr.isatty() else None
        with _tifffile_notes() as notes:  # on an error, its one line says what the notes would
            arr = ingest(
                tiff,
                output,
                chunks=parse_chunks(chunks),
                zarr_format=zarr_format,
                axes=axes,
                overwrite=overwrite,
                progress=report,
                pyramid=pyramid,
            )
        for note in dict.fromkeys(notes):
            typer.echo(f"note: tifffile: {note}", err=True)
        typer.echo(
            f"wrote {output}: shape {list(arr.shape)} {arr.dtype} chunks {list(arr.chunks)}"
            + (f", {pyramid} extra level(s)" if pyramid else "")
        )

