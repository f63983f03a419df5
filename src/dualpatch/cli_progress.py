"""The command line's display of the library's events (``dualpatch.events``) with rich.

Stages (features, coreset, scoring, ...) show as indented bars that disappear when done; an
experiment's runs show as one ``runs`` bar naming the run in progress."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import events

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


class RichRenderer:
    """An ``events`` listener drawing on a rich ``Progress``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._stages: dict[int, TaskID] = {}
        self._runs: TaskID | None = None

    def __call__(self, event: events.Event) -> None:
        p = self.progress
        if isinstance(event, events.StageStarted):
            self._stages[event.stage] = p.add_task(
                f"  {event.name}", total=event.total, unit=event.unit
            )
        elif isinstance(event, events.StageAdvanced) and event.stage in self._stages:
            p.update(self._stages[event.stage], completed=event.done)
        elif isinstance(event, events.StageFinished) and event.stage in self._stages:
            p.remove_task(self._stages.pop(event.stage))
        elif isinstance(event, events.RunStarted):
            if self._runs is None:
                self._runs = p.add_task("runs", total=event.total)
            p.update(self._runs, description=f"runs ({event.name})")
        elif isinstance(event, events.RunFinished) and self._runs is not None:
            p.update(self._runs, completed=event.index + 1)


def progress_bars(console: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    class CountColumn(ProgressColumn):
        """``done/total`` for items; sizes (``12.3/45.6 MB``) for a stage counted in bytes."""

        def __init__(self) -> None:
            super().__init__()
            self.items, self.sizes = MofNCompleteColumn(), DownloadColumn()

        def render(self, task):  # noqa: ANN001, ANN201 (rich's signature)
            column = self.sizes if task.fields.get("unit") == "B" else self.items
            return column.render(task)

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        CountColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def rendering(always: bool = False) -> Iterator[None]:
    """Show the library's events as rich bars on stderr while the block runs.

    ``always``: draw even when stderr is not a terminal (``run`` leaves its final bars in a log);
    otherwise a piped command shows nothing, as tqdm did, so that error lines stay lines of
    their own. Either way no tqdm bar is drawn: the events have a listener."""
    from rich.console import Console

    console = Console(stderr=True)
    if not (always or console.is_terminal):
        with events.subscribe(lambda event: None):
            yield
        return
    progress = progress_bars(console)
    renderer = RichRenderer(progress)

    def draw(event: events.Event) -> None:
        if not progress.live.is_started:  # the display appears with the first event only
            progress.start()
        renderer(event)

    try:
        with events.subscribe(draw):
            yield
    finally:
        if progress.live.is_started:
            progress.stop()
