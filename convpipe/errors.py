"""Typed errors. The CLI turns each into one line and an exit code; none is a traceback."""

from __future__ import annotations


class ConvpipeError(Exception):
    """Base of every error convpipe raises on purpose."""

    exit_code = 1


class SpecError(ConvpipeError):
    """A spec that cannot be run as written.

    ``path`` is the YAML path (``steps[1].sobel.axes``) and ``line`` its 1-based line when known.
    """

    def __init__(self, message: str, *, path: str = "", line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        super().__init__(self.format())

    def format(self) -> str:
        where = self.path or "spec"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.message}"


class SpecErrors(SpecError):
    """Several spec errors at once (``validate`` reports them all)."""

    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, path=first.path, line=first.line)

    def format(self) -> str:
        return "\n".join(e.format() for e in self.errors)


class InputError(ConvpipeError):
    """The input (or an output location) cannot be used: missing, unreadable, wrong shape."""


class OutputExistsError(InputError):
    """The output exists and neither overwrite nor resume was asked for."""


class PlanError(ConvpipeError):
    """The spec is valid but cannot be planned on this input (memory, sizes)."""


class BackendError(ConvpipeError):
    """The requested backend cannot run here (e.g. ``backend: gpu`` with no GPU)."""


class ExecutionError(ConvpipeError):
    """Failed while running; partial outputs stay marked incomplete."""

    exit_code = 2


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run: still a KeyboardInterrupt, carrying what was written.

    ``written`` of ``tiles`` tiles of ``output_url`` were recorded as written (None: the output had not
    been created yet, so nothing was written).
    """

    def __init__(self, output_url: str, written: int | None, tiles: int):
        self.output_url, self.written, self.tiles = output_url, written, tiles
        super().__init__(f"interrupted: {written} of {tiles} tiles of {output_url} written")
