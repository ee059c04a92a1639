"""convpipe's command line: a package of thin typer commands over the library.

This package is the only part of convpipe that imports typer, rich or argparse (but for the rich bar of
``Pipeline.run(progress=True)``, :mod:`convpipe.progress`, which the API below it draws). Each command lives in a
small module (:mod:`.commands`: the app and run / validate / explain / ops / schema / demo; :mod:`.preview`,
:mod:`.ingest`, :mod:`.verify`, :mod:`.kernel`, :mod:`.bench`, :mod:`.service`), which imports the library
modules it needs inside the command, so ``convpipe --help`` and ``validate`` start without dask or zarr.
``app`` loads :mod:`.commands` on first use (PEP 562), so importing one command's module does not build the
whole app; ``main`` and ``_entry`` (the console script) run the plain validate / explain / ops / schema
command lines without typer (:mod:`.instant`) and load :mod:`.commands` for the rest.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["app", "main"]

_FROM_COMMANDS = ("app", "_Progress")


def main(argv: list[str] | None = None) -> int:
    """``convpipe ARGS``: run the command, print a user error as one line; the exit code.

    The plain forms of validate / explain / ops / schema run without typer (:func:`.instant.fast_main`,
    issue 17: commands that start instantly); everything else goes to :func:`.commands.main`.
    """
    from .instant import fast_main

    rv = fast_main(argv)
    if rv is not None:
        return rv
    from .commands import main as typer_main

    return typer_main(argv)


def _entry() -> None:
    sys.exit(main())


def __getattr__(name: str) -> Any:
    if name in _FROM_COMMANDS:
        from . import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FROM_COMMANDS])
