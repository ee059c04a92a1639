"""convpipe's command line: a package of thin typer commands over the library.

This package is the only part of convpipe that imports typer, rich or argparse (but for the rich bar of
``Pipeline.run(progress=True)``, :mod:`convpipe.progress`, which the API below it draws). Each command lives in a
small module (:mod:`.commands`: the app and run / validate / explain / ops / schema / demo; :mod:`.preview`,
:mod:`.ingest`, :mod:`.verify`, :mod:`.kernel`, :mod:`.bench`, :mod:`.service`), which imports the library
modules it needs inside the command, so ``convpipe --help`` and ``validate`` start without dask or zarr.
``main``, ``app`` and ``_entry`` (the console script) load :mod:`.commands` on first use (PEP 562), so
importing one command's module does not build the whole app.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "main"]

_FROM_COMMANDS = ("app", "main", "_entry", "_Progress")


def __getattr__(name: str) -> Any:
    if name in _FROM_COMMANDS:
        from . import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FROM_COMMANDS])
