"""A progress bar for ``Pipeline.run(progress=True)``: rich's, which draws itself in a terminal and, in
Jupyter, as a live output widget (rich needs ``ipywidgets`` there; without it an HTML ``<progress>`` element
is updated in place through IPython's display handle instead).

Only a caller that asks for progress gets one: the library itself never prints. The one module outside
``convpipe/cli`` that imports rich (inside its functions): the API draws this bar, and the API sits below the
command line.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProgressBar"]


def _jupyter_without_widgets(console: Any) -> bool:
    if not console.is_jupyter:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return True
    return False


class ProgressBar:
    """A context manager and ``report(done, total)`` callable (:func:`convpipe.run.events.progress_subscriber`).

    Parameters
    ----------
    label : str
        What is running (the pipeline's name).
    console : rich.console.Console, optional
        Where to draw; default a console that finds out by itself whether it is in Jupyter or a terminal.
    """

    def __init__(self, label: str, console: Any = None):
        from rich.console import Console

        self.label = label
        self.console = console if console is not None else Console()
        self.bar: Any = None
        self.task: Any = None
        self.handle: Any = None  # IPython display handle (Jupyter without ipywidgets)
        self.done, self.total = 0, 0

    def __enter__(self) -> "ProgressBar":
        if _jupyter_without_widgets(self.console):
            from IPython.display import HTML, display

            self.handle = display(HTML(self._html()), display_id=True)
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
        self.bar.__enter__()
        return self

    def _html(self) -> str:
        from html import escape

        return (f"<div><code>{escape(self.label)}</code> <progress value='{self.done}' max='{max(self.total, 1)}'>"
                f"</progress> {self.done}/{self.total} tiles</div>")

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.handle is not None:
            from IPython.display import HTML

            self.handle.update(HTML(self._html()))
        elif self.bar is not None:
            if self.task is None:
                self.task = self.bar.add_task(self.label, total=total)
            self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
