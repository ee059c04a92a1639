"""``convpipe verify OUTPUT``: recompute a sample of an output's tiles with the oracle and compare
(:func:`convpipe.verify.verify` does it; the oracles load inside the command)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``convpipe verify OUTPUT [--sample N] [--all] [--seed S]`` to the typer app."""

    @app.command("verify")
    def verify_cmd(
        output: str = typer.Argument(..., help="output Zarr written by `convpipe run` (path or URL)"),
        sample: int = typer.Option(8, "--sample", min=0, help="number of random tiles to recompute"),
        all_tiles: bool = typer.Option(False, "--all", help="recompute every tile"),
        seed: int = typer.Option(0, "--seed", help="seed of the tile sample"),
    ) -> None:
        """Recompute a sample of the output's tiles from its input with the oracle (scipy) and compare:
        exit 0 when all match, 1 when tiles differ or the output cannot be verified."""
        from ..verify import VerificationFailed, verify

        res = verify(output, sample=sample, all=all_tiles, seed=seed)
        lines = res.summary().splitlines()
        if res.ok:
            for line in lines:
                typer.echo(line)
            return
        for line in lines[:-1]:
            typer.echo(line, err=True)
        # an error, not typer.Exit: the CLI's main() turns it into 'error: ...' and exit code 1
        raise VerificationFailed(lines[-1].removeprefix("FAILED: "))
