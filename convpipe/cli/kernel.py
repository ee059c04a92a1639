"""``convpipe kernel SPEC``: each step's resolved kernel and the composite of fused linear runs
(:mod:`convpipe.kernelview` computes and draws them)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``convpipe kernel SPEC [--step N] [--png FILE]`` to ``app``."""

    @app.command("kernel")
    def kernel(
        spec: Path = typer.Argument(..., help="pipeline spec"),
        step: Optional[int] = typer.Option(None, "--step", help="only steps[N] (from 0)"),
        png: Optional[Path] = typer.Option(None, "--png", help="draw the kernels and |frequency response|"),
    ) -> None:
        """Show each step's resolved kernel (after normalisation) and the composite of fused linear runs."""
        from ..kernelview import draw_png, kernel_report
        from ..spec import load_spec

        s = load_spec(spec)
        text, views = kernel_report(s, step)
        typer.echo(text)
        if png is not None:
            draw_png(views, png)
            typer.echo(f"png: {png}")
