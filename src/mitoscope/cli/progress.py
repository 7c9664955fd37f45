"""The commands' progress bars (rich, on stderr), handed to the library as plain callbacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Bar:
    """A rich progress bar usable as a ``progress(done, total)`` callback (shown once the total is known).

    Examples:
        >>> from mitoscope.data.synthetic import make_patch_set
        >>> with Bar("patches") as bar:  # doctest: +SKIP
        ...     make_patch_set("patches/", n=100, progress=bar)
    """

    def __init__(self, what: str) -> None:
        from rich.progress import Progress

        self.what = what
        self.bar = Progress(transient=True)
        self.task: Any = None

    def __enter__(self) -> Bar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.bar.add_task(self.what, total=total)
        self.bar.update(self.task, completed=done)


@contextlib.contextmanager
def slide_bars(console: Any, n_slides: int) -> Iterator[dict[str, Any]]:
    """Two bars on ``console`` for a run over slides, ``slides`` and the ``tiles`` of the current slide; yields
    the callbacks :func:`mitoscope.inference.batch.detect_slides` takes (``log``, ``error``, ``tile_progress``,
    ``slide_done``), whose lines print above the bars.

    Examples:
        >>> from rich.console import Console
        >>> with slide_bars(Console(quiet=True), 1) as callbacks:
        ...     callbacks["tile_progress"]("s1", 3, 4); callbacks["slide_done"]("s1")
        >>> sorted(callbacks)
        ['error', 'log', 'slide_done', 'tile_progress']
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        slides_task = bar.add_task("slides", total=n_slides)
        tiles_task = bar.add_task("tiles", total=None)

        def tiles(name: str, done: int, total: int | None) -> None:
            bar.update(tiles_task, description=f"tiles of {name}", completed=done, total=total)

        yield {
            "log": lambda msg: bar.console.print(msg, highlight=False, markup=False),
            "error": lambda msg: bar.console.print(f"[red]{msg}[/red]", highlight=False),
            "tile_progress": tiles,
            "slide_done": lambda _name: bar.advance(slides_task),
        }
